"""Alembic migrations of the identify schema (installed as the package `identify.migrations`)."""
