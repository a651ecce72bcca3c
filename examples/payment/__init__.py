"""Payments (seed 002): ledger debit, anti-money-laundering screening, execution; orchestrated,
so putting the screening first is a change in one place."""
