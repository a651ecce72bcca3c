"""The ledger's accounts and the execution service's transfers."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, Numeric, String, Table

business = MetaData()

accounts = Table(
    "ledger_accounts",
    business,
    Column("id", String(40), primary_key=True),
    Column("balance", Numeric(12, 2), nullable=False),
)
transfers = Table(
    "execution_transfers",
    business,
    Column("payment_id", String(40), primary_key=True),
    Column("beneficiary", String(100), nullable=False),
    Column("amount", Numeric(12, 2), nullable=False),
)
