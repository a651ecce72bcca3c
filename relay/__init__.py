"""The relay (outbox → broker) and the consumer worker (broker → handlers)."""
