"""The contract every :class:`~sagakit.choreography.LocalDatabase` must keep, on a real server.

A choreographed service trusts its database with three promises: its own change, its inbox
row and its outbox rows commit or roll back together; the relay's claims hand out each
saga's events whole and in order, one claim at a time per saga, even with several relays
(replicas) on one database; and a row the broker refuses waits, or becomes a dead letter,
without holding back other sagas. These tests hold a backend to them.

Subclass :class:`LocalDatabaseContract` and provide a ``database_factory`` fixture: an async
callable returning a new :class:`LocalDatabase` on one fresh database of the test's own (every
call opens the same one, as another process or replica would), with the service's own table
made by :attr:`~LocalDatabaseContract.own_table_sql` beside the outbox. The fixture closes
what it made and drops the database afterwards. Three small hooks reach the service's own
table and the raw outbox, in the backend's own SQL::

    class TestMyDatabase(LocalDatabaseContract):
        @pytest.fixture
        async def database_factory(self) -> AsyncIterator[LocalDatabaseFactory]:
            made: list[MyDatabase] = []

            async def make() -> LocalDatabase:
                made.append(await MyDatabase.open(URL, tables=self.own_table_sql))
                return made[-1]

            yield make
            for db in made:
                await db.close()
            await drop_the_database()

        async def insert_own_row(self, tx: OutboxTransaction, value: str) -> None:
            await tx.connection.execute("INSERT INTO contract_own (value) VALUES ($1)", value)

        async def count_own_rows(self, db: LocalDatabase) -> int: ...
        async def overwrite_event(self, db: LocalDatabase, row_id: int, text: str) -> None: ...

Two class attributes say what the backend promises beyond the rest: ``concurrent_relays``
(several relays may claim one database at once; SQLite declares one relay per file) and
``notifies`` (:meth:`LocalDatabase.changes` hears other connections' commits).

Tests never sleep to wait: they await a condition with a deadline (:data:`WAIT`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

import pytest

from sagakit.bus import Event
from sagakit.choreography import LocalDatabase, OutboxTransaction, Pending
from sagakit.errors import BrokerNameError

LocalDatabaseFactory = Callable[[], Awaitable[LocalDatabase]]

WAIT = 15.0
"""Seconds any awaited condition may take before the test fails."""

CLOCKS_APART = 5.0
"""Seconds a stored time may differ from the test's clock (a server's clock, a slow CI)."""

FAR = 3600.0
"""A retry this many seconds ahead is not due during any test."""

STREAM = "contract"


def event(kind: str, saga: str) -> Event:
    """An event of saga ``saga`` (its correlation id), unique by its id."""
    return Event.new(kind, {"saga": saga, "text": "ünï ✓"}, source="contract", correlation_id=saga)


def chains(rows: Iterable[Pending]) -> dict[str, list[str]]:
    """The claimed rows' event types per correlation id, in the order claimed."""
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.correlation_id, []).append(row.event.type)
    return found


def ids_of(rows: Iterable[Pending]) -> list[int]:
    return [row.id for row in rows]


class LocalDatabaseContract:
    """Behaviour services and relays rely on; subclasses supply ``database_factory`` and
    the three hooks below."""

    concurrent_relays = True
    """Several relays may claim the database at once (each claim skips the others' chains);
    False for a backend that declares one relay per database (SQLite: one per file)."""

    notifies = True
    """:meth:`LocalDatabase.changes` wakes its caller after another connection's commit;
    False for a backend whose relay only polls."""

    own_table_sql = "CREATE TABLE IF NOT EXISTS contract_own (value TEXT NOT NULL)"
    """The service's own table the hooks use; the factory creates it beside the outbox."""

    # -- what a subclass provides -------------------------------------------------------------

    @pytest.fixture
    async def db(self, database_factory: LocalDatabaseFactory) -> LocalDatabase:
        return await database_factory()

    async def insert_own_row(self, tx: OutboxTransaction, value: str) -> None:
        """Insert ``value`` into ``contract_own`` through ``tx.connection``, as a handler would."""
        raise NotImplementedError

    async def count_own_rows(self, db: LocalDatabase) -> int:
        """How many rows ``contract_own`` holds, as committed."""
        raise NotImplementedError

    async def overwrite_event(self, db: LocalDatabase, row_id: int, text: str) -> None:
        """Set the ``event`` text of outbox row ``row_id`` with raw SQL, committed, as an
        older sagakit or a hand-made fix could have left it."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------

    async def enqueue(self, db: LocalDatabase, *events: Event) -> None:
        """One transaction that changes the service's own table and writes ``events``."""
        async with db.transaction() as tx:
            await self.insert_own_row(tx, "changed")
            for one in events:
                await tx.enqueue(STREAM, one)

    async def claimed(self, db: LocalDatabase, limit: int = 100) -> list[Pending]:
        """The rows a claim gets, the claim ended without marking any."""
        async with db.claim(limit) as claim:
            return list(claim.rows)

    async def mark_sent(self, db: LocalDatabase, limit: int = 100) -> list[Pending]:
        """Claim, and mark everything claimed sent, as a relay whose publishes all worked."""
        async with db.claim(limit) as claim:
            rows = list(claim.rows)
            await claim.sent(ids_of(rows))
        return rows

    # -- transactions -------------------------------------------------------------------------

    async def test_a_commit_keeps_the_change_the_inbox_row_and_the_outbox_rows(
        self, db: LocalDatabase
    ) -> None:
        first, second = event("OrderCreated", "o-1"), event("OrderPriced", "o-1")
        async with db.transaction() as tx:
            assert await tx.first_delivery("payments", "e-1")
            await self.insert_own_row(tx, "charged")
            await tx.enqueue(STREAM, first)
            await tx.enqueue(STREAM, second)
        assert await self.count_own_rows(db) == 1
        assert await db.backlog() == 2
        [one, two] = await self.claimed(db)
        assert (one.event, two.event) == (first, second)  # every field, byte for byte
        assert (one.stream, one.refusals) == (STREAM, 0)
        async with db.transaction() as tx:
            assert not await tx.first_delivery("payments", "e-1")

    async def test_a_rollback_keeps_none_of_them(self, db: LocalDatabase) -> None:
        async def fail_midway() -> None:
            async with db.transaction() as tx:
                assert await tx.first_delivery("payments", "e-1")
                await self.insert_own_row(tx, "charged")
                await tx.enqueue(STREAM, event("OrderCreated", "o-1"))
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):  # the handler's own error, not a wrapped one
            await fail_midway()
        assert await self.count_own_rows(db) == 0
        assert await db.backlog() == 0
        assert await self.claimed(db) == []
        async with db.transaction() as tx:
            assert await tx.first_delivery("payments", "e-1")  # the inbox row went too

    async def test_first_delivery_is_true_once_per_consumer_and_event(
        self, db: LocalDatabase
    ) -> None:
        async with db.transaction() as tx:
            assert await tx.first_delivery("payments", "e-1")
            assert not await tx.first_delivery("payments", "e-1")
            assert await tx.first_delivery("shipping", "e-1")
            assert await tx.first_delivery("payments", "e-2")
        async with db.transaction() as tx:
            assert not await tx.first_delivery("payments", "e-1")
            assert not await tx.first_delivery("shipping", "e-1")

    async def test_a_redelivery_racing_the_first_is_handled_once(
        self, database_factory: LocalDatabaseFactory
    ) -> None:
        """Two deliveries of one event in two connections at once (two replicas): exactly
        one is a first delivery, and only its change commits."""
        replicas = [await database_factory(), await database_factory()]

        async def handle(db: LocalDatabase) -> bool:
            async with db.transaction() as tx:
                if not await tx.first_delivery("payments", "e-1"):
                    return False
                await self.insert_own_row(tx, "charged")
                return True

        outcomes = await asyncio.gather(*(handle(db) for db in replicas))
        assert sorted(outcomes) == [False, True]
        assert await self.count_own_rows(replicas[0]) == 1

    async def test_transactions_started_together_all_commit(self, db: LocalDatabase) -> None:
        """A service handles deliveries side by side; however the database orders their
        transactions, each commits its own change and events."""

        async def handle(n: int) -> None:
            async with db.transaction() as tx:
                assert await tx.first_delivery("payments", f"e-{n}")
                await self.insert_own_row(tx, f"charge {n}")
                await tx.enqueue(STREAM, event("PaymentCompleted", f"o-{n}"))

        await asyncio.gather(*(handle(n) for n in range(20)))
        assert await self.count_own_rows(db) == 20
        assert await db.backlog() == 20

    async def test_a_bad_stream_name_is_refused_when_enqueued(self, db: LocalDatabase) -> None:
        with pytest.raises(BrokerNameError):
            async with db.transaction() as tx:
                await tx.enqueue("no.dots", event("A", "o-1"))
        assert await db.backlog() == 0

    # -- claims -------------------------------------------------------------------------------

    async def test_a_claim_returns_whole_chains_in_id_order(self, db: LocalDatabase) -> None:
        for step in range(3):  # three transactions, each writing a step of every saga
            await self.enqueue(db, *(event(f"Step{step}", f"o-{n}") for n in range(4)))
        rows = await self.claimed(db)
        assert ids_of(rows) == sorted(ids_of(rows)) and len(set(ids_of(rows))) == 12
        assert chains(rows) == {f"o-{n}": ["Step0", "Step1", "Step2"] for n in range(4)}

    async def test_a_claim_takes_up_to_limit_chains_the_oldest_heads_first(
        self, db: LocalDatabase
    ) -> None:
        await self.enqueue(db, *(event("Created", f"o-{n}") for n in range(5)))
        await self.enqueue(db, *(event("Priced", f"o-{n}") for n in range(5)))
        rows = await self.claimed(db, limit=2)
        assert chains(rows) == {"o-0": ["Created", "Priced"], "o-1": ["Created", "Priced"]}

    async def test_sent_rows_are_never_claimed_again(self, db: LocalDatabase) -> None:
        await self.enqueue(db, event("Created", "o-1"), event("Created", "o-2"))
        assert len(await self.mark_sent(db)) == 2
        assert await self.claimed(db) == []
        assert await db.backlog() == 0
        later = event("Priced", "o-1")
        await self.enqueue(db, later)
        assert [row.event for row in await self.claimed(db)] == [later]

    async def test_a_claim_ended_by_an_error_marks_nothing(self, db: LocalDatabase) -> None:
        """A relay that fails (or dies) before its claim ends publishes those rows again:
        at least once, never lost."""
        await self.enqueue(db, event("Created", "o-1"), event("Created", "o-2"))

        async def mark_then_fail() -> None:
            async with db.claim(10) as claim:
                await claim.sent(ids_of(claim.rows))
                await claim.refused(claim.rows[0].id, "too big", None)
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await mark_then_fail()
        assert chains(await self.claimed(db)) == {"o-1": ["Created"], "o-2": ["Created"]}
        assert await db.dead_letters() == []

    async def test_a_chain_published_in_part_resumes_after_its_last_sent_row(
        self, db: LocalDatabase
    ) -> None:
        await self.enqueue(db, *(event(f"Step{n}", "o-1") for n in range(3)))
        async with db.claim(10) as claim:
            await claim.sent(ids_of(claim.rows[:1]))
        assert chains(await self.claimed(db)) == {"o-1": ["Step1", "Step2"]}

    # -- refusals and dead letters ------------------------------------------------------------

    async def test_a_refused_head_holds_back_its_chain_only_until_due(
        self, db: LocalDatabase
    ) -> None:
        await self.enqueue(db, event("Huge", "later"), event("Huge", "due"))
        await self.enqueue(db, event("After", "later"), event("After", "due"))
        await self.enqueue(db, event("Fine", "other"))
        async with db.claim(10) as claim:
            heads = {row.correlation_id: row for row in claim.rows if row.event.type == "Huge"}
            await claim.refused(heads["later"].id, "too big", time.time() + FAR)
            await claim.refused(heads["due"].id, "too big", time.time() - 1.0)
        rows = await self.claimed(db)
        assert chains(rows) == {"due": ["Huge", "After"], "other": ["Fine"]}
        assert [row.refusals for row in rows if row.correlation_id == "due"] == [1, 0]
        assert await db.backlog() == 5  # a refused row still waits to be published
        assert await db.dead_letters() == []

    async def test_a_dead_letter_holds_its_chain_until_it_is_resent(
        self, db: LocalDatabase
    ) -> None:
        poison, after = event("Huge", "poison"), event("After", "poison")
        await self.enqueue(db, poison, after, event("Fine", "other"))
        before = time.time()
        async with db.claim(10) as claim:
            head = claim.rows[0]
            await claim.refused(head.id, "payload too large (1)", time.time() - 1.0)
        async with db.claim(10) as claim:
            [again, behind] = [row for row in claim.rows if row.correlation_id == "poison"]
            assert (again.id, again.refusals) == (head.id, 1)
            await claim.refused(head.id, "payload too large (2)", None)
            await claim.sent([row.id for row in claim.rows if row.correlation_id == "other"])
        after_marking = time.time()

        [dead] = await db.dead_letters()
        assert (dead.id, dead.stream, dead.correlation_id) == (head.id, STREAM, "poison")
        assert (dead.refusals, dead.error) == (2, "payload too large (2)")
        assert Event.parse(dead.event) == poison
        low, high = before - CLOCKS_APART, after_marking + CLOCKS_APART
        assert low <= dead.created_at <= dead.dead_at <= high
        assert await self.claimed(db) == []  # the later event waits behind it
        assert await db.backlog() == 1  # the later event; the dead letter is not counted

        no_such_row = 10**9
        assert await db.resend([dead.id, behind.id, no_such_row]) == 1  # only the dead one
        assert await db.resend([dead.id]) == 0  # no longer dead
        rows = await self.claimed(db)
        assert [row.event for row in rows] == [poison, after]
        assert rows[0].refusals == 0  # refusals start over
        assert (await db.dead_letters(), await db.backlog()) == ([], 2)

    async def test_dead_letters_are_listed_oldest_first_up_to_limit(
        self, db: LocalDatabase
    ) -> None:
        await self.enqueue(db, *(event("Huge", f"o-{n}") for n in range(3)))
        async with db.claim(10) as claim:
            for row in reversed(claim.rows):
                await claim.refused(row.id, f"refused {row.correlation_id}", None)
        listed = await db.dead_letters(limit=2)
        assert [letter.correlation_id for letter in listed] == ["o-0", "o-1"]
        assert len(await db.dead_letters()) == 3
        assert await db.backlog() == 0

    async def test_an_event_that_cannot_be_read_is_a_dead_letter_at_claim(
        self, db: LocalDatabase
    ) -> None:
        legacy, later = event("Legacy", "legacy"), event("Later", "legacy")
        good = event("Fine", "other")
        await self.enqueue(db, legacy, later, good)
        [legacy_id, _, _] = ids_of(await self.claimed(db))
        await self.overwrite_event(db, legacy_id, '{"v": 0}')

        assert [row.event for row in await self.claimed(db)] == [good]
        [dead] = await db.dead_letters()
        assert (dead.id, dead.correlation_id, dead.refusals) == (legacy_id, "legacy", 0)
        assert "cannot be read" in dead.error and dead.event == '{"v": 0}'
        assert [row.event for row in await self.claimed(db)] == [good]  # still held back
        assert await db.backlog() == 2

        await self.overwrite_event(db, legacy_id, legacy.to_json().decode())  # repaired by hand
        assert await db.resend([legacy_id]) == 1
        assert chains(await self.claimed(db)) == {"legacy": ["Legacy", "Later"], "other": ["Fine"]}

    # -- pruning ------------------------------------------------------------------------------

    async def test_prune_deletes_only_rows_sent_before_the_time(self, db: LocalDatabase) -> None:
        await self.enqueue(db, event("Sent", "o-1"), event("Sent", "o-2"))
        before_sending = time.time() - CLOCKS_APART
        await self.mark_sent(db)
        await self.enqueue(db, event("Waiting", "o-3"), event("Dead", "o-4"))
        async with db.claim(10) as claim:
            dead = next(row for row in claim.rows if row.event.type == "Dead")
            await claim.refused(dead.id, "too big", None)

        assert await db.prune(before_sending) == 0
        assert await db.prune(time.time() + CLOCKS_APART) == 2
        assert await db.prune(time.time() + CLOCKS_APART) == 0
        assert [row.event.type for row in await self.claimed(db)] == ["Waiting"]
        assert [letter.id for letter in await db.dead_letters()] == [dead.id]

    # -- several connections ------------------------------------------------------------------

    async def test_a_second_claim_while_one_is_open(
        self, database_factory: LocalDatabaseFactory
    ) -> None:
        """With ``concurrent_relays``, two relays (each its own connection) claiming at
        once never get the same chain: the second gets only the others. A backend of one
        relay per database promises less: an open claim holds nothing that stops another
        claim, or a handler's commit."""
        first, second = await database_factory(), await database_factory()
        await self.enqueue(first, *(event("Created", f"o-{n}") for n in range(6)))
        async with first.claim(3) as claim:
            mine = set(chains(claim.rows))
            assert mine == {"o-0", "o-1", "o-2"}
            await self.enqueue(second, event("Created", "o-6"))  # a handler commits meanwhile
            theirs = set(chains(await self.claimed(second)))
            if self.concurrent_relays:
                assert theirs == {"o-3", "o-4", "o-5", "o-6"}
        assert set(chains(await self.claimed(second))) == {f"o-{n}" for n in range(7)}

    async def test_rows_committed_while_their_chain_is_claimed_wait_for_the_next_claim(
        self, database_factory: LocalDatabaseFactory
    ) -> None:
        first, second = await database_factory(), await database_factory()
        await self.enqueue(first, event("Step0", "o-1"))
        async with first.claim(10) as claim:
            assert chains(claim.rows) == {"o-1": ["Step0"]}
            await self.enqueue(second, event("Step1", "o-1"), event("Created", "o-2"))
            if self.concurrent_relays:  # another relay must not overtake the claimed head
                assert chains(await self.claimed(second)) == {"o-2": ["Created"]}
            await claim.sent(ids_of(claim.rows))
            assert chains(claim.rows) == {"o-1": ["Step0"]}  # read once, at the claim
        assert chains(await self.claimed(first)) == {"o-1": ["Step1"], "o-2": ["Created"]}

    async def test_a_saga_s_row_committed_late_with_an_earlier_id_leaves_its_chain_claimed(
        self, database_factory: LocalDatabaseFactory
    ) -> None:
        """Ids are given out as rows are written, not as they commit: a transaction that
        wrote a saga's row may commit after a later row of the saga committed and was
        claimed. The chain stays the claim's: no other relay takes the saga meanwhile (it
        would publish the claimed rows again, and maybe first). A backend of one relay per
        database commits its writers one at a time instead, so its ids follow commit order."""
        db = await database_factory()
        wrote, finish = asyncio.Event(), asyncio.Event()

        async def slow_writer() -> None:
            async with db.transaction() as tx:
                await tx.enqueue(STREAM, event("Early", "o-1"))
                wrote.set()
                await _within(finish.wait(), "the test to let the slow writer commit")

        slow = asyncio.create_task(slow_writer())
        await _within(wrote.wait(), "the slow writer's row")
        late = asyncio.create_task(self.enqueue(db, event("Late", "o-1")))
        if not self.concurrent_relays:
            finish.set()
            await _within(asyncio.gather(slow, late), "both writers")
            assert chains(await self.claimed(db)) == {"o-1": ["Early", "Late"]}
            return
        await _within(late, "the later row's commit")
        relay, other = await database_factory(), await database_factory()
        async with relay.claim(10) as claim:
            assert chains(claim.rows) == {"o-1": ["Late"]}
            finish.set()
            await _within(slow, "the slow writer's commit")
            assert "o-1" not in chains(await self.claimed(other))
            await claim.sent(ids_of(claim.rows))
        assert chains(await self.claimed(other)) == {"o-1": ["Early"]}

    async def test_claimers_side_by_side_take_every_row_once_in_order(
        self, database_factory: LocalDatabaseFactory
    ) -> None:
        """Relays drain the outbox together (one, for a backend of one relay per database):
        every row is taken exactly once, and no claim gets a saga's row before the claim
        that got the row before it."""
        writer = await database_factory()
        sagas, steps = 60, 3
        for step in range(steps):
            await self.enqueue(writer, *(event(f"Step{step}", f"o-{n}") for n in range(sagas)))
        claimers = [await database_factory() for _ in range(3 if self.concurrent_relays else 1)]
        next_step = {f"o-{n}": 0 for n in range(sagas)}

        async def drain(db: LocalDatabase) -> int:
            taken = 0
            while True:
                async with db.claim(7) as claim:
                    if not claim.rows:
                        return taken
                    for row in claim.rows:  # checked before this claim marks anything
                        step = int(row.event.type.removeprefix("Step"))
                        assert next_step[row.correlation_id] == step, (row, next_step)
                        next_step[row.correlation_id] = step + 1
                    await claim.sent(ids_of(claim.rows))
                    taken += len(claim.rows)

        taken = await asyncio.gather(*(drain(db) for db in claimers))
        assert sum(taken) == sagas * steps
        assert set(next_step.values()) == {steps}
        assert await writer.backlog() == 0

    async def test_changes_wake_the_caller_after_another_connection_commits(
        self, database_factory: LocalDatabaseFactory
    ) -> None:
        """Entering :meth:`LocalDatabase.changes` returns once it listens, so a commit made
        right after is heard. A backend that cannot tell (``notifies`` False) must still
        enter and leave cleanly: its relay polls."""
        relay_side, service_side = await database_factory(), await database_factory()
        woken = asyncio.Event()
        async with relay_side.changes(woken.set):
            for saga in ("o-1", "o-2"):
                await self.enqueue(service_side, event("Created", saga))
                if self.notifies:
                    await _within(woken.wait(), f"a wake after the commit of {saga}")
                    woken.clear()
        assert await relay_side.backlog() == 2


async def _within(waiting: Awaitable[object], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            await waiting
    except TimeoutError:
        pytest.fail(f"after {WAIT}s, still waiting for {what}")
