"""Hostile JSON through the batched (binary array) insert, compared with what the
one-row insert of the same row stores (or refuses)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from outbox.tables import outbox_messages
from sagas import batch_sql
from tests.test_binary_arrays import _TEXT, _outbox_row

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

_HOSTILE_TEXT = st.text(max_size=6)  # NUL and lone surrogates included
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_HOSTILE_TEXT, inner, max_size=3),
    max_leaves=6,
)


def _store_one(engine: Engine, row: dict[str, Any]) -> tuple[str, Any]:
    try:
        with Session(engine) as session, session.begin():
            session.execute(insert(outbox_messages), [row])
            got = session.execute(
                select(outbox_messages.c.headers).where(
                    outbox_messages.c.message_id == row["message_id"]
                )
            ).scalar_one()
            session.rollback()
        return "ok", got
    except Exception as exc:
        return "refused", type(exc).__name__


def _store_batch(engine: Engine, rows: list[dict[str, Any]]) -> tuple[str, Any]:
    try:
        with Session(engine) as session, session.begin():
            many = batch_sql.insert_many(outbox_messages, rows)
            assert many is not None
            many[0].rows(session, many[1])
            got = list(
                session.execute(
                    select(outbox_messages.c.headers)
                    .where(outbox_messages.c.message_id.in_([r["message_id"] for r in rows]))
                    .order_by(outbox_messages.c.id)
                ).scalars()
            )
            session.rollback()
        return "ok", got
    except Exception as exc:
        return "refused", type(exc).__name__


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(_JSON, min_size=2, max_size=4))
@example(values=[2**70, 1])
@example(values=[[[1, 2], [3, 4]], [[5], [6]]])
@example(values=[[], []])
@example(values=[[None], [[None]]])
@example(values=[1.5e300, "x"])
def test_a_batch_stores_hostile_json_as_the_one_row_insert_does(
    engine: Engine, values: list[Any]
) -> None:
    rows = [{**_outbox_row(f"k{n}", "{}"), "headers": v} for n, v in enumerate(values)]
    singles = [_store_one(engine, row) for row in rows]
    batch = _store_batch(engine, rows)
    if all(kind == "ok" for kind, _ in singles):
        assert batch == ("ok", [got for _, got in singles])
    else:
        assert batch[0] == "refused"


# Any JSON value PostgreSQL stores (text without NUL), lists of lists among them: an array
# parameter has one dimension, so a JSON list inside it is one element (SQLAlchemy's ARRAY would
# otherwise take it for a dimension, flattening it on the text path and failing on the binary).
_STORABLE_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(_STORABLE_JSON, min_size=2, max_size=5))
def test_a_batch_stores_every_json_value_as_it_was_given(engine: Engine, values: list[Any]) -> None:
    rows = [{**_outbox_row(f"k{n}", "{}"), "headers": value} for n, value in enumerate(values)]
    # None goes in as JSON's null (the column is NOT NULL) and comes back as None.
    assert _store_batch(engine, rows) == ("ok", values)
