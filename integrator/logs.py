"""Logging set-up: human or JSON lines, one event per line, secrets scrubbed.

Every formatted line goes through the secret redactor last, so a secret value
that leaked into an exception text or a plugin's log call still prints as ``***``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from integrator.types import REDACTOR

#: ``extra=`` keys that are copied into JSON output when a log call provides them.
CONTEXT_KEYS = ("route", "sink", "message_id", "trace_id", "plugin")


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
            f".{int(record.msecs):03d}Z"
        )

    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.redact(super().format(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: journald, Loki and jq all read it as is."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return REDACTOR.redact(json.dumps(event, default=str, ensure_ascii=False))


def setup_logging(level: str = "info", fmt: str = "human", stream: TextIO | None = None) -> None:
    """Configure the ``integrator`` logger tree (and the root, for plugins' loggers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_integrator", False):
            root.removeHandler(old)
    handler._integrator = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries are chatty at debug; keep them at warning unless asked for.
    for noisy in ("asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
