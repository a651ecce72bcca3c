"""The examples' units of time. Simulated time needs none of this; when the demo runs as real
processes it sets $SAGABOX_DEMO_DAY_SECONDS (say 2) so that a week of reminders fits in a
coffee break. Every duration in the examples is written in these units."""

from __future__ import annotations

import os
from datetime import timedelta

DAY = timedelta(seconds=float(os.environ.get("SAGABOX_DEMO_DAY_SECONDS", 24 * 3600)))
HOUR = DAY / 24
