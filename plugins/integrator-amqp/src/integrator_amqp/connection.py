"""Connection options shared by the AMQP source and sink, and how they connect.

The URL may carry credentials (``amqp://user:pass@host:5672/vhost``); ``username``
and ``password`` (a secret, e.g. ``"${env:AMQP_PASSWORD}"``) override them. The
password is registered with the log redactor and never appears in errors.

Connections are plain (not aio-pika's "robust" ones): when one breaks, the source
raises and the engine's supervisor restarts it with backoff, showing the outage on
the route's health, and the sink reconnects at the next delivery. Deliveries from a
broken channel can no longer be acknowledged, so a half-restored connection would
only hide redeliveries.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec
from yarl import URL

from integrator import Duration, IntegratorError, Secret, redact_url, remember_url_password

if TYPE_CHECKING:
    import aio_pika.abc

# aio-pika is imported where a component first connects, not here: the daemon
# imports every installed plugin at start, and most configurations use none.


class AmqpUnavailable(IntegratorError):
    """Raised when the broker cannot be reached, refuses the login, or drops the connection.

    The source raises it to the engine's supervisor, which restarts the source with
    capped exponential backoff and shows the reason on the route's health.
    """


class AmqpConnectionOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``amqp://[user:pass@]host:port/vhost``; ``amqps://`` for TLS.
    url: str
    username: str | None = None
    password: Secret | None = None
    #: Use TLS even when the URL says ``amqp://``.
    tls: bool = False
    #: PEM bundle of the CAs to trust (default: the system's).
    ca_file: str | None = None
    #: Client certificate and key (for EXTERNAL auth or servers that require one).
    cert_file: str | None = None
    key_file: str | None = None
    #: Connect timeout, and how long a publish waits for the broker's confirm.
    timeout: Duration = Duration(10)
    #: Heartbeat interval the client asks for: how soon a silent dead peer is noticed.
    heartbeat: Duration = Duration(30)

    def validate(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"url must start with amqp:// or amqps://, found {scheme!r}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        remember_url_password(self.url)


def tls_context(options: AmqpConnectionOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.ca_file)
    if options.cert_file and options.key_file:
        context.load_cert_chain(options.cert_file, options.key_file)
    return context


async def connect(options: AmqpConnectionOptions) -> aio_pika.abc.AbstractConnection:
    """Open a connection, or raise :class:`AmqpUnavailable` saying why (never the password)."""
    import aio_pika
    import aiormq.exceptions

    remember_url_password(options.url)
    url = URL(options.url)
    tls = options.tls or url.scheme == "amqps"
    if tls:
        url = url.with_scheme("amqps")
    if options.username is not None:
        url = url.with_user(options.username)
    if options.password is not None:
        url = url.with_password(options.password.reveal())
    url = url.update_query(heartbeat=int(options.heartbeat))
    try:
        return await aio_pika.connect(
            url,
            ssl_context=tls_context(options) if tls else None,
            timeout=float(options.timeout),
            client_properties={"connection_name": "integrator"},
        )
    except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as err:
        raise AmqpUnavailable(
            f"amqp broker at {redact_url(options.url)}: {type(err).__name__}: {err}"
        ) from err
