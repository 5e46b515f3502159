"""``sagakit outbox dead`` and ``resend`` on a service's real SQLite database.

The dead letter is made the way the relay makes one (a claim that records a final
refusal), and re-sending it lets the relay publish it and the event waiting behind it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from sagakit.bus import Delivery, Event, MemoryBroker
from sagakit.choreography import Relay, SqliteDatabase

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))


def sagakit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SAGAKIT, *args], capture_output=True, text=True, timeout=60)


async def _outbox_with_a_dead_letter(path: Path) -> tuple[Event, Event]:
    db = SqliteDatabase(path)
    huge = Event.new("Huge", {"blob": "x" * 5_000}, source="orders", correlation_id="o-1")
    after = Event.new("After", {"\x1b[2J": "clear"}, source="orders", correlation_id="o-1")
    async with db.transaction() as tx:
        await tx.enqueue("orders", huge)
        await tx.enqueue("orders", after)
    async with db.claim(10) as claim:
        await claim.refused(claim.rows[0].id, "over the 1,000 bytes the broker takes", None)
    await db.close()
    return huge, after


def test_dead_letters_are_listed_and_re_sent(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    huge, after = asyncio.run(_outbox_with_a_dead_letter(path))
    url = f"sqlite:///{path}"

    listed = sagakit("outbox", "dead", "--db", url)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "SAGA", "STREAM", "REFUSALS", "DEAD", "AT", "ERROR", "EVENT"]
    assert row.startswith("1   o-1   orders  1")
    assert "over the 1,000 bytes the broker takes" in row
    assert "more characters)" in row and len(row) < 400  # an excerpt, not 5 KB

    as_json = json.loads(sagakit("outbox", "dead", "--db", url, "--json").stdout)
    assert [(d["id"], d["saga_id"], d["refusals"]) for d in as_json] == [(1, "o-1", 1)]

    wrong = sagakit("outbox", "resend", "--db", url, "1", "7")
    assert wrong.returncode == 1
    assert "1 dead letter(s) will be published again" in wrong.stdout
    assert "1 id(s) were not dead letters of this outbox" in wrong.stderr
    assert sagakit("outbox", "dead", "--db", url).stdout.startswith("no dead letters")

    async def relay() -> list[str]:
        broker = MemoryBroker()
        heard: list[str] = []
        both = asyncio.Event()

        async def note(delivery: Delivery) -> None:
            heard.append(delivery.event.id)
            if len(heard) == 2:
                both.set()

        await broker.subscribe("orders", "audit", note)
        db = SqliteDatabase(path)
        outcome = await Relay(db, broker).publish_pending()
        await db.close()
        async with asyncio.timeout(30):
            await both.wait()
        await broker.close()
        assert outcome.sent == 2
        return heard

    assert asyncio.run(relay()) == [huge.id, after.id]


def test_a_missing_database_or_unknown_scheme_is_one_line(tmp_path: Path) -> None:
    missing = sagakit("outbox", "dead", "--db", f"sqlite:///{tmp_path / 'nope.db'}")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == f"error: no service database at '{tmp_path / 'nope.db'}'"
    assert not (tmp_path / "nope.db").exists()
    secret = sagakit("outbox", "dead", "--db", "mysql://root:hunter2@127.0.0.1/x")
    assert secret.returncode == 1 and "hunter2" not in secret.stderr
    assert secret.stderr.startswith("error: no service database for 'mysql://root:***@")
    assert len(secret.stderr.splitlines()) == 1
