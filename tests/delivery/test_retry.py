"""Retry policy: backoff with full jitter, Retry-After, status classification, give-up rules."""

from __future__ import annotations

import calendar
import email.utils
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrator.config import RetryConfig, convert
from integrator.delivery.retry import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    classify_status,
    delivery_error_for_response,
    parse_http_date,
    parse_ratelimit_reset,
    parse_retry_after,
)
from integrator.errors import DeliveryError, Reject

# RFC 9110's own example instant, in its three forms.
EXAMPLE = 784111777.0
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = "Sun Nov  6 08:49:37 1994"


# -- backoff --------------------------------------------------------------------------------


def test_policy_is_built_from_the_route_config():
    cfg = convert(
        {"max_attempts": 4, "max_age": "1h", "initial": "250ms", "max": "10m", "multiplier": 3},
        RetryConfig,
    )
    policy = RetryPolicy.from_config(cfg)
    assert policy == RetryPolicy(
        max_attempts=4, max_age=3600.0, initial=0.25, max=600.0, multiplier=3.0
    )


def test_full_jitter_spans_zero_to_the_ceiling():
    policy = RetryPolicy(initial=1, max=300, multiplier=2)
    rng = random.Random(42)
    delays = [policy.next_delay(4, rng=rng) for _ in range(2000)]
    assert all(0 <= d <= 8 for d in delays)
    # full jitter, not "ceiling plus a little": the draws cover the whole range
    assert min(delays) < 0.5
    assert max(delays) > 7.5


def test_ceiling_grows_by_the_multiplier_from_initial():
    policy = RetryPolicy(initial=0.5, max=1000, multiplier=3)
    assert [policy.ceiling(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 13.5]


def test_ceiling_is_capped_at_max_even_for_huge_attempt_numbers():
    policy = RetryPolicy(initial=1, max=60, multiplier=2)
    assert policy.ceiling(7) == 60
    assert policy.ceiling(100_000) == 60  # no OverflowError
    rng = random.Random(1)
    assert all(policy.next_delay(5000, rng=rng) <= 60 for _ in range(500))


def test_same_seed_gives_the_same_delays():
    policy = RetryPolicy()
    first = [policy.next_delay(n, rng=random.Random(7)) for n in range(1, 6)]
    second = [policy.next_delay(n, rng=random.Random(7)) for n in range(1, 6)]
    assert first == second


def test_attempt_numbers_start_at_one():
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy().next_delay(0)


def test_longer_retry_after_wins_over_the_backoff_even_above_max():
    policy = RetryPolicy(initial=1, max=10)
    assert policy.next_delay(1, retry_after=120, rng=random.Random(3)) == 120


def test_shorter_retry_after_does_not_shorten_the_backoff():
    policy = RetryPolicy(initial=100, max=100, multiplier=1)
    delay = policy.next_delay(1, retry_after=0.001, rng=random.Random(5))
    assert delay == random.Random(5).uniform(0, 100)


def test_retry_after_is_capped_at_a_day():
    policy = RetryPolicy()
    assert policy.next_delay(1, retry_after=10 * MAX_RETRY_AFTER) == MAX_RETRY_AFTER
    assert MAX_RETRY_AFTER == 86400


def test_invalid_policies_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)


# -- giving up ------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "expected"), [(1, True), (4, True), (5, False), (6, False)])
def test_max_attempts_counts_every_attempt(attempts, expected):
    policy = RetryPolicy(max_attempts=5)
    assert policy.should_retry(attempts, first_attempt_at=0, now=1, retriable=True) is expected


def test_max_age_stops_retries_of_old_messages():
    policy = RetryPolicy(max_attempts=100, max_age=60)
    assert policy.should_retry(3, first_attempt_at=1000, now=1059.9, retriable=True)
    assert not policy.should_retry(3, first_attempt_at=1000, now=1060, retriable=True)


def test_without_max_age_only_attempts_count():
    policy = RetryPolicy(max_attempts=3, max_age=None)
    assert policy.should_retry(2, first_attempt_at=0, now=10**9, retriable=True)


def test_non_retriable_failures_are_never_retried():
    assert not RetryPolicy().should_retry(1, first_attempt_at=0, now=0, retriable=False)


# -- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("120", 120), (" 5 ", 5), ("1.5", 1.5)])
def test_retry_after_in_seconds(value, expected):
    assert parse_retry_after(value, now=EXAMPLE) == expected


@pytest.mark.parametrize("value", [IMF, RFC850, ASCTIME])
def test_retry_after_accepts_each_http_date_form(value):
    assert parse_retry_after(value, now=EXAMPLE - 90) == 90


def test_lower_case_dates_are_accepted():
    assert parse_retry_after(IMF.lower(), now=EXAMPLE - 1) == 1


def test_asctime_with_a_two_digit_day():
    assert parse_http_date("Thu Nov 24 08:49:37 1994", now=EXAMPLE) == EXAMPLE + 18 * 86400


def test_rfc850_two_digit_year_far_ahead_means_last_century():
    # in 2030, "94" cannot be 2094 (over 50 years ahead): it is 1994
    in_2030 = calendar.timegm((2030, 1, 1, 0, 0, 0))
    assert parse_http_date(RFC850, now=in_2030) == EXAMPLE


def test_rfc850_two_digit_year_less_than_fifty_years_ahead_is_in_the_future():
    in_2060 = calendar.timegm((2060, 1, 1, 0, 0, 0))
    in_2094 = calendar.timegm((2094, 11, 6, 8, 49, 37))
    assert parse_http_date(RFC850, now=in_2060) == in_2094


def test_rfc850_two_digit_year_near_ahead_stays_in_this_century():
    in_2025 = 1735689600.0
    when = parse_http_date("Friday, 01-Jan-27 00:00:00 GMT", now=in_2025)
    assert when == 1798761600.0  # 2027-01-01


def test_a_date_in_the_past_means_now():
    assert parse_retry_after(IMF, now=EXAMPLE + 3600) == 0


def test_a_leap_second_is_read_as_the_next_second():
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT", now=0) == 1483228800.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-1",
        "+5",
        "5s",
        "soon",
        "1e3",
        "12345678901234567890",  # absurdly many digits
        str(int(MAX_RETRY_AFTER) + 1),  # over a day
        "Sun, 06 Nov 1994 08:49:37 UTC",  # only GMT is allowed
        "Sun, 6 Nov 1994 08:49:37 GMT",  # IMF-fixdate has a two-digit day
        "Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 25:49:37 GMT",  # no such hour
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT trailing",
    ],
)
def test_unusable_retry_after_values_give_none(value):
    assert parse_retry_after(value, now=EXAMPLE - 10) is None


def test_a_date_more_than_a_day_ahead_gives_none():
    assert parse_retry_after(IMF, now=EXAMPLE - MAX_RETRY_AFTER - 1) is None


timestamps = st.integers(min_value=0, max_value=4_102_444_800)  # 1970 .. 2100


@given(timestamps)
def test_imf_fixdate_agrees_with_the_stdlib_formatter(ts):
    formatted = email.utils.formatdate(ts, usegmt=True)
    assert parse_http_date(formatted, now=ts) == ts


@given(timestamps)
def test_asctime_agrees_with_the_c_asctime_format(ts):
    formatted = time.asctime(time.gmtime(ts))
    assert parse_http_date(formatted, now=ts) == ts
    assert email.utils.parsedate_to_datetime(formatted).timestamp() == ts


@given(timestamps)
def test_rfc850_agrees_with_the_stdlib_parser(ts):
    formatted = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(ts))
    oracle = email.utils.parsedate_to_datetime(formatted).timestamp()
    ours = parse_http_date(formatted, now=ts)
    assert ours == ts
    if time.gmtime(ts).tm_year <= 2068:  # the stdlib reads 00-68 as 20xx, 69-99 as 19xx
        assert ours == oracle


# -- rate-limit headers ---------------------------------------------------------------------


def test_ietf_ratelimit_field_reset():
    headers = {"RateLimit": "limit=10, remaining=0, reset=5"}
    assert parse_ratelimit_reset(headers, now=EXAMPLE) == 5


def test_ietf_ratelimit_structured_field_reset():
    headers = {"ratelimit": '"default";r=0;t=7', "ratelimit-policy": '"default";q=10;w=60'}
    assert parse_ratelimit_reset(headers, now=EXAMPLE) == 7


def test_ratelimit_reset_header_is_a_delay():
    assert parse_ratelimit_reset({"RateLimit-Reset": "30"}, now=EXAMPLE) == 30


def test_legacy_epoch_reset_is_turned_into_a_delay():
    headers = {"x-ratelimit-reset": str(int(EXAMPLE) + 42)}
    assert parse_ratelimit_reset(headers, now=EXAMPLE) == 42


def test_no_or_broken_ratelimit_headers_give_none():
    assert parse_ratelimit_reset({}, now=EXAMPLE) is None
    assert parse_ratelimit_reset({"X-RateLimit-Reset": "tomorrow"}, now=EXAMPLE) is None
    assert parse_ratelimit_reset({"RateLimit": "limit=10"}, now=EXAMPLE) is None


# -- status codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (201, None),
        (204, None),
        (301, None),
        (304, None),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (410, False),
        (413, False),
        (422, False),
        (408, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
    ],
)
def test_status_classification(status, expected):
    assert classify_status(status) is expected


def test_success_builds_no_error():
    assert delivery_error_for_response(200, {}, now=EXAMPLE) is None


def test_server_error_is_retriable_with_its_retry_after():
    err = delivery_error_for_response(503, {"Retry-After": "17"}, now=EXAMPLE)
    assert isinstance(err, DeliveryError)
    assert not isinstance(err, Reject)
    assert (err.reason, err.retriable, err.retry_after) == (
        "HTTP 503 Service Unavailable",
        True,
        17,
    )


def test_retry_after_date_is_read_with_the_given_now():
    err = delivery_error_for_response(503, {"retry-after": IMF}, now=EXAMPLE - 8)
    assert err is not None and err.retry_after == 8


def test_client_error_is_not_retriable():
    err = delivery_error_for_response(422, {}, now=EXAMPLE)
    assert err is not None
    assert (err.reason, err.retriable, err.retry_after) == (
        "HTTP 422 Unprocessable Entity",
        False,
        None,
    )


def test_too_many_requests_falls_back_to_the_ratelimit_reset():
    err = delivery_error_for_response(429, {"RateLimit": "limit=5, remaining=0, reset=9"}, EXAMPLE)
    assert err is not None and (err.retriable, err.retry_after) == (True, 9)


def test_forbidden_with_an_exhausted_quota_is_a_rate_limit():
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(EXAMPLE) + 60)}
    err = delivery_error_for_response(403, headers, now=EXAMPLE)
    assert err is not None and (err.retriable, err.retry_after) == (True, 60)


def test_forbidden_with_retry_after_is_retried():
    err = delivery_error_for_response(403, {"Retry-After": "60"}, now=EXAMPLE)
    assert err is not None and (err.retriable, err.retry_after) == (True, 60)


def test_plain_forbidden_is_final():
    err = delivery_error_for_response(403, {"x-ratelimit-remaining": "12"}, now=EXAMPLE)
    assert err is not None and not err.retriable


def test_unknown_status_code_has_a_bare_reason():
    err = delivery_error_for_response(599, {}, now=EXAMPLE)
    assert err is not None and err.reason == "HTTP 599" and err.retriable
