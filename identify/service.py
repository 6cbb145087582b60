"""The identification service: what the web app does, without HTTP.

An upload is validated and decoded, identified (one forward pass, a search, fusion), stored (photo file by
content hash, then one SQL transaction) and added to the similar-sightings index. Curator reviews go to SQL
first; a photo promoted to a reference joins this process's reference index at once and every other
process's within `refresh_seconds`. The Flask layer (`identify.web`) only parses requests and renders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from identify.backbone import Backbone, load_backbone
from identify.batching import MicroBatcher
from identify.config import Settings, parse_boolean
from identify.curators import Curators
from identify.errors import IdentifyError
from identify.identifier import Identification, Identifier, NeighbourInfo
from identify.images import decode_image, image_format, read_image_file
from identify.live_index import LiveIndex, empty_index
from identify.metadata import exif_metadata, parse_bbox, parse_position, parse_timestamp
from identify.photos import THUMBNAIL_SIZE, PhotoStore
from identify.sightings import (
    NewSighting,
    PredictionRow,
    ReviewOutcome,
    ReviewRequest,
    SightingFilters,
    SightingRecord,
    SightingStore,
)
from identify.storage import Store, make_engine, upgrade_database
from identify.vectors import IndexPlan, VectorIndex, load_index, new_manifest, to_search_device

log = logging.getLogger(__name__)

MAX_SIMILAR = 100
MAX_TEXT = 2000  # observer and note


@dataclass(frozen=True)
class SightingFields:
    """What an uploader may say about a photo; blank fields are read from EXIF."""

    lat: float | None = None
    lon: float | None = None
    observed_at: object = None  # datetime | None
    observer: str | None = None
    note: str | None = None


def _text(raw: object, name: str) -> str | None:
    value = str(raw or "").strip()
    if len(value) > MAX_TEXT:
        raise IdentifyError("bad_field", f"{name} is longer than {MAX_TEXT} characters")
    return value or None


def parse_sighting_fields(form: Mapping[str, str]) -> SightingFields:
    lat, lon = parse_position(form.get("lat"), form.get("lon"))
    return SightingFields(lat, lon, parse_timestamp(form.get("observed_at")),
                          _text(form.get("observer"), "observer"), _text(form.get("note"), "note"))


def parse_filters(args: Mapping[str, str]) -> SightingFilters:
    """`species`, `from`, `to` (ISO 8601) and `bbox` (west,south,east,north) of a similar-sightings lookup."""
    start, end = parse_timestamp(args.get("from"), "from"), parse_timestamp(args.get("to"), "to")
    if start and end and start > end:
        raise IdentifyError("bad_date", "from is after to")
    return SightingFilters(_text(args.get("species"), "species"), start, end, parse_bbox(args.get("bbox")))


def parse_count(raw: str | None, name: str, default: int, limit: int, code: str = "bad_field") -> int:
    """A whole number in [1, limit]; blank gives the default."""
    if raw is None or str(raw).strip() == "":
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
    """A curator's review from a JSON object or a form: action, version, species, note, add_as_reference."""
    try:
        version = int(body.get("version"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise IdentifyError("bad_review", "version (the sighting's version you reviewed) is required") from None
    try:
        add_as_reference = parse_boolean(body.get("add_as_reference") or False)
    except ValueError:
        raise IdentifyError("bad_field", f"add_as_reference {body.get('add_as_reference')!r} is not true or false") from None
    return ReviewRequest(
        sighting_id=sighting_id, curator_id=curator_id, action=str(body.get("action") or ""), version=version,
        species=_text(body.get("species"), "species"), note=_text(body.get("note"), "note"),
        add_as_reference=add_as_reference,
    )


@dataclass(frozen=True)
class Identified:
    sighting_id: int
    result: Identification


@dataclass(frozen=True)
class SimilarSighting:
    sighting: SightingRecord
    similarity: float


class IdentificationService:
    def __init__(self, settings: Settings, backbone: Backbone, store: Store) -> None:
        self.settings = settings
        self.config = settings.fusion
        self.limits = settings.service
        self.backbone = backbone
        self.store = store
        self.photos = PhotoStore(settings.data_dir)
        self.sightings = SightingStore(store, self.photos)
        self.curators = Curators(store)
        self.index_name = settings.service.index
        identity = backbone.identity
        self.model_id = store.register_model(identity)
        store.ensure_species(identity.classes)  # predictions name them; create them before requests race to
        index_id = store.index_id(self.index_name)
        dim = identity.embedding_dim
        published = to_search_device(load_index(settings.indexes_dir, self.index_name))
        self.references = LiveIndex(
            published, published.manifest.max_reference_id,
            ids_after=lambda after: store.member_ids_after(index_id, self.model_id, after),
            vectors_of=lambda ids: store.reference_vectors(self.model_id, ids, dim),
            refresh_seconds=self.limits.refresh_seconds,
        )
        self.identifier = Identifier(backbone, self.references, store, self.config, self.index_name)
        # The transform, forward pass and search run batched in one thread; decoding and fusion run in the
        # request threads. All torch work stays in the batcher's thread: torch ops in request threads would each
        # start an OpenMP team whose spinning threads slow the forward pass (measured: 36 -> 54 ms).
        self.batcher = MicroBatcher(self.identifier.search, settings.service.max_batch, "identify-batcher")
        # Similar sightings: exact search (filters restrict it with an IDSelector), rebuilt from SQL at start.
        self.similar_index = LiveIndex(
            VectorIndex(empty_index(dim), new_manifest(identity, IndexPlan("flat", "Flat"), 0, 0)), 0,
            ids_after=lambda after: self.sightings.ids_after(self.model_id, after),
            vectors_of=lambda ids: self.sightings.vectors(ids, dim),
            refresh_seconds=self.limits.refresh_seconds,
        )
        self.references.refresh(force=True)
        self.similar_index.refresh(force=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> "IdentificationService":
        """Load the configured model (before touching SQL: a bad model changes nothing) and open the index."""
        if not settings.service.model:
            raise IdentifyError("no_model", "set IDENTIFY_MODEL (a birder model name or a .pt checkpoint)")
        backbone = load_backbone(settings.service.model)
        engine = make_engine(settings.database_url)
        upgrade_database(engine)
        return cls(settings, backbone, Store(engine))

    # ---- upload and match --------------------------------------------------------------------------------
    def _decode(self, data: bytes) -> Image.Image:
        if len(data) > self.limits.max_upload_bytes:
            raise IdentifyError("file_too_large", f"the photo is over {self.limits.max_upload_mb:g} MB", 413)
        return decode_image(data, self.limits.max_pixels, self.backbone.identity.decode_size)

    def identify_upload(self, data: bytes, fields: SightingFields) -> Identified:
        """Identify a photo and store it as a sighting. On any failure nothing is stored."""
        image = self._decode(data)
        # One forward pass with the uploads that arrive meanwhile.
        result = self.identifier.explain(self.batcher.submit(image))
        exif = exif_metadata(data)
        lat, lon = (fields.lat, fields.lon) if fields.lat is not None else (exif.lat, exif.lon)
        photo = self.photos.save(data, image_format(data))
        try:
            sighting_id = self.sightings.add(NewSighting(
                photo_sha256=photo.sha256, photo_name=photo.name, model_id=self.model_id,
                embedding=result.embedding, decision=result.decision.decision, reasons=result.decision.reasons,
                uncertainty=result.decision.uncertainty,
                predictions=[PredictionRow(s.name, s.score, s.classifier, s.knn) for s in result.species],
                neighbours=[(n.reference_id, n.similarity) for n in result.neighbours],
                lat=lat, lon=lon, observed_at=fields.observed_at or exif.observed_at,  # type: ignore[arg-type]
                observer=fields.observer, note=fields.note,
            ))
        except BaseException:
            self.photos.discard(photo)
            raise
        self.similar_index.add([sighting_id], result.embedding[None, :])
        return Identified(sighting_id, result)

    # ---- looking -----------------------------------------------------------------------------------------
    def sighting(self, sighting_id: int) -> SightingRecord:
        return self.sightings.get(sighting_id)

    def neighbours_of(self, record: SightingRecord) -> list[NeighbourInfo]:
        """The references a stored answer was based on, as they are now (species, thumbnail)."""
        known = self.store.references(i for i, _ in record.neighbours)
        return [NeighbourInfo(i, known[i].species, s, known[i].path, known[i].file_sha256)
                for i, s in record.neighbours if i in known]

    def _similar(self, embedding: np.ndarray, k: int, filters: SightingFilters, exclude: int | None) -> list[SimilarSighting]:
        """The k nearest sightings that pass the filters (SQL picks the ids, FAISS searches only those)."""
        allowed = self.sightings.matching_ids(self.model_id, filters) if filters.any else None
        if allowed is not None and exclude is not None:
            allowed = allowed[allowed != exclude]
        room_for_itself = 1 if exclude is not None and allowed is None else 0
        similarities, ids = self.similar_index.search(embedding[None, :], k + room_for_itself, allowed)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], similarities[0], strict=True) if i >= 0 and i != exclude][:k]
        records = self.sightings.many([i for i, _ in hits])
        return [SimilarSighting(records[i], s) for i, s in hits]

    def similar_to_sighting(self, sighting_id: int, k: int, filters: SightingFilters) -> list[SimilarSighting]:
        return self._similar(self.sightings.embedding(sighting_id), k, filters, exclude=sighting_id)

    def similar_to_photo(self, data: bytes, k: int, filters: SightingFilters) -> list[SimilarSighting]:
        """Past sightings like this photo; the photo itself is not stored."""
        embedding = self.batcher.submit(self._decode(data)).embedding
        return self._similar(embedding, k, filters, exclude=None)

    # ---- curation ----------------------------------------------------------------------------------------
    def queue(self, page: int, per_page: int) -> tuple[list[SightingRecord], int]:
        return self.sightings.queue(page, per_page)

    def review(self, request: ReviewRequest) -> ReviewOutcome:
        outcome = self.sightings.review(request, self.index_name, self.backbone.identity.classes)
        if outcome.reference_id is not None and outcome.reference_vector is not None:
            self.references.add([outcome.reference_id], outcome.reference_vector[None, :])
        return outcome

    def species_names(self) -> list[str]:
        """Every name a curator may choose: the model's classes and the references' species."""
        return sorted(set(self.backbone.identity.classes) | set(self.store.species_names()))

    # ---- files -------------------------------------------------------------------------------------------
    def thumbnail(self, sha256: str) -> Path | None:
        """The thumbnail of a stored photo or a reference, made on first use; None if neither has that hash."""
        path = self.photos.thumbnail_path(sha256)
        if path.exists():
            return path
        photo_name = self.sightings.by_photo(sha256)
        reference = self.store.reference_by_sha256(sha256) if photo_name is None else None
        try:
            if photo_name is not None:
                image = decode_image(self.photos.photo_path(photo_name).read_bytes(), self.limits.max_pixels,
                                     THUMBNAIL_SIZE)
            elif reference is not None:
                image = read_image_file(Path(reference.path), self.limits.max_pixels, THUMBNAIL_SIZE)
            else:
                return None
        except (IdentifyError, OSError) as exc:
            log.warning("no thumbnail for %s: %s", sha256, exc)
            return None
        return self.photos.make_thumbnail(sha256, image)
