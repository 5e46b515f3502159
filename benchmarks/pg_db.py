"""PostgreSQL plumbing for the benchmarks: where the server is, fresh schemas, CPU accounting.

Every scenario gets a schema of its own (``?schema=bench_<random>``), dropped afterwards,
so no run sees another's rows and the machine's database is left as it was found.

CPU is read from ``/proc`` (Linux): the seconds the server's processes, the worker
processes and the benchmark itself spent on a core during a run. On a 2-core machine
that says where the time went, which is what a missed target needs explained.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ENV_URL = "SAGAKIT_BENCH_POSTGRES"
"""Set it to benchmark another server; else ``SAGAKIT_TEST_POSTGRES``, else the local one."""

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


def server_url() -> str:
    return os.environ.get(ENV_URL) or os.environ.get("SAGAKIT_TEST_POSTGRES") or DEFAULT_URL


def with_query(url: str, **params: str) -> str:
    """``url`` with query parameters set (sagakit reads ``schema`` and ``pool``)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def new_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def connect(url: str, schema: str | None = None) -> Connection:
    """A plain asyncpg connection (the URL must carry no sagakit parameters)."""
    settings = {"search_path": f'"{schema}"'} if schema else None
    return await asyncpg.connect(url, server_settings=settings)


async def drop_schema(url: str, schema: str) -> None:
    conn = await connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_schema(url: str, prefix: str = "bench") -> AsyncIterator[str]:
    """A schema name nobody uses yet; dropped (with all its tables) on the way out."""
    schema = new_name(prefix)
    try:
        yield schema
    finally:
        await drop_schema(url, schema)


async def checkpoint(url: str) -> None:
    """Write out what earlier scenarios left dirty (``CHECKPOINT``), so that a scenario does
    not run beside the checkpoint their WAL brought on (the ceilings write gigabytes): the
    same 4-worker fleet ran at 1,650 sagas/s then and 2,500 on a settled server. A role
    that may not checkpoint runs without it."""
    conn = await connect(url)
    try:
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class ServerFacts:
    version: str
    settings: dict[str, str]


async def server_facts(url: str) -> ServerFacts:
    """The server's version and the settings that decide what a commit costs."""
    names = ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay", "shared_buffers")
    conn = await connect(url)
    try:
        version = str(await conn.fetchval("SHOW server_version"))
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", names
        )
    finally:
        await conn.close()
    settings = {r["name"]: f"{r['setting']}{_unit(r['unit'])}" for r in rows}
    return ServerFacts(version, settings)


def _unit(unit: str | None) -> str:
    return f" x {unit}" if unit and unit not in ("ms", "s") else (unit or "")


# -- CPU accounting ---------------------------------------------------------------------------

_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of one process so far; 0 if it is gone or unreadable."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


def server_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (postmaster, backends, WAL writer)."""
    pids = []
    for entry in _PROC.glob("[0-9]*"):
        with suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                pids.append(int(entry.name))
    return pids


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float
    server: float
    workers: float
    bench: float


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Where the cores' time went during one timed run, in CPU seconds."""

    wall: float
    server: float
    workers: float
    bench: float

    @property
    def parts(self) -> tuple[float, float, float]:
        """Workers, server, bench: the order the report prints them in."""
        return self.workers, self.server, self.bench

    @property
    def busy(self) -> float:
        """Share of the machine's cores that these three kept busy."""
        return (self.server + self.workers + self.bench) / (self.wall * (os.cpu_count() or 1))


def cpu_sample(workers: Iterable[int] = ()) -> CpuSample:
    """A reading of the CPU used so far, or zeros where ``/proc`` cannot say."""
    if not _PROC.is_dir():
        return CpuSample(time.perf_counter(), 0.0, 0.0, time.process_time())
    return CpuSample(
        time.perf_counter(),
        sum(process_cpu(pid) for pid in server_pids()),
        sum(process_cpu(pid) for pid in workers),
        time.process_time(),
    )


def cpu_between(before: CpuSample, after: CpuSample) -> CpuUse:
    return CpuUse(
        after.at - before.at,
        after.server - before.server,
        after.workers - before.workers,
        after.bench - before.bench,
    )
