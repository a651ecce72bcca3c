"""The saga tables (instances and journal), added to sagabox's one `MetaData`."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, UniqueConstraint, Uuid, text

from outbox.tables import PREFIX, BigId, Json, UTCDateTime, metadata

saga_instances = Table(
    f"{PREFIX}saga_instances",
    metadata,
    # Derived from (saga type, correlation id): a re-run after a crash finds the same id.
    Column("id", Uuid(), primary_key=True),
    Column("saga_type", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    # Random per incarnation: the id repeats when a pruned saga's correlation id starts again,
    # this does not, and the ids of the messages the saga emits are derived from it (secret).
    Column("incarnation", Uuid(), nullable=False),
    Column("state", String(255), nullable=False),
    Column("data", Json, nullable=False),
    # Bumped by every handled message: optimistic concurrency, and the transition number.
    Column("version", Integer(), nullable=False),
    # The saga definition's `version` whose path the instance follows (see `sagas.evolution`),
    # and the one its data was stored under: data is upcast on load, the path may stay old.
    Column("definition_version", Integer(), nullable=False, server_default="1"),
    Column("data_version", Integer(), nullable=False, server_default="1"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # Set on reaching a final state; the row stays as a tombstone so late messages are known.
    Column("finished_at", UTCDateTime(), nullable=True),
    # Pending timeouts by name: the message id each expects, and the state that set it.
    Column("timeouts", Json, nullable=True),
    # The earliest pending timeout's due time: "stuck" counts an overdue timeout as none.
    Column("next_timeout_at", UTCDateTime(), nullable=True),
    # Settles creation races: two transactions cannot both create the same saga.
    UniqueConstraint("saga_type", "correlation_id"),
    # Search by state, with or without a type, in keyset order (type, correlation id).
    Index(None, "state", "saga_type", "correlation_id"),
    Index(None, "finished_at"),
    # Search by age, oldest first, in keyset order: set once, so it costs an index entry per
    # saga, not per step.
    Index(None, "created_at", "saga_type", "correlation_id"),
    # Search by correlation id prefix, in id order: a range in code point order, which is the
    # "C" collation's on PostgreSQL (its default collation's order serves no prefix) and
    # SQLite's own. (`postgresql_ops` is where SQLAlchemy lets a column take a collation.)
    Index(
        "ix_sagabox_saga_instances_id_prefix",
        "correlation_id",
        "saga_type",
        postgresql_ops={"correlation_id": 'COLLATE "C"'},
    ),
    # Stuck sagas and pending timeouts are live ones: indexes over the unfinished rows only.
    Index(
        "ix_sagabox_saga_instances_live_updated_at",
        "updated_at",
        postgresql_where=text("finished_at IS NULL"),
        sqlite_where=text("finished_at IS NULL"),
    ),
    Index(
        "ix_sagabox_saga_instances_live_next_timeout_at",
        "next_timeout_at",
        "id",
        postgresql_where=text("finished_at IS NULL"),
        sqlite_where=text("finished_at IS NULL"),
    ),
    comment="One row per saga instance, next to the business rows it coordinates.",
)

saga_journal = Table(
    f"{PREFIX}saga_journal",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # No foreign key: messages for sagas that do not exist (yet) are journaled too.
    Column("saga_id", Uuid(), nullable=False),
    Column("saga_type", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    # The incarnation the line belongs to; null when no saga instance existed for the message.
    Column("incarnation", Uuid(), nullable=True),
    Column("version", Integer(), nullable=True),
    # The definition version the saga ran under after this line (a "migrated" line changes it).
    Column("definition_version", Integer(), nullable=True),
    Column("from_state", String(255), nullable=True),
    Column("to_state", String(255), nullable=True),
    Column("trigger", String(255), nullable=False),
    Column("message_id", Uuid(), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Index(None, "saga_id", "id"),
    Index(None, "saga_type", "correlation_id"),
    # Retention of the lines of unknown sagas: the oldest lines without an incarnation first.
    Index(None, "incarnation", "at"),
    comment="Each message a saga handled or refused: where it is, and how it got there.",
)
