"""Connection options shared by the NATS source and sink, and how they become a client.

Credentials live in their own options as :class:`~integrator.Secret` so that they
never appear in logs, errors or ``integrator status``; a URL is only ever shown
with its user-info part removed.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from integrator import Duration, IntegratorError, Secret, redact_url, remember_url_password

if TYPE_CHECKING:
    from nats.aio.client import Client

# nats-py is imported where a component first connects, not here: the daemon
# imports every installed plugin at start, and most configurations use none.

log = logging.getLogger("integrator.nats")


class NatsError(IntegratorError):
    """Raised when the NATS server cannot be reached or refuses what we ask of it."""


class TLSOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: CA bundle that signs the server certificate (default: the system's CAs).
    ca_file: str | None = None
    #: Client certificate and key, for servers that require mutual TLS.
    cert_file: str | None = None
    key_file: str | None = None
    #: Name to check the server certificate against, when it differs from the URL's host.
    server_name: str | None = None
    #: Check the server certificate. Turn off only for a test server.
    verify: bool = True

    def validate(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class ConnectionOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What both components need to reach a NATS server or cluster."""

    #: One server, or several separated by commas (``nats://a:4222,nats://b:4222``).
    url: str = "nats://127.0.0.1:4222"
    #: User and password (password as ``${env:…}`` / ``${cred:…}``).
    user: str | None = None
    password: Secret | None = None
    #: A token, for servers using token authentication.
    token: Secret | None = None
    #: A ``.creds`` file (JWT + NKey seed), for servers using decentralised auth.
    creds_file: str | None = None
    #: TLS settings; a ``tls://`` URL alone uses the system's CAs.
    tls: TLSOptions | None = None
    #: How long one connection attempt may take.
    connect_timeout: Duration = Duration(5.0)
    #: How often to ping the server; two unanswered pings end the connection, which
    #: is how a silently dead network is noticed.
    ping_interval: Duration = Duration(20.0)

    def validate(self) -> None:
        for server in self.servers():
            remember_url_password(server, include_user=True)  # a token may sit there
        if self.tls is not None:
            self.tls.validate()
        if self.token is not None and (self.user or self.password):
            raise ValueError("use either token or user/password, not both")

    def servers(self) -> list[str]:
        return [part.strip() for part in self.url.split(",") if part.strip()]

    def safe_url(self) -> str:
        """The URL with any user-info removed, for logs and errors."""
        return ",".join(redact_url(server, drop_userinfo=True) for server in self.servers())


async def connect(options: ConnectionOptions, *, name: str) -> Client:
    """Open a client that closes, rather than reconnects, when its connection is lost.

    Reconnecting is ours to do: the source fails loudly and the engine's supervisor
    restarts it with backoff (so health shows the outage); the sink opens a new
    client at its next delivery. (nats-py's own reconnect loop also leaks a socket
    per failed attempt.)
    """
    import nats.errors
    from nats.aio.client import Client

    async def on_error(err: Exception) -> None:
        log.warning("nats %s (%s): %s", options.safe_url(), name, describe(err))

    kwargs: dict[str, Any] = {
        "servers": options.servers(),
        "name": name,
        "connect_timeout": float(options.connect_timeout),
        "ping_interval": float(options.ping_interval),
        "max_outstanding_pings": 2,
        "allow_reconnect": False,
        # nats-py never gives up on a refused first connection when this is 0: with 1
        # it tries each server twice, reconnect_time_wait apart, then raises.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.2,
        "error_cb": on_error,
    }
    if options.user is not None:
        kwargs["user"] = options.user
    if options.password is not None:
        kwargs["password"] = options.password.reveal()
    if options.token is not None:
        kwargs["token"] = options.token.reveal()
    if options.creds_file is not None:
        kwargs["user_credentials"] = options.creds_file
    if options.tls is not None:
        kwargs["tls"] = options.tls.context()
        if options.tls.server_name:
            kwargs["tls_hostname"] = options.tls.server_name
    client = Client()
    # A bound on the whole attempt, in case the client library loops.
    limit = (float(options.connect_timeout) + 0.5) * 2 * len(options.servers()) + 1
    try:
        with anyio.fail_after(limit):
            await client.connect(**kwargs)
    except (OSError, TimeoutError, nats.errors.Error) as err:
        # nats-py leaves the socket of a failed first attempt open: close it.
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            await client.close()
        raise NatsError(f"cannot connect to NATS at {options.safe_url()}: {describe(err)}") from err
    return client


def describe(err: BaseException) -> str:
    """A one-line reason that never echoes credentials."""
    text = str(err) or type(err).__name__
    return text if text.startswith("nats:") else f"{type(err).__name__}: {text}"
