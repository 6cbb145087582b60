"""Alembic environment: the engine comes from `identify.storage` (config.attributes["engine"]) or from
`IDENTIFY_DATABASE_URL` / the settings when Alembic's own command line runs it."""

from alembic import context
from sqlalchemy import Engine

from identify.schema import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from identify.config import load_settings
    from identify.storage import make_engine

    return make_engine(config.get_main_option("sqlalchemy.url") or load_settings().database_url)


def run_migrations_offline() -> None:
    from identify.config import load_settings

    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode copies a table to alter it; with foreign keys enforced, the copy of a table that other
            # rows point at (sightings, species) fails once there is data. Alembic's advice: off while migrating.
            # The pragma must run outside a transaction, which sqlite3 opens only before writes.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        # render_as_batch: SQLite can only ALTER by copying the table; batch mode does that for us.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            connection.commit()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
