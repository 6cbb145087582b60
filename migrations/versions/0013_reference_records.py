"""references become records a curator can relabel, retire and restore, with public ids and an audit trail

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 04:00:00

`reference_images.public_id`: what the API, pages and CLI call a reference (never the SQL key);
`status` (active, retired) and `version` (optimistic concurrency); `reference_changes`: every relabel,
retirement and restoration, with curator, time and reason. `sightings.status` grows to 30 characters:
`awaiting_second_opinion` (an answer that waits for a second curator before it teaches).
"""
import secrets
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: Union[str, Sequence[str], None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _token() -> str:
    """As identify.schema.public_token makes them (written out: a migration does not change with the code)."""
    while (token := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return token


def upgrade() -> None:
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_id", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=20), nullable=False, server_default="active"))
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    connection = op.get_bind()
    references = sa.table("reference_images", sa.column("id", sa.Integer), sa.column("public_id", sa.String))
    for (reference_id,) in connection.execute(sa.select(references.c.id)).all():
        connection.execute(references.update().where(references.c.id == reference_id)
                           .values(public_id=_token()))
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.alter_column("public_id", existing_type=sa.String(length=24), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_reference_images_public_id"), ["public_id"])
        batch_op.create_index(batch_op.f("ix_reference_images_status"), ["status"])
    op.create_table(
        "reference_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference_id", sa.Integer(), nullable=False),
        sa.Column("curator_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("from_species_id", sa.Integer(), nullable=True),
        sa.Column("to_species_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["curator_id"], ["curators.id"],
                                name=op.f("fk_reference_changes_curator_id_curators")),
        sa.ForeignKeyConstraint(["from_species_id"], ["species.id"],
                                name=op.f("fk_reference_changes_from_species_id_species")),
        sa.ForeignKeyConstraint(["reference_id"], ["reference_images.id"],
                                name=op.f("fk_reference_changes_reference_id_reference_images")),
        sa.ForeignKeyConstraint(["review_id"], ["reviews.id"], name=op.f("fk_reference_changes_review_id_reviews")),
        sa.ForeignKeyConstraint(["to_species_id"], ["species.id"],
                                name=op.f("fk_reference_changes_to_species_id_species")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_changes")),
    )
    op.create_index(op.f("ix_reference_changes_reference_id"), "reference_changes", ["reference_id"])
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(length=20), type_=sa.String(length=30),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(length=30), type_=sa.String(length=20),
                              existing_nullable=False)
    op.drop_index(op.f("ix_reference_changes_reference_id"), table_name="reference_changes")
    op.drop_table("reference_changes")
    with op.batch_alter_table("reference_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reference_images_status"))
        batch_op.drop_constraint(batch_op.f("uq_reference_images_public_id"), type_="unique")
        batch_op.drop_column("version")
        batch_op.drop_column("status")
        batch_op.drop_column("public_id")
