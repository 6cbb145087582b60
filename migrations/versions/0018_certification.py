"""certification: what re-certification reads and writes

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 20:30:00

- `embeddings.probabilities` and `sighting_photos.probabilities`: the classifier's output from the same forward
  pass as the embedding (float16 over the model's classes), which leaving references or species out reads;
- `reference_images.individual`: the bird or source a reference photo belongs to (a manifest's `group`, a
  sub-folder of a species folder, "sighting N" for a promoted sighting), which leave-individual-out holds out
  whole;
- `certifications`: each re-certification of a model's index, its state (running, done, failed, abandoned),
  progress, the reference set it was fitted for, and what it decided. At most one runs per model and index at a
  time: a unique index over the running ones, which every worker and host sees.
Rows written before keep NULL: nobody said, and re-certification reads only what it has.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: Union[str, Sequence[str], None] = "0017"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probabilities", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("sighting_photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probabilities", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("individual", sa.String(length=500), nullable=True))
    op.create_table(
        "certifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("index_name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reference_state", sa.String(length=100), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("stage", sa.String(length=100), nullable=False, server_default=""),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_certifications_model_index", "certifications", ["model_id", "index_name", "status"])
    op.create_index("uq_certifications_running", "certifications", ["model_id", "index_name"], unique=True,
                    sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("uq_certifications_running", table_name="certifications")
    op.drop_index("ix_certifications_model_index", table_name="certifications")
    op.drop_table("certifications")
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.drop_column("individual")
    with op.batch_alter_table("sighting_photos", schema=None) as batch_op:
        batch_op.drop_column("probabilities")
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.drop_column("probabilities")
