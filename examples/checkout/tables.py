"""The shop's orders, and each subscriber's own table."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Numeric, String, Table

business = MetaData()

orders = Table(
    "shop_orders",
    business,
    Column("id", String(40), primary_key=True),
    Column("customer", String(100), nullable=False),
    Column("total", Numeric(12, 2), nullable=False),
)
confirmations = Table(
    "shop_confirmations",
    business,
    Column("order_id", String(40), primary_key=True),
    Column("recipient", String(100), nullable=False),
)
picking_lists = Table(
    "shop_picking_lists",
    business,
    Column("order_id", String(40), primary_key=True),
    Column("items", Integer(), nullable=False),
)
reward_points = Table(
    "shop_reward_points",
    business,
    Column("customer", String(100), primary_key=True),
    Column("points", Integer(), nullable=False),
)
