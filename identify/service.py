"""The identification service: what the web app does, without HTTP.

An upload is validated and decoded, identified (one forward pass, a search, fusion), stored (photo file by
content hash, then one SQL transaction) and added to the similar-sightings index. Curator reviews go to SQL
first; a photo promoted to a reference joins this process's reference index at once and every other
process's within `refresh_seconds`. The Flask layer (`identify.web`) only parses requests and renders."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from identify.batching import MicroBatcher
from identify.config import Settings
from identify.audit import AuditSummary
from identify.errors import IdentifyError
from identify.framing import Crop
from identify.identifier import Identification, NeighbourInfo
from identify.observation import WhereAndWhen, decode_image, read_photo_file
from identify.parts import Parts
from identify.photos import THUMBNAIL_SIZE
from identify.similar import SimilarSightings
from identify.bulk_review import MAX_GROUPED, MemberResult, ReviewGroup, review_groups, review_members
from identify.reference_health import HealthReport, ReferenceSet
from identify.reference_records import FLAGS, ReferenceFilters, ReferenceRecord, SecondOpinion
from identify.reviews import RECROP, ReviewOutcome, ReviewRequest
from identify.sighting_search import SightingFilters
from identify.sightings import SightingRecord
from identify.uploads import Identified, SightingFields, UploadPipeline
from identify.storage import Store
from identify.taxonomy import Suggestion

if TYPE_CHECKING:
    from identify.backbone import Backbone
    from identify.references import ReferenceInfo
    from identify.detector import BirdFinder

log = logging.getLogger(__name__)
NEAREST_REFERENCES = 8  # shown with a reference: what the index finds beside it
# How suggestions are weighed (identify.taxonomy.Taxonomy.suggest): the sighting's own scores (1 + score) above
# the place-and-season prior (at most PLACE_WEIGHT) above what the deployment knows at all.
PLACE_WEIGHT, KNOWN_WEIGHT = 0.9, 0.01
_AUDIT_DRAW = random.SystemRandom()  # which confident answers are audited: not guessable from outside

# A stored photo no row names after an hour was left by a killed upload (younger ones may be uploads in flight).
ORPHAN_AGE_SECONDS = 3600.0
# One process sweeps them at start, at most this often: the other workers, and restarts in between, skip the
# sweep and its SQL reads of every photo name.
SWEEP_EVERY_SECONDS = 3600.0

def load_finder(settings: Settings) -> "BirdFinder | None":
    """The configured detector (IDENTIFY_DETECTOR), loaded as birder loads one; None when none is set."""
    config = settings.service
    if not config.detector:
        return None
    from identify.detector import load_detector

    return load_detector(Path(config.detector).expanduser(), network=config.detector_network,
                         backbone=config.detector_backbone, bird_labels=config.detector_labels,
                         threshold=config.detector_threshold)


@dataclass(frozen=True)
class SimilarSighting:
    sighting: SightingRecord
    similarity: float


class IdentificationService:
    def __init__(self, settings: Settings, backbone: "Backbone", store: Store | None = None,
                 finder: "BirdFinder | None" = None) -> None:
        """`store`: an open one; else the configured database, migrated (identify.parts wires every part).
        `finder`: what finds the birds in a photo sent without a crop (identify.detector; None: none)."""
        parts = Parts(settings, store)
        self.settings = settings
        self.limits = settings.service
        self.backbone = backbone
        self.store = parts.store
        self.photos = parts.photos
        self.references = parts.references
        self.sightings = parts.sightings
        self.sighting_search = parts.sighting_search
        self.reviews = parts.reviews
        self.reference_records = parts.reference_records
        self.curators = parts.curators
        self.audits = parts.audits
        self.parts = parts
        # (when read, the review stamp it was read at, what): over-target groups decide answers, so every request
        # checks the stamp in SQL; the figures are worked out again only when a review moved it
        self._audit: tuple[float, int, AuditSummary] | None = None
        self.index_name = settings.service.index
        self.model_id = parts.register(backbone)
        self.references.link_taxa()  # labels recorded before taxa existed, or by an older release
        self.identifier = parts.identifier(backbone, self.index_name, refresh_seconds=self.limits.refresh_seconds,
                                           start_jobs=settings.service.auto_certify)
        self.reference_index = self.identifier.index
        identity = backbone.identity
        # The transform, forward pass and search run batched in one thread; decoding and fusion run in the
        # request threads. All torch work stays in the batcher's thread: torch ops in request threads would each
        # start an OpenMP team whose spinning threads slow the forward pass (measured: 36 -> 54 ms).
        self.batcher = MicroBatcher(self.identifier.search, settings.service.max_batch, "identify-batcher")
        # The detector (when one is configured) batches in a thread of its own, before the forward pass.
        self.finder = MicroBatcher(finder.find, settings.service.max_batch, "detect-batcher") if finder else None
        self.uploads = UploadPipeline(self)
        # Similar sightings: a published snapshot (planned as build-index plans) and the sightings stored since.
        self.similar_index = SimilarSightings(
            settings.indexes_dir, identity, self.model_id, self.sightings, self.limits.refresh_seconds,
            snapshot_rows=self.limits.similar_snapshot_rows, memory_budget=self.limits.similar_memory_budget)
        self.similar_index.snapshot_if_due()  # a first start over many sightings: publish one for the next start
        self._sweep_orphan_photos()

    def _sweep_orphan_photos(self) -> None:
        removed = self.photos.sweep_if_due(SWEEP_EVERY_SECONDS, self._photo_files_in_use, ORPHAN_AGE_SECONDS,
                                           self.sightings.names_photo)
        if removed:
            log.warning("removed %d stored photo files that no sighting names (a server killed mid-upload)", removed)

    def _photo_files_in_use(self) -> tuple[set[str], set[str]]:
        """(photo names sightings use, photo hashes sightings and references use)."""
        names, hashes = self.sightings.photo_files()
        return names, hashes | self.references.file_hashes()

    @classmethod
    def from_settings(cls, settings: Settings) -> "IdentificationService":
        """Load the configured model (before touching SQL: a bad model changes nothing) and open the index."""
        if not settings.service.model:
            raise IdentifyError("no_model", "set IDENTIFY_MODEL (a birder model name or a .pt checkpoint)")
        from identify.backbone import load_backbone  # torch: only once a model is really needed

        return cls(settings, load_backbone(settings.service.model), finder=load_finder(settings))

    # ---- upload and match --------------------------------------------------------------------------------
    def identify_upload(self, photos: Sequence[bytes], fields: SightingFields) -> Identified:
        """Identify one to five photos of one bird (each on its crop, or the detector's best bird) and store them
        as one sighting (identify.uploads). On any failure nothing is stored."""
        return self.uploads.identify(photos, fields)

    def _drawn_for_audit(self, result: Identification) -> bool:
        """A confident species answer joins the review queue as a blind audit with probability `audit_share` (one
        confident at a higher rank is in the queue already: the audit measures the species' bound)."""
        return result.rank == "species" and _AUDIT_DRAW.random() < self.limits.audit_share

    def audit_summary(self) -> AuditSummary:
        """The live audit since the calibration was fitted (identify.audit), as SQL has it on this request:
        worked out again whenever a review was recorded since (by any worker or host), and every
        refresh_seconds for the count of audits still open. Every path that decides reads its over-target
        groups from here: nothing a process remembers can keep answering confident past the audit's stop."""
        now, stamp, known = time.monotonic(), self.audits.stamp(), self._audit
        if known is None or known[1] != stamp or now - known[0] >= self.limits.refresh_seconds:
            known = (now, stamp, self.parts.audit_summary())
            self._audit = known  # one assignment: request threads see the old tuple or the new, never half
        return known[2]

    # ---- looking -----------------------------------------------------------------------------------------
    def sighting(self, sighting_id: int) -> SightingRecord:
        return self.sightings.get(sighting_id)

    def sighting_key(self, public_id: str) -> int:
        """The SQL key of a sighting from the id the outside world knows; unknown_sighting (404) otherwise."""
        return self.sightings.key_of(public_id)

    def neighbours_of(self, record: SightingRecord) -> list[NeighbourInfo]:
        """The references a stored answer was based on, as they are now (species, thumbnail)."""
        return self._as_neighbours(record.neighbours)

    def _as_neighbours(self, pairs: Sequence[tuple[int, float]]) -> list[NeighbourInfo]:
        """(reference id, similarity) pairs as the references are now (species, thumbnail, public id)."""
        known = self.references.info(i for i, _ in pairs)
        return [NeighbourInfo.of(known[i], s) for i, s in pairs if i in known]

    def _nearest_references(self, vector: np.ndarray, count: int, allowed: np.ndarray | None = None,
                            leave_out: int | None = None) -> list[NeighbourInfo]:
        """The live index's `count` nearest references to `vector` (among `allowed`), `leave_out` left out."""
        similarities, found = self.reference_index.search(vector[None, :], count + (leave_out is not None), allowed)
        pairs = [(int(i), float(s)) for s, i in zip(similarities[0], found[0], strict=True) if i >= 0 and i != leave_out]
        return self._as_neighbours(pairs[:count])

    def _similar(self, embedding: np.ndarray, k: int, filters: SightingFilters, exclude: int | None) -> list[SimilarSighting]:
        """The k nearest sightings that pass the filters (SQL picks the ids, FAISS searches only those), none
        below the similarity floor."""
        allowed = self.sighting_search.matching_ids(self.model_id, filters) if filters.any else None
        if allowed is not None and exclude is not None:
            allowed = allowed[allowed != exclude]
        room_for_itself = 1 if exclude is not None and allowed is None else 0
        similarities, ids = self.similar_index.search(embedding[None, :], k + room_for_itself, allowed)
        floor = self.limits.similar_floor
        hits = [(int(i), float(s)) for i, s in zip(ids[0], similarities[0], strict=True)
                if i >= 0 and i != exclude and s >= floor][:k]
        records = self.sightings.many([i for i, _ in hits])
        return [SimilarSighting(records[i], s) for i, s in hits]

    def similar_to_sighting(self, sighting_id: int, k: int, filters: SightingFilters) -> list[SimilarSighting]:
        return self._similar(self.sightings.embedding(sighting_id), k, filters, exclude=sighting_id)

    def similar_to_photo(self, data: bytes, k: int, filters: SightingFilters) -> list[SimilarSighting]:
        """Past sightings like this photo; the photo itself is not stored."""
        embedding = self.batcher.submit(self.uploads.read(data).image).embedding
        return self._similar(embedding, k, filters, exclude=None)

    # ---- curation ----------------------------------------------------------------------------------------
    def queue(self, page: int, per_page: int) -> tuple[list[SightingRecord], int]:
        return self.reviews.queue(page, per_page)

    def review(self, request: ReviewRequest) -> ReviewOutcome:
        if request.action == RECROP:  # a better look: identified again on the new crops, still open
            record = self.sightings.get(request.sighting_id, with_reviews=False)
            return ReviewOutcome(self.uploads.reframe(record, request.crops, request.curator_id, request.version,
                                                      request.note, self.reviews.recrop), None)
        outcome = self.reviews.review(request, self.index_name, self.backbone.identity.classes, self.second_opinion())
        # committed: this process searches a new or changed reference at once, other workers on their refresh
        self.reference_index.refresh(force=True)
        confirmed = outcome.sighting
        prior = self.identifier.prior
        if prior is not None and confirmed.status in ("confirmed", "corrected") and confirmed.taxon is not None and \
                confirmed.lat is not None and confirmed.lon is not None and confirmed.observed_at is not None:
            # A confirmed sighting is a record for the prior: this process counts it now, others at restart.
            prior.add_records([(confirmed.taxon.scientific_name, confirmed.lat, confirmed.lon, confirmed.observed_at)])
        return outcome

    def references_page(self, filters: ReferenceFilters, page: int, per_page: int) -> tuple[list[ReferenceRecord], int]:
        """One page of references; with a health flag, only those the health check lists under it."""
        if filters.flag in FLAGS:
            report, chosen = self._health()
            filters = replace(filters, flagged=report.flagged(filters.flag, chosen.public_ids, chosen.canonical))
        return self.reference_records.page(filters, page, per_page)

    def reference(self, public_id: str) -> tuple[ReferenceRecord, list[NeighbourInfo]]:
        """A reference with its history, and its nearest active references (itself left out)."""
        record = self.reference_records.get(public_id)
        ids, vectors = self.references.vectors_of(self.model_id, [record.id], self.backbone.identity.embedding_dim)
        if not len(ids):  # embedded by another model only
            return record, []
        return record, self._nearest_references(vectors[0], NEAREST_REFERENCES, leave_out=record.id)

    def reference_health(self) -> HealthReport:
        """The health check of the references this service searches (identify.reference_health), by its
        labels as answers name them."""
        return self._health()[0]

    def _health(self) -> tuple[HealthReport, ReferenceSet]:
        from identify.reference_health import check_reference_set, reference_set

        return check_reference_set(reference_set(self.references, self.index_name), self.identifier.names.canonical,
                                   self.identifier.config)

    def references_like(self, record: SightingRecord, count: int = 3, label: str | None = None) -> list[NeighbourInfo]:
        """The references of the sighting's proposed species (or of `label`) nearest to it: what a curator
        compares it with."""
        label = label or record.species
        if label is None:
            return []
        allowed = np.asarray(self.reference_records.active_ids(label), dtype=np.int64)
        if not len(allowed):
            return []
        return self._nearest_references(self.sightings.embedding(record.id), count, allowed)

    def compare(self, record: SightingRecord, species: int = 3, per_species: int = 3) -> list[tuple[Any, list[NeighbourInfo]]]:
        """The compare view (iNaturalist's Compare, Pl@ntNet's gallery per candidate): for each of the top
        `species`, its own references nearest to the sighting."""
        return [(ranked, self.references_like(record, per_species, ranked.name)) for ranked in record.predictions[:species]]

    def change_reference(self, public_id: str, action: str, curator_id: int | None, **change: object) -> ReferenceRecord:
        """Relabel, retire or restore a reference (identify.reference_records); this worker searches the new
        state at once, the others within IDENTIFY_REFRESH_SECONDS."""
        record = self.reference_records.change(public_id, action, curator_id=curator_id,
                                               model_classes=self.backbone.identity.classes,
                                               second_opinion=self.second_opinion(), **change)  # type: ignore[arg-type]
        self.reference_index.refresh(force=True)
        return record

    def second_opinion(self) -> SecondOpinion | None:
        """The one second-opinion rule as the deployment stands now (identify.parts.Parts.second_opinion)."""
        return self.parts.second_opinion(self.identifier.prior)

    def review_groups(self) -> list[ReviewGroup]:
        """Open sightings that look alike and share their answer (identify.bulk_review), biggest group first."""
        records, _ = self.reviews.queue(1, MAX_GROUPED)
        return review_groups(records, self.sightings.embedding, self.limits.group_similarity)

    def review_many(self, requests: Sequence[tuple[str, ReviewRequest]]) -> list[MemberResult]:
        """A group's review: each member reviewed on its own, a stale one failing alone."""
        return review_members(self.review, requests)

    def species_names(self) -> list[str]:
        """The labels in use: the model's classes and the references' species."""
        return sorted(set(self.backbone.identity.classes) | set(self.references.species_names()))

    def suggest_taxa(self, text: str, limit: int, sighting_id: int | None = None) -> list[Suggestion]:
        """Names of the taxonomy (common or scientific, any authority) for what a curator has typed so far: for a
        sighting, the species the model scored for it first, then what is recorded at its place and season,
        then what this deployment knows (labels in use), then by how the name matches."""
        return self.references.taxonomy.suggest(text, limit, self._suggestion_context(sighting_id))

    def _suggestion_context(self, sighting_id: int | None) -> dict[str, float]:
        taxa = self.identifier.names.taxa
        context = {t.scientific_name: KNOWN_WEIGHT for t in taxa.values() if t is not None}
        if sighting_id is None:
            return context
        record = self.sightings.get(sighting_id, with_reviews=False)
        place = WhereAndWhen.stored(record.lat, record.lon, record.observed_at).place()
        prior = self.identifier.prior
        if place is not None and prior is not None and not prior.empty:
            for name, here in prior.at(place).items():
                context[name] = max(context.get(name, 0.0), PLACE_WEIGHT * here.probability)
        for ranked in record.predictions:
            taxon = taxa.get(ranked.name)
            if taxon is not None:
                context[taxon.scientific_name] = max(context.get(taxon.scientific_name, 0.0), 1.0 + ranked.score)
        return context

    def export(self, fmt: str, status: str, out: Path) -> int:
        """Sightings as Darwin Core into `out` (identify.export), photos linked under the configured public URL
        (never one a request's Host header names); returns how many."""
        from identify.export import export_rows, installation_id, write_export

        return write_export(export_rows(self.store, status), out, fmt, installation_id(self.settings.data_dir),
                            self.limits.public_url or "")

    # ---- files -------------------------------------------------------------------------------------------
    def thumbnail(self, sha256: str, crop: Crop | None = None) -> Path | None:
        """The thumbnail of a stored photo or a reference, or of a crop a sighting stored for the photo (what the
        model looked at), made on first use; None if there is no such photo or crop (no request makes a file of a
        crop nobody stored)."""
        path = self.photos.thumbnail_path(sha256, crop)
        if path.exists():
            return path
        photo_name = self.sightings.by_photo(sha256)
        reference = self.references.by_sha256(sha256) if photo_name is None or crop is not None else None
        if crop is not None and crop.text not in {known.text for known in self._stored_crops(sha256, reference)}:
            return None
        draft = crop.decode_size(THUMBNAIL_SIZE) if crop else THUMBNAIL_SIZE
        try:
            if photo_name is not None:
                image = decode_image(self.photos.photo_path(photo_name).read_bytes(), self.limits.max_pixels, draft)
            elif reference is not None:
                image = read_photo_file(Path(reference.path), self.limits.max_pixels, draft).image
            else:
                return None
            return self.photos.make_thumbnail(sha256, crop.cut(image) if crop else image, crop)
        except (IdentifyError, OSError) as exc:
            log.warning("no thumbnail for %s: %s", sha256, exc)
            return None

    def _stored_crops(self, sha256: str, reference: ReferenceInfo | None) -> list[Crop]:
        """The crops sightings and the reference (if any) stored for a photo: the cropped thumbnails it may have."""
        return [*self.sightings.crops_of(sha256), *([reference.crop] if reference and reference.crop else [])]
