"""The dashboard's statements that must stay cheap at a million sagas, on every backend: the id
prefix search as an index range with literal wildcards, bounded counts, cached type x state
counts recounted in the background."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, insert
from sqlalchemy.exc import OperationalError

from outbox import clock
from outbox.database import Executor
from outbox.dead_letters import record_dead_letter
from outbox.tables import dead_letters
from sagabox.web import data
from sagabox.web.counts import (
    CountsCache,
    GroupCounts,
    GroupsCache,
    TypeStateCounts,
    count_by_type_and_state,
    count_groups,
)
from sagas.tables import saga_instances


def _add(engine: Engine, *sagas: tuple[str, str, str]) -> None:
    """Saga rows (type, correlation id, state), written as the runtime writes them."""
    now = clock.now()
    with engine.begin() as connection:
        connection.execute(
            insert(saga_instances),
            [
                {
                    "id": uuid.uuid4(),
                    "saga_type": saga_type,
                    "correlation_id": correlation_id,
                    "incarnation": uuid.uuid4(),
                    "state": state,
                    "data": {},
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for saga_type, correlation_id, state in sagas
            ],
        )


def _ids(engine: Engine, query: data.Search) -> list[tuple[str, str]]:
    """Every (type, id) the search finds, page after page through its keyset cursor."""
    found: list[tuple[str, str]] = []
    after = None
    with engine.connect() as connection:
        while True:
            page = data.search(connection, data.Search(**{**query.__dict__, "after": after}))
            found.extend((row.saga_type, row.correlation_id) for row in page.rows)
            if page.next_after is None:
                return found
            after = page.next_after


def test_prefix_search_pages_across_types_in_id_order(engine: Engine) -> None:
    """A prefix finds its ids of every type, in id order then type, each once over pages of 2;
    ids that only share a case-folded or a later prefix are not found."""
    _add(
        engine,
        ("b.Two", "A-2", "s"),
        ("a.One", "A-3", "s"),
        ("b.Two", "A-1", "s"),
        ("a.One", "A-1", "s"),
        ("a.One", "a-1", "s"),
        ("a.One", "A.1", "s"),
        ("a.One", "B-1", "s"),
    )
    found = _ids(engine, data.Search(prefix="A-", limit=2))
    assert [("a.One", "A-1"), ("b.Two", "A-1"), ("b.Two", "A-2"), ("a.One", "A-3")] == found
    assert [("a.One", "A-1"), ("a.One", "A-3")] == _ids(
        engine, data.Search(prefix="A-", saga_type="a.One", limit=1)
    )


def test_prefix_wildcards_are_literal(engine: Engine) -> None:
    """`_` and `%` in a prefix match only themselves, and so does the escape character."""
    _add(engine, ("t", "X_1", "s"), ("t", "XY1", "s"), ("t", "5%", "s"), ("t", "50", "s"))
    _add(engine, ("t", "p/q", "s"), ("t", "pq", "s"))
    assert [("t", "X_1")] == _ids(engine, data.Search(prefix="X_"))
    assert [("t", "5%")] == _ids(engine, data.Search(prefix="5%"))
    assert [("t", "p/q")] == _ids(engine, data.Search(prefix="p/"))


def test_prefix_end_of_range() -> None:
    """The range past a prefix: its last character's successor, skipping the surrogates."""
    assert "ab" == data._after_prefix("aa")
    assert "a\ue000" == data._after_prefix("a\ud7ff")
    assert "b" == data._after_prefix("a\U0010ffff")
    assert data._after_prefix("\U0010ffff") is None


def test_counts_stop_at_the_cap(engine: Engine) -> None:
    """A bounded count says "2+" past a cap of 2 and the exact number up to it."""
    _add(engine, *(("t", f"c{n}", "s") for n in range(3)))
    query = saga_instances.select()
    with engine.connect() as connection:
        assert "2+" == str(data.bounded_count(connection, query, cap=2))
        assert "3" == str(data.bounded_count(connection, query, cap=3))


def test_type_state_counts_are_cached_and_recounted_in_the_background(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Within a minute the cached count is shown; past it the stale one is, while one recount
    runs, and the next page shows the new count with its new time."""
    _add(engine, ("t", "1", "open"))
    cache = CountsCache(engine, max_age=timedelta(minutes=1))
    first = cache.get()
    assert {"t": {"open": 1}} == first.by_type
    _add(engine, ("t", "2", "open"), ("u", "3", "done"))
    frozen_clock.tick(timedelta(seconds=59))
    assert first is cache.get()
    assert cache.recount is None
    frozen_clock.tick(timedelta(seconds=1))
    assert first is cache.get()  # stale, shown while the recount runs
    assert cache.recount is not None
    cache.recount.join(timeout=30)
    assert not cache.recount.is_alive()
    fresh = cache.get()
    assert {"t": {"open": 2}, "u": {"done": 1}} == fresh.by_type
    assert ["done", "open"] == fresh.states
    assert clock.now() == fresh.counted_at


def test_dead_letter_groups_list_their_oldest_letters_only(engine: Engine) -> None:
    """Each group lists its oldest `per_group` letters, whatever the other groups hold."""
    _letters(engine, "a", "a", "a", "b")
    with engine.connect() as connection:
        listed = data.letters_by_group(connection, per_group=2)
    assert {("e", None, "a"): 2, ("e", None, "b"): 1} == {k: len(v) for k, v in listed.items()}
    first, second = listed[("e", None, "a")]
    assert first.id < second.id


def test_type_search_cursor_within_and_across_types(engine: Engine) -> None:
    """Paging one type by its ids alone: a cursor of that type goes on after it, one of an
    earlier type starts the type over, one of a later type ends it."""
    _add(engine, ("a", "1", "s"), ("b", "1", "s"), ("b", "2", "s"), ("c", "0", "s"))
    with engine.connect() as connection:

        def ids(after: tuple[str, str]) -> list[str]:
            page = data.search(connection, data.Search(saga_type="b", after=after))
            return [row.correlation_id for row in page.rows]

        assert ["2"] == ids(("b", "1"))
        assert ["1", "2"] == ids(("a", "9"))
        assert [] == ids(("c", "0"))
    assert [("b", "1"), ("b", "2")] == _ids(engine, data.Search(saga_type="b", limit=1))


def test_a_failed_recount_keeps_the_stale_count_and_says_so(
    engine: Engine, frozen_clock: FrozenDateTimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The database gone during a background recount: the page keeps the old count, the
    failure is logged, and nothing escapes the thread."""
    calls: list[int] = []

    def count(executor: Executor) -> TypeStateCounts:
        calls.append(1)
        if len(calls) > 1:
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        return count_by_type_and_state(executor)

    cache = CountsCache(engine, max_age=timedelta(minutes=1), count=count)
    first = cache.get()
    frozen_clock.tick(timedelta(minutes=1))
    with caplog.at_level(logging.WARNING, logger="sagabox.web"):
        assert first is cache.get()
        assert cache.recount is not None
        cache.recount.join(timeout=30)
    assert ["recounting sagas by type and state failed"] == [r.message for r in caplog.records]
    assert first is cache.get()  # still the old count (and one more recount is tried)
    cache.recount.join(timeout=30)


def test_age_search_pages_oldest_first_and_past_a_pruned_cursor(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """An age search lists the sagas created before the cutoff oldest first (ties in type and
    id order), each once over pages of 2; a page whose cursor row was pruned meanwhile goes on
    by the creation time its link carries."""
    ages = {"d-oldest": 40, "c-older": 35, "a-old": 31, "b-old": 31, "e-young": 1}
    start = clock.now()
    for correlation_id, days in sorted(ages.items(), key=lambda item: -item[1]):
        frozen_clock.move_to(start - timedelta(days=days))
        _add(engine, ("t", correlation_id, "s"))
    frozen_clock.move_to(start)
    month = timedelta(days=30)
    expected = [("t", "d-oldest"), ("t", "c-older"), ("t", "a-old"), ("t", "b-old")]
    assert expected == _ids(engine, data.Search(older_than=month, limit=2))
    with engine.connect() as connection:
        first = data.search(connection, data.Search(older_than=month, limit=2))
    assert ("t", "c-older") == first.next_after
    assert start - timedelta(days=35) == first.next_created
    with engine.begin() as connection:
        connection.execute(
            saga_instances.delete().where(saga_instances.c.correlation_id == "c-older")
        )
        after = data.Search(
            older_than=month, after=first.next_after, after_created=first.next_created, limit=2
        )
        assert ["a-old", "b-old"] == [r.correlation_id for r in data.search(connection, after).rows]


def _letters(engine: Engine, *reasons: str) -> None:
    with engine.begin() as connection:
        for n, reason in enumerate(reasons):
            record_dead_letter(
                connection,
                endpoint="e",
                body=f"{n}".encode(),
                headers={},
                content_type=None,
                reason=reason,
            )


def test_dead_letter_groups_are_exact_while_few_and_cached_past_that(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Up to `exact_letters` every page counts the groups afresh; past it a page shows the
    cached count until it is `max_age` old, then one recount runs in the background; after an
    action (`invalidate`) the next page counts again itself."""
    _letters(engine, "a", "a")
    cache = GroupsCache(engine, max_age=timedelta(seconds=10), exact_letters=3)
    assert 2 == cache.get().total
    _letters(engine, "b")
    assert {"a": 2, "b": 1} == {g.reason: g.count for g in cache.get().groups}  # 3: still exact
    _letters(engine, "b")
    cached = cache.get()
    assert 4 == cached.total  # counted afresh: the last count held 3
    _letters(engine, "c")
    frozen_clock.tick(timedelta(seconds=9))
    assert cached is cache.get()  # 4 letters: cached
    assert cache.recount is None
    frozen_clock.tick(timedelta(seconds=1))
    assert cached is cache.get()  # stale: shown while the recount runs
    assert cache.recount is not None
    cache.recount.join(timeout=30)
    assert 5 == cache.get().total
    _letters(engine, "c")
    cache.invalidate()
    assert {"a": 2, "b": 2, "c": 2} == {g.reason: g.count for g in cache.get().groups}


def test_a_recount_begun_before_an_action_does_not_hide_its_effect(engine: Engine) -> None:
    """A background recount that read the groups before an action finishes after it: the count
    it took is dropped, and the next page counts the groups as the action left them."""
    _letters(engine, "a", "a")
    started, release = threading.Event(), threading.Event()

    def slow(executor: Executor) -> GroupCounts:
        # Counted on a connection of its own, closed before the wait: on SQLite an open read
        # would hold the action's delete until the wait gave up, and test nothing.
        with engine.connect() as connection:
            counted = count_groups(connection)
        started.set()
        assert release.wait(timeout=30)
        return counted

    cache = GroupsCache(engine, exact_letters=0, count=slow)
    release.set()
    cache.get()  # the first count
    release.clear()
    started.clear()
    recount = threading.Thread(target=cache._recount)
    recount.start()
    assert started.wait(timeout=30)
    with engine.begin() as connection:
        connection.execute(dead_letters.delete())
    cache.invalidate()
    release.set()
    recount.join(timeout=30)
    assert 0 == cache.get().total


def test_letters_of_listed_groups_only_each_oldest_first(engine: Engine) -> None:
    """Given the groups a page shows, only their letters are read, the oldest first, at most
    `per_group` each; a group whose type is unknown (NULL) is found too."""
    _letters(engine, "a", "b", "a", "c", "a")
    with engine.connect() as connection:
        groups = {g.reason: g for g in count_groups(connection).groups}
        listed = data.letters_by_group(connection, per_group=2, groups=[groups["a"], groups["c"]])
    assert {("e", None, "a"), ("e", None, "c")} == set(listed)
    first, second = listed[("e", None, "a")]
    assert first.id < second.id
    assert 1 == len(listed[("e", None, "c")])
