"""When a poller polls: a fixed interval with jitter, or a cron expression.

Each delay is computed after the previous poll finished, from when it started, so a
slow poll delays the next one and polls never overlap. Jitter (a random extra wait
up to ``jitter``) keeps many daemons from hitting one API at the same instant.
Cron expressions (five fields, or six with seconds last) are read by croniter, in
UTC unless a time zone is given.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def check_schedule(interval: float | None, cron: str | None, jitter: float, timezone: str) -> None:
    """Options checks (ValueError) for the config loader."""
    if (interval is None) == (cron is None):
        raise ValueError("give exactly one of 'interval' and 'cron'")
    if interval is not None and interval <= 0:
        raise ValueError("'interval' must be more than 0s")
    if jitter < 0:
        raise ValueError("'jitter' cannot be negative")
    if cron is not None and not _croniter().is_valid(cron):
        raise ValueError(f"'cron' is not a valid cron expression: {cron!r}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown 'timezone' {timezone!r}") from err


class Schedule:
    """Delays between polls; ``rng`` and the clocks are passed in for tests."""

    def __init__(
        self,
        *,
        interval: float | None = None,
        cron: str | None = None,
        jitter: float = 0.0,
        timezone: str = "UTC",
        rng: random.Random | None = None,
    ) -> None:
        check_schedule(interval, cron, jitter, timezone)
        self.interval = interval
        self.cron = cron
        self.jitter = jitter
        self.zone = ZoneInfo(timezone)
        self._rng = rng or random.Random()

    def _jitter(self) -> float:
        return self._rng.uniform(0.0, self.jitter) if self.jitter else 0.0

    def first_delay(self, now: float) -> float:
        """Seconds until the first poll: at once for an interval, else the next cron time."""
        if self.interval is not None:
            return self._jitter()
        return self._until_next_fire(now)

    def delay_after(self, started: float, finished: float, now: float) -> float:
        """Seconds until the next poll, given when the last one started and finished.

        ``started`` and ``finished`` are monotonic times; ``now`` is the Unix time.
        """
        if self.interval is not None:
            return max(0.0, started + self.interval - finished) + self._jitter()
        return self._until_next_fire(now)

    def _until_next_fire(self, now: float) -> float:
        assert self.cron is not None
        start = datetime.fromtimestamp(now, self.zone)
        fire: float = _croniter()(self.cron, start).get_next(float)
        return max(0.0, fire - now) + self._jitter()


def _croniter() -> Any:
    """croniter, imported when a cron schedule is first used (it brings dateutil:
    ~1.3 MB a daemon without one does not need)."""
    from croniter import croniter

    return croniter
