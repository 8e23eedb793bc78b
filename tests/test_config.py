"""Configuration: every class of error, as the operator reads it, and secret references."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from integrator.config import Config, find_config, load_config
from integrator.errors import ConfigError
from integrator.plugins import load_plugins
from integrator.types import REDACTOR, Duration, Secret, Size

MINIMAL = """
[routes.ticks]
sinks = [{ type = "stdout" }]
[routes.ticks.source]
type = "timer"
interval = "1s"
"""


@pytest.fixture(scope="module")
def registry():
    return load_plugins()[1]


def load(tmp_path: Path, registry, text: str) -> Config:
    path = tmp_path / "integrator.toml"
    path.write_text(text)
    return load_config(path, registry)


def problems(tmp_path: Path, registry, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, registry, text)
    return caught.value.problems


def test_a_minimal_config_loads_with_defaults(tmp_path: Path, registry) -> None:
    config = load(tmp_path, registry, MINIMAL)
    route = config.routes["ticks"]
    assert route.source.type == "timer"
    assert route.source.options.interval == 1.0
    assert [s.name for s in route.sinks] == ["stdout"]
    assert config.daemon.shutdown_timeout == 30.0
    assert route.retry.max_attempts == 10


def test_the_default_config_is_valid(registry) -> None:
    config = load_config(Path(__file__).parent.parent / "config/integrator.toml", registry)
    assert "heartbeat" in config.routes


def test_an_unknown_key_names_file_line_path_and_suggests(tmp_path: Path, registry) -> None:
    found = problems(tmp_path, registry, '[daemon]\nlog_levl = "debug"\n' + MINIMAL)
    assert found == [
        f"{tmp_path}/integrator.toml:2: daemon.log_levl: unknown key 'log_levl' "
        "(did you mean 'log_level'?)"
    ]


def test_an_unknown_component_option_names_the_route(tmp_path: Path, registry) -> None:
    text = MINIMAL.replace('interval = "1s"', 'interval = "1s"\nintervall = "2s"')
    (problem,) = problems(tmp_path, registry, text)
    assert problem.startswith(f"{tmp_path}/integrator.toml:7: route 'ticks': ")
    assert (
        "routes.ticks.source.intervall: unknown key 'intervall' (did you mean 'interval'?)"
        in problem
    )


def test_a_wrong_type_says_what_was_expected_and_found(tmp_path: Path, registry) -> None:
    text = MINIMAL + 'retry = { max_attempts = "ten" }\n'
    text = text.replace("[routes.ticks.source]", "").replace('type = "timer"', "")
    text = MINIMAL.replace(
        'sinks = [{ type = "stdout" }]',
        'sinks = [{ type = "stdout" }]\nretry = { max_attempts = "ten" }',
    )
    (problem,) = problems(tmp_path, registry, text)
    assert problem == (
        f"{tmp_path}/integrator.toml:4: route 'ticks': routes.ticks.retry.max_attempts: "
        "expected int, found string 'ten'"
    )


def test_a_bad_duration_shows_the_accepted_forms(tmp_path: Path, registry) -> None:
    (problem,) = problems(tmp_path, registry, MINIMAL.replace('"1s"', '"5 parsecs"'))
    assert "routes.ticks.source.interval: expected a duration like '250ms', '30s'" in problem
    assert "found '5 parsecs'" in problem


def test_a_missing_required_key_is_named(tmp_path: Path, registry) -> None:
    text = '[routes.a]\nsinks = [{ type = "file" }]\n[routes.a.source]\ntype = "timer"\n'
    (problem,) = problems(tmp_path, registry, text)
    assert "routes.a.sinks[0]: missing required key 'path'" in problem


def test_a_route_without_source_or_sinks_is_explained(tmp_path: Path, registry) -> None:
    found = problems(tmp_path, registry, "[routes.empty]\ndescription = 'nothing'\n")
    assert any("missing required key 'source'" in p for p in found)
    assert any("missing required key 'sinks'" in p for p in found)


def test_duplicate_route_names_are_an_error(tmp_path: Path, registry) -> None:
    text = MINIMAL + '\n[routes.ticks]\ndescription = "again"\n'
    (problem,) = problems(tmp_path, registry, text)
    assert problem == (
        f"{tmp_path}/integrator.toml:8: duplicate route 'ticks': route names must be unique"
    )


def test_invalid_toml_gives_the_line(tmp_path: Path, registry) -> None:
    (problem,) = problems(tmp_path, registry, "[daemon\nstate_dir = 'x'\n")
    assert problem.startswith(f"{tmp_path}/integrator.toml:1: invalid TOML: ")


def test_an_unknown_component_type_says_which_plugin_provides_it(tmp_path: Path) -> None:
    from integrator.testing import make_registry

    _, builtins_only = make_registry(entrypoints=False)
    text = MINIMAL.replace('type = "timer"', 'type = "redis_stream"')
    (problem,) = problems(tmp_path, builtins_only, text)
    assert "routes.ticks.source.type: unknown source type 'redis_stream': " in problem
    assert "install it with 'pip install integrator-redis'" in problem


def test_an_unknown_sink_type_lists_the_known_ones(tmp_path: Path, registry) -> None:
    (problem,) = problems(tmp_path, registry, MINIMAL.replace('"stdout"', '"kafka"'))
    assert "routes.ticks.sinks[0].type: unknown sink type 'kafka'" in problem
    assert "known sink types: " in problem and "file" in problem


def test_every_problem_is_reported_in_one_run(tmp_path: Path, registry) -> None:
    text = (
        '[daemon]\nlog_levl = "x"\nshutdown_timeout = "soon"\n'
        '[routes.a]\nsinks = [{ type = "file", path = "x", fsycn = "always" }]\n'
        'retry = { max_attempts = "ten" }\n'
        '[routes.a.source]\ntype = "timer"\ninterval = "5 parsecs"\n'
        '[routes.b]\nsinks = []\nsource = { type = "timer" }\n'
    )
    found = problems(tmp_path, registry, text)
    assert len(found) == 6, found
    for fragment in ("log_levl", "shutdown_timeout", "fsycn", "max_attempts", "interval", "sinks"):
        assert any(fragment in p for p in found), fragment


def test_an_unsupported_version_is_an_error(tmp_path: Path, registry) -> None:
    (problem,) = problems(tmp_path, registry, "version = 2\n" + MINIMAL)
    assert "version: expected one of (1,), found number 2" in problem


def test_an_unknown_top_level_key_is_an_error(tmp_path: Path, registry) -> None:
    (problem,) = problems(tmp_path, registry, "[route.x]\na = 1\n" + MINIMAL)
    assert "unknown top-level key 'route' (did you mean 'routes'?)" in problem


def test_a_missing_config_file_is_named(tmp_path: Path, registry) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml", registry)
    assert caught.value.problems == [f"{tmp_path}/nope.toml: config file not found"]


def test_duplicate_sink_names_are_an_error(tmp_path: Path, registry) -> None:
    text = MINIMAL.replace(
        'sinks = [{ type = "stdout" }]',
        'sinks = [{ type = "stdout", name = "out" }, { type = "stdout", name = "out" }]',
    )
    (problem,) = problems(tmp_path, registry, text)
    assert "routes.ticks.sinks[1].name: duplicate sink name 'out'" in problem


def test_repeated_sink_types_get_numbered_names(tmp_path: Path, registry) -> None:
    text = MINIMAL.replace('[{ type = "stdout" }]', '[{ type = "stdout" }, { type = "stdout" }]')
    config = load(tmp_path, registry, text)
    assert [s.name for s in config.routes["ticks"].sinks] == ["stdout-1", "stdout-2"]


# -- secrets --------------------------------------------------------------------------------

SECRET_ROUTE = (
    """
[admin]
token = "{ref}"
"""
    + MINIMAL
)


def test_an_env_reference_resolves_into_a_secret(tmp_path: Path, registry, monkeypatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN_FOR_TEST", "s3cr3t-from-env")
    config = load(tmp_path, registry, SECRET_ROUTE.replace("{ref}", "${env:ADMIN_TOKEN_FOR_TEST}"))
    token = config.admin.token
    assert isinstance(token, Secret)
    assert token.reveal() == "s3cr3t-from-env"
    assert repr(token) == str(token) == "***"
    assert "s3cr3t-from-env" not in repr(config.admin)


def test_a_file_reference_reads_the_file(tmp_path: Path, registry) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("s3cr3t-from-file\n")
    config = load(tmp_path, registry, SECRET_ROUTE.replace("{ref}", f"${{file:{secret_file}}}"))
    assert config.admin.token is not None
    assert config.admin.token.reveal() == "s3cr3t-from-file"


def test_a_cred_reference_reads_systemd_credentials(tmp_path: Path, registry, monkeypatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "admin").write_text("s3cr3t-from-cred")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load(tmp_path, registry, SECRET_ROUTE.replace("{ref}", "${cred:admin}"))
    assert config.admin.token is not None
    assert config.admin.token.reveal() == "s3cr3t-from-cred"


def test_references_work_inside_longer_strings(tmp_path: Path, registry, monkeypatch) -> None:
    monkeypatch.setenv("STATE_FOR_TEST", "somewhere")
    text = '[daemon]\nstate_dir = "/var/${env:STATE_FOR_TEST}/x"\n' + MINIMAL
    assert load(tmp_path, registry, text).daemon.state_dir == "/var/somewhere/x"


def test_a_double_dollar_escapes_a_reference(tmp_path: Path, registry) -> None:
    text = '[daemon]\nstate_dir = "$${env:HOME}"\n' + MINIMAL
    assert load(tmp_path, registry, text).daemon.state_dir == "${env:HOME}"


def test_a_missing_env_var_is_named_with_its_key_path(
    tmp_path: Path, registry, monkeypatch
) -> None:
    monkeypatch.delenv("NOT_SET_FOR_TEST", raising=False)
    (problem,) = problems(
        tmp_path, registry, SECRET_ROUTE.replace("{ref}", "${env:NOT_SET_FOR_TEST}")
    )
    assert problem == (
        f"{tmp_path}/integrator.toml:3: admin.token: environment variable NOT_SET_FOR_TEST is not set"
    )


def test_a_missing_secret_file_is_named(tmp_path: Path, registry) -> None:
    (problem,) = problems(
        tmp_path, registry, SECRET_ROUTE.replace("{ref}", "${file:/nonexistent/tok}")
    )
    assert "admin.token: secret file /nonexistent/tok cannot be read" in problem


def test_a_missing_credential_is_named(tmp_path: Path, registry, monkeypatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (problem,) = problems(tmp_path, registry, SECRET_ROUTE.replace("{ref}", "${cred:absent}"))
    assert "admin.token: credential absent not found in $CREDENTIALS_DIRECTORY" in problem


def test_a_secret_never_appears_in_errors_or_logs(
    tmp_path: Path, registry, monkeypatch, caplog
) -> None:
    monkeypatch.setenv("LEAKY_FOR_TEST", "hunter2-very-secret")
    text = SECRET_ROUTE.replace("{ref}", "${env:LEAKY_FOR_TEST}").replace(
        '"1s"', '"${env:LEAKY_FOR_TEST}"'
    )
    found = problems(tmp_path, registry, text)
    assert found and all("hunter2-very-secret" not in p for p in found)
    # …and should it reach a log line by another path, the formatter scrubs it.
    from integrator.logs import HumanFormatter

    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token is %s", ("hunter2-very-secret",), None
    )
    assert "hunter2-very-secret" not in HumanFormatter().format(record)
    assert "***" in REDACTOR.redact("token is hunter2-very-secret")


# -- value types and file discovery ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5s", 1.5), (2, 2)],
)
def test_durations(text: str, seconds: float) -> None:
    assert Duration.parse(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("512KiB", 524288), ("1MiB", 1048576), ("10MB", 10**7), (42, 42)]
)
def test_sizes(text: str, size: int) -> None:
    assert Size.parse(text) == size


def test_config_discovery_prefers_flag_then_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INTEGRATOR_CONFIG", str(tmp_path / "env.toml"))
    assert find_config("flag.toml") == Path("flag.toml")
    assert find_config(None) == tmp_path / "env.toml"
    monkeypatch.delenv("INTEGRATOR_CONFIG")
    assert find_config(None) in (
        Path("/etc/integrator/integrator.toml"),
        Path("config/integrator.toml"),
    )


def test_a_connection_url_must_be_absolute_and_is_not_echoed(tmp_path: Path, registry) -> None:
    found = problems(
        tmp_path, registry, '[connections.api]\nurl = "s3cret@api.example.com/v1"\n' + MINIMAL
    )
    assert len(found) == 1
    assert "connections.api" in found[0]
    assert "expected an absolute URL with a scheme and a host" in found[0]
    assert "s3cret" not in found[0]


def test_an_absolute_connection_url_loads(tmp_path: Path, registry) -> None:
    config = load(
        tmp_path, registry, '[connections.api]\nurl = "https://api.example.com/v1"\n' + MINIMAL
    )
    assert config.connections["api"].url == "https://api.example.com/v1"
