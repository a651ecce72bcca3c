"""The relay's side of the outbox table: claim due rows, then delete or postpone them.

The claim runs in the relay's transaction and decides which rows this relay may publish. A row
behind one of its partition key that waits for a retry is not claimed, so the key stays in
order while every other key flows. On
PostgreSQL several relays claim at once without publishing a row twice (row locks with SKIP
LOCKED) and without reordering a partition: a relay publishes a row only when every older due
row of its partition key is either its own or already shipped. On SQLite the transaction's write
lock (`BEGIN IMMEDIATE`) lets one relay at a time claim, so plain id order is enough.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    Text,
    all_,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)

from outbox.arrays import Array
from outbox.database import check_dialect
from outbox.prebuilt import Prebuilt
from outbox.tables import outbox_messages as t


@dataclass(frozen=True)
class OutboxRow:
    """One claimed row: the message to publish and where to."""

    id: int
    message_id: UUID
    type: str
    destination: str
    partition_key: str | None
    payload: str
    headers: dict[str, str]
    attempts: int


_COLUMNS = (
    t.c.id,
    t.c.message_id,
    t.c.type,
    t.c.destination,
    t.c.partition_key,
    t.c.payload,
    # Read as text and parsed here: a row written by hand with text that is not JSON must not
    # fail the claim (SQLite's JSON type would raise while reading it) and so every batch. As
    # text on PostgreSQL too: the driver's JSONB loader cost 3-5 µs a row, parsing here 1.
    cast(t.c.headers, Text).label("headers"),
    t.c.attempts,
)


def claim_due(connection: Connection, *, now: datetime, limit: int) -> list[OutboxRow]:
    """Lock and return up to `limit` rows due at `now` that this relay may publish, in id order.

    Call it inside the transaction that will delete the rows once the broker has confirmed them.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    claim = _CLAIM[check_dialect(connection.dialect.name)]
    return claim(connection, now, limit)


_retrying = t.alias("retrying")
#: Another row of a claimed row's partition key, in the claim's partition check.
_older = t.alias("older")
# A row waits while an older row of its partition key waits for a retry (it failed, and is not
# due again yet), so a key's messages go out in order. `attempts > 0` is written as a literal so
# the partial index on retrying rows serves the probe; rows merely scheduled for later (a
# timeout, attempts 0) hold nothing up.
_BEHIND_A_RETRY = (
    exists()
    .where(
        _retrying.c.partition_key == t.c.partition_key,
        _retrying.c.id < t.c.id,
        _retrying.c.attempts > literal_column("0"),
        _retrying.c.available_at > bindparam("b_due_now"),
    )
    .correlate(t)
)


def _due(*, soonest_first: bool = False, passing: bool = False) -> Select[Any]:
    """Due rows (at `b_due_now`) not held up by a retry, `b_limit` of them: the oldest ids
    first, or the soonest due first; `passing`, none of the keys `b_held_keys`.

    Soonest first reads the (available_at, id) index in its own order and stops after `limit`
    rows, whatever the table holds. Oldest ids first lets the planner walk the primary key
    instead, filtering on the due time: with many pending timeouts written before the due rows
    that walk reads every one of them, each claim (at 100,000 pending rows: 98,000 rows read,
    165 ms, where the index takes 1 ms; bench (k)).
    """
    order = (t.c.available_at, t.c.id) if soonest_first else (t.c.id,)
    due = select(*_COLUMNS).where(t.c.available_at <= bindparam("b_due_now"), ~_BEHIND_A_RETRY)
    if passing:
        held = bindparam("b_held_keys", type_=Array(t.c.partition_key.type))
        due = due.where(or_(t.c.partition_key.is_(None), t.c.partition_key != all_(held)))
    return due.order_by(*order).limit(bindparam("b_limit"))


def _rows(result: Iterable[Sequence[Any]]) -> list[OutboxRow]:
    # By position, in `_COLUMNS`' order: a relay decodes every row it ships.
    return [
        OutboxRow(row[0], row[1], row[2], row[3], row[4], row[5], _headers(row[6]), row[7])
        for row in result
    ]


_decoder = json.JSONDecoder()


def _headers(value: object) -> dict[str, str]:
    """A row's headers as a mapping, even for a row written by hand with other JSON there.

    Such a row ships without them, so a worker dead-letters it (keeping its body) as a message
    without sagabox headers, rather than failing every batch it is claimed in.
    """
    if isinstance(value, str | bytes):
        value = _parsed(value)
    return value if isinstance(value, dict) else {}


def _parsed(text: str | bytes) -> object:
    """What `json.loads` gives (None for text that is not JSON, or nested deeper than Python
    parses: the database stores such text, and the error would fail every claim), at a third of
    its cost for text without whitespace around it, as PostgreSQL writes JSONB."""
    if isinstance(text, str):
        try:
            value, end = _decoder.raw_decode(text)
            if end == len(text):
                return value
        except ValueError:
            pass  # perhaps whitespace first, which `json.loads` skips
        except RecursionError:
            return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _claim_sqlite(connection: Connection, now: datetime, limit: int) -> list[OutboxRow]:
    return _rows(_DUE_BY_ID_DIRECT.rows(connection, {"b_due_now": now, "b_limit": limit}))


def _claim_postgresql(connection: Connection, now: datetime, limit: int) -> list[OutboxRow]:
    # The soonest due rows no other relay holds, in id order; the row locks last until this
    # relay commits. The partition check below keeps each key in id order all the same.
    parameters = {"b_due_now": now, "b_limit": limit}
    locked, rows, held = _claim_locked(connection, _CLAIM_SOONEST_DIRECT, parameters)
    if not locked or 2 * len(rows) >= min(locked, limit):
        # Nothing due that no other relay holds (the id-ordered claim would find nothing
        # either, and an idle relay makes this claim after every batch, before it sleeps), or
        # at most half of what it locked held back: the batch is worth its round trips.
        return rows
    # Most rows locked wait for an older due row of their key outside the batch: newer rows
    # due before older ones (after an outage, a saga's events written before its timeout fell
    # due). They stay at the head of the soonest-first order, so each batch would ship fewer.
    # Add the id-ordered claim, which takes those older rows first and cannot be held up by
    # its own batch, so the relay always moves on. Its rows already locked here come back
    # too (a transaction skips no lock of its own); a key's rows of either claim are the
    # key's oldest due rows, so together they are too, and stay so cut short in id order.
    by_id_locked, by_id, held_too = _claim_locked(connection, _CLAIM_BY_ID_DIRECT, parameters)
    merged = {row.id: row for row in (*rows, *by_id)}
    if merged or not by_id_locked:
        return [merged[key] for key in sorted(merged)][:limit]
    return _claim_passing(connection, parameters, held | held_too)


#: How many more claims a relay makes, each passing the keys the ones before found held by
#: another relay, before it gives up until its next batch or poll.
_PASSES = 4


def _claim_passing(
    connection: Connection, parameters: dict[str, Any], held: set[str]
) -> list[OutboxRow]:
    """Every row locked so far waits behind another relay's row of its key: the claim's limit
    went on rows it may not publish, while rows of other keys may be due. Claim again without
    the keys found held (soonest first: the id-ordered claim found only held rows too), a few
    times, each claim adding the keys it found held."""
    for _ in range(_PASSES):
        passing = {**parameters, "b_held_keys": sorted(held)}
        locked, rows, more = _claim_locked(connection, _CLAIM_PASSING_DIRECT, passing)
        if rows or not locked:
            return rows
        held |= more
    return []


def _claim_locked(
    connection: Connection, statement: Prebuilt, parameters: dict[str, Any]
) -> tuple[int, list[OutboxRow], set[str]]:
    """Run a claim of `_locking_claim`; return how many rows it locked, those this relay may
    publish without reordering their partition key (in id order), and the keys of the others."""
    result = statement.rows(connection, parameters)
    # The last column is where the row's key is held from (None: nowhere); the fifth the key.
    free = [row for row in result if row[-1] is None or row[0] < row[-1]]
    held = {row[4] for row in result if row[-1] is not None and row[0] >= row[-1]}
    return len(result), _rows(free), held


def _locking_claim(due: Select[Any]) -> Select[Any]:
    """Lock the rows `due` finds (skipping rows other relays hold) and return them in id
    order, each with the id from which its partition key is held (None: not held).

    One statement does both: the locking claim, and for each partition key it locked, the
    oldest due row of that key, older than its newest locked one, that it did not lock (held by
    another relay, or skipped by this one). Publishing past that row would reorder the key, so
    the rows from it on stay. Rows another relay already shipped are deleted, hence not seen;
    a row whose deletion commits while the statement runs is still seen, so the claim leaves a
    row it could have taken (it goes out in the next batch), never the other way round.
    """
    claimed = due.with_for_update(skip_locked=True).cte("claimed").prefix_with("MATERIALIZED")
    keys = (
        select(claimed.c.partition_key, func.max(claimed.c.id).label("newest"))
        .where(claimed.c.partition_key.is_not(None))
        .group_by(claimed.c.partition_key)
        .cte("keys")
    )
    # Per key, the (partition_key, id) index from the key's oldest row: the walk passes this
    # claim's own rows of the key (usually its oldest) and stops at the first other one.
    first_foreign = (
        select(_older.c.id)
        .where(
            _older.c.partition_key == keys.c.partition_key,
            _older.c.id < keys.c.newest,
            _older.c.available_at <= bindparam("b_due_now"),
            _older.c.id.not_in(select(claimed.c.id)),
        )
        .order_by(_older.c.id)
        .limit(1)
        .lateral("first_foreign")
    )
    # Materialized, so it runs once: inlined, a planner that expects one claimed row (the
    # statistics of a small outbox, taken when nothing was due) ran it again for every claimed
    # row, each key's probe 200 times over for a batch of 200.
    held_from = (
        select(keys.c.partition_key, first_foreign.c.id.label("held_from"))
        .select_from(keys.join(first_foreign, true()))
        .cte("held_from")
        .prefix_with("MATERIALIZED")
    )
    return (
        select(claimed, held_from.c.held_from)
        .select_from(
            claimed.outerjoin(held_from, held_from.c.partition_key == claimed.c.partition_key)
        )
        .order_by(claimed.c.id)
    )


# Built once: a relay claims after every batch.
_DUE_BY_ID = _due()
_CLAIM_SOONEST = _locking_claim(_due(soonest_first=True))
_CLAIM_BY_ID = _locking_claim(_DUE_BY_ID)
# Sent on the DBAPI cursor (`outbox.prebuilt`): per batch, SQLAlchemy's execute path and its Row
# objects cost about a tenth of the claim's CPU at the client, the same for 10 rows or 500.
_DUE_BY_ID_DIRECT = Prebuilt(_DUE_BY_ID)
_CLAIM_SOONEST_DIRECT = Prebuilt(_CLAIM_SOONEST)
_CLAIM_BY_ID_DIRECT = Prebuilt(_CLAIM_BY_ID)
_CLAIM_PASSING_DIRECT = Prebuilt(_locking_claim(_due(soonest_first=True, passing=True)))
# An array, not an IN list, on PostgreSQL: one parameter whatever the batch size, so the
# statement text stays the same and short (an IN list of 500 was re-parsed by the driver every
# batch). The subquery runs once, before the delete (an init plan), and sets
# synchronous_commit for this transaction alone: `SET LOCAL` without a round trip of its own.
_RELAXED_COMMIT = select(func.set_config("synchronous_commit", "off", true())).scalar_subquery()
# The PostgreSQL one goes on the DBAPI cursor, as the claim does; SQLite's expanding IN list is
# rendered per call, by SQLAlchemy.
_DELETE_POSTGRESQL = Prebuilt(
    delete(t).where(
        t.c.id == any_(bindparam("b_ids", type_=Array(BigInteger))),
        _RELAXED_COMMIT.is_not(None),
    )
)
_DELETE_SQLITE = delete(t).where(t.c.id.in_(bindparam("b_ids", expanding=True)))


_CLAIM: dict[str, Callable[[Connection, datetime, int], list[OutboxRow]]] = {
    "postgresql": _claim_postgresql,
    "sqlite": _claim_sqlite,
}


def delete_rows(connection: Connection, ids: Sequence[int]) -> None:
    """Delete shipped rows; the caller commits once the broker has confirmed them.

    On PostgreSQL that commit does not wait for the disk (synchronous_commit off, for this
    transaction only): should the server crash before the deletion is durable, the rows come
    back and are published again, and the consumers' inbox drops the copies, as after a relay
    crash. It spares the relay a disk flush per batch, which the business transactions need
    more (bench/: commit → broker latency at a thousand commits per second).
    """
    if not ids:
        return
    if check_dialect(connection.dialect.name) == "postgresql":
        _DELETE_POSTGRESQL.rows(connection, {"b_ids": list(ids)})
    else:
        connection.execute(_DELETE_SQLITE, {"b_ids": list(ids)})


def postpone_rows(connection: Connection, ids: Sequence[int], *, until: datetime) -> None:
    """Keep rows the broker did not take, to try them again at `until`; counts the attempt.

    Until then the rows behind them in their partition key are not claimed.
    """
    if ids:
        connection.execute(
            update(t).where(t.c.id.in_(ids)).values(available_at=until, attempts=t.c.attempts + 1)
        )


def next_due(connection: Connection, *, after: datetime) -> datetime | None:
    """When the earliest row not yet due at `after` becomes due (None: nothing scheduled)."""
    value: datetime | None = connection.execute(
        select(func.min(t.c.available_at)).where(t.c.available_at > after)
    ).scalar()
    return value
