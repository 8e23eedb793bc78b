"""`integrator test`: route cases run the real chain offline and compare what each sink gets."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import pytest

from integrator import hookimpl
from integrator.cli import main
from integrator.components import Middleware, Next
from integrator.engine.route import TARGETS
from integrator.errors import ConfigError, DeliveryError
from integrator.message import Message
from integrator.routetest import run_route_tests


class Choose(Middleware):
    """Sends each message to the sinks its body names, as ``switch`` does."""

    async def __call__(self, message: Message, call_next: Next) -> None:
        await call_next(message.evolve(attributes={**message.attributes, TARGETS: message.body}))


class Flaky(Middleware):
    async def __call__(self, message: Message, call_next: Next) -> None:
        raise DeliveryError("upstream timed out", retriable=True)


class CountSeen(Middleware):
    """Numbers messages with state kept in the store."""

    async def __call__(self, message: Message, call_next: Next) -> None:
        store = self.context.services["store"]
        seen = (await store.get_state("seen") or 0) + 1
        await store.set_state("seen", seen)
        await call_next(message.evolve(attributes={**message.attributes, "seen": seen}))


class TestPlugin:
    @hookimpl
    def integrator_middleware(self, register: Any) -> None:
        register("t-choose", Choose)
        register("t-flaky", Flaky)
        register("t-count", CountSeen)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run(path: Path, *, routes: tuple[str, ...] = (), verbose: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = run_route_tests(path, routes=routes, verbose=verbose, plugins=[TestPlugin()], out=out)
    return code, out.getvalue()


ROUTE = """
    [routes.orders]
    middleware = [{{ type = "map", set = {{ "body.total" = "body.amount" }}, delete = ["body.amount"] }}]
    sinks = [{{ type = "file", path = "{out}" }}]
    [routes.orders.source]
    type = "timer"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write(tmp_path / "integrator.toml", ROUTE.format(out=tmp_path / "out.jsonl"))


def add_cases(config: Path, cases: str) -> Path:
    config.write_text(config.read_text() + textwrap.dedent(cases))
    return config


def test_a_case_whose_output_matches_passes(config: Path) -> None:
    add_cases(
        config,
        """
        [[routes.orders.tests]]
        name = "amount becomes total"
        input = { body = { amount = 3 } }
        expect = { file = { body = { total = 3 } } }
    """,
    )
    code, out = run(config)
    assert out.splitlines() == ["PASS orders/amount becomes total", "1 passed, 0 failed"]
    assert code == 0


def test_a_case_whose_output_differs_fails_with_a_diff(config: Path) -> None:
    add_cases(
        config,
        """
        [[routes.orders.tests]]
        input = { body = { amount = 3 } }
        expect = { file = { body = { total = 4 } } }
    """,
    )
    code, out = run(config)
    assert code == 1
    assert "FAIL orders/case 1" in out
    assert "--- expected" in out and "+++ actual" in out
    assert '-        "total": 4' in out and '+        "total": 3' in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_json_types_are_compared_strictly(config: Path) -> None:
    add_cases(
        config,
        """
        [[routes.orders.tests]]
        input = { body = { amount = true } }
        expect = { file = { body = { total = 1 } } }
    """,
    )
    assert run(config)[0] == 1


def test_headers_and_attributes_are_compared_by_the_keys_given(config: Path) -> None:
    add_cases(
        config,
        """
        [[routes.orders.tests]]
        input = { headers = { "x-shop" = "7", other = "x" }, attributes = { a = 1, b = 2 } }
        expect = { file = { headers = { X-Shop = "7" }, attributes = { b = 2 } } }
    """,
    )
    assert run(config) == (0, "PASS orders/case 1\n1 passed, 0 failed\n")


def test_a_missing_attribute_fails(config: Path) -> None:
    add_cases(
        config,
        """
        [[routes.orders.tests]]
        input = { attributes = { a = 1 } }
        expect = { file = { attributes = { b = 2 } } }
    """,
    )
    code, out = run(config)
    assert code == 1 and '-        "b": 2' in out


def test_a_drop_passes_when_no_sink_gets_anything(tmp_path: Path) -> None:
    path = write(
        tmp_path / "drop.toml",
        f"""
        [routes.r]
        middleware = [{{ type = "filter", where = "body.keep" }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        name = "dropped"
        input = {{ body = {{ keep = false }} }}
        expect = {{ drop = true }}

        [[routes.r.tests]]
        name = "kept, but expected dropped"
        input = {{ body = {{ keep = true }} }}
        expect = {{ drop = true }}
    """,
    )
    code, out = run(path)
    assert "PASS r/dropped" in out
    assert "FAIL r/kept, but expected dropped" in out
    assert "got: delivered to file (1 message)" in out
    assert code == 1


def test_a_rejected_message_passes_a_dlq_case_whose_reason_it_contains(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dlq.toml",
        f"""
        [routes.r]
        middleware = [{{ type = "map", coerce = {{ "body.n" = "int" }} }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        name = "right reason"
        input = {{ body = {{ n = "two" }} }}
        expect = {{ dlq = "cannot convert 'two' to int" }}

        [[routes.r.tests]]
        name = "wrong reason"
        input = {{ body = {{ n = "two" }} }}
        expect = {{ dlq = "missing" }}
    """,
    )
    code, out = run(path)
    assert "PASS r/right reason" in out
    assert "FAIL r/wrong reason" in out
    assert "got: dead-lettered: map: coerce body.n: cannot convert 'two' to int" in out
    assert code == 1


def test_a_retriable_error_is_a_retry_not_a_dead_letter(tmp_path: Path) -> None:
    path = write(
        tmp_path / "retry.toml",
        f"""
        [routes.r]
        middleware = [{{ type = "t-flaky" }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        name = "retried"
        expect = {{ retry = "timed out" }}
        input = {{}}

        [[routes.r.tests]]
        name = "not dead-lettered"
        expect = {{ dlq = "timed out" }}
        input = {{}}
    """,
    )
    code, out = run(path)
    assert "PASS r/retried" in out and "FAIL r/not dead-lettered" in out
    assert code == 1


def test_split_delivers_every_part_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "split.toml",
        f"""
        [routes.r]
        middleware = [{{ type = "split", path = "body.items" }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        input = {{ id = "m", body = {{ items = ["a", "b", "c"] }} }}
        expect = {{ file = [{{ body = "a", id = "m:0" }}, {{ body = "b" }}, {{ body = "c" }}] }}

        [[routes.r.tests]]
        name = "one part too few"
        input = {{ body = {{ items = ["a", "b", "c"] }} }}
        expect = {{ file = [{{ body = "a" }}, {{ body = "b" }}] }}
    """,
    )
    code, out = run(path)
    assert "PASS r/case 1" in out
    assert "FAIL r/one part too few" in out and '+      "body": "c",' in out
    assert code == 1


TWO_SINKS = """
    sinks = [
      {{ type = "file", name = "big", path = "{out}/big" }},
      {{ type = "file", name = "small", path = "{out}/small" }},
    ]
    source = {{ type = "timer" }}
"""


def test_switch_chooses_which_sinks_get_a_message(tmp_path: Path) -> None:
    path = write(
        tmp_path / "switch.toml",
        """
        [routes.r]
        middleware = [
          { type = "switch", cases = [{ when = "body.n > `10`", sinks = ["big"] }], default = ["big", "small"] },
        ]
        """
        + TWO_SINKS.format(out=tmp_path)
        + """
        [[routes.r.tests]]
        name = "big only"
        input = { body = { n = 11 } }
        expect = { big = { body = { n = 11 } } }

        [[routes.r.tests]]
        name = "every sink by default"
        input = { body = { n = 1 } }
        expect = { "*" = { body = { n = 1 } } }

        [[routes.r.tests]]
        name = "expected small, goes to big only"
        input = { body = { n = 11 } }
        expect = { small = {} }
    """,
    )
    code, out = run(path)
    assert "PASS r/big only" in out
    assert "PASS r/every sink by default" in out
    assert "FAIL r/expected small, goes to big only" in out
    assert code == 1


def test_a_message_for_an_unknown_sink_fails_the_case(tmp_path: Path) -> None:
    path = write(
        tmp_path / "choose.toml",
        """
        [routes.r]
        middleware = [{ type = "t-choose" }]
        """
        + TWO_SINKS.format(out=tmp_path)
        + """
        [[routes.r.tests]]
        input = { body = ["bgi"] }
        expect = { drop = true }
    """,
    )
    code, out = run(path)
    assert code == 1 and "unknown sink 'bgi'" in out


def test_dedupe_drops_a_repeated_key_within_a_case(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dedupe.toml",
        f"""
        [routes.r]
        middleware = [{{ type = "dedupe", key = "body.order", window = "1h" }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        input = [{{ body = {{ order = 1 }} }}, {{ body = {{ order = 1 }} }}, {{ body = {{ order = 2 }} }}]
        expect = {{ file = [{{ body = {{ order = 1 }} }}, {{ body = {{ order = 2 }} }}] }}
    """,
    )
    assert run(path)[0] == 0


def test_a_sinks_own_middleware_shapes_what_it_receives(tmp_path: Path) -> None:
    path = write(
        tmp_path / "sinkmw.toml",
        f"""
        [routes.r]
        source = {{ type = "timer" }}
        [[routes.r.sinks]]
        type = "file"
        path = "{tmp_path / "out"}"
        middleware = [{{ type = "map", set = {{ "body.wrapped" = "body" }}, replace_body = true }}]

        [[routes.r.tests]]
        input = {{ body = 1 }}
        expect = {{ file = {{ body = {{ wrapped = 1 }} }} }}
    """,
    )
    assert run(path)[0] == 0


def test_an_encoded_body_is_compared_as_text(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bytes.toml",
        f"""
        [routes.r]
        middleware = [{{ type = "convert", to = "json" }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        input = {{ body = {{ a = 1 }} }}
        expect = {{ file = {{ body = '{{"a":1}}', headers = {{ content-type = "application/json" }} }} }}
    """,
    )
    assert run(path)[0] == 0


def test_inputs_of_one_case_share_state_and_cases_do_not(tmp_path: Path) -> None:
    path = write(
        tmp_path / "state.toml",
        f"""
        [routes.r]
        middleware = [{{ type = "t-count" }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        input = [{{ body = "a" }}, {{ body = "b" }}]
        expect = {{ file = [{{ attributes = {{ seen = 1 }} }}, {{ attributes = {{ seen = 2 }} }}] }}

        [[routes.r.tests]]
        input = {{ body = "c" }}
        expect = {{ file = {{ attributes = {{ seen = 1 }} }} }}
    """,
    )
    assert run(path) == (0, "PASS r/case 1\nPASS r/case 2\n2 passed, 0 failed\n")


def test_an_http_lookup_fails_the_case_whatever_it_expects(tmp_path: Path) -> None:
    path = write(
        tmp_path / "offline.toml",
        f"""
        [connections.crm]
        url = "http://127.0.0.1:9/"
        [routes.r]
        middleware = [{{ type = "enrich", lookup = "http", connection = "crm", path = "/c", target = "body.c" }}]
        sinks = [{{ type = "file", path = "{tmp_path / "out"}" }}]
        source = {{ type = "timer" }}

        [[routes.r.tests]]
        input = {{}}
        expect = {{ dlq = "" }}
    """,
    )
    code, out = run(path)
    assert code == 1
    assert "connection crm: integrator test runs offline" in out


def test_cases_in_test_files_beside_the_config_run_too(config: Path) -> None:
    case = """
        [[routes.orders.tests]]
        name = "{name}"
        input = {{ body = {{ amount = 1 }} }}
        expect = {{ file = {{ body = {{ total = 1 }} }} }}
    """
    add_cases(config, case.format(name="inline"))
    write(config.parent / "integrator.test.toml", case.format(name="from test file"))
    write(config.parent / "integrator.more.test.toml", case.format(name="from another"))
    write(config.parent / "other.test.toml", "this file belongs to another config")
    code, out = run(config)
    assert out.splitlines() == [
        "PASS orders/inline",
        "PASS orders/from test file",
        "PASS orders/from another",
        "3 passed, 0 failed",
    ]
    assert code == 0


def test_a_test_file_naming_an_unknown_route_is_invalid(config: Path) -> None:
    write(
        config.parent / "integrator.test.toml",
        """
        [[routes.ordrs.tests]]
        input = {}
        expect = { drop = true }
    """,
    )
    with pytest.raises(ConfigError, match=r"integrator.test.toml: routes.ordrs: no such route"):
        run(config)


def test_route_option_runs_only_that_routes_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "two.toml",
        f"""
        [routes.a]
        sinks = [{{ type = "file", path = "{tmp_path / "a"}" }}]
        source = {{ type = "timer" }}
        [[routes.a.tests]]
        input = {{}}
        expect = {{ drop = true }}

        [routes.b]
        sinks = [{{ type = "file", path = "{tmp_path / "b"}" }}]
        source = {{ type = "timer" }}
        [[routes.b.tests]]
        input = {{ body = 1 }}
        expect = {{ file = {{ body = 1 }} }}
    """,
    )
    assert main(["test", "-c", str(path), "--route", "b"]) == 0
    assert capsys.readouterr().out == "PASS b/case 1\n1 passed, 0 failed\n"
    assert main(["test", "-c", str(path)]) == 1
    assert main(["test", "-c", str(path), "--route", "c"]) == 2
    assert "--route c: no such route" in capsys.readouterr().err


def test_an_invalid_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "bad.toml",
        """
        [routes.r]
        sinks = [{ type = "file", path = "x", colour = "red" }]
        source = { type = "timer" }
    """,
    )
    assert main(["test", "-c", str(path)]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("expect", "problem"),
    [
        ("{ fiel = { body = 1 } }", "expect.fiel: no such sink; this route's sinks: file"),
        ('{ drop = true, dlq = "x" }', "expect: give exactly one of"),
        ("{ file = { bdy = 1 } }", "expect.file[0].bdy: unknown key"),
        ("{ dlq = 3 }", "expect.dlq: expected a reason"),
    ],
)
def test_an_invalid_case_exits_2_naming_it(
    config: Path, capsys: pytest.CaptureFixture[str], expect: str, problem: str
) -> None:
    add_cases(
        config,
        f"""
        [[routes.orders.tests]]
        input = {{}}
        expect = {expect}
    """,
    )
    assert main(["test", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"routes.orders.tests[0].{problem}" in err, err


def test_verbose_explains_passing_cases_and_names_routes_without_any(tmp_path: Path) -> None:
    path = write(
        tmp_path / "verbose.toml",
        f"""
        [routes.tested]
        sinks = [{{ type = "file", path = "{tmp_path / "a"}" }}]
        source = {{ type = "timer" }}
        [[routes.tested.tests]]
        input = {{}}
        expect = {{ file = {{}} }}

        [routes.untested]
        sinks = [{{ type = "file", path = "{tmp_path / "b"}" }}]
        source = {{ type = "timer" }}
    """,
    )
    code, out = run(path, verbose=True)
    assert out.splitlines() == [
        "----  untested: no test cases",
        "PASS tested/case 1",
        "    delivered to file (1 message)",
        "1 passed, 0 failed",
    ]
    assert code == 0
