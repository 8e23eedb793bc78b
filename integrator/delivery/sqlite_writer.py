"""The SQLite store's writes, and the process that can run them.

Every write is a function of this module, ``name(conn, *args) -> (result, change in
pending)``, and a batch of them is committed by a :class:`Writer`. The store runs the
writer on its own thread or on the event loop (``commit_on = "thread"`` / ``"loop"``),
or (``commit_on = "process"``) in a process of its own, started as this file. So
this module imports the standard library only: the writer process starts in tens of
milliseconds and about 10 MB, and no write may capture the daemon's objects; what a
write learns comes back as its result, for the store to act on in the daemon.

The writer process (see :func:`serve`) reads batches from a socket, commits each and
answers with its :class:`Outcome`, one at a time, in ``marshal`` format (the fastest
the standard library has, for the plain values a batch holds; both ends run the
same interpreter). It ignores SIGINT and SIGTERM (the
daemon stops it, after its last commit, by closing the socket) and ends when the
socket closes, so it never outlives the daemon.
"""

from __future__ import annotations

import marshal
import os
import signal
import sqlite3
import struct
import sys

TYPE_CHECKING = False  # typing costs the writer process half a megabyte
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Any

    InboxRow = tuple[str, str, bytes, float]
    """(route, msg_id, encoded message, created_at)"""

    WriteCall = tuple[str, tuple[Any, ...]]
    """A write of a batch: the name of its function here, and its arguments."""


class Outcome:
    """What committing a batch did, for the store to apply on the event loop."""

    __slots__ = (
        "busy",
        "error",
        "first_inbox_seq",
        "others",
        "pending_change",
        "results",
        "warning",
    )

    def __init__(
        self,
        first_inbox_seq: int = 0,
        results: list[Any] | None = None,
        pending_change: int = 0,
        others: tuple[int, int, int | None] | None = None,
        busy: bool = False,
        error: str | None = None,
        warning: str | None = None,
    ) -> None:
        #: The seq of the batch's first inbox row (the rest follow it).
        self.first_inbox_seq = first_inbox_seq
        #: Each write's result, in order.
        self.results = results or []
        #: The change in the number of pending rows (inbox and deliveries).
        self.pending_change = pending_change
        #: When another connection had committed since the last look: the last seq
        #: of the inbox and of deliveries then, and the pending count after this
        #: batch (None when the count failed: only the horizons move).
        self.others = others
        #: Another process held the write lock and the batch asked not to wait:
        #: nothing was written.
        self.busy = busy
        #: The batch failed (rolled back): SQLite's message.
        self.error = error
        #: Something the daemon should log (the batch itself succeeded).
        self.warning = warning

    def astuple(self) -> tuple[Any, ...]:
        """The outcome as ``marshal`` can send it (in ``__init__``'s order)."""
        return (
            self.first_inbox_seq,
            self.results,
            self.pending_change,
            self.others,
            self.busy,
            self.error,
            self.warning,
        )


# -- the writes ------------------------------------------------------------------------


WRITES: dict[str, Callable[..., tuple[Any, int]]] = {}


def write(fn: Callable[..., tuple[Any, int]]) -> Callable[..., tuple[Any, int]]:
    """Register ``fn`` as a write a batch may name."""
    WRITES[fn.__name__] = fn
    return fn


@write
def delete_rows(conn: sqlite3.Connection, table: str, seqs: list[int]) -> tuple[None, int]:
    """Delete rows by seq (those already gone are skipped); pending drops by the rest.

    One statement per run of consecutive seqs (a stage's batch is usually one run):
    a range costs SQLite one seek, where one statement per row costs a seek, a bind
    and a reset each. Every seq of a run is in ``seqs``, so no other row is touched.
    """
    before = conn.total_changes
    conn.executemany(f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", runs(seqs))
    return None, -(conn.total_changes - before)


@write
def route_done(
    conn: sqlite3.Connection, seqs: list[int], rows: list[tuple[Any, ...]]
) -> tuple[tuple[int, set[int] | None], int]:
    """The chain's outputs of inbox rows ``seqs`` become ``rows`` of deliveries, and
    the inbox rows go. Returns the first delivery's seq, and which inbox rows were
    still there when some were not (a replay raced us: their outputs are skipped,
    never duplicated)."""
    present = existing(conn, "inbox", seqs)
    if len(present) == len(seqs):
        todo, told = rows, None
    else:
        todo, told = [row for row in rows if row[4] in present], present
    first_seq = INSERT_DELIVERY_ROWS.run(conn, todo) if todo else 0
    delete_rows(conn, "inbox", list(present))
    return (first_seq, told), len(todo) - len(present)


@write
def enqueue_once(
    conn: sqlite3.Connection,
    route: str,
    rows: list[InboxRow],
    window: float,
    now: float,
    sweep: bool,
) -> tuple[tuple[list[bool], list[int]], int]:
    """Insert each row unless its msg_id was seen on ``route`` within ``window``.
    Returns whether each was accepted, and the seqs of those that were."""
    accepted: list[bool] = []
    seqs: list[int] = []
    for row in rows:
        msg_id = row[1]
        seen = conn.execute(
            "SELECT at FROM seen WHERE route = ? AND msg_id = ?", (route, msg_id)
        ).fetchone()
        if seen is not None and seen[0] >= now - window:
            accepted.append(False)
            continue
        conn.execute("INSERT OR REPLACE INTO seen VALUES (?, ?, ?)", (route, msg_id, now))
        seqs.append(conn.execute(INSERT_INBOX, row).lastrowid or 0)
        accepted.append(True)
    if sweep:
        conn.execute("DELETE FROM seen WHERE route = ? AND at < ?", (route, now - window))
    return (accepted, seqs), len(seqs)


@write
def inbox_reschedule(
    conn: sqlite3.Connection, seq: int, next_at: float, first_error: str, first_at: float
) -> tuple[None, int]:
    conn.execute(
        "UPDATE inbox SET attempts = attempts + 1, next_at = ?, first_error = ?,"
        " first_attempt_at = ? WHERE seq = ?",
        (next_at, first_error, first_at, seq),
    )
    return None, 0


@write
def delivered(conn: sqlite3.Connection, seq: int) -> tuple[None, int]:
    deleted = conn.execute("DELETE FROM deliveries WHERE seq = ?", (seq,)).rowcount
    return None, -deleted


@write
def reschedule(
    conn: sqlite3.Connection,
    seq: int,
    next_at: float,
    first_error: str,
    error: str,
    first_at: float,
) -> tuple[None, int]:
    conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, next_at = ?, first_error = ?,"
        " last_error = ?, first_attempt_at = ? WHERE seq = ?",
        (next_at, first_error, error, first_at, seq),
    )
    return None, 0


@write
def reroute(
    conn: sqlite3.Connection,
    seq: int,
    route: str,
    sink: str,
    msg_id: str,
    first_error: str,
    now: float,
) -> tuple[int, int]:
    """Move delivery ``seq`` to ``sink`` as a new row (the stored message copied), so
    the fallback's worker sees it after its read cursor. Returns the new row's seq
    (0 when the delivery was gone)."""
    inserted = conn.execute(
        "INSERT INTO deliveries (route, sink, msg_id, message, first_error, created_at)"
        " SELECT ?, ?, ?, message, ?, ? FROM deliveries WHERE seq = ?",
        (route, sink, msg_id, first_error, now, seq),
    )
    if not inserted.rowcount:
        return 0, 0
    conn.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))
    return inserted.lastrowid or 0, 0


@write
def dead_letter(
    conn: sqlite3.Connection,
    table: str,
    seq: int,
    entry: tuple[str, str, str, int, str, str, float, float],
) -> tuple[tuple[int, bytes] | None, int]:
    """Move row ``seq`` of ``table`` to the DLQ as ``entry`` (route, sink, msg_id,
    attempts, first_error, last_error, first_attempt_at, failed_at). The stored message
    is copied as it is (never encoded again): what was committed can always be
    dead-lettered, whatever a middleware did to it since. Returns the entry's id and
    message (None when the row was already gone: done by a racing replay)."""
    row = conn.execute(f"SELECT message FROM {table} WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        return None, 0
    (blob,) = row
    route, sink, msg_id, *rest = entry
    cursor = conn.execute(
        "INSERT INTO dlq (route, sink, msg_id, message, attempts, first_error,"
        " last_error, first_attempt_at, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (route, sink, msg_id, blob, *rest),
    )
    conn.execute(f"DELETE FROM {table} WHERE seq = ?", (seq,))
    return (cursor.lastrowid or 0, blob), -1


@write
def dlq_replay(
    conn: sqlite3.Connection, ids: list[int], now: float
) -> tuple[tuple[int, int, int], int]:
    """Move DLQ entries back to where they failed. Returns how many moved, and the
    last seq each table got (0 for none): rows the daemon's memory does not hold."""
    moved = last_inbox = last_delivery = 0
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
            last_delivery = inserted.lastrowid or 0
        else:
            last_inbox = conn.execute(INSERT_INBOX, (route, msg_id, blob, now)).lastrowid or 0
        conn.execute("DELETE FROM dlq WHERE id = ?", (entry_id,))
        moved += 1
    return (moved, last_inbox, last_delivery), moved


@write
def dlq_purge(
    conn: sqlite3.Connection, ids: list[int] | None, route: str | None
) -> tuple[int, int]:
    if ids is not None:
        count = 0
        for entry_id in ids:
            count += conn.execute("DELETE FROM dlq WHERE id = ?", (entry_id,)).rowcount
        return count, 0
    if route is not None:
        return conn.execute("DELETE FROM dlq WHERE route = ?", (route,)).rowcount, 0
    return conn.execute("DELETE FROM dlq").rowcount, 0


@write
def audit(
    conn: sqlite3.Connection, now: float, actor: str, action: str, details: bytes
) -> tuple[None, int]:
    conn.execute(
        "INSERT INTO audit (at, actor, action, details) VALUES (?, ?, ?, ?)",
        (now, actor, action, details),
    )
    return None, 0


@write
def set_state(conn: sqlite3.Connection, key: str, value: bytes, now: float) -> tuple[None, int]:
    conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, value, now))
    return None, 0


@write
def remember(
    conn: sqlite3.Connection,
    scope: str,
    key: str,
    owner: str,
    window: float,
    now: float,
    sweep: bool,
) -> tuple[bool, int]:
    """Whether ``key`` is new in ``scope`` within ``window`` (or already ``owner``'s).

    A row of ``seen`` holds ``LEN:KEY:OWNER`` (the length makes the prefix
    unambiguous), so one range scan of the primary key finds a key's rows."""
    if sweep:  # first: a key seen before returns early, and the sweep must still run
        conn.execute("DELETE FROM seen WHERE route = ? AND at < ?", (scope, now - window))
    prefix = f"{len(key)}:{key}:"
    end = prefix[:-1] + ";"  # the first string after every one that starts with prefix
    span = (scope, prefix, end)
    where = "WHERE route = ? AND msg_id >= ? AND msg_id < ?"
    rows = conn.execute(f"SELECT msg_id, at FROM seen {where}", span).fetchall()
    owners = [row[len(prefix) :] for row, at in rows if at >= now - window]
    if owners:
        return bool(owner) and owner in owners, 0
    if rows:
        conn.execute(f"DELETE FROM seen {where}", span)
    conn.execute("INSERT INTO seen VALUES (?, ?, ?)", (scope, prefix + owner, now))
    return True, 0


# -- committing a batch ----------------------------------------------------------------


class Writer:
    """Commits batches on one connection, and notices other connections' commits."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._data_version = data_version(conn)

    def commit(
        self, inbox: Sequence[InboxRow], writes: Sequence[WriteCall], *, wait: bool = True
    ) -> Outcome:
        """Commit ``inbox`` rows then ``writes``, in one transaction; a SQLite error
        rolls it all back and becomes the outcome's ``error``. Without ``wait``, an
        outcome of ``busy`` says another process held the write lock and nothing was
        written. Any other exception (a bug in a write) is rolled back and raised."""
        conn = self.conn
        if (
            inbox
            and not writes
            and len(inbox) <= MultiRowInsert.MAX_ROWS
            and not conn.in_transaction  # never: a statement would not commit alone
        ):
            try:
                return self._commit_intake(inbox)
            except sqlite3.Error as err:
                return _failed(err, begun=False, wait=wait)
        begun = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            begun = True
            others = self._look()
            first = INSERT_INBOX_ROWS.run(conn, inbox) if inbox else 0
            outcomes = [WRITES[name](conn, *args) for name, args in writes]
            conn.execute("COMMIT")
        except BaseException as err:
            # Not retried even for SQLITE_BUSY: the caller decides (a write that ran
            # is rolled back with the rest, so running the batch again is safe).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error):
                return _failed(err, begun=begun, wait=wait)
            raise
        change = len(inbox) + sum(delta for _, delta in outcomes)
        if others is not None and others[2] is not None:
            others = (others[0], others[1], others[2] + change)
        return Outcome(first, [result for result, _ in outcomes], change, others)

    def _commit_intake(self, inbox: Sequence[InboxRow]) -> Outcome:
        """A batch of new inbox rows and nothing else: one INSERT in autocommit mode.

        Why: on the writer thread every SQLite call hands the GIL to the event loop
        and then waits for it while the loop is busy, so a transaction's BEGIN, checks
        and COMMIT each lengthened the commit; a one-statement transaction has one
        such wait (docs/performance.md, *Where the event loop waits*).

        Other writers are looked for after the commit: a row another process added
        before ours then lies below the horizon, which moves before our rows are
        remembered, so no reader passes over it.
        """
        first = INSERT_INBOX_ROWS.run(self.conn, inbox)
        try:
            others = self._look()
        except Exception as err:  # the rows are committed: the batch must not fail now
            self._data_version = -1  # so the next commit looks again
            last = first + len(inbox) - 1
            return Outcome(
                first,
                [],
                len(inbox),
                (last, 0, None),
                warning=f"could not look for other writers: {err}",
            )
        return Outcome(first, [], len(inbox), others)

    def _look(self) -> tuple[int, int, int | None] | None:
        """What another connection committed since the last look (see Outcome.others);
        a look that fails is not taken as done, so the next commit looks again."""
        version = data_version(self.conn)
        if version == self._data_version:
            return None
        others = self.others_wrote()
        self._data_version = version
        return others

    def others_wrote(self) -> tuple[int, int, int]:
        """Another connection committed (another process: ``integrator dlq replay``,
        ``purge``…): the last seq of each table, and the pending count. The count
        scans both tables, but only after another process wrote."""
        inbox, deliveries = self.last_seqs()
        return inbox, deliveries, count_pending(self.conn)

    def last_seqs(self) -> tuple[int, int]:
        """The last seq of the inbox and of deliveries."""
        (inbox,) = self.conn.execute("SELECT coalesce(max(seq), 0) FROM inbox").fetchone()
        (deliveries,) = self.conn.execute("SELECT coalesce(max(seq), 0) FROM deliveries").fetchone()
        return int(inbox), int(deliveries)

    def look_at_first_commit(self) -> None:
        """Take everything committed before as another writer's: the first commit
        counts the pending rows, holding the write lock (so no commit of another
        connection can fall between the count and the daemon's use of it)."""
        self._data_version = -1


def _failed(err: sqlite3.Error, *, begun: bool, wait: bool) -> Outcome:
    if not wait and not begun and is_busy(err):
        return Outcome(busy=True)  # the write lock was not taken: nothing was written
    return Outcome(error=str(err))


# -- SQL helpers -----------------------------------------------------------------------


class MultiRowInsert:
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


INSERT_INBOX_ROWS = MultiRowInsert(
    "INSERT INTO inbox (route, msg_id, message, created_at) VALUES ", "(?, ?, ?, ?)"
)
INSERT_INBOX = INSERT_INBOX_ROWS.sql(1)
# A NULL blob copies the message from the inbox row (the chain passed it on unchanged).
INSERT_DELIVERY_ROWS = MultiRowInsert(
    "INSERT INTO deliveries (route, sink, msg_id, message, created_at) VALUES ",
    "(?, ?, ?, coalesce(?, (SELECT message FROM inbox WHERE seq = ?)), ?)",
)
#: Statements each connection keeps prepared: every size of both inserts, and the rest.
CACHED_STATEMENTS = 2 * MultiRowInsert.MAX_ROWS + 64


def connect(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the store's file as every part of the store opens it."""
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        timeout=busy_timeout,
        cached_statements=CACHED_STATEMENTS,
    )
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    return conn


def count_pending(conn: sqlite3.Connection) -> int:
    """Inbox items and deliveries in a store's database: what is still in flight."""
    (inbox,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
    (deliveries,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()
    return int(inbox) + int(deliveries)


def is_busy(err: sqlite3.Error) -> bool:
    """Another connection holds the lock: SQLITE_BUSY, or one of its extended codes
    (whose low byte is the primary code)."""
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the database."""
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version)


def runs(seqs: Iterable[int]) -> list[list[int]]:
    """``seqs`` as [first, last] runs of consecutive numbers."""
    found: list[list[int]] = []
    for seq in sorted(seqs):
        if found and seq == found[-1][1] + 1:
            found[-1][1] = seq
        else:
            found.append([seq, seq])
    return found


def existing(conn: sqlite3.Connection, table: str, seqs: list[int]) -> set[int]:
    """Which of ``seqs`` still have a row in ``table``.

    One row per query (the seqs joined into text): on the writer thread each row
    fetched is another SQLite step, and another wait for the GIL.
    """
    present: set[int] = set()
    for (found,) in select_by_seq(conn, table, "group_concat(seq)", seqs):
        if found:  # NULL when none of the chunk's seqs has a row
            present.update(map(int, found.split(",")))
    return present


def select_by_seq(
    conn: sqlite3.Connection, table: str, columns: str, seqs: list[int]
) -> Iterator[tuple[Any, ...]]:
    """``columns`` of the rows of ``table`` whose seq is in ``seqs`` (500 per query,
    well under SQLite's limit on parameters)."""
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        marks = ",".join("?" * len(chunk))
        yield from conn.execute(f"SELECT {columns} FROM {table} WHERE seq IN ({marks})", chunk)


# -- the writer process ----------------------------------------------------------------

FRAME = struct.Struct("!I")
"""Each message on the socket: its length, then its ``marshal`` dump."""


def send(fd: int, value: Any) -> None:
    """Write ``value`` to the socket ``fd`` (blocking until it is all written)."""
    data = marshal.dumps(value)
    view = memoryview(FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def receive(fd: int) -> Any:
    """The next message on the socket ``fd``, or None at the end of the stream."""
    head = _read_exactly(fd, FRAME.size)
    if head is None:
        return None
    (size,) = FRAME.unpack(head)
    data = _read_exactly(fd, size)
    if data is None:
        return None
    return marshal.loads(data)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(fd: int, path: str, synchronous: str, busy_timeout: float) -> None:
    """The writer process: answer ``("ready", others)`` once connected (or
    ``("failed", message)``), then commit each ``(inbox rows, writes)`` batch received
    and answer ``("outcome", its Outcome as a tuple)``, until the socket closes.

    ``others`` holds the last seq of each table (and no pending count): rows the
    store's memory may not hold, such as those of a batch a writer process that died
    committed but never answered. Its first commit counts the pending rows, under the
    write lock: a count taken here could miss, or count twice, a commit of the
    daemon's writer thread whose outcome the loop has not applied yet."""
    try:
        conn = connect(path, synchronous, busy_timeout)
        writer = Writer(conn)
        writer.look_at_first_commit()
        ready = (*writer.last_seqs(), None)
    except sqlite3.Error as err:
        send(fd, ("failed", str(err)))
        return
    try:
        send(fd, ("ready", ready))
        while (batch := receive(fd)) is not None:
            inbox, writes = batch
            try:
                outcome = writer.commit(inbox, writes)
            except Exception as err:  # a bug in a write: the batch fails, the writer goes on
                import traceback  # only now: the writer process starts without it

                traceback.print_exc()  # to the daemon's stderr (the journal)
                outcome = Outcome(error=f"{type(err).__name__}: {err}")
            send(fd, ("outcome", outcome.astuple()))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon is gone (killed): what was committed stays, nobody waits
    finally:
        conn.close()


def main(argv: list[str]) -> None:
    fd, path, synchronous, busy_timeout = argv
    # The daemon decides when this process ends (it closes the socket after the last
    # commit): a Ctrl-C or systemd's SIGTERM to the whole group must not cut a commit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        serve(int(fd), path, synchronous, float(busy_timeout))
    finally:
        os.close(int(fd))


if __name__ == "__main__":
    main(sys.argv[1:])
