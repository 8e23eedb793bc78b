"""``commit_on = "process"``: the store's writer in a process of its own.

Everything the store promises is tested for this mode with the others (the ``store``
fixture of test_store.py); these are the promises of the process itself: where the
writes run, what happens when it dies, and that it never outlives the store."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from integrator.delivery import sqlite as sqlite_store
from integrator.delivery import sqlite_writer
from integrator.delivery.sqlite import SQLiteOptions, SQLiteStore
from integrator.errors import StoreError
from integrator.message import Message, encode
from integrator.testing.waiting import eventually


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(SQLiteOptions(commit_on="process"), tmp_path)
    await store.open()
    yield store
    await store.close()


def writer_pid(store: SQLiteStore) -> int:
    assert store._process is not None and store._process._process is not None
    return store._process._process.pid


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an ended child not yet waited for)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_writes_are_committed_by_a_child_process_not_by_the_daemon(
    store: SQLiteStore,
) -> None:
    in_daemon: list[object] = []
    store._commit = lambda batch, **kw: in_daemon.append(batch)  # type: ignore[method-assign]
    await store.enqueue("r", [Message(body=1, id="a")])
    assert in_daemon == []
    stat = Path(f"/proc/{writer_pid(store)}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()  # its parent
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT msg_id FROM inbox").fetchall() == [("a",)]


async def test_closing_the_store_ends_the_writer_process_after_its_last_commit(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on="process"), tmp_path)
    await store.open()
    pid = writer_pid(store)
    process = store._process._process  # type: ignore[union-attr]
    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(store.enqueue, "r", [Message(body=n)])
    await store.close()
    assert process is not None and process.returncode == 0
    assert not is_running(pid)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone() == (50,)


async def test_the_writer_process_ignores_sigterm_and_sigint(store: SQLiteStore) -> None:
    # systemd signals the whole group on stop: the daemon, not the signal, ends the writer.
    pid = writer_pid(store)
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    await anyio.sleep(0.1)
    await store.enqueue("r", [Message(body=1)])
    assert writer_pid(store) == pid and is_running(pid)


async def test_a_writer_process_killed_mid_commit_fails_that_batch_and_the_next_starts_another(
    store: SQLiteStore,
) -> None:
    pid = writer_pid(store)
    os.kill(pid, signal.SIGSTOP)  # holds the batch: it cannot answer
    failed: list[StoreError] = []

    async def write() -> None:
        try:
            await store.enqueue("r", [Message(body="lost", id="lost")])
        except StoreError as err:
            failed.append(err)

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        await anyio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    assert len(failed) == 1
    assert "writer process failed" in str(failed[0]) and "killed by signal 9" in str(failed[0])
    await store.enqueue("r", [Message(body="next", id="next")])
    assert writer_pid(store) != pid
    assert [item.message.id for item in await store.inbox_after("r", 0, 10)] == ["next"]
    assert store.pending() == 1


async def test_a_writer_process_that_died_while_idle_is_replaced_without_failing_a_write(
    store: SQLiteStore,
) -> None:
    pid = writer_pid(store)
    os.kill(pid, signal.SIGKILL)
    await anyio.sleep(0.2)  # the loop sees its socket close
    await store.enqueue("r", [Message(body=1)])
    assert writer_pid(store) != pid
    assert store.pending() == 1


async def test_rows_a_dead_writer_process_committed_but_never_answered_are_found(
    store: SQLiteStore,
) -> None:
    await store.enqueue("r", [Message(id="a")])
    (a,) = await store.inbox_after("r", 0, 10)
    # What a writer killed between its COMMIT and its answer leaves: a row the
    # daemon's memory does not hold.
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO inbox (route, msg_id, message, created_at) VALUES ('r', 'orphan', ?, 0)",
            (encode(Message(body="orphan", id="orphan")),),
        )
    os.kill(writer_pid(store), signal.SIGKILL)
    await anyio.sleep(0.2)
    await store.enqueue("r", [Message(id="b")])
    ids = [item.message.id for item in await store.inbox_after("r", a.seq, 10)]
    assert ids == ["orphan", "b"]
    assert store.pending() == 3


async def test_a_sqlite_error_in_the_writer_process_is_a_clear_store_error(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on="process", busy_timeout=0.2), tmp_path)
    await store.open()
    try:
        with sqlite3.connect(store.path, isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match="database is locked; another process holds"):
                await store.enqueue("r", [Message(body=1)])
            other.execute("ROLLBACK")
        await store.enqueue("r", [Message(body=2)])  # the same process goes on
        assert store.pending() == 1
    finally:
        await store.close()


async def test_a_writer_process_that_cannot_start_fails_open_with_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "__file__", str(tmp_path / "missing.py"))
    store = SQLiteStore(SQLiteOptions(commit_on="process"), tmp_path)
    with pytest.raises(
        StoreError, match=r"cannot open the store at .*writer process ended as it started"
    ):
        await store.open()
    await store.close()  # nothing left to close, and no error


async def test_a_write_that_raises_in_the_writer_process_fails_only_its_batch(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on="process"), tmp_path)
    await store.open()  # here, so the writer's stderr is the one capfd reads
    try:
        with pytest.raises(StoreError, match="KeyError: 'no_such_write'"):
            await store._write("no_such_write")
        await store.enqueue("r", [Message(body=1)])  # the same process goes on
        assert store.pending() == 1
    finally:
        await store.close()
    assert "Traceback" in capfd.readouterr().err  # the writer's own report, for the journal


async def test_a_writer_process_that_died_unseen_gets_the_batch_sent_to_the_next(
    store: SQLiteStore,
) -> None:
    pid = writer_pid(store)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: ASYNC251  # blocking: the loop must not see it end
    batch = sqlite_store._Batch()
    batch.inbox.append(("r", "a", encode(Message(body=1, id="a")), 0.0))
    committed = anyio.Event()
    assert store._process is not None
    store._process.submit(batch, committed.set)  # at once, as the loop has not looked
    await committed.wait()
    assert batch.error is None and batch.outcome is not None
    assert writer_pid(store) != pid
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT msg_id FROM inbox").fetchall() == [("a",)]


async def test_a_writer_process_that_cannot_restart_fails_writes_and_waits_before_trying_again(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = sqlite_writer.__file__
    monkeypatch.setattr(sqlite_writer, "__file__", str(tmp_path / "missing.py"))
    os.kill(writer_pid(store), signal.SIGKILL)
    await anyio.sleep(0.2)  # the loop sees its socket close
    with pytest.raises(StoreError, match="writer process ended as it started"):
        await store.enqueue("r", [Message(body=1)])
    spawned = []
    monkeypatch.setattr(store._process, "_spawn", lambda: spawned.append(True))
    with pytest.raises(StoreError, match=r"could not start .*the next try is in"):
        await store.enqueue("r", [Message(body=2)])
    assert spawned == []  # failed at once: no new process for every write
    monkeypatch.undo()
    assert sqlite_writer.__file__ == real
    store._process._no_start_until = 0.0  # type: ignore[union-attr]  # the wait is over
    await store.enqueue("r", [Message(body=3, id="after")])
    assert [item.message.id for item in await store.inbox_after("r", 0, 10)] == ["after"]


@pytest.mark.parametrize("commit_on", ["process", "loop"])
async def test_while_the_sinks_fall_behind_a_batch_waits_longer_before_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commit_on: str
) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on=commit_on), tmp_path)  # type: ignore[arg-type]
    monkeypatch.setattr(store, "BACKLOG_FROM", 10)
    monkeypatch.setattr(store, "BACKLOG_DELAY_PER_ROW", 0.01)
    monkeypatch.setattr(store, "BACKLOG_DELAY_MAX", 0.2)
    await store.open()
    try:
        await store.enqueue("r", [Message(body=n) for n in range(15)])  # no backlog yet
        started = time.monotonic()
        await store.enqueue("r", [Message(body=1)])  # 5 rows over: 50 ms
        assert time.monotonic() - started >= 0.05
        await store.enqueue("r", [Message(body=n) for n in range(1000)])
        started = time.monotonic()
        await store.enqueue("r", [Message(body=1)])  # 1,006 over: 10 s, but at most 0.2
        assert 0.2 <= time.monotonic() - started < 5
    finally:
        await store.close()


@pytest.fixture
async def auto_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """``commit_on = "auto"``, judging every commit: busy from its first one."""
    store = SQLiteStore(SQLiteOptions(commit_on="auto"), tmp_path)
    store.AUTO_WINDOW, store.AUTO_BUSY, store.AUTO_BUSY_SECONDS = 0.0, 0.0, 1
    await store.open()
    yield store
    await store.close()


def count_commits_in_the_daemon(store: SQLiteStore) -> list[int]:
    """How many batches the writer thread committed, as a list that keeps counting."""
    counted = [0]
    commit = store._commit

    def counting(batch, **kw) -> bool:  # type: ignore[no-untyped-def]
        counted[0] += 1
        return commit(batch, **kw)

    store._commit = counting  # type: ignore[method-assign]
    return counted


async def test_auto_moves_commits_from_the_thread_to_a_writer_process_and_loses_nothing(
    auto_store: SQLiteStore,
) -> None:
    store = auto_store
    in_daemon = count_commits_in_the_daemon(store)
    ids = [f"m{n}" for n in range(300)]
    for chunk in range(0, 300, 10):  # writes keep coming while the process starts
        async with anyio.create_task_group() as tg:
            for msg_id in ids[chunk : chunk + 10]:
                tg.start_soon(store.enqueue, "r", [Message(body=1, id=msg_id)])
        await anyio.sleep(0.005)
    assert store._process is not None and store._process.ready
    on_thread = in_daemon[0]
    assert 0 < on_thread < 30  # the first commits, while the process started
    await store.enqueue("r", [Message(body=1, id="last")])
    assert in_daemon[0] == on_thread  # the process took it
    stored = [item.message.id for item in await store.inbox_after("r", 0, 1000)]
    assert stored == [*ids, "last"]
    assert store.pending() == 301


async def test_auto_gives_the_commits_back_to_the_thread_when_quiet(
    auto_store: SQLiteStore,
) -> None:
    store = auto_store
    await switch_to_the_process(store)
    await store.enqueue("r", [Message(body=1, id="b")])  # in the process
    process = store._process._process  # type: ignore[union-attr]
    store.AUTO_BUSY = 2.0  # never busy again
    store._busy_at = time.monotonic() - store.AUTO_QUIET_SECONDS  # a quiet minute
    store._judge_quiet()
    assert store._process is None
    in_daemon = count_commits_in_the_daemon(store)
    await store.enqueue("r", [Message(body=1, id="c")])
    assert in_daemon[0] == 1
    assert [i.message.id for i in await store.inbox_after("r", 0, 10)] == ["a", "b", "c"]
    assert store.pending() == 3
    assert process is not None and process.wait(timeout=5) == 0  # ended at its socket's end


async def test_auto_keeps_the_writer_process_through_a_pause_shorter_than_a_minute(
    auto_store: SQLiteStore,
) -> None:
    store = auto_store
    await switch_to_the_process(store)
    store._busy_at = time.monotonic() - 1000  # started long ago
    store._window = (time.monotonic() - 1.0, store._busy_total)
    store._busy_total += 0.2  # a second with commits in flight for a fifth of it
    store._judge_window()
    store._busy_at -= store.AUTO_QUIET_SECONDS - 10  # that second was 50 s ago
    store._judge_quiet()
    assert store._process is not None and store._quiet_timer is not None


async def test_auto_after_its_writer_process_dies_commits_go_back_to_the_thread(
    auto_store: SQLiteStore,
) -> None:
    store = auto_store
    await switch_to_the_process(store)
    store.AUTO_BUSY = 2.0  # never busy again: the thread keeps the commits
    os.kill(writer_pid(store), signal.SIGKILL)
    await anyio.sleep(0.2)  # the loop sees its socket close
    await store.enqueue("r", [Message(body=1, id="b")])
    assert store._process is None
    assert [i.message.id for i in await store.inbox_after("r", 0, 10)] == ["a", "b"]


async def test_auto_starts_the_writer_process_only_after_busy_enough_windows(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on="auto"), tmp_path)
    await store.open()
    try:

        def window(busy: float) -> None:
            """A second just ended in which commits were in flight ``busy`` of it."""
            store._window = (time.monotonic() - 1.0, store._busy_total)
            store._busy_total += busy
            store._judge_window()

        window(0.3)
        window(0.3)
        assert store._process is None  # mostly idle
        window(0.6)
        window(0.3)
        window(0.6)
        assert store._process is None  # busy, but not two seconds in a row
        window(0.6)
        assert store._process is not None
    finally:
        await store.close()


async def switch_to_the_process(store: SQLiteStore) -> None:
    """An "auto" store that judges every commit: commit message "a" on the writer
    thread, which starts the writer process, and wait until it takes the commits."""
    await store.enqueue("r", [Message(body=1, id="a")])
    await eventually_ready(store)


async def eventually_ready(store: SQLiteStore) -> None:
    await eventually(
        lambda: store._process is not None and store._process.ready, "the writer process"
    )


def pending_in_the_table(store: SQLiteStore) -> int:
    with sqlite3.connect(store.path) as conn:
        return sqlite_writer.count_pending(conn)


async def test_auto_counts_pending_rows_right_when_a_thread_commit_is_reported_after_ready(
    auto_store: SQLiteStore,
) -> None:
    store = auto_store
    await store.enqueue("r", [Message(body=1, id="a")])  # on the thread; starts the process
    assert store._process is not None and not store._process.ready
    loop = asyncio.get_running_loop()
    to_thread = store._to_thread

    def when_ready(finished) -> None:  # type: ignore[no-untyped-def]
        if store._process is not None and store._process.ready:
            finished()
        else:
            loop.call_later(0.01, when_ready, finished)

    def reported_late(batch, finished) -> None:  # type: ignore[no-untyped-def]
        to_thread(batch, lambda: when_ready(finished))  # the loop hears of it after "ready"

    store._to_thread = reported_late  # type: ignore[method-assign]
    await store.enqueue("r", [Message(body=n, id=f"b{n}") for n in range(50)])
    store._to_thread = to_thread  # type: ignore[method-assign]
    assert store._process.ready
    await store.enqueue("r", [Message(body=1, id="c")])  # the process's first commit
    assert store.pending() == pending_in_the_table(store) == 52


async def test_auto_a_write_while_the_store_closes_fails_as_closed_instead_of_waiting(
    auto_store: SQLiteStore,
) -> None:
    store = auto_store
    store.BACKLOG_FROM = -10_000  # every batch waits in _later, as under a backlog
    await switch_to_the_process(store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.close)
        await anyio.lowlevel.checkpoint()  # close is under way
        with anyio.fail_after(5), pytest.raises(StoreError, match="closed"):
            await store.enqueue("r", [Message(body=1, id="late")])


async def test_auto_a_writer_process_that_cannot_be_started_leaves_the_thread_committing(
    auto_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: object) -> None:
        raise RuntimeError("no add_reader on this loop")

    monkeypatch.setattr(sqlite_store._WriterProcess, "launch", broken)
    with anyio.fail_after(5):
        for n in range(3):
            await auto_store.enqueue("r", [Message(body=n)])
    assert auto_store._process is None and auto_store.pending() == 3
    assert "judging the store" in caplog.text
