"""What to embed: a class-folder tree (`Species_name/*.jpg`) or a CSV manifest (`path,species[,lat,lon,
observed_at,source,group,crop,photographer,licence]`; `crop` is "x,y,w,h", fractions of the upright photo, quoted). Everything is validated before any work starts, so a bad manifest changes nothing.

`group` names the individual (or burst, or visit) a photo shows: evaluate keeps a group's photos on one side of
its splits (identify.splits). In the folder layout a sub-folder of a species folder is a group
(`Species_name/bird_17/*.jpg`)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from identify.errors import IdentifyError
from identify.framing import Crop, parse_crop
from identify.metadata import parse_coordinate, parse_timestamp
from identify.observation import WhereAndWhen
from identify.rules import MAX_NAME, MAX_SOURCE

REQUIRED_COLUMNS = ("path", "species")
OPTIONAL_COLUMNS = ("lat", "lon", "observed_at", "source", "group", "crop", "photographer", "licence")
# Darwin Core's names for the provenance columns, taken as well (dcterms:creator, dcterms:license).
COLUMN_ALIASES = {"creator": "photographer", "license": "licence"}


@dataclass(frozen=True)
class ReferenceSource:
    path: Path
    species: str
    where: WhereAndWhen = WhereAndWhen()
    source: str | None = None
    group: str | None = None  # the individual or source: evaluate splits a group as one
    crop: Crop | None = None  # the part of the photo to embed (None: the whole photo)
    creator: str | None = None  # the photographer
    license: str | None = None  # the photo's licence: a name (CC BY 4.0) or its URL


def visible_files(folder: Path) -> list[Path]:
    """Regular files below `folder`, hidden files and folders (.DS_Store, .thumbnails) left out."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def from_folder(root: Path) -> list[ReferenceSource]:
    """Every visible file under each top-level folder, labelled with that folder's name."""
    if not root.is_dir():
        raise IdentifyError("images_not_found", f"{root} is not a folder")
    sources = [
        ReferenceSource(path, species_dir.name, group=_folder_group(species_dir, path))
        for species_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for path in visible_files(species_dir)
    ]
    if not sources:
        raise IdentifyError("no_images", f"{root} holds no species folders with files (layout: Species_name/photo.jpg)")
    return sources


def _folder_group(species_dir: Path, path: Path) -> str | None:
    """`Species/bird_17/a.jpg` is group `Species/bird_17`; a photo directly in its species folder is its own."""
    inner = path.relative_to(species_dir).parent
    return f"{species_dir.name}/{inner.as_posix()}" if inner.parts else None


def _row_source(row: dict[str, str], base: Path) -> ReferenceSource:
    path = Path(row["path"].strip())
    species = row["species"].strip()
    if not row["path"].strip() or not species:
        raise IdentifyError("bad_manifest", "path and species must not be empty")
    for alias, column in COLUMN_ALIASES.items():
        row.setdefault(column, row.get(alias) or "")
    source = (row.get("source") or "").strip() or None
    creator = (row.get("photographer") or "").strip() or None
    licence = (row.get("licence") or "").strip() or None
    if len(species) > MAX_NAME or len(creator or "") > MAX_NAME or max(len(source or ""), len(licence or "")) > MAX_SOURCE:
        raise IdentifyError("bad_manifest", f"species and photographer are at most {MAX_NAME} characters, source and "
                            f"licence {MAX_SOURCE}")
    return ReferenceSource(
        path=path if path.is_absolute() else base / path,
        species=species,
        where=WhereAndWhen(parse_coordinate(row.get("lat") or "", "lat", 90),
                           parse_coordinate(row.get("lon") or "", "lon", 180),
                           parse_timestamp(row.get("observed_at") or "")),
        source=source,
        group=(row.get("group") or "").strip() or None,
        crop=parse_crop(row.get("crop"), "crop"),
        creator=creator,
        license=licence,
    )


def from_manifest(csv_path: Path) -> list[ReferenceSource]:
    """Rows of a CSV manifest; relative paths are relative to the CSV's folder. Raises on the first bad row."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise IdentifyError("bad_manifest", f"{csv_path} lacks column(s) {', '.join(missing)} "
                                    f"(needs {','.join(REQUIRED_COLUMNS)}, optional {','.join(OPTIONAL_COLUMNS)})")
            sources = []
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): v or "" for k, v in row.items()}
                try:
                    sources.append(_row_source(row, csv_path.parent))
                except IdentifyError as exc:
                    raise IdentifyError(exc.code, f"{csv_path} line {line}: {exc.message}") from None
    except FileNotFoundError:
        raise IdentifyError("manifest_not_found", f"no manifest at {csv_path}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise IdentifyError("bad_manifest", f"{csv_path} is not a UTF-8 CSV file ({exc})") from None
    if not sources:
        raise IdentifyError("no_images", f"{csv_path} lists no photos")
    return sources
