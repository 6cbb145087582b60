"""Identifying photos from the command line: predict, and how its answers are printed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from identify.cli.base import (
    _settings,
    _parts,
    json_option,
    main,
    model_option,
    network_option,
    reports_errors,
)
from identify.errors import IdentifyError


def _species_text(entry: dict[str, Any]) -> str:
    """A ranked species for people, by the one naming rule (identify.answers.display_name)."""
    return str(entry.get("display_name") or entry["name"])


def _identification_text(photo: str, result: dict[str, Any]) -> str:
    """For people: the decision and its reasons in words, species by the naming rule (the codes and labels stay
    in --json)."""
    from identify.answers import DECISION_WORDS, reason_words
    from identify.rollup import RollUp

    named = {s["name"]: _species_text(s) for s in result["species"]}
    rolled = RollUp(**{**result["rollup"], "members": tuple(result["rollup"]["members"])}) if result.get("rollup") else None
    at_rank = f" at {rolled.rank} rank: {rolled.text}" if rolled is not None and rolled.certified else ""
    lines = [f"{photo}: {DECISION_WORDS[result['decision']]}{at_rank}"]
    lines += [f"  {reason}" for reason in reason_words(result["reasons"])]
    lines.append(f"  {'species':<44} {'score':>7} {'model':>7} {'similar':>7}")
    for s in result["species"]:
        lines.append(f"  {_species_text(s)[:44]:<44} {s['score']:7.3f} {s['classifier']:7.3f} {s['knn']:7.3f}")
    if rolled is not None:
        lines.append(f"  {rolled.text}: " + ("confident at this rank; the species could not be certified"
                                            if rolled.certified else "the species is uncertain"))
    lines.append("  nearest reference photos:")
    for n in result["neighbours"][:5]:
        species = named.get(n["name"], n["name"])
        lines.append(f"    {n['reference_id']:<17} {species[:44]:<44} {n['similarity']:6.3f}  {n['path']}")
    return "\n".join(lines)


@main.command()
@model_option
@network_option
@click.option("--index", "index_name", default="default", show_default=True, envvar="IDENTIFY_INDEX", show_envvar=True,
              help="Name of a published index (identify indexes lists them).")
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--k", type=click.IntRange(min=1), help="Neighbours that vote.")
@click.option("--weight-knn", type=click.FloatRange(0, 1), help="Lambda: share of the kNN vote.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), help="T on cosine similarity.")
@click.option("--lat", help="Where the photos were taken [default: their EXIF GPS].")
@click.option("--lon", help="Where the photos were taken [default: their EXIF GPS].")
@click.option("--date", "observed", help="When, ISO 8601 [default: their EXIF date].")
@click.option("--ignore-location", is_flag=True, help="Leave place and season out (the photo's answer alone).")
@click.option("--group", is_flag=True, help="All the photos (a folder: every photo in it) are one bird: one answer.")
@click.option("--crop", "crop_text", metavar="X,Y,W,H",
              help="Where the bird is: fractions of the upright photo (the same for every photo given).")
@json_option
@reports_errors
def predict(model: str, network: str | None, index_name: str, photos: tuple[Path, ...], k: int | None,
            weight_knn: float | None, temperature: float | None, lat: str | None, lon: str | None,
            observed: str | None, ignore_location: bool, group: bool, crop_text: str | None,
            json_output: bool) -> None:
    """Identify photos (files, or folders searched recursively): top-5 species (fused score, classifier, kNN),
    the decision, the nearest references.

    The reference set is the live one the web app searches: the published index plus every reference added
    since (curators' promotions included). With --json, one JSON object per photo, one per line."""
    from identify.metadata import parse_observed_at, parse_position
    from identify.observation import WhereAndWhen
    from identify.vectors.catalog import require_index

    from identify.framing import parse_crop

    # Every mistake is reported before torch and birder load (they take seconds to import).
    given = WhereAndWhen(*parse_position(lat, lon), parse_observed_at(observed, "date"))
    crop = parse_crop(crop_text, "--crop")
    files = _photo_files(photos)
    settings = _settings()
    require_index(settings.indexes_dir, index_name)
    _require_model_file(model)
    identifier, stopped = _identifier(settings, model, network, index_name, k, weight_knn, temperature,
                                      ignore_location)
    if group:
        _predict_observation(identifier, files, None if ignore_location else given, crop, json_output, stopped)
        return
    failed = _predict_each(identifier, files, None if ignore_location else given, crop, json_output, stopped)
    if failed:
        sys.exit(1)


def _require_model_file(model: str) -> None:
    """A model given as a path must be a file; a name is left to birder's registry (which needs torch)."""
    path = Path(model).expanduser()
    if (path.suffix == ".pt" or os.sep in model) and not path.is_file():
        raise IdentifyError("model_not_found", f"no checkpoint at {path}")


def _identifier(settings, model: str, network: str | None, index_name: str, k: int | None,  # type: ignore[no-untyped-def]
                weight_knn: float | None, temperature: float | None, ignore_location: bool):
    """The service's identifier over the live reference set, and the prior unless place is left out; and the
    risk groups the deployment's live audit has stopped (predict decides as the service would)."""
    from identify.backbone import load_backbone

    config = settings.fusion.replace(k=k, weight_knn=weight_knn, temperature=temperature)
    backbone = load_backbone(model, network=network)
    parts = _parts(settings)
    identifier = parts.identifier(backbone, index_name, config, with_prior=not ignore_location)
    return identifier, parts.audit_summary().over_target


PROGRESS_FROM = 4  # photos: fewer are answered before a bar would be worth drawing


def _looked_at(identifier, files: list[Path], crop):  # type: ignore[no-untyped-def]
    """Each photo read (at the size its crop needs) and framed as the web app frames an upload: (photos,
    the model's input of each, their framing as JSON)."""
    from identify.framing import decode_size_for, frame_photos
    from identify.observation import read_photo_file

    size = decode_size_for(crop, identifier.backbone.identity.decode_size, detecting=False)
    read = [read_photo_file(f, draft_size=size) for f in files]
    framed = frame_photos([photo.image for photo in read], [crop] * len(read), label=lambda i: str(files[i]))
    return read, [image for image, _ in framed], [{"photo": str(f), **framing.to_dict()}
                                                  for f, (_, framing) in zip(files, framed, strict=True)]


def _predict_each(identifier, files: list[Path], given, crop, json_output: bool,  # type: ignore[no-untyped-def]
                  stopped: frozenset[str]) -> int:
    """One answer per photo, printed as it comes (`given` None: place and season left out); returns how many
    photos failed."""
    from tqdm import tqdm

    from identify.answers import identification_json, path_link

    failed = 0
    bar = tqdm(files, unit="photo", file=sys.stderr, disable=len(files) < PROGRESS_FROM, leave=False)

    def say(line: str) -> None:
        """On a terminal, past the bar (cleared and drawn again); into a file or pipe as it is, so the bar on
        the terminal is drawn once, not again after every answer (`make demo` showed it 35 times)."""
        if sys.stdout.isatty():
            bar.write(line, file=sys.stdout)
        else:
            print(line, file=sys.stdout, flush=True)

    for photo in bar:
        try:
            read, images, framing = _looked_at(identifier, [photo], crop)
            place = _place(read, given)
            result = identification_json(identifier.explain(identifier.search(images)[0], place, stopped),
                                         path_link)
            result["framing"] = framing
        except IdentifyError as exc:
            failed += 1
            say(json.dumps({"photo": str(photo), **exc.to_dict()}) if json_output else f"{photo}: error: {exc}")
            continue
        say(json.dumps({"photo": str(photo), **result}) if json_output else _identification_text(str(photo), result))
    return failed


def _photo_files(paths: tuple[Path, ...]) -> list[Path]:
    """The files given, a folder standing for every visible file below it; a path that is not there fails
    the whole command before anything loads."""
    from index_builder.sources import visible_files

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise IdentifyError("photo_not_found", f"no such photo or folder: {missing[0]}{more}")
    files: list[Path] = []
    for path in paths:
        files += visible_files(path) if path.is_dir() else [path]
    if not files:
        raise IdentifyError("no_images", "no photos in " + ", ".join(str(p) for p in paths))
    return files


def _predict_observation(identifier, files: list[Path], given, crop, json_output: bool,  # type: ignore[no-untyped-def]
                         stopped: frozenset[str]) -> None:
    """Every photo as one observation of one bird: their evidence pooled into one answer."""
    from identify.answers import identification_json, path_link
    from identify.identifier import pool_evidence

    read, images, framing = _looked_at(identifier, files, crop)
    evidence = pool_evidence(identifier.search(images))
    result = identification_json(identifier.explain(evidence, _place(read, given), stopped), path_link)
    result["framing"] = framing
    if json_output:
        click.echo(json.dumps({"photos": [str(f) for f in files], **result}))
    else:
        click.echo(_identification_text(f"{len(files)} photos ({files[0].parent})", result))


def _place(photos, given):  # type: ignore[no-untyped-def]
    """Where and when the photos were taken, as the web app works it out (given, else EXIF); None without both
    a position and a date, or when place is left out (`given` None)."""
    return given.completed_by(photo.exif for photo in photos).place() if given is not None else None
