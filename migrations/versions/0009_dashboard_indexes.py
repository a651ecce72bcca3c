"""Indexes for the dashboard's searches at a million sagas: state, age, id prefix, live rows.

The (type, state) index becomes (state, type, correlation id), so a search by state, with or
without a type, pages in keyset order without sorting; one on the creation time serves an age;
one on the correlation id in the "C" collation serves a prefix as a range in id order on
PostgreSQL whatever the database's collation; two partial indexes over the unfinished rows find
stuck sagas and due timeouts.

Revision ID: 0009_dashboard_indexes
Revises: 0008_operator_actions
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_dashboard_indexes"
down_revision: str | None = "0008_operator_actions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "sagabox_saga_instances"
LIVE = sa.text("finished_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_sagabox_saga_instances_state_saga_type_correlation_id",
        TABLE,
        ["state", "saga_type", "correlation_id"],
    )
    op.drop_index("ix_sagabox_saga_instances_saga_type_state", table_name=TABLE)
    op.create_index("ix_sagabox_saga_instances_created_at", TABLE, ["created_at"])
    op.create_index(
        "ix_sagabox_saga_instances_id_prefix",
        TABLE,
        ["correlation_id", "saga_type"],
        postgresql_ops={"correlation_id": 'COLLATE "C"'},
    )
    op.create_index(
        "ix_sagabox_saga_instances_live_updated_at",
        TABLE,
        ["updated_at"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    op.create_index(
        "ix_sagabox_saga_instances_live_next_timeout_at",
        TABLE,
        ["next_timeout_at", "id"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_sagabox_saga_instances_live_next_timeout_at", table_name=TABLE)
    op.drop_index("ix_sagabox_saga_instances_live_updated_at", table_name=TABLE)
    op.drop_index("ix_sagabox_saga_instances_id_prefix", table_name=TABLE)
    op.drop_index("ix_sagabox_saga_instances_created_at", table_name=TABLE)
    op.create_index("ix_sagabox_saga_instances_saga_type_state", TABLE, ["saga_type", "state"])
    op.drop_index("ix_sagabox_saga_instances_state_saga_type_correlation_id", table_name=TABLE)
