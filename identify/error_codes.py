"""Every error code a user can meet, in one registry: its HTTP status (None: command line only) and when it
happens. The README's error table is generated from it (`python -m identify.docs`), and a test fails when code
anywhere raises a code that is not registered here, or when the table is not the one this registry makes."""

from __future__ import annotations

from typing import NamedTuple

from identify.rules import MAX_NAME, MAX_TEXT


class Code(NamedTuple):
    status: int | None  # the HTTP status it maps to; None for codes only the command line gives
    when: str


CODES: dict[str, Code] = {
    # ---- models, checkpoints, indexes (command line and start-up) ----
    "no_model": Code(None, "the web app was started without IDENTIFY_MODEL"),
    "unknown_model": Code(None, "a name that is neither a checkpoint file nor a birder pretrained model"),
    "model_not_found": Code(None, "a checkpoint path that does not exist"),
    "model_unavailable": Code(None, "pretrained weights that are missing and cannot be downloaded"),
    "bad_checkpoint": Code(None, "a file that is not a birder checkpoint, or does not load as the named network"),
    "unknown_network": Code(None, "a network that cannot be told from the checkpoint or `--network`"),
    "bad_detector": Code(None, "IDENTIFY_DETECTOR is not a birder detection checkpoint, its network or backbone "
                         "cannot be told, or none of its classes is a bird"),
    "no_detection_features": Code(None, "a network without detection features where they are needed"),
    "demo_model_mismatch": Code(None, "the demo model's weights do not align with birder's efficientnet_lite0"),
    "demo_model_missing": Code(None, "the package with the demo model's weights is not installed"),
    "index_model_mismatch": Code(409, "an index built with another model"),
    "index_dim_mismatch": Code(None, "an index whose embedding size is not the model's"),
    "unknown_index": Code(404, "no index of that name (the message lists those there are)"),
    "index_corrupt": Code(None, "index files that do not read or do not match their manifest"),
    "index_path_taken": Code(None, "the index's path holds something that identify did not publish"),
    "bad_index_type": Code(None, "an `--index-type` other than auto, flat, ivf, ivfpq or hnsw"),
    "memory_budget_too_small": Code(None, "`--memory-budget` cannot hold even 1-byte codes and ids of the collection"),
    "faiss_missing": Code(None, "FAISS is not installed"),
    "build_running": Code(409, "another build of the same index holds its lock"),
    "bad_batch_size": Code(None, "`--batch-size` below 1"),
    "nothing_embedded": Code(None, "a build or evaluation where no photo could be read"),
    # ---- photos and folders ----
    "bad_manifest": Code(None, "a manifest without `path`/`species` columns or with a bad value (the line is named)"),
    "manifest_not_found": Code(None, "no manifest at that path"),
    "images_not_found": Code(None, "`--images` is not a folder"),
    "no_images": Code(None, "no photos in the folders given"),
    "photo_not_found": Code(None, "`predict` given a photo or folder that is not there (nothing else is done)"),
    "empty_file": Code(400, "a photo of zero bytes"),
    "not_an_image": Code(400, "a file that is not a photo in a format the server reads"),
    "truncated_image": Code(400, "a photo cut short"),
    "unreadable_file": Code(400, "a photo file that cannot be read"),
    "too_many_pixels": Code(413, "a photo over the pixel limit (IDENTIFY_MAX_PIXELS)"),
    "file_too_large": Code(413, "an upload over the byte limit (IDENTIFY_MAX_UPLOAD_MB)"),
    "form_too_large": Code(413, "a text field over 500 kB, or a form of over 100 parts"),
    "missing_image": Code(400, "no `image` field"),
    "bad_crop": Code(400, "a crop that is not x,y,w,h fractions inside the photo, or more crops than photos"),
    "crop_too_small": Code(400, "a crop under 16 pixels wide in the photo: no bird a model can see"),
    "bad_filter": Code(400, "a sightings-list decision or status that is none of the choices"),
    "too_many_photos": Code(400, "more than 5 photos in one sighting, or more than one in a similar-sightings search"),
    "bad_multipart": Code(400, 'a form part whose name cannot be read (`name="\\"`), refused before anything reads the form'),
    # ---- fields and requests ----
    "bad_request": Code(400, "a review body that is not a JSON object, or a request Werkzeug cannot parse"),
    "bad_field": Code(400, f"a boolean that is not true/false, a name (observer, species) over {MAX_NAME} "
                           f"characters or other text over {MAX_TEXT:,}, text that is not a string, with a NUL or "
                           "invalid Unicode, a number out of range or given empty, an API field given twice"),
    "bad_coordinates": Code(400, "lat/lon out of range or only one of them; a bad bbox"),
    "bad_date": Code(400, "a date that is not ISO 8601, `from` after `to`, an observation in the future or before "
                          "1800 (a bad EXIF date is ignored instead)"),
    "bad_k": Code(400, "`k` outside 1-100"),
    "bad_format": Code(400, "an export format other than `dwca` or `csv`"),
    "csrf_failed": Code(400, "a form or cookie-authenticated API write without its CSRF token"),
    "unauthorised": Code(401, "no login, a bad or expired token, or a disabled curator"),
    "not_found": Code(404, "an unknown URL"),
    "method_not_allowed": Code(405, "a wrong method (the `Allow` header lists the right ones)"),
    "too_many_requests": Code(429, "over a rate limit (failed logins, forward passes per address); `Retry-After` "
                                   "says how many seconds to wait"),
    # ---- sightings and curation ----
    "unknown_sighting": Code(404, "no such sighting"),
    "unknown_species": Code(400, "a name that is no label in use and no name of any bird taxonomy (the message "
                                 "lists the nearest names; send `as_written` to use it anyway)"),
    "bad_review": Code(400, "a bad action, a version missing or not a whole number within SQL's INTEGER, `correct` "
                            "without a species, a rejected reference"),
    "stale_version": Code(409, "somebody reviewed the sighting (or changed the reference) since you loaded it (the "
                               "body has the current sighting)"),
    "reference_conflict": Code(409, "the photo is already a reference of another species (relabel that reference)"),
    "unknown_reference": Code(404, "no such reference"),
    "second_curator_needed": Code(403, "confirming an answer that awaits a second curator, as the curator who gave "
                                       "it"),
    "bad_reference_change": Code(400, "a change to a reference without its reason or version, a relabel to the "
                                      "same species or of a retired one, retiring a retired one, restoring an "
                                      "active one"),
    "curator_exists": Code(409, "`create-curator` for a name that exists (use `--reset`)"),
    "weak_password": Code(None, "a curator password under 8 characters"),
    "bad_curator": Code(None, "a curator name that is empty or over 200 characters"),
    "unknown_curator": Code(404, "no curator of that name (`identify curators`)"),
    # ---- occurrences, taxonomy, evaluation, configuration ----
    "bad_occurrences": Code(None, "an occurrence file without the four columns, or that does not read"),
    "occurrences_not_found": Code(None, "no occurrence file at that path"),
    "bad_mapping": Code(None, "a taxonomy mapping without `label,scientific_name` columns or with an empty value"),
    "mapping_not_found": Code(None, "no mapping file at that path"),
    "too_few_queries": Code(None, "`evaluate --write-config` with too few queries to choose and check on separate "
                                  "splits (nothing is written)"),
    "certification_failed": Code(None, "`identify certify` could not finish (its row in `certifications` says why: "
                                     "more references than it certifies in memory, or an error); the thresholds "
                                     "served stay as they were"),
    "bad_config": Code(None, "a setting out of range, or an identify.toml that is not valid TOML"),
    "bad_arguments": Code(None, "command-line options that do not go together"),
    # ---- faults: worth a retry ----
    "database_unavailable": Code(503, "the database is down, restarting, busy or unreachable; `Retry-After`; "
                                      "nothing was stored"),
    "storage_full": Code(503, "the server's disk (or the database's) is full; `Retry-After`; nothing was stored"),
    "database_conflict": Code(503, "species names raced too often with other workers at start; `Retry-After`"),
    "internal_error": Code(500, "a bug, logged with its trace on the server, never shown"),
}


def status_of(code: str) -> int | None:
    return CODES[code].status
