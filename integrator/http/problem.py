"""RFC 9457 problem details: the one error format every integrator HTTP endpoint answers with.

A handler raises :class:`HTTPProblem` (or builds :func:`problem_response`) and the
caller gets ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and ``instance``. ``detail`` is written for a person reading the
sender's delivery log: it says which check failed, and it must never carry a
secret, an expected signature or the request body.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import msgspec
from aiohttp import web

from integrator.errors import IntegratorError

PROBLEM_CONTENT_TYPE = "application/problem+json"

#: RFC 9457 §4.2.1: the type of a problem that says no more than its status code.
BLANK = "about:blank"


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The problem document (RFC 9457 §3.1); an empty detail or instance is left out."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""


_encoder = msgspec.json.Encoder()


def title_for(status: int) -> str:
    """The standard reason phrase, which RFC 9457 asks for with ``about:blank``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str = "",
    *,
    title: str | None = None,
    type: str = BLANK,
    instance: str = "",
    headers: Mapping[str, str] | None = None,
    close: bool = False,
) -> web.Response:
    """An ``application/problem+json`` response.

    ``close`` asks the client to close the connection after it (for a request whose
    body we refused to read, such as an oversized one).
    """
    problem = Problem(
        type=type,
        title=title if title is not None else title_for(status),
        status=status,
        detail=detail,
        instance=instance,
    )
    response = web.Response(
        status=status,
        body=_encoder.encode(problem),
        headers=dict(headers or {}),
        content_type=PROBLEM_CONTENT_TYPE,
    )
    if close:
        response.force_close()
    return response


class HTTPProblem(IntegratorError):
    """Raised by an HTTP handler to answer with a problem document instead of a result.

    The server that called the handler turns it into :func:`problem_response`,
    filling ``instance`` with the request path.
    """

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        title: str | None = None,
        type: str = BLANK,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(f"{status} {title or title_for(status)}: {detail}")
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type
        self.headers = dict(headers or {})
        self.close = close

    def response(self, instance: str = "") -> web.Response:
        return problem_response(
            self.status,
            self.detail,
            title=self.title,
            type=self.type,
            instance=instance,
            headers=self.headers,
            close=self.close,
        )
