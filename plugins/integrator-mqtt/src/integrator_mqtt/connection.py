"""Connection options shared by the MQTT source and sink, and the client they build.

The URL may carry credentials (``mqtt://user:pass@host:1883``); ``username`` and
``password`` (a secret, e.g. ``"${env:MQTT_PASSWORD}"``) override them. The
password is registered with the log redactor and never appears in errors.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import anyio
import msgspec

from integrator import Duration, IntegratorError, Secret, remember_url_password

if TYPE_CHECKING:
    import aiomqtt
    import paho.mqtt.client as paho

# aiomqtt and paho-mqtt are imported where a component first builds a client, not
# here: the daemon imports every installed plugin at start, and most configurations
# use none.

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}

#: paho-mqtt's packet trace goes here, so ``log_level = "debug"`` shows it (aiomqtt's
#: own "mqtt" logger is pinned at warning).
PROTOCOL_LOG = logging.getLogger("integrator.mqtt")


class MqttUnavailable(IntegratorError):
    """Raised when the broker cannot be reached, refuses the connection, or drops it.

    The source raises it to the engine's supervisor, which restarts the source with
    capped exponential backoff and shows the reason on the route's health.
    """


class MqttConnectionOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``mqtt://[user:pass@]host[:port]``; ``mqtts://`` for TLS (port 8883 by default).
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: Secret | None = None
    #: MQTT protocol version: "5" (user properties carry headers and the message id) or "3.1.1".
    protocol: Literal["5", "3.1.1"] = "5"
    #: Use TLS even when the URL says ``mqtt://``.
    tls: bool = False
    #: PEM bundle of the CAs to trust (default: the system's).
    ca_file: str | None = None
    #: Client certificate and key, for brokers that require one.
    cert_file: str | None = None
    key_file: str | None = None
    #: Connect timeout, and how long a publish waits for the broker's acknowledgement.
    timeout: Duration = Duration(10)
    #: Keep-alive interval: how soon a silent dead connection is noticed.
    keepalive: Duration = Duration(30)
    #: The user property (MQTT 5) that carries the message id.
    id_property: str = "message_id"

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"url must start with mqtt:// or mqtts://, found {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("url needs a host name")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        remember_url_password(self.url)

    @property
    def endpoint(self) -> str:
        """``host:port``, for logs (never the credentials)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or DEFAULT_PORTS.get(parts.scheme, 1883)}"


def tls_context(options: MqttConnectionOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.ca_file)
    if options.cert_file and options.key_file:
        context.load_cert_chain(options.cert_file, options.key_file)
    return context


def make_client(
    options: MqttConnectionOptions,
    client_id: str | None,
    *,
    session_expiry: float | None = None,
    receive_maximum: int | None = None,
) -> aiomqtt.Client:
    """A client (connected by ``async with``).

    With ``session_expiry`` the broker keeps the session, its subscriptions and the
    QoS 1/2 messages that arrive meanwhile, for that long after a disconnect: clean
    start is off (MQTT 5) or clean session is off (3.1.1, where the broker decides
    how long it keeps it).
    """
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    options.validate()
    parts = urlsplit(options.url)
    v5 = options.protocol == "5"
    username = options.username or (unquote(parts.username) if parts.username else None)
    password = (
        options.password.reveal()
        if options.password is not None
        else (unquote(parts.password) if parts.password else None)
    )
    persistent = session_expiry is not None
    kwargs: dict[str, Any] = {}
    if v5:
        properties = Properties(PacketTypes.CONNECT)
        if persistent:
            properties.SessionExpiryInterval = min(int(session_expiry or 0), 0xFFFFFFFF)
        if receive_maximum is not None:
            properties.ReceiveMaximum = receive_maximum
        kwargs["properties"] = properties
        kwargs["clean_start"] = not persistent
    else:
        kwargs["clean_session"] = not persistent
    tls = options.tls or parts.scheme == "mqtts"
    return aiomqtt.Client(
        parts.hostname or "127.0.0.1",
        parts.port or DEFAULT_PORTS[parts.scheme],
        logger=PROTOCOL_LOG,
        username=username,
        password=password,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        keepalive=max(1, int(options.keepalive)),
        timeout=float(options.timeout),
        tls_context=tls_context(options) if tls else None,
        **kwargs,
    )


@asynccontextmanager
async def connected(client: aiomqtt.Client, what: str) -> AsyncIterator[aiomqtt.Client]:
    """Connect ``client`` for the block; disconnect at the end even when cancelled.

    Connection failures become :class:`MqttUnavailable` naming ``what``.
    """
    import aiomqtt

    try:
        await client.__aenter__()
    except aiomqtt.MqttError as err:
        raise MqttUnavailable(f"{what}: {err}") from err
    try:
        yield client
    finally:
        await disconnect(client)


async def disconnect(client: aiomqtt.Client) -> None:
    """Say goodbye to the broker if the connection still works; never raise, never hang."""
    import aiomqtt

    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError as err:
            PROTOCOL_LOG.debug("mqtt disconnect: %s", err)


def paho_client(client: aiomqtt.Client) -> paho.Client:
    """The paho-mqtt client inside an aiomqtt client.

    aiomqtt 2 has no public API for manual acknowledgements, but paho-mqtt 2 has
    (``manual_ack_set`` and ``ack``), so the source reaches through to it; the
    dependency pins aiomqtt below 3 for this reason.
    """
    inner: paho.Client = client._client
    return inner
