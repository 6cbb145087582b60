"""names as wide as the API documents them; the one second-opinion rule for reviews and relabels

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 14:00:00

`sightings.observer` and `curators.name` widen to 300 characters (identify.rules.MAX_NAME, the limit the forms and
the API document state: PostgreSQL refused an observer of 201 with a server error). `reviews.single_curator`: the
second-opinion rule a review was taken under by a deployment's only curator. `reference_changes.second_opinion`:
the rule a proposed relabel waits under (action `propose`), or a change was taken under alone. Existing rows keep
NULL: no rule was recorded for them.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: Union[str, Sequence[str], None] = "0014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.alter_column("observer", existing_type=sa.String(length=200), type_=sa.String(length=300))
    with op.batch_alter_table("curators", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=200), type_=sa.String(length=300))
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("single_curator", sa.String(length=20), nullable=True))
    with op.batch_alter_table("reference_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("second_opinion", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reference_changes", schema=None) as batch_op:
        batch_op.drop_column("second_opinion")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_column("single_curator")
    # Names over 200 characters are cut to fit the narrower columns rather than failing the downgrade.
    op.execute("UPDATE curators SET name = substr(name, 1, 200) WHERE length(name) > 200")
    op.execute("UPDATE sightings SET observer = substr(observer, 1, 200) WHERE length(observer) > 200")
    with op.batch_alter_table("curators", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=300), type_=sa.String(length=200))
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.alter_column("observer", existing_type=sa.String(length=300), type_=sa.String(length=200))
