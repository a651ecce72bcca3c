"""One saga step written: fire a message on a loaded saga, then store what it did (its row,
version-checked, its journal line, the messages it sent, its timeouts scheduled or dropped),
in one statement where the database allows and in the caller's transaction always."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, delete

from outbox import clock
from outbox.database import Executor
from outbox.messages import Message
from outbox.tables import outbox_messages
from outbox.writer import Outbox
from sagas import journal, requests, store
from sagas.batch import current_batch
from sagas.context import SagaContext
from sagas.definition import Saga
from sagas.errors import SagaDefinitionError
from sagas.outcomes import Handled, Outcome, conflict, handled
from sagas.tables import saga_journal
from sagas.timeouts import PendingTimeout, Settlement, Timeout, repetition, settle

#: Drops timeouts' outbox rows by message id (cancelled, rescheduled, answered requests);
#: built once, like the store's statements, since a transition that cancels a timeout runs it.
DELETE_TIMEOUTS = delete(outbox_messages).where(
    outbox_messages.c.message_id.in_(bindparam("b_message_ids", expanding=True))
)


def apply_step(
    executor: Executor,
    saga: Saga[Any],
    message: Message,
    endpoint: str | None,
    fired_timeout: PendingTimeout | None = None,
    *,
    fire: bool = True,
) -> Handled:
    """Fire `message` on a loaded (or new) `saga` and write what it did: the saga row,
    version-checked, its journal line, the messages it sent and the timeouts it scheduled or
    dropped; `fire=False` for a timeout that fired into a state that ignores it. `endpoint`
    is the runtime's, for the return address and the timeouts."""
    cls = type(saga)
    before, expected_version = saga.state_name, saga.version
    ctx = SagaContext(saga, message, executor)
    if fired_timeout is not None:
        assert isinstance(message, Timeout)
        del saga.timeouts[message.timeout]
        repeat = repetition(fired_timeout, message, ctx.timeout_id(message.timeout))
        if repeat is not None:
            ctx.timer_calls.append(repeat)
    fired = saga.fire(ctx, message) if fire else False
    saga.version += 1
    saga.updated_at = clock.now()
    if saga.state_name in cls.final_states:
        saga.finished_at = saga.updated_at
    settlement = settle(
        saga.timeouts,
        ctx.timer_calls,
        before=before,
        after=saga.state_name,
        finished=saga.is_finished,
    )
    saga.timeouts = settlement.timeouts
    outcome: Outcome = "transition" if fired else "unchanged" if fire else "ignored"
    line = journal.journal_line(
        cls,
        saga.correlation_id,
        message,
        outcome,
        from_state=before,
        to_state=saga.state_name,
        version=saga.version,
        incarnation=saga.incarnation,
        definition_version=saga.definition_version,
        saga_id=saga.id,
    )
    batch = current_batch(executor)
    if expected_version == 0:
        # A new saga has nothing pending to drop: its rows go in with it, in one statement
        # where the database allows (see `store.create`).
        outbox = Outbox(executor)
        rows_of_new = _new_rows(saga, ctx, settlement, line, outbox, endpoint)
        if not store.create(executor, saga, then=rows_of_new):
            raise conflict(saga, before, message, created=True)
        outbox.written()
        return handled(saga, outcome, before)
    # One statement for the update, the journal line and the messages where the database
    # runs it (`sagas.step_sql`); in a batch the rows wait for its commit (`sagas.batch`).
    at_once = store.saves_step_at_once(executor, saga)
    rows: list[dict[str, Any]] = []
    if at_once:
        outbox = Outbox(executor, into=rows)
    else:
        if not store.save(executor, saga, expected_version=expected_version):
            raise conflict(saga, before, message, created=False)
        journal.write_journal_line(executor, line)
        outbox = Outbox(executor, into=None if batch is None else batch.outbox)
    for emitted in ctx.emitted:
        outbox.add(
            emitted.message,
            destination=emitted.destination,
            partition_key=saga.correlation_id,
            headers=requests.outgoing_headers(endpoint, saga, emitted),
        )
    if settlement.dropped:
        # A row already shipped would be found stale on arrival anyway; deleting the rest
        # keeps the outbox's timeout rows equal to the pending set.
        executor.execute(DELETE_TIMEOUTS, {"b_message_ids": settlement.dropped})
        if batch is not None:  # and those scheduled earlier in this batch, not yet written
            dropped = set(settlement.dropped)
            batch.outbox[:] = [r for r in batch.outbox if r["message_id"] not in dropped]
    for call in settlement.written:
        outbox.add(
            call.message,
            destination=_timeout_endpoint(endpoint, cls),
            partition_key=saga.correlation_id,
            deliver_at=call.due_at,
        )
    if at_once and not store.save_step(
        executor, saga, expected_version=expected_version, line=line, outbox_rows=rows
    ):
        raise conflict(saga, before, message, created=False)
    return handled(saga, outcome, before)


def _new_rows(
    saga: Saga[Any],
    ctx: SagaContext,
    settlement: Settlement,
    line: dict[str, Any],
    outbox: Outbox,
    endpoint: str | None,
) -> list[tuple[Table, dict[str, Any]]]:
    """What a new saga writes besides its row: its journal line, the messages it sent (with
    their return-address headers) and the timeouts it scheduled, as `apply_step` writes
    them for an existing saga."""
    assert not settlement.dropped, "a new saga has no pending timeouts to drop"
    rows: list[tuple[Table, dict[str, Any]]] = [(saga_journal, line)]
    for emitted in ctx.emitted:
        headers = requests.outgoing_headers(endpoint, saga, emitted)
        row = outbox.row(emitted.message, emitted.destination, saga.correlation_id, headers=headers)
        rows.append((outbox_messages, row))
    for call in settlement.written:
        address = _timeout_endpoint(endpoint, type(saga))
        row = outbox.row(call.message, address, saga.correlation_id, call.due_at)
        rows.append((outbox_messages, row))
    return rows


def _timeout_endpoint(endpoint: str | None, cls: type[Saga[Any]]) -> str:
    if not endpoint:
        raise SagaDefinitionError(
            f"{cls.saga_type} scheduled a timeout, but this runtime has no endpoint to "
            "address it to: create it as SagaRuntime(..., endpoint='<queue name>'), or run "
            "the saga in a sagabox.App"
        )
    return endpoint
