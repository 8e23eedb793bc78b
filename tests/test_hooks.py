"""Each lifecycle and registration hook, exercised by a plugin as a third party writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from integrator import DeliveryError, Message, Sink, hookimpl
from integrator.delivery.sqlite import SQLiteStore
from integrator.errors import IntegratorError
from integrator.testing import running_daemon
from integrator.transforms.codec import Codec


class Refusing(Sink):
    async def deliver(self, message: Message) -> None:
        raise DeliveryError("HTTP 400 Bad Request", retriable=False)


class Recorder:
    """A plugin that records the lifecycle calls it receives."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.dead: list[Any] = []

    @hookimpl
    def integrator_startup(self, daemon: Any) -> None:
        self.events.append(f"startup store={type(daemon.services.store).__name__}")

    @hookimpl
    async def integrator_shutdown(self, daemon: Any) -> None:
        self.events.append("shutdown")

    @hookimpl
    async def integrator_dead_letter(self, entry: Any) -> None:
        self.dead.append(entry)

    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        register("refusing", Refusing)


async def test_startup_and_shutdown_hooks_bracket_the_routes(tmp_path: Path) -> None:
    recorder = Recorder()
    toml = (
        '[routes.r]\nsource = { type = "timer", interval = "1h" }\nsinks = [{ type = "stdout" }]\n'
    )
    async with running_daemon(toml, tmp_path, recorder):
        assert recorder.events == ["startup store=SQLiteStore"]
    assert recorder.events == ["startup store=SQLiteStore", "shutdown"]


async def test_a_failing_startup_hook_aborts_the_start_naming_the_plugin(tmp_path: Path) -> None:
    class Failing:
        @hookimpl
        def integrator_startup(self, daemon: Any) -> None:
            raise RuntimeError("license expired")

    toml = '[routes.r]\nsource = { type = "timer" }\nsinks = [{ type = "stdout" }]\n'
    with pytest.raises(BaseException) as caught:
        async with running_daemon(toml, tmp_path, Failing()):
            pass
    text = repr(caught.value.exceptions if hasattr(caught.value, "exceptions") else caught.value)
    assert "failed in integrator_startup: RuntimeError: license expired" in text
    assert isinstance(caught.value, (IntegratorError, BaseExceptionGroup))


async def test_the_dead_letter_hook_hears_of_every_dead_letter(tmp_path: Path) -> None:
    recorder = Recorder()
    toml = '[routes.r]\nsource = { type = "timer", interval = "1h" }\nsinks = [{ type = "refusing" }]\n'
    async with running_daemon(toml, tmp_path, recorder) as d:
        await d.wait_for(lambda: recorder.dead, what="a dead letter")
    (entry,) = recorder.dead
    assert (entry.route, entry.sink, entry.last_error) == ("r", "refusing", "HTTP 400 Bad Request")


async def test_a_failing_dead_letter_hook_does_not_stop_delivery(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def integrator_dead_letter(self, entry: Any) -> None:
            raise RuntimeError("pager down")

    recorder = Recorder()
    toml = '[routes.r]\nsource = { type = "timer", interval = "20ms", count = 2 }\nsinks = [{ type = "refusing" }]\n'
    async with running_daemon(toml, tmp_path, recorder, Broken()) as d:
        await d.wait_for(lambda: len(recorder.dead) == 2, what="two dead letters")


class Rot13Codec(Codec):
    name = "rot13"
    content_type = "text/x-rot13"

    def decode(self, data: bytes) -> Any:
        import codecs

        return codecs.decode(data.decode(), "rot13")

    def encode(self, value: Any) -> bytes:
        import codecs

        return codecs.encode(str(value), "rot13").encode()


class CodecPlugin:
    @hookimpl
    def integrator_codecs(self, register: Any) -> None:
        register("rot13", Rot13Codec)


async def test_a_plugin_codec_is_usable_by_convert(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "timer", interval = "1h", body = "hello" }}
    middleware = [{{ type = "convert", to = "rot13" }}]
    sinks = [{{ type = "file", path = "{out}" }}]
    """
    async with running_daemon(toml, tmp_path / "state", CodecPlugin()) as d:
        await d.wait_delivered("r", 1)
    line = json.loads(out.read_text())
    assert line["body"] == "uryyb"
    assert line["headers"]["content-type"] == "text/x-rot13"


class CountingStore(SQLiteStore):
    opened = 0

    async def open(self) -> None:
        CountingStore.opened += 1
        await super().open()


class StorePlugin:
    @hookimpl
    def integrator_store_backends(self, register: Any) -> None:
        register("counting", CountingStore)


async def test_a_plugin_store_backend_is_chosen_by_config(tmp_path: Path) -> None:
    toml = f"""
    [daemon]
    state_dir = "{tmp_path}"
    [store]
    type = "counting"
    options = {{ path = "custom.db" }}
    [routes.r]
    source = {{ type = "timer", interval = "1h" }}
    sinks = [{{ type = "stdout" }}]
    """
    async with running_daemon(toml, tmp_path, StorePlugin()) as d:
        assert isinstance(d.services.store, CountingStore)
    assert CountingStore.opened == 1
    assert (tmp_path / "custom.db").exists()


@pytest.mark.parametrize("disabled", ["", "http"])
async def test_shutdown_closes_the_http_clients_components_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disabled: str
) -> None:
    # An enrich lookup makes the daemon's HTTP clients, with or without the http plugin
    # (sink, poll); whatever a component failed to give back is closed at shutdown.
    monkeypatch.setenv("INTEGRATOR_DISABLE_PLUGINS", disabled)
    toml = """
[connections.api]
url = "http://127.0.0.1:9"

[routes.r]
source = { type = "timer", interval = "1h" }
middleware = [{ type = "enrich", lookup = "http", connection = "api", path = "/x", target = "attributes.x" }]
sinks = [{ type = "stdout" }]
"""
    async with running_daemon(toml, tmp_path) as running:
        clients = running.daemon.services.shared["http"]
        config = running.daemon.config.connections["api"]
        leaked = await clients.acquire("api", config)  # a user that never releases it
    assert leaked.closed
