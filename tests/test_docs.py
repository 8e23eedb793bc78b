"""Documentation coverage: every hook and every config option is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import msgspec
import pytest

from integrator import config as cfg
from integrator import hookspecs
from integrator.delivery.sqlite import SQLiteOptions
from integrator.plugins import KINDS, load_plugins

DOCS = Path(__file__).parent.parent / "docs"
TESTS = Path(__file__).parent

HOOKS = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("integrator_")
)


def sections() -> list[tuple[str, str]]:
    """(heading, body) of every section of every doc page."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        parts = re.split(r"^(#{1,6} .*)$", page.read_text(), flags=re.M)
        for heading, body in zip(parts[1::2], parts[2::2], strict=True):
            found.append((heading, body))
    return found


def fields(struct: type[msgspec.Struct]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(struct)]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    assert re.search(rf"^#### `{hook}\(", (DOCS / "plugins.md").read_text(), re.M), hook


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    uses = [
        p for p in TESTS.rglob("test_*.py") if p.name != "test_docs.py" and hook in p.read_text()
    ]
    assert uses, f"no test mentions {hook}"


CORE = {
    "daemon": cfg.DaemonConfig,
    "store": cfg.StoreConfig,
    "webhooks": cfg.WebhooksConfig,
    "admin": cfg.AdminConfig,
    "connections": cfg.ConnectionConfig,
    "tls": cfg.TLSConfig,
    "rate_limit": cfg.RateLimitConfig,
    "retry": cfg.RetryConfig,
    "breaker": cfg.BreakerConfig,
    "batch": cfg.BatchConfig,
    "routes": cfg._RouteTable,
    "sink keys": cfg._SinkCommon,
    "sqlite store": SQLiteOptions,
    "alerts": cfg.AlertsConfig,
    "alert rules": cfg.AlertRule,
}


@pytest.mark.parametrize("section", sorted(CORE))
def test_every_core_option_is_in_the_configuration_reference(section: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [f for f in fields(CORE[section]) if f"`{f}`" not in text]
    assert not missing, f"[{section}] options missing from docs/configuration.md: {missing}"


def builtin_components() -> list[tuple[str, str, type]]:
    _, registry = load_plugins()
    found = []
    for kind in KINDS:
        for name, registered in registry.components[kind].items():
            if registry.plugins[registered.plugin].builtin:
                found.append((kind, name, registered.component))
    return sorted(found, key=lambda item: item[:2])


@pytest.mark.parametrize(("kind", "name", "component"), builtin_components(), ids=lambda v: str(v))
def test_every_builtin_component_and_option_is_documented(
    kind: str, name: str, component: type
) -> None:
    """A heading names the component in backticks; its section lists each option."""
    matching = [body for heading, body in sections() if f"`{name}`" in heading]
    assert matching, f"no docs heading names {kind} `{name}`"
    options = getattr(component, "Options", None)
    if options is None:
        return
    text = "\n".join(matching)
    missing = [f for f in fields(options) if f"`{f}`" not in text]
    assert not missing, f"{kind} `{name}`: options missing from its docs section: {missing}"
