"""``sagakit show`` tells the whole story of a saga: every attempt with its error, the end of
its stored traceback, its duration and its idempotency key; who holds the lease until when
and when the saga is next due; and with ``--follow`` the rest of it as it lands. Against
SQLite files, at 80 columns and not a terminal, as an operator's pipe would see it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from sagakit import Client, CompensationContext, Engine, Retry, Saga, StepContext, open_store
from sagakit._timeline import local_time
from sagakit.cli import app
from sagakit.log import Instance, Record, RecordType, SagaStatus

NARROW = {"COLUMNS": "80", "TERM": "dumb"}
SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
DEADLINE = 30.0
"""Seconds a follower subprocess gets to do what a test waits for, before the test fails."""


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=NARROW)


def shown(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback (most" not in result.stderr
    return result.stdout


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (wrapping included) as one space."""
    return " ".join(text.split())


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


async def run_saga(url: str, saga: Saga, saga_id: str) -> SagaStatus:
    store = await open_store(url)
    try:
        return (await Engine(store, [saga]).run(saga, {"order": 7}, saga_id=saga_id)).status
    finally:
        await store.close()


async def records(url: str, saga_id: str) -> list[Record]:
    store = await open_store(url)
    try:
        stored = await store.load(saga_id)
        assert stored is not None
        return stored.records
    finally:
        await store.close()


def ping(n: int, message: str) -> None:
    if n == 0:
        raise ValueError(message)
    pong(n - 1, message)


def pong(n: int, message: str) -> None:
    ping(n - 1, message)


def deep_failure() -> Saga:
    """A step that fails 300 calls deep (alternating, so Python folds no repeated lines)
    with a 20,000-character message: a traceback of some 100 kB unbounded."""

    async def charge(ctx: StepContext) -> None:
        ping(300, "card declined " + "x" * 20_000)

    async def refund(ctx: CompensationContext) -> None:
        return None

    return Saga("deep", 1).add(charge, compensate=refund)


def test_a_failing_steps_traceback_is_stored_bounded_and_its_end_shown(db: str) -> None:
    assert asyncio.run(run_saga(db, deep_failure(), "d-1")) is SagaStatus.COMPENSATED
    (failed,) = [r for r in asyncio.run(records(db, "d-1")) if r.type is RecordType.STEP_FAILED]
    error = json.loads(failed.data or "{}")["error"]
    stack: str = error["traceback"]

    assert len(stack) <= 4000
    first, *frames, last = stack.splitlines()
    assert re.fullmatch(r"\.\.\. \d+ characters cut", first)
    assert int(first.split()[1]) > 20_000
    assert last.startswith("ValueError: card declined xxx") and len(last) <= 500
    assert any("in ping" in line for line in frames) and "    raise ValueError(message)" in frames
    assert len(error["message"]) > 20_000  # the message itself is kept whole, as before

    text = shown("show", "d-1", "--db", db)
    attempts = text[text.index("attempts") : text.index("timeline")]
    assert "raise ValueError(message)" in attempts and "in ping" in attempts
    assert "characters cut" not in text  # only the end of the traceback is shown
    assert len(text) < 20_000  # a huge message is cut on screen; --json has it whole
    as_json = json.loads(shown("show", "d-1", "--db", db, "--json"))
    assert as_json["steps"][0]["error"]["traceback"] == stack


def flaky_then_refused() -> Saga:
    """``book`` fails once and then succeeds; the pivot is refused, so ``book`` is undone."""
    saga = Saga("ship", 1)
    calls: list[int] = []

    async def book(ctx: StepContext) -> dict[str, str]:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise ConnectionError("courier API down")
        return {"shipment": "s-1"}

    async def unbook(ctx: CompensationContext) -> None:
        return None

    async def confirm(ctx: StepContext) -> None:
        raise PermissionError("order held for review")

    saga.add(book, compensate=unbook, retry=Retry(attempts=2, backoff=0.001))
    return saga.add(confirm, kind="pivot")


def test_every_attempt_shows_its_outcome_duration_key_and_traceback(db: str) -> None:
    assert asyncio.run(run_saga(db, flaky_then_refused(), "s-1")) is SagaStatus.COMPENSATED
    text = shown("show", "s-1", "--db", db)
    attempts = text[text.index("\nattempts\n") : text.index("\ntimeline")].splitlines()

    heads = [line for line in attempts if "key " in line]
    assert heads == [
        "book action  key s-1:book:action",
        "book compensation  key s-1:book:compensation",
        "confirm action  key s-1:confirm:action",
    ]
    took = r"\d+(\.\d)? ms"
    assert re.search(rf"#1\s+failed\s+{took}\s+ConnectionError: courier API down \(retry", text)
    assert re.search(rf"#2\s+succeeded\s+{took}", text)
    assert re.search(rf"#1\s+failed\s+{took}\s+PermissionError: order held for review", text)
    assert 'raise ConnectionError("courier API down")' in text
    assert 'raise PermissionError("order held for review")' in text
    assert "\nundone: book" in text
    assert "\nto do" not in text and "lease:" not in text  # ended: nothing left, nobody holds it


async def foreign(url: str, row: Instance, *records: Record) -> None:
    store = await open_store(url)
    try:
        assert await store.create(row, records)
    finally:
        await store.close()


def started(name: str, *steps: str) -> str:
    return json.dumps(
        {"name": name, "version": 1, "input": None, "deadline_at": None,
         "steps": [{"name": step, "kind": "compensatable"} for step in steps]}
    )  # fmt: skip


def test_a_lapsed_lease_and_an_overdue_saga_say_so(db: str) -> None:
    """A saga whose worker died: its lease ran out and it is due, yet nobody drives it."""
    row = Instance(
        "l-1", "pay", 1, SagaStatus.RUNNING, 1.0e9, 1.0e9,
        due_at=1.0e9 + 5, lease_owner="host-a:4242:beef", lease_expires=1.0e9 + 30,
    )  # fmt: skip
    asyncio.run(
        foreign(
            db,
            row,
            Record(0, RecordType.SAGA_STARTED, 1.0e9, data=started("pay", "charge", "ship")),
            Record(1, RecordType.STEP_STARTED, 1.0e9 + 1, "charge", 1),
        )
    )
    text = shown("show", "l-1", "--db", db)
    assert f"lease: host-a:4242:beef until {local_time(1.0e9 + 30)} (lapsed)" in text
    assert f"next due: {local_time(1.0e9 + 5)} (now)" in text
    assert "to do: charge, ship" in text
    assert re.search(r"charge action  key l-1:charge:action\n\s+#1\s+running", text)
    as_json = json.loads(shown("show", "l-1", "--db", db, "--json"))
    assert as_json["lease_owner"] == "host-a:4242:beef" and as_json["due_at"] == 1.0e9 + 5


def approval() -> Saga:
    async def ask(ctx: StepContext) -> Any:
        return await ctx.wait_for("approved", timeout=3600)

    async def undo(ctx: CompensationContext) -> None:
        return None

    return Saga("approval", 1).add(ask, compensate=undo)


async def park(url: str, saga_id: str) -> None:
    """Start a saga that waits for an ``approved`` message, handed back to the store."""
    store = await open_store(url)
    try:
        saga = approval()
        result = await Engine(store, [saga], hand_back=True).run(saga, {}, saga_id=saga_id)
        assert result.status is SagaStatus.RUNNING
    finally:
        await store.close()


async def claim(url: str, owner: str) -> Instance:
    store = await open_store(url)
    try:
        (claimed,) = await store.claim(owner, 1, 600.0, due_only=False)
        return claimed.instance
    finally:
        await store.close()


def test_a_waiting_saga_shows_when_it_is_due_and_a_claimed_one_who_holds_it(db: str) -> None:
    asyncio.run(park(db, "w-1"))
    waiting = shown("show", "w-1", "--db", db)
    assert "lease: nobody" in waiting
    due = re.search(r"next due: (\S+ \S+)", waiting)
    assert due is not None and time.time() + 3000 < _epoch(due.group(1)) < time.time() + 3700
    assert re.search(r"#1\s+waiting\s+waits for 'approved' until", waiting)

    held = asyncio.run(claim(db, "worker-7"))
    assert held.lease_expires is not None
    claimed = shown("show", "w-1", "--db", db)
    assert f"lease: worker-7 until {local_time(held.lease_expires)}\n" in claimed


def _epoch(shown_time: str) -> float:
    return time.mktime(time.strptime(shown_time, "%Y-%m-%d %H:%M:%S"))


HOSTILE = "\x1b[2J\x1b]0;pwned\x07[bold red]not markup[/]"


def test_an_error_logged_before_tracebacks_were_kept_still_renders(db: str) -> None:
    old = {"error": {"type": "billing.Refused", "message": "card declined"}, "retry_at": None}
    hostile = {
        "error": {"type": "Boom", "message": "m", "traceback": f"Traceback\n  {HOSTILE}\nBoom: m"},
        "retry_at": None,
    }
    attention = {"reason": "refund refused", "failed": ["pay"]}
    row = Instance("o-1", "old", 1, SagaStatus.NEEDS_ATTENTION, 1.0e9, 1.0e9)
    asyncio.run(
        foreign(
            db,
            row,
            Record(0, RecordType.SAGA_STARTED, 1.0e9, data=started("old", "pay", "ship")),
            Record(1, RecordType.STEP_STARTED, 1.0e9, "pay", 1),
            Record(2, RecordType.STEP_SUCCEEDED, 1.0e9 + 2.5, "pay", 1, "null"),
            Record(3, RecordType.STEP_STARTED, 1.0e9 + 3, "ship", 1),
            Record(4, RecordType.STEP_FAILED, 1.0e9 + 3, "ship", 1, json.dumps(hostile)),
            Record(5, RecordType.COMPENSATION_STARTED, 1.0e9 + 4, "pay", 1),
            Record(6, RecordType.COMPENSATION_FAILED, 1.0e9 + 4, "pay", 1, json.dumps(old)),
            Record(7, RecordType.SAGA_NEEDS_ATTENTION, 1.0e9 + 4, data=json.dumps(attention)),
        )
    )  # fmt: skip
    text = shown("show", "o-1", "--db", db)
    assert re.search(r"#1\s+succeeded\s+2500 ms", text)
    assert re.search(r"#1\s+failed\s+0\.0 ms\s+Refused: card declined \(final\)\s*\nship", text)
    assert "not undone: pay" in text
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in text and "[bold red]not markup[/]" in text
    assert "error" in json.loads(shown("show", "o-1", "--db", db, "--json"))["steps"][0]


def test_follow_of_a_saga_already_ended_prints_its_story_and_exits(db: str) -> None:
    assert asyncio.run(run_saga(db, flaky_then_refused(), "s-1")) is SagaStatus.COMPENSATED
    text = shown("show", "s-1", "--follow", "--db", db)
    assert "saga_compensated" in text and text.count("saga s-1") == 1
    refused = cli("show", "s-1", "--follow", "--json", "--db", db)
    assert refused.exit_code == 2 and "no --json form" in refused.output


async def follower(url: str, saga_id: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(SAGAKIT, "show", saga_id, "--follow", "--db", url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **NARROW},
    )


async def following(process: asyncio.subprocess.Process, deadline: float) -> None:
    """Return once the follower says (on stderr) that it follows: its story is printed."""
    assert process.stderr is not None
    line = b""
    while b"following" not in line:
        line = await asyncio.wait_for(process.stderr.readline(), deadline - time.monotonic())
        assert line, "the follower ended before it said it follows"


async def follow_to_the_end(url: str) -> tuple[str, int, str]:
    """Follow a waiting saga; once the follower has printed the story, approve and drive
    the saga to its end: what it prints after that landed after it started."""
    await park(url, "w-1")
    deadline = time.monotonic() + DEADLINE
    process = await follower(url, "w-1")
    try:
        await following(process, deadline)
        store = await open_store(url)
        try:
            await Client(store).signal("w-1", "approved", {"by": "ops"})
            saga = approval()
            result = await Engine(store, [saga], hand_back=True).resume_saga("w-1")
            assert result.status is SagaStatus.COMPLETED
        finally:
            await store.close()
        out, err = await asyncio.wait_for(process.communicate(), deadline - time.monotonic())
        return out.decode(), await process.wait(), err.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_follow_prints_each_record_that_lands_and_exits_when_the_saga_ends(db: str) -> None:
    out, code, err = asyncio.run(follow_to_the_end(db))

    assert code == 0, err
    story, live = out.splitlines()[:-3], out.splitlines()[-3:]
    assert any(line.startswith("saga w-1") for line in story)
    assert "step_waiting" in "\n".join(story)
    assert [line.split()[1] for line in live] == [
        "message_received",
        "step_succeeded",
        "saga_completed",
    ]
    assert "'approved'" in live[0] and re.match(r"\s*\d+ {2}step_succeeded\s+ask {2}#1 ", live[1])
    assert out.count("saga_completed") == 1  # landed after the story, printed once
    assert "\x1b" not in out  # piped: plain text, no colour codes


async def interrupt(url: str) -> tuple[int, str, str]:
    await park(url, "w-2")
    deadline = time.monotonic() + DEADLINE
    process = await follower(url, "w-2")
    try:
        await following(process, deadline)
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), deadline - time.monotonic())
        return await process.wait(), out.decode(), err.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_ctrl_c_stops_a_follower_quietly(db: str) -> None:
    code, out, err = asyncio.run(interrupt(db))

    assert code == 130
    assert "Traceback" not in out + err and "Aborted" not in err
