"""Sagas as explicit state machines, persisted next to the service's business rows."""
