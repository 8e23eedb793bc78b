"""Connection options shared by the PostgreSQL components, and how errors are classified.

The password lives in its own option as a :class:`~integrator.Secret`; a URL is only
ever shown with its password removed. Every session runs with ``TimeZone=UTC`` so
that timestamps read as text (cursor values, message bodies) do not depend on the
server's settings.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from integrator import (
    DeliveryError,
    Duration,
    IntegratorError,
    Secret,
    redact_url,
    remember_url_password,
)

if TYPE_CHECKING:
    import asyncpg

# asyncpg is imported where a component first connects, not here: the daemon
# imports every installed plugin at start, and most configurations use none.

log = logging.getLogger("integrator.postgres")


class PostgresConnectorError(IntegratorError):
    """Raised when PostgreSQL cannot be reached, or refuses what a source asks of it."""


class TLSOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: libpq's sslmode: "require" encrypts, "verify-ca" also checks the certificate,
    #: "verify-full" also checks that it names the host.
    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "verify-full"
    #: CA bundle that signs the server certificate (default: the system's CAs).
    ca_file: str | None = None
    #: Client certificate and key, for servers that require one.
    cert_file: str | None = None
    key_file: str | None = None

    def validate(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")

    def ssl_argument(self) -> Any:
        """What asyncpg's ``ssl`` parameter takes for these options."""
        if self.mode in ("disable", "prefer") and not self.cert_file:
            return self.mode
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.mode != "verify-full":
            context.check_hostname = False
        if self.mode in ("require", "prefer", "disable"):
            context.verify_mode = ssl.CERT_NONE
        return context


class ConnectionOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What every component needs to reach the database."""

    #: ``postgresql://user@host:5432/dbname`` (libpq URL; ``?sslmode=…`` works too).
    url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    #: The password, kept out of the URL (``${env:…}``, ``${file:…}``, ``${cred:…}``).
    password: Secret | None = None
    #: TLS settings (overrides any ``sslmode`` in the URL).
    tls: TLSOptions | None = None
    #: How long connecting may take.
    connect_timeout: Duration = Duration(10.0)
    #: How long one query may take.
    timeout: Duration = Duration(30.0)

    def validate(self) -> None:
        if not self.url.startswith(("postgres://", "postgresql://")):
            raise ValueError("url must start with postgresql:// (or postgres://)")
        remember_url_password(self.url)
        if self.tls is not None:
            self.tls.validate()

    def safe_url(self) -> str:
        """The URL without its password, for logs and errors."""
        return redact_url(self.url)

    def connect_kwargs(self, application_name: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "dsn": self.url,
            "timeout": float(self.connect_timeout),
            "command_timeout": float(self.timeout),
            "server_settings": {"application_name": application_name[:63], "TimeZone": "UTC"},
        }
        if self.password is not None:
            kwargs["password"] = self.password.reveal()
        if self.tls is not None:
            kwargs["ssl"] = self.tls.ssl_argument()
        return kwargs


async def connect(options: ConnectionOptions, application_name: str) -> asyncpg.Connection:
    """One connection (the sources hold one each); errors never show the password."""
    import asyncpg

    try:
        return await asyncpg.connect(**options.connect_kwargs(application_name))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise PostgresConnectorError(
            f"cannot connect to PostgreSQL at {options.safe_url()}: {describe(err)}"
        ) from err


async def close_connection(conn: asyncpg.Connection) -> None:
    """Close politely if the server answers at once, else drop the socket: a source
    closing after a network failure must not wait on a dead peer."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
        await conn.close()
    if not conn.is_closed():
        conn.terminate()


def describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def quote_ident(name: str) -> str:
    """A safely quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str) -> str:
    """``schema.table`` or ``table``, each part quoted (names holding dots are not supported)."""
    return ".".join(quote_ident(part) for part in name.split("."))


#: SQLSTATE classes worth retrying: connection exceptions, transaction rollbacks
#: (serialization failures, deadlocks), lack of resources, operator intervention
#: (shutdown, query cancelled by timeout), system and internal errors.
RETRIABLE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58", "XX"})


def is_retriable(err: BaseException) -> bool:
    """Whether trying the same statement again may succeed.

    Data errors (22), constraint violations (23) and errors in the statement itself
    (42: an undefined column or table, a permission) stay wrong however often we try.
    """
    import asyncpg

    if isinstance(err, asyncpg.PostgresError):
        sqlstate = getattr(err, "sqlstate", None) or ""
        return sqlstate[:2] in RETRIABLE_CLASSES
    return isinstance(err, OSError | TimeoutError | asyncpg.InterfaceError)


def delivery_error(err: BaseException, action: str) -> DeliveryError:
    return DeliveryError(f"{action}: {describe(err)}", retriable=is_retriable(err))
