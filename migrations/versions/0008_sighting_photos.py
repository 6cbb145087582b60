"""sightings of one to five photos: each photo with its own embedding; existing sightings get their one photo

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 18:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "sighting_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sighting_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=False),
        sa.Column("photo_name", sa.String(length=80), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["sighting_id"], ["sightings.id"], name=op.f("fk_sighting_photos_sighting_id_sightings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sighting_photos")),
        sa.UniqueConstraint("sighting_id", "position", name=op.f("uq_sighting_photos_sighting_id")),
    )
    with op.batch_alter_table("sighting_photos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sighting_photos_sighting_id"), ["sighting_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sighting_photos_photo_sha256"), ["photo_sha256"], unique=False)
    op.execute("INSERT INTO sighting_photos (sighting_id, position, photo_sha256, photo_name, embedding) "
               "SELECT id, 0, photo_sha256, photo_name, embedding FROM sightings")


def downgrade() -> None:
    with op.batch_alter_table("sighting_photos", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sighting_photos_photo_sha256"))
        batch_op.drop_index(batch_op.f("ix_sighting_photos_sighting_id"))
    op.drop_table("sighting_photos")
