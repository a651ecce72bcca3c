"""An index of the outbox rows waiting for a retry, which hold up the rows behind them.

Revision ID: 0005_relay_retries
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_relay_retries"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sagabox_outbox_messages_retrying",
        "sagabox_outbox_messages",
        ["partition_key", "id"],
        postgresql_where=sa.text("attempts > 0"),
        sqlite_where=sa.text("attempts > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_sagabox_outbox_messages_retrying", table_name="sagabox_outbox_messages")
