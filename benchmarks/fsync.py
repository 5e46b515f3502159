"""The disk's limit for the SQLite scenarios: committed single-row INSERTs per second.

With WAL and ``synchronous=FULL`` every commit waits for an fsync, so this rate bounds any
writer that commits one thing at a time. A three-step saga run alone commits four times,
so sequential sagas cannot beat a quarter of it; only group commit (concurrent sagas
sharing a commit) can go past it.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from benchmarks.measure import Measurement, Mode, Run, sized

NAME = "stdlib sqlite3, 1 row per commit"


def measure_ceiling(
    path: Path, warmup: int, repetitions: int, target_seconds: float
) -> Measurement:
    """Commits per second on a fresh WAL, synchronous=FULL file at ``path``.

    A :class:`Run` here counts commits, not sagas; ``logged`` is the rows found afterwards.
    """
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE ticks (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
        first = _commit_rows(conn, warmup)
        count = sized(first, target_seconds, floor=10)
        runs = tuple(_commit_rows(conn, count) for _ in range(repetitions))
    with closing(sqlite3.connect(path)) as check:
        rows = int(check.execute("SELECT count(*) FROM ticks").fetchone()[0])
    return Measurement(NAME, Mode.SEQUENTIAL, first, runs, rows)


def _commit_rows(conn: sqlite3.Connection, count: int) -> Run:
    """``count`` INSERTs in autocommit mode: one transaction, so one fsync, each."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(count):
        conn.execute("INSERT INTO ticks (at) VALUES (?)", (time.time(),))
    return Run(count, count, time.perf_counter() - start, 1)
