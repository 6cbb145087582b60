"""The house wired in one place. The web app (IdentificationService) and every CLI command get their store,
taxonomy, reference set, sightings, reviews, curators, prior and identifier from `Parts`, so each is built the
same way everywhere: the schema migrated before any read, the operator's taxonomy mapping applied, the model's
classes given their taxa before the first answer names them.

Each part is built on first use: `identify curator add` opens SQL and never loads the name tables, and nothing
here imports torch."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from identify.certifications import Certifications
from identify.audit import Audits, AuditSummary
from identify.config import FusionConfig, Settings
from identify.curators import Curators
from identify.photos import PhotoStore
from identify.prior import Occurrences, PriorModel
from identify.observation import WhereAndWhen
from identify.reference_records import ReferenceRecords, SecondOpinion
from identify.references import References
from identify.reviews import Reviews
from identify.sighting_search import SightingSearch
from identify.sightings import SightingStore
from identify.storage import Store, make_engine, upgrade_database
from identify.taxonomy import Taxonomy

if TYPE_CHECKING:
    from identify.backbone import Backbone
    from identify.identifier import Identifier


class Parts:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        """`store`: an open one (tests, the service built by hand); else the configured database, migrated."""
        self.settings = settings
        self._model_ids: dict[str, int] = {}  # by checkpoint hash
        if store is not None:
            self.__dict__["store"] = store  # cached_property reads the instance dict first

    @cached_property
    def store(self) -> Store:
        """The system of record, migrated to the current schema (idempotent)."""
        engine = make_engine(self.settings.database_url)
        upgrade_database(engine)
        return Store(engine)

    @cached_property
    def taxonomy(self) -> Taxonomy:
        """The bird taxonomies with the operator's mapping file (IDENTIFY_TAXONOMY_MAPPING), if any."""
        return Taxonomy.with_mapping_file(self.settings.taxonomy_mapping)

    @cached_property
    def references(self) -> References:
        return References(self.store, self.taxonomy)

    @cached_property
    def sightings(self) -> SightingStore:
        return SightingStore(self.store, self.references)

    @cached_property
    def sighting_search(self) -> SightingSearch:
        return SightingSearch(self.store, self.references, self.sightings)

    @cached_property
    def photos(self) -> PhotoStore:
        return PhotoStore(self.settings.data_dir)

    @cached_property
    def reference_records(self) -> ReferenceRecords:
        return ReferenceRecords(self.store, self.references)

    @cached_property
    def reviews(self) -> Reviews:
        return Reviews(self.store, self.sightings, self.references, self.photos, self.reference_records)

    @cached_property
    def curators(self) -> Curators:
        return Curators(self.store, self.settings.service.token_days)

    @cached_property
    def audits(self) -> Audits:
        return Audits(self.store)

    @cached_property
    def certifications(self) -> Certifications:
        return Certifications(self.store, self.references)

    def audit_summary(self) -> AuditSummary:
        """The live audit since the calibration was fitted, held to the settings' target, as SQL has it now."""
        fitted = self.settings.calibration.fitted_at
        return self.audits.summary(self.settings.fusion.target_error, self.settings.fusion.risk_confidence,
                                   datetime.fromisoformat(fitted) if fitted else None)

    @cached_property
    def occurrences(self) -> Occurrences:
        return Occurrences(self.store, self.taxonomy)

    def second_opinion(self, prior: PriorModel | None) -> SecondOpinion | None:
        """The one second-opinion rule (ServiceConfig.second_opinion) as the deployment stands now: its enabled
        curators counted in SQL, so every worker, host and command agrees; None where the rule is off."""
        rules = self.settings.service.second_opinion_rules
        if not rules:
            return None

        def asks(label: str, where: Any) -> str | None:
            """all; new_species, when no active reference is of the species `label` names (any label of its
            taxon); first_record, when `where` (a row with lat, lon, observed_at) has a place and date and the
            records never had its taxon there in season. Without occurrence records first_record cannot tell,
            and asks nothing."""
            if "all" in rules:
                return "all"
            if "new_species" in rules and not self.reference_records.active_ids(label):
                return "new_species"
            taxon, place = self.taxonomy.resolve(label), WhereAndWhen.stored(where.lat, where.lon,
                                                                           where.observed_at).place()
            if "first_record" in rules and prior is not None and not prior.empty and taxon is not None and place:
                expected = prior.at(place, [taxon.scientific_name]).get(taxon.scientific_name)
                if expected is None or not expected.expected_here:
                    return "first_record"
            return None

        return SecondOpinion(asks, self.curators.enabled_count())

    def prior(self) -> PriorModel:
        """Place and season from imported occurrences and the service's confirmed sightings, as of now."""
        return self.occurrences.model(self.sightings.confirmed_records())

    def register(self, backbone: "Backbone") -> int:
        """The model's SQL id; its classes get their species and taxa (answers name them: before requests race),
        and labels recorded before their taxa existed are linked."""
        key = backbone.identity.sha256
        if key not in self._model_ids:
            self._model_ids[key] = self.store.register_model(backbone.identity)
            self.references.ensure_species(backbone.identity.classes)
        return self._model_ids[key]

    def reference_index(self, backbone: "Backbone", model_id: int, index_name: str,
                        refresh_seconds: float) -> Any:
        """The live reference set searched: the published index `index_name` (on the GPU when there is one) plus
        every member SQL gained since it was built (references curators added, builds of other processes), with
        retired references masked and restored ones back, following SQL from then on, and the index's newer
        versions as builds publish them."""
        from identify.vectors import gpu_count
        from identify.vectors.live import FollowingIndex, LiveIndex
        from identify.vectors.published import check_compatible, load_index, to_search_device

        references, identity, indexes_dir = self.references, backbone.identity, self.settings.indexes_dir
        index_id = self.store.index_id(index_name)

        def changes_since(stamp: int) -> tuple[int, list[int]] | None:
            now = references.change_stamp()
            return None if now == stamp else (now, references.retired_members(index_id))

        def open_live() -> LiveIndex:
            # Memory-mapped unless it goes to a GPU (which copies it whole): server processes share one copy.
            published = to_search_device(load_index(indexes_dir, index_name, mapped=gpu_count() == 0))
            check_compatible(published.manifest, identity, index_name)  # one model, one vector space
            return LiveIndex.caught_up(
                published, ids_after=lambda after: references.member_ids_after(index_id, model_id, after),
                vectors_of=lambda ids: references.vectors_of(model_id, ids, identity.embedding_dim),
                refresh_seconds=refresh_seconds, changes_since=changes_since)

        return FollowingIndex(indexes_dir, index_name, open_live, refresh_seconds)

    def identifier(self, backbone: "Backbone", index_name: str, config: FusionConfig | None = None,
                   refresh_seconds: float = 0, with_prior: bool = True, start_jobs: bool = False) -> "Identifier":
        """The service's identifier: this model over the live reference set, fused and calibrated by the
        settings (or `config`) or, once there is one, by the index's newest certification, with the prior unless
        place is left out. `start_jobs`: this process starts a re-certification when the references move past
        the newest one (a server does; a command that answers and exits does not)."""
        from identify.certifications import Following
        from identify.identifier import Identifier

        model_id = self.register(backbone)
        live = self.reference_index(backbone, model_id, index_name, refresh_seconds)
        fusion = config or self.settings.fusion
        with self.store.session() as session:
            index_id = self.references.index_of(session, index_name, model_id)
        identifier = Identifier(backbone, live, self.references, fusion, self.settings.calibration,
                                lambda: self.references.species_counts(index_name, model_id))
        identifier.following = Following(
            self.certifications, model_id, index_name, index_id, list(backbone.identity.classes),
            backbone.identity.embedding_dim, fusion, self.settings.calibration, lambda: identifier.prior,
            start_jobs=start_jobs, refresh_seconds=refresh_seconds)
        if with_prior:
            identifier.prior = self.prior()
        return identifier
