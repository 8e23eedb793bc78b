"""sd_notify without libsystemd: tell the service manager we are ready, reloading, stopping.

The protocol is one AF_UNIX datagram of newline-separated ``KEY=VALUE`` lines sent to
``$NOTIFY_SOCKET`` (a path, or an abstract name written ``@name``); a dozen lines of
stdlib, so no third-party binding is needed. Every call is a no-op outside systemd, and
a failed send is logged at debug and swallowed: the daemon must never die because the
manager went away. The socket is non-blocking so a wedged manager cannot stall the
event loop either.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import anyio

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to systemd; built with :meth:`from_env` in the daemon."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if self._address and watchdog_usec else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is ours only when ``WATCHDOG_PID`` is unset or names this process:
        a child that inherited the environment must not ping on its parent's behalf.
        """
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the deadline, as sd_watchdog_enabled advises)."""
        return self._watchdog_usec / 2_000_000 if self._watchdog_usec else None

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) finished: every listener is bound."""
        fields: dict[str, object] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
        self.notify(**fields)

    def reloading(self) -> None:
        """A reload started; call :meth:`ready` when it is done (Type=notify-reload needs
        both, and the timestamp lets systemd tell this reload from an earlier one)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> None:
        self.notify(STOPPING=1)

    def status(self, text: str) -> None:
        """Free-form one-line state shown by ``systemctl status``."""
        self.notify(STATUS=text)

    def watchdog(self) -> None:
        if self._watchdog_usec:
            self.notify(WATCHDOG=1)

    def notify(self, **fields: object) -> None:
        """Send arbitrary fields, e.g. ``notify(EXTEND_TIMEOUT_USEC=60_000_000)``."""
        if self._address is None or not fields:
            return
        lines = (f"{key}={_one_line(value)}" for key, value in fields.items())
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError as err:
            log.debug("sd_notify to %r failed: %s", self._address, err)

    async def watchdog_loop(self, is_healthy: Callable[[], bool]) -> None:
        """Ping ``WATCHDOG=1`` every interval while ``is_healthy()`` is true.

        When the check fails (or raises) the pings stop, the deadline passes and systemd
        restarts us: a stuck supervisor is worse than a restart. Returns at once when
        the watchdog is not enabled.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        was_healthy = True
        while True:
            healthy, reason = _check(is_healthy)
            if healthy:
                self.watchdog()
            elif was_healthy:
                log.warning("withholding watchdog pings: %s", reason)
            was_healthy = healthy
            await anyio.sleep(interval)


def _check(is_healthy: Callable[[], bool]) -> tuple[bool, str]:
    """A health check that raises counts as unhealthy; the error becomes the reason."""
    try:
        return bool(is_healthy()), "health check failed"
    except Exception as err:
        return False, f"health check raised {type(err).__name__}: {err}"


def _socket_address(address: str) -> str | bytes:
    """``@name`` is an abstract socket: the kernel name starts with a NUL byte."""
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _one_line(value: object) -> str:
    """A newline inside a value would start a new, forged field."""
    return str(value).replace("\n", " ")
