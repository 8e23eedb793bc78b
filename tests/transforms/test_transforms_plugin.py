"""The transforms plugin: registered through the hooks, and checked by the config loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy
import pytest

from integrator import Middleware, Sink, Source, hookimpl, hookspecs
from integrator.config import parse_config
from integrator.errors import ConfigError
from integrator.plugins import DEFAULT_PLUGINS, build_registry
from integrator.transforms import plugin as transforms_plugin
from integrator.transforms.codec import Codec
from integrator.transforms.convert import builtin_codecs, codecs_from_registry


class NullSource(Source):
    async def run(self, intake: Any, *, task_status: Any = None) -> None:
        return None


class NullSink(Sink):
    async def deliver(self, message: Any) -> None:
        return None


class Endpoints:
    """A source and a sink, so that a route can be written around the middleware."""

    @hookimpl
    def integrator_sources(self, register: Any) -> None:
        register("null", NullSource)

    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        register("null", NullSink)


@pytest.fixture
def registry() -> Any:
    pm = pluggy.PluginManager("integrator")
    pm.add_hookspecs(hookspecs)
    pm.register(transforms_plugin, name="integrator.transforms.plugin")
    pm.register(Endpoints(), name="endpoints")
    return build_registry(pm)


def test_is_a_default_plugin() -> None:
    assert "integrator.transforms.plugin" in DEFAULT_PLUGINS


def test_registers_the_middleware(registry) -> None:
    assert registry.failures == []
    names = {"filter", "map", "validate", "convert", "split", "python"}
    assert names <= set(registry.names("middleware"))
    for name in names:
        entry = registry.get("middleware", name)
        assert issubclass(entry.component, Middleware)
        assert entry.plugin == "integrator.transforms.plugin"


def test_registers_the_codecs(registry) -> None:
    codecs = codecs_from_registry(registry)
    assert set(codecs) == {"json", "msgpack", "csv", "xml", "form", "text", "bytes"}
    assert all(issubclass(codec, Codec) and codec.name == name for name, codec in codecs.items())


def test_the_registered_codecs_are_the_builtin_ones_convert_falls_back_to(registry) -> None:
    assert dict(codecs_from_registry(registry)) == builtin_codecs()


def test_every_name_the_package_exports_resolves() -> None:
    import integrator.transforms as transforms

    missing = [name for name in transforms.__all__ if getattr(transforms, name, None) is None]
    assert missing == []


def load(registry: Any, text: str, tmp_path: Path) -> Any:
    return parse_config(text, tmp_path / "integrator.toml", registry)


def test_the_design_example_route_loads(registry, tmp_path: Path) -> None:
    config = load(
        registry,
        """
[routes.github-pushes]
middleware = [
  { type = "filter", where = "headers.\\"x-github-event\\" == 'push'" },
  { type = "map", replace_body = true, set = { "body.repo" = "body.repository.full_name" } },
  { type = "convert", from = { format = "csv", delimiter = ";" }, to = "json" },
]
source = { type = "null" }
sinks = [{ type = "null" }]
""",
        tmp_path,
    )
    middleware = config.routes["github-pushes"].middleware
    assert [m.type for m in middleware] == ["filter", "map", "convert"]
    assert middleware[2].options.from_ == {"format": "csv", "delimiter": ";"}


def test_an_invalid_expression_is_a_config_error_with_the_key_path(registry, tmp_path) -> None:
    text = """
[routes.r]
source = { type = "null" }
sinks = [{ type = "null" }]
middleware = [
  { type = "filter", where = "body.ok" },
  { type = "filter", where = "body. == 1" },
]
"""
    with pytest.raises(ConfigError) as caught:
        load(registry, text, tmp_path)
    [problem] = caught.value.problems
    assert "route 'r': routes.r.middleware[1]: where: invalid expression 'body. == 1'" in problem
    assert "Parse error at column 6" in problem


def test_every_bad_map_path_is_reported(registry, tmp_path) -> None:
    text = """
[routes.r]
source = { type = "null" }
sinks = [{ type = "null" }]
[[routes.r.middleware]]
type = "map"
set = { "repo" = "body.x" }
delete = ["body.ok", "meta.x"]
"""
    with pytest.raises(ConfigError) as caught:
        load(registry, text, tmp_path)
    [problem] = caught.value.problems
    assert "routes.r.middleware[0]: set.repo: path 'repo' must start with one of" in problem
    assert "; delete.1: path 'meta.x' must start with one of" in problem


def test_an_unknown_coercion_names_its_key(registry, tmp_path) -> None:
    text = """
[routes.r]
source = { type = "null" }
sinks = [{ type = "null" }]
middleware = [{ type = "map", coerce = { "body.n" = "integer" } }]
"""
    with pytest.raises(ConfigError) as caught:
        load(registry, text, tmp_path)
    [problem] = caught.value.problems
    assert "routes.r.middleware[0].coerce" in problem
    assert "Invalid enum value 'integer'" in problem


def test_a_python_function_that_cannot_be_imported_fails_check(registry, tmp_path) -> None:
    text = """
[routes.r]
source = { type = "null" }
sinks = [{ type = "null" }]
middleware = [{ type = "python", function = "no_such_module_abc:transform" }]
"""
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_abc'"):
        load(registry, text, tmp_path)
