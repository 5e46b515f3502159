"""The saga log's database restarts and crashes under a running fleet, and nothing is harmed.

A private PostgreSQL server (initdb'd into a temporary directory, on a port of its own; the
machine's shared server is never touched) serves three ``sagakit worker`` processes while a
client starts 1,000 sagas, some of them during the outages. The server is restarted twice
(``pg_ctl restart -m fast``) and crashed once (``pg_ctl stop -m immediate``, started again
once every worker has said it lost the database). No worker exits, every saga ends as its
input says, none is lost, no effect is applied twice, and no saga waited for a lease to lapse
(a 60 s lease would show as a gap in its log). About 15 s here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from sagakit import (
    Client,
    RecordType,
    Saga,
    SagaStatus,
    Store,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from worker_processes import client_side

pytestmark = pytest.mark.postgres
T = TypeVar("T")
Log = list[tuple[RecordType, str | None, float]]

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
SAGAS = 1_000
FAIL_EVERY = 10
"""Every tenth saga fails at its last step and is compensated."""
LEASE = 60.0
"""Long enough that a saga waiting for a lease to lapse shows as a gap in its log."""
STEPS = ("charge", "reserve", "ship")

APP = """
import asyncio, os
from pathlib import Path

from sagakit import Saga

LEDGER = Path(os.environ["LEDGER"])


def effect(key, kind):
    # A file per idempotency key, made only if absent: a call made again is counted apart.
    try:
        fd = os.open(LEDGER / "effects" / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        with open(LEDGER / "repeats" / key, "a") as repeat:
            repeat.write(kind + "\\n")
        return
    os.write(fd, kind.encode())
    os.close(fd)


saga = Saga("restartable", 1)


def make(name):
    async def action(ctx):
        await asyncio.sleep(0.1)  # the remote call's latency
        effect(ctx.idempotency_key, "do")
        if name == "ship" and ctx.input["fail"]:
            raise RuntimeError("courier refused")
        return {"step": name}

    async def undo(ctx):
        effect(ctx.idempotency_key, "undo")

    action.__name__ = name
    return action, undo


for step in ("charge", "reserve", "ship"):
    action, undo = make(step)
    saga.add(action, compensate=undo)
"""


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary directory, on a free port."""

    def __init__(self, bindir: Path, root: Path, user: str | None) -> None:
        self.bindir = bindir
        self.data = root / "data"
        self.log = root / "server.log"
        self.user = user
        self.port = _free_port()

    def url(self, database: str = "postgres", **query: str) -> str:
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (
            f"?{tail}" if tail else ""
        )

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")
        settings = (
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\nmax_connections = 100\n"
            # Only the OS's page cache is skipped: a crash of the server (not of the
            # machine) loses nothing committed.
            "fsync = off\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(settings)

    def start(self) -> None:
        self._ctl("start", "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast", "-l", str(self.log))

    def crash(self) -> None:
        """The server dies without a checkpoint; the next start recovers from the WAL."""
        self.stop("immediate")

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args)

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bindir / tool), *args],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}\n{log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bindir() -> Path | None:
    """The newest installed PostgreSQL's programs (Debian keeps them off the PATH)."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for candidate in [*reversed(versions), *_on_path()]:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


def _on_path() -> list[Path]:
    found = shutil.which("pg_ctl")
    return [Path(found).parent] if found else []


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set, so it fails the run)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    bindir = _bindir()
    if bindir is None:
        _missing("PostgreSQL's initdb and pg_ctl are not installed (e.g. /usr/lib/postgresql/*)")
        return
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root: as its own account instead
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root and there is no 'postgres' account to run a server as")
            return
        user = account.pw_name
    # Not under pytest's tmp_path: its root-only parents would keep the server's account out.
    root = Path(tempfile.mkdtemp(prefix="sagakit-pg-"))
    try:
        if user is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        pg = PrivatePostgres(bindir, root, user)
        pg.initdb()
        pg.start()
        try:
            yield pg
        finally:
            pg.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def up(server: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The server, running when the test starts and when it ends."""
    yield server
    _ensure_running(server)


def _ensure_running(server: PrivatePostgres) -> None:
    try:
        server.start()
    except RuntimeError as error:  # already running
        if "another server might be running" not in str(error):
            raise


def _schema_url(server: PrivatePostgres) -> str:
    return server.url(schema=f"t_{uuid.uuid4().hex[:12]}")


# --------------------------------------------------------------------------- the fleet


def definition() -> Saga:
    return client_side("restartable", STEPS)


class Fleet:
    """Three worker processes, each with its stdout and stderr in a file."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory = directory
        self.url = url
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for n in range(count):
            args = [SAGAKIT, "worker", "--app", "restart_app:saga", "--db", self.url]
            args += ["--concurrency", "16", "--lease", str(LEASE), "--poll", "0.5"]
            env = {**os.environ, "LEDGER": str(self.directory)}
            with self.out(n).open("wb") as out, self.err(n).open("wb") as err:
                process = subprocess.Popen(
                    args, cwd=self.directory, env=env, stdout=out, stderr=err
                )
            self.processes.append(process)

    def out(self, n: int) -> Path:
        return self.directory / f"worker-{n}.out"

    def err(self, n: int) -> Path:
        return self.directory / f"worker-{n}.err"

    def said(self, text: str) -> list[int]:
        """How many of each worker's log lines contain ``text``."""
        return [self.err(n).read_text().count(text) for n in range(len(self.processes))]

    def stop(self) -> list[int]:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return [process.wait(timeout=60) for process in self.processes]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[[str], Fleet]]:
    made: list[Fleet] = []
    (tmp_path / "effects").mkdir()
    (tmp_path / "repeats").mkdir()
    (tmp_path / "restart_app.py").write_text(APP)

    def make(url: str) -> Fleet:
        made.append(Fleet(tmp_path, url))
        return made[-1]

    yield make
    for one in made:
        for process in one.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)


async def _patiently(read: Callable[[], Awaitable[T]]) -> T:
    """A read by the test itself, made again while the database is away."""
    async with asyncio.timeout(60):
        while True:
            try:
                return await read()
            except StoreUnavailableError:
                await asyncio.sleep(0.05)  # a back-off: the server's return cannot be awaited


async def _terminal(store: Store) -> int:
    counts = await store.counts()
    return sum(c.total for c in counts if c.status.is_terminal)


async def _until_terminal(store: Store, count: int) -> None:
    """Until ``count`` sagas are terminal: other processes' writes, looked at every 20 ms."""
    async with asyncio.timeout(120):
        while True:
            if await _patiently(lambda: _terminal(store)) >= count:
                return
            await asyncio.sleep(0.02)


async def _until_said(fleet: Fleet, text: str, before: list[int]) -> None:
    """Until every worker has logged ``text`` once more than ``before`` (its stderr is
    another process's file, which cannot be awaited: a bounded look every 20 ms)."""
    async with asyncio.timeout(60):
        while True:
            if all(now > then for now, then in zip(fleet.said(text), before, strict=True)):
                return
            await asyncio.sleep(0.02)


async def _until_back(fleet: Fleet) -> None:
    """Until every outage a worker said began has been said to end: one still under way (a
    worker waiting out its back-off after a restart) would take the crash for itself, and
    its worker would not say it lost the database again."""
    async with asyncio.timeout(60):
        while True:
            if fleet.said("database back after") == fleet.said("lost the database"):
                return
            await asyncio.sleep(0.02)


async def _start(client: Client, numbers: range) -> list[str]:
    saga = definition()
    return [
        await client.start(saga, {"fail": i % FAIL_EVERY == 0}, saga_id=f"order-{i}")
        for i in numbers
    ]


@pytest.mark.timeout(300)
async def test_a_fleet_rides_out_two_restarts_and_a_crash(
    up: PrivatePostgres, fleet: Callable[[str], Fleet]
) -> None:
    url = _schema_url(up)
    began = time.monotonic()
    store = await open_store(url)  # the schema is made before the workers race to
    workers = fleet(url)
    workers.start(3)
    try:
        client = Client(store, wait_for_store=60)
        ids = await _start(client, range(0, SAGAS // 2))

        await _until_terminal(store, SAGAS // 10)
        restarting = asyncio.ensure_future(asyncio.to_thread(up.restart))
        # Started through the restart, if it lasts long enough: the client waits for it.
        ids += await _start(client, range(SAGAS // 2, SAGAS * 3 // 4))
        await restarting

        await _until_terminal(store, SAGAS * 3 // 8)
        in_flight = SAGAS - await _patiently(lambda: _terminal(store))
        await _until_back(workers)
        lost = workers.said("lost the database")
        await asyncio.to_thread(up.crash)
        await _until_said(workers, "lost the database", lost)  # every worker waits for it
        await asyncio.to_thread(up.start)

        await _until_terminal(store, SAGAS * 4 // 7)
        restarting = asyncio.ensure_future(asyncio.to_thread(up.restart))
        ids += await _start(client, range(SAGAS * 3 // 4, SAGAS))
        await restarting

        results = [await client.result(saga_id, timeout=120) for saga_id in ids]
        alive = [process.poll() for process in workers.processes]
        logs = {saga_id: await _patiently(partial(_log, store, saga_id)) for saga_id in ids}
        stored = await store.counts()
    finally:
        await store.close()
    took = time.monotonic() - began
    codes = workers.stop()

    assert alive == [None, None, None], "a worker exited during the outages"
    assert codes == [0, 0, 0], [workers.err(n).read_text()[-3000:] for n in range(3)]
    assert in_flight > 0
    statuses = {r.saga_id: r.status for r in results}
    failing = {f"order-{i}" for i in range(0, SAGAS, FAIL_EVERY)}
    assert {s for i, s in statuses.items() if i in failing} == {SagaStatus.COMPENSATED}
    assert {s for i, s in statuses.items() if i not in failing} == {SagaStatus.COMPLETED}
    assert sum(c.total for c in stored) == SAGAS, "a saga was lost, or started twice"
    _check_effects(workers.directory, statuses)
    _check_logs(logs)

    lost, back = workers.said("lost the database"), workers.said("database back after")
    assert all(n >= 1 for n in lost), "the crash was not seen by every worker"
    assert lost == back, "an outage was said to begin but not to end (or the reverse)"
    assert all(n <= 6 for n in lost), f"a line a try, not one an outage: {lost}"
    repeats = len(list((workers.directory / "repeats").iterdir()))
    print(
        f"\n{SAGAS} sagas, 2 restarts and a crash, 3 workers: {took:.1f} s; "
        f"{in_flight} in flight at the crash; outages seen per worker {lost}; "
        f"{repeats} calls made again (same key)"
    )


async def _log(store: Store, saga_id: str) -> Log:
    found = await store.load(saga_id)
    assert found is not None
    return [(r.type, r.step, r.at) for r in found.records]


def _check_effects(ledger: Path, statuses: dict[str, SagaStatus]) -> None:
    """Each saga's effects are exactly what its outcome says, each applied once (the file
    of its key is made only once); and no effect belongs to no saga."""
    effects = {p.name: p.read_text() for p in (ledger / "effects").iterdir()}
    wanted: dict[str, str] = {}
    for saga_id, status in statuses.items():
        for step in STEPS:
            wanted[f"{saga_id}:{step}:action"] = "do"
        if status is SagaStatus.COMPENSATED:
            for step in ("charge", "reserve"):
                wanted[f"{saga_id}:{step}:compensation"] = "undo"
    assert effects == wanted


def _check_logs(logs: dict[str, Log]) -> None:
    """Each saga recorded each outcome once, ended once, and never sat idle for as long as
    half a lease: no saga waited for a lease to lapse after an outage."""
    once = {RecordType.STEP_SUCCEEDED, RecordType.COMPENSATION_SUCCEEDED}
    ends = {RecordType.SAGA_COMPLETED, RecordType.SAGA_COMPENSATED}
    for saga_id, records in logs.items():
        twice = [k for k, n in Counter((t, s) for t, s, _ in records if t in once).items() if n > 1]
        assert not twice, f"{saga_id} recorded an outcome twice: {twice}"
        assert sum(t in ends for t, _, _ in records) == 1, saga_id
        times = [at for _, _, at in records]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert max(gaps, default=0.0) < LEASE / 2, f"{saga_id} waited {max(gaps):.1f} s"


# --------------------------------------------------------------------------- one at a time


async def test_a_client_start_while_the_server_is_down_raises_one_typed_error(
    up: PrivatePostgres,
) -> None:
    url = _schema_url(up)
    store = await open_store(url)
    try:
        await asyncio.to_thread(up.stop)
        with pytest.raises(StoreUnavailableError) as raised:
            await Client(store).start(definition(), {"fail": False}, saga_id="s-1")
        assert f"127.0.0.1:{up.port}" in str(raised.value)
        assert "nothing accepts connections there" in str(raised.value)

        starting = asyncio.ensure_future(
            Client(store, wait_for_store=60).start(definition(), {"fail": False}, saga_id="s-2")
        )
        await asyncio.to_thread(up.start)
        assert await starting == "s-2"
        found = await store.load("s-2")  # the first call after the restart: not surfaced
        assert found is not None and found.records[0].type is RecordType.SAGA_STARTED
    finally:
        _ensure_running(up)
        await store.close()


async def test_a_stale_pooled_connection_is_replaced_and_the_call_made_again(
    up: PrivatePostgres,
) -> None:
    url = _schema_url(up)
    store = await open_store(url)
    try:
        client = Client(store)
        await client.start(definition(), {"fail": False}, saga_id="before")
        assert await store.load("before") is not None
        up.restart()  # the event loop is held meanwhile: the pool cannot notice the restart
        assert await store.load("before") is not None
        assert await client.start(definition(), {"fail": False}, saga_id="after") == "after"
        assert await store.load("after") is not None
    finally:
        await store.close()


async def test_nothing_listening_is_unavailable_and_a_missing_database_is_not(
    up: PrivatePostgres,
) -> None:
    nobody = f"postgresql://postgres:secret@127.0.0.1:{_free_port()}/x"
    with pytest.raises(StoreUnavailableError) as refused:
        await open_store(nobody)
    assert "secret" not in str(refused.value) and "***" in str(refused.value)
    with pytest.raises(StoreError) as missing:
        await open_store(up.url("no_such_database"))
    assert not isinstance(missing.value, StoreUnavailableError)
    assert "the database does not exist" in str(missing.value)


def _server_processes(server: PrivatePostgres) -> list[int]:
    """The postmaster and its children (read from /proc: ``ps`` may not be installed)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


async def test_a_frozen_database_fails_a_call_after_the_url_timeout(up: PrivatePostgres) -> None:
    store = await open_store(_schema_url(up) + "&timeout=0.5")
    try:
        assert await store.load("x") is None  # a connection in the pool
        frozen = _server_processes(up)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(30):
                with pytest.raises(StoreUnavailableError, match=r"no answer within 0\.5 s"):
                    await store.load("x")
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        assert await store.load("x") is None
    finally:
        await store.close()


def test_a_worker_gives_up_after_its_deadline_and_on_a_missing_database(
    up: PrivatePostgres, tmp_path: Path
) -> None:
    (tmp_path / "restart_app.py").write_text(APP)

    def worker(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = [SAGAKIT, "worker", "--app", "restart_app:saga", "--db", url, *extra]
        env = {**os.environ, "LEDGER": str(tmp_path)}
        return subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    nobody = f"postgresql://postgres@127.0.0.1:{_free_port()}/x"
    gave_up = worker(nobody, "--give-up-after", "0.5")
    assert gave_up.returncode == 1
    assert "lost the database" in gave_up.stderr and "gave up on the database" in gave_up.stderr
    missing = worker(up.url("no_such_database"))  # no --give-up-after: it must not wait
    assert missing.returncode == 1
    assert "the database does not exist" in missing.stderr
    assert "lost the database" not in missing.stderr
