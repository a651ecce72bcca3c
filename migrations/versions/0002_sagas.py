"""Saga instances and journal.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.tables import BigId, Json, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sagabox_saga_instances",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("saga_type", sa.String(255), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(255), nullable=False),
        sa.Column("data", Json, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sagabox_saga_instances")),
        sa.UniqueConstraint(
            "saga_type",
            "correlation_id",
            name=op.f("uq_sagabox_saga_instances_saga_type_correlation_id"),
        ),
        comment="One row per saga instance, next to the business rows it coordinates.",
    )
    op.create_index(
        op.f("ix_sagabox_saga_instances_saga_type_state"),
        "sagabox_saga_instances",
        ["saga_type", "state"],
    )
    op.create_index(
        op.f("ix_sagabox_saga_instances_finished_at"), "sagabox_saga_instances", ["finished_at"]
    )
    op.create_table(
        "sagabox_saga_journal",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("saga_type", sa.String(255), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("from_state", sa.String(255), nullable=True),
        sa.Column("to_state", sa.String(255), nullable=True),
        sa.Column("trigger", sa.String(255), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sagabox_saga_journal")),
        comment="Each message a saga handled or refused: where it is, and how it got there.",
    )
    op.create_index(
        op.f("ix_sagabox_saga_journal_saga_id_id"), "sagabox_saga_journal", ["saga_id", "id"]
    )
    op.create_index(
        op.f("ix_sagabox_saga_journal_saga_type_correlation_id"),
        "sagabox_saga_journal",
        ["saga_type", "correlation_id"],
    )


def downgrade() -> None:
    op.drop_table("sagabox_saga_journal")
    op.drop_table("sagabox_saga_instances")
