"""Scenario 1: durable webhook ingest against a bare aiohttp handler.

The daemon's route receives a ~1 KB JSON event signed GitHub-style
(``x-hub-signature-256``), checks the signature, decodes the JSON, commits the
message to the SQLite store (WAL, ``synchronous = FULL``, group commit) and only
then answers 202. Its chain is a single ``drop``, so the route worker still reads
and clears the inbox (the store stays small and the cost of that is included) but
no delivery competes with intake for the one event loop. The baseline is a bare
aiohttp handler in its own process that reads the body and answers 202. Both get
the same pre-signed request from the same generator at the same concurrency.

Two more daemons, identical but for ``[store.options] commit_on = "thread"`` and
``"process"``, take their turns beside them: the default, ``"auto"``, commits on the
writer thread and moves to the writer process under load; the options' rows show
each alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.daemon import start_daemon
from bench.loadgen import LoadSpec
from bench.payloads import SECRET, event_bytes, github_signature
from bench.procs import Child, free_port, python, start
from bench.report import Check, Scenario
from bench.scenarios.common import COMMIT_ON, Measured, measure_in_turns
from bench.settings import Settings

PATH = "/hooks/bench"

#: Targets from the issue.
RATIO = 0.65
P99_MS = 25.0
RSS_MB = 80.0


def run(settings: Settings) -> Scenario:
    scenario = Scenario(
        "ingest",
        "1 durable ingest",
        "bare aiohttp handler (own process): read the body, answer 202",
    )
    workdir = settings.workdir
    body, headers = signed_event()
    routes = ingest_routes(workdir)
    children: list[Child] = []
    daemons = {}  # the default's, then one per commit_on option
    try:
        servers = {"bare": _server(settings, "bare", [], children)}
        if settings.mode != "smoke":
            extra = ["--db", str(workdir / "reference.db"), "--secret", SECRET]
            servers["durable"] = _server(settings, "durable", extra, children)
        daemons["integrator"] = start_daemon("ingest", routes, workdir)
        for where, config in COMMIT_ON.items():
            daemons[where] = start_daemon(f"ingest-{where}", routes, workdir, extra=config)
        for name, daemon in daemons.items():
            servers[name] = (daemon.pid, daemon.url(PATH))
        specs = {
            name: (pid, LoadSpec(url, headers, body.decode(), connections=settings.connections))
            for name, (pid, url) in servers.items()
        }
        before = {name: d.route("ingest")["received"] for name, d in daemons.items()}
        measured = measure_in_turns(settings, specs, profile=("integrator", "ingest"))
        stored = {name: d.route("ingest")["received"] - before[name] for name, d in daemons.items()}
    finally:
        for daemon in daemons.values():
            daemon.stop()
        for child in children:
            child.stop()
    ours, base, reference = measured["integrator"], measured["bare"], measured.get("durable")

    _rows(scenario, ours, base, settings)
    for where in COMMIT_ON:
        option, label = measured[where], f'commit_on = "{where}": '
        scenario.add(label + "req/s", option.load.ok_per_second, base.load.ok_per_second)
        scenario.add(label + "latency p99", option.load.p99_ms, base.load.p99_ms, "ms")
        scenario.add(label + "CPU/request", option.cpu_us_per_ok, base.cpu_us_per_ok, "us")
    if reference is not None:
        scenario.add(
            "reference: minimal durable req/s",
            reference.load.ok_per_second,
            base.load.ok_per_second,
        )
        # What the same disk does to a handler with nothing else to do.
        scenario.add("reference: latency p99", reference.load.p99_ms, base.load.p99_ms, "ms")
        scenario.notes.append(
            "reference = a hand-rolled aiohttp handler (bench/servers.py durable): HMAC check, "
            "JSON decode, SQLite WAL group commit, 202; its ratio is what this machine allows "
            f"(CPU {reference.usage.cpu_percent:.0f} % of a core, "
            f"{reference.usage.loop_percent:.0f} % in its event loop thread)"
        )
    scenario.details = {
        "integrator": _details(ours),
        "baseline": _details(base),
        "reference": _details(reference) if reference else None,
        **{f"commit_on_{where}": _details(measured[where]) for where in COMMIT_ON},
        "stored_during_load": stored["integrator"],
        **{f"stored_during_load_commit_on_{where}": stored[where] for where in COMMIT_ON},
        "daemon_ready_seconds": daemons["integrator"].child.ready_seconds,
    }
    scenario.notes.append(
        f"generator {ours.load.generator}, {settings.connections} connections, "
        f"{settings.duration:g}s measured per server after {settings.warmup:g}s warm-up, "
        f"in {settings.rounds} turn(s) taken in rotating order; "
        f"route chain = drop (file sink never called); store synchronous=FULL"
    )
    scenario.notes.append(
        'commit_on = "thread" / "process": the same daemon with its commits always on the '
        "writer thread / in the writer process (docs/configuration.md), in the same turns;"
        " their event loop threads "
        + " / ".join(f"{measured[where].usage.loop_percent:.0f} %" for where in COMMIT_ON)
        + " of a core (a writer process's CPU and RSS count as the daemon's)"
    )
    for name in daemons:
        run, label = measured[name], "" if name == "integrator" else f'commit_on = "{name}": '
        answered = run.warmup_ok + run.load.ok
        if stored[name] < answered:
            scenario.notes.append(
                f"{label}LOST: {answered} requests answered 2xx but only {stored[name]} stored"
            )
        else:
            scenario.notes.append(
                f"{label}every 2xx was stored ({stored[name]} stored >= {answered} answered 2xx)"
            )
    return scenario


def signed_event() -> tuple[bytes, dict[str, str]]:
    """The scenario's request: a ~1 KB JSON event and its headers, signed GitHub-style."""
    body = event_bytes()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": github_signature(body),
    }
    return body, headers


def ingest_routes(workdir: Path) -> dict[str, Any]:
    """The daemon's route: verify, store, then ``drop`` (the file sink is never called)."""
    return {
        "ingest": {
            "middleware": [{"type": "drop"}],
            "sinks": [
                {"type": "file", "path": str(workdir / "ingest-out.jsonl"), "fsync": "never"}
            ],
            "source": {
                "type": "webhook",
                "path": PATH,
                "verify": {"scheme": "github", "secret": SECRET},
            },
        }
    }


def _server(
    settings: Settings, kind: str, extra: list[str], children: list[Child]
) -> tuple[int, str]:
    """Start a server of bench/servers.py (added to ``children``); its pid and URL."""
    port = free_port()
    argv = [python(), "-m", "bench.servers", kind, "--port", str(port), *extra]
    child = start(kind, argv, settings.workdir)
    children.append(child)
    return child.pid, f"http://127.0.0.1:{port}{PATH}"


def _rows(scenario: Scenario, ours: Measured, base: Measured, settings: Settings) -> None:
    rps = scenario.add("req/s", ours.load.ok_per_second, base.load.ok_per_second)
    if rps.ratio is not None:
        rps.check = Check(rps.ratio, ">=", RATIO, "x")
    scenario.add("latency p50", ours.load.p50_ms, base.load.p50_ms, "ms")
    p99 = scenario.add("latency p99", ours.load.p99_ms, base.load.p99_ms, "ms")
    p99.check = Check(ours.load.p99_ms, "<=", P99_MS, " ms")
    scenario.add("server CPU", ours.usage.cpu_percent, base.usage.cpu_percent, "% core")
    scenario.add(
        "event loop thread CPU", ours.usage.loop_percent, base.usage.loop_percent, "% core"
    )
    scenario.add("CPU per request", ours.cpu_us_per_ok, base.cpu_us_per_ok, "us")
    rss = scenario.add("RSS peak under load", ours.usage.rss_peak_mb, base.usage.rss_peak_mb, "MB")
    rss.check = Check(ours.usage.rss_peak_mb, "<=", RSS_MB, " MB")
    errors = scenario.add("errors (non-2xx, socket)", ours.load.errors, base.load.errors)
    errors.ratio = None


def _details(measured: Measured) -> dict[str, object]:
    return {
        "requests": measured.load.requests,
        "ok": measured.load.ok,
        "errors": measured.load.errors,
        "seconds": measured.load.seconds,
        "cpu_seconds": measured.usage.cpu,
        "loop_cpu_seconds": measured.usage.loop_cpu,
        "rss_peak_mb": measured.usage.rss_peak_mb,
        "vm_hwm_mb": measured.usage.hwm_mb,
        "profile": measured.profile,
    }
