"""Indexes for the dashboard's age search and dead-letter groups at scale.

The creation time index becomes (created at, type, correlation id), so an age search pages oldest
first by a keyset the index serves, every page a range from its cursor; one on the dead letters'
(endpoint, type, id) finds a group's oldest letters without reading the others (the reason, up
to 10,000 characters, is filtered, not indexed: it could pass a b-tree entry's size).

Revision ID: 0010_age_and_group_indexes
Revises: 0009_dashboard_indexes
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_age_and_group_indexes"
down_revision: str | None = "0009_dashboard_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SAGAS = "sagabox_saga_instances"
LETTERS = "sagabox_dead_letters"


def upgrade() -> None:
    op.create_index(
        "ix_sagabox_saga_instances_created_at_saga_type_correlation_id",
        SAGAS,
        ["created_at", "saga_type", "correlation_id"],
    )
    op.drop_index("ix_sagabox_saga_instances_created_at", table_name=SAGAS)
    op.create_index("ix_sagabox_dead_letters_endpoint_type_id", LETTERS, ["endpoint", "type", "id"])


def downgrade() -> None:
    op.drop_index("ix_sagabox_dead_letters_endpoint_type_id", table_name=LETTERS)
    op.create_index("ix_sagabox_saga_instances_created_at", SAGAS, ["created_at"])
    op.drop_index("ix_sagabox_saga_instances_created_at_saga_type_correlation_id", table_name=SAGAS)
