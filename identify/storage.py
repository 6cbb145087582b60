"""SQL access: engines, migrations, and the queries the index builder and the service share.

Callers get plain values (ids, arrays, dicts) back, never ORM objects bound to a closed session."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from identify.backbone import ModelIdentity
from identify.errors import IdentifyError
from identify.schema import Embedding, Index, IndexBuild, IndexMember, Model, ReferenceImage, Species, utcnow


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets foreign keys, WAL (readers do not block the writer) and a busy timeout."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def _alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    spec = importlib.util.find_spec("identify.migrations")
    assert spec is not None and spec.submodule_search_locations, "identify.migrations is not installed"
    config = Config()
    config.set_main_option("script_location", str(Path(list(spec.submodule_search_locations)[0])))
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision`; a no-op when already there."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise IdentifyError("database_unavailable", f"cannot reach {engine.url!r}: {exc.orig}", 503) from None


def downgrade_database(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


IN_CHUNK = 500  # ids per IN (...) query: under every backend's bound-parameter limit


def rows_to_arrays(rows: list[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ids, float32 vectors) from rows of (id, vector bytes)."""
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
    return ids, vectors


def species_id_for(session: Session, name: str) -> int:
    """The id of species `name`, created when new."""
    species_id = session.scalar(select(Species.id).where(Species.name == name))
    if species_id is None:
        species = Species(name=name)
        session.add(species)
        session.flush()
        species_id = species.id
    return species_id


def add_member(session: Session, index_id: int, reference_id: int) -> bool:
    """Make a reference a member of an index; False when it already was."""
    if session.get(IndexMember, (index_id, reference_id)) is not None:
        return False
    session.add(IndexMember(index_id=index_id, reference_id=reference_id))
    return True


@dataclass(frozen=True)
class NewReference:
    """A photo to record as a reference, with its embedding."""

    file_sha256: str
    path: str
    species: str
    vector: np.ndarray
    lat: float | None = None
    lon: float | None = None
    observed_at: datetime | None = None
    source: str | None = None


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


class Store:
    """The queries of the system of record, each in its own transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def register_model(self, identity: ModelIdentity) -> int:
        with self.sessions.begin() as session:
            model = session.scalar(select(Model).where(Model.sha256 == identity.sha256))
            if model is None:
                model = Model(
                    name=identity.name,
                    sha256=identity.sha256,
                    network=identity.network,
                    signature=identity.signature,
                    classes=identity.classes,
                    embedding_dim=identity.embedding_dim,
                )
                session.add(model)
                session.flush()
            return model.id

    def open_index(self, name: str, model_id: int) -> int:
        """The id of index `name`, created for `model_id` if new. Refuses an index of another model."""
        with self.sessions.begin() as session:
            index = session.scalar(select(Index).where(Index.name == name))
            if index is None:
                index = Index(name=name, model_id=model_id)
                session.add(index)
                session.flush()
            elif index.model_id != model_id:
                other = session.get(Model, index.model_id)
                raise IdentifyError(
                    "index_model_mismatch",
                    f"index {name!r} holds embeddings of model {other.name if other else '?'} "
                    f"({other.sha256[:12] if other else '?'}), not of this model",
                    409,
                )
            return index.id

    def known_references(self, model_id: int, hashes: Iterable[str]) -> dict[str, KnownReference]:
        """The references among these file hashes: sha256 -> id, species, and whether `model_id` embedded it."""
        found: dict[str, KnownReference] = {}
        wanted = list(hashes)
        with self.session() as session:
            for start in range(0, len(wanted), IN_CHUNK):
                rows = session.execute(
                    select(ReferenceImage.file_sha256, ReferenceImage.id, Species.name, Embedding.id)
                    .join(Species, Species.id == ReferenceImage.species_id)
                    .outerjoin(
                        Embedding, (Embedding.reference_id == ReferenceImage.id) & (Embedding.model_id == model_id)
                    )
                    .where(ReferenceImage.file_sha256.in_(wanted[start : start + IN_CHUNK]))
                )
                found.update({sha: KnownReference(ref_id, species, emb is not None) for sha, ref_id, species, emb in rows})
        return found

    def add_references(self, index_id: int, model_id: int, references: list[NewReference]) -> list[int]:
        """Record references, their embeddings and index membership in one transaction; returns their ids.

        A photo already recorded (same sha256) is reused, so a resumed build never duplicates a row."""
        ids: list[int] = []
        with self.sessions.begin() as session:
            for ref in references:
                row = session.scalar(select(ReferenceImage).where(ReferenceImage.file_sha256 == ref.file_sha256))
                if row is None:
                    row = ReferenceImage(
                        file_sha256=ref.file_sha256,
                        path=ref.path,
                        species_id=species_id_for(session, ref.species),
                        lat=ref.lat,
                        lon=ref.lon,
                        observed_at=ref.observed_at,
                        source=ref.source,
                    )
                    session.add(row)
                    session.flush()
                has_embedding = session.scalar(
                    select(Embedding.id).where(Embedding.reference_id == row.id, Embedding.model_id == model_id)
                )
                if has_embedding is None:
                    vector = np.ascontiguousarray(ref.vector, dtype=np.float32)
                    session.add(Embedding(reference_id=row.id, model_id=model_id, vector=vector.tobytes()))
                add_member(session, index_id, row.id)
                ids.append(row.id)
        return ids

    def add_members(self, index_id: int, reference_ids: Iterable[int]) -> int:
        """Make already-embedded references members of an index; returns how many were new members."""
        with self.sessions.begin() as session:
            return sum(add_member(session, index_id, reference_id) for reference_id in reference_ids)

    def member_count(self, index_id: int) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).where(IndexMember.index_id == index_id)) or 0

    def iter_index_vectors(
        self, index_id: int, model_id: int, dim: int, after_id: int = 0, batch: int = 50_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32) of an index's members with id > after_id, in id order, in chunks."""
        with self.session() as session:
            last = after_id
            while True:
                rows = session.execute(
                    select(Embedding.reference_id, Embedding.vector)
                    .join(IndexMember, IndexMember.reference_id == Embedding.reference_id)
                    .where(
                        IndexMember.index_id == index_id,
                        Embedding.model_id == model_id,
                        Embedding.reference_id > last,
                    )
                    .order_by(Embedding.reference_id)
                    .limit(batch)
                ).all()
                if not rows:
                    return
                ids, vectors = rows_to_arrays(rows, dim)
                yield ids, vectors
                last = int(ids[-1])

    def index_vectors(self, index_id: int, model_id: int, dim: int, after_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        chunks = list(self.iter_index_vectors(index_id, model_id, dim, after_id))
        if not chunks:
            return np.empty(0, dtype=np.int64), np.empty((0, dim), dtype=np.float32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def member_ids_after(self, index_id: int, model_id: int, after_id: int) -> list[int]:
        """Ids above `after_id` of the index's members that `model_id` has embedded, ascending."""
        with self.session() as session:
            return list(session.scalars(
                select(IndexMember.reference_id)
                .join(Embedding, Embedding.reference_id == IndexMember.reference_id)
                .where(IndexMember.index_id == index_id, Embedding.model_id == model_id,
                       IndexMember.reference_id > after_id)
                .order_by(IndexMember.reference_id)
            ))

    def reference_vectors(self, model_id: int, ids: list[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, raw vectors) of these references under `model_id`."""
        rows: list[Any] = []
        with self.session() as session:
            for start in range(0, len(ids), IN_CHUNK):
                rows += session.execute(
                    select(Embedding.reference_id, Embedding.vector)
                    .where(Embedding.model_id == model_id, Embedding.reference_id.in_(ids[start : start + IN_CHUNK]))
                ).all()
        return rows_to_arrays(rows, dim)

    def index_id(self, name: str) -> int:
        with self.session() as session:
            index_id = session.scalar(select(Index.id).where(Index.name == name))
        if index_id is None:
            raise IdentifyError("unknown_index", f"no index named {name!r} in the database (run identify build-index)", 404)
        return index_id

    def reference_by_sha256(self, file_sha256: str) -> ReferenceInfo | None:
        with self.session() as session:
            row = session.execute(
                select(ReferenceImage.id, Species.name, ReferenceImage.path, ReferenceImage.file_sha256)
                .join(Species, Species.id == ReferenceImage.species_id)
                .where(ReferenceImage.file_sha256 == file_sha256)
            ).first()
        return ReferenceInfo(*row) if row else None

    def ensure_species(self, names: Iterable[str]) -> None:
        """Create the species rows that are missing, so that concurrent requests never race to create one."""
        for _attempt in range(3):
            try:
                with self.sessions.begin() as session:
                    have = set(session.scalars(select(Species.name)))
                    session.add_all(Species(name=name) for name in dict.fromkeys(names) if name not in have)
                return
            except IntegrityError:  # another process (a worker starting beside us) added some first
                continue
        raise IdentifyError("database_conflict", "could not record the model's species names", 503)

    def species_names(self) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(Species.name).order_by(Species.name)))

    def references(self, ids: Iterable[int]) -> dict[int, ReferenceInfo]:
        wanted = [int(i) for i in ids]
        with self.session() as session:
            rows = session.execute(
                select(ReferenceImage.id, Species.name, ReferenceImage.path, ReferenceImage.file_sha256)
                .join(Species, Species.id == ReferenceImage.species_id)
                .where(ReferenceImage.id.in_(wanted))
            )
            return {row[0]: ReferenceInfo(*row) for row in rows}

    def start_build(self, index_id: int) -> int:
        with self.sessions.begin() as session:
            build = IndexBuild(index_id=index_id, status="running")
            session.add(build)
            session.flush()
            return build.id

    def finish_build(self, build_id: int, status: str, **fields: object) -> None:
        with self.sessions.begin() as session:
            build = session.get(IndexBuild, build_id)
            assert build is not None
            build.status = status
            build.finished_at = utcnow()
            for key, value in fields.items():
                setattr(build, key, value)
