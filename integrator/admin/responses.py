"""JSON and problem+json answers of the admin listener, with secrets scrubbed.

Every string that leaves the admin listener goes through the secret redactor
before it is encoded (an error text may quote a URL with a key in it), and
before, not after, JSON escaping would hide a secret's quotes and backslashes.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from integrator.http.problem import BLANK, PROBLEM_CONTENT_TYPE, HTTPProblem, Problem, title_for
from integrator.types import REDACTOR

_encoder = msgspec.json.Encoder()


def scrub(value: Any) -> Any:
    """``value`` as plain data with every secret value replaced by ``***``."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return scrub(msgspec.to_builtins(value))
    return value


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=_encoder.encode(scrub(data)), content_type="application/json"
    )


def problem(
    status: int,
    detail: str,
    *,
    instance: str = "",
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> web.Response:
    """An RFC 9457 problem, with extension members (``reasons``, ``problems``…) if given."""
    document = msgspec.to_builtins(
        Problem(
            type=BLANK, title=title_for(status), status=status, detail=detail, instance=instance
        )
    )
    document.update(extensions)
    return web.Response(
        status=status,
        body=_encoder.encode(scrub(document)),
        headers=headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )


class AdminProblem(HTTPProblem):
    """Raised by an admin handler to answer with a problem document and extension members."""

    def __init__(
        self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(status, detail, headers=headers)
        self.extensions = extensions

    def response(self, instance: str = "") -> web.Response:
        return problem(
            self.status, self.detail, instance=instance, headers=self.headers, **self.extensions
        )
