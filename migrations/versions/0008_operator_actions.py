"""The operator actions table: who cancelled, rescheduled or fired a timeout, replayed a letter.

Revision ID: 0008_operator_actions
Revises: 0007_saga_versions
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from outbox.tables import UTCDateTime

revision: str = "0008_operator_actions"
down_revision: str | None = "0007_saga_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sagabox_operator_actions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column(
            "detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sagabox_operator_actions"),
        comment="Every operator action on timeouts and dead letters: what, to what, by whom, when.",
    )
    op.create_index(
        "ix_sagabox_operator_actions_at", "sagabox_operator_actions", ["at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sagabox_operator_actions_at", table_name="sagabox_operator_actions")
    op.drop_table("sagabox_operator_actions")
