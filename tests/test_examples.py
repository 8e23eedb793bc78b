"""Every shipped config passes `integrator check` and its own route tests, so none can rot.

Secrets the examples refer to (``${env:…}``, ``${cred:…}``) get placeholder values
here; a config that needs a plugin which is not installed fails (the Makefile installs
every first-party plugin), it is not skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from integrator.cli import main

ROOT = Path(__file__).parent.parent
CONFIGS = sorted(
    path
    for path in [
        ROOT / "config" / "integrator.toml",
        *(ROOT / "config" / "examples").glob("*.toml"),
    ]
    if not path.name.endswith(".test.toml")  # route cases beside a config, not a config
)
#: Accepted by every secret check we have, Standard Webhooks' ``whsec_`` base64 included.
PLACEHOLDER = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def placeholders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every secret reference of every config a placeholder value; work from the root."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    for path in CONFIGS:
        for kind, name in re.findall(r"\$\{(env|cred):([^}]*)\}", path.read_text()):
            if kind == "env":
                monkeypatch.setenv(name, PLACEHOLDER)
            else:
                (credentials / name).write_text(PLACEHOLDER)
    monkeypatch.chdir(ROOT)


def test_the_examples_are_found() -> None:
    assert ROOT / "config" / "integrator.toml" in CONFIGS
    assert ROOT / "config" / "examples" / "transform-pipeline.toml" in CONFIGS


@pytest.mark.usefixtures("placeholders")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_the_config_is_valid(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "-c", str(config)])
    assert code == 0, capsys.readouterr().err


@pytest.mark.usefixtures("placeholders")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_the_route_tests_pass(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "-c", str(config)])
    output = capsys.readouterr()
    assert code == 0, output.out + output.err
    assert re.search(r"^\d+ passed, 0 failed$", output.out, re.M), output.out
