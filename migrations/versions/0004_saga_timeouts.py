"""Pending timeouts on saga instances.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.tables import Json

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sagabox_saga_instances") as batch:
        batch.add_column(sa.Column("timeouts", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sagabox_saga_instances") as batch:
        batch.drop_column("timeouts")
