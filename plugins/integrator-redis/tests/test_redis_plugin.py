"""The plugin as an operator meets it: installed, configured, and keeping secrets."""

from __future__ import annotations

from pathlib import Path

import integrator_redis
import pytest

from integrator import redact_url
from integrator.cli import main
from integrator.config import parse_config
from integrator.errors import ConfigError
from integrator.testing import make_registry
from integrator.types import REDACTOR

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "redis-stream-to-file.toml"


def test_the_installed_plugin_is_found_through_its_entry_point():
    _pm, registry = make_registry(entrypoints=True)
    assert registry.get("source", "redis_stream").plugin == "redis"
    assert registry.get("sink", "redis_stream").plugin == "redis"
    assert registry.get("sink", "redis_publish").plugin == "redis"


def test_the_example_config_passes_check():
    assert main(["check", "-c", str(EXAMPLE)]) == 0


def test_a_misspelt_option_is_a_config_error_naming_the_key(tmp_path):
    _pm, registry = make_registry(integrator_redis)
    text = """
[routes.r]
source = { type = "redis_stream", strem = "orders" }
sinks = [{ type = "stdout" }]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "integrator.toml", registry)
    assert "did you mean 'stream'" in str(caught.value)


def test_a_password_from_the_environment_stays_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_REDIS_PASSWORD", "hunter2-redis")
    _pm, registry = make_registry(integrator_redis)
    text = """
[routes.r]
source = { type = "redis_stream", stream = "s", password = "${env:TEST_REDIS_PASSWORD}" }
sinks = [{ type = "stdout" }]
"""
    config = parse_config(text, tmp_path / "integrator.toml", registry)
    options = config.routes["r"].source.options
    assert options.password.reveal() == "hunter2-redis"
    assert "hunter2-redis" not in repr(options)


def test_a_password_in_the_url_is_masked_and_redacted():
    url = "redis://app:in-url-secret@cache.internal:6379/0"
    integrator_redis.source.StreamSourceOptions(url=url, stream="s").validate()
    assert redact_url(url) == "redis://app:***@cache.internal:6379/0"
    assert "in-url-secret" not in REDACTOR.redact(f"cannot connect to {url}")
