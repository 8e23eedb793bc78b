"""The plugin host: built-ins through hooks, entry-point discovery, broken plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from core_support import integrator_command

from integrator import Middleware, Sink, hookimpl
from integrator.plugins import DEFAULT_PLUGINS, build_registry, get_plugin_manager, load_plugins


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


def test_trace_hooks_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    monkeypatch.setenv("INTEGRATOR_TRACE_HOOKS", "1")
    caplog.set_level("DEBUG", logger="integrator.plugins")
    pm, _ = get_plugin_manager(entrypoints=False)
    pm.hook.integrator_sinks(register=lambda name, component: None)
    assert any("integrator_sinks" in r.getMessage() for r in caplog.records)
