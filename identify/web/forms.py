"""Request parsing: form fields and query arguments to the typed values the service takes. Every bad value is
an IdentifyError with a stable code, raised before any work is done."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from werkzeug.datastructures import FileStorage

from identify.config import parse_boolean
from identify.errors import IdentifyError
from identify.framing import Crop, parse_crop
from identify.metadata import parse_bbox, parse_observed_at, parse_position, parse_timestamp
from identify.observation import WhereAndWhen
from identify.service import SightingFields
from identify.reviews import ReviewRequest
from identify.sighting_search import SightingFilters
from identify.reference_records import ReferenceFilters
from identify.rules import MAX_NAME, MAX_PHOTOS, MAX_SIMILAR, MAX_TEXT, MAX_VERSION, MIN_VERSION



def text_field(raw: object, name: str, limit: int = MAX_TEXT) -> str | None:
    """Trimmed text of at most `limit` characters as sent (the limit the API document states: MAX_TEXT, or
    MAX_NAME for a name kept as given), or None when blank. A JSON value that is not a string (a list, a number)
    is refused, not stored as its Python spelling; NUL bytes (PostgreSQL refuses them) and unpaired surrogates
    (not UTF-8) are bad input, not a server error."""
    if raw is not None and not isinstance(raw, str):
        raise IdentifyError("bad_field", f"{name} must be text")
    value = raw or ""
    if len(value) > limit:
        raise IdentifyError("bad_field", f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise IdentifyError("bad_field", f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IdentifyError("bad_field", f"{name} is not valid Unicode text") from None
    return value.strip() or None


def parse_version(raw: object, code: str = "bad_review", what: str = "the sighting's version you reviewed") -> int:
    """A sighting's (or a reference's) version: a whole number (1, or "1"), never 1.7 or true, within SQL's
    INTEGER."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw) if MIN_VERSION <= raw <= MAX_VERSION else ""  # str() of a 5,000-digit int raises
    text = raw.strip() if isinstance(raw, str) else ""
    # at most ten digits before int(): Python refuses to convert over 4,300 (ValueError, a 500 once)
    if not (text.isdigit() and len(text) <= len(str(MAX_VERSION))) or not MIN_VERSION <= int(text) <= MAX_VERSION:
        raise IdentifyError(code, f"version ({what}, a whole number) is required")
    return int(text)


def boolean_field(raw: object, name: str) -> bool | None:
    """true/false, 1/0, yes/no, on/off; absent (None) stays None so the caller's default applies."""
    if raw is None:
        return None
    try:
        return parse_boolean(raw)
    except ValueError:
        raise IdentifyError("bad_field", f"{name} {raw!r} is not true or false") from None


def parse_uncertainty(raw: object) -> float | None:
    """The position's uncertainty in metres (a browser's geolocation accuracy): a number from 0 to 20,000 km."""
    text = str(raw or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 2e7:
        raise IdentifyError("bad_field", f"coordinate_uncertainty_m {text[:20]!r} is not a distance in metres")
    return value


def parse_sighting_fields(form: Mapping[str, str]) -> SightingFields:
    """The optional fields of an upload. Every bad field is reported, not just the first (IdentifyError.all_of)."""
    problems: list[IdentifyError] = []

    def checked(parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except IdentifyError as exc:
            problems.append(exc)
            return None

    lat, lon = checked(parse_position, form.get("lat"), form.get("lon")) or (None, None)
    crops = form.getlist("crop") if hasattr(form, "getlist") else [form["crop"]] if form.get("crop") else []
    fields = SightingFields(WhereAndWhen(lat, lon, checked(parse_observed_at, form.get("observed_at"))),
                            checked(text_field, form.get("observer"), "observer", MAX_NAME),
                            checked(text_field, form.get("note"), "note"),
                            bool(checked(boolean_field, form.get("ignore_location"), "ignore_location")),
                            bool(checked(boolean_field, form.get("hide_location"), "hide_location")),
                            crops=tuple(checked(_crops, crops) or ()),
                            coordinate_uncertainty_m=checked(parse_uncertainty, form.get("coordinate_uncertainty_m")))
    if problems:
        raise IdentifyError.all_of(problems)
    return fields


def _base_name(name: str) -> str:
    """A file name as a browser sent it, without any folder (some send a Windows path)."""
    return name.replace("\\", "/").rsplit("/", 1)[-1][:120]


def _crops(values: list[str]) -> list[Crop | None]:
    """One `crop` per photo in the order of the `image` fields; a blank one leaves that photo whole."""
    return [parse_crop(value, f"crop {number}" if len(values) > 1 else "crop")
            for number, value in enumerate(values, start=1)]


def parse_upload(form: Mapping[str, str], files: list[FileStorage]) -> tuple[SightingFields, list[bytes]]:
    """An upload's fields and photos, every problem of both reported together. A part with neither a file name
    nor bytes is a file field left empty in a browser, not a photo."""
    sent = [(upload.filename or "", data) for upload, data in ((u, u.read()) for u in files)
            if data or upload.filename]
    photos = [data for _, data in sent]
    try:
        fields, problems = parse_sighting_fields(form), []
    except IdentifyError as exc:
        fields, problems = SightingFields(), exc.problems
    if not photos:
        problems = [*problems, IdentifyError("missing_image", "choose a photo of the bird (the multipart field "
                                             "`image`)")]
    elif len(fields.crops) > len(photos):
        problems = [*problems, IdentifyError("bad_crop", f"{len(fields.crops)} crops for {len(photos)} photo"
                                             f"{'s' if len(photos) != 1 else ''}: one `crop` per `image` at most, "
                                             "in the same order")]
    if problems:
        raise IdentifyError.all_of(problems)
    return replace(fields, file_names=tuple(_base_name(name) for name, _ in sent)), photos


def parse_filters(args: Mapping[str, str]) -> SightingFilters:
    """`species`, `genus`, `family`, `from`, `to` (ISO 8601) and `bbox` (west,south,east,north) of a
    similar-sightings lookup."""
    start, end = parse_timestamp(args.get("from"), "from"), parse_timestamp(args.get("to"), "to")
    if start and end and start > end:
        raise IdentifyError("bad_date", "from is after to")
    return SightingFilters(text_field(args.get("species"), "species"), text_field(args.get("genus"), "genus"),
                           text_field(args.get("family"), "family"), start, end, parse_bbox(args.get("bbox")))


def parse_list_filters(args: Mapping[str, str]) -> SightingFilters:
    """The sightings list's filters: those of similar sightings, with `decision` and `status` (passed as sent:
    an empty or unknown choice is refused by SightingFilters, bad_filter) and `single_curator` (true: only those
    a lone curator reviewed where the second-opinion rule would ask a second, for a later audit)."""
    single = args.get("single_curator")
    if single is not None and not single.strip():  # the API's contract: a boolean, never an empty value
        raise IdentifyError("bad_field", "single_curator is true or false")
    return replace(parse_filters(args), decision=args.get("decision"), status=args.get("status"),
                   single_curator=bool(boolean_field(single, "single_curator")))


def parse_count(raw: str | None, name: str, default: int, limit: int, code: str = "bad_field") -> int:
    """A whole number in [1, limit]; left out gives the default (an empty value is no number: refused)."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise IdentifyError(code, f"{name} {raw!r} is not a whole number") from None
    if not 1 <= value <= limit:
        raise IdentifyError(code, f"{name} must lie in [1, {limit}]")
    return value


def parse_k(raw: str | None, default: int = 10) -> int:
    return parse_count(raw, "k", default, MAX_SIMILAR, "bad_k")


def parse_review(sighting_id: int, curator_id: int, body: Mapping[str, Any]) -> ReviewRequest:
    """A curator's review from a JSON object or a form: action, version, species, note, add_as_reference,
    as_written."""
    version = parse_version(body.get("version"))
    crop = body.get("crop")
    crops = crop if isinstance(crop, list) else [crop] if crop is not None else []
    if len(crops) > MAX_PHOTOS or not all(isinstance(c, str) for c in crops):
        raise IdentifyError("bad_crop", f"crop: up to {MAX_PHOTOS} x,y,w,h strings, one per photo")
    return ReviewRequest(
        sighting_id=sighting_id, curator_id=curator_id, action=str(body.get("action") or ""), version=version,
        species=text_field(body.get("species"), "species", MAX_NAME), note=text_field(body.get("note"), "note"),
        add_as_reference=boolean_field(body.get("add_as_reference"), "add_as_reference"),
        as_written=bool(boolean_field(body.get("as_written"), "as_written")),
        crops=tuple(_crops(crops)),
    )


def parse_reference_change(body: Mapping[str, Any], action: str) -> dict[str, Any]:
    """reason, version (and for relabel species, as_written) of a change to a reference. A restore may leave
    both out: restoring twice is refused anyway, and its reason defaults to "restored"."""
    reason = text_field(body.get("reason"), "reason")
    if action == "restore" and body.get("version") is None:
        version = None
    else:
        version = parse_version(body.get("version"), "bad_reference_change", "the reference's version you changed")
    if reason is None and action != "restore":
        raise IdentifyError("bad_reference_change", "give the reason for the change")
    change: dict[str, Any] = {"reason": reason or "restored", "version": version}
    if action == "relabel":
        species = text_field(body.get("species"), "species", MAX_NAME)
        if species is None:
            raise IdentifyError("bad_reference_change", "relabel needs the species")
        change.update(species=species, as_written=bool(boolean_field(body.get("as_written"), "as_written")))
    return change


def parse_reference_filters(args: Mapping[str, str]) -> ReferenceFilters:
    """`species`, `source` (build, review), `curator`, `status` (active, retired, all), `flag`, `from`, `to`. The
    choices are passed as sent, an empty one too: identify.reference_records refuses what is none of them."""
    start, end = parse_timestamp(args.get("from"), "from"), parse_timestamp(args.get("to"), "to")
    if start and end and start > end:
        raise IdentifyError("bad_date", "from is after to")
    return ReferenceFilters(species=text_field(args.get("species"), "species"),
                            source=args.get("source"), curator=text_field(args.get("curator"), "curator"),
                            status=args.get("status", "active"), since=start, until=end, flag=args.get("flag"))


MAX_GROUP = 200  # members of one bulk review


def parse_bulk_review(body: Mapping[str, Any], key_of: Callable[[str], int],
                      curator_id: int) -> list[tuple[str, ReviewRequest]]:
    """A group's review: `items` ([{sighting_id, version}], or "id:version" strings from a form) and one
    action, species, note, add_as_reference, as_written for all of them."""
    items = body.get("items")
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_GROUP:
        raise IdentifyError("bad_review", f"items: 1 to {MAX_GROUP} sightings, each with its version")
    parsed = []
    for item in items:
        version: object
        if isinstance(item, str) and ":" in item:
            public_id, version = item.rsplit(":", 1)
        elif isinstance(item, dict):
            public_id, version = str(item.get("sighting_id") or ""), item.get("version")
        else:
            raise IdentifyError("bad_review", "each item is {sighting_id, version}")
        parsed.append((public_id, parse_review(key_of(public_id), curator_id, {**body, "version": version})))
    return parsed
