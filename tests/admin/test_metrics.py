"""/metrics: Prometheus text that the reference parser reads, with numbers that match
what the engine did."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from integrator.admin.metrics import ProcfsProcessCollector
from integrator.engine.stats import ops_stats
from tests.admin.admin_support import ADMIN, Components, call, quick_stop


async def scrape(d) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (sample name, sorted labels)."""
    reply = await call(d, "GET", "/metrics")
    assert reply.status == 200
    assert reply.content_type == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def routes(out: Path) -> str:
    return (
        ADMIN
        + f"""
        [routes.ticks]
        source = {{ type = "timer", interval = "5ms", count = 4 }}
        sinks = [{{ type = "file", path = "{out}" }}]

        [routes.refused]
        source = {{ type = "timer", interval = "5ms", count = 2 }}
        sinks = [{{ type = "rejecting" }}]
    """
    )


async def test_message_and_delivery_counters_match_the_engine(run_route, tmp_path: Path) -> None:
    async with run_route(routes(tmp_path / "out.jsonl"), Components()) as d:
        await d.wait_delivered("ticks", 4)
        await d.wait_for(lambda: d.services.stats["refused"].sink("rejecting").dead == 2)
        samples = await scrape(d)
    route = (("route", "ticks"),)
    assert samples[("integrator_messages_received_total", route)] == 4
    assert samples[("integrator_messages_processed_total", route)] == 4
    assert samples[("integrator_deliveries_total", (*route, ("sink", "file")))] == 4
    refused = (("route", "refused"), ("sink", "rejecting"))
    assert samples[("integrator_deliveries_dead_total", refused)] == 2
    assert samples[("integrator_deliveries_total", refused)] == 0


async def test_queue_depth_and_dlq_size_come_from_the_store(run_route, tmp_path: Path) -> None:
    async with run_route(routes(tmp_path / "out.jsonl"), Components()) as d:
        await d.wait_delivered("ticks", 4)
        await d.wait_for(lambda: d.services.stats["refused"].sink("rejecting").dead == 2)
        # Deliveries are recorded in groups just after they happen, and the exporter
        # caches store depths for a second: wait until the scrape shows the drained store.
        await d.wait_for(lambda: d.services.store.pending() == 0, what="an empty store")
        outbox = ("integrator_outbox_depth", (("route", "ticks"), ("sink", "file")))
        for _ in range(40):
            samples = await scrape(d)
            if samples.get(outbox) == 0:
                break
            await anyio.sleep(0.1)
        assert await d.services.store.dlq_count("refused") == 2
    assert samples[("integrator_dlq_size", (("route", "refused"),))] == 2
    assert samples[("integrator_dlq_size", (("route", "ticks"),))] == 0
    assert samples[("integrator_outbox_depth", (("route", "ticks"), ("sink", "file")))] == 0
    assert samples[("integrator_inbox_depth", (("route", "ticks"),))] == 0
    assert samples[("integrator_store_readable", ())] == 1


async def test_an_open_breaker_its_retries_and_its_queue_are_visible(
    run_route, tmp_path: Path
) -> None:
    toml = (
        quick_stop(tmp_path)
        + ADMIN
        + """
        [routes.down]
        source = { type = "timer", interval = "5ms", count = 1 }
        retry = { initial = "10ms", max = "10ms" }
        sinks = [{ type = "unavailable", breaker = { failure_threshold = 1, cooldown = "1h" } }]
    """
    )
    async with run_route(toml, Components()) as d:
        sink = d.services.stats["down"].sink("unavailable")
        await d.wait_for(lambda: sink.failed >= 1, what="a failed attempt")
        samples = await scrape(d)
    key = (("breaker", "sink:down/unavailable"),)
    assert samples[("integrator_breaker_state", key)] == 2  # open
    assert samples[("integrator_breaker_opened_total", key)] == 1
    labels = (("route", "down"), ("sink", "unavailable"))
    assert samples[("integrator_delivery_retries_total", labels)] == 1
    assert samples[("integrator_outbox_depth", labels)] == 1  # waiting for the breaker


async def test_rate_limit_waits_are_counted(run_route, tmp_path: Path) -> None:
    toml = (
        ADMIN
        + f"""
        [routes.limited]
        source = {{ type = "timer", interval = "1ms", count = 3 }}
        sinks = [{{ type = "file", path = "{tmp_path / "out.jsonl"}", middleware = [
            {{ type = "rate_limit", requests = 1, per = "50ms", key = "connection:slow" }},
        ] }}]
    """
    )
    async with run_route(toml) as d:
        await d.wait_delivered("limited", 3)
        samples = await scrape(d)
    waits = samples[("integrator_rate_limit_waits_total", (("limiter", "connection:slow"),))]
    seconds = samples[
        ("integrator_rate_limit_wait_seconds_total", (("limiter", "connection:slow"),))
    ]
    assert waits >= 1
    assert seconds > 0


async def test_latency_histogram_and_reload_counters_are_exported(
    run_route, tmp_path: Path
) -> None:
    async with run_route(routes(tmp_path / "out.jsonl"), Components()) as d:
        await d.wait_delivered("ticks", 4)
        d.daemon.routes["ticks"].pause()
        stats = d.services.stats["ticks"].sink("file")
        await d.wait_for(lambda: d.services.store.pending() == 0, what="an empty store")
        ops_stats(d.services.shared).count_reload(applied=False)
        samples = await scrape(d)
        latency, delivered = stats.latency, stats.delivered
    labels = (("route", "ticks"), ("sink", "file"))
    bucket = "integrator_delivery_latency_seconds_bucket"
    # The engine observed one latency per real delivery, and the exporter shows them all.
    assert latency.count == delivered >= 4
    for bound, count in latency.cumulative():
        le = "+Inf" if bound == float("inf") else str(float(bound))
        assert samples[(bucket, (("le", le), *labels))] == count
    assert samples[("integrator_delivery_latency_seconds_count", labels)] == delivered
    assert samples[("integrator_delivery_latency_seconds_sum", labels)] == pytest.approx(
        latency.sum
    )
    assert 0 < latency.sum / delivered < 5, "ingest-to-delivery latency is plausible"
    assert samples[("integrator_reloads_total", (("outcome", "refused"),))] == 1
    assert samples[("integrator_reloads_total", (("outcome", "applied"),))] == 0


async def test_component_restarts_are_counted(run_route, tmp_path: Path) -> None:
    toml = (
        quick_stop(tmp_path)
        + ADMIN
        + """
        [routes.crm]
        source = { type = "timer", interval = "1s" }
        sinks = [{ type = "broken" }]
    """
    )
    async with run_route(toml, Components()) as d:
        health = d.services.health.component("crm/sink:broken")
        await d.wait_for(lambda: health.restarts >= 1, what="a restart")
        samples = await scrape(d)
    component = (("component", "crm/sink:broken"),)
    assert samples[("integrator_component_restarts_total", component)] >= 1
    assert samples[("integrator_component_up", component)] == 0
    assert samples[("integrator_component_up", (("component", "crm/source"),))] == 1


async def test_each_daemon_has_its_own_registry(run_route, tmp_path: Path) -> None:
    """Two daemons in one process never mix their numbers (no global registry)."""
    async with run_route(routes(tmp_path / "a.jsonl"), Components()) as first:
        await first.wait_delivered("ticks", 4)
        first_registry = first.services.shared["admin"].registry
    async with run_route(routes(tmp_path / "b.jsonl"), Components()) as second:
        await second.wait_delivered("ticks", 4)
        samples = await scrape(second)
        assert second.services.shared["admin"].registry is not first_registry
    assert samples[("integrator_messages_received_total", (("route", "ticks"),))] == 4


async def scrape_with_store(run_route, tmp_path: Path, commit_on: str):  # type: ignore[no-untyped-def]
    """A scrape of a daemon whose store commits as ``commit_on`` says, once it ran."""
    config = f'[store.options]\ncommit_on = "{commit_on}"\n' + routes(tmp_path / "out.jsonl")
    async with run_route(config, Components()) as d:
        await d.wait_delivered("ticks", 4)
        return await scrape(d)


async def test_the_store_writer_process_reports_its_own_cpu_and_memory(
    run_route, tmp_path: Path
) -> None:
    samples = await scrape_with_store(run_route, tmp_path, "process")
    rss = samples[("integrator_store_writer_process_resident_memory_bytes", ())]
    assert 1_000_000 < rss < 100_000_000
    assert rss != samples[("process_resident_memory_bytes", ())]  # not the daemon's
    assert samples[("integrator_store_writer_process_cpu_seconds_total", ())] > 0


async def test_without_a_writer_process_there_are_no_writer_metrics(
    run_route, tmp_path: Path
) -> None:
    samples = await scrape_with_store(run_route, tmp_path, "thread")
    assert not [name for name, _ in samples if name.startswith("integrator_store_writer")]


def test_process_metrics_need_only_the_process_own_proc_files(tmp_path: Path) -> None:
    """Under the systemd unit's ProcSubset=pid, /proc/stat is hidden: the process
    metrics must not disappear with it."""
    proc = tmp_path / "proc"  # a /proc with the process's files and nothing else
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "stat").write_bytes(Path("/proc/self/stat").read_bytes())
    registry = CollectorRegistry(auto_describe=False)
    ProcfsProcessCollector(proc=str(proc), registry=registry)
    assert registry.get_sample_value("process_cpu_seconds_total") is not None
    start = registry.get_sample_value("process_start_time_seconds")
    real = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=real)  # with the real /proc/stat, for the oracle
    real_start = real.get_sample_value("process_start_time_seconds")
    assert start is not None and real_start is not None and abs(start - real_start) < 2
    plain = CollectorRegistry(auto_describe=False)
    ProcessCollector(proc=str(proc), registry=plain)  # the library's own: nothing
    assert plain.get_sample_value("process_cpu_seconds_total") is None
