"""Each service's own tables: payments' charges, inventory's stock, and the side effects."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Integer, MetaData, Numeric, String, Table

business = MetaData()

charges = Table(
    "payment_charges",
    business,
    # One charge per order: the business key that makes a re-sent "charge" harmless.
    Column("order_id", String(40), primary_key=True),
    Column("amount", Numeric(12, 2), nullable=False),
    Column("refunded", Boolean(), nullable=False),
)
stock = Table(
    "inventory_stock",
    business,
    Column("sku", String(40), primary_key=True),
    Column("available", Integer(), nullable=False),
)
notifications = Table(
    "notifications",
    business,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("customer", String(100), nullable=False),
    Column("text", String(200), nullable=False),
)
loyalty_points = Table(
    "loyalty_points",
    business,
    Column("order_id", String(40), primary_key=True),
    Column("customer", String(100), nullable=False),
    Column("points", Integer(), nullable=False),
)
