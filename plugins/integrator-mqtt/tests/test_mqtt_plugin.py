"""The plugin as an operator meets it: installed, configured, and keeping secrets."""

from __future__ import annotations

from pathlib import Path

import integrator_mqtt
import pytest
from integrator_mqtt.source import MqttSourceOptions

from integrator.cli import main
from integrator.config import parse_config
from integrator.errors import ConfigError
from integrator.testing import make_registry
from integrator.types import REDACTOR

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "mqtt-to-amqp.toml"


def test_the_installed_plugin_is_found_through_its_entry_point():
    _pm, registry = make_registry(entrypoints=True)
    assert registry.get("source", "mqtt").plugin == "mqtt"
    assert registry.get("sink", "mqtt").plugin == "mqtt"


def test_the_example_config_passes_check_and_its_route_tests():
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    assert main(["test", "-c", str(EXAMPLE)]) == 0


def test_a_misspelt_option_is_a_config_error_naming_the_key(tmp_path):
    _pm, registry = make_registry(integrator_mqtt)
    text = """
[routes.r]
source = { type = "mqtt", topics = ["a/#"], client_id = "c", qso = 1 }
sinks = [{ type = "stdout" }]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "integrator.toml", registry)
    assert "did you mean 'qos'" in str(caught.value)


def test_a_wildcard_sink_topic_is_a_config_error(tmp_path):
    _pm, registry = make_registry(integrator_mqtt)
    text = """
[routes.r]
source = { type = "timer" }
sinks = [{ type = "mqtt", topic = "sensors/#" }]
"""
    with pytest.raises(ConfigError, match="wildcards"):
        parse_config(text, tmp_path / "integrator.toml", registry)


def test_a_password_from_the_environment_stays_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_MQTT_PASSWORD", "hunter2-mqtt")
    _pm, registry = make_registry(integrator_mqtt)
    text = """
[routes.r]
source = { type = "mqtt", topics = ["a"], client_id = "c", password = "${env:TEST_MQTT_PASSWORD}" }
sinks = [{ type = "stdout" }]
"""
    config = parse_config(text, tmp_path / "integrator.toml", registry)
    options = config.routes["r"].source.options
    assert options.password.reveal() == "hunter2-mqtt"
    assert "hunter2-mqtt" not in repr(options)


def test_a_password_in_the_url_is_redacted():
    url = "mqtt://app:in-url-secret@broker.internal:1883"
    options = MqttSourceOptions(url=url, topics=["a"], client_id="c")
    options.validate()
    assert options.endpoint == "broker.internal:1883"
    assert "in-url-secret" not in REDACTOR.redact(f"cannot connect to {url}")
