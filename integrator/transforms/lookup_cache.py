"""The cache of ``enrich``'s HTTP lookups: LRU, with lifetimes from HTTP's caching headers.

Only what a lookup needs of RFC 9111: ``Cache-Control`` (``max-age``, ``s-maxage``,
``no-cache``, ``no-store``), ``Expires`` with ``Date``, and ``Age`` say how long an
answer is fresh, capped by the configured ``ttl`` (the operator's limit on how old
looked-up data may be); a stale answer is kept if it has a validator (``ETag``,
``Last-Modified``) so it can be revalidated, and a ``304`` makes it fresh again.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from integrator.delivery.retry import parse_http_date

_DIRECTIVE = re.compile(r'\s*([^=,\s]+)\s*(?:=\s*("[^"]*"|[^,]*))?\s*(?:,|$)')


def cache_control(headers: Mapping[str, str]) -> dict[str, str]:
    """The directives of every ``Cache-Control`` header, names lower-cased."""
    getall = getattr(headers, "getall", None)
    values = getall("Cache-Control", []) if getall else [headers.get("Cache-Control", "")]
    directives: dict[str, str] = {}
    for match in _DIRECTIVE.finditer(",".join(values)):
        if match[1]:
            directives.setdefault(match[1].lower(), (match[2] or "").strip().strip('"'))
    return directives


def freshness(headers: Mapping[str, str], ttl: float, now: float) -> float | None:
    """Seconds an answer may be reused without asking again; None: it must not be kept.

    ``now`` is the Unix time (for ``Expires``). Unreadable values count as stale.
    """
    directives = cache_control(headers)
    if "no-store" in directives:
        return None
    if "no-cache" in directives:
        lifetime = 0.0
    elif "s-maxage" in directives or "max-age" in directives:
        lifetime = _seconds(directives.get("s-maxage", directives.get("max-age")))
    elif "Expires" in headers:
        expires = parse_http_date(headers["Expires"], now=now)
        date = parse_http_date(headers.get("Date", ""), now=now) or now
        lifetime = 0.0 if expires is None else expires - date
    else:
        lifetime = ttl
    return max(0.0, min(lifetime - _seconds(headers.get("Age", "0")), ttl))


def _seconds(value: str | None) -> float:
    return float(value) if value is not None and value.strip().isdigit() else 0.0


@dataclass
class CachedAnswer:
    """One lookup's answer: the body as received (decoded for each use, so no two
    messages share a mutable value), and what is needed to revalidate it."""

    found: bool
    body: bytes
    is_text: bool
    lifetime: float
    fresh_until: float
    etag: str | None = None
    last_modified: str | None = None

    def value(self) -> Any:
        if not self.found or not self.body:
            return None
        return (
            self.body.decode("utf-8", "replace") if self.is_text else msgspec.json.decode(self.body)
        )

    def validators(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class LookupCache:
    """Least-recently-used answers, at most ``size``; counts hits for tests and metrics."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._answers: OrderedDict[str, CachedAnswer] = OrderedDict()
        self.hits = self.misses = self.revalidated = 0

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> CachedAnswer | None:
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        if self.size == 0 or (answer.lifetime <= 0 and not answer.validators()):
            self._answers.pop(key, None)  # nothing to reuse, nothing to revalidate with
            return
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)

    def drop(self, key: str) -> None:
        self._answers.pop(key, None)
