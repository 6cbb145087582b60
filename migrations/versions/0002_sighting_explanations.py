"""sightings keep their stored photo's name and the explanation they were given

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 09:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("photo_name", sa.String(length=80), server_default="", nullable=False))
        batch_op.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("neighbours", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_sightings_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_sightings_species_id"), ["species_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sightings_species_id"))
        batch_op.drop_index(batch_op.f("ix_sightings_status"))
        batch_op.drop_column("neighbours")
        batch_op.drop_column("reasons")
        batch_op.drop_column("photo_name")
