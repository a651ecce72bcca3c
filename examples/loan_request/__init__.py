"""Loan requests (seed 000): an orchestrating saga with a parallel join, a deadline, an offer
with reminders and an expiry, a random manual review, and emails by choreography."""
