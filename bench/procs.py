"""Child processes of the benchmark: start, wait for READY, measure, stop.

Every server the benchmark measures (the daemon and each baseline) runs in its own
process and reports readiness the way systemd expects, with ``READY=1`` on the
``$NOTIFY_SOCKET`` datagram socket, so "time to READY" is measured the same way for
all of them and a load never starts before the listener is bound. CPU and memory
come from ``/proc/<pid>``: the process's own accounting, threads included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Raised when a scenario cannot run: a server that does not start, a tool that fails."""


def python() -> str:
    """The interpreter running the benchmark (the project's .venv when run as documented)."""
    return sys.executable


def integrator_command() -> list[str]:
    """``.venv/bin/integrator`` next to our interpreter, as an operator would run it."""
    script = Path(sys.executable).parent / "integrator"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "integrator.cli"]


def free_port() -> int:
    """A loopback port free right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """utime + stime of a process, every thread included; or of its main thread only,
    which runs the event loop in the daemon and in every baseline."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """The child processes of ``pid``: the store's writer process (``commit_on`` =
    "auto" under load, or "process") is part of the daemon's cost."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
    return found


def reaped_children_cpu_seconds(pid: int) -> float:
    """cutime + cstime of ``pid``: the CPU of its children that ended and were waited
    for (a writer process retired during a measurement)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def family_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid``, of each of its running children (by pid) and, under
    the key -1, of its children that have ended."""
    family = {member: cpu_seconds(member) for member in [pid, *children(pid)]}
    family[-1] = reaped_children_cpu_seconds(pid)
    return family


def family_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and its children together."""
    return sum(status_kb(member, "VmRSS") for member in [pid, *children(pid)])


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` value of /proc/<pid>/status (VmRSS, VmHWM…); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread: how often it wakes up."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended while we read
            continue
    return total


@dataclass
class Usage:
    """What a process used over a window of time."""

    seconds: float
    cpu: float
    rss_peak_mb: float
    hwm_mb: float
    wakeups: int = 0
    #: CPU of the main thread (the event loop); the rest is the other threads' (the
    #: store's writer, thread-pool reads).
    loop_cpu: float = 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu / self.seconds if self.seconds > 0 else 0.0

    @property
    def loop_percent(self) -> float:
        return 100.0 * self.loop_cpu / self.seconds if self.seconds > 0 else 0.0


class UsageMeter:
    """Samples a process's RSS in a thread while a load runs; CPU by before/after delta.
    Both count its child processes too (a writer process started during the window
    counts from its start)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._peak_kb = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak_kb = max(self._peak_kb, family_rss_kb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> UsageMeter:
        self._t0 = time.perf_counter()
        self._cpu0 = family_cpu_seconds(self.pid)
        self._loop0 = cpu_seconds(self.pid, main_thread=True)
        self._ctx0 = context_switches(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.result = Usage(
            seconds=time.perf_counter() - self._t0,
            # Totals, not per pid: a child that ended in the window moved its CPU
            # from its own entry to the parent's reaped children's.
            cpu=sum(family_cpu_seconds(self.pid).values()) - sum(self._cpu0.values()),
            rss_peak_mb=0.0,
            hwm_mb=status_kb(self.pid, "VmHWM") / 1024,
            wakeups=context_switches(self.pid) - self._ctx0,
            loop_cpu=cpu_seconds(self.pid, main_thread=True) - self._loop0,
        )
        self._stop.set()
        self._thread.join()
        self._peak_kb = max(self._peak_kb, family_rss_kb(self.pid))
        self.result.rss_peak_mb = self._peak_kb / 1024


# -- children -------------------------------------------------------------------------------


@dataclass
class Child:
    """A running server: its process, its log, and how long it took to be READY."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _RUNNING.discard(self)
        return int(self.process.returncode)

    def __hash__(self) -> int:
        return self.pid


_RUNNING: set[Child] = set()


def stop_all() -> None:
    """Stop every child still running (on an error or Ctrl-C, so nothing is left behind)."""
    for child in list(_RUNNING):
        child.stop(timeout=5)


def start(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Child:
    """Start ``argv`` with a NOTIFY_SOCKET and return once it sent ``READY=1``.

    The clock starts just before the process is spawned, so ``ready_seconds`` holds
    interpreter start-up, imports, config loading and binding every listener.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    notify_path = workdir / f"notify-{name}-{os.getpid()}-{time.monotonic_ns()}.sock"
    log_path = workdir / f"{name}.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(0.05)
        child_env = {**os.environ, **(env or {}), "NOTIFY_SOCKET": str(notify_path)}
        child_env.pop("WATCHDOG_USEC", None)
        child_env.pop("WATCHDOG_PID", None)
        with log_path.open("wb") as log:
            t0 = time.perf_counter()
            process = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, process, log_path)
        _RUNNING.add(child)
        deadline = t0 + ready_timeout
        try:
            while True:
                try:
                    data = notify.recv(4096)
                except TimeoutError:
                    data = b""
                if b"READY=1" in data.split(b"\n"):
                    child.ready_seconds = time.perf_counter() - t0
                    return child
                if process.poll() is not None:
                    raise BenchError(
                        f"{name} exited with status {process.returncode} before READY:\n"
                        f"{child.log_tail()}"
                    )
                if time.perf_counter() > deadline:
                    raise BenchError(
                        f"{name} sent no READY=1 within {ready_timeout:.0f}s:\n{child.log_tail()}"
                    )
        except BaseException:
            child.stop(timeout=5)
            raise
        finally:
            notify_path.unlink(missing_ok=True)
