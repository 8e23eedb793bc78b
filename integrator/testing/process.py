"""``integrator run`` as a real subprocess, for the guarantees that span a crash.

An in-process daemon (the ``run_route`` fixture) cannot be ``kill -9``-ed, and the
promise that matters most to a source — a message received but not yet committed
is not lost when the daemon dies — can only be tested by killing one. The recipe:

1. write a config with :func:`daemon_config` (a long store ``busy_timeout``);
2. start a :class:`DaemonProcess` and wait until it consumes (and, if messages went
   through first, until :func:`store_settled`);
3. hold the store with :class:`StoreLock`, so that the next commit hangs: the
   daemon has received the message and not acknowledged it;
4. :meth:`DaemonProcess.kill` it, release the lock, start a new daemon on the same
   state directory, and check that the message arrives.
"""

from __future__ import annotations

import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from integrator.delivery.sqlite import SQLiteOptions, count_pending
from integrator.testing.waiting import Predicate, TimedOut, eventually

#: What the daemon logs once every route has started (``ready: <summary>``).
READY_LINE = "ready: "


def daemon_config(
    toml: str,
    state_dir: Path,
    *,
    shutdown_timeout: str = "5s",
    log_level: str | None = None,
    store_busy_timeout: float | None = None,
) -> str:
    """A complete config for a test: ``toml`` (dedented) plus the sections it lacks.

    ``[daemon]`` keeps its state in ``state_dir``; ``[admin]`` and ``[webhooks]``
    listen on free ports, so daemons of tests running side by side never fight
    over one; ``[store]`` (only when ``store_busy_timeout`` is given) waits that
    many seconds for a locked database, which :class:`StoreLock` needs. The
    sections are appended, so top-level keys of ``toml`` stay at the top; a section
    the text already has is left as it is.
    """
    text = textwrap.dedent(toml)
    if "[daemon]" not in text:
        text += f'\n[daemon]\nstate_dir = "{state_dir}"\nshutdown_timeout = "{shutdown_timeout}"\n'
        if log_level is not None:
            text += f'log_level = "{log_level}"\n'
    if "[admin]" not in text:
        text += '\n[admin]\nlisten = "127.0.0.1:0"\n'
    if "[webhooks]" not in text:
        text += '\n[webhooks]\nlisten = "127.0.0.1:0"\n'
    if store_busy_timeout is not None and "[store]" not in text:
        text += f"\n[store]\noptions = {{ busy_timeout = {store_busy_timeout} }}\n"
    return text


class DaemonProcess:
    """``integrator run -c CONFIG`` in a subprocess, its output in a log file.

    Every wait fails at once, showing the log, if the daemon exits meanwhile; a
    timeout shows the log too.
    """

    def __init__(self, config: Path, log: Path | None = None) -> None:
        self.config = config
        self.log = log if log is not None else config.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        """Start the daemon (it goes on until :meth:`stop` or :meth:`kill`)."""
        command = [sys.executable, "-m", "integrator.cli", "run", "-c", str(self.config)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    @property
    def returncode(self) -> int | None:
        """The exit status, or ``None`` while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """Everything the daemon has logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_until(
        self, predicate: Predicate, what: str = "condition", *, timeout: float = 20.0
    ) -> Any:
        """:func:`~integrator.testing.eventually`, but failing as soon as the daemon exits."""

        async def holds() -> Any:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if not result and not self.running:
                raise AssertionError(
                    f"the daemon exited ({self.returncode}) before {what}:\n{self.output()}"
                )
            return result

        try:
            return await eventually(holds, what, timeout=timeout, interval=0.05)
        except TimedOut as err:
            raise TimedOut(f"{err}; the daemon's log:\n{self.output()}") from None

    async def wait_for_output(self, text: str, *, timeout: float = 20.0) -> None:
        """Wait until ``text`` appears in the daemon's log."""
        await self.wait_until(
            lambda: text in self.output(), f"{text!r} in the log", timeout=timeout
        )

    async def wait_ready(self, *, timeout: float = 20.0) -> None:
        """Wait until the daemon says it is ready: every route started, listeners bound."""
        await self.wait_for_output(READY_LINE, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        process = self._started()
        process.kill()
        process.wait()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` (``signal.SIGHUP`` reloads the config) without waiting."""
        self._started().send_signal(sig)

    async def stop(self, timeout: float = 10.0, *, sig: int = signal.SIGTERM) -> int:
        """``sig`` (SIGTERM: a clean shutdown; SIGINT works too), SIGKILL after
        ``timeout``; the exit status."""
        process = self._started()
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return await anyio.to_thread.run_sync(process.wait, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def close(self) -> None:
        """Kill the daemon if it still runs (the fixture does this after each test)."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("the daemon was not started")
        return self.process


def store_settled(store: Path) -> bool:
    """Whether a daemon's store holds nothing in flight: every message it took in is
    delivered and recorded as delivered.

    Wait for this before :class:`StoreLock` when messages went through first: a
    delivery's record is written a moment after the delivery (it shares the next
    commit), and one still unwritten when the lock is taken is delivered again after
    the restart, which is at least once but not what such a test means to show.
    """
    path = store / SQLiteOptions().path if store.is_dir() else store
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}: start the daemon first")
    uri = path.resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        return count_pending(conn) == 0


class StoreLock:
    """Holds a daemon's SQLite store locked for writing, so that its commits hang.

    A source under test then has a message received but not committed, hence not
    acknowledged: the moment to ``kill -9`` it. The daemon waits for the lock up to
    its ``busy_timeout`` (see :func:`daemon_config`), so make that longer than the
    test holds the lock. Readers are not blocked (the store runs in WAL mode).
    ``store`` is the daemon's state directory or its database file; the daemon must
    have created it already.
    """

    def __init__(self, store: Path) -> None:
        path = store / SQLiteOptions().path if store.is_dir() else store
        if not path.exists():
            raise FileNotFoundError(f"no store at {path}: start the daemon first")
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, timeout=10
        )
        self._conn.execute("BEGIN IMMEDIATE")

    @property
    def held(self) -> bool:
        return self._conn is not None

    def release(self) -> None:
        """Let the daemon commit again (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.execute("ROLLBACK")
            conn.close()

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
