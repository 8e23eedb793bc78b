"""The plugin host: built-ins through hooks, entry-point discovery, broken plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from core_support import REPO, integrator_command

from integrator import Middleware, Sink, hookimpl
from integrator.config import parse_config
from integrator.errors import ConfigError
from integrator.plugins import (
    DEFAULT_PLUGINS,
    ComponentUnavailable,
    build_registry,
    get_plugin_manager,
    load_plugins,
)
from integrator.testing import daemon_config


def registry_with(*plugins: Any) -> Any:
    pm, registry = get_plugin_manager(entrypoints=False)
    for plugin in plugins:
        pm.register(plugin, name=type(plugin).__name__)
    return build_registry(pm, registry)


def test_builtins_register_through_the_same_hooks() -> None:
    registry = registry_with()
    assert {"timer"} <= set(registry.names("source"))
    assert {"stdout", "file"} <= set(registry.names("sink"))
    assert {"pass", "drop", "log"} <= set(registry.names("middleware"))
    assert registry.get("store", "sqlite") is not None
    for module in DEFAULT_PLUGINS:
        assert registry.plugins[module].builtin


def test_no_plugin_is_discovered_at_import_time() -> None:
    code = "import integrator, sys; print('integrator.builtin.timer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_loading_every_installed_plugin_imports_no_library_a_component_may_not_need() -> None:
    # Idle memory and start-up time: each of these is imported when a route first uses it.
    heavy = [
        "jsonschema", "jsonschema_rs", "croniter", "dateutil", "defusedxml", "pyexpat",
        "redis", "aio_pika", "asyncpg", "nats", "aiomqtt",
    ]  # fmt: skip
    code = (
        "import sys; from integrator.plugins import load_plugins; load_plugins(); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_every_installed_plugin_imports_no_component_registered_by_reference() -> None:
    code = (
        "import sys; from integrator.plugins import load_plugins; _, registry = load_plugins(); "
        "modules = {entry.reference.partition(':')[0] for kind in registry.components.values() "
        "for entry in kind.values() if entry.reference}; "
        "print(len(modules), sorted(m for m in modules if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, imported = out.stdout.split(" ", 1)
    assert int(count) >= 10  # the transforms, the HTTP sink and poll, oauth2…
    assert imported.strip() == "[]"


def test_the_default_configs_daemon_imports_only_the_components_it_uses(tmp_path: Path) -> None:
    text = (REPO / "config" / "integrator.toml").read_text()
    text = text.replace('state_dir = "var"', f'state_dir = "{tmp_path}"')
    text = text.replace('path = "var/heartbeat.jsonl"', f'path = "{tmp_path}/heartbeat.jsonl"')
    path = tmp_path / "integrator.toml"
    path.write_text(daemon_config(text, tmp_path))
    unused = [
        "integrator.transforms.enrich", "integrator.transforms.map",
        "integrator.transforms.validate", "integrator.builtin.http_sink",
        "integrator.builtin.http_poll", "integrator.http.client", "integrator.http.oauth2",
        "jmespath", "xml.sax", "integrator_redis.sink", "integrator_postgres.sink",
    ]  # fmt: skip
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import anyio
        from integrator.config import load_config
        from integrator.engine.daemon import Daemon
        from integrator.plugins import load_plugins

        pm, registry = load_plugins()
        daemon = Daemon(load_config(Path({str(path)!r}), registry), pm, registry)

        async def main():
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                await daemon.ready.wait()
                print("imported:", [m for m in {unused!r} if m in sys.modules], file=sys.stderr)
                daemon.request_stop()

        anyio.run(main)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "imported: []" in out.stderr


def test_a_duplicate_component_names_both_plugins() -> None:
    class First:
        @hookimpl
        def integrator_sinks(self, register: Any) -> None:
            register("twin", Sink)

    class Second:
        @hookimpl
        def integrator_sinks(self, register: Any) -> None:
            register("twin", Sink)

    registry = registry_with(First(), Second())
    assert registry.get("sink", "twin").plugin == "First"
    failed = registry.plugins["Second"]
    assert failed.status == "failed"
    assert "sink 'twin' is already provided by plugin 'First'" in failed.error


def test_a_component_of_the_wrong_kind_is_refused() -> None:
    class Wrong:
        @hookimpl
        def integrator_sinks(self, register: Any) -> None:
            register("not-a-sink", Middleware)

    registry = registry_with(Wrong())
    assert registry.get("sink", "not-a-sink") is None
    assert "must be a subclass of integrator.Sink" in registry.plugins["Wrong"].error


def test_an_invalid_component_name_is_refused() -> None:
    class BadName:
        @hookimpl
        def integrator_sinks(self, register: Any) -> None:
            register("Has Spaces", Sink)

    registry = registry_with(BadName())
    assert "invalid sink name 'Has Spaces'" in registry.plugins["BadName"].error


class ByReference:
    """A plugin that registers its sink by reference, as ``"package.module:ClassName"``."""

    def __init__(self, reference: str) -> None:
        self.reference = reference

    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        register("lazy", self.reference)


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a module, importable but not imported, that holds a plugin's classes."""
    name = "integrator_lazy_parts"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
            from integrator import Middleware, Sink

            class LazySink(Sink):
                async def deliver(self, message):
                    return None

            class NotASink(Middleware):
                pass
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_component_registered_by_reference_is_imported_when_first_used(parts: str) -> None:
    registry = registry_with(ByReference(f"{parts}:LazySink"))
    entry = registry.get("sink", "lazy")
    assert "lazy" in registry.names("sink")
    assert registry.plugins["ByReference"].components == {"sink": ["lazy"]}
    assert parts not in sys.modules
    assert entry.component is sys.modules[parts].LazySink


def test_a_reference_to_a_missing_module_says_which_component_why_and_what_to_do() -> None:
    registry = registry_with(ByReference("integrator_no_such_module:LazySink"))
    with pytest.raises(ComponentUnavailable) as caught:
        _ = registry.get("sink", "lazy").component
    assert str(caught.value) == (
        "sink 'lazy' of plugin 'ByReference' cannot be loaded: "
        "integrator_no_such_module:LazySink: ModuleNotFoundError: "
        "No module named 'integrator_no_such_module'; reinstall plugin 'ByReference', or pin "
        "a version of it that works with this integrator, or start without it: "
        "INTEGRATOR_DISABLE_PLUGINS=ByReference"
    )


def test_a_reference_to_a_missing_class_names_it(parts: str) -> None:
    registry = registry_with(ByReference(f"{parts}:Missing"))
    with pytest.raises(ComponentUnavailable, match=r"AttributeError: .* no attribute 'Missing'"):
        _ = registry.get("sink", "lazy").component


def test_a_reference_to_a_class_of_the_wrong_kind_is_refused_when_used(parts: str) -> None:
    registry = registry_with(ByReference(f"{parts}:NotASink"))
    with pytest.raises(
        ComponentUnavailable, match=r"NotASink is not a subclass of integrator\.Sink"
    ):
        _ = registry.get("sink", "lazy").component


def test_a_malformed_reference_fails_the_plugin_when_it_registers() -> None:
    registry = registry_with(ByReference("integrator_lazy_parts.LazySink"))
    assert registry.get("sink", "lazy") is None
    assert (
        "invalid reference 'integrator_lazy_parts.LazySink'"
        in registry.plugins["ByReference"].error
    )


def test_a_config_using_a_component_that_cannot_be_imported_is_a_problem_of_its_key(
    tmp_path: Path,
) -> None:
    registry = registry_with(ByReference("integrator_no_such_module:LazySink"))
    text = '[routes.r]\nsinks = [{ type = "lazy" }]\n[routes.r.source]\ntype = "timer"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "integrator.toml", registry)
    [problem] = caught.value.problems
    assert problem.startswith(
        f"{tmp_path}/integrator.toml:2: route 'r': routes.r.sinks[0].type: "
        "sink 'lazy' of plugin 'ByReference' cannot be loaded: "
        "integrator_no_such_module:LazySink: ModuleNotFoundError"
    )


class SchemeByReference:
    """A plugin that registers a signature scheme by a reference that cannot import."""

    @hookimpl
    def integrator_signatures(self, register: Any) -> None:
        register("acme", "integrator_no_such_module:AcmeSignature")


def test_an_option_naming_a_component_that_cannot_be_imported_is_a_problem_of_its_key(
    tmp_path: Path,
) -> None:
    registry = registry_with(SchemeByReference())
    text = (
        '[routes.r]\nsinks = [{ type = "stdout" }]\n[routes.r.source]\ntype = "webhook"\n'
        'path = "/in"\nverify = { scheme = "acme", secret = "s" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "integrator.toml", registry)
    [problem] = caught.value.problems
    assert "routes.r.source: signature 'acme' of plugin 'SchemeByReference' cannot be loaded" in (
        problem
    )
    assert "INTEGRATOR_DISABLE_PLUGINS=SchemeByReference" in problem


def test_a_plugin_raising_in_a_hook_does_not_stop_the_others() -> None:
    class Exploding:
        @hookimpl
        def integrator_sinks(self, register: Any) -> None:
            raise RuntimeError("boom")

    registry = registry_with(Exploding())
    assert registry.plugins["Exploding"].status == "failed"
    assert "RuntimeError: boom" in registry.plugins["Exploding"].error
    assert registry.get("sink", "file") is not None


def test_an_installed_plugin_is_found_through_its_entry_point(with_plugins: Any) -> None:
    _, registry = load_plugins()
    hello = registry.plugins["hello"]
    assert hello.status == "loaded"
    assert hello.version == "1.2.3"
    assert hello.components == {"source": ["hello"], "middleware": ["shout"]}
    assert registry.get("source", "hello").plugin == "hello"


def test_a_plugin_that_fails_to_import_is_reported_by_name(with_plugins: Any) -> None:
    _, registry = load_plugins()
    broken = registry.plugins["broken"]
    assert broken.status == "failed"
    assert "ModuleNotFoundError" in broken.error
    assert "integrator_missing_dependency" in broken.error
    assert registry.plugins["hello"].status == "loaded"


def test_disable_plugins_blocks_a_plugin(
    with_plugins: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEGRATOR_DISABLE_PLUGINS", "hello, integrator.builtin.stdout")
    _, registry = load_plugins()
    assert registry.plugins["hello"].status == "blocked"
    assert registry.get("source", "hello") is None
    assert registry.get("sink", "stdout") is None
    assert registry.get("sink", "file") is not None


def test_disabling_a_name_that_is_no_plugin_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INTEGRATOR_DISABLE_PLUGINS", "http_sink, stdout")
    with caplog.at_level("WARNING", logger="integrator.plugins"):
        _, registry = load_plugins()
    assert registry.get("sink", "stdout") is None
    warned = [r.getMessage() for r in caplog.records if "DISABLE_PLUGINS" in r.getMessage()]
    assert len(warned) == 1
    assert "'http_sink', which is no plugin" in warned[0]
    assert "the built-in plugin 'http'" in warned[0]


def test_load_plugins_pins_the_entry_point_plugins(
    with_plugins: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEGRATOR_LOAD_PLUGINS", "hello")
    _, registry = load_plugins()
    assert registry.plugins["hello"].status == "loaded"
    assert registry.plugins["broken"].status == "blocked"


def test_plugins_command_lists_versions_components_and_failures(with_plugins: Any) -> None:
    env = {**os.environ, "PYTHONPATH": str(with_plugins)}
    out = subprocess.run(
        integrator_command("plugins"), capture_output=True, text=True, env=env, check=True
    )
    assert "hello 1.2.3" in out.stdout
    assert "source: hello" in out.stdout
    assert "broken 0.0.1 [failed]" in out.stdout
    assert "integrator_missing_dependency" in out.stdout
    assert "integrator.builtin.timer built-in" in out.stdout


def test_plugins_command_lists_the_components_registered_by_reference() -> None:
    out = subprocess.run(
        integrator_command("plugins"), capture_output=True, text=True, check=True
    ).stdout
    assert "integrator.builtin.http built-in\n    sink: http\n    source: http_poll\n" in out
    assert "middleware: convert, dedupe, enrich, filter, map, python, route, split" in out
    assert "codec: bytes, csv, form, json, msgpack, text, xml" in out


def test_trace_hooks_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    monkeypatch.setenv("INTEGRATOR_TRACE_HOOKS", "1")
    caplog.set_level("DEBUG", logger="integrator.plugins")
    pm, _ = get_plugin_manager(entrypoints=False)
    pm.hook.integrator_sinks(register=lambda name, component: None)
    assert any("integrator_sinks" in r.getMessage() for r in caplog.records)
