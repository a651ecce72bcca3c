"""Outbox and inbox tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.tables import BigId, Json, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sagabox_outbox_messages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.String(255), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("headers", Json, nullable=False),
        sa.Column("available_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sagabox_outbox_messages")),
        comment="Messages written in the business transaction, waiting for the relay to ship them.",
    )
    op.create_index(
        op.f("ix_sagabox_outbox_messages_available_at_id"),
        "sagabox_outbox_messages",
        ["available_at", "id"],
    )
    op.create_index(
        op.f("ix_sagabox_outbox_messages_partition_key_id"),
        "sagabox_outbox_messages",
        ["partition_key", "id"],
    )
    op.create_table(
        "sagabox_inbox_messages",
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_sagabox_inbox_messages")),
        comment="One row per message a consumer has processed: a second delivery finds it here.",
    )
    op.create_index(
        op.f("ix_sagabox_inbox_messages_processed_at"),
        "sagabox_inbox_messages",
        ["processed_at"],
    )


def downgrade() -> None:
    op.drop_table("sagabox_inbox_messages")
    op.drop_table("sagabox_outbox_messages")
