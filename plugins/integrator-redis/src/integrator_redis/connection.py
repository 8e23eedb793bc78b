"""Connection options shared by the Redis source and sinks, and the client they build.

The URL may carry credentials (``redis://user:pass@host:6379/0``); ``username`` and
``password`` (a secret, e.g. ``"${env:REDIS_PASSWORD}"``) override them. Either way
the password is registered with the log redactor and never appears in errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec

from integrator import DeliveryError, Duration, IntegratorError, Secret, remember_url_password

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# The redis client is imported where a component first needs it, not here: the
# daemon imports every installed plugin at start, and most configurations use none.


class RedisUnavailable(IntegratorError):
    """Raised by the source when Redis cannot be reached or drops the connection.

    The engine's supervisor restarts the source with capped exponential backoff and
    shows the reason on the route's health until it reconnects.
    """


class RedisConnectionOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``redis://[user:pass@]host:port/db``; ``rediss://`` for TLS.
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: Secret | None = None
    #: Use TLS even when the URL says ``redis://``.
    tls: bool = False
    #: PEM bundle of the CAs to trust (default: the system's).
    ca_file: str | None = None
    #: Client certificate and key, for servers that require one.
    cert_file: str | None = None
    key_file: str | None = None
    #: Connect and command timeout (blocking reads add their own wait to it).
    timeout: Duration = Duration(10)

    def validate(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"url must start with redis://, rediss:// or unix://, found {scheme!r}"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        remember_url_password(self.url)


def connect(options: RedisConnectionOptions, *, read_wait: float = 0.0) -> aioredis.Redis:
    """A client for ``options``; it connects lazily, at the first command.

    The client's own retries are off: a failure surfaces at once so that the source
    can be restarted (and its health shown) and a sink can hand the message back to
    the retry policy.
    """
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    remember_url_password(options.url)
    url = options.url
    tls = options.tls or url.startswith("rediss://")
    if tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    kwargs: dict[str, object] = {}
    if options.username is not None:
        kwargs["username"] = options.username
    if options.password is not None:
        kwargs["password"] = options.password.reveal()
    if tls:
        kwargs.update(
            ssl_ca_certs=options.ca_file,
            ssl_certfile=options.cert_file,
            ssl_keyfile=options.key_file,
        )
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=float(options.timeout),
        socket_timeout=float(options.timeout) + read_wait,
        retry=Retry(NoBackoff(), 0),
        **kwargs,  # type: ignore[arg-type]
    )


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors after which trying the same command again may succeed."""
    import redis.exceptions as rex

    return (
        rex.ConnectionError,
        rex.TimeoutError,
        rex.BusyLoadingError,
        rex.ReadOnlyError,
        rex.OutOfMemoryError,
        rex.TryAgainError,
        OSError,
    )


def delivery_error(err: Exception, what: str) -> DeliveryError:
    """Classify a client error for the retry policy.

    Connection problems, a loading or read-only server (failover) and a full memory
    are retriable; credentials refused are retriable too, so that fixing them and
    reloading lets the queued messages through. Any other error reply (``WRONGTYPE``,
    a syntax error, ``NOPERM``) would fail again the same way: not retriable.
    """
    import redis.exceptions as rex

    reason = f"{what}: {type(err).__name__}: {err}"
    if isinstance(err, rex.AuthenticationError | rex.AuthorizationError):
        return DeliveryError(reason, retriable=True)
    if isinstance(err, transient_errors()):
        return DeliveryError(reason, retriable=True)
    return DeliveryError(reason, retriable=False)
