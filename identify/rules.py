"""The limits of a request, in one place: the service, the form and query parser (identify.web.forms, for the
pages and the API alike) and the API's schemas (identify.web.schemas, which the OpenAPI document states) all read
these, so what the document promises is what the parser enforces, and the SQL columns are as wide as it."""

from __future__ import annotations

MAX_TEXT = 2000  # characters of a note, a reason, a query
# characters of a name stored as given: an observer, a species as written, a curator. The SQL columns that hold
# one are this wide (identify.schema), so the documented limit is what every database takes.
MAX_NAME = 300
MAX_SOURCE = 500  # characters of a reference's source (the manifest's `source` column)
MAX_SIMILAR = 100  # k of a similar-sightings search
MAX_PAGE = 1_000_000  # of the review queue
MAX_PER_PAGE = 100
MAX_SUGGESTIONS = 50  # `limit` of /taxa
MIN_VERSION = 1  # a sighting's first version
MAX_VERSION = 2**31 - 1  # a sighting's version is an SQL INTEGER on every backend
MAX_PHOTOS = 5  # of one bird in one sighting (as Pl@ntNet takes)
