"""One observation as it comes in: photos whose bytes are read once (hashed, their format, EXIF and pixels taken
from one parse) and one shape of place and time, `WhereAndWhen`, that goes from the form or the camera to the
prior and to SQL. Uploads, `identify predict` and the index builder's reference photos all come through here.

`WhereAndWhen` keeps the moment as it was given (aware with its offset, or the local wall time) and places it
in time by ObservedTime's rule once its position is known: EXIF times are local, and which zone they are in
depends on where the bird was, which may come from another photo or from the observer."""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Iterable

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from identify.errors import IdentifyError
from identify.images import DEFAULT_MAX_PIXELS, to_rgb
from identify.metadata import ObservedTime, as_utc, observed_time, plausible_observation


@dataclass(frozen=True)
class Place:
    """A position and its local date: what the place-and-season prior looks up (identify.prior)."""

    lat: float
    lon: float
    when: date | datetime


@dataclass(frozen=True)
class WhereAndWhen:
    """Where and when a bird was seen; every field may be unknown. Position is both or neither."""

    lat: float | None = None
    lon: float | None = None
    moment: datetime | None = None  # aware with its offset, or the local wall time (naive)

    @cached_property
    def time(self) -> ObservedTime | None:
        """The moment placed in time: its own offset, else the zone at the position, else marked unknown."""
        return observed_time(self.moment, self.lat, self.lon)

    @property
    def observed_at(self) -> datetime | None:
        """The instant in UTC (for an unknown zone, the wall time read as UTC, as ObservedTime says)."""
        return self.time.utc if self.time is not None else None

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None

    def completed_by(self, readings: Iterable["WhereAndWhen"]) -> "WhereAndWhen":
        """What was given wins; a missing position comes from the first reading with one, a missing moment from
        the first reading with one (the photos of one bird, in the order sent)."""
        readings = list(readings)
        lat, lon = self.lat, self.lon
        if not self.located:
            with_position = next((r for r in readings if r.located), None)
            lat, lon = (with_position.lat, with_position.lon) if with_position is not None else (None, None)
        moment = self.moment or next((r.moment for r in readings if r.moment is not None), None)
        return WhereAndWhen(lat, lon, moment)

    def place(self) -> Place | None:
        """The place and local date the prior looks up; None without both a position and a time."""
        if self.lat is None or self.lon is None or self.time is None:
            return None
        return Place(self.lat, self.lon, self.time.local)

    @classmethod
    def stored(cls, lat: float | None, lon: float | None, observed_at: datetime | None) -> "WhereAndWhen":
        """From SQL's columns: an instant, UTC."""
        return cls(lat, lon, as_utc(observed_at))


@dataclass(frozen=True)
class Photo:
    """One photo, parsed once: its bytes, container format, EXIF reading and upright RGB pixels."""

    data: bytes = field(repr=False)
    format: str | None  # Pillow's name: JPEG, PNG, WEBP...
    exif: WhereAndWhen  # where and when the camera says (all None when it says nothing readable)
    image: Image.Image = field(repr=False)
    full_size: tuple[int, int]  # (width, height) as stored, before any draft decoding

    @cached_property
    def sha256(self) -> str:
        """The content hash that names the stored file; computed on first use (a build's triage already has it)."""
        return hashlib.sha256(self.data).hexdigest()


def read_photo(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Photo:
    """Parse `data` once: the format and EXIF from the header the pixels are decoded from.

    With `draft_size`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
    draft_size x draft_size: a 12-megapixel photo meant for a 256-pixel model decodes several times faster.

    Raises IdentifyError: empty_file, not_an_image, truncated_image or too_many_pixels."""
    if not data:
        raise IdentifyError("empty_file", "the file is empty: choose the photo again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise IdentifyError("too_many_pixels", f"the photo is {width}x{height} pixels, more than the "
                                    f"{max_pixels} this service takes: send a smaller copy", 413)
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
    except IdentifyError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise IdentifyError("too_many_pixels", f"the photo is over the {max_pixels} pixels this service takes: "
                            "send a smaller copy", 413) from None
    except UnidentifiedImageError:
        raise IdentifyError("not_an_image", "this is not a photo the service can read: send a JPEG, PNG, "
                            "WebP, TIFF or HEIC photo") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise IdentifyError("truncated_image", f"the photo is cut short or damaged ({exc}): send it again, "
                            "or export it again from the camera or phone") from None
    exif = _exif_reading(image)  # after load: a PNG's eXIf chunk may follow its pixels
    return Photo(data, image.format, exif, to_rgb(ImageOps.exif_transpose(image)), (width, height))


def read_photo_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Photo:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentifyError("unreadable_file", f"{path}: {exc.strerror or exc}") from None
    return read_photo(data, max_pixels, draft_size)


# ---- what the camera wrote ------------------------------------------------------------------------------------
def _exif_reading(image: Image.Image) -> WhereAndWhen:
    """Date and position from a photo's EXIF. Missing or malformed EXIF gives None fields, never an error:
    EXIF is a hint, and the pixels have already been read."""
    try:
        exif = image.getexif()
        details = exif.get_ifd(ExifTags.IFD.Exif)
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except Exception:  # noqa: BLE001 - Pillow raises many types on odd EXIF; none of them should fail an upload
        return WhereAndWhen()
    moment = _exif_time(details.get(ExifTags.Base.DateTimeOriginal), details.get(ExifTags.Base.OffsetTimeOriginal))
    lat = _gps_degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), 90)
    lon = _gps_degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), 180)
    if lat is None or lon is None:
        lat = lon = None
    return WhereAndWhen(lat, lon, moment or _exif_time(exif.get(ExifTags.Base.DateTime), None))


def _exif_time(value: object, offset: object) -> datetime | None:
    """EXIF `YYYY:MM:DD HH:MM:SS`: aware with OffsetTimeOriginal when the camera wrote one, else the local wall
    time, naive (observed_time finds its zone)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.strptime(value.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    if isinstance(offset, str) and len(offset.strip("\x00")) == 6:
        text = offset.strip("\x00")
        try:
            sign = -1 if text[0] == "-" else 1
            moment = moment.replace(tzinfo=timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6]))))
        except ValueError:
            pass
    return moment if plausible_observation(moment) else None  # a camera clock set wrong is no date at all


def _gps_degrees(value: object, ref: object, limit: float) -> float | None:
    try:
        degrees, minutes, seconds = (float(part) for part in value)  # type: ignore[attr-defined]  # EXIF's IFDRational triple
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    result = degrees + minutes / 60 + seconds / 3600
    if isinstance(ref, str) and ref.strip("\x00").upper() in ("S", "W"):
        result = -result
    return result if math.isfinite(result) and abs(result) <= limit else None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """The upright RGB pixels of `data` alone (a thumbnail of a stored photo), by read_photo's rules."""
    return read_photo(data, max_pixels, draft_size).image
