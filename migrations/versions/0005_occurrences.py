"""occurrence counts per H3 cell, week and taxon, for the place-and-season prior; predictions keep it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 15:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "occurrence_counts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("cell", sa.String(length=20), nullable=False),
        sa.Column("week", sa.Integer(), nullable=False),
        sa.Column("taxon", sa.String(length=300), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_occurrence_counts")),
        sa.UniqueConstraint("resolution", "cell", "week", "taxon", name=op.f("uq_occurrence_counts_resolution")),
    )
    op.create_table(
        "occurrence_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_occurrence_imports")),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prior", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("expected_here", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("expected_here")
        batch_op.drop_column("prior")
    op.drop_table("occurrence_imports")
    op.drop_table("occurrence_counts")
