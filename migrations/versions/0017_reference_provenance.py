"""reference provenance: who took a reference photo and under which licence

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 17:30:00

`reference_images.creator` (the photographer, as the manifest's `photographer` column gives it) and
`reference_images.license` (a licence name or URL, the manifest's `licence`), beside the `source` and
`observed_at` it had: what Darwin Core's Simple Multimedia terms (dcterms:creator, dcterms:license,
dcterms:source, dcterms:created) say of a photo. Existing references keep NULL: nobody said.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: Union[str, Sequence[str], None] = "0016"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("creator", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("license", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.drop_column("license")
        batch_op.drop_column("creator")
