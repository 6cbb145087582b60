"""taxa: every species label resolves to a taxon (scientific name, rank, genus, family, order, authority)

Existing species rows are linked to their taxa by the first process that opens the database afterwards
(`identify taxonomy sync` does it at once): resolution needs the bird-name tables, not SQL alone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "taxa",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scientific_name", sa.String(length=300), nullable=False),
        sa.Column("common_name", sa.String(length=300), nullable=True),
        sa.Column("rank", sa.String(length=20), nullable=False),
        sa.Column("genus", sa.String(length=200), nullable=True),
        sa.Column("family", sa.String(length=200), nullable=True),
        sa.Column("order_name", sa.String(length=200), nullable=True),
        sa.Column("authority", sa.String(length=40), nullable=False),
        sa.Column("authority_version", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_taxa")),
        sa.UniqueConstraint("scientific_name", name=op.f("uq_taxa_scientific_name")),
    )
    with op.batch_alter_table("taxa", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_taxa_genus"), ["genus"], unique=False)
        batch_op.create_index(batch_op.f("ix_taxa_family"), ["family"], unique=False)
    with op.batch_alter_table("species", schema=None) as batch_op:
        batch_op.add_column(sa.Column("taxon_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_species_taxon_id"), ["taxon_id"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_species_taxon_id_taxa"), "taxa", ["taxon_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("species", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_species_taxon_id_taxa"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_species_taxon_id"))
        batch_op.drop_column("taxon_id")
    with op.batch_alter_table("taxa", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_taxa_family"))
        batch_op.drop_index(batch_op.f("ix_taxa_genus"))
    op.drop_table("taxa")
