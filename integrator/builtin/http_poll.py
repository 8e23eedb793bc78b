"""``http_poll`` source: poll an HTTP API on a schedule, page by page, incrementally.

::

    [routes.tickets.source]
    type = "http_poll"
    connection = "helpdesk"
    path = "/tickets"
    interval = "1m"
    records = "data"                 # one message per element of body.data
    id_field = "id"                  # message id: re-polled records dedupe
    pagination = { type = "cursor", cursor_field = "meta.next", param = "cursor" }
    incremental = { type = "since", field = "updated_at", param = "updated_since" }

Where a poll stands is one checkpoint, saved only after a page's records are
committed to the store: the incremental value (the cursor, or the greatest
``since``/``last_id`` value seen), the page to resume at when a poll was cut short
(``max_pages``, a restart, backpressure), and the ``ETag``/``Last-Modified`` of the
first page, sent back as ``If-None-Match``/``If-Modified-Since`` (304: nothing new).
A ``since``/``last_id`` value advances only once every page of a poll is in, so
records in any order are fetched without gaps; records at the boundary are fetched
again, which ``id_field`` plus the route's ``dedupe_window`` absorbs.

A failed poll is logged and shown on the source's health (``last_error``), and the
next one runs on schedule (later, if the API sent ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal

import anyio
import anyio.abc
import msgspec

from integrator.components import Context, Intake, Source
from integrator.delivery.retry import delivery_error_for_response
from integrator.engine.stats import ops_stats
from integrator.errors import IntegratorError
from integrator.http.client import (
    HttpClient,
    HttpResponse,
    connection_config,
    http_clients,
    public_url,
)
from integrator.http.pagination import (
    Pagination,
    PollError,
    Position,
    check_pagination,
    decode_body,
    extract_records,
    first_position,
    next_position,
)
from integrator.http.schedule import Schedule, check_schedule
from integrator.message import Message, new_id
from integrator.transforms.expressions import compile_expression
from integrator.types import REDACTOR, Duration

CHECKPOINT = "poll"


class IncrementalOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: "cursor": ``field`` is where the body holds the cursor to start the next poll from;
    #: "since" / "last_id": ``field`` is a value of each record; the greatest one is sent.
    type: Literal["cursor", "since", "last_id"]
    field: str
    #: The query parameter that carries the value.
    param: str


class HttpPollOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    connection: str | None = None
    url: str | None = None
    path: str | None = None
    method: str = "GET"
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    interval: Duration | None = None
    jitter: Duration = Duration(0)
    cron: str | None = None
    timezone: str = "UTC"
    timeout: Duration | None = None
    #: Where the array of records is in the body (an expression); the whole body otherwise.
    records: str | None = None
    #: Where each record's id is (an expression): it becomes the message id.
    id_field: str | None = None
    pagination: Pagination | None = None
    max_pages: int = 10
    incremental: IncrementalOptions | None = None
    #: Send If-None-Match / If-Modified-Since from the last poll's first page.
    conditional: bool = True

    def validate(self) -> None:
        if self.url is not None and self.path is not None:
            raise ValueError("give either 'url' or 'path', not both")
        if self.connection is None and self.url is None:
            raise ValueError("http_poll needs a 'url', or a 'connection' (and a 'path')")
        check_schedule(self.interval, self.cron, float(self.jitter), self.timezone)
        if self.max_pages < 1:
            raise ValueError("'max_pages' must be at least 1")
        for expression in (self.records, self.id_field):
            if expression is not None:
                compile_expression(expression)
        if self.incremental is not None:
            compile_expression(self.incremental.field)
        check_pagination(self.pagination, self.records is not None)


class HttpPollSource(Source):
    Options = HttpPollOptions
    description = "poll an HTTP API on a schedule (pages, records, incremental, conditional)"
    options: HttpPollOptions

    def __init__(self, options: HttpPollOptions, context: Context) -> None:
        super().__init__(options, context)
        self.connection = (
            connection_config(context, options.connection) if options.connection else None
        )
        self.schedule = Schedule(
            interval=None if options.interval is None else float(options.interval),
            cron=options.cron,
            jitter=float(options.jitter),
            timezone=options.timezone,
        )
        self.records = compile_expression(options.records) if options.records else None
        self.id_field = compile_expression(options.id_field) if options.id_field else None
        incremental = options.incremental
        self.incremental_field = compile_expression(incremental.field) if incremental else None
        self.fingerprint = _fingerprint(options)
        self.state: dict[str, Any] = {}
        self.log = context.logger
        #: The last poll's error, or None after a successful poll.
        self.last_error: str | None = None
        self.polls = 0
        self._not_before = 0.0

    # -- the schedule loop --------------------------------------------------------------------

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        clients = http_clients(self.context)
        client = await clients.acquire(self.options.connection, self.connection)
        try:
            self.state = self._restore(await intake.load_checkpoint(CHECKPOINT))
            task_status.started()
            delay = self.schedule.first_delay(time.time())
            while True:
                await anyio.sleep(max(delay, self._not_before - anyio.current_time()))
                started = anyio.current_time()
                await self.cycle(intake, client)
                delay = self.schedule.delay_after(started, anyio.current_time(), time.time())
        finally:
            await clients.release(client)

    async def cycle(self, intake: Intake, client: HttpClient) -> None:
        """One scheduled poll: skipped under backpressure; errors logged, never raised."""
        if not intake.accepting:
            self.log.info("route %s: store is full, skipping this poll", self.context.route)
            return
        self.polls += 1
        started = time.monotonic()
        try:
            new = await self.poll(intake, client)
        except IntegratorError as err:
            self._failed(err)
            return
        finally:
            ops_stats(self.context.services).observe_poll(
                self.context.route, time.monotonic() - started
            )
        self.last_error = None
        health = self._health()
        if health is not None:
            health.succeeded()
        if new:
            self.log.info("route %s: poll brought %d new message(s)", self.context.route, new)

    def _failed(self, err: IntegratorError) -> None:
        reason = REDACTOR.redact(f"{type(err).__name__}: {err}")
        self.last_error = reason
        retry_after = getattr(err, "retry_after", None)
        if retry_after:
            self._not_before = anyio.current_time() + retry_after
        health = self._health()
        if health is not None:  # shown by `status`, without failing the watchdog
            health.last_error, health.last_error_at = reason, time.time()
        self.log.error("route %s: poll failed: %s", self.context.route, reason)

    def _health(self) -> Any:
        board = getattr(
            getattr(self.context.services.get("daemon"), "services", None), "health", None
        )
        return board.component(f"{self.context.route}/source") if board is not None else None

    # -- one poll -------------------------------------------------------------------------

    async def poll(self, intake: Intake, client: HttpClient) -> int:
        """Fetch up to ``max_pages`` pages, committing each; return how many messages were new."""
        options, state = self.options, self.state
        resume = state.get("resume")
        fresh = resume is None
        if resume is None:
            position = first_position(options.pagination)
            since = best = state.get("incremental")
        else:
            position, since, best = resume["position"], resume.get("since"), resume.get("best")
        new = 0
        for page in range(1, options.max_pages + 1):
            response = await self._fetch(client, position, since, fresh and page == 1)
            if response.status == 304:
                return new
            body = decode_body(response, need_json=self._needs_json())
            records = extract_records(self.records, body)
            if records:
                accepted = await intake.submit([self._message(r, response) for r in records])
                new += sum(accepted)
            best = self._advance(body, records, best)
            if fresh and page == 1:
                state["etag"] = response.headers.get("ETag")
                state["last_modified"] = response.headers.get("Last-Modified")
            following = next_position(options.pagination, position, response, body, records)
            if following is None:
                state.pop("resume", None)
                if options.incremental is not None and options.incremental.type != "cursor":
                    state["incremental"] = best
                await self._save(intake)
                return new
            state["resume"] = {"position": following, "since": since, "best": best}
            await self._save(intake)
            position = following
            if not intake.accepting:
                break
        return new

    async def _fetch(
        self, client: HttpClient, position: Position, since: Any, conditional: bool
    ) -> HttpResponse:
        options = self.options
        headers = dict(options.headers)
        if conditional and options.conditional:
            if self.state.get("etag"):
                headers["If-None-Match"] = self.state["etag"]
            if self.state.get("last_modified"):
                headers["If-Modified-Since"] = self.state["last_modified"]
        params: dict[str, str] = {}
        url = client.resolve(options.url, options.path)
        if "url" in position:  # a Link header's URL is complete: it carries every parameter
            following = client.resolve(position["url"])
            if following.origin() != url.origin():
                raise PollError(f"the next page {public_url(following)} is on another origin")
            url = following
        else:
            params = {**options.params, **position.get("params", {})}
            incremental = options.incremental
            if incremental is not None and since is not None:
                params.setdefault(incremental.param, _text(since))
        timeout = None if options.timeout is None else float(options.timeout)
        response = await client.request(
            options.method.upper(), url, params=params, headers=headers, timeout=timeout
        )
        if response.ok or response.status == 304:
            return response
        raise _poll_error(options.method.upper(), response)

    def _needs_json(self) -> bool:
        return self.records is not None or self.options.pagination is not None

    def _message(self, record: Any, response: HttpResponse) -> Message:
        attributes = {"url": public_url(response.url), "status": response.status}
        if self.id_field is None:
            return Message(body=record, attributes=attributes)
        value = self.id_field.evaluate(record)
        if value is None or value == "":
            self.log.warning(
                "route %s: a record has no %s; it gets a new id and will not dedupe",
                self.context.route,
                self.id_field.source,
            )
            return Message(body=record, attributes=attributes, id=new_id())
        return Message(body=record, attributes=attributes, id=_text(value))

    def _advance(self, body: Any, records: list[Any], best: Any) -> Any:
        """Move the incremental value past this page; a cursor is saved at once."""
        incremental, field = self.options.incremental, self.incremental_field
        if incremental is None or field is None:
            return best
        if incremental.type == "cursor":
            cursor = field.evaluate(body)
            if cursor not in (None, ""):
                self.state["incremental"] = cursor
            return best
        for record in records:
            best = _later(best, field.evaluate(record))
        return best

    # -- the checkpoint ---------------------------------------------------------------------

    def _restore(self, saved: Any) -> dict[str, Any]:
        """The saved state; a resume point or validators from other settings are dropped."""
        if not isinstance(saved, dict):
            return {"request": self.fingerprint}
        if saved.get("request") != self.fingerprint:
            self.log.info(
                "route %s: poll settings changed, starting from page one", self.context.route
            )
            saved = {"incremental": saved.get("incremental"), "request": self.fingerprint}
        return saved

    async def _save(self, intake: Intake) -> None:
        await intake.save_checkpoint(CHECKPOINT, self.state)


def _fingerprint(options: HttpPollOptions) -> str:
    """Identifies the request a saved resume point or ETag belongs to."""
    parts = [
        options.connection,
        options.url,
        options.path,
        options.method,
        options.params,
        msgspec.to_builtins(options.pagination),
        msgspec.to_builtins(options.incremental),
    ]
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:16]


def _poll_error(method: str, response: HttpResponse) -> PollError:
    where = f"{method} {public_url(response.url)}"
    if 300 <= response.status < 400:
        location = public_url(response.headers.get("Location", "?"))
        return PollError(
            f"{where}: HTTP {response.status} to {location}; redirects are not followed, "
            "update the URL"
        )
    error = delivery_error_for_response(response.status, response.headers, time.time())
    reason = error.reason if error is not None else f"HTTP {response.status}"
    snippet = " ".join(response.text(200).split())
    detail = f": {snippet}" if snippet else ""
    return PollError(f"{where}: {reason}{detail}", retry_after=error.retry_after if error else None)


def _later(a: Any, b: Any) -> Any:
    """The later of two incremental values: numbers by value, anything else as text."""
    if b is None:
        return a
    if a is None:
        return b
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if numbers:
        return b if b > a else a
    return b if _text(b) > _text(a) else a


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()
