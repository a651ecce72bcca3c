"""The dashboard's age search and dead-letter group statements, EXPLAINed on PostgreSQL: each
page a range of an index read from its cursor, not a filter over the rows before it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from sagabox.web import data
from sagabox.web.counts import count_groups

#: Sagas in the table: a few thousand, created a minute apart, the youngest with the lowest id,
#: so in (type, id) order every saga younger than a cutoff comes before the older ones.
SAGAS = 5000


@contextmanager
def _captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        if "Node Type" in plan:
            yield plan
        for value in plan.values():
            yield from _nodes(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _nodes(value)


def _explained(connection: Connection, statement: str, parameters: Any) -> list[dict[str, Any]]:
    explained = connection.exec_driver_sql(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
    ).scalar()
    return list(_nodes(json.loads(explained) if isinstance(explained, str) else explained))


def _fill_sagas(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                """INSERT INTO sagabox_saga_instances (id, saga_type, correlation_id,
                incarnation, state, data, version, created_at, updated_at)
                SELECT gen_random_uuid(), 'x.Saga', 'c' || lpad(g::text, 6, '0'),
                gen_random_uuid(), 'waiting', '{}'::jsonb, 1,
                now() - g * interval '1 minute', now()
                FROM generate_series(1, :n) AS g"""
            ),
            {"n": SAGAS},
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "ANALYZE sagabox_saga_instances"
        )


@pytest.mark.parametrize("backend", ["postgresql"])
def test_age_search_pages_are_index_ranges_first_and_deep(engine: Engine) -> None:
    """ "Older than a day", first page and a deep one: a scan of the creation time index from
    the cursor, no sort, and no younger saga read and thrown away (in (type, id) order the
    first page filtered out the 1,440 sagas of the last day)."""
    _fill_sagas(engine)
    day = timedelta(days=1)
    deep = ("x.Saga", f"c{SAGAS - 500:06d}")  # the oldest 500 are left after it
    with _captured(engine) as statements, engine.connect() as connection:
        first = data.search(connection, data.Search(older_than=day, limit=50))
        later = data.search(connection, data.Search(older_than=day, after=deep, limit=50))
        plans = [_explained(connection, *captured) for captured in statements]
    assert f"c{SAGAS:06d}" == first.rows[0].correlation_id  # oldest first
    assert f"c{SAGAS - 501:06d}" == later.rows[0].correlation_id
    assert 2 == len(plans)
    for nodes in plans:
        scans = [n for n in nodes if n.get("Relation Name") == "sagabox_saga_instances"]
        assert "Sort" not in {n["Node Type"] for n in nodes}
        ranged = [n for n in scans if n["Node Type"] in ("Index Scan", "Index Only Scan")]
        assert "ix_sagabox_saga_instances_created_at_saga_type_correlation_id" in {
            n.get("Index Name") for n in ranged
        }
        assert 0 == sum(int(n.get("Rows Removed by Filter", 0)) for n in nodes)
        assert max(int(n["Actual Rows"]) for n in scans) <= 51


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_dead_letter_page_reads_only_the_letters_it_lists(engine: Engine) -> None:
    """5,000 letters in 5 groups, two of 2,000: listing ten of each group is a range of the
    (endpoint, type, id) index per group, not a window over every letter."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """INSERT INTO sagabox_dead_letters (endpoint, message_id, type, headers, body,
                reason, attempts, first_failed_at, last_failed_at)
                SELECT 'q', gen_random_uuid(), (ARRAY['x.A', 'x.B'])[1 + g % 2], '{}'::jsonb,
                '', CASE WHEN g % 5 = 0 THEN 'rare' ELSE 'common' END, 1, now(), now()
                FROM generate_series(1, :n) AS g"""
            ),
            {"n": 5000},
        )
        connection.exec_driver_sql("ANALYZE sagabox_dead_letters")
    with engine.connect() as connection:
        groups = count_groups(connection).groups
    assert [2000, 2000, 500, 500] == [g.count for g in groups]
    with _captured(engine) as statements, engine.connect() as connection:
        listed = data.letters_by_group(connection, per_group=10, groups=groups)
        [nodes] = [_explained(connection, *captured) for captured in statements]
    assert [10, 10, 10, 10] == [len(lines) for lines in listed.values()]
    scans = [n for n in nodes if n.get("Relation Name") == "sagabox_dead_letters"]
    assert {"ix_sagabox_dead_letters_endpoint_type_id"} == {n.get("Index Name") for n in scans}
    # Each group's range stops at its tenth letter: the rare reason's reads skip common ones.
    assert sum(int(n["Actual Rows"]) + int(n.get("Rows Removed by Filter", 0)) for n in scans) < 200
