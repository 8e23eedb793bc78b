"""URLs in logs and errors: credentials never shown."""

from __future__ import annotations

import pytest

from integrator.types import REDACTOR, redact_url, remember_url_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:pw-1234@cache:6379/0", "redis://app:***@cache:6379/0"),
        (
            "amqp://app:p%40ss-w0rd@broker/prod?heartbeat=5",
            "amqp://app:***@broker/prod?heartbeat=5",
        ),
        ("postgresql://alice@db:5432/app", "postgresql://alice@db:5432/app"),
        ("https://example.com/path", "https://example.com/path"),
    ],
)
def test_a_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_drop_userinfo_removes_a_token_written_as_the_user() -> None:
    assert (
        redact_url("nats://t0ken-abc@10.0.0.1:4222", drop_userinfo=True) == "nats://10.0.0.1:4222"
    )


def test_a_percent_encoded_url_password_is_redacted_decoded_too() -> None:
    remember_url_password("postgresql://app:p%40ss-w0rd-xyz@db/prod")
    assert REDACTOR.redact("auth failed p@ss-w0rd-xyz") == "auth failed ***"
    assert REDACTOR.redact("url p%40ss-w0rd-xyz") == "url ***"


def test_a_token_in_the_user_part_is_remembered_when_asked() -> None:
    remember_url_password("nats://s3cret-token-abc@nats:4222", include_user=True)
    assert REDACTOR.redact("bad token s3cret-token-abc") == "bad token ***"


def test_a_redacted_url_hides_credential_query_parameters_and_keeps_the_rest() -> None:
    redacted = redact_url("postgresql://db/app?sslmode=require&password=hunter22&apiToken=t0k")
    assert redacted == "postgresql://db/app?sslmode=require&password=***&apiToken=***"


def test_a_remembered_url_password_is_redacted_wherever_it_shows_up() -> None:
    remember_url_password("amqp://app:url-secret-xyz@broker/prod")
    assert REDACTOR.redact("login failed for url-secret-xyz") == "login failed for ***"
