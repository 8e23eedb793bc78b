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
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec

from integrator.delivery.store import AuditEntry, DeadLetter, Delivery, InboxItem, Store
from integrator.errors import StoreError, UnstorableOutput
from integrator.hookspecs import hookimpl
from integrator.message import Message, decode, encode

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

Op = Callable[[sqlite3.Connection], tuple[Any, int]]
"""A write: runs inside the batch transaction, returns (result, change in pending count)."""


class SQLiteOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: File name inside the state directory (or an absolute path).
    path: str = "integrator.db"
    #: "full" survives power loss; "normal" survives a process crash (kill -9) only.
    synchronous: Literal["full", "normal"] = "full"
    #: How long a writer waits for another process (e.g. `integrator dlq`) to finish.
    busy_timeout: float = 10.0
    #: Where commits run: "thread" (the store's writer thread: the event loop never
    #: waits for the disk) or "loop" (the event loop itself: more throughput per core
    #: where an fsync is quick, but each commit pauses the whole daemon for its fsync).
    commit_on: Literal["thread", "loop"] = "thread"


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
        "results",
        "waiters",
        "wanted",
    )

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.results: list[Any] = []
        # Inbox rows of plain enqueues, inserted before the ops; their seqs are
        # consecutive from ``first_inbox_seq`` (one writer holding the write lock).
        self.inbox: list[tuple[str, str, bytes, float]] = []
        self.inbox_messages: list[Message] = []  # the message of each row
        self.first_inbox_seq = 0
        self.error: BaseException | None = None
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

    def __init__(self, options: SQLiteOptions | None, state_dir: Path) -> None:
        self.options = options or SQLiteOptions()
        self.path = Path(state_dir) / self.options.path
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        #: The one thread that commits (None until open and after close); with
        #: ``commit_on = "loop"`` it takes only the batches that must wait for a lock.
        self._committer: _CommitThread | None = None
        self._checkpointer: _Checkpointer | None = None  # commit_on = "loop" only
        self._batch = _Batch()  # the open batch: writes join it until its commit starts
        self._in_flight: _Batch | None = None  # the batch being committed
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it was opened on
        self._pending = 0
        self._seen_sweep = 0.0
        # What this process committed: the workers take it from memory (see _Committed).
        self._recent_inbox = _Committed("inbox")
        self._recent_deliveries = _Committed("deliveries")
        self._data_version = 0
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
        if self.options.commit_on == "thread":
            self._committer = _CommitThread(lambda batch: self._commit(batch))
        else:
            self._committer = _CommitThread(lambda batch: self._commit_waiting(batch))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.options.busy_timeout,
            cached_statements=_CACHED_STATEMENTS,
        )
        conn.execute(f"PRAGMA synchronous={self.options.synchronous.upper()}")
        return conn

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            # A new connection waits for locks; a reopened store starts over on the loop.
            self._writer_waits, self._loop_commit_time, self._off_loop_until = True, 0.0, 0.0
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.executescript(SCHEMA)
            self._writer.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            # Prove we can write now rather than at the first message.
            self._writer.execute(
                "INSERT OR REPLACE INTO meta VALUES ('opened_at', ?)", (str(time.time()),)
            )
            self._data_version = _data_version(self._writer)
            self._reader = self._connect()
            self._pending = count_pending(self._reader)
            if self.options.commit_on == "loop":  # last: nothing fails after its thread starts
                self._set_waiting(False)
                self._writer.execute(f"PRAGMA wal_autocheckpoint={_Checkpointer.BACKSTOP_PAGES}")
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
        committer, self._committer = self._committer, None
        if committer is not None:
            await anyio.to_thread.run_sync(committer.stop)
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
        if writer is not None:
            writer.close()

    # -- group commit ----------------------------------------------------------------------

    async def _write(
        self, op: Op, *, linger: bool = False, then: Callable[[Any], None] | None = None
    ) -> Any:
        """Queue ``op`` into the open batch and return its result once committed.

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
        batch.ops.append(op)
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
        if self._committer is None:
            finished = self._seal(batch)
            batch.error = StoreError(f"the store at {self.path} is closed")
            finished()
        elif self.options.commit_on == "loop" and time.monotonic() >= self._off_loop_until:
            # The batch stays open for two more turns of the loop, so the writers
            # already woken by this turn's I/O join it instead of the next one.
            assert self._loop is not None  # set with the committer, at open
            self._loop.call_soon(self._loop.call_soon, self._commit_on_loop, batch)
        else:
            self._to_thread(batch, self._seal(batch))

    def _seal(self, batch: _Batch) -> Callable[[], None]:
        """Close ``batch`` to new writes (they join a new open batch); returns the call
        that finishes it once committed."""
        if self._batch is batch:
            self._batch = _Batch()
        # Taken out of the batch: the follow-ups refer to it, and a cycle would be left
        # to the garbage collector (with every row of the batch).
        follow_ups, batch.after = batch.after, []
        return partial(self._finished, batch, follow_ups)

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
        try:
            if batch.error is None:
                if self._checkpointer is not None:
                    self._checkpointer.wanted()
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
        """Commit ``batch`` (a failure becomes its error). Without ``wait``, returns
        False, having written nothing, if another process holds the write lock."""
        conn = self._writer
        begun = False
        try:
            if conn is None:
                raise StoreError(f"the store at {self.path} is closed")
            if (
                batch.inbox
                and not batch.ops
                and len(batch.inbox) <= _MultiRowInsert.MAX_ROWS
                and not conn.in_transaction  # never: a statement would not commit alone
            ):
                self._commit_intake(conn, batch)
                return True
            try:
                conn.execute("BEGIN IMMEDIATE")
                begun = True
                self._look_for_other_writers(conn)
                added = 0
                if batch.inbox:
                    batch.first_inbox_seq = _INSERT_INBOX_ROWS.run(conn, batch.inbox)
                    added = len(batch.inbox)
                outcomes = [op(conn) for op in batch.ops]
                conn.execute("COMMIT")
            except BaseException:
                # Not retried even for SQLITE_BUSY: the ops fill their callers' lists as
                # they run, so running them twice would hand on rows twice.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            batch.results = [result for result, _ in outcomes]
            self._pending += added + sum(delta for _, delta in outcomes)
        except sqlite3.Error as err:
            if not wait and not begun and _is_busy(err):
                return False  # the write lock was not taken: nothing was written
            batch.error = _store_error(self.path, err, "write to")
        except BaseException as err:
            batch.error = err
        return True

    def _commit_intake(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        """A batch of new inbox rows and nothing else: one INSERT in autocommit mode.

        Why: every SQLite call of the writer thread hands the GIL to the event loop
        and then waits for it while the loop is busy, so a transaction's BEGIN, checks
        and COMMIT each lengthened the commit; a one-statement transaction has one
        such wait (docs/performance.md, *Where the event loop waits*).

        Other writers are looked for after the commit: a row another process added
        before ours then lies below the horizon, which moves before our rows are
        remembered, so no reader passes over it.
        """
        first = _INSERT_INBOX_ROWS.run(conn, batch.inbox)
        batch.first_inbox_seq = first
        self._pending += len(batch.inbox)
        batch.results = []
        try:
            self._look_for_other_writers(conn)
        except Exception as err:  # the rows are committed: the batch must not fail now
            log.warning("store %s: could not look for other writers: %s", self.path, err)
            self._recent_inbox.move_horizon(first + len(batch.inbox) - 1)
            self._data_version = -1  # so the next commit looks again

    def _look_for_other_writers(self, conn: sqlite3.Connection) -> None:
        """Move the horizon if another connection committed since the last look; a look
        that fails is not taken as done, so the next commit looks again."""
        version = _data_version(conn)
        if version != self._data_version:
            self._others_wrote(conn)
            self._data_version = version

    def _others_wrote(self, conn: sqlite3.Connection) -> None:
        """Another connection committed (another process: ``integrator dlq replay``,
        ``purge``…): its rows are not in memory, so readers must query for them.

        The recount scans both tables: with ``commit_on = "loop"`` and a large backlog
        that holds the loop too, but only after another process wrote."""
        for memory in (self._recent_inbox, self._recent_deliveries):
            (last,) = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {memory.table}").fetchone()
            memory.move_horizon(last)
        self._pending = count_pending(conn)

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
        rows: list[tuple[str, str, bytes, float]],
        dedupe_window: float,
        now: float,
    ) -> list[bool]:
        """Enqueue each message (its row in ``rows``) unless its id was seen within
        ``dedupe_window``."""
        seqs: list[tuple[Key, int, Message, int]] = []

        def op(conn: sqlite3.Connection) -> tuple[list[bool], int]:
            accepted: list[bool] = []
            for message, row in zip(messages, rows, strict=True):
                msg_id = row[1]
                seen = conn.execute(
                    "SELECT at FROM seen WHERE route = ? AND msg_id = ?", (route, msg_id)
                ).fetchone()
                if seen is not None and seen[0] >= now - dedupe_window:
                    accepted.append(False)
                    continue
                conn.execute("INSERT OR REPLACE INTO seen VALUES (?, ?, ?)", (route, msg_id, now))
                inserted = conn.execute(_INSERT_INBOX, row)
                seqs.append(((route,), inserted.lastrowid or 0, message, len(row[2])))
                accepted.append(True)
            if now - self._seen_sweep > 60:
                self._seen_sweep = now
                conn.execute(
                    "DELETE FROM seen WHERE route = ? AND at < ?", (route, now - dedupe_window)
                )
            return accepted, sum(accepted)

        result: list[bool] = await self._write(op, then=lambda _: self._recent_inbox.add(seqs))
        return result

    def pending(self) -> int:
        return self._pending

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
                partial(_delete_rows, "inbox", seqs), linger=True, then=lambda _: forget(seqs)
            )
            return
        first_seq = 0
        keys: list[Key] = [(row[0], row[1]) for row in rows]

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            nonlocal first_seq
            present = _existing(conn, "inbox", seqs)
            if len(present) == len(seqs):
                todo = rows
            else:  # some already done (a replay raced us): never duplicate their outputs
                todo = [row for row in rows if row[4] in present]
                written[:] = [w for w, row in zip(written, rows, strict=True) if row[4] in present]
                keys[:] = [(row[0], row[1]) for row in todo]
            if todo:
                first_seq = _INSERT_DELIVERY_ROWS.run(conn, todo)
            _delete_rows("inbox", list(present), conn)
            return None, len(todo) - len(present)

        def hand_on(_: None) -> None:
            self._recent_inbox.forget(seqs)
            self._recent_deliveries.add(
                [
                    (key, first_seq + i, m, size)
                    for i, (key, (m, size)) in enumerate(zip(keys, written, strict=True))
                ]
            )

        await self._write(op, linger=True, then=hand_on)

    async def inbox_reschedule(self, item: InboxItem, next_at: float, error: str) -> None:
        first_at = item.first_attempt_at or time.time()
        first_error = item.first_error or error

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            conn.execute(
                "UPDATE inbox SET attempts = attempts + 1, next_at = ?, first_error = ?,"
                " first_attempt_at = ? WHERE seq = ?",
                (next_at, first_error, first_at, item.seq),
            )
            return None, 0

        await self._write(op)
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
        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            deleted = conn.execute("DELETE FROM deliveries WHERE seq = ?", (delivery.seq,)).rowcount
            return None, -deleted

        await self._write(op, then=lambda _: self._recent_deliveries.forget((delivery.seq,)))

    async def delivered_many(self, deliveries: Sequence[Delivery]) -> None:
        seqs = [d.seq for d in deliveries]
        forget = self._recent_deliveries.forget
        await self._write(
            partial(_delete_rows, "deliveries", seqs), linger=True, then=lambda _: forget(seqs)
        )

    async def reschedule(self, delivery: Delivery, next_at: float, error: str) -> None:
        first_at = delivery.first_attempt_at or time.time()
        first_error = delivery.first_error or error

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_at = ?, first_error = ?,"
                " last_error = ?, first_attempt_at = ? WHERE seq = ?",
                (next_at, first_error, error, first_at, delivery.seq),
            )
            return None, 0

        await self._write(op)
        delivery.attempts += 1
        delivery.next_at, delivery.first_error, delivery.last_error = next_at, first_error, error
        delivery.first_attempt_at = first_at

    async def reroute(self, delivery: Delivery, sink: str, error: str) -> None:
        self._recent_deliveries.forget((delivery.seq,))
        now = time.time()
        first_error = f"{delivery.sink}: {error}"

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            # A new row (the stored message copied), so the fallback's worker sees it
            # after its read cursor.
            inserted = conn.execute(
                "INSERT INTO deliveries (route, sink, msg_id, message, first_error, created_at)"
                " SELECT ?, ?, ?, message, ?, ? FROM deliveries WHERE seq = ?",
                (delivery.route, sink, delivery.message.id, first_error, now, delivery.seq),
            )
            if inserted.rowcount:
                conn.execute("DELETE FROM deliveries WHERE seq = ?", (delivery.seq,))
                self._recent_deliveries.move_horizon(inserted.lastrowid or 0)
            return None, 0

        await self._write(op)

    # -- dead letters ----------------------------------------------------------------------

    async def dead_letter(self, item: InboxItem | Delivery, error: str) -> DeadLetter:
        now = time.time()
        sink = item.sink if isinstance(item, Delivery) else ""
        table = "deliveries" if isinstance(item, Delivery) else "inbox"
        attempts = item.attempts + 1
        first_error = item.first_error or error
        first_at = item.first_attempt_at or now

        def op(conn: sqlite3.Connection) -> tuple[tuple[int, bytes] | None, int]:
            # The stored message is copied as it is (never encoded again): what was
            # committed can always be dead-lettered, whatever a middleware did to it since.
            row = conn.execute(f"SELECT message FROM {table} WHERE seq = ?", (item.seq,)).fetchone()
            if row is None:  # already gone (done by a racing replay)
                return None, 0
            (blob,) = row
            cursor = conn.execute(
                "INSERT INTO dlq (route, sink, msg_id, message, attempts, first_error,"
                " last_error, first_attempt_at, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.route,
                    sink,
                    item.message.id,
                    blob,
                    attempts,
                    first_error,
                    error,
                    first_at,
                    now,
                ),
            )
            conn.execute(f"DELETE FROM {table} WHERE seq = ?", (item.seq,))
            return (cursor.lastrowid or 0, blob), -1

        recent = self._recent_deliveries if isinstance(item, Delivery) else self._recent_inbox
        entry = await self._write(op, then=lambda _: recent.forget((item.seq,)))
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
        ids = list(entry_ids)
        now = time.time()

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            moved = 0
            for entry_id in ids:
                row = conn.execute(
                    "SELECT route, sink, msg_id, message FROM dlq WHERE id = ?", (entry_id,)
                ).fetchone()
                if row is None:
                    continue
                route, sink, msg_id, blob = row
                if sink:
                    inserted = conn.execute(
                        "INSERT INTO deliveries (route, sink, msg_id, message, created_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (route, sink, msg_id, blob, now),
                    )
                    self._recent_deliveries.move_horizon(inserted.lastrowid or 0)
                else:
                    inserted = conn.execute(_INSERT_INBOX, (route, msg_id, blob, now))
                    self._recent_inbox.move_horizon(inserted.lastrowid or 0)
                conn.execute("DELETE FROM dlq WHERE id = ?", (entry_id,))
                moved += 1
            return moved, moved

        result: int = await self._write(op)
        return result

    async def dlq_purge(
        self, entry_ids: Sequence[int] | None = None, route: str | None = None
    ) -> int:
        ids = list(entry_ids) if entry_ids is not None else None

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            if ids is not None:
                count = 0
                for entry_id in ids:
                    count += conn.execute("DELETE FROM dlq WHERE id = ?", (entry_id,)).rowcount
                return count, 0
            if route is not None:
                return conn.execute("DELETE FROM dlq WHERE route = ?", (route,)).rowcount, 0
            return conn.execute("DELETE FROM dlq").rowcount, 0

        result: int = await self._write(op)
        return result

    # -- audit trail -----------------------------------------------------------------------

    async def audit(self, action: str, actor: str, details: dict[str, Any]) -> None:
        blob = msgspec.json.encode(details)
        now = time.time()

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            conn.execute(
                "INSERT INTO audit (at, actor, action, details) VALUES (?, ?, ?, ?)",
                (now, actor, action, blob),
            )
            return None, 0

        await self._write(op)

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
        blob = msgspec.json.encode(value)
        now = time.time()

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, blob, now))
            return None, 0

        await self._write(op)

    async def remember(self, scope: str, key: str, window: float, *, owner: str = "") -> bool:
        # A row of ``seen`` holds ``LEN:KEY:OWNER`` (the length makes the prefix
        # unambiguous), so one range scan of the primary key finds a key's rows.
        now = time.time()
        prefix = f"{len(key)}:{key}:"
        end = prefix[:-1] + ";"  # the first string after every one that starts with prefix
        sweeps: dict[str, float] = self.__dict__.setdefault("_remember_sweeps", {})

        def op(conn: sqlite3.Connection) -> tuple[bool, int]:
            span = (scope, prefix, end)
            where = "WHERE route = ? AND msg_id >= ? AND msg_id < ?"
            rows = conn.execute(f"SELECT msg_id, at FROM seen {where}", span).fetchall()
            owners = [row[len(prefix) :] for row, at in rows if at >= now - window]
            if owners:
                return bool(owner) and owner in owners, 0
            if rows:
                conn.execute(f"DELETE FROM seen {where}", span)
            conn.execute("INSERT INTO seen VALUES (?, ?, ?)", (scope, prefix + owner, now))
            if now - sweeps.get(scope, 0.0) > 60:
                sweeps[scope] = now
                conn.execute("DELETE FROM seen WHERE route = ? AND at < ?", (scope, now - window))
            return True, 0

        result: bool = await self._write(op)
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
        for seq, blob in _select_by_seq(conn, self.table, "seq, message", missing):
            found[seq] = decode(blob)
        return found


class _MultiRowInsert:
    """An INSERT of many rows as one ``VALUES`` list per statement (up to ``MAX_ROWS``).

    Each SQLite step hands the GIL back to the event loop's thread and must wait to
    take it again, so the writer thread's commit lasts as long as its slowest waits;
    ``executemany`` steps once per row. One statement per batch shortened commits
    and raised ingest by 5-10 % in alternating pairs (docs/performance.md).
    """

    MAX_ROWS = 64

    def __init__(self, head: str, row: str) -> None:
        self.head = head
        self.row = row
        self._sql: dict[int, str] = {}

    def sql(self, count: int) -> str:
        sql = self._sql.get(count)
        if sql is None:
            sql = self._sql[count] = self.head + ", ".join([self.row] * count)
        return sql

    def run(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert ``rows``; the seq of the first (the rest follow it: AUTOINCREMENT
        numbers rows consecutively while the transaction holds the write lock)."""
        last = 0
        for start in range(0, len(rows), self.MAX_ROWS):
            chunk = rows[start : start + self.MAX_ROWS]
            cursor = conn.execute(self.sql(len(chunk)), [value for row in chunk for value in row])
            last = cursor.lastrowid or 0  # the rowid of the statement's last row
        return last - len(rows) + 1


_INSERT_INBOX_ROWS = _MultiRowInsert(
    "INSERT INTO inbox (route, msg_id, message, created_at) VALUES ", "(?, ?, ?, ?)"
)
_INSERT_INBOX = _INSERT_INBOX_ROWS.sql(1)
# A NULL blob copies the message from the inbox row (the chain passed it on unchanged).
_INSERT_DELIVERY_ROWS = _MultiRowInsert(
    "INSERT INTO deliveries (route, sink, msg_id, message, created_at) VALUES ",
    "(?, ?, ?, coalesce(?, (SELECT message FROM inbox WHERE seq = ?)), ?)",
)
#: Statements each connection keeps prepared: every size of both inserts, and the rest.
_CACHED_STATEMENTS = 2 * _MultiRowInsert.MAX_ROWS + 64


def count_pending(conn: sqlite3.Connection) -> int:
    """Inbox items and deliveries in a store's database: what is still in flight."""
    (inbox,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
    (deliveries,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()
    return int(inbox) + int(deliveries)


def _is_busy(err: sqlite3.Error) -> bool:
    """Another connection holds the lock: SQLITE_BUSY, or one of its extended codes
    (whose low byte is the primary code)."""
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the database."""
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version)


def _delete_rows(table: str, seqs: list[int], conn: sqlite3.Connection) -> tuple[None, int]:
    """An op: delete rows by seq (those already gone are skipped); pending drops by the rest.

    One statement per run of consecutive seqs (a stage's batch is usually one run):
    a range costs SQLite one seek, where one statement per row costs a seek, a bind
    and a reset each. Every seq of a run is in ``seqs``, so no other row is touched.
    """
    before = conn.total_changes
    conn.executemany(f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", _runs(seqs))
    return None, -(conn.total_changes - before)


def _runs(seqs: Iterable[int]) -> list[list[int]]:
    """``seqs`` as [first, last] runs of consecutive numbers."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def _existing(conn: sqlite3.Connection, table: str, seqs: list[int]) -> set[int]:
    """Which of ``seqs`` still have a row in ``table``.

    One row per query (the seqs joined into text): on the writer thread each row
    fetched is another SQLite step, and another wait for the GIL.
    """
    present: set[int] = set()
    for (found,) in _select_by_seq(conn, table, "group_concat(seq)", seqs):
        if found:  # NULL when none of the chunk's seqs has a row
            present.update(map(int, found.split(",")))
    return present


def _select_by_seq(
    conn: sqlite3.Connection, table: str, columns: str, seqs: list[int]
) -> Iterator[tuple[Any, ...]]:
    """``columns`` of the rows of ``table`` whose seq is in ``seqs`` (500 per query,
    well under SQLite's limit on parameters)."""
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        marks = ",".join("?" * len(chunk))
        yield from conn.execute(f"SELECT {columns} FROM {table} WHERE seq IN ({marks})", chunk)


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


def _store_error(path: Path, err: BaseException, action: str) -> StoreError:
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
