"""sightings get a random public id: the outside world no longer sees sequential SQL keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 19:00:00

"""
import secrets
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_id", sa.String(length=24), nullable=True))
    connection = op.get_bind()
    sightings = sa.table("sightings", sa.column("id", sa.Integer), sa.column("public_id", sa.String))
    ids = [row[0] for row in connection.execute(sa.select(sightings.c.id))]
    for sighting_id in ids:
        connection.execute(sightings.update().where(sightings.c.id == sighting_id)
                           .values(public_id=secrets.token_urlsafe(12)))
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.alter_column("public_id", existing_type=sa.String(length=24), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_sightings_public_id"), ["public_id"])


def downgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_sightings_public_id"), type_="unique")
        batch_op.drop_column("public_id")
