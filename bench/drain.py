"""The backlog baseline: drain a store's inbox by hand, as a minimal program would.

::

    python -m bench.drain DB ROUTE OUT

Reads the route's inbox in batches of 256 (the engine's batch size), writes each
message as the ``file`` sink would (same encoder, one ``write`` per batch, no
fsync), then deletes the batch in one transaction with ``synchronous = FULL``, the
store's default. Same durability, none of the engine: the floor for the backlog
scenario. Prints how many messages it wrote.
"""

from __future__ import annotations

import os
import sqlite3
import sys

from integrator.builtin.stdout import render
from integrator.message import decode

BATCH = 256


def drain(db: str, route: str, out: str) -> int:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    written = 0
    cursor = 0
    try:
        while True:
            rows = conn.execute(
                "SELECT seq, message FROM inbox WHERE route = ? AND seq > ? ORDER BY seq LIMIT ?",
                (route, cursor, BATCH),
            ).fetchall()
            if not rows:
                return written
            os.write(fd, b"".join(render(decode(blob), "message") for _, blob in rows))
            cursor = rows[-1][0]
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM inbox WHERE route = ? AND seq <= ?", (route, cursor))
            conn.execute("COMMIT")
            written += len(rows)
    finally:
        os.close(fd)
        conn.close()


if __name__ == "__main__":
    print(drain(sys.argv[1], sys.argv[2], sys.argv[3]))
