"""TOML configuration: read with tomllib, resolve secret references, validate with msgspec.

Validation is done section by section and component by component so that one run
of ``integrator check`` reports every problem, each on one line naming the file,
the TOML line, the route, the full key path, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import yarl

from integrator.errors import ConfigError
from integrator.plugins import ComponentUnavailable, Registry
from integrator.types import REDACTOR, Duration, Secret, Size

CONFIG_ENV = "INTEGRATOR_CONFIG"
SYSTEM_CONFIG = Path("/etc/integrator/integrator.toml")
LOCAL_CONFIG = Path("config/integrator.toml")
ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# -- the schema -----------------------------------------------------------------------------


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class DaemonConfig(_Strict):
    #: Where the store keeps inbox, outbox, DLQ and checkpoints. Relative paths are
    #: relative to the working directory; under systemd, $STATE_DIRECTORY wins.
    state_dir: str = "var"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["human", "json"] = "human"
    shutdown_timeout: Duration = Duration(30)


class StoreConfig(_Strict):
    type: str = "sqlite"
    #: Sources pause when this many messages wait in the store, resume below low_water.
    high_water: int = 100_000
    low_water: int = 80_000
    #: Options of the chosen backend, validated by its own Options struct.
    options: dict[str, Any] = {}


class ListenerConfig(_Strict):
    listen: str = "127.0.0.1:8080"


class WebhooksConfig(_Strict):
    """The one HTTP listener that serves every webhook route (see docs/webhooks.md)."""

    #: ``host:port`` (``[::1]:8080`` for IPv6; port 0 picks a free one); ``""`` for no
    #: TCP listener, when ``unix_socket`` is set.
    listen: str = "127.0.0.1:8080"
    #: Also listen on this Unix socket path (for a reverse proxy on the same host).
    unix_socket: str | None = None
    #: PEM certificate chain and private key: serve HTTPS. Both or neither.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The largest body a route accepts unless it sets its own ``max_body`` (413).
    max_body: Size = Size(1024 * 1024)
    #: How long a sender may take to send the body before it gets 408.
    read_timeout: Duration = Duration(30)
    #: ``Retry-After`` of the 503 answered while the store is over its high-water mark.
    retry_after: Duration = Duration(10)

    def __post_init__(self) -> None:
        from integrator.http.server import parse_listen

        if self.listen:
            parse_listen(self.listen)
        elif not self.unix_socket:
            raise ValueError("listen: empty, and no unix_socket: the listener would serve nothing")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both (HTTPS) or neither (HTTP)")


class AdminConfig(_Strict):
    """The admin listener: health, readiness, metrics, the admin API and the status page."""

    #: ``false`` runs no admin listener at all (no health checks, no metrics).
    enabled: bool = True
    #: ``host:port`` (``[::1]:8626`` for IPv6; port 0 picks a free one). Beyond loopback
    #: it needs a ``token``.
    listen: str = "127.0.0.1:8626"
    #: Bearer token for the admin API (and ``/metrics`` with ``metrics_auth``).
    token: Secret | None = None
    #: Ask for the token on ``/metrics`` too (Prometheus ``authorization`` setting).
    metrics_auth: bool = False

    def __post_init__(self) -> None:
        from integrator.admin.security import check_exposure

        check_exposure(self)


class RateLimitConfig(_Strict):
    requests: float
    per: Duration = Duration(1)


class TLSConfig(_Strict):
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class ConnectionConfig(_Strict):
    """A reusable endpoint: pollers, sinks and lookups refer to it by name."""

    url: str = ""
    headers: dict[str, str] = {}
    auth: dict[str, Any] | None = None
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    rate_limit: RateLimitConfig | None = None
    max_concurrency: int | None = None
    timeout: Duration = Duration(30)

    def __post_init__(self) -> None:
        # Not echoed: a URL may carry credentials.
        if self.url and not _is_absolute_url(self.url):
            raise ValueError(
                "url: expected an absolute URL with a scheme and a host, "
                "such as https://api.example.com/v1"
            )


def _is_absolute_url(text: str) -> bool:
    try:
        url = yarl.URL(text)
    except ValueError:
        return False
    return url.is_absolute() and bool(url.host)


class RetryConfig(_Strict):
    max_attempts: int = 10
    max_age: Duration | None = None
    initial: Duration = Duration(1)
    max: Duration = Duration(300)
    multiplier: float = 2.0


class BatchConfig(_Strict):
    """Deliver a sink's messages in groups: one call per batch, body = array of bodies."""

    #: At most this many messages in one batch.
    max_count: int = 100
    #: At most about this many bytes of JSON-encoded bodies in one batch.
    max_bytes: Size = Size(1024 * 1024)
    #: Send a partial batch once its first message has waited this long.
    max_wait: Duration = Duration(1)

    def __post_init__(self) -> None:
        if self.max_count < 1:
            raise ValueError("max_count must be at least 1")


class BreakerConfig(_Strict):
    failure_threshold: int = 5
    cooldown: Duration = Duration(30)
    half_open_max: int = 1


class ComponentSpec(msgspec.Struct, kw_only=True):
    """A source, middleware or sink: its type, and its options once validated."""

    type: str
    options: Any = None
    #: Sinks only: the name of its delivery records; defaults to the type.
    name: str = ""
    #: Sinks only: the per-sink middleware chain (rate limit, breaker, timeout…).
    middleware: list[ComponentSpec] = []
    retry: RetryConfig | None = None
    breaker: BreakerConfig | None = None
    #: Sinks only: how many deliveries may be in flight at once.
    concurrency: int = 8
    #: Sinks only: another sink of the route that takes over a delivery when this
    #: one's breaker is open or its attempts are exhausted.
    fallback: str | None = None
    #: Sinks only: group deliveries into batches.
    batch: BatchConfig | None = None
    raw: dict[str, Any] = {}


AlertCondition = Literal["breaker_open", "dlq_size", "route_failing", "token_refresh_failing"]


class AlertRule(_Strict):
    """One ``[[alerts.rules]]`` entry: a condition, and how often to say it holds."""

    when: AlertCondition
    #: Names the alert in messages and in its rate limit; ``when`` (plus the route) by default.
    name: str = ""
    #: Watch this route only; every route by default.
    route: str | None = None
    #: ``dlq_size``: fire when a route holds more than this many dead letters.
    threshold: int = 0
    #: How long the condition must hold before the alert fires.
    for_: Duration = msgspec.field(default=Duration(0), name="for")
    #: While still firing, send the alert again this often (``0``: never again).
    repeat: Duration = Duration(3600)


class AlertsConfig(_Strict):
    """``[alerts]``: rules evaluated from the daemon's state, sent through one sink."""

    #: Any sink type, with its options (``{ type = "http", url = "…" }``).
    sink: dict[str, Any] | None = None
    #: How often the rules are evaluated.
    interval: Duration = Duration(5)
    #: Attempts to deliver one alert before giving up (and logging it).
    attempts: int = 3
    #: Delay before the second attempt; doubles for each later one.
    backoff: Duration = Duration(1)
    rules: list[AlertRule] = []


class RouteConfig(msgspec.Struct, kw_only=True):
    name: str
    source: ComponentSpec
    middleware: list[ComponentSpec]
    sinks: list[ComponentSpec]
    retry: RetryConfig
    enabled: bool = True
    description: str = ""
    dedupe_window: Duration | None = None
    tests: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}


class _RouteTable(_Strict):
    """The keys a ``[routes.NAME]`` table may have (components are checked separately)."""

    source: dict[str, Any]
    sinks: list[dict[str, Any]]
    middleware: list[dict[str, Any]] = []
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    enabled: bool = True
    description: str = ""
    dedupe_window: Duration | None = None
    tests: list[dict[str, Any]] = []


_SINK_KEYS = {
    "type",
    "name",
    "middleware",
    "retry",
    "breaker",
    "concurrency",
    "fallback",
    "batch",
}
_COMPONENT_KEYS = {"type"}


@dataclass
class Config:
    path: Path
    version: int = 1
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    connections: dict[str, ConnectionConfig] = field(default_factory=dict)
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    #: ``[alerts] sink``, validated like a route's sink.
    alert_sink: ComponentSpec | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        env = os.environ.get("STATE_DIRECTORY")
        if env and self.daemon.state_dir == "var":
            return Path(env.split(":")[0])
        return Path(self.daemon.state_dir)


_SECTIONS: dict[str, type] = {
    "daemon": DaemonConfig,
    "store": StoreConfig,
    "webhooks": WebhooksConfig,
    "admin": AdminConfig,
}
_TOP_LEVEL = {"version", "connections", "routes", "alerts", *_SECTIONS}
SUPPORTED_VERSIONS = (1,)


# -- finding the file -----------------------------------------------------------------------


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``-c FILE``, else ``$INTEGRATOR_CONFIG``, else /etc/integrator, else ./config."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return LOCAL_CONFIG


# -- value conversion -----------------------------------------------------------------------


def dec_hook(type_: type, value: Any) -> Any:
    """Build our config value types from TOML values (used for every Struct)."""
    if type_ is Duration:
        return Duration.parse(value)
    if type_ is Size:
        return Size.parse(value)
    if type_ is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise ValueError(f"expected a secret string, found {type(value).__name__}")
    raise NotImplementedError(f"unsupported config type {type_!r}")


def convert(value: Any, type_: type[Any]) -> Any:
    return msgspec.convert(value, type_, dec_hook=dec_hook, strict=True)


# -- secret references ----------------------------------------------------------------------

_REF = re.compile(r"\$\{(env|file|cred):([^}]*)\}")


class _Unresolved(Exception):
    pass


def _resolve_ref(kind: str, name: str) -> str:
    if kind == "env":
        if name not in os.environ:
            raise _Unresolved(f"environment variable {name} is not set")
        return os.environ[name]
    if kind == "file":
        try:
            return Path(name).read_text().rstrip("\r\n")
        except OSError as err:
            raise _Unresolved(f"secret file {name} cannot be read: {err.strerror}") from err
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        raise _Unresolved(
            f"credential {name} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)"
        )
    try:
        return (Path(creds) / name).read_text().rstrip("\r\n")
    except OSError as err:
        raise _Unresolved(
            f"credential {name} not found in $CREDENTIALS_DIRECTORY ({err.strerror})"
        ) from err


def resolve_references(
    value: Any, path: tuple[str | int, ...], problems: list[tuple[tuple[str | int, ...], str]]
) -> Any:
    """Replace ``${env:…}``, ``${file:…}`` and ``${cred:…}`` in every string.

    Resolved values are registered with the log redactor whatever field they land
    in; a literal ``$${`` stands for ``${``.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value

        def sub(match: re.Match[str]) -> str:
            try:
                resolved = _resolve_ref(match[1], match[2])
            except _Unresolved as err:
                problems.append((path, str(err)))
                return ""
            REDACTOR.add(resolved)
            return resolved

        parts = value.split("$${")
        return "${".join(_REF.sub(sub, part) for part in parts)
    if isinstance(value, dict):
        return {k: resolve_references(v, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_references(v, (*path, i), problems) for i, v in enumerate(value)]
    return value


# -- error reporting ------------------------------------------------------------------------

_MSGSPEC_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PATH_PART = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\.\.\.\]")
_EXPECTED = re.compile(r"Expected `(?P<exp>[^`]+)`, got `(?P<got>[^`]+)`")


class _Reporter:
    """Collects problems as ``file:line: route 'r': key.path: message`` lines."""

    def __init__(self, path: Path, text: str, registry: Registry | None = None) -> None:
        self.path = path
        self.registry = registry
        self.locator = _Locator(text)
        self.problems: list[str] = []
        #: The sink names of the route whose middleware is being read, else None.
        self.route_sinks: list[str] | None = None

    def add(self, keypath: tuple[str | int, ...], message: str) -> None:
        line = self.locator.find(keypath)
        where = f"{self.path}:{line}" if line else f"{self.path}"
        route = ""
        if len(keypath) >= 2 and keypath[0] == "routes":
            route = f"route {keypath[1]!r}: "
        dotted = _dotted(keypath) or "(top level)"
        # A value that came from a secret reference must not be echoed back.
        self.problems.append(REDACTOR.redact(f"{where}: {route}{dotted}: {message}"))

    def add_validation(
        self, base: tuple[str | int, ...], err: msgspec.ValidationError, raw: Any
    ) -> None:
        match = _MSGSPEC_AT.match(str(err))
        assert match is not None
        message = match["msg"]
        keypath = base
        if match["path"]:
            for part in _PATH_PART.finditer(match["path"]):
                if part[1] is not None:
                    keypath = (*keypath, part[1])
                elif part[2] is not None:
                    keypath = (*keypath, int(part[2]))
        unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
        if unknown:
            self.add((*keypath, unknown[1]), f"unknown key {unknown[1]!r}")
            return
        missing = re.match(r"Object missing required field `([^`]+)`", message)
        if missing:
            self.add(keypath, f"missing required key {missing[1]!r}")
            return
        expected = _EXPECTED.search(message)
        if expected:
            found = _walk(raw, keypath[len(base) :])
            message = f"expected {expected['exp']}, found {_show(found)}"
        self.add(keypath, message)


def _walk(value: Any, keypath: tuple[str | int, ...]) -> Any:
    for key in keypath:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _dotted(keypath: tuple[str | int, ...]) -> str:
    out = ""
    for key in keypath:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            text = key if re.fullmatch(r"[A-Za-z0-9_\-]+", key) else f'"{key}"'
            out += f".{text}" if out else text
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _split_key(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', text)]


class _Locator:
    """Maps a key path to the TOML line that defines it (or its closest parent)."""

    def __init__(self, text: str) -> None:
        self.entries: list[tuple[tuple[str, ...], int]] = []
        table: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = _split_key(header[2])
                self.entries.append((tuple(table), number))
                continue
            key = _KEY.match(line)
            if key and not line.lstrip().startswith("#"):
                self.entries.append(((*table, *_split_key(key[1])), number))

    def find(self, keypath: tuple[str | int, ...]) -> int | None:
        wanted = tuple(str(k) for k in keypath if not isinstance(k, int))
        best: tuple[int, int] | None = None
        for path, number in self.entries:
            if wanted[: len(path)] == path and (best is None or len(path) > best[0]):
                best = (len(path), number)
        return best[1] if best else None


# -- loading --------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], registry: Registry) -> Config:
    """Read, resolve and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as err:
        raise ConfigError([f"{path}: cannot read config file: {err.strerror}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: config file is not UTF-8: {err}"]) from err
    return parse_config(text, path, registry)


def parse_config(text: str, path: Path, registry: Registry) -> Config:
    report = _Reporter(path, text, registry)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([_toml_error(path, err)]) from err

    problems: list[tuple[tuple[str | int, ...], str]] = []
    data = resolve_references(data, (), problems)
    for keypath, message in problems:
        report.add(keypath, message)

    config = Config(path=path, raw=data)
    for key in data:
        if key not in _TOP_LEVEL:
            close = difflib.get_close_matches(key, sorted(_TOP_LEVEL), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            report.add((key,), f"unknown top-level key {key!r}{hint}")

    version = data.get("version", 1)
    if version not in SUPPORTED_VERSIONS:
        report.add(("version",), f"expected one of {SUPPORTED_VERSIONS}, found {_show(version)}")
    config.version = version if isinstance(version, int) else 1

    for section, type_ in _SECTIONS.items():
        if section in data:
            value = _convert_checked(report, (section,), data[section], type_)
            if value is not None:
                setattr(config, section, value)

    connections = data.get("connections", {})
    if not isinstance(connections, dict):
        report.add(("connections",), f"expected a table, found {_show(connections)}")
        connections = {}
    for name, raw in connections.items():
        connection = _convert_checked(report, ("connections", name), raw, ConnectionConfig)
        if connection is None:
            continue
        if connection.auth is not None:
            connection.auth = _check_auth(report, registry, ("connections", name, "auth"), raw)
        config.connections[name] = connection

    routes = data.get("routes", {})
    if not isinstance(routes, dict):
        report.add(("routes",), f"expected a table, found {_show(routes)}")
        routes = {}
    for name, raw in routes.items():
        route = _load_route(report, registry, config, name, raw)
        if route is not None:
            config.routes[name] = route

    if "alerts" in data:
        _load_alerts(report, registry, config, data["alerts"], routes)

    if report.problems:
        raise ConfigError(report.problems)
    return config


def _toml_error(path: Path, err: tomllib.TOMLDecodeError) -> str:
    message = str(err)
    line = re.search(r"\(at line (\d+), column \d+\)", message)
    where = f"{path}:{line[1]}" if line else str(path)
    bare = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
    twice = re.match(r"Cannot declare \((.*)\) twice", bare)
    if twice:
        parts = [p.strip().strip("'\"") for p in twice[1].split(",") if p.strip()]
        if len(parts) == 2 and parts[0] == "routes":
            return f"{where}: duplicate route {parts[1]!r}: route names must be unique"
        return f"{where}: duplicate table [{'.'.join(parts)}]: each table may appear once"
    if bare.startswith("Cannot overwrite a value"):
        return f"{where}: duplicate key: a key may be set once per table"
    return f"{where}: invalid TOML: {bare}"


def _check_auth(
    report: _Reporter, registry: Registry, keypath: tuple[str | int, ...], raw_connection: Any
) -> dict[str, Any] | None:
    raw = raw_connection.get("auth")
    kind = raw.get("type") if isinstance(raw, dict) else None
    if not isinstance(kind, str):
        report.add(keypath, "an auth table needs a 'type' (for example 'bearer' or 'oauth2')")
        return None
    registered = registry.get("auth", kind)
    if registered is None:
        report.add(
            (*keypath, "type"), f"unknown auth type {kind!r}: {registry.missing_hint('auth', kind)}"
        )
        return None
    component = _imported(report, registered, keypath)
    if component is None:
        return None
    options = _component_options(report, component, keypath, raw, {"type"})
    return {"type": kind, "options": options}


def _load_route(
    report: _Reporter, registry: Registry, config: Config, name: str, raw: Any
) -> RouteConfig | None:
    base: tuple[str | int, ...] = ("routes", name)
    if not ROUTE_NAME.match(name):
        report.add(base, "a route name may hold letters, digits, '.', '_' and '-' only")
    if not isinstance(raw, dict):
        report.add(base, f"expected a table, found {_show(raw)}")
        return None
    before = len(report.problems)
    # The route's own keys first; components are checked even when those are wrong,
    # so that one run reports every problem.
    table = _convert_checked(
        report, base, raw, _RouteTable, ignore={"source", "sinks", "middleware"}
    )
    if "source" not in raw:
        report.add(
            base, "missing required key 'source' (the table that says where messages come from)"
        )
    if "sinks" not in raw:
        report.add(base, "missing required key 'sinks' (an array of tables: where messages go)")
    source = None
    if isinstance(raw.get("source"), dict):
        source = _component(report, registry, "source", (*base, "source"), raw["source"])
    elif "source" in raw:
        report.add((*base, "source"), f"expected a table, found {_show(raw['source'])}")
    sink_tables = _tables(report, (*base, "sinks"), raw.get("sinks", []))
    if "sinks" in raw and isinstance(raw["sinks"], list) and not raw["sinks"]:
        report.add((*base, "sinks"), "a route needs at least one sink")
    sinks = [
        _component(report, registry, "sink", (*base, "sinks", i), spec)
        for i, spec in enumerate(sink_tables)
    ]
    _name_sinks(report, base, sinks)
    # The route's middleware may name its sinks (switch): ``validate(sinks=…)`` checks
    # them, when every sink could be read (a broken one has its own problem line).
    report.route_sinks = None if None in sinks else [s.name for s in sinks if s is not None]
    try:
        middleware = [
            _component(report, registry, "middleware", (*base, "middleware", i), spec)
            for i, spec in enumerate(
                _tables(report, (*base, "middleware"), raw.get("middleware", []))
            )
        ]
    finally:
        report.route_sinks = None
    if len(report.problems) > before or source is None or table is None:
        return None
    return RouteConfig(
        name=name,
        source=source,
        middleware=[m for m in middleware if m is not None],
        sinks=[s for s in sinks if s is not None],
        retry=table.retry,
        enabled=table.enabled,
        description=table.description,
        dedupe_window=table.dedupe_window,
        tests=table.tests,
        raw=raw,
    )


def _load_alerts(
    report: _Reporter, registry: Registry, config: Config, raw: Any, routes: dict[str, Any]
) -> None:
    """``[alerts]``: the sink is checked like a route's, each rule's route must exist."""
    alerts = _convert_checked(report, ("alerts",), raw, AlertsConfig)
    if alerts is None:
        return
    if alerts.attempts < 1:
        report.add(("alerts", "attempts"), f"expected at least 1, found {alerts.attempts}")
    if alerts.interval <= 0:
        report.add(("alerts", "interval"), "expected a duration above 0")
    if alerts.sink is not None:
        extra = sorted(set(alerts.sink) & (_SINK_KEYS - {"type"}))
        for key in extra:
            report.add(("alerts", "sink", key), f"{key!r} is not supported for the alert sink")
        if not extra:
            config.alert_sink = _component(
                report, registry, "sink", ("alerts", "sink"), alerts.sink
            )
    elif alerts.rules:
        report.add(("alerts",), "missing key 'sink': the rules need a sink to send alerts through")
    names: set[str] = set()
    for index, rule in enumerate(alerts.rules):
        keypath = ("alerts", "rules", index)
        if rule.route is not None and rule.route not in routes:
            known = ", ".join(sorted(routes)) or "none"
            report.add((*keypath, "route"), f"no route named {rule.route!r}; known: {known}")
        if rule.threshold < 0:
            report.add((*keypath, "threshold"), f"expected 0 or more, found {rule.threshold}")
        if not rule.name:
            rule.name = rule.when if rule.route is None else f"{rule.when}:{rule.route}"
        if rule.name in names:
            report.add((*keypath, "name"), f"duplicate alert name {rule.name!r}: give each a name")
        names.add(rule.name)
    config.alerts = alerts


def _tables(report: _Reporter, keypath: tuple[str | int, ...], value: Any) -> list[dict[str, Any]]:
    """The tables of an array of tables, reporting anything else found in it."""
    if not isinstance(value, list):
        report.add(keypath, f"expected an array of tables, found {_show(value)}")
        return []
    tables = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            tables.append(item)
        else:
            report.add((*keypath, index), f"expected a table, found {_show(item)}")
    return tables


def _convert_checked(
    report: _Reporter,
    keypath: tuple[str | int, ...],
    raw: Any,
    type_: type[Any],
    ignore: frozenset[str] | set[str] = frozenset(),
) -> Any:
    """Convert ``raw`` to ``type_``, reporting every unknown key (with a suggestion) first."""
    if not isinstance(raw, dict):
        report.add(keypath, f"expected a table, found {_show(raw)}")
        return None
    fields = {f.encode_name for f in msgspec.structs.fields(type_)}
    unknown = [key for key in raw if key not in fields and key not in ignore]
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(fields | set(ignore)), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        report.add((*keypath, key), f"unknown key {key!r}{hint}")
    values = {k: v for k, v in raw.items() if k not in ignore and k not in unknown}
    if ignore:
        # Placeholders for the keys checked elsewhere keep required fields satisfied.
        values.update({k: raw[k] for k in ignore if k in raw and k in fields})
    try:
        return convert(values, type_)
    except msgspec.ValidationError as err:
        report.add_validation(keypath, err, values)
        return None


def _name_sinks(
    report: _Reporter, base: tuple[str | int, ...], sinks: list[ComponentSpec | None]
) -> None:
    """Give each sink a stable name (its type, or ``type-N`` when a type repeats)."""
    seen: dict[str, int] = {}
    for sink in sinks:
        if sink is not None:
            seen[sink.type] = seen.get(sink.type, 0) + 1
    counters: dict[str, int] = {}
    names: set[str] = set()
    for index, sink in enumerate(sinks):
        if sink is None:
            continue
        if not sink.name:
            counters[sink.type] = counters.get(sink.type, 0) + 1
            sink.name = sink.type if seen[sink.type] == 1 else f"{sink.type}-{counters[sink.type]}"
        if sink.name in names:
            report.add((*base, "sinks", index, "name"), f"duplicate sink name {sink.name!r}")
        names.add(sink.name)
    for index, sink in enumerate(sinks):
        if sink is None or sink.fallback is None:
            continue
        if sink.fallback == sink.name or sink.fallback not in names:
            others = ", ".join(sorted(names - {sink.name})) or "none"
            report.add(
                (*base, "sinks", index, "fallback"),
                f"expected the name of another sink of this route ({others}), "
                f"found {sink.fallback!r}",
            )


def _component(
    report: _Reporter,
    registry: Registry,
    kind: str,
    keypath: tuple[str | int, ...],
    raw: dict[str, Any],
) -> ComponentSpec | None:
    type_name = raw.get("type")
    if not isinstance(type_name, str):
        report.add(keypath, f"a {kind} needs a 'type', found {_show(raw.get('type'))}")
        return None
    registered = registry.get(kind, type_name)
    if registered is None:
        report.add(
            (*keypath, "type"),
            f"unknown {kind} type {type_name!r}: {registry.missing_hint(kind, type_name)}",
        )
        return None
    component = _imported(report, registered, keypath)
    if component is None:
        return None
    own_keys = _SINK_KEYS if kind == "sink" else _COMPONENT_KEYS
    options = _component_options(report, component, keypath, raw, own_keys)
    spec = ComponentSpec(type=type_name, options=options, raw=raw)
    if kind == "sink":
        try:
            common = convert(
                {k: v for k, v in raw.items() if k in _SINK_KEYS - {"type", "middleware"}},
                _SinkCommon,
            )
            spec.name, spec.retry, spec.breaker = common.name, common.retry, common.breaker
            spec.concurrency = common.concurrency
            spec.fallback = common.fallback
            spec.batch = common.batch
        except msgspec.ValidationError as err:
            report.add_validation(keypath, err, raw)
        chain = raw.get("middleware", [])
        if not isinstance(chain, list):
            report.add((*keypath, "middleware"), f"expected an array, found {_show(chain)}")
            chain = []
        for i, item in enumerate(chain):
            if not isinstance(item, dict):
                report.add((*keypath, "middleware", i), f"expected a table, found {_show(item)}")
                continue
            sub = _component(report, registry, "middleware", (*keypath, "middleware", i), item)
            if sub is not None:
                spec.middleware.append(sub)
    return spec


class _SinkCommon(_Strict):
    name: str = ""
    concurrency: int = 8
    fallback: str | None = None
    retry: RetryConfig | None = None
    breaker: BreakerConfig | None = None
    batch: BatchConfig | None = None


def _imported(report: _Reporter, registered: Any, keypath: tuple[str | int, ...]) -> Any:
    """The registered component, imported now if it was registered by reference; None
    (and a problem at the ``type`` key) when its module cannot be imported."""
    try:
        return registered.component
    except ComponentUnavailable as err:
        report.add((*keypath, "type"), str(err))
        return None


def _component_options(
    report: _Reporter,
    component: Any,
    keypath: tuple[str | int, ...],
    raw: dict[str, Any],
    own_keys: set[str],
) -> Any:
    options_type = getattr(component, "Options", None)
    values = {k: v for k, v in raw.items() if k not in own_keys}
    if options_type is None:
        return values
    fields = {f.encode_name for f in msgspec.structs.fields(options_type)}
    ok = True
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = ", ".join(sorted(fields | own_keys))
            report.add((*keypath, key), f"unknown key {key!r}{hint}; allowed keys: {allowed}")
            ok = False
    if not ok:
        return None
    try:
        options = convert(values, options_type)
    except msgspec.ValidationError as err:
        report.add_validation(keypath, err, values)
        return None
    check = getattr(options, "validate", None)
    if callable(check):
        # ``validate(registry=…)`` lets an option name another plugin component
        # (a signature scheme, a codec), and ``validate(sinks=…)`` a route middleware
        # name the route's sinks (switch), and still be checked at load time.
        wanted = inspect.signature(check).parameters
        context: dict[str, Any] = {}
        if "registry" in wanted:
            context["registry"] = report.registry
        if "sinks" in wanted:
            context["sinks"] = report.route_sinks
        try:
            check(**context)
        except (ValueError, ComponentUnavailable) as err:
            # ComponentUnavailable: an option named a component (a signature scheme, a
            # codec) registered by reference whose module cannot be imported.
            report.add(keypath, str(err))
    return options
