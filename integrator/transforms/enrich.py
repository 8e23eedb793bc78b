"""``enrich``: look data up (over HTTP, or in a table from the config) and add it to the message.

HTTP lookups go through a connection's client (:mod:`integrator.http.client`): its
base URL, auth, TLS and rate limit. Answers are kept in an LRU cache that follows
HTTP's caching headers (:mod:`integrator.transforms.lookup_cache`).

A lookup that fails for a reason that may pass (no answer, 429, 5xx) raises a
retriable :class:`~integrator.errors.DeliveryError`, so the route's retry policy
applies; one the remote refuses for good (another 4xx) rejects the message.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from integrator.components import Context, Middleware, Next
from integrator.delivery.retry import delivery_error_for_response
from integrator.errors import DeliveryError, Reject
from integrator.http.auth import AuthError, set_header
from integrator.http.client import (
    HttpClient,
    HttpResponse,
    RequestError,
    connection_config,
    http_clients,
    public_url,
)
from integrator.http.templates import TextTemplate, UrlTemplate
from integrator.message import Message
from integrator.transforms.expressions import ExpressionError, compile_expression
from integrator.transforms.lookup_cache import CachedAnswer, LookupCache, freshness
from integrator.transforms.paths import FieldPath, MessageEditor, PathError
from integrator.types import REDACTOR, Duration

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
AUTH_REFUSED_RETRY = 60.0


class CacheOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: How many answers are kept (least recently used go first); 0 turns the cache off.
    size: int = 1000
    #: How long an answer is reused at most (a shorter ``max-age`` wins).
    ttl: Duration = Duration(300)


class EnrichOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: "http": ask an HTTP API; "table": look the key up in ``table``.
    lookup: Literal["http", "table"]
    #: The path the looked-up value is written to, e.g. ``body.customer``.
    target: str
    #: A ``[connections.NAME]``: base URL, headers, auth, TLS, rate limit (http).
    connection: str | None = None
    #: An absolute URL, a template (http).
    url: str | None = None
    #: A path appended to the connection's URL, a template (http).
    path: str | None = None
    method: str = "GET"
    #: Request headers, templates (http).
    headers: dict[str, str] = {}
    #: Per-request timeout; the connection's by default (http).
    timeout: Duration | None = None
    cache: CacheOptions = msgspec.field(default_factory=CacheOptions)
    #: Key = value to look up in (table).
    table: dict[str, Any] | None = None
    #: A JMESPath expression giving the key to look up (table).
    key: str | None = None
    #: When nothing is found (HTTP 404, a key not in the table): "keep" the message
    #: as it is, write "null" at the target, or "reject" the message.
    on_missing: Literal["keep", "null", "reject"] = "keep"

    def validate(self) -> None:
        problems: list[str] = []
        try:
            FieldPath.parse(self.target)
        except PathError as err:
            problems.append(f"target: {err}")
        if self.cache.size < 0:
            problems.append("cache.size: cannot be negative (0 turns the cache off)")
        if self.lookup == "table":
            problems += self._table_problems()
        else:
            problems += self._http_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _table_problems(self) -> list[str]:
        problems = [
            f"{name}: only for lookup = 'http'"
            for name in ("connection", "url", "path", "timeout")
            if getattr(self, name) is not None
        ]
        if self.headers:
            problems.append("headers: only for lookup = 'http'")
        if self.table is None:
            problems.append("table: give the table to look keys up in")
        if self.key is None:
            problems.append("key: give the expression whose value is looked up, e.g. 'body.sku'")
        else:
            try:
                compile_expression(self.key)
            except ExpressionError as err:
                problems.append(f"key: {err}")
        return problems

    def _http_problems(self) -> list[str]:
        problems = [
            f"{name}: only for lookup = 'table'"
            for name in ("table", "key")
            if getattr(self, name) is not None
        ]
        if self.url is not None and self.path is not None:
            problems.append("give either 'url' or 'path', not both")
        elif self.url is None and self.connection is None:
            problems.append("lookup = 'http' needs a 'url', or a 'connection' (and a 'path')")
        if not _TOKEN.match(self.method):
            problems.append(f"method: must be an HTTP method, found {self.method!r}")
        problems += [
            f"headers: {n!r} is not a header name" for n in self.headers if not _TOKEN.match(n)
        ]
        try:
            _Request.compile(self)
        except ValueError as err:
            problems.append(str(err))
        return problems


# -- the middleware --------------------------------------------------------------------------


@dataclass
class _Request:
    url: UrlTemplate | None
    path: UrlTemplate | None
    headers: dict[str, TextTemplate]

    @classmethod
    def compile(cls, options: EnrichOptions) -> _Request:
        def url(option: str, text: str | None) -> UrlTemplate | None:
            try:
                return None if text is None else UrlTemplate(text)
            except ValueError as err:
                raise ValueError(f"{option}: {err}") from err

        headers = {}
        for name, text in options.headers.items():
            try:
                headers[name] = TextTemplate(text)
            except ValueError as err:
                raise ValueError(f"headers.{name}: {err}") from err
        return cls(url("url", options.url), url("path", options.path), headers)


class EnrichMiddleware(Middleware):
    """Write a looked-up value at ``target``; what a missing one does is ``on_missing``."""

    Options = EnrichOptions
    description = "look data up over HTTP or in a table and add it to the message"
    options: EnrichOptions

    def __init__(self, options: EnrichOptions, context: Context) -> None:
        super().__init__(options, context)
        self.target = FieldPath.parse(options.target)
        self.method = options.method.upper()
        self.request = _Request.compile(options)
        self.key = compile_expression(options.key) if options.key is not None else None
        self.cache = LookupCache(options.cache.size, float(options.cache.ttl))
        self.connection = (
            connection_config(context, options.connection) if options.connection else None
        )
        self.client: HttpClient | None = None
        given = [*options.headers, *(self.connection.headers if self.connection else ())]
        accept = any(name.lower() == "accept" for name in given)
        self.default_headers = {} if accept else {"Accept": "application/json"}

    async def open(self) -> None:
        if self.options.lookup == "http":
            clients = http_clients(self.context)
            self.client = await clients.acquire(self.options.connection, self.connection)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await http_clients(self.context).release(client)

    async def __call__(self, message: Message, call_next: Next) -> None:
        if self.options.lookup == "table":
            found, value, what = self._from_table(message)
        else:
            found, value, what = await self._from_http(message)
        if not found:
            if self.options.on_missing == "keep":
                await call_next(message)
                return
            if self.options.on_missing == "reject":
                raise Reject(f"enrich: {what} found nothing")
        editor = MessageEditor(message)
        try:
            editor.set(self.target, value)
        except PathError as err:
            raise Reject(f"enrich: target: {err}") from err
        await call_next(editor.result())

    # -- table -------------------------------------------------------------------------------

    def _from_table(self, message: Message) -> tuple[bool, Any, str]:
        assert self.key is not None and self.options.table is not None
        try:
            value = self.key.evaluate(message)
        except ExpressionError as err:
            raise Reject(f"enrich: key: {err}") from err
        text = _table_key(value)
        what = f"the table lookup of {text!r}"
        if text is None or text not in self.options.table:
            return False, None, what
        return True, copy.deepcopy(self.options.table[text]), what

    # -- http --------------------------------------------------------------------------------

    async def _from_http(self, message: Message) -> tuple[bool, Any, str]:
        assert self.client is not None, "open() first"
        try:
            url = self.client.resolve(
                self.request.url.render(message) if self.request.url else None,
                self.request.path.render(message) if self.request.path else None,
            )
            headers = dict(self.default_headers)
            for name, template in self.request.headers.items():
                set_header(headers, name, template.render(message, f"header {name}"))
        except (ValueError, RequestError) as err:
            raise Reject(f"enrich: cannot build the request: {err}") from err
        where = f"{self.method} {public_url(url)}"
        key = f"{self.method} {url} {sorted(headers.items())}"
        cached = self.cache.get(key)
        if cached is not None and cached.fresh_until > time.monotonic():
            self.cache.hits += 1
            return cached.found, cached.value(), where
        self.cache.misses += 1
        conditional = cached.validators() if cached is not None else {}
        response = await self._send(url, {**headers, **conditional}, where)
        if response.status == 304 and cached is not None:
            self.cache.revalidated += 1
            self._refresh(key, cached, response)
            return cached.found, cached.value(), where
        answer = self._answer(response, where)
        self.cache.put(key, answer)
        return answer.found, answer.value(), where

    async def _send(self, url: Any, headers: dict[str, str], where: str) -> HttpResponse:
        assert self.client is not None
        timeout = self.options.timeout
        try:
            return await self.client.request(
                self.method,
                url,
                headers=headers,
                timeout=None if timeout is None else float(timeout),
            )
        except AuthError as err:  # a refusal for good waits for a reload: pace the retries
            retry_after = err.retry_after or (AUTH_REFUSED_RETRY if err.permanent else None)
            raise DeliveryError(f"enrich: {where}: auth: {err}", retry_after=retry_after) from err
        except RequestError as err:
            raise DeliveryError(f"enrich: {err}", retriable=err.retriable) from err

    def _answer(self, response: HttpResponse, where: str) -> CachedAnswer:
        """The answer to keep, or the error that the status calls for."""
        status = response.status
        if not (response.ok or status == 404):
            raise _error(response, where)
        content_type = response.headers.get("Content-Type", "")
        is_text = content_type.startswith("text/")
        if response.ok and response.body and not is_text:
            try:
                msgspec.json.decode(response.body)
            except msgspec.DecodeError as err:
                raise Reject(f"enrich: {where}: the answer is not JSON: {err}") from err
        lifetime = freshness(response.headers, self.cache.ttl, time.time())
        return CachedAnswer(
            found=response.ok,
            body=response.body if response.ok else b"",
            is_text=is_text,
            lifetime=-1.0 if lifetime is None else lifetime,
            fresh_until=time.monotonic() + (lifetime or 0.0),
            etag=response.headers.get("ETag") if lifetime is not None else None,
            last_modified=response.headers.get("Last-Modified") if lifetime is not None else None,
        )

    def _refresh(self, key: str, cached: CachedAnswer, response: HttpResponse) -> None:
        """A 304: the cached answer is good again, for as long as the 304 (or it) says."""
        speaks = "Cache-Control" in response.headers or "Expires" in response.headers
        lifetime = freshness(response.headers, self.cache.ttl, time.time()) if speaks else None
        if speaks and lifetime is None:
            self.cache.drop(key)
            return
        cached.lifetime = cached.lifetime if lifetime is None else lifetime
        cached.fresh_until = time.monotonic() + max(cached.lifetime, 0.0)
        cached.etag = response.headers.get("ETag", cached.etag)
        cached.last_modified = response.headers.get("Last-Modified", cached.last_modified)
        self.cache.put(key, cached)


def _error(response: HttpResponse, where: str) -> DeliveryError:
    """429 and 5xx (and no answer) may pass: retry; other statuses will not: reject."""
    error = delivery_error_for_response(response.status, response.headers, time.time())
    reason = error.reason if error is not None else f"HTTP {response.status}"
    snippet = " ".join(response.text(200).split())
    if snippet:
        reason = f"{reason}: {REDACTOR.redact(snippet)}"
    if error is None:  # a 1xx or 3xx: the client follows no redirects
        return Reject(f"enrich: {where}: unexpected {reason}")
    if error.retriable:
        return DeliveryError(f"enrich: {where}: {reason}", retry_after=error.retry_after)
    return Reject(f"enrich: {where}: {reason}")


def _table_key(value: Any) -> str | None:
    """How a key value finds a table entry (TOML keys are text): ``7`` finds ``"7"``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return msgspec.json.encode(value).decode()
