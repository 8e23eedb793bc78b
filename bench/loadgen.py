"""Load generators: wrk when installed, otherwise an aiohttp client in its own process.

Both take a :class:`LoadSpec` and return a :class:`LoadResult`, and both run in a
separate process so the generator never shares an interpreter with what it
measures. A baseline and its scenario always use the same generator in a run.

wrk is closed-loop (``connections`` requests in flight, each sent when the previous
answered), which measures throughput. The Python generator can also run open-loop
at a fixed ``rate``, which is what latency "below saturation" needs.

Run directly, this module is the Python generator::

    python -m bench.loadgen SPEC.json DURATION
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ROOT, BenchError, python

MARK = "BENCH_JSON "


@dataclass
class LoadSpec:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    #: The same body for every request…
    body: str | None = None
    #: …or a template filled with (sequence number, send time) per request.
    template: str | None = None
    connections: int = 64
    #: Requests per second (open loop); None sends as fast as answers come back.
    rate: float | None = None


@dataclass
class LoadResult:
    generator: str
    seconds: float
    requests: int
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float
    rate: float | None = None

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def choose_generator(requested: str) -> str:
    """``auto`` is wrk when installed, else python."""
    if requested == "auto":
        return "wrk" if wrk_path() else "python"
    if requested == "wrk" and not wrk_path():
        raise BenchError("--generator wrk: wrk is not installed (apt-get install wrk)")
    return requested


def run_load(spec: LoadSpec, duration: float, generator: str, workdir: Path) -> LoadResult:
    """Send load for ``duration`` seconds; open-loop specs always use the Python generator."""
    workdir.mkdir(parents=True, exist_ok=True)
    if generator == "wrk" and spec.rate is None:
        return _run_wrk(spec, duration, workdir)
    return _run_python(spec, duration, workdir)


# -- wrk ------------------------------------------------------------------------------------

_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local function slurp(path)
  local f = assert(io.open(path, "rb")); local data = f:read("*a"); f:close(); return data
end

wrk.method = "POST"
local headers = {HEADERS}
for k, v in pairs(headers) do wrk.headers[k] = v end
local template = {TEMPLATE}
if template == nil then wrk.body = slurp({BODY}) end

local counter, next_id = 0, 0
thread_id = 0  -- a global: setup() sets it per thread
function setup(thread) thread:set("thread_id", next_id); next_id = next_id + 1 end
if template ~= nil then
  request = function()
    counter = counter + 1
    local body = string.format(template, thread_id * 1000000000 + counter, now())
    return wrk.format("POST", nil, nil, body)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "%s{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, "
      .. "\\"status\\": %d, \\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"timeout\\": %d}\\n",
    "{MARK}", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def _lua_string(text: str) -> str:
    if not text.isascii() or any(ord(c) < 32 for c in text):
        raise BenchError(f"not a plain ASCII header or path: {text!r}")
    return json.dumps(text)  # a JSON string of printable ASCII is a valid Lua string


def _run_wrk(spec: LoadSpec, duration: float, workdir: Path) -> LoadResult:
    headers = (
        "{"
        + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in spec.headers.items())
        + "}"
    )
    body_path = workdir / "wrk-body.json"
    template = "nil"
    if spec.template is not None:
        template_path = workdir / "wrk-template.txt"
        template_path.write_text(spec.template)
        template = f"slurp({_lua_string(str(template_path))})"
    else:
        body_path.write_text(spec.body or "")
    script = (
        _LUA.replace("{HEADERS}", headers)
        .replace("{TEMPLATE}", template)
        .replace("{BODY}", _lua_string(str(body_path)))
        .replace("{MARK}", MARK)
    )
    script_path = workdir / "wrk-script.lua"
    script_path.write_text(script)
    seconds = max(1, round(duration))
    argv = [
        "wrk", "-t1", f"-c{spec.connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(script_path), spec.url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    summary = _marked(done.stdout)
    if done.returncode != 0 or summary is None:
        raise BenchError(
            f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}"
        )
    socket_errors = sum(summary[k] for k in ("connect", "read", "write", "timeout"))
    return LoadResult(
        generator="wrk",
        seconds=summary["duration_us"] / 1e6,
        requests=summary["requests"],
        ok=summary["requests"] - summary["status"],
        errors=summary["status"] + socket_errors,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )


def _marked(output: str) -> dict[str, Any] | None:
    for line in output.splitlines():
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK) :])
            return result
    return None


# -- the Python generator -------------------------------------------------------------------


def _run_python(spec: LoadSpec, duration: float, workdir: Path) -> LoadResult:
    spec_path = workdir / "load-spec.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    argv = [python(), "-m", "bench.loadgen", str(spec_path), str(duration)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=duration + 60)
    summary = _marked(done.stdout)
    if done.returncode != 0 or summary is None:
        raise BenchError(f"load generator failed ({done.returncode}): {done.stderr[-1500:]}")
    return LoadResult(**summary)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


async def _generate(spec: LoadSpec, duration: float) -> LoadResult:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    latencies: list[float] = []
    counts = {"requests": 0, "ok": 0, "errors": 0}
    sequence = iter(range(1, 1 << 62))
    static = spec.body.encode() if spec.body is not None else b""

    async def one(session: ClientSession) -> None:
        body = (
            static
            if spec.template is None
            else (spec.template % (next(sequence), time.time())).encode()
        )
        t0 = time.perf_counter()
        try:
            async with session.post(spec.url, data=body, headers=spec.headers) as response:
                await response.read()
                ok = 200 <= response.status < 300
        except Exception:  # a refused or reset connection counts as an error, load goes on
            counts["errors"] += 1
            return
        latencies.append(time.perf_counter() - t0)
        counts["requests"] += 1
        counts["ok" if ok else "errors"] += 1

    connector = TCPConnector(limit=spec.connections)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=10)) as session:
        start = time.perf_counter()
        end = start + duration
        if spec.rate is None:

            async def worker() -> None:
                while time.perf_counter() < end:
                    await one(session)

            async with asyncio.TaskGroup() as tg:
                for _ in range(spec.connections):
                    tg.create_task(worker())
        else:
            interval = 1.0 / spec.rate
            slots = asyncio.Semaphore(spec.connections * 4)
            sent = 0

            async def paced() -> None:
                async with slots:
                    await one(session)

            async with asyncio.TaskGroup() as tg:
                while True:
                    due = start + sent * interval
                    if due >= end:
                        break
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tg.create_task(paced())
                    sent += 1
        seconds = time.perf_counter() - start
    latencies.sort()
    return LoadResult(
        generator="python",
        seconds=seconds,
        requests=counts["requests"],
        ok=counts["ok"],
        errors=counts["errors"],
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        rate=spec.rate,
    )


def main() -> None:
    spec = LoadSpec(**json.loads(Path(sys.argv[1]).read_text()))
    result = asyncio.run(_generate(spec, float(sys.argv[2])))
    print(MARK + json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
