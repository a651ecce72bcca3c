"""The SQLAlchemy `MetaData` holding every sagabox table; other packages add theirs to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

from outbox import clock

PREFIX = "sagabox_"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as aware UTC on every dialect.

    SQLite stores no zone and returns naive values; they are UTC by construction, so the zone is
    put back on the way out. Naive values on the way in are refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = clock.ensure_aware(value)
        # SQLite compares timestamps as text: store every one in the same zone-less UTC form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=clock.UTC) if value.tzinfo is None else value


#: An auto-incrementing 64-bit key; SQLite only auto-increments an INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")
#: JSON, stored as JSONB where PostgreSQL can index and query it.
Json = JSON().with_variant(JSONB(), "postgresql")

outbox_messages = Table(
    f"{PREFIX}outbox_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", Uuid(), nullable=False),
    Column("type", String(255), nullable=False),
    Column("destination", String(255), nullable=False),
    Column("partition_key", String(255), nullable=True),
    Column("payload", Text(), nullable=False),
    Column("headers", Json, nullable=False),
    Column("available_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("created_at", UTCDateTime(), nullable=False),
    # The relay's claim query: due rows, oldest first.
    Index(None, "available_at", "id"),
    Index(None, "partition_key", "id"),
    # Rows waiting for a retry hold up the rows behind them in their partition; the claim
    # probes this small index for each candidate row.
    Index(
        "ix_sagabox_outbox_messages_retrying",
        "partition_key",
        "id",
        postgresql_where=text("attempts > 0"),
        sqlite_where=text("attempts > 0"),
    ),
    # A saga cancelling a timeout deletes its row by message id.
    Index(None, "message_id"),
    comment="Messages written in the business transaction, waiting for the relay to ship them.",
)

inbox_messages = Table(
    f"{PREFIX}inbox_messages",
    metadata,
    Column("consumer", String(255), primary_key=True),
    Column("message_id", Uuid(), primary_key=True),
    Column("processed_at", UTCDateTime(), nullable=False),
    # Retention pruning deletes the oldest rows in small batches.
    Index(None, "processed_at"),
    comment="One row per message a consumer has processed: a second delivery finds it here.",
)

dead_letters = Table(
    f"{PREFIX}dead_letters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("endpoint", String(255), nullable=False),
    # Null when the message was too broken to carry a usable id or type.
    Column("message_id", Uuid(), nullable=True),
    Column("type", String(255), nullable=True),
    Column("content_type", String(255), nullable=True),
    Column("headers", Json, nullable=False),
    # The bytes as the broker delivered them: a broken message is kept exactly as it came.
    Column("body", LargeBinary(), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("error", Text(), nullable=True),
    Column("traceback", Text(), nullable=True),
    Column("attempts", Integer(), nullable=False),
    Column("first_failed_at", UTCDateTime(), nullable=False),
    Column("last_failed_at", UTCDateTime(), nullable=False),
    # A message redelivered after it was dead-lettered (a crash before the ack) is not kept twice.
    UniqueConstraint("endpoint", "message_id"),
    # Retention deletes the letters nobody looked at for longest first.
    Index(None, "last_failed_at"),
    # A group's letters, oldest first (the dashboard lists a few, a group action takes them
    # all): the reason is no key column, it can be 10,000 characters, past a b-tree entry.
    Index(None, "endpoint", "type", "id"),
    comment="Messages an endpoint gave up on, with the reason; replay or discard them by CLI.",
)

operator_actions = Table(
    f"{PREFIX}operator_actions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    # Who asked: the CLI's --actor (default $USER) or the dashboard's authenticated user.
    Column("actor", String(255), nullable=False),
    # e.g. "timeout.cancel", "dead_letter.replay".
    Column("action", String(64), nullable=False),
    # What it was done to, e.g. "offers.Offer O-1 remind" or "dead letter 12".
    Column("subject", String(512), nullable=False),
    Column("detail", Json, nullable=False),
    Index(None, "at"),
    comment="Every operator action on timeouts and dead letters: what, to what, by whom, when.",
)
