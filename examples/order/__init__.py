"""Orders (seed 003, the hybrid): an orchestrated critical path (charge, reserve, refund when out
of stock), then an `OrderCompleted` event whose side effects are choreographed."""
