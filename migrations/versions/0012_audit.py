"""a share of confident answers is audited blind by curators

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 01:00:00

`audit`: this confident sighting was drawn for a blind audit (identify.audit); `risk_group`: the group of
answers whose threshold it was held to (identify.scoring.answer_groups), so audits give an error per group.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: Union[str, Sequence[str], None] = "0011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audit", sa.Boolean(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("risk_group", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_sightings_audit", ["audit"])


def downgrade() -> None:
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.drop_index("ix_sightings_audit")
        batch_op.drop_column("risk_group")
        batch_op.drop_column("audit")
