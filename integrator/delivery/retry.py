"""When to try a failed delivery again, and how long to wait first.

The policy is pure: it computes delays and decisions from numbers the caller passes
in (attempt counts, timestamps, a random generator), so the engine owns the clock and
tests need no sleeping. HTTP sinks turn a response into a
:class:`~integrator.errors.DeliveryError` with :func:`delivery_error_for_response`,
which reads ``Retry-After`` (RFC 9110 §10.2.3) and the rate-limit headers.
"""

from __future__ import annotations

import calendar
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from integrator.errors import DeliveryError

if TYPE_CHECKING:
    from integrator.config import RetryConfig

#: The longest wait a remote may ask for (24 h). A longer ``Retry-After`` is more
#: likely a misread epoch or a broken server than a plan, so parsers ignore it and
#: :meth:`RetryPolicy.next_delay` caps any requested delay to it.
MAX_RETRY_AFTER = 24 * 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by age.

    ``max_attempts`` counts every attempt, the first included; ``max_age`` (seconds,
    optional) bounds the time since the first attempt.
    """

    max_attempts: int = 10
    max_age: float | None = None
    initial: float = 1.0
    max: float = 300.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, found {self.max_attempts}")
        if self.initial < 0 or self.max < 0:
            raise ValueError("retry delays cannot be negative")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, found {self.multiplier}")
        if self.max_age is not None and self.max_age < 0:
            raise ValueError("max_age cannot be negative")

    @classmethod
    def from_config(cls, cfg: RetryConfig) -> RetryPolicy:
        return cls(
            max_attempts=cfg.max_attempts,
            max_age=None if cfg.max_age is None else float(cfg.max_age),
            initial=float(cfg.initial),
            max=float(cfg.max),
            multiplier=cfg.multiplier,
        )

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, found {attempt}")
        try:
            grown = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            grown = math.inf
        return min(self.max, grown)

    def next_delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Full jitter (a uniform draw in ``[0, ceiling]``) spreads the retries of many
        messages that failed together. When the remote asked for a longer wait
        (``retry_after``), that wait wins, even above ``max``: coming back earlier
        would only be refused again. It is capped at :data:`MAX_RETRY_AFTER`.
        """
        ceiling = self.ceiling(attempt)
        delay = (rng.uniform if rng else random.uniform)(0.0, ceiling)
        if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
            delay = min(retry_after, MAX_RETRY_AFTER)
        return delay

    def should_retry(
        self, attempts: int, first_attempt_at: float, now: float, retriable: bool
    ) -> bool:
        """Whether to schedule another attempt after ``attempts`` have failed."""
        if not retriable or attempts >= self.max_attempts:
            return False
        return self.max_age is None or now - first_attempt_at < self.max_age


# -- status codes ---------------------------------------------------------------------------

#: 4xx answers that mean "not now" rather than "never".
_RETRIABLE_4XX = frozenset({408, 425, 429})


def classify_status(status: int) -> bool | None:
    """``None`` for success (2xx, 3xx), else whether retrying may help.

    408, 425 and 429 and every 5xx are retriable; the other 4xx are the request's
    fault and will fail again. Anything else (1xx as a final answer, codes above 599)
    is a broken server, treated like a 5xx.
    """
    if 200 <= status < 400:
        return None
    if 400 <= status < 500:
        return status in _RETRIABLE_4XX
    return True


def delivery_error_for_response(
    status: int, headers: Mapping[str, str], now: float
) -> DeliveryError | None:
    """The error a sink should raise for an HTTP answer, or ``None`` on success.

    ``retry_after`` comes from ``Retry-After``, else, for 429, from the rate-limit
    headers. A 403 carrying ``Retry-After`` or an exhausted quota is a rate limit
    in disguise (GitHub answers its rate limits this way) and is retried too.
    ``now`` is the Unix time, used to read HTTP dates and epoch reset times.
    """
    retriable = classify_status(status)
    if retriable is None:
        return None
    retry_after = parse_retry_after(_header(headers, "retry-after"), now=now)
    quota_exhausted = _quota_exhausted(headers)
    if retry_after is None and (status == 429 or (status == 403 and quota_exhausted)):
        retry_after = parse_ratelimit_reset(headers, now=now)
    if status == 403 and (retry_after is not None or quota_exhausted):
        retriable = True
    return DeliveryError(_reason(status), retriable=retriable, retry_after=retry_after)


def _reason(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


# -- Retry-After ----------------------------------------------------------------------------

_DELAY = re.compile(r"\d{1,12}(?:\.\d{1,6})?")
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_LONG_DAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH = r"(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
#: The three HTTP-date forms of RFC 9110 §5.6.7, matched case-insensitively.
_IMF_FIXDATE = re.compile(
    rf"{_DAY}, (?P<day>\d{{2}}) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT", re.IGNORECASE
)
_RFC850_DATE = re.compile(
    rf"{_LONG_DAY}, (?P<day>\d{{2}})-{_MONTH}-(?P<year>\d{{2}}) {_TIME} GMT", re.IGNORECASE
)
_ASCTIME_DATE = re.compile(
    rf"{_DAY} {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})", re.IGNORECASE
)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` when unusable.

    Accepts delay-seconds (and, leniently, a decimal fraction) and the three
    HTTP-date forms. A date in the past means "now" (0). Empty, malformed,
    negative values and waits above :data:`MAX_RETRY_AFTER` give ``None``, so the
    caller falls back to its own backoff. ``now`` is the Unix time.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELAY.fullmatch(value):
        delay = float(value)
    else:
        when = parse_http_date(value, now=now)
        if when is None:
            return None
        delay = max(0.0, when - now)
    return delay if delay <= MAX_RETRY_AFTER else None


def parse_http_date(value: str, *, now: float) -> float | None:
    """The Unix time of an HTTP-date (IMF-fixdate, RFC 850 or asctime), else ``None``.

    ``now`` places RFC 850's two-digit years: one that would lie more than 50 years
    ahead is read as the most recent past year with those digits (RFC 9110 §5.6.7).
    """
    value = value.strip()
    match = _IMF_FIXDATE.fullmatch(value) or _ASCTIME_DATE.fullmatch(value)
    year: int
    if match:
        year = int(match["year"])
    else:
        match = _RFC850_DATE.fullmatch(value)
        if match is None:
            return None
        year = _full_year(int(match["year"]), now)
    try:
        second = int(match["second"])
        leap = second == 60  # RFC 9110 allows a leap second; count it as the next one
        fields = (
            year,
            _MONTHS[match["month"].lower()],
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            59 if leap else second,
        )
        _check_fields(*fields)
    except ValueError:
        return None
    return float(calendar.timegm((*fields, 0, 0, 0))) + (1 if leap else 0)


def _full_year(two_digits: int, now: float) -> int:
    current = _utc_year(now)
    year = current - current % 100 + two_digits
    if year > current + 50:
        year -= 100
    return year


def _utc_year(timestamp: float) -> int:
    return time.gmtime(timestamp).tm_year


def _check_fields(year: int, month: int, day: int, hour: int, minute: int, second: int) -> None:
    """Reject impossible dates (31 Feb, 25:00) rather than let timegm roll them over."""
    if not (1 <= day <= calendar.monthrange(year, month)[1]):
        raise ValueError("day out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time out of range")


# -- rate-limit headers ---------------------------------------------------------------------


def parse_ratelimit_reset(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds until the remote's rate-limit window resets, or ``None``.

    Reads, in order: the IETF draft ``RateLimit`` field (``limit=10, remaining=0,
    reset=5`` or the newer ``"default";r=0;t=5``), ``RateLimit-Reset`` and the
    legacy ``X-RateLimit-Reset``. A reset above :data:`MAX_RETRY_AFTER` cannot be a
    delay, so it is read as a Unix timestamp (GitHub sends those). ``now`` is the Unix time.
    """
    params = _ratelimit_params(_header(headers, "ratelimit"))
    candidates = (
        params.get("reset", params.get("t")),
        _header(headers, "ratelimit-reset"),
        _header(headers, "x-ratelimit-reset"),
    )
    for raw in candidates:
        if raw is None or not _DELAY.fullmatch(raw.strip()):
            continue
        value = float(raw)
        delay = max(0.0, value - now) if value > MAX_RETRY_AFTER else value
        return delay if delay <= MAX_RETRY_AFTER else None
    return None


def _quota_exhausted(headers: Mapping[str, str]) -> bool:
    params = _ratelimit_params(_header(headers, "ratelimit"))
    remaining = (
        params.get("remaining", params.get("r")),
        _header(headers, "ratelimit-remaining"),
        _header(headers, "x-ratelimit-remaining"),
    )
    return any(value is not None and value.strip() == "0" for value in remaining)


def _ratelimit_params(value: str | None) -> dict[str, str]:
    """``key=value`` pairs of a ``RateLimit`` field, items and parameters alike."""
    params: dict[str, str] = {}
    if not value:
        return params
    for item in value.split(","):
        for part in item.split(";"):
            key, sep, raw = part.partition("=")
            if sep:
                params.setdefault(key.strip().lower(), raw.strip().strip('"'))
    return params


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts and aiohttp's CIMultiDict."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, found in headers.items():
        if key.lower() == name:
            return found
    return None
