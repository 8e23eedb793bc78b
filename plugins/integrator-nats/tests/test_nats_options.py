"""Connection options: credentials stay secret, mistakes are config errors."""

from __future__ import annotations

import pytest
from integrator_nats import NatsError, NatsSinkOptions, NatsSourceOptions
from integrator_nats.connection import connect

from integrator.config import convert

SECRET = "s3cr3t-value-never-shown"


def test_a_url_is_shown_without_its_credentials() -> None:
    options = convert(
        {"url": f"nats://alice:{SECRET}@10.0.0.1:4222, tls://{SECRET}@b:4222", "subject": "x"},
        NatsSinkOptions,
    )
    assert options.safe_url() == "nats://10.0.0.1:4222,tls://b:4222"


def test_secrets_do_not_show_in_the_options_repr() -> None:
    options = convert({"stream": "s", "user": "alice", "password": SECRET}, NatsSourceOptions)
    assert SECRET not in repr(options)


async def test_a_failed_connection_names_the_server_but_not_the_credentials() -> None:
    options = convert(
        {"url": f"nats://alice:{SECRET}@127.0.0.1:1", "token": SECRET, "stream": "s"},
        NatsSourceOptions,
    )
    with pytest.raises(NatsError) as caught:
        await connect(options, name="test")
    assert "nats://127.0.0.1:1" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"tls": {"cert_file": "c.pem"}}, "cert_file and key_file go together"),
        ({"token": "t", "user": "u"}, "either token or user/password"),
        ({"batch": 0}, "batch must be at least 1"),
    ],
)
def test_inconsistent_options_are_refused(values: dict[str, object], problem: str) -> None:
    options = convert({"stream": "s", **values}, NatsSourceOptions)
    with pytest.raises(ValueError, match=problem):
        options.validate()
