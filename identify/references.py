"""The reference set, and the one owner of its tables: species labels and the taxa they name, reference photos,
their embeddings, and which index each belongs to.

Both ways a reference comes in go through `References.add`: the index builder (a batch of labelled photos)
and a curator's review (a sighting's photo, inside the review's transaction). A curator can relabel, retire and
restore a reference (identify.reference_records records why; `set_state` here changes the row). Searching
goes through the live index identify.parts opens: the published FAISS index plus every row SQL gained since it
was built, with retired references masked, so the web app and `identify predict` see the same reference set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identify.errors import IdentifyError
from identify.framing import Crop
from identify.observation import WhereAndWhen
from identify.schema import Embedding, Index, IndexMember, ReferenceChange, ReferenceImage, Species
from identify.schema import Taxon as TaxonRow
from identify.storage import IN_CHUNK, Store, packed_probabilities, rows_to_arrays
from identify.taxonomy import Taxon, Taxonomy, species_key


ACTIVE, RETIRED = "active", "retired"  # a retired reference is kept, out of every index and search


@dataclass(frozen=True)
class NewReference:
    """A photo to record as a reference, with its embedding."""

    file_sha256: str
    path: str
    species: str  # the label as written; it is resolved to a taxon when first seen
    vector: np.ndarray | bytes  # float32, as the network gave it
    where: WhereAndWhen = WhereAndWhen()
    source: str | None = None
    creator: str | None = None  # the photographer (dcterms:creator)
    license: str | None = None  # a licence name or URL (dcterms:license)
    sighting_id: int | None = None  # promoted from this sighting by a curator
    crop: Crop | None = None  # the part of the photo its embedding was taken from
    probabilities: np.ndarray | bytes | None = None  # the classifier's output from the same forward pass
    individual: str | None = None  # the bird or source it shows (a manifest's group, a sub-folder, a sighting)


@dataclass(frozen=True)
class KnownReference:
    id: int
    species: str
    embedded: bool  # by the model asked about


@dataclass(frozen=True)
class ReferenceInfo:
    id: int
    species: str
    path: str
    file_sha256: str
    public_id: str  # what answers, pages and the API call it
    crop: Crop | None = None  # the part of the photo its embedding was taken from (what its thumbnail shows)
    label: str = ""  # as the build wrote it ("Passer_domesticus"); `species` is the species it stands for

    @classmethod
    def of(cls, row: Any) -> "ReferenceInfo":
        """From a row of INFO_COLUMNS."""
        return cls(row[0], row[1], row[2], row[3], row[4], Crop.of(row[5]), row[6] or row[1])


INFO_COLUMNS = (ReferenceImage.id, Species.name, ReferenceImage.path, ReferenceImage.file_sha256,
                ReferenceImage.public_id, ReferenceImage.crop, ReferenceImage.label)


def taxon_of_row(row: TaxonRow | None) -> Taxon | None:
    """The taxonomy's Taxon of a `taxa` row (None stays None)."""
    if row is None:
        return None
    return Taxon(row.scientific_name, row.common_name, row.rank, row.genus, row.family, row.order_name,
                 row.authority, row.authority_version)


class References:
    def __init__(self, store: Store, taxonomy: Taxonomy | None = None) -> None:
        self.store = store
        self.sessions = store.sessions
        self._taxonomy = taxonomy
        self._species_ids: dict[str, int] = {}  # labels are never renamed or deleted: safe to keep

    @property
    def taxonomy(self) -> Taxonomy:
        if self._taxonomy is None:  # loaded on first need: SQL-only commands never pay for the name tables
            self._taxonomy = Taxonomy()
        return self._taxonomy

    # ---- species and taxa --------------------------------------------------------------------------------
    def _taxon_id(self, session: Session, taxon: Taxon) -> int:
        found = session.scalar(select(TaxonRow.id).where(TaxonRow.scientific_name == taxon.scientific_name))
        if found is not None:
            return found
        row = TaxonRow(scientific_name=taxon.scientific_name, common_name=taxon.common_name, rank=taxon.rank,
                       genus=taxon.genus, family=taxon.family, order_name=taxon.order, authority=taxon.authority,
                       authority_version=taxon.version)
        session.add(row)
        session.flush()
        return row.id

    def species_id(self, session: Session, label: str, taxon: Taxon | None = None) -> int:
        """The id of the species `label` stands for (identify.taxonomy.species_key: the row named by its
        species-rank taxon's scientific name, else the label's own), created with its taxon when new. The label
        itself is kept as a row too, an alias naming its taxon. A row created here is cached only once a later
        call sees it committed, so a rollback leaves no dangling id."""
        cached = self._species_ids.get(label)
        if cached is not None:
            return cached
        taxon = taxon or self.taxonomy.resolve(label)
        key = species_key(label, taxon)
        created = False
        for name in dict.fromkeys((label, key)):
            if self._row_id(session, name) is None:
                self._create(session, name, taxon)
                created = True
        key_id = self._row_id(session, key)
        assert key_id is not None  # just made, or there before
        if not created:
            self._species_ids[label] = key_id
        return key_id

    def key_of(self, label: str) -> str:
        """The species `label` is kept under (identify.taxonomy.species_key), without touching SQL."""
        return species_key(label, self.taxonomy.resolve(label))

    @staticmethod
    def _row_id(session: Session, name: str) -> int | None:
        return session.scalar(select(Species.id).where(Species.name == name))

    def _create(self, session: Session, name: str, taxon: Taxon | None) -> int:
        species = Species(name=name, taxon_id=self._taxon_id(session, taxon) if taxon else None)
        session.add(species)
        session.flush()
        return species.id

    def ensure_species(self, labels: Iterable[str]) -> None:
        """Create the species rows that are missing (with their taxa), so that concurrent requests never race
        to create one."""
        wanted = list(dict.fromkeys(labels))
        for _attempt in range(3):
            try:
                with self.sessions.begin() as session:
                    have = set(session.scalars(select(Species.name)))
                    for label in wanted:
                        if label not in have:
                            self.species_id(session, label)
                return
            except IntegrityError:  # another process (a worker starting beside us) added some first
                continue
        raise IdentifyError("database_conflict", "could not record the species names; try again", 503, retry_after=1)

    def link_taxa(self, relink: bool = False) -> tuple[int, int]:
        """Resolve species labels that have no taxon yet (all of them with `relink`, after the mapping file
        changed); returns (resolved, unresolved) among those looked at."""
        resolved = unresolved = 0
        with self.sessions.begin() as session:
            query = select(Species) if relink else select(Species).where(Species.taxon_id.is_(None))
            for species in session.scalars(query):
                taxon = self.taxonomy.resolve(species.name)
                species.taxon_id = self._taxon_id(session, taxon) if taxon else None
                resolved, unresolved = resolved + (taxon is not None), unresolved + (taxon is None)
        return resolved, unresolved

    def label_taxa(self) -> dict[str, Taxon | None]:
        """Every species label and the taxon it names."""
        with self.store.session() as session:
            rows = session.execute(select(Species.name, TaxonRow).outerjoin(TaxonRow, TaxonRow.id == Species.taxon_id))
            return {name: taxon_of_row(taxon) for name, taxon in rows}

    def species_names(self) -> list[str]:
        with self.store.session() as session:
            return list(session.scalars(select(Species.name).order_by(Species.name)))

    def label_for_taxon(self, session: Session, taxon: Taxon, preferred: Iterable[str] = ()) -> str:
        """The label that stands for `taxon`: a species-rank taxon's scientific name (species_key); for a higher
        taxon, one of `preferred` (the model's classes) that names it, else an existing label of it, else its
        common (or scientific) name."""
        if taxon.rank == "species":
            return taxon.scientific_name
        for label in preferred:
            resolved = self.taxonomy.resolve(label)
            if resolved is not None and resolved.scientific_name == taxon.scientific_name:
                return label
        existing = session.scalar(
            select(Species.name).join(TaxonRow, TaxonRow.id == Species.taxon_id)
            .where(TaxonRow.scientific_name == taxon.scientific_name).order_by(Species.id).limit(1)
        )
        return existing or taxon.label

    def label_named(self, session: Session, name: str, model_classes: Sequence[str], as_written: bool = False) -> str:
        """The species a curator's name stands for: a known label's species (species_key); else any name of the
        taxonomy (common or scientific, any authority), as the label that stands for its taxon; else, only when
        asked, the name as written (`unknown_species` with the nearest names otherwise)."""
        if not name:
            raise IdentifyError("unknown_species", "name the species", 400)
        taxon = self.taxonomy.resolve(name)
        if name in model_classes or self._row_id(session, name) is not None:
            return species_key(name, taxon)
        if taxon is not None:
            return self.label_for_taxon(session, taxon, preferred=model_classes)
        if as_written:
            return name
        close = ", ".join(s.name for s in self.taxonomy.suggest(name, limit=5))
        error = IdentifyError("unknown_species", f"{name!r} is in no bird taxonomy"
                              + (f" (did you mean: {close}?)" if close else "")
                              + "; to use it anyway, send as_written", 400)
        error.details = {"suggestions": close.split(", ") if close else []}
        raise error

    # ---- adding ------------------------------------------------------------------------------------------
    def add(self, session: Session, index_id: int, model_id: int, references: list[NewReference]) -> list[int]:
        """Record references, their embeddings and index membership in the caller's transaction; returns their
        ids. A photo already recorded (same sha256) is reused, so a resumed build never duplicates a row; one
        recorded under another species is refused (`reference_conflict`)."""
        ids: list[int] = []
        for ref in references:
            species_id = self.species_id(session, ref.species)
            _insert_if_absent(session, ReferenceImage, dict(
                file_sha256=ref.file_sha256, path=ref.path, species_id=species_id, label=ref.species,
                lat=ref.where.lat, lon=ref.where.lon,
                observed_at=ref.where.observed_at, source=ref.source, sighting_id=ref.sighting_id,
                creator=ref.creator, license=ref.license, individual=ref.individual,
                crop=ref.crop.to_dict() if ref.crop is not None else None), ["file_sha256"])
            row = session.scalars(select(ReferenceImage).where(ReferenceImage.file_sha256 == ref.file_sha256)
                                  .execution_options(populate_existing=True)).one()
            if row.species_id != species_id:
                held = session.get(Species, row.species_id)
                raise IdentifyError("reference_conflict", f"this photo is already reference {row.public_id}, "
                                    f"labelled {held.name if held else '?'}: relabel that reference instead", 409)
            vector = ref.vector if isinstance(ref.vector, bytes) else \
                np.ascontiguousarray(ref.vector, dtype=np.float32).tobytes()
            _insert_if_absent(session, Embedding, dict(reference_id=row.id, model_id=model_id, vector=vector,
                                                       probabilities=packed_probabilities(ref.probabilities)),
                              ["reference_id", "model_id"])
            self._add_member(session, index_id, row.id)
            ids.append(row.id)
        return ids

    def add_batch(self, index_id: int, model_id: int, references: list[NewReference]) -> list[int]:
        """`add` in a transaction of its own (the index builder commits each batch as it finishes)."""
        with self.sessions.begin() as session:
            return self.add(session, index_id, model_id, references)

    @staticmethod
    def _add_member(session: Session, index_id: int, reference_id: int) -> bool:
        return _insert_if_absent(session, IndexMember, dict(index_id=index_id, reference_id=reference_id),
                                 ["index_id", "reference_id"])

    def add_members(self, index_id: int, reference_ids: Iterable[int]) -> int:
        """Make already-embedded references members of an index; returns how many were new members."""
        with self.sessions.begin() as session:
            return sum(self._add_member(session, index_id, reference_id) for reference_id in reference_ids)

    def index_of(self, session: Session, index_name: str, model_id: int) -> int:
        """The id of index `index_name`, which must hold embeddings of `model_id`."""
        index = session.scalar(select(Index).where(Index.name == index_name))
        if index is None:
            raise IdentifyError("unknown_index", f"no index named {index_name!r}", 404)
        if index.model_id != model_id:
            raise IdentifyError("index_model_mismatch", f"index {index_name!r} holds embeddings of another model", 409)
        return index.id

    # ---- looking up --------------------------------------------------------------------------------------
    def known(self, model_id: int, hashes: Iterable[str]) -> dict[str, KnownReference]:
        """The references among these file hashes: sha256 -> id, species, and whether `model_id` embedded it."""
        found: dict[str, KnownReference] = {}
        wanted = list(hashes)
        with self.store.session() as session:
            for start in range(0, len(wanted), IN_CHUNK):
                rows = session.execute(
                    select(ReferenceImage.file_sha256, ReferenceImage.id, Species.name, Embedding.id)
                    .join(Species, Species.id == ReferenceImage.species_id)
                    .outerjoin(Embedding, (Embedding.reference_id == ReferenceImage.id) & (Embedding.model_id == model_id))
                    .where(ReferenceImage.file_sha256.in_(wanted[start : start + IN_CHUNK]))
                )
                found.update({sha: KnownReference(ref_id, species, emb is not None) for sha, ref_id, species, emb in rows})
        return found

    def species_counts(self, index_name: str, model_id: int) -> dict[str, int]:
        """References per species label among the members of `index_name` that `model_id` embedded: what the
        open-set rule asks (identify.openset)."""
        with self.store.session() as session:
            index_id = self.index_of(session, index_name, model_id)
            rows = session.execute(
                select(Species.name, func.count())
                .select_from(IndexMember)
                .join(ReferenceImage, ReferenceImage.id == IndexMember.reference_id)
                .join(Species, Species.id == ReferenceImage.species_id)
                .join(Embedding, (Embedding.reference_id == IndexMember.reference_id) & (Embedding.model_id == model_id))
                .where(IndexMember.index_id == index_id, ReferenceImage.status == ACTIVE)
                .group_by(Species.name))
            return {name: int(count) for name, count in rows}

    def labelled_vectors(self, index_name: str, model_id: int, dim: int) -> tuple[np.ndarray, list[str], list[int | None]]:
        """Every member of `index_name` as `model_id` embedded it: (vectors, species labels, the sighting each was
        promoted from, if any), in id order."""
        with self.store.session() as session:
            index_id = self.index_of(session, index_name, model_id)
        ids, vectors = self.index_vectors(index_id, model_id, dim)
        known = self.info(int(i) for i in ids)
        with self.store.session() as session:
            promoted = dict(session.execute(select(ReferenceImage.id, ReferenceImage.sighting_id)
                                            .where(ReferenceImage.sighting_id.is_not(None))).all())
        return vectors, [known[int(i)].species for i in ids], [promoted.get(int(i)) for i in ids]

    def member_count(self, index_id: int) -> int:
        """The index's members that are not retired: what a published index of it holds."""
        with self.store.session() as session:
            return session.scalar(select(func.count()).select_from(IndexMember)
                                  .join(ReferenceImage, ReferenceImage.id == IndexMember.reference_id)
                                  .where(IndexMember.index_id == index_id, ReferenceImage.status == ACTIVE)) or 0

    def retired_members(self, index_id: int) -> list[int]:
        """Ids of the index's retired members: a published index leaves them out, a live one masks them."""
        with self.store.session() as session:
            return list(session.scalars(select(IndexMember.reference_id)
                                        .join(ReferenceImage, ReferenceImage.id == IndexMember.reference_id)
                                        .where(IndexMember.index_id == index_id, ReferenceImage.status == RETIRED)))

    def change_stamp(self) -> int:
        """The newest reference change's id: when it moves, labels or retirements changed (identify.vectors.live)."""
        with self.store.session() as session:
            return int(session.scalar(select(func.max(ReferenceChange.id))) or 0)

    def set_state(self, session: Session, reference_id: int, version: int, species_id: int, status: str) -> bool:
        """Label and status of a reference, if it is still at `version` (in the caller's transaction); False when
        someone changed it meanwhile."""
        # a relabel drops the label as written: the reference is then called by its new species' own name
        label = case((ReferenceImage.species_id == species_id, ReferenceImage.label), else_=None)
        result = session.execute(update(ReferenceImage)
                                 .where(ReferenceImage.id == reference_id, ReferenceImage.version == version)
                                 .values(species_id=species_id, status=status, version=version + 1, label=label))
        return bool(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult, for an UPDATE

    def iter_index_vectors(self, index_id: int, model_id: int, dim: int, after_id: int = 0,
                           batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32) of an index's active members with id > after_id, in id order, in chunks."""
        with self.store.session() as session:
            last = after_id
            while True:
                rows = session.execute(
                    select(Embedding.reference_id, Embedding.vector)
                    .join(IndexMember, IndexMember.reference_id == Embedding.reference_id)
                    .join(ReferenceImage, ReferenceImage.id == Embedding.reference_id)
                    .where(IndexMember.index_id == index_id, Embedding.model_id == model_id,
                           Embedding.reference_id > last, ReferenceImage.status == ACTIVE)
                    .order_by(Embedding.reference_id).limit(batch)
                ).all()
                if not rows:
                    return
                ids, vectors = rows_to_arrays(list(rows), dim)
                yield ids, vectors
                last = int(ids[-1])

    def index_vectors(self, index_id: int, model_id: int, dim: int, after_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        chunks = list(self.iter_index_vectors(index_id, model_id, dim, after_id))
        if not chunks:
            return np.empty(0, dtype=np.int64), np.empty((0, dim), dtype=np.float32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def file_hashes(self) -> set[str]:
        """The content hashes of every reference photo (their thumbnails are kept by the photo sweep)."""
        with self.store.session() as session:
            return set(session.scalars(select(ReferenceImage.file_sha256)))

    def member_ids_after(self, index_id: int, model_id: int, after_id: int) -> list[int]:
        """Ids above `after_id` of the index's members that `model_id` has embedded, ascending."""
        with self.store.session() as session:
            return list(session.scalars(
                select(IndexMember.reference_id)
                .join(Embedding, Embedding.reference_id == IndexMember.reference_id)
                .where(IndexMember.index_id == index_id, Embedding.model_id == model_id,
                       IndexMember.reference_id > after_id)
                .order_by(IndexMember.reference_id)
            ))

    def vectors_of(self, model_id: int, ids: list[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, raw vectors) of these references under `model_id`."""
        rows: list[Any] = []
        with self.store.session() as session:
            for start in range(0, len(ids), IN_CHUNK):
                rows += session.execute(
                    select(Embedding.reference_id, Embedding.vector)
                    .where(Embedding.model_id == model_id, Embedding.reference_id.in_(ids[start : start + IN_CHUNK]))
                ).all()
        return rows_to_arrays(rows, dim)

    def info(self, ids: Iterable[int]) -> dict[int, ReferenceInfo]:
        """Species label, path and file hash of these references."""
        wanted = [int(i) for i in ids]
        found: dict[int, ReferenceInfo] = {}
        with self.store.session() as session:
            for start in range(0, len(wanted), IN_CHUNK):
                rows = session.execute(select(*INFO_COLUMNS).join(Species, Species.id == ReferenceImage.species_id)
                                       .where(ReferenceImage.id.in_(wanted[start : start + IN_CHUNK])))
                found.update({row[0]: ReferenceInfo.of(row) for row in rows})
        return found

    def by_sha256(self, file_sha256: str) -> ReferenceInfo | None:
        with self.store.session() as session:
            row = session.execute(select(*INFO_COLUMNS).join(Species, Species.id == ReferenceImage.species_id)
                                  .where(ReferenceImage.file_sha256 == file_sha256)).first()
        return ReferenceInfo.of(row) if row else None


def _insert_if_absent(session: Session, table: type, values: dict[str, Any], key: list[str]) -> bool:
    """INSERT ... ON CONFLICT (key) DO NOTHING; True when this call inserted the row. Two transactions adding the
    same photo at once (two curators promoting two sightings of it, two builds) both get the one row instead
    of a unique violation: PostgreSQL waits for the first to commit, SQLite serialises writers."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    result = session.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=key))
    return bool(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult, for an INSERT
