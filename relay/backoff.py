"""Exponential backoff with full jitter, so restarted relays and workers do not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of up to `initial * 2**n` seconds (capped at `maximum`), each drawn at random."""

    initial: float = 0.1
    maximum: float = 30.0
    failures: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before the next try."""
        ceiling = min(self.maximum, self.initial * 2**self.failures)
        self.failures = min(self.failures + 1, 64)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.failures = 0
