"""systemd/integrator.service: valid for systemd, sandboxed, and wired to the daemon's protocol.

Validity and the exposure score come from systemd-analyze itself, the same oracle an
operator runs. It works without systemd as PID 1: ``verify`` loads the unit into an
offline manager and ``security --offline=true`` scores the file alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "integrator.service"
INSTALLED_SCRIPT = "/opt/integrator/venv/bin/integrator"
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is required under CI=true (apt-get install systemd)")
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"},
    )


def service_section() -> dict[str, list[str]]:
    """Every [Service] assignment, repeated keys kept in order (systemd allows them)."""
    settings: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with the not-yet-installed console script replaced by an executable."""
    text = UNIT.read_text()
    assert INSTALLED_SCRIPT in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_SCRIPT, shutil.which("true") or "/bin/true"))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(runnable_unit: Path) -> None:
    # --recursive-errors=no: judge this unit alone, not the host's network-online.target.
    # With it, parse warnings (unknown key, bad value) also turn into a non-zero exit.
    result = analyze("verify", "--man=no", "--recursive-errors=no", str(runnable_unit))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_systemd_analyze_rates_the_sandbox_at_most_2() -> None:
    result = analyze("security", "--offline=true", str(UNIT))

    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_daemon_reports_readiness_and_the_watchdog_through_sd_notify() -> None:
    service = service_section()

    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30s"]


def test_config_is_checked_before_every_start_and_reload_is_sighup() -> None:
    service = service_section()

    assert service["ExecStartPre"] == [f"{INSTALLED_SCRIPT} check -c ${{INTEGRATOR_CONFIG}}"]
    assert service["ExecStart"] == [f"{INSTALLED_SCRIPT} run -c ${{INTEGRATOR_CONFIG}}"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "INTEGRATOR_CONFIG=/etc/integrator/integrator.toml" in service["Environment"]


def test_systemd_waits_longer_than_the_daemons_default_drain() -> None:
    from integrator.config import DaemonConfig

    stop_timeout = service_section()["TimeoutStopSec"][0]
    assert stop_timeout.endswith("s")
    assert float(stop_timeout.removesuffix("s")) > DaemonConfig().shutdown_timeout
