"""Dead letters, and the PostgreSQL notification that wakes the relay.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.tables import BigId, Json, UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One notification per inserting statement; PostgreSQL folds repeats within a transaction into
# one, delivered at commit, so a busy writer costs the relay one wake-up per transaction at most.
_NOTIFY_FUNCTION = """
CREATE FUNCTION sagabox_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sagabox_outbox', '');
    RETURN NULL;
END
$$
"""
_NOTIFY_TRIGGER = """
CREATE TRIGGER sagabox_outbox_notify AFTER INSERT ON sagabox_outbox_messages
FOR EACH STATEMENT EXECUTE FUNCTION sagabox_outbox_notify()
"""


def upgrade() -> None:
    op.create_table(
        "sagabox_dead_letters",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(255), nullable=True),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("headers", Json, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", UTCDateTime(), nullable=False),
        sa.Column("last_failed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sagabox_dead_letters")),
        sa.UniqueConstraint(
            "endpoint", "message_id", name=op.f("uq_sagabox_dead_letters_endpoint_message_id")
        ),
        comment="Messages an endpoint gave up on, with the reason; replay or discard them by CLI.",
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER sagabox_outbox_notify ON sagabox_outbox_messages")
        op.execute("DROP FUNCTION sagabox_outbox_notify()")
    op.drop_table("sagabox_dead_letters")
