"""Place names for positions, offline: the nearest of GeoNames' places of 1,000 people or more, with its county
(or district) and region, from the data reverse_geocoder ships. A sighting card says "near Broughton Astley,
Leicestershire, England (GB)" to a curator and "Leicestershire, England (GB)" to the public, whose positions are
generalised (identify.web.views.location_json) and whose place names are too.

The table (about 150,000 places) is read once per process, on the first name asked for (about a second)."""

from __future__ import annotations

import functools
import threading
from typing import Any

import h3

_LOCK = threading.Lock()
TOWN_WITHIN_KM = 30  # farther from its nearest town, a position is named by its county and region only
NAMED_WITHIN_KM = 150  # farther (at sea, in a desert), it has no place name: the nearest would mislead


@functools.cache
def _geocoder() -> Any:
    import reverse_geocoder  # numpy and scipy's k-d tree: imported only when a name is asked for

    return reverse_geocoder.RGeocoder(mode=1, verbose=False)  # mode 1: one process (mode 2 forks a pool)


def warm_up() -> None:
    """Load the table in a background thread (about a second), so that no request waits for it."""
    threading.Thread(target=lambda: place_name(0.0, 0.0, exact=False), name="places-warm-up", daemon=True).start()


def place_name(lat: float, lon: float, exact: bool) -> str | None:
    """The place nearest (lat, lon) as a person names it; `exact`: with the town, else only the county and
    region (for a generalised position: a town would say more than the position does)."""
    with _LOCK:  # the geocoder's k-d tree is built on first use; one builder at a time
        found = _geocoder().query([(lat, lon)])
    if not found:
        return None
    row = found[0]
    away = h3.great_circle_distance((lat, lon), (float(row["lat"]), float(row["lon"])), unit="km")
    if away > NAMED_WITHIN_KM:
        return None
    parts = [row.get("name") if exact and away <= TOWN_WITHIN_KM else None, row.get("admin2"), row.get("admin1")]
    named = ", ".join(dict.fromkeys(part for part in parts if part))
    country = row.get("cc")
    if not named:
        return country or None
    return f"{'near ' if parts[0] else ''}{named}" + (f" ({country})" if country else "")

