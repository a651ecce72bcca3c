"""A small endpoint with business tables of its own, for the relay and worker tests.

Its module-level `app` is what the subprocess tests run (`sagabox worker --app
tests.bank_app:app`); $BANK_ENDPOINT and $BANK_EXCHANGE keep parallel tests apart.
"""

from __future__ import annotations

import os
from uuid import UUID

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    insert,
    select,
)

from outbox import Command, Event, HandlerContext, handles
from relay.broker import DEFAULT_EXCHANGE
from sagabox import App, RetryPolicy, Unrecoverable

business = MetaData()
accounts = Table(
    "bank_accounts",
    business,
    Column("id", String(50), primary_key=True),
    Column("open", Boolean(), nullable=False),
)
# No unique key on message_id on purpose: only the inbox stands between a redelivery and a
# second ledger line, which is what the tests check.
ledger = Table(
    "bank_ledger",
    business,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("account", String(50), nullable=False),
    Column("amount", Integer(), nullable=False),
    Column("seq", Integer(), nullable=False),
    Column("message_id", Uuid(), nullable=False),
)


class Deposit(Command, type="bank.Deposit"):
    """Put money into an account."""

    account: str
    amount: int
    seq: int = 0


class Deposited(Event, type="bank.Deposited"):
    """Money went into an account."""

    account: str
    amount: int
    seq: int = 0


class AccountOpened(Event, type="bank.AccountOpened"):
    """An event nobody in the tests subscribes to."""

    account: str


class Audit(Command, type="bank.Audit"):
    """A command no handler of this endpoint takes."""

    account: str


class AccountClosed(Exception):
    """The account does not take deposits (the fixable failure of the tests)."""


@handles(Deposit)
def deposit(ctx: HandlerContext, command: Deposit) -> None:
    """Book the deposit and publish that it happened; refuse closed accounts."""
    is_open = ctx.session.execute(
        select(accounts.c.open).where(accounts.c.id == command.account)
    ).scalar()
    if is_open is False:
        raise AccountClosed(f"account {command.account} is closed")
    if command.amount < 0:
        raise Unrecoverable(f"a deposit of {command.amount} makes no sense")
    ctx.session.execute(
        insert(ledger).values(
            account=command.account,
            amount=command.amount,
            seq=command.seq,
            message_id=command.message_id,
        )
    )
    ctx.publish(Deposited(account=command.account, amount=command.amount, seq=command.seq))


FAST_RETRIES = RetryPolicy(delays=(), immediate=0)


def make_app(
    *,
    database: str | None = None,
    broker: str | None = None,
    name: str = "bank",
    exchange: str = DEFAULT_EXCHANGE,
    retry: RetryPolicy | None = None,
) -> App:
    """The bank endpoint on the given database and broker."""
    return App(
        name,
        handlers=[deposit],
        database=database,
        broker=broker,
        exchange=exchange,
        retry=retry,
    )


def ledger_counts(engine: Engine) -> dict[UUID, int]:
    """How many ledger lines each deposit message produced."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(ledger.c.message_id, func.count()).group_by(ledger.c.message_id)
        ).all()
    return {message_id: count for message_id, count in rows}


app = make_app(
    name=os.environ.get("BANK_ENDPOINT", "bank"),
    exchange=os.environ.get("BANK_EXCHANGE", DEFAULT_EXCHANGE),
)
