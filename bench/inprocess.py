"""The durable ingest path in one process, for judging small changes on a noisy machine.

::

    .venv/bin/python -m bench.inprocess                  # integrator: CPU per request
    .venv/bin/python -m bench.inprocess --server ref     # the reference durable handler
    .venv/bin/python -m bench.inprocess --instructions   # instructions per request (valgrind)
    .venv/bin/python -m bench.inprocess --server e2e     # end to end, per message delivered
    .venv/bin/python -m bench.inprocess --server relay   # its baseline, the relay of bench/servers.py

64 closed-loop connections of raw HTTP (the benchmark's signed ~1 KB event) are fed
to aiohttp's protocol over fake transports: no sockets and no load generator share
the CPU. ``integrator`` is a real in-process daemon (webhook route, SQLite store with
``synchronous = "full"``, a ``drop`` chain, the GC tuning of ``integrator run``);
``ref`` and ``bare`` are the handlers of ``bench/servers.py``. ``e2e`` is the end-to-end
route of the benchmark (``filter``, ``map``, ``validate``, then the ``http`` sink
over real loopback sockets to a receiver in the same process): a request counts once
its message has arrived, so the figure is per message delivered, receiver included. CPU per request still
moves with the host; instructions per request (``--instructions``: the difference
between two runs under valgrind's cachegrind, so start-up cancels out) do not, but
valgrind's SHA-256 and SIMD paths are not the native ones, so compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import tomli_w
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.payloads import FILTER, MAP, SECRET, VALIDATE, event_bytes, github_signature  # noqa: E402
from bench.servers import (  # noqa: E402
    GroupCommit,
    Handler,
    bare_handler,
    durable_handler,
    relay_handler,
)

CONNECTIONS = 64
ROUTE = f"""
[routes.ingest]
source = {{ type = "webhook", path = "/hooks/bench", verify = {{ scheme = "github", secret = "{SECRET}" }} }}
middleware = [{{ type = "drop" }}]
sinks = [{{ type = "file", path = "/dev/null" }}]
"""


def request_bytes() -> bytes:
    body = event_bytes()
    head = (
        "POST /hooks/bench HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: push\r\nX-Hub-Signature-256: {github_signature(body)}\r\n\r\n"
    )
    return head.encode() + body


class FakeTransport:
    """What aiohttp's protocol writes to; resolves ``done`` with the response."""

    def __init__(self) -> None:
        self.done: asyncio.Future[bytes] | None = None
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def drive(
    handler: Handler,
    requests: int,
    warmup: int,
    settle: Callable[[int], Awaitable[None]] | None = None,
) -> tuple[float, float]:
    """CPU seconds (every thread) and wall seconds for ``requests`` after a warm-up;
    ``settle(n)``, when given, is awaited after each load until its ``n`` are done."""
    server = web.Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    raw = request_bytes()
    connections = []
    for _ in range(CONNECTIONS):
        protocol = server()
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        connections.append((protocol, transport))
    remaining = 0

    async def client(protocol: Any, transport: FakeTransport) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            transport.done = loop.create_future()
            protocol.data_received(raw)
            answer = await transport.done
            if answer[9:12] != b"202":
                raise RuntimeError(f"unexpected answer: {answer[:200]!r}")

    sent = 0

    async def run(count: int) -> None:
        nonlocal remaining, sent
        remaining = count
        await asyncio.gather(*(client(p, t) for p, t in connections))
        sent += count
        if settle is not None:
            await settle(sent)

    await run(warmup)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await run(requests)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


async def measure(server: str, requests: int, warmup: int) -> tuple[float, float]:
    state = Path(tempfile.mkdtemp(prefix="bench-inprocess-"))
    try:
        if server == "integrator":
            from integrator.engine.daemon import _tune_gc
            from integrator.testing import running_daemon

            async with running_daemon(ROUTE, state) as daemon:
                _tune_gc()
                return await drive(daemon.services.shared["webhooks"]._dispatch, requests, warmup)
        if server == "e2e":
            return await _end_to_end(state, requests, warmup)
        if server == "relay":
            return await _relay(requests, warmup)
        if server == "ref":
            store = GroupCommit(str(state / "ref.db"))
            committer = asyncio.get_running_loop().create_task(store.committer())
            try:
                return await drive(durable_handler(store, SECRET.encode()), requests, warmup)
            finally:
                committer.cancel()
        return await drive(bare_handler, requests, warmup)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@contextlib.asynccontextmanager
async def _receiver() -> AsyncIterator[tuple[str, Callable[[int], Awaitable[None]]]]:
    """A loopback receiver in this process: its URL, and ``settle(n)`` that waits for
    ``n`` arrivals in all."""
    arrived = 0
    changed = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        nonlocal arrived
        await request.read()
        arrived += 1
        changed.set()
        return web.Response(status=200)

    async def settle(sent: int) -> None:
        while arrived < sent:
            changed.clear()
            await asyncio.wait_for(changed.wait(), 30)

    app = web.Application()
    app.router.add_post("/deliver", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/deliver", settle
    finally:
        await runner.cleanup()


async def _end_to_end(state: Path, requests: int, warmup: int) -> tuple[float, float]:
    from integrator.engine.daemon import _tune_gc
    from integrator.testing import running_daemon

    async with _receiver() as (target, settle):
        route = tomli_w.dumps(
            {
                "routes": {
                    "ingest": {
                        "source": {"type": "webhook", "path": "/hooks/bench"},
                        "middleware": [FILTER, MAP, VALIDATE],
                        "sinks": [{"type": "http", "url": target, "concurrency": 16}],
                    }
                }
            }
        )
        async with running_daemon(route, state) as daemon:
            _tune_gc()
            handler = daemon.services.shared["webhooks"]._dispatch
            return await drive(handler, requests, warmup, settle)


async def _relay(requests: int, warmup: int) -> tuple[float, float]:
    """The end-to-end baseline: ``bench/servers.py``'s relay handler, same receiver."""
    async with _receiver() as (target, settle):
        connector = TCPConnector(limit=CONNECTIONS)
        async with ClientSession(connector=connector, timeout=ClientTimeout(total=30)) as session:
            return await drive(relay_handler(session, target), requests, warmup, settle)


def instructions(server: str, requests: int) -> int:
    """Instructions per request: cachegrind on ``requests`` and on three times as many."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")

    def total(count: int) -> int:
        argv = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        argv += [sys.executable, "-m", "bench.inprocess", "--server", server]
        argv += ["--requests", str(count), "--warmup", "0"]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise SystemExit(f"valgrind run failed:\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))

    return (total(3 * requests) - total(requests)) // (2 * requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server", choices=("integrator", "ref", "bare", "e2e", "relay"), default="integrator"
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--instructions", action="store_true", help="count them under valgrind")
    args = parser.parse_args(argv)
    if args.instructions:
        count = instructions(args.server, min(args.requests, 2_000))
        print(f"{args.server}: {count / 1000:.0f}k instructions per {_unit(args.server)}")
        return 0
    logging.disable(logging.WARNING)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        cpu, wall = runner.run(measure(args.server, args.requests, args.warmup))
    where = "loopback to the receiver" if args.server in ("e2e", "relay") else "no sockets"
    print(
        f"{args.server}: {cpu / args.requests * 1e6:.1f} us CPU per {_unit(args.server)}, "
        f"{args.requests / wall:,.0f}/s (one process, {where})"
    )
    return 0


def _unit(server: str) -> str:
    return "message delivered" if server in ("e2e", "relay") else "request"


if __name__ == "__main__":
    sys.exit(main())
