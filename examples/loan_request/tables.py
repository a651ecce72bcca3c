"""Each service's own business tables (in one database here, as one service each could own)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, Numeric, String, Table

business = MetaData()

loans = Table(
    "loans",
    business,
    Column("id", String(40), primary_key=True),
    Column("applicant", String(100), nullable=False),
    Column("amount", Numeric(12, 2), nullable=False),
    Column("status", String(20), nullable=False),
)

emails = Table(
    "emails",
    business,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("recipient", String(100), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)

review_tasks = Table(
    "review_tasks",
    business,
    Column("loan_id", String(40), primary_key=True),
    Column("reminders", Integer(), nullable=False),
)
