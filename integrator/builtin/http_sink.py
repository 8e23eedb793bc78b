"""``http`` sink: call an HTTP API, or send a signed outbound webhook, for each message.

::

    sinks = [{ type = "http", connection = "crm", method = "POST", path = "/contacts/${body.id}" }]
    sinks = [{ type = "http", url = "https://hooks.example.test/in",
               sign = { scheme = "standard-webhooks", secret = "${env:WEBHOOK_SECRET}" } }]

The body is the message body encoded as JSON, a form, or sent as it is (``raw``).
``url``, ``path``, ``headers`` and ``params`` are templates over the message. The
message id goes in ``Idempotency-Key`` (and ``webhook-id`` when signing), so a
receiver can drop the duplicates that at-least-once delivery may produce. The answer
decides what happens next (see :func:`~integrator.delivery.retry.delivery_error_for_response`):
2xx delivered; 408, 425, 429 and 5xx retried, honouring ``Retry-After`` and the
rate-limit headers; other 4xx dead-lettered.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import msgspec
import yarl

from integrator.components import Context, Sink
from integrator.delivery.retry import delivery_error_for_response
from integrator.errors import DeliveryError, Reject
from integrator.http.auth import AuthError, set_header
from integrator.http.client import (
    HttpClient,
    HttpResponse,
    RequestError,
    connection_config,
    http_clients,
)
from integrator.http.signatures.base import SecretOptions
from integrator.http.signatures.standard import decode_secret, sign_standard_webhook
from integrator.http.templates import TextTemplate, UrlTemplate
from integrator.message import Message
from integrator.types import REDACTOR, Duration

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: How long a message waits before trying again after a permanent auth refusal:
#: the provider refuses at once until a reload, so this only paces the log.
AUTH_REFUSED_RETRY = 60.0
_CONTENT_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded"}


class SignOptions(SecretOptions, kw_only=True):
    """Outbound webhook signing: ``secret`` is one secret, or a list while rotating
    (each signs, so receivers holding either key accept the request)."""

    scheme: Literal["standard-webhooks"] = "standard-webhooks"

    def validate(self) -> None:
        if not self.secrets:
            raise ValueError("sign.secret: give at least one secret")
        for secret in self.secrets:
            try:
                decode_secret(secret)
            except ValueError as err:
                raise ValueError(f"sign.{err}") from None


class HttpSinkOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: A ``[connections.NAME]``: base URL, headers, auth, TLS, rate limit.
    connection: str | None = None
    #: An absolute URL (template); with a connection it must stay on its origin.
    url: str | None = None
    #: A path appended to the connection's URL (template).
    path: str | None = None
    method: str = "POST"
    headers: dict[str, str] = {}
    #: Query parameters (templates).
    params: dict[str, str] = {}
    #: "json": the body as JSON; "form": a flat table as a form; "raw": bytes or text as is.
    body: Literal["json", "form", "raw"] = "json"
    #: Per-request timeout; the connection's by default.
    timeout: Duration | None = None
    #: Header carrying the message id ("" to send none).
    idempotency_header: str | None = "Idempotency-Key"
    sign: SignOptions | None = None
    #: Statuses that count as delivered (default: any 2xx).
    success: list[int] | None = None

    def validate(self) -> None:
        if self.url is not None and self.path is not None:
            raise ValueError("give either 'url' or 'path', not both")
        if self.connection is None and self.url is None:
            raise ValueError("the http sink needs a 'url', or a 'connection' (and a 'path')")
        if not _TOKEN.match(self.method):
            raise ValueError(f"'method' must be an HTTP method, found {self.method!r}")
        for name in (*self.headers, self.idempotency_header or "X"):
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        for code in self.success or ():
            if not 100 <= code <= 599:
                raise ValueError(f"'success' holds {code}, which is not an HTTP status")
        if self.sign is not None:
            self.sign.validate()
        _compile(self)  # template syntax errors are config errors


@dataclass
class _Templates:
    url: UrlTemplate | None
    path: UrlTemplate | None
    headers: dict[str, TextTemplate]
    params: dict[str, TextTemplate]


def _compile(options: HttpSinkOptions) -> _Templates:
    return _Templates(
        url=UrlTemplate(options.url) if options.url is not None else None,
        path=UrlTemplate(options.path) if options.path is not None else None,
        headers={k: TextTemplate(v) for k, v in options.headers.items()},
        params={k: TextTemplate(v) for k, v in options.params.items()},
    )


def _fixed_url(client: HttpClient, templates: _Templates) -> yarl.URL | None:
    """The one URL a sink without holes in ``url`` or ``path`` sends to, resolved once
    (None when it has holes, or when resolving it fails: each delivery reports that)."""
    url = templates.url.static if templates.url is not None else None
    path = templates.path.static if templates.path is not None else None
    if (templates.url is not None and url is None) or (templates.path is not None and path is None):
        return None
    try:
        resolved = client.resolve(url, path)
        client.check_origin(resolved)
    except RequestError:
        return None
    return resolved


class HttpSink(Sink):
    Options = HttpSinkOptions
    description = "send each message in an HTTP request (API call or signed webhook)"
    options: HttpSinkOptions

    def __init__(self, options: HttpSinkOptions, context: Context) -> None:
        super().__init__(options, context)
        self.method = options.method.upper()
        self.templates = _compile(options)
        self.connection = (
            connection_config(context, options.connection) if options.connection else None
        )
        self.client: HttpClient | None = None
        #: The URL of every request, when neither ``url`` nor ``path`` has holes.
        self._fixed_url: yarl.URL | None = None

    async def open(self) -> None:
        clients = http_clients(self.context)
        self.client = await clients.acquire(self.options.connection, self.connection)
        self._fixed_url = _fixed_url(self.client, self.templates)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await http_clients(self.context).release(client)

    async def deliver(self, message: Message) -> None:
        assert self.client is not None, "open() first"
        client = self.client
        try:
            url, params, headers = self._target(client, message)
        except (ValueError, RequestError) as err:  # template values that make no request
            raise Reject(f"cannot build the request: {err}") from err
        body, content_type = self._encode(message)
        if content_type and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = content_type
        if self.options.idempotency_header:
            set_header(headers, self.options.idempotency_header, message.id)
        if self.options.sign is not None:
            signed = sign_standard_webhook(
                self.options.sign.secrets, message.id, int(time.time()), body or b""
            )
            for name, value in signed.items():
                set_header(headers, name, value)
        try:
            response = await client.request(
                self.method,
                url,
                params=params,
                headers=headers,
                data=body,
                timeout=None if self.options.timeout is None else float(self.options.timeout),
            )
        except AuthError as err:
            retry_after = err.retry_after or (AUTH_REFUSED_RETRY if err.permanent else None)
            raise DeliveryError(f"auth: {err}", retry_after=retry_after) from err
        except RequestError as err:
            raise DeliveryError(str(err), retriable=err.retriable) from err
        self._judge(response)

    def _target(
        self, client: HttpClient, message: Message
    ) -> tuple[yarl.URL, dict[str, str], dict[str, str]]:
        """The URL, query parameters and headers for this message."""
        templates = self.templates
        params = {k: t.render(message, f"param {k}") for k, t in templates.params.items()}
        headers = {k: t.render(message, f"header {k}") for k, t in templates.headers.items()}
        if self._fixed_url is not None:
            return self._fixed_url, params, headers
        url = templates.url.render(message) if templates.url is not None else None
        path = templates.path.render(message) if templates.path is not None else None
        return client.resolve(url, path), params, headers

    def _encode(self, message: Message) -> tuple[bytes | None, str | None]:
        """The request body and its content type, or Reject when the body cannot fit."""
        body = message.body
        kind = self.options.body
        if body is None:  # a GET or DELETE built from the message's attributes alone
            return None, None
        if kind == "raw":
            if isinstance(body, str):
                body = body.encode()
            if not isinstance(body, bytes):
                raise Reject(f"body = 'raw' needs bytes or text, found {type(body).__name__}")
            return body, message.headers.get("content-type", "application/octet-stream")
        if isinstance(body, bytes):
            raise Reject(f"the body is bytes; use body = 'raw' rather than {kind!r}")
        if kind == "form":
            return _form(body).encode(), _CONTENT_TYPES["form"]
        try:
            return msgspec.json.encode(body), _CONTENT_TYPES["json"]
        except (TypeError, msgspec.EncodeError) as err:
            raise Reject(f"the body cannot be encoded as JSON: {err}") from err

    def _judge(self, response: HttpResponse) -> None:
        success = self.options.success
        if success is not None and response.status in success:
            return
        error = delivery_error_for_response(response.status, response.headers, time.time())
        if error is None and success is not None:
            error = DeliveryError(f"HTTP {response.status} is not in 'success'", retriable=False)
        if error is None:
            return
        snippet = REDACTOR.redact(" ".join(response.text(200).split()))
        if not snippet:
            raise error
        raise DeliveryError(
            f"{error.reason}: {snippet}", retriable=error.retriable, retry_after=error.retry_after
        )


def _form(body: Any) -> str:
    """A flat table as ``application/x-www-form-urlencoded`` (lists repeat the key)."""
    if not isinstance(body, dict):
        raise Reject(f"body = 'form' needs a table, found {type(body).__name__}")
    pairs: list[tuple[str, str]] = []
    for key, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict | list):
                raise Reject(f"body = 'form' cannot encode the nested value of {key!r}")
            text = "" if item is None else item if isinstance(item, str) else _scalar(item)
            pairs.append((str(key), text))
    return urlencode(pairs)


def _scalar(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)
