"""Claims record the claiming process: host key, pid and start time, on jobs and deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

With them a node releases at once the jobs and deliveries held by a dead process on its own
host (node.claims) instead of waiting for the heartbeat or the lease. Nullable columns only:
existing rows keep working (a claim without them goes by staleness as before).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _claim_columns() -> list[sa.Column]:
    return [
        sa.Column("claim_host", sa.String(length=160), nullable=True),
        sa.Column("claim_pid", sa.Integer(), nullable=True),
        sa.Column("claim_started", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in _claim_columns():
            batch.add_column(column)
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
        for column in _claim_columns():
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        for name in ("claim_started", "claim_pid", "claim_host", "claimed_by"):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        for name in ("claim_started", "claim_pid", "claim_host"):
            batch.drop_column(name)
