"""The default store: one SQLite file in the state directory, WAL mode, group commit.

Every write is an *operation* queued into the open batch. One batch at a time is
committed, in one transaction, so durability costs one fsync per batch rather than one
per message. A writer that finds no commit running starts one at once; writes that
arrive while it runs gather in the next batch, which starts the moment the running
commit ends (from the commit's own completion, before the loop wakes anyone). So the
disk is never idle while writes wait, and the batch grows with the load by itself.

Commits run on the store's writer thread, so the event loop never waits for the disk,
or (``commit_on = "loop"``) on the event loop itself, which saves the two threads'
turns at the GIL (docs/performance.md, *Where the event loop waits*); the WAL is then
copied back into the database file by a checkpoint thread, not inside a commit.
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import msgspec

from integrator.delivery import sqlite_writer
from integrator.delivery.sqlite_writer import (
    FRAME,
    Outcome,
    Writer,
    count_pending,
    select_by_seq,
)
from integrator.delivery.store import AuditEntry, DeadLetter, Delivery, InboxItem, Store
from integrator.errors import StoreError, UnstorableOutput
from integrator.hookspecs import hookimpl
from integrator.message import Message, decode, encode

if TYPE_CHECKING:
    from integrator.delivery.sqlite_writer import InboxRow, WriteCall

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    message BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    first_error TEXT NOT NULL DEFAULT '',
    first_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_route ON inbox (route, attempts, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    sink TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    message BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    first_error TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    first_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_sink ON deliveries (route, sink, attempts, seq);
CREATE TABLE IF NOT EXISTS dlq (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    sink TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    message BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    first_error TEXT NOT NULL,
    last_error TEXT NOT NULL,
    first_attempt_at REAL NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_by_route ON dlq (route, failed_at);
CREATE TABLE IF NOT EXISTS seen (
    route TEXT NOT NULL, msg_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (route, msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, details BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, updated_at REAL NOT NULL
);
"""


class SQLiteOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: File name inside the state directory (or an absolute path).
    path: str = "integrator.db"
    #: "full" survives power loss; "normal" survives a process crash (kill -9) only.
    synchronous: Literal["full", "normal"] = "full"
    #: How long a writer waits for another process (e.g. `integrator dlq`) to finish.
    busy_timeout: float = 10.0
    #: Where commits run: "thread" (the store's writer thread: the event loop never
    #: waits for the disk), "loop" (the event loop itself: more throughput per core
    #: where an fsync is quick, but each commit pauses the whole daemon for its fsync)
    #: "process" (a writer process of its own: the loop neither waits for the disk
    #: nor shares the GIL with the writer, and the commits use a second core) or
    #: "auto" (the writer thread, and the writer process while commits keep the
    #: thread busy: see SQLiteStore.AUTO_BUSY).
    commit_on: Literal["thread", "loop", "process", "auto"] = "auto"


log = logging.getLogger("integrator.store")


class _Batch:
    __slots__ = (
        "after",
        "committed",
        "error",
        "first_inbox_seq",
        "inbox",
        "inbox_messages",
        "ops",
        "outcome",
        "results",
        "waiters",
        "wanted",
    )

    def __init__(self) -> None:
        self.ops: list[WriteCall] = []
        self.results: list[Any] = []
        # Inbox rows of plain enqueues, inserted before the ops; their seqs are
        # consecutive from ``first_inbox_seq`` (one writer holding the write lock).
        self.inbox: list[InboxRow] = []
        self.inbox_messages: list[Message] = []  # the message of each row
        self.first_inbox_seq = 0
        self.error: BaseException | None = None
        self.outcome: Outcome | None = None  # the commit's, applied on the loop
        # A writer waits for this batch's commit now (not merely lingering): it starts
        # as soon as no other commit runs.
        self.wanted = False
        self.committed = False
        # One future per waiting writer, created on the store's loop: cheaper than an
        # Event, whose every wait looks the running loop up (a getpid() on CPython 3.11).
        self.waiters: list[asyncio.Future[None]] = []
        # The writers' bookkeeping once the batch is committed (the rows handed to the
        # next stage, the ones forgotten), run on the loop right after the commit: a
        # writer cancelled while it waited has its bookkeeping done all the same.
        self.after: list[Callable[[], None]] = []


class _CommitThread:
    """The store's writer thread: commits the batches handed to it, one at a time, and
    calls back on the loop. (An executor would add a concurrent future, its locks and a
    second turn of the loop per commit.)"""

    def __init__(self, commit: Callable[[_Batch], object]) -> None:
        self._commit = commit
        self._queue: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, _Batch, Callable[[], None]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="integrator-store", daemon=True)
        self._thread.start()

    def submit(
        self, loop: asyncio.AbstractEventLoop, batch: _Batch, done: Callable[[], None]
    ) -> None:
        """Commit ``batch``, then call ``done()`` on ``loop``."""
        self._queue.put((loop, batch, done))

    def stop(self) -> None:
        """Finish what was handed over, then end the thread (blocks until it has)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            loop, batch, done = work
            self._commit(batch)  # never raises: a failure is the batch's error
            try:
                loop.call_soon_threadsafe(done)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


class _Checkpointer:
    """Copies the WAL back into the database file, on a thread and connection of its
    own, for ``commit_on = "loop"``.

    Why: SQLite's automatic checkpoint runs inside whichever commit takes the WAL past
    1,000 pages, and copying them and syncing the database file stalled that commit
    for up to half a second on this project's test VM under load: on the loop, a
    stall of the whole daemon. A PASSIVE checkpoint blocks neither writers nor
    readers, so it runs beside the commits. (On the writer thread such a stall only
    delays the writers of that commit, so ``commit_on = "thread"`` keeps SQLite's
    own checkpoint and a WAL of about 4 MB.)

    Under a steady stream of commits a PASSIVE checkpoint rarely ends between two of
    them, and the WAL restarts from its beginning only at a write after a checkpoint
    that copied everything: so the WAL grows to the backstop (about 40 MB), whose
    checkpoint has little left to copy, and the file keeps that size afterwards.
    """

    #: Seconds between two checkpoints under a steady stream of commits.
    INTERVAL = 0.1
    #: The writer's own automatic checkpoint, kept only as a backstop in case this
    #: thread falls behind (pages, about 40 MB of WAL).
    BACKSTOP_PAGES = 10_000

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="integrator-checkpoint", daemon=True)
        self._thread.start()

    def wanted(self) -> None:
        """A commit added to the WAL (on the loop: cheap when already wanted)."""
        if not self._wanted.is_set():
            self._wanted.set()

    def stop(self) -> None:
        """End the thread and close its connection (blocks until it has)."""
        self._stopping.set()
        self._wanted.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        # Sleeps on an event while nothing is committed: no wake-ups when idle.
        while self._wanted.wait() and not self._stopping.is_set():
            self._wanted.clear()
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as err:  # the next commit wants another one
                log.warning("store checkpoint failed: %s", err)
            self._stopping.wait(self.INTERVAL)


class _WriterProcess:
    """``commit_on = "process"``: the writer in a process of its own
    (``sqlite_writer.serve``), fed one batch at a time over a socket pair; the loop
    reads its answers as they come.

    Why: on a thread the writer shares the GIL with the loop, and each waits for the
    other (docs/performance.md, *Where the event loop waits*); in its own process it
    waits for nobody, and its SQLite work runs on another core.

    A process that dies fails the batch it held (SQLite rolls back what it had not
    committed) and the next batch starts another, once that one has reported the
    tables' last seqs and the pending count (applied before any answer of it: a
    process that died may have committed a batch it never answered). One that cannot
    start fails the batches that wait for it, and the next start waits a little
    longer each time (``RESTART_BACKOFF``).
    """

    #: Seconds ``open`` waits for the process to connect to the database.
    START_TIMEOUT = 30.0
    #: Seconds ``close`` waits for the process to end after its last commit.
    STOP_TIMEOUT = 30.0
    #: Seconds between failed starts: the first, and the most.
    RESTART_BACKOFF = (1.0, 30.0)

    def __init__(
        self,
        store: SQLiteStore,
        loop: asyncio.AbstractEventLoop,
        on_ready: Callable[[tuple[int, int, int | None]], None],
    ) -> None:
        self._store = store
        self._loop = loop
        self._on_ready = on_ready
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False  # the process has opened the database
        self._received = bytearray()
        #: The batch handed over, and the call that finishes it; sent once the
        #: process is ready.
        self._waiting: tuple[_Batch, Callable[[], None]] | None = None
        self._sent = False
        self._resent = False  # the waiting batch went to a second process already
        #: Processes that ended and are not yet reaped.
        self._ending: list[subprocess.Popen[bytes]] = []
        #: While ``start`` waits: the process's first answer.
        self._started: asyncio.Future[None] | None = None
        self._backoff = self.RESTART_BACKOFF[0]
        self._no_start_until = 0.0  # monotonic
        self._start_failure = ""

    async def start(self) -> None:
        """Start the process and wait until it has opened the database."""
        self._started = started = self._loop.create_future()
        try:
            self._spawn()
            with anyio.fail_after(self.START_TIMEOUT):
                await started
        except TimeoutError:
            self._ended()
            raise StoreError(
                f"cannot open the store at {self._store.path}: its writer process did not"
                f" open the database within {self.START_TIMEOUT:g} s (a hung disk?)"
            ) from None
        except OSError as err:  # the process could not be started at all
            self._ended()
            raise StoreError(
                f"cannot open the store at {self._store.path}: cannot start its writer"
                f" process: {err}"
            ) from err
        except BaseException:  # cancelled, or it failed: nothing of it stays behind
            self._ended()
            raise
        finally:
            self._started = None

    def launch(self) -> None:
        """Start the process without waiting (``commit_on = "auto"``): batches go to it
        once it is ``ready``."""
        self._spawn()

    @property
    def ready(self) -> bool:
        """The process runs and has opened the database."""
        return self._ready

    @property
    def pid(self) -> int | None:
        """The running process's pid (None between one that ended and the next)."""
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        """The process is starting or running (not ended since its last start)."""
        return self._sock is not None

    def retire(self) -> None:
        """End the process with no batch in hand (``commit_on = "auto"``, quiet again):
        it stops at the end of its socket, and is reaped by ``stop``."""
        assert self._waiting is None, "a batch is in the process's hands"
        self._close_socket()
        if self._process is not None:
            self._ending.append(self._process)
            self._process = None

    def _spawn(self) -> None:
        self._reap()
        ours, theirs = socket.socketpair()
        options = self._store.options
        try:
            with theirs:
                self._process = subprocess.Popen(
                    [
                        sys.executable,
                        "-I",  # isolated, without site-packages: the standard library only
                        "-S",
                        sqlite_writer.__file__,
                        str(theirs.fileno()),
                        str(self._store.path),
                        options.synchronous,
                        str(options.busy_timeout),
                    ],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
        except BaseException:
            ours.close()
            raise
        self._sock, self._received, self._ready = ours, bytearray(), False
        self._loop.add_reader(ours.fileno(), self._readable)

    def submit(self, batch: _Batch, finished: Callable[[], None]) -> None:
        """Hand ``batch`` to the process; ``finished()`` runs on the loop once it is
        committed (or failed)."""
        self._waiting, self._sent, self._resent = (batch, finished), False, False
        if self._sock is None:  # the last process died: start another
            if time.monotonic() < self._no_start_until:
                self._fail_waiting(
                    f"its writer process could not start ({self._start_failure}); the"
                    f" next try is in {self._no_start_until - time.monotonic():.1f} s"
                )
                return
            try:
                self._spawn()
            except OSError as err:
                self._start_failed(f"cannot start it: {err}")
                return
        if self._ready:
            self._send()

    def _send(self) -> None:
        """Send the waiting batch (a blocking write: the process reads while it has
        nothing in hand)."""
        assert self._waiting is not None and self._sock is not None
        batch = self._waiting[0]
        writes = (batch.inbox, batch.ops)
        try:
            try:
                sqlite_writer.send(self._sock.fileno(), writes)
            except ValueError:  # a str, int… subclass (an enum as a message id?)
                sqlite_writer.send(self._sock.fileno(), _plain(writes))
        except (ValueError, TypeError) as err:  # nothing was written: marshal failed first
            self._fail_waiting(f"a write holds a value it cannot take ({err})")
            return
        except OSError as err:
            if self._resent:
                self._died(f"could not hand it the batch: {err}")
                return
            # It died before the loop saw its socket close: nothing of a partial
            # batch was committed, so the batch goes to the next process.
            log.warning("store %s: the writer process ended (%s): starting another",
                        self._store.path, err)  # fmt: skip
            self._ended()
            self._resent = True
            try:
                self._spawn()
            except OSError as spawn_err:
                self._start_failed(f"cannot start it: {spawn_err}")
            return
        self._sent = True

    def _readable(self) -> None:
        sock = self._sock
        assert sock is not None  # read only while it is set
        try:
            data = sock.recv(1 << 20)
        except OSError as err:
            self._died(str(err))
            return
        if not data:
            self._died("it ended")
            return
        received = self._received
        received += data
        head = FRAME.size
        while self._sock is sock and len(received) >= head:
            (size,) = FRAME.unpack_from(received)
            if len(received) < head + size:
                break
            try:
                answer = marshal.loads(memoryview(received)[head : head + size])
                del received[: head + size]
                self._answered(answer)
            except Exception as err:  # a bug on either side: this socket is not to be trusted
                log.error("store %s: the writer process's answer", self._store.path, exc_info=True)
                self._died(f"an answer that could not be read: {err}")
                return

    def _answered(self, answer: tuple[Any, ...]) -> None:
        kind, value = answer
        if kind == "ready":  # at open, or a process started after another died
            self._ready, self._backoff = True, self.RESTART_BACKOFF[0]
            self._on_ready(value)
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            if self._waiting is not None and not self._sent:
                self._send()
            return
        if kind == "failed":  # it could not open the database
            self._died(value, sqlite_said=True)
            return
        waiting, self._waiting = self._waiting, None
        if waiting is None or not self._sent:
            raise ValueError("an answer for no batch")
        batch, finished = waiting
        self._store._record(batch, Outcome(*value))
        finished()

    def _died(self, reason: str, *, sqlite_said: bool = False) -> None:
        ready = self._ready
        status = self._ended()
        if not ready:
            self._start_failed(f"{reason}; {status}", sqlite_said=sqlite_said)
            return
        message = f"the store's writer process failed ({reason}; {status})"
        then = (
            "the writer thread takes the commits"
            if self._store.options.commit_on == "auto"
            else "the next write starts another"
        )
        log.error("store %s: %s: %s", self._store.path, message, then)
        if self._waiting is not None:
            self._fail_waiting(
                f"{message}; the batch was not committed, or its answer was lost: the"
                " writers must send it again"
            )

    def _start_failed(self, reason: str, *, sqlite_said: bool = False) -> None:
        """The process ended before it opened the database (or never started)."""
        path = self._store.path
        error = (
            _store_error(path, reason, "open")
            if sqlite_said
            else StoreError(
                f"cannot open the store at {path}: its writer process ended as it started"
                f" ({reason}); its own error is above, on stderr"
            )
        )
        if self._started is not None and not self._started.done():  # at open
            self._started.set_exception(error)
            return
        self._start_failure = reason
        self._no_start_until = time.monotonic() + self._backoff
        self._backoff = min(2 * self._backoff, self.RESTART_BACKOFF[1])
        log.error("store %s: %s; the next try in %.0f s", path, error, self._backoff)
        if self._waiting is not None:
            self._fail_waiting(str(error), error)

    def _fail_waiting(self, reason: str, error: StoreError | None = None) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            batch, finished = waiting
            batch.error = error or StoreError(
                f"cannot write to the store at {self._store.path}: {reason}"
            )
            finished()

    def _ended(self) -> str:
        """Forget the socket and the process (reaped later if still ending); how it ended."""
        self._close_socket()
        process, self._process = self._process, None
        if process is None:
            return "not started"
        try:  # it closed its socket, so it is ending: a moment for its exit status
            code = process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            process.kill()
            self._ending.append(process)
            return "killed by the store"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def _close_socket(self) -> None:
        """Stop reading from the process and close our end (it ends at the end of its)."""
        sock, self._sock, self._ready = self._sock, None, False
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _reap(self) -> None:
        self._ending = [process for process in self._ending if process.poll() is None]

    def reaped(self) -> bool:
        """Retired, and every process it started has ended and been waited for."""
        self._reap()
        return self._sock is None and self._process is None and not self._ending

    async def stop(self) -> None:
        """End the process after its last commit: it stops at the end of its socket."""
        self._close_socket()
        with anyio.CancelScope(shield=True):  # never leave a zombie behind
            while self._process is not None or self._ending:
                process = self._process or self._ending[-1]
                await anyio.to_thread.run_sync(self._wait_for, process)
                if process is self._process:
                    self._process = None
                else:
                    self._ending.pop()

    def _wait_for(self, process: subprocess.Popen[bytes]) -> None:
        try:
            process.wait(timeout=self.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("store %s: the writer process did not stop: killed", self._store.path)
            process.kill()
            process.wait()


def _plain(value: Any) -> Any:
    """``value`` with every subclass of str, int, float, bytes or tuple made the base
    type (marshal sends exact types only); anything else it cannot send stays, to fail."""
    kind = type(value)
    if kind in (tuple, list, set, frozenset):
        return kind(_plain(item) for item in value)
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, tuple):  # a named tuple
        return tuple(_plain(item) for item in value)
    if isinstance(value, str):
        return str.__str__(value)  # an exact str, where str() would call the subclass's
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    return value


class SQLiteStore(Store):
    Options = SQLiteOptions

    #: Seconds a stage's bookkeeping write waits to share the commit of another writer.
    LINGER = 0.005
    #: ``commit_on = "loop"``: when the moving average of the time commits hold the
    #: loop (each commit weighing ``SLOW_COMMIT_WEIGHT``) passes ``SLOW_COMMIT``
    #: seconds, the commits go to the writer thread for ``SLOW_DISK_PAUSE`` seconds. One
    #: commit about ten times as slow does it alone; a rare one twice as slow does not.
    SLOW_COMMIT = 0.005
    SLOW_COMMIT_WEIGHT = 0.1
    SLOW_DISK_PAUSE = 60.0
    #: ``commit_on = "loop"`` or ``"process"``: above this many pending rows (inbox and
    #: deliveries; under an intake-only load the store holds about 64, delivering to
    #: a sink at full speed about 200) a batch waits ``BACKLOG_DELAY_PER_ROW`` seconds
    #: per row over it before its commit, at most ``BACKLOG_DELAY_MAX`` (see _later).
    BACKLOG_FROM = 250
    BACKLOG_DELAY_PER_ROW = 0.000_02
    BACKLOG_DELAY_MAX = 0.005
    #: ``commit_on = "auto"``: when commits kept the writer thread busy (a commit in
    #: flight) for at least ``AUTO_BUSY`` of each of ``AUTO_BUSY_SECONDS`` seconds in a
    #: row, the writer process starts, and takes the commits once it is ready. It ends
    #: after ``AUTO_QUIET_SECONDS`` without a second in which its commits were in
    #: flight for ``AUTO_QUIET`` of it. So a quiet daemon keeps one process (no 13 MB
    #: for an idle writer), a busy one gets the writer process's throughput, and one
    #: busy in bursts less than a minute apart keeps it between them.
    AUTO_BUSY = 0.5
    AUTO_BUSY_SECONDS = 2
    AUTO_WINDOW = 1.0  # seconds: how long each judged window of the writer thread lasts
    #: Seconds the writer thread keeps the commits after a writer process that died
    #: or could not start.
    AUTO_RELAUNCH_PAUSE = 60.0
    AUTO_QUIET = 0.1
    AUTO_QUIET_SECONDS = 60.0

    def __init__(self, options: SQLiteOptions | None, state_dir: Path) -> None:
        self.options = options or SQLiteOptions()
        self.path = Path(state_dir) / self.options.path
        self._writer: sqlite3.Connection | None = None
        self._sql: Writer | None = None  # commits on the writer connection
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        #: The one thread that commits (None until open and after close); with
        #: ``commit_on = "loop"`` it takes only the batches that must wait for a lock.
        self._committer: _CommitThread | None = None
        self._checkpointer: _Checkpointer | None = None  # commit_on = "loop" only
        #: commit_on = "process"; with "auto", while the store is busy.
        self._process: _WriterProcess | None = None
        self._retired: list[_WriterProcess] = []  # "auto": ended, not yet reaped
        # "auto": the time commits were in flight (seconds, monotonic), and the windows
        # that judge it.
        self._flight_started = 0.0
        self._busy_total = 0.0
        self._window = (0.0, 0.0)  # (start, busy_total then)
        self._busy_windows = 0
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._busy_at = 0.0  # monotonic: the writer process's last busy second
        self._reap_timer: asyncio.TimerHandle | None = None
        self._no_launch_until = 0.0  # monotonic
        self._batch = _Batch()  # the open batch: writes join it until its commit starts
        self._in_flight: _Batch | None = None  # the batch being committed
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it was opened on
        self._pending = 0
        self._seen_sweep = 0.0
        # What this process committed: the workers take it from memory (see _Committed).
        self._recent_inbox = _Committed("inbox")
        self._recent_deliveries = _Committed("deliveries")
        #: Until this time (monotonic) commits on the loop go to the writer thread.
        self._off_loop_until = 0.0
        self._loop_commit_time = 0.0  # the moving average
        #: Whether the writer connection waits for locks (``busy_timeout``): always on
        #: the writer thread, never on the loop (``commit_on = "loop"`` switches it).
        self._writer_waits = True

    # -- connection management -------------------------------------------------------------

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)
        self._loop = asyncio.get_running_loop()
        if self.options.commit_on == "process":
            process = _WriterProcess(self, self._loop, self._others_wrote)
            try:
                await process.start()
            except BaseException:
                await anyio.to_thread.run_sync(self._close_connections)
                raise
            self._process = process
        elif self.options.commit_on in ("thread", "auto"):
            self._committer = _CommitThread(lambda batch: self._commit(batch))
            self._window = (time.monotonic(), self._busy_total)
        else:
            self._committer = _CommitThread(lambda batch: self._commit_waiting(batch))

    def _connect(self) -> sqlite3.Connection:
        options = self.options
        return sqlite_writer.connect(str(self.path), options.synchronous, options.busy_timeout)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = writer = self._connect()
            # A new connection waits for locks; a reopened store starts over on the loop.
            self._writer_waits, self._loop_commit_time, self._off_loop_until = True, 0.0, 0.0
            writer.execute("PRAGMA journal_mode=WAL")
            writer.executescript(SCHEMA)
            writer.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            # Prove we can write now rather than at the first message.
            writer.execute(
                "INSERT OR REPLACE INTO meta VALUES ('opened_at', ?)", (str(time.time()),)
            )
            if self.options.commit_on == "process":  # the writer process has its own
                self._writer = None
                writer.close()
            else:
                self._sql = Writer(writer)
            self._reader = self._connect()
            self._pending = count_pending(self._reader)
            if self.options.commit_on == "loop":  # last: nothing fails after its thread starts
                self._set_waiting(False)
                writer.execute(f"PRAGMA wal_autocheckpoint={_Checkpointer.BACKSTOP_PAGES}")
                self._checkpointer = _Checkpointer(self._connect())
        except (sqlite3.Error, OSError) as err:
            self._close_connections()
            raise _store_error(self.path, err, "open") from err

    async def close(self) -> None:
        # Every queued write is committed first, lingering ones included, rather than
        # failed once the connection is gone.
        while self._in_flight is not None or self._batch.ops or self._batch.inbox:
            if self._in_flight is None:
                self._start(self._batch)
            in_flight = self._in_flight
            if in_flight is not None:
                await self._until_committed(in_flight)
        # Detached at once: a write that comes now fails as closed, none starts a commit.
        committer, self._committer = self._committer, None
        processes, self._retired = [*self._retired, self._process], []
        self._process = None
        for timer in (self._quiet_timer, self._reap_timer):
            if timer is not None:
                timer.cancel()
        self._quiet_timer = self._reap_timer = None
        if committer is not None:
            await anyio.to_thread.run_sync(committer.stop)
        for process in processes:
            if process is not None:
                await process.stop()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await anyio.to_thread.run_sync(checkpointer.stop)
        await anyio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        # A read may still be running on another thread (an admin request racing the
        # shutdown): closing a connection under it crashes the interpreter, so wait for it.
        with self._read_lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()
        writer, self._writer = self._writer, None
        self._sql = None
        if writer is not None:
            writer.close()

    # -- group commit ----------------------------------------------------------------------

    async def _write(
        self,
        name: str,
        *args: Any,
        linger: bool = False,
        then: Callable[[Any], None] | None = None,
    ) -> Any:
        """Queue the write ``name`` of ``sqlite_writer`` with ``args`` into the open
        batch and return its result once committed.

        ``then(result)`` is the writer's bookkeeping once its op is committed: it runs
        right after the commit, even if the writer was cancelled while it waited.

        A ``linger`` write (a stage's bookkeeping: moving a message on, forgetting a
        delivered one) first waits up to ``LINGER`` for another writer to want the
        batch committed, so it shares that commit (and its fsync) instead of paying
        for its own: under load the next intake arrives within that time. Only the
        moment of the commit changes, not what is committed together.
        """
        batch = self._batch
        position = len(batch.ops)
        batch.ops.append((name, args))
        if then is not None:
            batch.after.append(lambda: then(batch.results[position]))
        if linger and not batch.wanted:
            try:
                with anyio.move_on_after(self.LINGER):
                    await self._until_committed(batch)
            finally:  # cancelled too: the batch must not wait for a writer that left
                self._want(batch)
        await self._committed(batch)
        return batch.results[position]

    async def _committed(self, batch: _Batch) -> None:
        """Return once ``batch`` is committed (raising its error).

        A writer may be cancelled while it waits: its data is committed all the same,
        and its bookkeeping (the batch's ``after``) runs with the commit.
        """
        self._want(batch)
        await self._until_committed(batch)
        if batch.error is not None:
            raise batch.error

    async def _until_committed(self, batch: _Batch) -> None:
        if batch.committed:
            return
        waiter = (self._loop or asyncio.get_running_loop()).create_future()
        batch.waiters.append(waiter)
        await waiter  # a cancelled writer cancels only its own future

    def _want(self, batch: _Batch) -> None:
        """A writer waits for ``batch``: commit it now, or as soon as the running commit ends."""
        batch.wanted = True
        if self._in_flight is None and batch is self._batch:  # not started yet
            self._start(batch)

    def _start(self, batch: _Batch) -> None:
        """Begin committing the open batch (no other commit runs)."""
        self._in_flight = batch
        self._flight_started = time.monotonic()
        process = self._process
        if process is not None and self.options.commit_on == "auto" and not process.ready:
            if not process.alive:  # it died: the writer thread again, for a while
                self._retire_process(failed=True)
            process = None  # starting: the writer thread meanwhile
        if process is not None:
            self._later(self._submit, batch)
        elif self._committer is None:
            finished = self._seal(batch)
            batch.error = StoreError(f"the store at {self.path} is closed")
            finished()
        elif self.options.commit_on == "loop" and time.monotonic() >= self._off_loop_until:
            self._later(self._commit_on_loop, batch)
        else:
            self._to_thread(batch, self._seal(batch))

    def _later(self, commit: Callable[[_Batch], None], batch: _Batch) -> None:
        """``commit_on = "loop"`` or ``"process"``: the batch stays open for two more
        turns of the loop, so the writers already woken by this turn's I/O join it
        instead of the next one; longer while the sinks fall behind.

        Why the wait grows with the backlog: these commits never hold intake up, so
        under overload each turn of the loop lets every sender through, while a sink
        delivers only its ``concurrency`` at a time: intake took the loop from the
        sinks and they delivered half as much (docs/performance.md, *The writer in its
        own process*). Waiting like a commit on the writer thread does, only while the
        store holds more than ``BACKLOG_FROM`` rows, gives the sinks their share.
        """
        assert self._loop is not None  # set with the committer or the process, at open
        over = self._pending - self.BACKLOG_FROM
        if over > 0:
            delay = min(over * self.BACKLOG_DELAY_PER_ROW, self.BACKLOG_DELAY_MAX)
            self._loop.call_later(delay, commit, batch)
        else:
            self._loop.call_soon(self._loop.call_soon, commit, batch)

    def _seal(self, batch: _Batch) -> Callable[[], None]:
        """Close ``batch`` to new writes (they join a new open batch); returns the call
        that finishes it once committed."""
        if self._batch is batch:
            self._batch = _Batch()
        # Taken out of the batch: the follow-ups refer to it, and a cycle would be left
        # to the garbage collector (with every row of the batch).
        follow_ups, batch.after = batch.after, []
        return partial(self._finished, batch, follow_ups)

    def _judge_window(self) -> None:
        """``commit_on = "auto"``, on the loop after each commit: judge each second of
        commits. On the writer thread, start the writer process once enough seconds
        in a row were busy (AUTO_BUSY); in the writer process, note a busy second
        (AUTO_QUIET), which keeps it running."""
        now = time.monotonic()
        start, busy_then = self._window
        if now - start < self.AUTO_WINDOW:
            return
        busy = (self._busy_total - busy_then) / max(now - start, 1e-9)
        self._window = (now, self._busy_total)
        if self._process is not None:
            if busy >= self.AUTO_QUIET:
                self._busy_at = now
            return
        self._busy_windows = self._busy_windows + 1 if busy >= self.AUTO_BUSY else 0
        if self._busy_windows < self.AUTO_BUSY_SECONDS or now < self._no_launch_until:
            return
        self._busy_windows = 0
        assert self._loop is not None  # set at open
        process = _WriterProcess(self, self._loop, self._others_wrote)
        try:
            process.launch()
        except OSError as err:
            self._no_launch_until = now + self.AUTO_RELAUNCH_PAUSE
            log.warning(
                "store %s: cannot start the writer process (%s): the writer thread keeps"
                " the commits for at least %.0f s",
                self.path,
                err,
                self.AUTO_RELAUNCH_PAUSE,
            )
            return
        log.info(
            "store %s: commits kept the writer thread busy (%.0f %% of the last second):"
            " a writer process takes them from here",
            self.path,
            busy * 100,
        )
        self._process = process
        self._busy_at = now
        self._quiet_timer = self._loop.call_later(self.AUTO_QUIET_SECONDS, self._judge_quiet)

    def _judge_quiet(self) -> None:
        """``commit_on = "auto"``, while the writer process runs: end it after
        AUTO_QUIET_SECONDS without a busy second (back to the writer thread), or when
        it has not even started by then."""
        assert self._loop is not None
        self._quiet_timer = None
        process = self._process
        if process is None:
            return
        quiet_for = time.monotonic() - self._busy_at
        if not process.ready:
            log.warning(
                "store %s: the writer process did not start within %.0f s: the writer"
                " thread keeps the commits",
                self.path,
                self.AUTO_QUIET_SECONDS,
            )
            self._retire_process(failed=True)
        elif quiet_for < self.AUTO_QUIET_SECONDS or self._in_flight is not None:
            wait = max(self.AUTO_QUIET_SECONDS - quiet_for, 1.0)
            self._quiet_timer = self._loop.call_later(wait, self._judge_quiet)
        else:
            log.info(
                "store %s: no busy second of commits in the last %.0f s: the writer"
                " thread takes them again",
                self.path,
                quiet_for,
            )
            self._retire_process()

    def _reap_retired(self) -> None:
        """Wait for retired writer processes that have ended; look again in a second
        while any has not (it finishes its commit first)."""
        self._reap_timer = None
        self._retired = [process for process in self._retired if not process.reaped()]
        if self._retired and self._loop is not None:
            self._reap_timer = self._loop.call_later(1.0, self._reap_retired)

    def _retire_process(self, *, failed: bool = False) -> None:
        """``commit_on = "auto"``: the writer thread takes the commits again. After a
        process that died or never started, for at least AUTO_RELAUNCH_PAUSE."""
        process, self._process = self._process, None
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        if process is not None:
            if process.alive:
                process.retire()
            self._retired.append(process)
            if self._reap_timer is None:
                self._reap_retired()
        if failed:
            self._no_launch_until = time.monotonic() + self.AUTO_RELAUNCH_PAUSE
        self._window, self._busy_windows = (time.monotonic(), self._busy_total), 0

    def _submit(self, batch: _Batch) -> None:
        """Send a batch to the writer process, some loop turns after ``_start`` chose it."""
        process = self._process
        if process is not None and self.options.commit_on == "auto" and not process.alive:
            self._retire_process(failed=True)  # it died meanwhile: the thread takes it
            process = None
        if process is None:  # retired, or the store is closing
            if self._committer is not None:
                self._to_thread(batch, self._seal(batch))
                return
            finished = self._seal(batch)
            batch.error = StoreError(f"the store at {self.path} is closed")
            finished()
            return
        # Judged by the time the process holds it (not the turns it waited here), as
        # the thread's commits are.
        self._flight_started = time.monotonic()
        process.submit(batch, self._seal(batch))

    def _to_thread(self, batch: _Batch, finished: Callable[[], None]) -> None:
        assert self._committer is not None and self._loop is not None  # set at open
        self._committer.submit(self._loop, batch, finished)

    def _commit_on_loop(self, batch: _Batch) -> None:
        """``commit_on = "loop"``: commit right here, unless another process holds the
        write lock: the loop must not wait for it, so the writer thread does."""
        finished = self._seal(batch)
        started = time.monotonic()
        try:
            self._set_waiting(False)
            committed = self._commit(batch, wait=False)
        except sqlite3.Error as err:  # the pragma: the thread's commit waits, as it should
            log.warning("store %s: could not stop waiting for locks: %s", self.path, err)
            committed = False
        if not committed:
            self._to_thread(batch, finished)
            return
        took = time.monotonic() - started
        self._loop_commit_time += self.SLOW_COMMIT_WEIGHT * (took - self._loop_commit_time)
        if self._loop_commit_time > self.SLOW_COMMIT:
            # A disk this slow stalls every route: stop committing on the loop for a while.
            self._off_loop_until = started + took + self.SLOW_DISK_PAUSE
            self._loop_commit_time = 0.0
            log.warning(
                "store %s: commits held the event loop for too long (%.0f ms the last; "
                "a slow disk?): they run on the writer thread for the next %.0f s",
                self.path,
                took * 1000,
                self.SLOW_DISK_PAUSE,
            )
        finished()

    def _commit_waiting(self, batch: _Batch) -> None:
        """On the writer thread, for ``commit_on = "loop"``: wait up to ``busy_timeout``
        for another process's lock (the connection does not wait on the loop)."""
        try:
            self._set_waiting(True)
        except sqlite3.Error as err:
            batch.error = _store_error(self.path, err, "write to")
            return
        self._commit(batch)

    def _set_waiting(self, waits: bool) -> None:
        """Make the writer connection wait for other processes' locks, or not (only when
        that changes: a commit on the thread after another keeps it)."""
        conn = self._writer
        if conn is not None and waits != self._writer_waits:
            timeout = int(self.options.busy_timeout * 1000) if waits else 0
            conn.execute(f"PRAGMA busy_timeout={timeout}")
            self._writer_waits = waits

    def _finished(self, batch: _Batch, follow_ups: list[Callable[[], None]]) -> None:
        """On the loop, as the commit ends: the writers' bookkeeping, in commit order,
        then the next batch's commit if a writer waits for it, then the writers."""
        self._in_flight = None
        if self.options.commit_on == "auto":
            self._busy_total += time.monotonic() - self._flight_started
        try:
            if self.options.commit_on == "auto":
                try:
                    self._judge_window()
                except Exception:  # a bug in judging: the commit stands, the thread goes on
                    log.error("store %s: judging the store's load", self.path, exc_info=True)
            if batch.error is None:
                if self._checkpointer is not None:
                    self._checkpointer.wanted()
                if batch.outcome is not None:
                    self._apply(batch, batch.outcome)
                if batch.inbox:
                    follow_ups.insert(0, partial(self._remember_inbox, batch))
                for follow_up in follow_ups:
                    try:
                        follow_up()
                    except Exception:  # a bug in bookkeeping: the commit stands, go on
                        log.error("store bookkeeping after a commit failed", exc_info=True)
        finally:
            try:
                if self._batch.wanted:
                    self._start(self._batch)
            finally:
                batch.committed = True
                for waiter in batch.waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _remember_inbox(self, batch: _Batch) -> None:
        """Hand the batch's new inbox rows to the chain workers (see _Committed)."""
        first = batch.first_inbox_seq
        self._recent_inbox.add(
            [
                ((row[0],), seq, message, len(row[2]))
                for seq, row, message in zip(
                    range(first, first + len(batch.inbox)),
                    batch.inbox,
                    batch.inbox_messages,
                    strict=True,
                )
            ]
        )

    def _commit(self, batch: _Batch, *, wait: bool = True) -> bool:
        """Commit ``batch`` on the writer connection (a failure becomes its error).
        Without ``wait``, returns False, having written nothing, if another process
        holds the write lock."""
        try:
            if self._sql is None:
                raise StoreError(f"the store at {self.path} is closed")
            outcome = self._sql.commit(batch.inbox, batch.ops, wait=wait)
        except BaseException as err:  # a bug in a write: the batch fails with it
            batch.error = err
            return True
        if outcome.busy:
            return False
        self._record(batch, outcome)
        return True

    def _record(self, batch: _Batch, outcome: Outcome) -> None:
        """Keep a commit's outcome for the loop to apply (or its failure)."""
        if outcome.error is not None:
            batch.error = _store_error(self.path, outcome.error, "write to")
        else:
            batch.outcome = outcome

    def _apply(self, batch: _Batch, outcome: Outcome) -> None:
        """On the loop, before the writers' bookkeeping: what the commit did to the
        pending count, and what another process's commits did to the horizons (which
        must move before the batch's own rows are remembered, so no reader passes
        over theirs)."""
        if outcome.warning is not None:
            log.warning("store %s: %s", self.path, outcome.warning)
        if outcome.others is not None:
            self._others_wrote(outcome.others)
        if outcome.others is None or outcome.others[2] is None:
            self._pending += outcome.pending_change
        batch.first_inbox_seq = outcome.first_inbox_seq
        batch.results = outcome.results

    def _others_wrote(self, others: tuple[int, int, int | None]) -> None:
        """Another connection committed (another process: ``integrator dlq replay``,
        ``purge``…): its rows are not in memory, so readers must query for them."""
        last_inbox, last_delivery, pending = others
        self._recent_inbox.move_horizon(last_inbox)
        self._recent_deliveries.move_horizon(last_delivery)
        if pending is not None:
            self._pending = pending

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            with self._read_lock:
                if self._reader is None:
                    raise StoreError(f"the store at {self.path} is closed")
                try:
                    return fn(self._reader)
                except sqlite3.Error as err:
                    raise _store_error(self.path, err, "read from") from err

        return await anyio.to_thread.run_sync(run)

    # -- intake ----------------------------------------------------------------------------

    async def enqueue(
        self,
        route: str,
        messages: Sequence[Message],
        *,
        dedupe_window: float | None = None,
        json_bodies: Sequence[bytes | None] | None = None,
    ) -> list[bool]:
        now = time.time()
        # Every message encoded before any row is queued: one that cannot be encoded
        # must leave nothing of its call behind in the batch.
        if json_bodies is None:
            rows = [(route, m.id, encode(m), now) for m in messages]
        else:
            bodies = zip(messages, json_bodies, strict=True)
            rows = [(route, m.id, encode(m, text), now) for m, text in bodies]
        if dedupe_window is not None:
            return await self._enqueue_once(route, messages, rows, dedupe_window, now)
        batch = self._batch
        batch.inbox.extend(rows)
        batch.inbox_messages.extend(messages)  # remembered once the batch is committed
        await self._committed(batch)
        return [True] * len(messages)

    async def _enqueue_once(
        self,
        route: str,
        messages: Sequence[Message],
        rows: list[InboxRow],
        dedupe_window: float,
        now: float,
    ) -> list[bool]:
        """Enqueue each message (its row in ``rows``) unless its id was seen within
        ``dedupe_window``."""
        sweep = now - self._seen_sweep > 60
        if sweep:
            self._seen_sweep = now

        def remember(result: tuple[list[bool], list[int]]) -> None:
            accepted, seqs = result
            kept = [(m, row) for m, row, ok in zip(messages, rows, accepted, strict=True) if ok]
            self._recent_inbox.add(
                [((route,), seq, m, len(row[2])) for seq, (m, row) in zip(seqs, kept, strict=True)]
            )

        result = await self._write(
            "enqueue_once", route, rows, dedupe_window, now, sweep, then=remember
        )
        accepted: list[bool] = result[0]
        return accepted

    def pending(self) -> int:
        return self._pending

    def helper_pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    # -- route stage -----------------------------------------------------------------------

    async def inbox_after(self, route: str, after: int, limit: int) -> list[InboxItem]:
        memory, key = self._recent_inbox, (route,)
        rows = memory.take_fresh(key, after, limit)
        if rows is None:
            where = "route = ? AND attempts = 0 AND seq > ?"
            rows = await self._read(
                lambda conn: memory.read(conn, key, where, (route, after), limit)
            )
        return [InboxItem(seq, route, message) for seq, message in rows]

    async def inbox_retries(self, route: str) -> list[InboxItem]:
        def read(conn: sqlite3.Connection) -> list[InboxItem]:
            rows = conn.execute(
                "SELECT seq, message, attempts, next_at, first_error, first_attempt_at"
                " FROM inbox WHERE route = ? AND attempts > 0 ORDER BY next_at",
                (route,),
            ).fetchall()
            return [InboxItem(r[0], route, decode(r[1]), *r[2:]) for r in rows]

        result: list[InboxItem] = await self._read(read)
        return result

    async def route_done(self, done: Sequence[tuple[InboxItem, dict[str, list[Message]]]]) -> None:
        now = time.time()
        seqs = [item.seq for item, _ in done]
        # One row per (output, sink). An output that *is* the inbox message (the chain
        # passed it on unchanged) is copied from the inbox row, not encoded again.
        rows: list[tuple[str, str, str, bytes | None, int, float]] = []
        written: list[tuple[Message, int]] = []
        for item, outputs in done:
            for sink, messages in outputs.items():
                for m in messages:
                    if m is item.message:
                        rows.append((item.route, sink, m.id, None, item.seq, now))
                        written.append((m, self._recent_inbox.size(item.seq)))
                    else:
                        try:
                            blob = encode(m)
                        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as err:
                            raise UnstorableOutput(
                                item, f"output {m.id} of the chain cannot be stored: {err}"
                            ) from err
                        rows.append((item.route, sink, m.id, blob, item.seq, now))
                        written.append((m, len(blob)))
        if not rows:  # every item dropped or filtered: only the inbox rows go
            forget = self._recent_inbox.forget
            await self._write(
                "delete_rows", "inbox", seqs, linger=True, then=lambda _: forget(seqs)
            )
            return

        def hand_on(result: tuple[int, set[int] | None]) -> None:
            first_seq, present = result
            self._recent_inbox.forget(seqs)
            kept = zip(rows, written, strict=True)
            if present is not None:  # some already done (a replay raced us)
                kept = (pair for pair in kept if pair[0][4] in present)  # type: ignore[assignment]
            self._recent_deliveries.add(
                [
                    ((row[0], row[1]), first_seq + i, m, size)
                    for i, (row, (m, size)) in enumerate(kept)
                ]
            )

        await self._write("route_done", seqs, rows, linger=True, then=hand_on)

    async def inbox_reschedule(self, item: InboxItem, next_at: float, error: str) -> None:
        first_at = item.first_attempt_at or time.time()
        first_error = item.first_error or error
        await self._write("inbox_reschedule", item.seq, next_at, first_error, first_at)
        item.attempts += 1
        item.next_at, item.first_error, item.first_attempt_at = next_at, first_error, first_at

    # -- sink stage ------------------------------------------------------------------------

    async def deliveries_after(
        self, route: str, sink: str, after: int, limit: int
    ) -> list[Delivery]:
        memory, key = self._recent_deliveries, (route, sink)
        rows = memory.take_fresh(key, after, limit)
        if rows is None:
            where = "route = ? AND sink = ? AND attempts = 0 AND seq > ?"
            rows = await self._read(
                lambda conn: memory.read(conn, key, where, (route, sink, after), limit)
            )
        return [Delivery(seq, route, sink, message) for seq, message in rows]

    async def delivery_retries(self, route: str, sink: str) -> list[Delivery]:
        def read(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                "SELECT seq, message, attempts, next_at, first_error, last_error,"
                " first_attempt_at FROM deliveries WHERE route = ? AND sink = ? AND attempts > 0"
                " ORDER BY next_at",
                (route, sink),
            ).fetchall()
            return [Delivery(r[0], route, sink, decode(r[1]), *r[2:]) for r in rows]

        result: list[Delivery] = await self._read(read)
        return result

    async def delivered(self, delivery: Delivery) -> None:
        forget = self._recent_deliveries.forget
        await self._write("delivered", delivery.seq, then=lambda _: forget((delivery.seq,)))

    async def delivered_many(self, deliveries: Sequence[Delivery]) -> None:
        seqs = [d.seq for d in deliveries]
        forget = self._recent_deliveries.forget
        await self._write(
            "delete_rows", "deliveries", seqs, linger=True, then=lambda _: forget(seqs)
        )

    async def reschedule(self, delivery: Delivery, next_at: float, error: str) -> None:
        first_at = delivery.first_attempt_at or time.time()
        first_error = delivery.first_error or error
        await self._write("reschedule", delivery.seq, next_at, first_error, error, first_at)
        delivery.attempts += 1
        delivery.next_at, delivery.first_error, delivery.last_error = next_at, first_error, error
        delivery.first_attempt_at = first_at

    async def reroute(self, delivery: Delivery, sink: str, error: str) -> None:
        self._recent_deliveries.forget((delivery.seq,))
        now = time.time()
        first_error = f"{delivery.sink}: {error}"
        await self._write(
            "reroute",
            delivery.seq,
            delivery.route,
            sink,
            delivery.message.id,
            first_error,
            now,
            # Not in memory: the fallback's worker must read it from the table.
            then=self._recent_deliveries.move_horizon,
        )

    # -- dead letters ----------------------------------------------------------------------

    async def dead_letter(self, item: InboxItem | Delivery, error: str) -> DeadLetter:
        now = time.time()
        sink = item.sink if isinstance(item, Delivery) else ""
        table = "deliveries" if isinstance(item, Delivery) else "inbox"
        attempts = item.attempts + 1
        first_error = item.first_error or error
        first_at = item.first_attempt_at or now
        dead = (item.route, sink, item.message.id, attempts, first_error, error, first_at, now)
        recent = self._recent_deliveries if isinstance(item, Delivery) else self._recent_inbox
        entry = await self._write(
            "dead_letter", table, item.seq, dead, then=lambda _: recent.forget((item.seq,))
        )
        return DeadLetter(
            id=entry[0] if entry else 0,
            route=item.route,
            sink=sink,
            # What the DLQ holds, so the integrator_dead_letter hook sees what
            # `integrator dlq show` will.
            message=decode(entry[1]) if entry else item.message,
            attempts=attempts,
            first_error=first_error,
            last_error=error,
            first_attempt_at=first_at,
            failed_at=now,
        )

    _DLQ_COLUMNS = (
        "id, route, sink, message, attempts, first_error, last_error, first_attempt_at, failed_at"
    )

    @staticmethod
    def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
        return DeadLetter(row[0], row[1], row[2], decode(row[3]), *row[4:])

    async def dlq_list(
        self, *, route: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        where, args = _dlq_filter(route, since)

        def read(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                f"SELECT {self._DLQ_COLUMNS} FROM dlq {where} ORDER BY id LIMIT ?", (*args, limit)
            ).fetchall()
            return [self._dead_letter(row) for row in rows]

        result: list[DeadLetter] = await self._read(read)
        return result

    async def dlq_get(self, entry_id: int) -> DeadLetter | None:
        def read(conn: sqlite3.Connection) -> DeadLetter | None:
            row = conn.execute(
                f"SELECT {self._DLQ_COLUMNS} FROM dlq WHERE id = ?", (entry_id,)
            ).fetchone()
            return self._dead_letter(row) if row else None

        result: DeadLetter | None = await self._read(read)
        return result

    async def dlq_count(self, route: str | None = None) -> int:
        where, args = _dlq_filter(route, None)

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute(f"SELECT count(*) FROM dlq {where}", args).fetchone()[0])

        result: int = await self._read(read)
        return result

    async def dlq_ids(self, route: str | None = None) -> list[int]:
        where, args = _dlq_filter(route, None)

        def read(conn: sqlite3.Connection) -> list[int]:
            return [r[0] for r in conn.execute(f"SELECT id FROM dlq {where} ORDER BY id", args)]

        result: list[int] = await self._read(read)
        return result

    async def dlq_replay(self, entry_ids: Sequence[int]) -> int:
        def moved_in(result: tuple[int, int, int]) -> None:
            # Not in memory: the workers must read them from the tables.
            _, last_inbox, last_delivery = result
            self._recent_inbox.move_horizon(last_inbox)
            self._recent_deliveries.move_horizon(last_delivery)

        result = await self._write("dlq_replay", list(entry_ids), time.time(), then=moved_in)
        moved: int = result[0]
        return moved

    async def dlq_purge(
        self, entry_ids: Sequence[int] | None = None, route: str | None = None
    ) -> int:
        ids = list(entry_ids) if entry_ids is not None else None
        result: int = await self._write("dlq_purge", ids, route)
        return result

    # -- audit trail -----------------------------------------------------------------------

    async def audit(self, action: str, actor: str, details: dict[str, Any]) -> None:
        await self._write("audit", time.time(), actor, action, msgspec.json.encode(details))

    async def audit_list(
        self, *, since: float | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        clauses: list[str] = []
        args: list[Any] = []
        if since is not None:
            clauses.append("at >= ?")
            args.append(since)
        if action is not None:
            clauses.append("action = ?")
            args.append(action)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""

        def read(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                f"SELECT id, at, actor, action, details FROM audit {where}"
                " ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [AuditEntry(r[0], r[1], r[2], r[3], msgspec.json.decode(r[4])) for r in rows]

        result: list[AuditEntry] = await self._read(read)
        return result

    # -- state -----------------------------------------------------------------------------

    async def get_state(self, key: str) -> Any:
        def read(conn: sqlite3.Connection) -> Any:
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            return msgspec.json.decode(row[0]) if row else None

        return await self._read(read)

    async def set_state(self, key: str, value: Any) -> None:
        await self._write("set_state", key, msgspec.json.encode(value), time.time())

    async def remember(self, scope: str, key: str, window: float, *, owner: str = "") -> bool:
        now = time.time()
        sweeps: dict[str, float] = self.__dict__.setdefault("_remember_sweeps", {})
        sweep = now - sweeps.get(scope, 0.0) > 60
        if sweep:
            sweeps[scope] = now
        result: bool = await self._write("remember", scope, key, owner, window, now, sweep)
        return result

    async def depths(self) -> dict[tuple[str, str], int]:
        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute(
                "SELECT route, '', count(*) FROM inbox GROUP BY route UNION ALL"
                " SELECT route, sink, count(*) FROM deliveries GROUP BY route, sink"
            ).fetchall()
            return {(route, sink): count for route, sink, count in rows}

        result: dict[tuple[str, str], int] = await self._read(read)
        return result


Key = tuple[str, ...]
"""Whose rows: ``(route,)`` in the inbox, ``(route, sink)`` in deliveries."""


class _Committed:
    """Messages this process committed to one table, by seq, until their row is gone.

    Two savings. A reader takes a message from here instead of decoding its row (most
    of a read's cost). And a reader that has caught up with the table takes the rows
    committed since from here, without a query and a thread hop. That is sound only
    while every newer row of the table is here, so whatever adds rows another way
    (another process, such as ``integrator dlq replay``; a DLQ replay or a reroute in
    this one; a message over the memory budget) moves the *horizon*, and readers query
    the table until a query has seen past it. Readers also query at least every
    ``RECHECK`` seconds, which is how rows another process adds to an idle daemon are
    found.

    Readers run on a worker thread while the loop adds and forgets: single dict and
    deque operations are atomic under the GIL.
    """

    BUDGET = 8 * 1024 * 1024  # bytes of encoded messages
    RECHECK = 1.0  # seconds a caught-up reader may go without querying the table

    def __init__(self, table: str) -> None:
        self.table = table
        self.horizon = 0  # rows at or below this seq may be missing here
        self._messages: dict[int, tuple[Message, int]] = {}
        self._bytes = 0
        self._fresh: dict[Key, deque[int]] = {}
        # key -> (the table's last seq when its reader caught up, the reader's cursor
        # after that query, when)
        self._synced: dict[Key, tuple[int, int, float]] = {}

    def add(self, items: Sequence[tuple[Key, int, Message, int]]) -> None:
        """Committed rows (key, seq, message, encoded size), in seq order."""
        for key, seq, message, size in items:
            if self._bytes + size > self.BUDGET:
                self.move_horizon(seq)  # its reader must query the table for it
                continue
            self._messages[seq] = (message, size)
            self._bytes += size
            fresh = self._fresh.get(key)
            if fresh is None:
                fresh = self._fresh[key] = deque()
            fresh.append(seq)

    def move_horizon(self, seq: int) -> None:
        self.horizon = max(self.horizon, seq)

    def size(self, seq: int, default: int = 1024) -> int:
        """The encoded size of a message held here (``default`` when it is not)."""
        entry = self._messages.get(seq)
        return default if entry is None else entry[1]

    def forget(self, seqs: Any) -> None:
        """Rows deleted from the table."""
        for seq in seqs:
            entry = self._messages.pop(seq, None)
            if entry is not None:
                self._bytes -= entry[1]

    def take_fresh(self, key: Key, after: int, limit: int) -> list[tuple[int, Message]] | None:
        """``key``'s rows after ``after`` from memory; None when the table must be read."""
        synced = self._synced.get(key)
        if synced is None:
            return None
        last_seq, cursor, at = synced
        if last_seq < self.horizon or after < cursor or time.monotonic() - at > self.RECHECK:
            return None
        fresh = self._fresh.get(key)
        if not fresh:
            return []
        messages = self._messages
        while fresh and (fresh[0] <= after or fresh[0] not in messages):
            fresh.popleft()  # handed out already, or its row is gone
        found: list[tuple[int, Message]] = []
        for seq in fresh:
            entry = messages.get(seq)
            if entry is not None:
                found.append((seq, entry[0]))
                if len(found) == limit:
                    break
        return found

    def read(
        self, conn: sqlite3.Connection, key: Key, where: str, args: tuple[Any, ...], limit: int
    ) -> list[tuple[int, Message]]:
        """Query ``key``'s rows (``where``, ordered by seq): messages held here are not
        decoded again. A query that returns fewer than ``limit`` rows has caught up."""
        (last_seq,) = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {self.table}").fetchone()
        seqs = [
            seq
            for (seq,) in conn.execute(
                f"SELECT seq FROM {self.table} WHERE {where} ORDER BY seq LIMIT ?", (*args, limit)
            )
        ]
        found = self._get_many(seqs, conn)
        if len(seqs) < limit:
            # Every row of key up to last_seq is in this answer (last_seq was read
            # first); anything committed later by this process is in _fresh.
            self._synced[key] = (last_seq, seqs[-1] if seqs else args[-1], time.monotonic())
        return [(seq, found[seq]) for seq in seqs if seq in found]

    def _get_many(self, seqs: list[int], conn: sqlite3.Connection) -> dict[int, Message]:
        found: dict[int, Message] = {}
        missing: list[int] = []
        for seq in seqs:
            entry = self._messages.get(seq)
            if entry is None:
                missing.append(seq)
            else:
                found[seq] = entry[0]
        for seq, blob in select_by_seq(conn, self.table, "seq, message", missing):
            found[seq] = decode(blob)
        return found


def _dlq_filter(route: str | None, since: float | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    args: list[Any] = []
    if route is not None:
        clauses.append("route = ?")
        args.append(route)
    if since is not None:
        clauses.append("failed_at >= ?")
        args.append(since)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _store_error(path: Path, err: BaseException | str, action: str) -> StoreError:
    text = str(err)
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    advice = ""
    lowered = text.lower()
    if "full" in lowered or "no space" in lowered:
        advice = "; free disk space in the state directory"
    elif "readonly" in lowered or "read-only" in lowered or "permission" in lowered:
        advice = "; make the state directory writable by the daemon's user"
    elif "unable to open" in lowered:
        advice = "; check that the state directory exists and is writable"
    elif "locked" in lowered or "busy" in lowered:
        advice = "; another process holds the store (a second daemon on the same state_dir?)"
    elif action == "open":
        advice = "; daemon.state_dir must be a directory the daemon's user can write"
    return StoreError(f"cannot {action} the store at {path}: {text}{advice}")


@hookimpl
def integrator_store_backends(register: Any) -> None:
    register("sqlite", SQLiteStore)
