"""Value types used in configuration: durations, sizes and secrets.

Each is a small class that msgspec builds through ``dec_hook`` (see config.py), so
component authors simply annotate an option as ``Duration``, ``Size`` or ``Secret``.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


class Duration(float):
    """Seconds, written in config as ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"`` or ``"1d"``."""

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, bool):
            raise ValueError(f"expected a duration like '30s', found {value!r}")
        if isinstance(value, int | float):
            if value < 0:
                raise ValueError(f"a duration cannot be negative, found {value!r}")
            return cls(value)
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match:
                return cls(float(match[1]) * _DURATION_UNITS[match[2]])
        raise ValueError(f"expected a duration like '250ms', '30s', '5m', '1h', found {value!r}")

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


class Size(int):
    """Bytes, written in config as ``"512KiB"``, ``"1MiB"``, ``"10MB"`` or a plain number."""

    @classmethod
    def parse(cls, value: Any) -> Size:
        if isinstance(value, bool):
            raise ValueError(f"expected a size like '1MiB', found {value!r}")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"a size cannot be negative, found {value!r}")
            return cls(value)
        if isinstance(value, str):
            match = _SIZE.match(value)
            if match:
                return cls(int(float(match[1]) * _SIZE_UNITS[match[2]]))
        raise ValueError(f"expected a size like '512KiB' or '1MiB', found {value!r}")


class Secret:
    """A value that must never be shown: its ``repr`` and ``str`` are ``***``.

    Call :meth:`reveal` at the one place the plain value is needed (a header, a
    signature). Every secret's value is also remembered by :data:`REDACTOR` so the
    log filter can scrub it should it leak into a message by another route.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value
        REDACTOR.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # pickling keeps the value; printing never does
        return (Secret, (self._value,))


class Redactor:
    """Remembers secret values and replaces them by ``***`` in any text."""

    MIN_LENGTH = 4  # shorter values would redact ordinary words

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < self.MIN_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            self._pattern = None

    def redact(self, text: str) -> str:
        if not self._values:
            return text
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                ordered = sorted(self._values, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(map(re.escape, ordered)))
        return pattern.sub("***", text)


REDACTOR = Redactor()


def redact_url(url: str, *, drop_userinfo: bool = False) -> str:
    """A connection URL fit for logs and errors: its password, and the values of
    query parameters named like a credential (``?password=…``, ``token``,
    ``secret``), shown as ``***``.

    ``drop_userinfo`` removes the whole user part, for schemes that may carry a
    token there instead of a user name (NATS). The query is kept otherwise: it holds
    settings worth seeing (``sslmode``). An HTTP request's URL is logged with
    :func:`integrator.http.client.public_url` instead, which drops query and user.
    """
    parts = urlsplit(url)
    if _CREDENTIAL_KEY.search(parts.query):
        query = [
            (key, "***" if _CREDENTIAL_KEY.search(key) else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        if drop_userinfo:
            parts = parts._replace(netloc=host)
        elif parts.password is not None:
            parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}")
    return urlunsplit(parts)


_CREDENTIAL_KEY = re.compile("pass|secret|token", re.IGNORECASE)


def remember_url_password(url: str, *, include_user: bool = False) -> None:
    """Have the redactor hide a password written into a URL, wherever it shows up:
    as written and percent-decoded (client libraries use and may echo the decoded
    one). ``include_user`` also hides the user part, for schemes that may carry a
    token there (NATS)."""
    parts = urlsplit(url)
    for value in (parts.password, parts.username if include_user else None):
        if value:
            REDACTOR.add(value)
            REDACTOR.add(unquote(value))
