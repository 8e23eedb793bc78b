"""Helpers for the core's tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


def integrator_command(*args: str) -> list[str]:
    """The command line that runs our console script with this interpreter."""
    return [sys.executable, "-m", "integrator.cli", *args]
