"""``file`` sink: appends JSON Lines to a file, with a chosen fsync policy."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
import msgspec

from integrator.builtin.stdout import render
from integrator.components import Sink
from integrator.errors import DeliveryError
from integrator.hookspecs import hookimpl
from integrator.message import Message


class FileOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The file to append to; parent directories are created.
    path: str
    #: "message" writes id, body, headers and attributes; "body" writes the body alone.
    format: Literal["message", "body"] = "message"
    #: "always": fsync after every line (a delivered message survives power loss);
    #: "never": leave it to the OS (survives a daemon crash, not a power cut).
    fsync: Literal["always", "never"] = "always"


class FileSink(Sink):
    Options = FileOptions
    description = "append each message as a JSON line to a file"
    options: FileOptions

    _fd: int | None = None

    async def open(self) -> None:
        self._lock = threading.Lock()
        path = Path(self.options.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as err:
            raise DeliveryError(f"cannot open {path}: {err.strerror}") from err

    def _write(self, line: bytes) -> None:
        assert self._fd is not None
        with self._lock:  # one write per line with O_APPEND keeps lines whole
            os.write(self._fd, line)
            if self.options.fsync == "always":
                os.fsync(self._fd)

    async def deliver(self, message: Message) -> None:
        line = render(message, self.options.format)
        try:
            if self.options.fsync == "never":
                self._write(line)  # a write into the page cache: cheaper than a thread hop
            else:
                await anyio.to_thread.run_sync(self._write, line)
        except OSError as err:
            raise DeliveryError(f"cannot write to {self.options.path}: {err.strerror}") from err

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("file", FileSink)
