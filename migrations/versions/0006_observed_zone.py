"""sightings keep the UTC offset of when they were observed, and where it came from

Existing rows keep a NULL zone: their times were stored as UTC, which is what the API showed for them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 16:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("observed_offset", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("observed_zone", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.drop_column("observed_zone")
        batch_op.drop_column("observed_offset")
