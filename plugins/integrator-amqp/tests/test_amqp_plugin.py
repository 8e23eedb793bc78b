"""The plugin as an operator meets it: installed, configured, and keeping secrets."""

from __future__ import annotations

from pathlib import Path

import integrator_amqp
import pytest
from integrator_amqp.source import AmqpSourceOptions

from integrator import redact_url
from integrator.cli import main
from integrator.config import parse_config
from integrator.errors import ConfigError
from integrator.testing import make_registry
from integrator.types import REDACTOR

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "amqp-to-redis-stream.toml"


def test_the_installed_plugin_is_found_through_its_entry_point():
    _pm, registry = make_registry(entrypoints=True)
    assert registry.get("source", "amqp").plugin == "amqp"
    assert registry.get("sink", "amqp").plugin == "amqp"


def test_the_example_config_passes_check(monkeypatch):
    monkeypatch.setenv("AMQP_PASSWORD", "placeholder")
    assert main(["check", "-c", str(EXAMPLE)]) == 0


def test_a_misspelt_option_is_a_config_error_naming_the_key(tmp_path):
    _pm, registry = make_registry(integrator_amqp)
    text = """
[routes.r]
source = { type = "amqp", url = "amqp://127.0.0.1/", queue = "q", prefecth = 10 }
sinks = [{ type = "stdout" }]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "integrator.toml", registry)
    assert "did you mean 'prefetch'" in str(caught.value)


def test_a_password_from_the_environment_stays_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_AMQP_PASSWORD", "hunter2-amqp")
    _pm, registry = make_registry(integrator_amqp)
    text = """
[routes.r]
source = { type = "amqp", url = "amqp://app@127.0.0.1/", queue = "q", password = "${env:TEST_AMQP_PASSWORD}" }
sinks = [{ type = "stdout" }]
"""
    config = parse_config(text, tmp_path / "integrator.toml", registry)
    options = config.routes["r"].source.options
    assert options.password.reveal() == "hunter2-amqp"
    assert "hunter2-amqp" not in repr(options)


def test_a_password_in_the_url_is_masked_and_redacted():
    url = "amqp://app:in-url-secret@broker.internal:5672/prod"
    AmqpSourceOptions(url=url, queue="q").validate()
    assert redact_url(url) == "amqp://app:***@broker.internal:5672/prod"
    assert "in-url-secret" not in REDACTOR.redact(f"cannot connect to {url}")
