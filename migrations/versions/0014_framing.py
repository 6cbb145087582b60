"""the bird in the frame: each photo's crop, whose it was and what a detector found; a reference's crop; the
uncertainty of a sighting's position

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 08:00:00

`sighting_photos.crop` ({x, y, w, h} fractions of the upright photo; NULL: the whole photo), `crop_source`
(user, detector, curator), `detections` ([{box, score, label}]); `reference_images.crop` (the part its
embedding was taken from); `sightings.coordinate_uncertainty_m` (a phone's stated accuracy, for Darwin Core).
Every new column is nullable: rows stored before keep meaning the whole photo and an unstated uncertainty.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: Union[str, Sequence[str], None] = "0013"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("sighting_photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crop", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("crop_source", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("detections", sa.JSON(), nullable=True))
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crop", sa.JSON(), nullable=True))
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("coordinate_uncertainty_m", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.drop_column("coordinate_uncertainty_m")
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.drop_column("crop")
    with op.batch_alter_table("sighting_photos", schema=None) as batch_op:
        batch_op.drop_column("detections")
        batch_op.drop_column("crop_source")
        batch_op.drop_column("crop")
