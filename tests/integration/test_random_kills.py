"""Workers SIGKILLed at random moments, again and again, lose no saga and repeat no effect.

Three ``sagakit worker`` processes (2 s lease) share one PostgreSQL saga log, a schema of
the test's own; a client starts 1,000 orders, every tenth refused at its last step and
compensated. A killer SIGKILLs a running worker and starts a new one, again and again
(at most 18 times, and at least 8 or the test fails: it cannot pass without killing). What
it kills and when comes from a seeded ``random.Random`` (the seed is printed;
``SAGAKIT_KILL_SEED`` replays the plan), as counts of terminal sagas, never as times: the
next kill is due once 25 to 60 more sagas are terminal than at the last one, so a slow
machine changes how a run interleaves but not the plan it follows; none once 85 % are.

A kill at "any moment" mostly lands while calls wait on their latency or on the database,
rarely in the narrow gap after a call's effect and before its outcome is committed, which
is the moment that matters. So about two kills in three are *mid-step*: the victim is first
told (a file named for its role) to hang after each effect, and killed once the ledger shows
it holds such a call. The others are killed the moment their count is reached, wherever
they are (claiming, waiting on a call, between writes).

Proven, from the services' ledger (an SQLite file: each call counted, each effect applied
once per idempotency key) and from the log: every saga is terminal with the status its input
implies, none lost; the effects are exactly those the outcomes imply (a completed order's
three, a compensated order's two and their two undos), never more; every call is announced
in the log (by its ``*_started`` record, or, made again, by a ``call_taken_over`` naming its
key), so no call was repeated behind the log's back; every call a victim was killed inside
was made again under the same key; no outcome was recorded twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from saga_logs import SagaLogs
from sagakit import Client, Saga, SagaStatus, Store, open_store
from sagakit.log import RecordType
from sagakit.store import StoredSaga
from worker_processes import WorkerProcess, client_side, migrated_log, open_ledger, until

pytestmark = pytest.mark.postgres

SAGAS = 1_000
FAIL_EVERY = 10
"""Every tenth order is refused at its last step and compensated."""
WORKERS = 3
LEASE = 2.0
"""Short, so that a killed worker's sagas are taken over within the test; not shorter, or a
loaded machine's workers lose leases they hold (0.5 s did on CI)."""
MAX_KILLS = 18
GAPS = (25, 60)
"""How many more sagas are terminal at a kill than at the one before: the fewest and most."""
LAST_KILL = SAGAS * 85 // 100
"""No kill once this many sagas are terminal: the last ones leave calls to take over."""
MIN_KILLS = 8
MID_STEP_SHARE = 2 / 3
STEPS = ("charge", "reserve", "ship")
DEADLINE = 90.0
"""Seconds the test waits at most for another process's doings: a safety net, not a check."""
SEED_ENV = "SAGAKIT_KILL_SEED"

APP = """
import asyncio, contextlib, os, sqlite3
from pathlib import Path

from sagakit import Saga

LEDGER = os.environ["LEDGER"]
HANG = Path(os.environ["HANG_DIR"]) / os.environ["ROLE"]


def ledger():
    return contextlib.closing(sqlite3.connect(LEDGER, timeout=60, isolation_level=None))


def call(key, kind):
    # One transaction: count the call, and apply its effect once per key (None: refused).
    with ledger() as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO calls VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,)
        )
        if kind is not None:
            db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, kind))
        db.execute("COMMIT")


def hang(key):
    with ledger() as db:
        db.execute("INSERT INTO hung VALUES (?, ?)", (key, os.environ["ROLE"]))


async def remote(ctx, kind):
    await asyncio.sleep(0.01)  # the remote call's latency
    await asyncio.to_thread(call, ctx.idempotency_key, kind)
    if HANG.exists():  # armed by the test: killed with this call's outcome unrecorded
        await asyncio.to_thread(hang, ctx.idempotency_key)
        await asyncio.Event().wait()


saga = Saga("random_kills", 1)


def make(name):
    async def action(ctx):
        refused = name == "ship" and ctx.input["fail"]
        await remote(ctx, None if refused else "do")
        if refused:
            raise RuntimeError("courier refused")
        return {"step": name}

    async def undo(ctx):
        await remote(ctx, "undo")

    action.__name__ = name
    return action, undo


for step in ("charge", "reserve", "ship"):
    action, undo = make(step)
    saga.add(action, compensate=undo)
"""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Kill:
    """Kill a running worker (``victim`` counts among them) once ``gap`` more sagas are
    terminal than at the kill before; ``mid_step``: only once it hangs inside a call whose
    effect is applied and whose outcome is not recorded."""

    gap: int
    victim: int
    mid_step: bool


@dataclass(frozen=True, slots=True)
class Made:
    """A kill as it happened: at how many terminal sagas, whom, with how many terminal
    when it died, holding which calls."""

    kill: Kill
    at: int
    role: str
    terminal: int
    hung: frozenset[str]


def seed() -> int:
    given = os.environ.get(SEED_ENV)
    return int(given) if given else random.SystemRandom().randrange(2**32)


def kill_plan(rng: random.Random) -> list[Kill]:
    """Up to ``MAX_KILLS`` kills: the gaps between them, their victims, and which of them
    land mid-step (two in three, shuffled), all from ``rng``."""
    mid_steps = round(MAX_KILLS * MID_STEP_SHARE)
    modes = [True] * mid_steps + [False] * (MAX_KILLS - mid_steps)
    rng.shuffle(modes)
    return [Kill(rng.randint(*GAPS), rng.randrange(WORKERS), mid) for mid in modes]


# --------------------------------------------------------------------------- the fleet


class Fleet:
    """The live workers; a killed one is replaced by a new one with a role of its own."""

    def __init__(self, app_dir: Path, url: str, started: list[WorkerProcess]) -> None:
        self.app_dir, self.url = app_dir, url
        self.started = started
        self.live: list[WorkerProcess] = []

    def start(self) -> None:
        role = f"w{len(self.started)}"
        env = {"LEDGER": str(self.app_dir / "ledger.db"), "HANG_DIR": str(self.app_dir / "hang")}
        options = ["--concurrency", "16", "--lease", str(LEASE), "--poll", "0.05"]
        worker = WorkerProcess(
            self.app_dir,
            self.url,
            role,
            app="kills_app:saga",
            options=options,
            env=env,
            deadline=DEADLINE,
        )
        self.started.append(worker)
        self.live.append(worker)

    async def kill(self, kill: Kill, at: int, store: Store) -> Made:
        victim = await self.victim(kill)
        role = _role(victim)
        try:
            if kill.mid_step:
                (self.app_dir / "hang" / role).touch()
                await until(lambda: bool(hung(self.app_dir, role)), f"{role} to hang", DEADLINE)
        finally:  # a hanging worker would not stop for a SIGTERM at the end
            victim.process.send_signal(signal.SIGKILL)
        code = await asyncio.to_thread(victim.process.wait, DEADLINE)
        assert code == -signal.SIGKILL, f"{role} ended {code} before it was killed"
        self.live.remove(victim)
        self.start()
        return Made(kill, at, role, await terminal(store), frozenset(hung(self.app_dir, role)))

    async def victim(self, kill: Kill) -> WorkerProcess:
        """A worker that has started (one still starting up would often have nothing to
        hang in, and its kill would only delay the next)."""
        await until(lambda: bool(self.running()), "a worker to start", DEADLINE)
        running = self.running()
        return running[kill.victim % len(running)]

    def running(self) -> list[WorkerProcess]:
        return [w for w in self.live if " started (" in w.stdout()]

    def stop(self) -> list[int]:
        return [worker.stop() for worker in self.live]

    def takeovers_said(self) -> int:
        """Sagas the workers said they took over (``took over N sagas from ...``)."""
        said = re.compile(r"took over (\d+) sagas? from")
        return sum(int(n) for w in self.started for n in said.findall(w.stderr()))


def _role(worker: WorkerProcess) -> str:
    return worker.out.stem


def hung(app_dir: Path, role: str) -> set[str]:
    """The keys of the calls ``role`` hangs in, effect applied and outcome unrecorded."""
    with open_ledger(app_dir / "ledger.db") as db:
        rows = db.execute("SELECT key FROM hung WHERE role = ?", (role,)).fetchall()
    return {key for (key,) in rows}


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    with open_ledger(tmp_path / "ledger.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        db.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, kind TEXT NOT NULL)")
        # a call taken over may hang again in its next holder
        db.execute("CREATE TABLE hung (key TEXT, role TEXT, PRIMARY KEY (key, role))")
    (tmp_path / "hang").mkdir()
    (tmp_path / "kills_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
async def log_url(tmp_path: Path) -> AsyncIterator[str]:
    """A migrated saga log in a PostgreSQL schema of its own, dropped afterwards."""
    logs = SagaLogs("postgres")
    try:
        yield await migrated_log(logs, tmp_path / "log")
    finally:
        await logs.drop_all()


# --------------------------------------------------------------------------- the run


def definition() -> Saga:
    return client_side("random_kills", STEPS)


def failing(saga_id: str) -> bool:
    return int(saga_id.removeprefix("order-")) % FAIL_EVERY == 0


async def start_orders(client: Client) -> None:
    saga = definition()
    for i in range(SAGAS):
        await client.start(saga, {"fail": failing(f"order-{i}")}, saga_id=f"order-{i}")


async def terminal(store: Store) -> int:
    return sum(c.total for c in await store.counts() if c.status.is_terminal)


async def until_terminal(store: Store, count: int) -> None:
    """Until ``count`` sagas are terminal: other processes' writes, which cannot be awaited
    (a bounded look every 20 ms)."""
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                if await terminal(store) >= count:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {count} terminal sagas ({await terminal(store)})")


async def kill_by(plan: list[Kill], fleet: Fleet, store: Store) -> list[Made]:
    """The plan's kills, each ``gap`` terminal sagas after the one before, while they fit."""
    made: list[Made] = []
    for kill in plan:
        at = (made[-1].terminal if made else 0) + kill.gap
        if at > LAST_KILL:
            break
        await until_terminal(store, at)
        made.append(await fleet.kill(kill, at, store))
    return made


async def load_all(store: Store) -> list[StoredSaga]:
    ids = [f"order-{i}" for i in range(SAGAS)]
    found: list[StoredSaga] = []
    for page in range(0, SAGAS, 100):
        found += await store.load_many(ids[page : page + 100])
    return found


@pytest.fixture
def rng() -> tuple[int, random.Random]:
    chosen = seed()
    print(f"\n{SEED_ENV}={chosen}")
    return chosen, random.Random(chosen)


@pytest.mark.timeout(240)
async def test_1000_sagas_survive_workers_killed_at_random_moments(
    log_url: str,
    app_dir: Path,
    workers: list[WorkerProcess],
    rng: tuple[int, random.Random],
) -> None:
    chosen, generator = rng
    plan = kill_plan(generator)
    began = time.monotonic()
    fleet = Fleet(app_dir, log_url, workers)
    for _ in range(WORKERS):
        fleet.start()
    store = await open_store(log_url)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(start_orders(Client(store)))
            killing = group.create_task(kill_by(plan, fleet, store))
        await until_terminal(store, SAGAS)
        sagas = await load_all(store)
    finally:
        await store.close()
    took = time.monotonic() - began
    codes = fleet.stop()
    made = killing.result()

    context = f"{SEED_ENV}={chosen}"
    assert codes == [0] * WORKERS, context
    assert len(made) >= MIN_KILLS, context
    assert all(m.hung for m in made if m.kill.mid_step), context
    check_outcomes(sagas)
    check_logs(sagas)
    taken = check_ledger(app_dir, sagas, made)
    report(chosen, made, taken, fleet.takeovers_said(), took)


# --------------------------------------------------------------------------- the checks


def check_outcomes(sagas: list[StoredSaga]) -> None:
    """All 1,000 there, each terminal with the status its input implies."""
    statuses = {s.instance.id: s.instance.status for s in sagas}
    assert len(statuses) == SAGAS, "a saga was lost"
    wrong = {
        saga_id: status
        for saga_id, status in statuses.items()
        if status is not (SagaStatus.COMPENSATED if failing(saga_id) else SagaStatus.COMPLETED)
    }
    assert not wrong, wrong


def check_logs(sagas: list[StoredSaga]) -> None:
    """Each saga started each attempt once, recorded each outcome once, and ended once."""
    once = {
        RecordType.STEP_STARTED,
        RecordType.STEP_SUCCEEDED,
        RecordType.STEP_FAILED,
        RecordType.COMPENSATION_STARTED,
        RecordType.COMPENSATION_SUCCEEDED,
    }
    ends = {RecordType.SAGA_COMPLETED, RecordType.SAGA_COMPENSATED}
    for saga in sagas:
        seen = Counter((r.type, r.step, r.attempt) for r in saga.records if r.type in once)
        twice = [what for what, n in seen.items() if n > 1]
        assert not twice, f"{saga.instance.id} recorded twice: {twice}"
        assert sum(r.type in ends for r in saga.records) == 1, saga.instance.id


def wanted_effects(sagas: list[StoredSaga]) -> dict[str, str]:
    """The effects the outcomes imply: a completed order's three; a compensated one's
    charge and reserve (its ship was refused) and their undos."""
    wanted: dict[str, str] = {}
    for saga in sagas:
        saga_id, compensated = saga.instance.id, saga.instance.status is SagaStatus.COMPENSATED
        for step in STEPS[:-1] if compensated else STEPS:
            wanted[f"{saga_id}:{step}:action"] = "do"
            if compensated:
                wanted[f"{saga_id}:{step}:compensation"] = "undo"
    return wanted


def announced(sagas: list[StoredSaga]) -> tuple[Counter[str], Counter[str]]:
    """Per idempotency key: the calls the log started, and the calls it says were taken
    over (made again by a new holder)."""
    started: Counter[str] = Counter()
    taken: Counter[str] = Counter()
    roles = {RecordType.STEP_STARTED: "action", RecordType.COMPENSATION_STARTED: "compensation"}
    for saga in sagas:
        for r in saga.records:
            if r.type in roles:
                started[f"{saga.instance.id}:{r.step}:{roles[r.type]}"] += 1
            elif r.type is RecordType.CALL_TAKEN_OVER and r.data is not None:
                taken[json.loads(r.data)["key"]] += 1
    return started, taken


def check_ledger(app_dir: Path, sagas: list[StoredSaga], made: list[Made]) -> Counter[str]:
    """Exactly the effects the outcomes imply, each once; no call the log does not announce;
    every call a victim was killed inside made again. Returns the takeovers per key."""
    with open_ledger(app_dir / "ledger.db") as db:
        effects = dict(db.execute("SELECT key, kind FROM effects").fetchall())
        calls: dict[str, int] = dict(db.execute("SELECT key, n FROM calls").fetchall())
    assert effects == wanted_effects(sagas)
    started, taken = announced(sagas)
    unannounced = {k: n for k, n in calls.items() if n > started[k] + taken[k]}
    assert not unannounced, f"calls made more often than the log says: {unannounced}"
    for kill in made:
        again = {key for key in kill.hung if calls[key] < 2 or not taken[key]}
        assert not again, f"{kill.role} died inside calls never taken over: {again}"
    return taken


def report(chosen: int, made: list[Made], taken: Counter[str], said: int, took: float) -> None:
    mid = [m for m in made if m.kill.mid_step]
    undoing = sum(key.endswith(":compensation") for m in mid for key in m.hung)
    print(
        f"{SAGAS} sagas, {WORKERS} workers, lease {LEASE} s, {SEED_ENV}={chosen}: {took:.1f} s; "
        f"{len(made)} kills ({len(mid)} mid-step, holding {sum(len(m.hung) for m in mid)} "
        f"calls, {undoing} of them compensations); {taken.total()} calls taken over in the "
        f"log, {said} sagas the workers said they took over"
    )
    for m in made:
        kind = f"mid-step ({len(m.hung)} hung)" if m.kill.mid_step else "anywhere"
        print(f"  kill {m.role} at {m.at} terminal ({m.terminal} when it died), {kind}")
