"""curators can be disabled, and API tokens expire

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 20:00:00

Tokens issued before this revision had no end: they get one `token_days` default (90 days) from the upgrade,
so none of them stays valid for ever.
"""
from datetime import datetime, timedelta, timezone
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: Union[str, Sequence[str], None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

EXISTING_TOKEN_DAYS = 90


def upgrade() -> None:
    with op.batch_alter_table("curators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True))
    curators = sa.table("curators", sa.column("token_hash", sa.String), sa.column("token_expires_at", sa.DateTime))
    ends = datetime.now(timezone.utc) + timedelta(days=EXISTING_TOKEN_DAYS)
    op.execute(curators.update().where(curators.c.token_hash.is_not(None)).values(token_expires_at=ends))


def downgrade() -> None:
    with op.batch_alter_table("curators", schema=None) as batch_op:
        batch_op.drop_column("token_expires_at")
        batch_op.drop_column("disabled_at")
