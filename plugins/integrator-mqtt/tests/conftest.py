"""Fixtures for the MQTT plugin's tests: the local Mosquitto, unique topics and
sessions, an outage-making proxy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest

from integrator.testing import TcpProxy, require_service

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


@pytest.fixture
def mqtt_up() -> None:
    require_service("mosquitto", MQTT_HOST, MQTT_PORT)


@pytest.fixture
def topic(mqtt_up: None) -> Callable[[], str]:
    """A unique topic per call."""
    return lambda: f"integrator-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client_id(mqtt_up: None) -> AsyncIterator[Callable[[], str]]:
    """A unique client id per call; the broker forgets their sessions after the test."""
    ids: list[str] = []

    def make() -> str:
        ids.append(f"integrator-test-{uuid.uuid4().hex[:12]}")
        return ids[-1]

    yield make
    for identifier in ids:  # a clean start discards the persistent session
        async with aiomqtt.Client(
            MQTT_HOST, MQTT_PORT, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5
        ):
            pass


@pytest.fixture
def publisher(mqtt_up: None) -> Callable[[], Any]:
    """``async with publisher() as client``: an MQTT 5 client for the test."""
    return lambda: aiomqtt.Client(MQTT_HOST, MQTT_PORT, protocol=aiomqtt.ProtocolVersion.V5)


@pytest.fixture
def mqtt_proxy(mqtt_up: None) -> Callable[[], Any]:
    """``async with mqtt_proxy() as proxy``: a proxy in front of the local Mosquitto.

    (A context manager entered inside the test, not an async fixture, so that its task
    group lives in the test's own task.)
    """
    return lambda: TcpProxy(MQTT_HOST, MQTT_PORT)
