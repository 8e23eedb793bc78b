"""Run the benchmark: ``.venv/bin/python bench/run.py [--quick] [--duration S] [--json out.json]``.

A thin entry point so the documented command works from a checkout without
installing anything; the work is in :mod:`bench.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
