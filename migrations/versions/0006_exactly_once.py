"""Saga incarnations, the next timeout's due time, and the indexes retention and cancelling need.

Revision ID: 0006_exactly_once
Revises: 0005_relay_retries
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.tables import UTCDateTime

revision: str = "0006_exactly_once"
down_revision: str | None = "0005_relay_retries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sagabox_saga_instances") as batch:
        batch.add_column(sa.Column("incarnation", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("next_timeout_at", UTCDateTime(), nullable=True))
    # Sagas started by older code keep ids derived from their (predictable) saga id until they
    # finish: their emitted ids must not change mid-flight, and nothing secret was stored.
    op.execute("UPDATE sagabox_saga_instances SET incarnation = id")
    with op.batch_alter_table("sagabox_saga_instances") as batch:
        batch.alter_column("incarnation", existing_type=sa.Uuid(), nullable=False)

    with op.batch_alter_table("sagabox_saga_journal") as batch:
        batch.add_column(sa.Column("incarnation", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE sagabox_saga_journal SET incarnation = saga_id "
        "WHERE saga_id IN (SELECT id FROM sagabox_saga_instances)"
    )
    op.create_index(
        "ix_sagabox_saga_journal_incarnation_at", "sagabox_saga_journal", ["incarnation", "at"]
    )
    op.create_index(
        "ix_sagabox_outbox_messages_message_id", "sagabox_outbox_messages", ["message_id"]
    )
    op.create_index(
        "ix_sagabox_dead_letters_last_failed_at", "sagabox_dead_letters", ["last_failed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_sagabox_dead_letters_last_failed_at", "sagabox_dead_letters")
    op.drop_index("ix_sagabox_outbox_messages_message_id", "sagabox_outbox_messages")
    op.drop_index("ix_sagabox_saga_journal_incarnation_at", "sagabox_saga_journal")
    with op.batch_alter_table("sagabox_saga_journal") as batch:
        batch.drop_column("incarnation")
    with op.batch_alter_table("sagabox_saga_instances") as batch:
        batch.drop_column("next_timeout_at")
        batch.drop_column("incarnation")
