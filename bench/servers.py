"""The baselines and the loopback receiver, each run as its own process.

::

    python -m bench.servers bare     --port P              answer 202 after reading the body
    python -m bench.servers durable  --port P --db F       + check HMAC, decode, group-commit, 202
    python -m bench.servers relay    --port P --target U   read, decode, POST to U, answer 202
    python -m bench.servers receiver --port P              record each delivery's arrival

They import aiohttp and msgspec only (not integrator), so a baseline's start-up time
and memory are those of a bare aiohttp service. Each says ``READY=1`` on
``$NOTIFY_SOCKET`` once bound, exactly as the daemon does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import signal
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def notify_ready() -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    target: str | bytes = b"\0" + address[1:].encode() if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", target)


# -- bare: the ingest baseline ----------------------------------------------------------------


async def bare_handler(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(status=202)


def bare_app(args: argparse.Namespace) -> web.Application:
    app = web.Application()
    app.router.add_post("/{tail:.*}", bare_handler)
    return app


# -- durable: the reference a hand-rolled durable handler reaches on this machine ----------


class GroupCommit:
    """SQLite (WAL, synchronous=FULL) with one committer: every row that arrives while a
    commit runs goes into the next one, and each request waits for its own commit."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY, body BLOB, at REAL)"
        )
        self.rows: list[tuple[bytes, float]] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.wakeup = asyncio.Event()

    def _commit(self, rows: list[tuple[bytes, float]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO inbox (body, at) VALUES (?, ?)", rows)
        self.conn.execute("COMMIT")

    async def committer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            rows, waiters = self.rows, self.waiters
            self.rows, self.waiters = [], []
            await loop.run_in_executor(None, self._commit, rows)
            for waiter in waiters:
                waiter.set_result(None)

    async def add(self, body: bytes) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.rows.append((body, time.time()))
        self.waiters.append(waiter)
        self.wakeup.set()
        await waiter


def durable_app(args: argparse.Namespace) -> web.Application:
    store = GroupCommit(args.db)

    async def committer_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(store.committer())
        yield
        task.cancel()

    app = web.Application()
    app.cleanup_ctx.append(committer_ctx)
    app.router.add_post("/{tail:.*}", durable_handler(store, args.secret.encode()))
    return app


def durable_handler(store: GroupCommit, secret: bytes) -> Any:
    """The reference's request handler: HMAC check, JSON decode, group commit, 202."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return web.Response(status=401)
        msgspec.json.decode(body)
        await store.add(body)
        return web.Response(status=202)

    return handle


# -- relay: the end-to-end baseline (HTTP in, HTTP out, nothing durable) -------------------


def relay_app(args: argparse.Namespace) -> web.Application:
    app = web.Application()
    handler_key = web.AppKey[Handler]("relay")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(limit=args.connections)
        async with ClientSession(connector=connector, timeout=ClientTimeout(total=30)) as session:
            app[handler_key] = relay_handler(session, args.target)
            yield

    async def relay(request: web.Request) -> web.StreamResponse:
        return await request.app[handler_key](request)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", relay)
    return app


def relay_handler(session: ClientSession, target: str) -> Handler:
    """The relay's request handler: read, decode JSON, POST to ``target``, answer 202."""

    async def relay(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        msgspec.json.decode(body)  # the daemon parses the JSON too
        headers = {"Content-Type": "application/json"}
        async with session.post(target, data=body, headers=headers) as r:
            await r.read()
            status = 202 if r.status < 300 else 502
        return web.Response(status=status)

    return relay


# -- receiver: records arrivals for the end-to-end scenario ------------------------------------


class Stamp(msgspec.Struct):
    """The two fields of a benchmark event the receiver needs (the rest is skipped)."""

    seq: int = -1
    sent_at: float = 0.0


class Records(msgspec.Struct):
    seq: list[int]
    sent_at: list[float]
    arrived_at: list[float]


def receiver_app(args: argparse.Namespace) -> web.Application:
    records = Records([], [], [])
    decoder = msgspec.json.Decoder(Stamp)
    encoder = msgspec.json.Encoder()

    async def arrive(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        stamp = decoder.decode(body)
        records.seq.append(stamp.seq)
        records.sent_at.append(stamp.sent_at)
        records.arrived_at.append(now)
        return web.Response(status=200)

    async def dump(request: web.Request) -> web.Response:
        return web.Response(body=encoder.encode(records), content_type="application/json")

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"count": len(records.seq)})

    async def reset(request: web.Request) -> web.Response:
        records.seq.clear()
        records.sent_at.clear()
        records.arrived_at.clear()
        return web.Response(status=204)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/records", dump)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", arrive)
    return app


# -- main ---------------------------------------------------------------------------------------

APPS = {"bare": bare_app, "durable": durable_app, "relay": relay_app, "receiver": receiver_app}


async def serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    notify_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", default="", help="relay: where to POST each request")
    parser.add_argument("--connections", type=int, default=64, help="relay: client pool size")
    parser.add_argument("--db", default="", help="durable: the SQLite file")
    parser.add_argument("--secret", default="", help="durable: the HMAC secret")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(APPS[args.kind](args), args.port))


def _loop_factory() -> Any:
    """uvloop when installed, as the daemon does, so both sides run the same event loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
