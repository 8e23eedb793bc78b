"""Pagination and record extraction for HTTP pollers.

A poll walks pages: each strategy says what to ask for first and, from a page's
answer, where the next page is, as a :data:`Position` (plain data, so that it can
be saved in a checkpoint and a restarted poll resumes at the page it stopped at):

- ``link``: the ``Link: <…>; rel="next"`` header (RFC 8288), as GitHub does;
- ``cursor``: a field of the body holds the next page's cursor, sent back as a parameter;
- ``page``: a page number parameter, counted up from ``start``;
- ``offset``: an offset parameter, advanced by ``limit``.

Every strategy stops on an empty page, so a misbehaving API cannot loop forever
(and ``max_pages`` bounds a poll anyway).
"""

from __future__ import annotations

from typing import Any

import msgspec

from integrator.errors import IntegratorError
from integrator.http.client import HttpResponse
from integrator.transforms.expressions import Expression, compile_expression

#: Where the next page is: ``{"url": …}`` (a full URL from a Link header) or
#: ``{"params": {…}}`` (parameters added to the poll's own request).
Position = dict[str, Any]


class PollError(IntegratorError):
    """Raised when a poll cannot go on: an error answer, a body of the wrong shape.

    ``retry_after`` is the delay in seconds the remote asked for, if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Strategy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    pass


class LinkPagination(_Strategy, tag="link"):
    pass


class CursorPagination(_Strategy, tag="cursor"):
    #: Where the next cursor is in the body (an expression: ``meta.next``).
    cursor_field: str = "next_cursor"
    param: str = "cursor"


class PagePagination(_Strategy, tag="page"):
    param: str = "page"
    start: int = 1
    #: Page size parameter and value; a shorter page is then the last one.
    size_param: str | None = None
    size: int | None = None


class OffsetPagination(_Strategy, tag="offset"):
    param: str = "offset"
    limit_param: str = "limit"
    limit: int = 100
    start: int = 0


Pagination = LinkPagination | CursorPagination | PagePagination | OffsetPagination


def check_pagination(pagination: Pagination | None, has_records: bool) -> None:
    """Options checks (ValueError) for the config loader."""
    if isinstance(pagination, CursorPagination):
        compile_expression(pagination.cursor_field)
    if isinstance(pagination, PagePagination | OffsetPagination) and not has_records:
        raise ValueError(f"{pagination.__class__.__name__}: set 'records' to count each page")
    if isinstance(pagination, PagePagination) and (pagination.size_param is None) != (
        pagination.size is None
    ):
        raise ValueError("pagination: give both 'size_param' and 'size', or neither")
    if (
        isinstance(pagination, PagePagination)
        and pagination.size is not None
        and pagination.size < 1
    ):
        raise ValueError("pagination.size must be at least 1")
    if isinstance(pagination, OffsetPagination) and pagination.limit < 1:
        raise ValueError("pagination.limit must be at least 1")


def first_position(pagination: Pagination | None) -> Position:
    """What the first page of a poll asks for."""
    if isinstance(pagination, PagePagination):
        params = {pagination.param: str(pagination.start)}
        if pagination.size_param is not None:
            params[pagination.size_param] = str(pagination.size)
        return {"params": params}
    if isinstance(pagination, OffsetPagination):
        return {
            "params": {
                pagination.param: str(pagination.start),
                pagination.limit_param: str(pagination.limit),
            }
        }
    return {"params": {}}


def next_position(
    pagination: Pagination | None,
    position: Position,
    response: HttpResponse,
    body: Any,
    records: list[Any],
) -> Position | None:
    """Where the page after ``position`` is, or None when this page was the last."""
    if pagination is None or not records:
        return None
    params: dict[str, str] = dict(position.get("params", {}))
    if isinstance(pagination, LinkPagination):
        following = response.links.get("next")
        return {"url": following} if following else None
    if isinstance(pagination, CursorPagination):
        cursor = compile_expression(pagination.cursor_field).evaluate(body)
        if cursor in (None, "", False) or str(cursor) == params.get(pagination.param):
            return None
        return {"params": {**params, pagination.param: str(cursor)}}
    if isinstance(pagination, PagePagination):
        if pagination.size is not None and len(records) < pagination.size:
            return None
        page = int(params.get(pagination.param, pagination.start))
        return {"params": {**params, pagination.param: str(page + 1)}}
    if len(records) < pagination.limit:
        return None
    offset = int(params.get(pagination.param, pagination.start))
    return {"params": {**params, pagination.param: str(offset + pagination.limit)}}


def extract_records(expression: Expression | None, body: Any) -> list[Any]:
    """The records of a page: the array at ``records``, or the whole body as one."""
    if expression is None:
        return [body]
    found = expression.evaluate(body)
    if found is None:
        return []
    if not isinstance(found, list):
        kind = type(found).__name__
        raise PollError(f"'records' ({expression.source}) is a {kind} in the answer, not an array")
    return found


def decode_body(response: HttpResponse, *, need_json: bool) -> Any:
    """The page's body: JSON when it says so (or must be), else text."""
    content_type = response.headers.get("Content-Type", "").lower()
    if "json" in content_type or need_json:
        try:
            return response.json()
        except msgspec.DecodeError as err:
            raise PollError(f"the answer from {response!r} is not valid JSON: {err}") from err
    return response.text()
