"""SQL access: engines, migrations, models, indexes and builds (the reference set is identify.references's).

Callers get plain values (ids, arrays, dicts) back, never ORM objects bound to a closed session."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from identify.errors import IdentifyError
from identify.faults import database_unavailable
from identify.identity import ModelIdentity
from identify.schema import Index, IndexBuild, Model, utcnow


def _private_file(path: Path) -> None:
    """Create `path` readable by its owner alone if it is missing: the database holds password hashes and exact
    positions. SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets foreign keys, WAL (readers do not block the writer) and a busy timeout, in a file
    only its owner can read."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _private_file(Path(url.removeprefix("sqlite:///")))
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
        raise database_unavailable(f"cannot reach {engine.url!r}: {exc.orig}") from None


def downgrade_database(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


IN_CHUNK = 500  # ids per IN (...) query: under every backend's bound-parameter limit


PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{1,24}")  # what identify.schema.public_token makes


def key_of_public_id(sessions: sessionmaker[Session], table: Any, public_id: str, code: str, what: str) -> int:
    """The SQL key of the row of `table` the outside world calls `public_id`; 404 `code` when there is none. An id
    that no token could be (a NUL, which PostgreSQL refuses in text: a 500 once) is answered without asking SQL."""
    found = None
    if PUBLIC_ID.fullmatch(public_id):
        with sessions() as session:
            found = session.scalar(select(table.id).where(table.public_id == public_id))
    if found is None:
        raise IdentifyError(code, f"no {what} {public_id}", 404)
    return int(found)


def rows_to_arrays(rows: list[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ids, float32 vectors) from rows of (id, vector bytes)."""
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
    return ids, vectors


def packed_probabilities(probabilities: np.ndarray | bytes | None) -> bytes | None:
    """The classifier's output as stored beside an embedding: float16 (half the bytes; three significant
    digits are more than a threshold reads)."""
    if probabilities is None or isinstance(probabilities, bytes):
        return probabilities
    return np.ascontiguousarray(probabilities, dtype=np.float16).tobytes()


def unpacked_probabilities(stored: bytes | None) -> np.ndarray | None:
    return None if stored is None else np.frombuffer(stored, dtype=np.float16).astype(np.float32)


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

    def model_classes(self) -> list[str]:
        """The classes of every registered model: a curator's name is taken as one of them where it can be."""
        with self.session() as session:
            return sorted({label for classes in session.scalars(select(Model.classes)) for label in classes})

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

    def index_id(self, name: str) -> int:
        with self.session() as session:
            index_id = session.scalar(select(Index.id).where(Index.name == name))
        if index_id is None:
            raise IdentifyError("unknown_index", f"no index named {name!r} in the database (run identify build-index)", 404)
        return index_id

    def abandon_builds(self, index_id: int) -> int:
        """Mark the builds of an index still `running` as `abandoned`; returns how many. Only for a caller that
        knows none of them is alive (the index builder, holding the index's build lock)."""
        with self.sessions.begin() as session:
            result = session.execute(update(IndexBuild).where(IndexBuild.index_id == index_id,
                                                              IndexBuild.status == "running")
                                     .values(status="abandoned", finished_at=utcnow()))
            return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult, for an UPDATE

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
