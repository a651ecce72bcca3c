"""The definition version each saga instance runs under, and the version its data is stored in.

Revision ID: 0007_saga_versions
Revises: 0006_exactly_once
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_saga_versions"
down_revision: str | None = "0006_exactly_once"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every instance stored before this revision ran under its saga's first definition.
    with op.batch_alter_table("sagabox_saga_instances") as batch:
        batch.add_column(
            sa.Column("definition_version", sa.Integer(), nullable=False, server_default="1")
        )
        batch.add_column(
            sa.Column("data_version", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("sagabox_saga_journal") as batch:
        batch.add_column(sa.Column("definition_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sagabox_saga_journal") as batch:
        batch.drop_column("definition_version")
    with op.batch_alter_table("sagabox_saga_instances") as batch:
        batch.drop_column("data_version")
        batch.drop_column("definition_version")
