"""The SQLite store: durability semantics, group commit, DLQ and clear storage errors."""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from integrator.delivery import sqlite as sqlite_store
from integrator.delivery import sqlite_writer
from integrator.delivery.sqlite import SQLiteOptions, SQLiteStore
from integrator.errors import StoreError
from integrator.message import Message


@pytest.fixture(params=["thread", "loop", "process", "auto"])
async def store(tmp_path: Path, request: pytest.FixtureRequest):
    """The store with commits on its writer thread, on the loop, in a writer process,
    and ``"auto"``, made to move from the thread to the process after its first commit
    (so its tests cross the switch)."""
    store = SQLiteStore(SQLiteOptions(commit_on=request.param), tmp_path)
    if request.param == "auto":
        store.AUTO_WINDOW, store.AUTO_BUSY, store.AUTO_BUSY_SECONDS = 0.0, 0.0, 1
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["thread", "loop"])
async def in_process_store(tmp_path: Path, request: pytest.FixtureRequest):
    """For tests that reach into the writer connection, which ``commit_on = "process"``
    keeps in another process."""
    store = SQLiteStore(SQLiteOptions(commit_on=request.param), tmp_path)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def process_store(tmp_path: Path):
    store = SQLiteStore(SQLiteOptions(commit_on="process"), tmp_path)
    await store.open()
    yield store
    await store.close()


def _watch_commits(store: SQLiteStore, seen: Any) -> None:
    """Call ``seen(batch)`` as each batch goes to be committed, wherever ``commit_on``
    commits it: in this process (``_commit``), or handed to a writer process
    (``_submit``; with ``"auto"`` a process may start later)."""
    commit, submit = store._commit, store._submit

    def committing(batch, **kw) -> bool:  # type: ignore[no-untyped-def]
        seen(batch)
        return commit(batch, **kw)

    def submitting(batch) -> None:  # type: ignore[no-untyped-def]
        if store._process is not None:  # else it goes on to _commit, seen there
            seen(batch)
        submit(batch)

    store._commit = committing  # type: ignore[method-assign]
    store._submit = submitting  # type: ignore[method-assign]


@pytest.fixture
async def loop_store(tmp_path: Path):
    """``commit_on = "loop"``, with a busy timeout a test notices if the loop waits it out."""
    store = SQLiteStore(SQLiteOptions(commit_on="loop", busy_timeout=15), tmp_path)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def thread_store(tmp_path: Path):
    """For tests that hold a commit up while the loop goes on (a commit on the loop
    would hold the loop up as well)."""
    store = SQLiteStore(SQLiteOptions(commit_on="thread"), tmp_path)
    await store.open()
    yield store
    await store.close()


async def test_enqueued_messages_survive_reopening(tmp_path: Path) -> None:
    first = SQLiteStore(None, tmp_path)
    await first.open()
    await first.enqueue("r", [Message(body={"n": 1}, id="a"), Message(body=b"\x00raw", id="b")])
    await first.close()
    second = SQLiteStore(None, tmp_path)
    await second.open()
    items = await second.inbox_after("r", 0, 10)
    await second.close()
    assert [(i.message.id, i.message.body) for i in items] == [("a", {"n": 1}), ("b", b"\x00raw")]
    assert second.pending() == 2


async def test_a_body_stored_as_its_json_text_comes_back_whole_after_reopening(
    tmp_path: Path,
) -> None:
    text = b'{"n": 1, "tags": ["a", "\\u00e9"], "price": 12.50, "big": 12345678901234567890}'
    sent = Message(
        body=msgspec.json.decode(text),
        headers={"x-h": "v"},
        attributes={"path": "/hooks/a", "query": {}},
        id="j1",
        trace_id="t1",
    )
    first = SQLiteStore(None, tmp_path)
    await first.open()
    plain = Message(body=[1], id="j2")
    await first.enqueue("r", [sent, plain], json_bodies=[text, None])
    await first.close()
    second = SQLiteStore(None, tmp_path)
    await second.open()
    items = await second.inbox_after("r", 0, 10)
    await second.close()
    assert [i.message for i in items] == [sent, plain]


async def test_a_json_text_body_is_copied_to_deliveries_and_the_dlq_intact(
    store: SQLiteStore, tmp_path: Path
) -> None:
    text = b'{"order": 7}'
    await store.enqueue("r", [Message(body={"order": 7}, id="o")], json_bodies=[text])
    (item,) = await store.inbox_after("r", 0, 10)
    await store.route_done([(item, {"s": [item.message]})])  # copies the inbox row's blob
    await store.close()
    reopened = SQLiteStore(None, tmp_path)
    await reopened.open()
    try:
        (delivery,) = await reopened.deliveries_after("r", "s", 0, 10)
        assert (delivery.message.id, delivery.message.body) == ("o", {"order": 7})
        entry = await reopened.dead_letter(delivery, "HTTP 400")
        assert (await reopened.dlq_get(entry.id)).message.body == {"order": 7}
    finally:
        await reopened.close()


async def test_a_dead_letter_holds_and_reports_the_message_as_stored(
    store: SQLiteStore,
) -> None:
    await store.enqueue("r", [Message(body={"n": 1}, id="m")])
    (item,) = await store.inbox_after("r", 0, 10)
    item.message.body["scribbled"] = object()  # a middleware changed it in memory
    entry = await store.dead_letter(item, "refused")
    assert entry.message.body == {"n": 1}
    stored = await store.dlq_get(entry.id)
    assert stored is not None and stored.message.body == {"n": 1}


async def test_the_store_file_uses_wal(store: SQLiteStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_commits_run_on_the_thread_that_commit_on_names(
    in_process_store: SQLiteStore,
) -> None:
    store = in_process_store
    threads: list[int] = []
    original = store._commit

    def recording(batch, **kw) -> bool:  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident())
        return original(batch, **kw)

    store._commit = recording  # type: ignore[method-assign]
    await store.enqueue("r", [Message(body=1)])
    on_loop = threads == [threading.get_ident()]
    assert on_loop == (store.options.commit_on == "loop")


async def _loop_goes_on_while_locked(store: SQLiteStore, write: Any) -> None:
    """Run ``write`` while another connection holds the write lock: the loop must go
    on (only the loop can release the lock here), and the write complete after."""
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process (`integrator dlq`) writes
        ticks = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            with anyio.fail_after(10):  # far below the busy timeout the loop must not wait
                for _ in range(10):
                    await anyio.sleep(0.01)
                    ticks += 1
            other.execute("COMMIT")
        assert ticks == 10
    finally:
        other.close()


async def test_a_commit_on_the_loop_leaves_a_lock_held_elsewhere_to_the_writer_thread(
    loop_store: SQLiteStore,
) -> None:
    store = loop_store
    # Twice: the second time after a commit on the thread, which waited for the lock.
    for n in range(2):
        await _loop_goes_on_while_locked(
            store, partial(store.enqueue, "r", [Message(body=n, id=f"waited-{n}")])
        )
    ids = [i.message.id for i in await store.inbox_after("r", 0, 10)]
    assert ids == ["waited-0", "waited-1"]


async def test_a_transaction_on_the_loop_leaves_a_lock_held_elsewhere_to_the_writer_thread(
    loop_store: SQLiteStore,
) -> None:
    store = loop_store
    await store.enqueue("r", [Message(body=1)])
    (item,) = await store.inbox_after("r", 0, 10)
    # route_done: BEGIN IMMEDIATE, then its ops (not a one-statement intake commit)
    await _loop_goes_on_while_locked(store, partial(store.route_done, [(item, {})]))
    assert store.pending() == 0


async def test_a_reopened_store_commits_on_the_loop_without_waiting_for_locks(
    loop_store: SQLiteStore,
) -> None:
    store = loop_store
    await store.enqueue("r", [Message(body=1)])  # last committed on the loop
    await store.close()
    await store.open()  # a new connection, which waits for locks until told not to
    await _loop_goes_on_while_locked(store, partial(store.enqueue, "r", [Message(body=2)]))
    assert store.pending() == 2


def _commits_slowed(store: SQLiteStore, seconds: list[float], threads: list[int]) -> None:
    """Make ``store``'s commits take ``seconds[n]`` longer each, recording their thread."""
    original = store._commit

    def slowed(batch, **kw) -> bool:  # type: ignore[no-untyped-def]
        if len(threads) < len(seconds):
            time.sleep(seconds[len(threads)])  # the disk stalls
        threads.append(threading.get_ident())
        return original(batch, **kw)

    store._commit = slowed  # type: ignore[method-assign]


async def test_commits_on_the_loop_held_up_by_the_disk_go_to_the_writer_thread_for_a_while(
    loop_store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = loop_store
    store.SLOW_DISK_PAUSE = 0.2
    threads: list[int] = []
    # One commit ten times too slow tips the moving average over on its own.
    _commits_slowed(store, [store.SLOW_COMMIT / store.SLOW_COMMIT_WEIGHT * 1.5], threads)
    await store.enqueue("r", [Message(body=1)])  # slow, on the loop
    await store.enqueue("r", [Message(body=2)])  # then on the writer thread
    assert "they run on the writer thread for the next 0 s" in caplog.text
    await anyio.sleep(0.3)
    await store.enqueue("r", [Message(body=3)])  # back on the loop
    loop_thread = threading.get_ident()
    assert [t == loop_thread for t in threads] == [True, False, True]
    assert store.pending() == 3


async def test_a_rare_commit_four_times_too_slow_leaves_the_commits_on_the_loop(
    loop_store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    threads: list[int] = []
    _commits_slowed(loop_store, [loop_store.SLOW_COMMIT * 4.4], threads)  # 22 ms
    for n in range(3):
        await loop_store.enqueue("r", [Message(body=n)])
    assert threads == [threading.get_ident()] * 3
    assert "writer thread" not in caplog.text


async def test_with_commits_on_the_loop_a_checkpoint_thread_copies_the_wal_into_the_file(
    loop_store: SQLiteStore,
) -> None:
    store = loop_store
    # Far below the writer's own automatic checkpoint (the backstop): only the
    # checkpoint thread moves pages into the database file.
    assert store._writer is not None
    (pages,) = store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert pages == sqlite_store._Checkpointer.BACKSTOP_PAGES
    assert sqlite_store._Checkpointer.BACKSTOP_PAGES * 4096 > 2_000 * 1_000
    before = store.path.stat().st_size
    for start in range(0, 2_000, 200):
        await store.enqueue(
            "r", [Message(body="x" * 1_000, id=str(n)) for n in range(start, start + 200)]
        )
    with anyio.fail_after(10):
        while store.path.stat().st_size < before + 2_000 * 1_000:  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_closing_the_store_ends_its_threads(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on="loop"), tmp_path)
    await store.open()
    await store.enqueue("r", [Message(body=1)])
    await store.close()
    alive = {t.name for t in threading.enumerate()}
    assert not alive & {"integrator-store", "integrator-checkpoint"}


async def test_concurrent_writes_are_group_committed(store: SQLiteStore) -> None:
    commits: list[int] = []
    _watch_commits(store, lambda batch: commits.append(len(batch.inbox)))
    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(store.enqueue, "r", [Message(body=n)])
    assert store.pending() == 200
    assert sum(commits) == 200
    assert len(commits) < 50, f"{len(commits)} transactions for 200 writers"


async def test_writes_arriving_during_a_commit_share_the_next_one_which_follows_at_once(
    thread_store: SQLiteStore,
) -> None:
    store = thread_store
    sizes: list[int] = []
    started, gate = threading.Event(), threading.Event()
    original = store._commit

    def gated(batch) -> None:  # type: ignore[no-untyped-def]
        sizes.append(len(batch.inbox))
        if len(sizes) == 1:
            started.set()
            gate.wait(5)  # the first commit runs until the others have queued
        original(batch)

    store._commit = gated  # type: ignore[method-assign]
    next_running_when_first_returned: list[bool] = []

    async def first() -> None:
        await store.enqueue("r", [Message(body="first")])
        next_running_when_first_returned.append(store._in_flight is not None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        # A lone write starts its commit at once.
        assert await anyio.to_thread.run_sync(started.wait, 5)
        for n in range(10):
            tg.start_soon(store.enqueue, "r", [Message(body=n)])
        await anyio.sleep(0.05)
        gate.set()
    assert sizes == [1, 10]
    assert next_running_when_first_returned == [True]  # no idle disk between the two
    assert store.pending() == 11


async def test_a_failing_bookkeeping_step_is_logged_and_the_store_goes_on(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: object) -> None:
        raise ZeroDivisionError("a bug in bookkeeping")

    await store._write("set_state", "k", b"1", 0.0, then=broken)  # committed all the same
    assert "store bookkeeping after a commit failed" in caplog.text
    assert await store.enqueue("r", [Message(body=1)]) == [True]
    assert store.pending() == 1


async def test_route_done_turns_one_inbox_item_into_one_delivery_per_sink(
    store: SQLiteStore,
) -> None:
    await store.enqueue("r", [Message(body=1, id="m")])
    (item,) = await store.inbox_after("r", 0, 10)
    await store.route_done([(item, {"a": [item.message], "b": [item.message]})])
    assert await store.inbox_after("r", 0, 10) == []
    assert [d.message.id for d in await store.deliveries_after("r", "a", 0, 10)] == ["m"]
    assert [d.message.id for d in await store.deliveries_after("r", "b", 0, 10)] == ["m"]
    assert store.pending() == 2


async def test_route_done_twice_does_not_duplicate_deliveries(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(body=1)])
    (item,) = await store.inbox_after("r", 0, 10)
    await store.route_done([(item, {"a": [item.message]})])
    await store.route_done([(item, {"a": [item.message]})])
    assert len(await store.deliveries_after("r", "a", 0, 10)) == 1


@contextlib.asynccontextmanager
async def _reopened(store: SQLiteStore) -> AsyncIterator[SQLiteStore]:
    """A second store on the same file: it reads rows, not the first one's memory."""
    other = SQLiteStore(None, store.path.parent)
    await other.open()
    try:
        yield other
    finally:
        await other.close()


async def test_concurrent_enqueues_learn_the_seqs_of_their_own_rows(store: SQLiteStore) -> None:
    async with anyio.create_task_group() as tg:
        for n in range(100):
            tg.start_soon(store.enqueue, "r", [Message(body=n, id=f"m{n}")])
    remembered = [(i.seq, i.message.id) for i in await store.inbox_after("r", 0, 200)]
    async with _reopened(store) as other:
        stored = [(i.seq, i.message.id) for i in await other.inbox_after("r", 0, 200)]
    assert len(stored) == 100
    assert remembered == stored


async def test_route_done_keeps_unchanged_and_changed_outputs_in_inbox_order(
    store: SQLiteStore,
) -> None:
    await store.enqueue("r", [Message(body=n, id=f"m{n}") for n in range(4)])
    items = await store.inbox_after("r", 0, 10)
    # Odd messages pass unchanged (their stored blob is copied); even ones are changed.
    done = [
        (item, {"a": [item.message if n % 2 else item.message.evolve(body=n * 10)]})
        for n, item in enumerate(items)
    ]
    await store.route_done(done)
    async with _reopened(store) as other:
        stored = [
            (d.message.id, d.message.body) for d in await other.deliveries_after("r", "a", 0, 10)
        ]
    assert stored == [("m0", 0), ("m1", 1), ("m2", 20), ("m3", 3)]


@pytest.mark.parametrize("count", [1, 64, 65])  # one statement alone; the most; a transaction
async def test_every_row_of_an_enqueue_is_stored_with_the_seq_its_reader_is_given(
    store: SQLiteStore, count: int
) -> None:
    await store.enqueue("r", [Message(body=n, id=f"m{n}") for n in range(count)])
    remembered = [(i.seq, i.message.id) for i in await store.inbox_after("r", 0, 1000)]
    async with _reopened(store) as other:
        stored = [(i.seq, i.message.id) for i in await other.inbox_after("r", 0, 1000)]
    assert [msg_id for _, msg_id in stored] == [f"m{n}" for n in range(count)]
    assert remembered == stored
    assert store.pending() == count


async def test_a_batch_larger_than_one_insert_statement_keeps_every_row_and_its_seq(
    store: SQLiteStore,
) -> None:
    count = 150  # rows are inserted up to 64 per statement: 64 + 64 + 22
    await store.enqueue("r", [Message(body=n, id=f"m{n}") for n in range(count)])
    items = await store.inbox_after("r", 0, 1000)
    done = [
        (item, {"a": [item.message], "b": [item.message.evolve(body=-n)]})
        for n, item in enumerate(items)
    ]
    await store.route_done(done)
    remembered = {
        sink: [
            (d.seq, d.message.id, d.message.body)
            for d in await store.deliveries_after("r", sink, 0, 1000)
        ]
        for sink in ("a", "b")
    }
    async with _reopened(store) as other:
        stored = {
            sink: [
                (d.seq, d.message.id, d.message.body)
                for d in await other.deliveries_after("r", sink, 0, 1000)
            ]
            for sink in ("a", "b")
        }
    assert [i.message.id for i in items] == [f"m{n}" for n in range(count)]
    assert [body for _, _, body in stored["a"]] == list(range(count))
    assert [body for _, _, body in stored["b"]] == [-n for n in range(count)]
    assert remembered == stored
    assert store.pending() == 2 * count


async def test_route_done_skips_only_the_items_already_done(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(body=n, id=f"m{n}") for n in range(3)])
    items = await store.inbox_after("r", 0, 10)
    await store.route_done([(items[1], {"a": [items[1].message]})])
    await store.route_done([(item, {"a": [item.message]}) for item in items])
    async with _reopened(store) as other:
        ids = [d.message.id for d in await other.deliveries_after("r", "a", 0, 10)]
    assert sorted(ids) == ["m0", "m1", "m2"]
    assert store.pending() == 3


async def test_done_items_with_gaps_between_them_delete_only_their_own_rows(
    store: SQLiteStore,
) -> None:
    await store.enqueue("r", [Message(body=n, id=f"m{n}") for n in range(6)])
    items = await store.inbox_after("r", 0, 10)
    # Deleted as runs of consecutive seqs: m0-m1 and m3-m4; m2 and m5 stay.
    await store.route_done([(items[n], {}) for n in (4, 0, 3, 1)])
    async with _reopened(store) as other:
        left = [i.message.id for i in await other.inbox_after("r", 0, 10)]
    assert left == ["m2", "m5"]
    assert store.pending() == 2


async def test_delivered_rows_with_gaps_between_them_go_alone(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(body=n, id=f"m{n}") for n in range(5)])
    items = await store.inbox_after("r", 0, 10)
    await store.route_done([(item, {"a": [item.message]}) for item in items])
    deliveries = await store.deliveries_after("r", "a", 0, 10)
    await store.delivered_many([deliveries[n] for n in (0, 2, 4)])
    async with _reopened(store) as other:
        left = [d.message.id for d in await other.deliveries_after("r", "a", 0, 10)]
    assert left == ["m1", "m3"]
    assert store.pending() == 2


async def test_a_stage_write_shares_the_commit_of_intake_that_follows_it(
    store: SQLiteStore,
) -> None:
    await store.enqueue("r", [Message(body=n) for n in range(2)])
    first, second = await store.inbox_after("r", 0, 10)
    commits: list[tuple[int, int]] = []
    _watch_commits(store, lambda batch: commits.append((len(batch.inbox), len(batch.ops))))
    store.LINGER = 30.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.route_done, [(first, {})])
        await anyio.sleep(0.05)  # the stage's write is queued and lingering
        tg.start_soon(store.enqueue, "r", [Message(body=2)])
    assert commits == [(1, 1)]
    # With no intake to join, it commits on its own once it has lingered.
    store.LINGER = 0.01
    await store.route_done([(second, {})])
    assert commits == [(1, 1), (0, 1)]
    assert store.pending() == 1


def _insert_from_another_process(store: SQLiteStore, route: str, msg_id: str) -> None:
    """What `integrator dlq replay` in another process does: a row this store never wrote."""
    from integrator.message import encode

    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO inbox (route, msg_id, message, created_at) VALUES (?, ?, ?, 0)",
            (route, msg_id, encode(Message(body=msg_id, id=msg_id))),
        )


async def _drain_ids(store: SQLiteStore, route: str, cursor: int) -> tuple[list[str], int]:
    items = await store.inbox_after(route, cursor, 100)
    return [i.message.id for i in items], (items[-1].seq if items else cursor)


async def test_a_caught_up_reader_still_gets_rows_another_process_committed_first(
    store: SQLiteStore,
) -> None:
    await store.enqueue("r", [Message(id="a")])
    ids, cursor = await _drain_ids(store, "r", 0)
    assert ids == ["a"]
    _insert_from_another_process(store, "r", "theirs")
    await store.enqueue("r", [Message(id="b")])  # newer than theirs, and in memory
    ids, cursor = await _drain_ids(store, "r", cursor)
    assert ids == ["theirs", "b"]


async def test_a_caught_up_sink_gets_a_delivery_another_process_added_before_an_intake_commit(
    store: SQLiteStore,
) -> None:
    from integrator.message import encode

    await store.enqueue("r", [Message(id="a")])
    (a,) = await store.inbox_after("r", 0, 10)
    await store.route_done([(a, {"s": [a.message]})])
    (first,) = await store.deliveries_after("r", "s", 0, 10)  # the sink has caught up
    with sqlite3.connect(store.path) as conn:  # `integrator dlq replay` in another process
        conn.execute(
            "INSERT INTO deliveries (route, sink, msg_id, message, created_at)"
            " VALUES ('r', 's', 'theirs', ?, 0)",
            (encode(Message(id="theirs")),),
        )
    await store.enqueue("r", [Message(id="b")])  # intake alone: the one-statement commit
    (b,) = await store.inbox_after("r", a.seq, 10)
    await store.route_done([(b, {"s": [b.message]})])  # ours, newer, handed on in memory
    ids = [d.message.id for d in await store.deliveries_after("r", "s", first.seq, 10)]
    assert ids == ["theirs", "b"]


async def test_an_intake_commit_that_cannot_look_for_other_writers_still_succeeds(
    in_process_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = in_process_store
    await store.enqueue("r", [Message(id="a")])
    ids, cursor = await _drain_ids(store, "r", 0)
    _insert_from_another_process(store, "r", "theirs")
    looked: list[bool] = []

    def failing(conn: sqlite3.Connection) -> int:
        looked.append(True)
        raise sqlite3.OperationalError("disk I/O error")

    real = sqlite_writer.data_version
    monkeypatch.setattr(sqlite_writer, "data_version", failing)
    await store.enqueue("r", [Message(id="b")])  # committed before the look failed
    monkeypatch.setattr(sqlite_writer, "data_version", real)
    ids, cursor = await _drain_ids(store, "r", cursor)
    assert looked
    assert ids == ["theirs", "b"]  # the reader went back to the table for both


async def test_a_failed_look_at_what_another_process_wrote_is_made_again_next_commit(
    in_process_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = in_process_store
    await store.enqueue("r", [Message(id="a")])
    (item,) = await store.inbox_after("r", 0, 10)
    _insert_from_another_process(store, "r", "theirs")
    looks: list[bool] = []
    assert store._sql is not None
    real = store._sql.others_wrote

    def flaky() -> tuple[int, int, int]:
        looks.append(True)
        if len(looks) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real()

    monkeypatch.setattr(store._sql, "others_wrote", flaky)
    with pytest.raises(StoreError):
        await store.route_done([(item, {"s": [item.message]})])  # rolled back
    await store.route_done([(item, {"s": [item.message]})])
    assert len(looks) == 2  # the other process's commit was not taken as seen


async def test_rows_another_process_adds_to_an_idle_store_are_found(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store._recent_inbox, "RECHECK", 0.05)
    await store.enqueue("r", [Message(id="a")])
    ids, cursor = await _drain_ids(store, "r", 0)
    _insert_from_another_process(store, "r", "theirs")
    await anyio.sleep(0.1)
    ids, cursor = await _drain_ids(store, "r", cursor)
    assert ids == ["theirs"]


async def test_a_reader_starting_over_reads_every_row_again(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(id="a"), Message(id="b")])
    _, cursor = await _drain_ids(store, "r", 0)
    await store.enqueue("r", [Message(id="c")])
    await _drain_ids(store, "r", cursor)
    ids, _ = await _drain_ids(store, "r", 0)  # e.g. a restarted chain worker
    assert ids == ["a", "b", "c"]


async def test_messages_over_the_memory_budget_are_read_from_the_table(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store._recent_inbox, "BUDGET", 300)
    await store.enqueue("r", [Message(id="a")])
    _, cursor = await _drain_ids(store, "r", 0)
    await store.enqueue("r", [Message(id=f"m{n}", body="x" * 100) for n in range(5)])
    ids, _ = await _drain_ids(store, "r", cursor)
    assert ids == [f"m{n}" for n in range(5)]


async def test_a_replayed_dead_letter_reaches_a_caught_up_reader(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(id="a"), Message(id="b")])
    items = await store.inbox_after("r", 0, 10)
    cursor = items[-1].seq
    entry = await store.dead_letter(items[0], "bad")
    await store.inbox_after("r", cursor, 10)  # caught up
    await store.dlq_replay([entry.id])
    ids, _ = await _drain_ids(store, "r", cursor)
    assert ids == ["a"]


async def test_a_rerouted_delivery_reaches_the_caught_up_fallback(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(id="a")])
    (item,) = await store.inbox_after("r", 0, 10)
    await store.route_done([(item, {"main": [item.message]})])
    assert await store.deliveries_after("r", "backup", 0, 10) == []  # caught up, empty
    (delivery,) = await store.deliveries_after("r", "main", 0, 10)
    await store.reroute(delivery, "backup", "main is down")
    assert [d.message.id for d in await store.deliveries_after("r", "backup", 0, 10)] == ["a"]


async def test_dedupe_window_refuses_a_repeated_id(store: SQLiteStore) -> None:
    assert await store.enqueue("r", [Message(id="x")], dedupe_window=60) == [True]
    assert await store.enqueue("r", [Message(id="x")], dedupe_window=60) == [False]
    assert await store.enqueue("other", [Message(id="x")], dedupe_window=60) == [True]
    assert await store.enqueue("r", [Message(id="x")], dedupe_window=0) == [True]


async def test_a_rescheduled_delivery_is_a_retry_not_fresh(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(id="m")])
    (item,) = await store.inbox_after("r", 0, 10)
    await store.route_done([(item, {"s": [item.message]})])
    (delivery,) = await store.deliveries_after("r", "s", 0, 10)
    await store.reschedule(delivery, 123.0, "HTTP 503")
    assert await store.deliveries_after("r", "s", 0, 10) == []
    (retry,) = await store.delivery_retries("r", "s")
    assert (retry.attempts, retry.next_at, retry.first_error, retry.last_error) == (
        1,
        123.0,
        "HTTP 503",
        "HTTP 503",
    )


async def test_dead_letter_replay_and_purge(store: SQLiteStore) -> None:
    await store.enqueue("r", [Message(id="m1"), Message(id="m2")])
    items = await store.inbox_after("r", 0, 10)
    await store.route_done([(items[0], {"s": [items[0].message]})])
    (delivery,) = await store.deliveries_after("r", "s", 0, 10)
    sink_entry = await store.dead_letter(delivery, "HTTP 400")
    chain_entry = await store.dead_letter(items[1], "bad field")
    assert await store.dlq_count() == 2
    assert (sink_entry.sink, chain_entry.sink) == ("s", "")
    assert store.pending() == 0

    assert await store.dlq_replay([sink_entry.id, chain_entry.id]) == 2
    assert [d.message.id for d in await store.deliveries_after("r", "s", 0, 10)] == ["m1"]
    assert [i.message.id for i in await store.inbox_after("r", 0, 10)] == ["m2"]
    assert await store.dlq_count() == 0

    (item,) = await store.inbox_after("r", 0, 10)
    await store.dead_letter(item, "again")
    assert await store.dlq_purge(route="r") == 1
    assert await store.dlq_count() == 0


async def test_state_round_trips(store: SQLiteStore) -> None:
    await store.set_state("checkpoint:r:cursor", {"after": "2026-01-01", "page": 3})
    assert await store.get_state("checkpoint:r:cursor") == {"after": "2026-01-01", "page": 3}
    assert await store.get_state("missing") is None


async def test_a_full_disk_is_a_clear_store_error(in_process_store: SQLiteStore) -> None:
    store = in_process_store
    # SQLite's own "database or disk is full" path, reached by capping the file's pages.
    (pages,) = store._writer.execute("PRAGMA page_count").fetchone()  # type: ignore[union-attr]
    store._writer.execute(f"PRAGMA max_page_count = {pages}")  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="disk is full; free disk space in the state directory"):
        await store.enqueue("r", [Message(body="x" * 10_000) for _ in range(50)])
    assert store.pending() == 0


async def test_an_unusable_state_directory_is_a_clear_store_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # root ignores permission bits, so make the path impossible instead: a file where
    # the directory should be.
    blocker = state / "sub"
    blocker.write_text("not a directory")
    store = SQLiteStore(SQLiteOptions(path="sub/integrator.db"), state)
    with pytest.raises(
        StoreError,
        match=r"cannot open the store at .*sub/integrator.db: .*; daemon.state_dir must be a directory",
    ):
        await store.open()


async def test_closing_while_reads_run_is_safe(tmp_path: Path) -> None:
    """An admin request may read while the daemon shuts the store: close waits for it,
    and later reads fail cleanly instead of touching a closed connection."""
    store = SQLiteStore(None, tmp_path)
    await store.open()
    await store.enqueue("r", [Message(body=n) for n in range(200)])
    outcomes: list[str] = []

    async def read() -> None:
        try:
            await store.depths()
            outcomes.append("read")
        except StoreError:
            outcomes.append("closed")

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(read)
        tg.start_soon(store.close)
    assert len(outcomes) == 50
    with pytest.raises(StoreError, match="is closed"):
        await store.depths()


async def test_a_message_that_cannot_be_encoded_leaves_nothing_of_its_call(
    store: SQLiteStore,
) -> None:
    with pytest.raises((TypeError, msgspec.EncodeError)):
        await store.enqueue("r", [Message(body=1, id="ok"), Message(body=object(), id="odd")])
    await store.enqueue("r", [Message(body=3, id="next")])
    assert [i.message.id for i in await store.inbox_after("r", 0, 10)] == ["next"]
    async with _reopened(store) as other:
        assert [i.message.id for i in await other.inbox_after("r", 0, 10)] == ["next"]
    assert store.pending() == 1


async def test_a_writer_cancelled_while_its_batch_commits_still_hands_its_rows_on(
    thread_store: SQLiteStore,
) -> None:
    store = thread_store
    assert await store.inbox_after("r", 0, 10) == []  # the reader has caught up
    release = threading.Event()
    original = store._commit

    def slow(batch) -> None:  # type: ignore[no-untyped-def]
        release.wait(10)
        original(batch)

    store._commit = slow  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.enqueue, "r", [Message(body=1, id="first")])  # leads, stuck
        await anyio.sleep(0.05)
        tg.start_soon(store.enqueue, "r", [Message(body=2, id="second")])  # leads the next
        await anyio.sleep(0.05)
        scope = anyio.CancelScope()
        tg.start_soon(_cancelled_enqueue, store, scope)  # follows, then is cancelled
        await anyio.sleep(0.05)
        scope.cancel()
        await anyio.sleep(0.05)
        release.set()
    # Committed despite the cancellation, and handed to the caught-up reader from memory.
    ids = [i.message.id for i in await store.inbox_after("r", 0, 10)]
    assert ids == ["first", "second", "third"]


async def test_a_writer_cancelled_before_its_commit_on_the_loop_still_hands_its_rows_on(
    loop_store: SQLiteStore,
) -> None:
    store = loop_store
    assert await store.inbox_after("r", 0, 10) == []  # the reader has caught up
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()
        tg.start_soon(_cancelled_enqueue, store, scope)
        await anyio.lowlevel.checkpoint()  # queued, its commit two turns of the loop away
        assert store._in_flight is not None and not store._in_flight.committed
        scope.cancel()
    ids = [i.message.id for i in await store.inbox_after("r", 0, 10)]
    assert ids == ["third"]


async def _cancelled_enqueue(store: SQLiteStore, scope: anyio.CancelScope) -> None:
    with scope:
        await store.enqueue("r", [Message(body=3, id="third")])


@pytest.mark.parametrize("commit_on", ["thread", "loop"])
async def test_closing_commits_a_stage_write_still_lingering(
    tmp_path: Path, commit_on: str
) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on=commit_on), tmp_path)  # type: ignore[arg-type]
    await store.open()
    await store.enqueue("r", [Message(body=1)])
    (item,) = await store.inbox_after("r", 0, 10)
    store.LINGER = 30.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.route_done, [(item, {})])
        await anyio.sleep(0.05)
        with anyio.fail_after(5):
            await store.close()
    reopened = SQLiteStore(None, tmp_path)
    await reopened.open()
    try:
        assert reopened.pending() == 0
    finally:
        await reopened.close()


async def test_a_message_id_of_a_str_subclass_is_stored_as_its_text(store: SQLiteStore) -> None:
    class Kind(enum.StrEnum):
        ORDER = "order-1"

    await store.enqueue("r", [Message(body=1, id=Kind.ORDER)])
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT msg_id FROM inbox").fetchall() == [("order-1",)]


async def test_a_message_id_the_store_cannot_hold_fails_its_write_and_the_store_goes_on(
    store: SQLiteStore,
) -> None:
    with pytest.raises(StoreError):
        await store.enqueue("r", [Message(body=1, id=uuid.uuid4())])  # type: ignore[arg-type]
    await store.enqueue("r", [Message(body=2, id="next")])
    assert store.pending() == 1


async def test_expired_remembered_keys_are_swept_even_when_the_sweeping_call_is_a_repeat(
    store: SQLiteStore,
) -> None:
    assert await store.remember("s", "old", 0.5)
    await anyio.sleep(0.6)  # "old" has expired
    assert await store.remember("s", "new", 0.5)
    store.__dict__["_remember_sweeps"]["s"] = 0.0  # the next call sweeps
    assert not await store.remember("s", "new", 0.5)  # a repeat: it returns early
    with sqlite3.connect(store.path) as conn:
        keys = [key for (key,) in conn.execute("SELECT msg_id FROM seen WHERE route = 's'")]
    assert keys == ["3:new:"]
