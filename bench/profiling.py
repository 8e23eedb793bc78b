"""Optional py-spy recordings of the daemon during a measured phase (``--profile``).

py-spy samples another process from outside, so the daemon runs unmodified; its
"raw" (collapsed stacks) output is summarised here into the functions that take
the most time, by self time (the leaf frame) and by total time (anywhere on the
stack). Only samples of the thread holding the GIL are kept (``--gil``): in one
Python process that is the one core's worth of CPU every thread competes for.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.settings import Settings


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profile:
    """``with Profile(settings, pid, "ingest", seconds):`` records while the block runs
    (for at most ``seconds``)."""

    def __init__(self, settings: Settings, pid: int, name: str, seconds: float) -> None:
        self.enabled = (
            settings.profile and settings.profile_dir is not None and py_spy() is not None
        )
        self.pid = pid
        self.name = name
        self.seconds = seconds
        self.output = (settings.profile_dir or Path()) / f"{name}.txt"
        self.summary: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profile:
        if self.enabled:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            argv = [
                str(py_spy()), "record", "--pid", str(self.pid), "--rate", "250",
                "--duration", str(max(1, round(self.seconds))), "--format", "raw",
                "--output", str(self.output), "--nolineno", "--nonblocking", "--gil",
            ]  # fmt: skip
            # --gil: only samples of the thread holding the GIL. The daemon is one
            # interpreter, so GIL time is the CPU it can use; time in SQLite or fsync
            # with the GIL released is not a bottleneck of the event loop and is left out.
            self._process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is None:
            return
        # Stop at the end of the block (py-spy writes its output on SIGINT, as on Ctrl-C);
        # ``seconds`` is only an upper bound.
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self.output.exists():
            self.summary = summarise(self.output)
            top = self.output.with_suffix(".top.txt")
            top.write_text(render(self.summary))


def summarise(path: Path, limit: int = 25) -> dict[str, Any]:
    """Top functions by self and by total samples from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return {
        "samples": samples,
        "self": [(f, n, round(100 * n / samples, 1)) for f, n in own.most_common(limit)],
        "total": [(f, n, round(100 * n / samples, 1)) for f, n in total.most_common(limit)],
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"samples: {summary['samples']}", "", "self time (leaf frame):"]
    lines += [f"  {pct:5.1f}%  {frame}" for frame, _, pct in summary["self"]]
    lines += ["", "total time (anywhere on the stack):"]
    lines += [f"  {pct:5.1f}%  {frame}" for frame, _, pct in summary["total"]]
    return "\n".join(lines) + "\n"
