"""Fixtures shared by the core's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from core_support import FIXTURES


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the test plugins are really installed by pip (with entry points)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "--no-index", "--target", str(target),
            str(FIXTURES / "integrator-hello"), str(FIXTURES / "integrator-broken"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    return target


@pytest.fixture
def with_plugins(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Make the installed test plugins visible to entry-point discovery in this process."""
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site
    for name in ("integrator_hello", "integrator_broken"):
        sys.modules.pop(name, None)
