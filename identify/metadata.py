"""Where and when, as text: parsing what people type (coordinates, ISO 8601, bounding boxes), placing a moment
in time (ObservedTime), and the generalised position the public sees. The index builder's CSV, the web forms and
the CLI share these; what cameras write is read in identify.observation."""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import overload

from identify.errors import IdentifyError


ZONES = ("offset", "place", "unknown")


@dataclass(frozen=True)
class ObservedTime:
    """When a photo was taken. EXIF times are local: the offset comes from the time itself (OffsetTimeOriginal,
    or an ISO 8601 offset), else from the time zone at the GPS point (timezonefinder), else it is unknown and
    marked so, never silently UTC."""

    utc: datetime  # the instant; for an unknown zone, the local wall time read as if it were UTC
    offset_minutes: int | None  # the UTC offset there and then; None when unknown
    zone: str  # offset, place or unknown

    @property
    def local(self) -> datetime:
        """Aware in its own offset, or naive (the wall time) when the zone is unknown."""
        if self.offset_minutes is None:
            return self.utc.replace(tzinfo=None)
        return self.utc.astimezone(timezone(timedelta(minutes=self.offset_minutes)))

    def isoformat(self) -> str:
        return self.local.isoformat()


_zone_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _zone_finder():  # type: ignore[no-untyped-def]
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


def zone_at(lat: float, lon: float) -> str | None:
    """The IANA time zone at a point (timezonefinder: offline, from OpenStreetMap's boundaries)."""
    with _zone_lock:
        return _zone_finder().timezone_at(lng=lon, lat=lat)


def observed_time(moment: datetime | None, lat: float | None, lon: float | None) -> ObservedTime | None:
    """The instant and its offset, by the rule of ObservedTime."""
    if moment is None:
        return None
    try:
        if moment.tzinfo is not None:
            offset = moment.utcoffset()
            return ObservedTime(moment.astimezone(timezone.utc), int(offset.total_seconds() // 60) if offset else 0,
                                "offset")
        name = zone_at(lat, lon) if lat is not None and lon is not None else None
        if name:
            from zoneinfo import ZoneInfo

            local = moment.replace(tzinfo=ZoneInfo(name))
            offset = local.utcoffset()
            return ObservedTime(local.astimezone(timezone.utc), int(offset.total_seconds() // 60) if offset else 0,
                                "place")
        return ObservedTime(moment.replace(tzinfo=timezone.utc), None, "unknown")
    except (OverflowError, ValueError):  # the edge of the calendar: no instant to store
        raise IdentifyError("bad_date", f"{moment.isoformat()} cannot be placed in time") from None


@dataclass(frozen=True)
class BoundingBox:
    """GeoJSON order: west, south, east, north (degrees)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def holds(self, lat: float, lon: float) -> bool:
        inside_lon = self.min_lon <= lon <= self.max_lon if self.min_lon <= self.max_lon else \
            (lon >= self.min_lon or lon <= self.max_lon)  # across the antimeridian
        return self.min_lat <= lat <= self.max_lat and inside_lon

    def widened(self, margin: float) -> "BoundingBox":
        """The box grown by `margin` degrees on every side (clamped at the poles and the antimeridian)."""
        return BoundingBox(max(-180.0, self.min_lon - margin), max(-90.0, self.min_lat - margin),
                           min(180.0, self.max_lon + margin), min(90.0, self.max_lat + margin))


def _blank(raw: str | None) -> bool:
    return raw is None or raw.strip() == ""


def parse_coordinate(raw: str | None, name: str, limit: float) -> float | None:
    """A latitude (limit 90) or longitude (limit 180) in decimal degrees; blank means unknown."""
    if _blank(raw):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except ValueError:
        raise IdentifyError("bad_coordinates", f"{name} {raw!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise IdentifyError("bad_coordinates", f"{name} {raw!r} is outside [-{limit:g}, {limit:g}]")
    return value


def parse_position(lat: str | None, lon: str | None) -> tuple[float | None, float | None]:
    """Both or neither: half a position cannot be searched or mapped."""
    latitude, longitude = parse_coordinate(lat, "lat", 90), parse_coordinate(lon, "lon", 180)
    if (latitude is None) != (longitude is None):
        raise IdentifyError("bad_coordinates", "give both lat and lon, or neither")
    return latitude, longitude


def parse_timestamp(raw: str | None, name: str = "observed_at", local: bool = False) -> datetime | None:
    """ISO 8601 (a date alone means its midnight), as UTC; a time without a zone is taken as UTC, unless
    `local`: then it comes back as given (aware with its offset, or naive), for observed_time to place."""
    if _blank(raw):
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))  # type: ignore[union-attr]
    except ValueError:
        raise IdentifyError("bad_date", f"{name} {raw!r} is not an ISO 8601 date or time") from None
    if local:
        return value
    try:
        return as_utc(value)
    except OverflowError:
        raise IdentifyError("bad_date", f"{name} {raw!r} cannot be placed in time") from None


EARLIEST_OBSERVATION = datetime(1800, 1, 1)  # older dates are typos (museum skins are catalogued, not uploaded)
CLOCK_SKEW = timedelta(days=1)  # a camera or phone clock a little ahead is forgiven
WIDEST_OFFSET = timedelta(hours=14)  # a naive local time may be this far ahead of UTC (UTC+14, Kiribati)


def plausible_observation(moment: datetime) -> bool:
    """Between 1800 and now (plus a day of clock skew); a naive local time may be up to UTC+14 ahead."""
    now = datetime.now(timezone.utc)
    try:
        if moment.tzinfo is None:
            return EARLIEST_OBSERVATION <= moment <= now.replace(tzinfo=None) + CLOCK_SKEW + WIDEST_OFFSET
        return EARLIEST_OBSERVATION.replace(tzinfo=timezone.utc) <= moment.astimezone(timezone.utc) <= now + CLOCK_SKEW
    except OverflowError:  # 0001-01-01 with a positive offset, 9999-12-31 with a negative one
        return False


def parse_observed_at(raw: str | None, name: str = "observed_at") -> datetime | None:
    """When a bird was seen, as given (see parse_timestamp's `local`): not in the future, not before 1800."""
    moment = parse_timestamp(raw, name, local=True)
    if moment is not None and not plausible_observation(moment):
        raise IdentifyError("bad_date", f"{name} {raw!r} is in the future or before 1800")
    return moment


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
@overload
def as_utc(moment: datetime | None) -> datetime | None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """UTC, so every backend stores and compares the same instant (SQLite keeps no zone: naive means UTC)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def parse_bbox(raw: str | None) -> BoundingBox | None:
    """`west,south,east,north` in degrees (GeoJSON order); west > east crosses the antimeridian."""
    if _blank(raw):
        return None
    parts = raw.split(",")  # type: ignore[union-attr]
    if len(parts) != 4:
        raise IdentifyError("bad_coordinates", f"bbox {raw!r} must be west,south,east,north")
    west, east = (parse_coordinate(parts[i], "bbox longitude", 180) for i in (0, 2))
    south, north = (parse_coordinate(parts[i], "bbox latitude", 90) for i in (1, 3))
    if None in (west, south, east, north):
        raise IdentifyError("bad_coordinates", f"bbox {raw!r} has an empty value")
    if south > north:  # type: ignore[operator]
        raise IdentifyError("bad_coordinates", f"bbox {raw!r}: south is above north")
    return BoundingBox(west, south, east, north)  # type: ignore[arg-type]


GENERALISED_STEP = 0.1  # degrees: what the public sees of a position (about 11 km north-south)


def generalised(lat: float, lon: float, step: float = GENERALISED_STEP) -> tuple[float, float, int]:
    """The centre of the `step`-degree square that holds a position, and the radius in metres of that square
    (its half diagonal): what a public page shows instead of the exact place."""
    centre_lat = (math.floor(lat / step) + 0.5) * step
    centre_lon = (math.floor(lon / step) + 0.5) * step
    half_north = step / 2 * 110_574
    half_east = step / 2 * 111_320 * math.cos(math.radians(centre_lat))
    return round(centre_lat, 6), round(centre_lon, 6), int(math.ceil(math.hypot(half_north, half_east)))
