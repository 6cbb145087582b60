"""predictions keep the fused score beside the calibrated one; sightings keep their roll-up

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 12:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fused", sa.Double(), nullable=True))
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rollup", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.drop_column("rollup")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("fused")
