"""``webhook`` source: receive webhooks on the shared listener and verify their signatures.

Each request goes through the checks in a fixed order, and the first that fails
answers with an ``application/problem+json`` error and stores nothing::

    path, method (404, 405)  ->  size (413)  ->  content type (415)  ->  signature (401)
    ->  JSON (400)  ->  store over its high-water mark (503 + Retry-After)
    ->  commit to the store  ->  2xx

2xx is sent only once the store has committed the message, so a webhook we
acknowledged survives a crash. Replays: the message id is the sender's webhook id
(or the ``id_header``), and with the route's ``dedupe_window`` set, an id seen
within the window is acknowledged again without being processed twice. Schemes
without a signed timestamp (GitHub, Shopify) rely on that window alone.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from typing import Any

import anyio
import anyio.abc
import msgspec
from aiohttp import hdrs, web

from integrator.components import Context, Intake, Source
from integrator.config import WebhooksConfig, convert
from integrator.errors import StoreError
from integrator.hookspecs import hookimpl
from integrator.http.problem import HTTPProblem
from integrator.http.server import WebhookServer, retry_after
from integrator.http.signatures import SCHEMES, SignatureError, SignatureScheme
from integrator.message import Message, new_id
from integrator.types import Size

log = logging.getLogger("integrator.webhooks")

#: Headers about the connection, not the message (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Credentials a sender (or a proxy in front of us) may add: never stored with the message.
PRIVATE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
#: How many distinct Content-Type values a receiver remembers its verdict on.
_SEEN_TYPES = 64


class WebhookOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The URL path on the shared ``[webhooks]`` listener, e.g. ``/hooks/github``.
    path: str
    #: HTTP methods accepted (others get 405).
    methods: list[str] = msgspec.field(default_factory=lambda: ["POST"])
    #: Signature check: ``{ scheme = "github", secret = "…" }`` and the scheme's options.
    verify: dict[str, Any] | None = None
    #: Accepted media types (``*`` wildcards allowed); an empty list accepts any (415).
    content_types: list[str] = msgspec.field(default_factory=lambda: ["application/json"])
    #: Decode the body as JSON (400 when malformed); otherwise the body stays raw bytes.
    require_json: bool = True
    #: The largest body accepted (413); defaults to ``[webhooks] max_body``.
    max_body: Size | None = None
    #: The status of the answer once the message is stored.
    response_status: int = 202
    #: A request header holding the sender's delivery id, when the scheme does not give one.
    id_header: str | None = None

    def validate(self, registry: Any = None) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"path: must start with '/', found {self.path!r}")
        if not self.methods or not all(m.isascii() and m.isalpha() for m in self.methods):
            raise ValueError(
                f"methods: expected HTTP methods such as ['POST'], found {self.methods}"
            )
        if not 200 <= self.response_status <= 299:
            raise ValueError(
                f"response_status: expected a 2xx status, found {self.response_status}"
            )
        if self.verify is not None:
            name = self.verify.get("scheme")
            if not isinstance(name, str) or not name:
                raise ValueError(
                    "verify: needs a 'scheme', for example 'github' or 'standard-webhooks'"
                )
            # Checked now, so `integrator check` catches a misspelt scheme or a bad secret.
            registered = registry.get("signature", name) if registry is not None else None
            if registered is not None:
                scheme_options(self.verify, registered.component)
            elif name in SCHEMES:
                scheme_options(self.verify, SCHEMES[name])
            elif registry is not None:
                known = ", ".join(registry.names("signature"))
                raise ValueError(
                    f"verify.scheme: unknown signature scheme {name!r}; known schemes: {known}"
                )


def scheme_options(verify: dict[str, Any], scheme: type[SignatureScheme]) -> Any:
    """The scheme's own Options from a ``verify`` table; ValueError naming the key if invalid."""
    table = {key: value for key, value in verify.items() if key != "scheme"}
    try:
        return convert(table, scheme.Options)
    except msgspec.ValidationError as err:
        raise ValueError(f"verify: {_explain(str(err))}") from None


_MSGSPEC_PROBLEM = re.compile(r"^Object (contains unknown|missing required) field `([^`]+)`")


def _explain(text: str) -> str:
    """msgspec's wording in the config loader's words ("unknown key 'x'")."""
    match = _MSGSPEC_PROBLEM.match(text)
    if match is None:
        return text
    kind = "unknown key" if match[1] == "contains unknown" else "missing required key"
    return f"{kind} {match[2]!r}"


class WebhookSource(Source):
    Options = WebhookOptions
    description = "receive webhooks on the shared listener, verify signatures"
    options: WebhookOptions

    def __init__(self, options: WebhookOptions, context: Context) -> None:
        super().__init__(options, context)
        config = context.config
        webhooks = config.webhooks if config is not None else WebhooksConfig()
        route = config.routes.get(context.route) if config is not None else None
        self.scheme = self._build_scheme(options.verify)
        self.methods = [method.upper() for method in options.methods]
        self.content_types = [pattern.lower() for pattern in options.content_types]
        #: The accepted types without wildcards (a set lookup) and the patterns with them.
        self.exact_types = frozenset(p for p in self.content_types if not _is_pattern(p))
        self.type_patterns = [p for p in self.content_types if _is_pattern(p)]
        self.max_body = int(options.max_body if options.max_body is not None else webhooks.max_body)
        self.read_timeout = float(webhooks.read_timeout)
        self.retry_after = retry_after(webhooks.retry_after)
        self.id_header = options.id_header.lower() if options.id_header else None
        if (self.scheme or self.id_header) and (route is None or route.dedupe_window is None):
            log.warning(
                "route %s: redelivered webhooks will be processed again: set dedupe_window "
                '(for example "24h") on the route to acknowledge a repeated webhook id without '
                "processing it twice",
                context.route,
            )

    def _build_scheme(self, verify: dict[str, Any] | None) -> SignatureScheme | None:
        if verify is None:
            return None
        name = verify.get("scheme")
        daemon = self.context.services.get("daemon")
        registry = getattr(daemon, "registry", None)
        if registry is not None:
            registered = registry.get("signature", name)
            scheme = registered.component if registered is not None else None
            hint = registry.missing_hint("signature", name) if scheme is None else ""
        else:  # built outside a daemon (a unit test): the built-in schemes only
            scheme = SCHEMES.get(name) if isinstance(name, str) else None
            hint = f"known signature schemes: {', '.join(sorted(SCHEMES))}"
        if scheme is None:
            raise ValueError(f"verify.scheme: unknown signature scheme {name!r}: {hint}")
        built: SignatureScheme = scheme(scheme_options(verify, scheme))
        return built

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        server: WebhookServer | None = self.context.services.get("webhooks")
        if server is None:
            raise RuntimeError(
                "the webhook listener is not running: it starts with the daemon when a route "
                "uses a webhook source; restart the daemon to add the first webhook route"
            )
        receiver = _Receiver(self, intake)
        server.add(self.options.path, self.methods, receiver.handle, owner=self.context.route)
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            server.remove(self.options.path, receiver.handle)


class _Receiver:
    """Answers the requests of one running webhook source."""

    def __init__(self, source: WebhookSource, intake: Intake) -> None:
        self.source = source
        self.intake = intake
        self.route = source.context.route
        #: Content-Type header value -> accepted, so the same header is parsed once.
        self._accepted_types: dict[str | None, bool] = {}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Check, store, then answer 2xx; any failed check raises its HTTPProblem."""
        source = self.source
        declared = request.content_length
        if declared is not None and declared > source.max_body:
            raise self._too_large()
        if source.content_types and not self._accepted_types.get(
            request.headers.get(hdrs.CONTENT_TYPE)
        ):
            self._check_content_type(request)
        content = request.content
        if content.is_eof():
            # The whole body is already buffered (the common case for small events):
            # take it without a timer, which costs more than the read itself.
            body = content.read_nowait()
            if len(body) > source.max_body:
                raise self._too_large()
        else:
            body = await self._read_body(request)
        headers = _headers(request)
        scheme = source.scheme
        webhook_id = None if scheme is None else self._verify(scheme, request, headers, body)
        payload: Any = body
        json_body = None
        if source.options.require_json:
            try:
                payload = msgspec.json.decode(body)
            except msgspec.DecodeError as err:
                raise HTTPProblem(400, f"the body is not valid JSON: {err}") from None
            json_body = body  # the store keeps the text rather than encoding it again
        if not self.intake.accepting:
            raise self._unavailable("the receiver is over capacity; retry later")
        if source.id_header:
            webhook_id = headers.get(source.id_header) or webhook_id
        if not PRIVATE_HEADERS.isdisjoint(headers):
            headers = {k: v for k, v in headers.items() if k not in PRIVATE_HEADERS}
        message = Message(
            body=payload,
            headers=headers,
            attributes={
                "method": request.method,
                "path": request.path,
                # Parse the query only when there is one.
                "query": _query(request) if "?" in request.raw_path else {},
                "remote": request.remote or "",
            },
            id=webhook_id or new_id(),
        )
        try:
            (new,) = await self.intake.submit([message], json_bodies=[json_body])
        except StoreError as err:
            log.error("route %s: webhook not stored, answered 503: %s", self.route, err)
            raise self._unavailable("the webhook could not be stored; retry later") from None
        if not new:
            log.debug(
                "route %s: webhook %s seen before: acknowledged again", self.route, message.id
            )
        return web.Response(status=source.options.response_status)

    def _verify(
        self,
        scheme: SignatureScheme,
        request: web.BaseRequest,
        headers: dict[str, str],
        body: bytes,
    ) -> str | None:
        """Check the signature under the route's scheme; the sender's webhook id, if any."""
        try:
            return scheme.verify(headers, body, now=time.time()).webhook_id
        except SignatureError as err:
            log.info(
                "route %s: refused webhook from %s: %s", self.route, request.remote, err.reason
            )
            raise HTTPProblem(
                401,
                f"signature verification failed: {err.reason}",
                headers={"WWW-Authenticate": "Signature"},
            ) from None

    def _unavailable(self, detail: str) -> HTTPProblem:
        return HTTPProblem(503, detail, headers={"Retry-After": self.source.retry_after})

    def _check_content_type(self, request: web.BaseRequest) -> None:
        """Judge a Content-Type value not yet known to be accepted (415 if refused).

        aiohttp parses Content-Type with the email package (microseconds per request);
        senders repeat the same few values, so each value is judged once.
        """
        source = self.source
        raw = request.headers.get(hdrs.CONTENT_TYPE)
        accepted = self._accepted_types.get(raw)
        if accepted is None:
            media_type = request.content_type.lower()
            accepted = media_type in source.exact_types or any(
                fnmatch.fnmatchcase(media_type, p) for p in source.type_patterns
            )
            if len(self._accepted_types) >= _SEEN_TYPES:
                self._accepted_types.clear()
            self._accepted_types[raw] = accepted
        if not accepted:
            media_type = request.content_type.lower()
            patterns = source.content_types
            raise HTTPProblem(
                415,
                f"content type {media_type!r} is not accepted here; send {', '.join(patterns)}",
                headers={"Accept-Post": ", ".join(patterns)},
            )

    def _too_large(self) -> HTTPProblem:
        limit = self.source.max_body
        return HTTPProblem(413, f"the body is larger than {limit} bytes", close=True)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """A body still arriving, counted as it comes (a chunked body declares no length)."""
        limit = self.source.max_body
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.source.read_timeout):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise self._too_large()
                    chunks.append(chunk)
        except TimeoutError:
            raise HTTPProblem(408, "the body took too long to arrive", close=True) from None
        return b"".join(chunks)


def _headers(request: web.BaseRequest) -> dict[str, str]:
    """Lower-cased request headers without hop-by-hop ones; repeats joined with ", "."""
    received = request.headers
    headers = {name.lower(): value for name, value in received.items()}
    if len(headers) != len(received):  # a name repeated: its values joined, in order
        headers = {}
        for name, value in received.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if not HOP_BY_HOP.isdisjoint(headers):
        for key in HOP_BY_HOP.intersection(headers):
            del headers[key]
    return headers


def _query(request: web.BaseRequest) -> dict[str, Any]:
    """Query parameters: a string each, a list for a repeated one."""
    query: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        query[key] = values[0] if len(values) == 1 else list(values)
    return query


def _is_pattern(media_type: str) -> bool:
    """Whether fnmatch would treat it as a pattern rather than a plain string."""
    return any(c in media_type for c in "*?[")


@hookimpl
def integrator_sources(register: Any) -> None:
    register("webhook", WebhookSource)
