"""The contract every :class:`~sagakit.store.Store` must keep.

Subclass :class:`StoreContract` in a test module and provide a ``store`` fixture that
yields a fresh, empty store; every test here then runs against it::

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self) -> AsyncIterator[Store]:
            store = await MyStore.open(...)
            yield store
            await store.close()
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sagakit._retry import Retry
from sagakit.errors import ConcurrentUpdateError, UnknownSagaError
from sagakit.log import Instance, Record, RecordType, SagaState, SagaStatus
from sagakit.orchestration import CompensationContext, Engine, Saga, StepContext
from sagakit.store import FirstCall, InstanceFilter, Store, StoredSaga
from sagakit.store._base import ANY_INSTANCE, Watch
from sagakit.store._fleet import FORGOTTEN_AFTER, WorkerInfo
from sagakit.testing._query_contract import QueryContract


def instance(saga_id: str, status: SagaStatus = SagaStatus.RUNNING, at: float = 0.0) -> Instance:
    at = at or time.time()
    return Instance(saga_id, "contract", 1, status, at, at)


def started(at: float = 0.0) -> Record:
    data = '{"name":"contract","version":1,"steps":[],"deadline_at":null,"input":null}'
    return Record(0, RecordType.SAGA_STARTED, at or time.time(), data=data)


def step_record(
    seq: int, kind: RecordType = RecordType.STEP_STARTED, data: str | None = None
) -> Record:
    return Record(seq, kind, time.time(), "charge", seq, data)


def ids(claimed: list[StoredSaga]) -> list[str]:
    return [stored.instance.id for stored in claimed]


async def woken(watch: Watch) -> None:
    """Wait on ``watch`` for up to an hour, and fail unless something wakes it within 10 s."""
    await asyncio.wait_for(watch.wait(3600.0), 10.0)


class StoreContract(QueryContract):
    """Behaviour the engine and the CLI rely on; subclasses supply the ``store`` fixture.

    It includes :class:`QueryContract`: every filter, count and page a listing uses."""

    async def test_create_then_load_round_trips_every_field(self, store: Store) -> None:
        first = [started(), step_record(1, data='{"ünïcode":"✓","n":[1,2.5,null]}')]
        assert await store.create(instance("a"), first)
        loaded = await store.load("a")
        assert loaded is not None
        assert loaded.records == first
        assert loaded.instance.id == "a"
        assert loaded.instance.status is SagaStatus.RUNNING
        assert (loaded.instance.name, loaded.instance.version) == ("contract", 1)

    async def test_create_is_idempotent_on_the_id(self, store: Store) -> None:
        assert await store.create(instance("a"), [started()])
        assert not await store.create(
            instance("a", SagaStatus.COMPLETED), [started(), step_record(1)]
        )
        loaded = await store.load("a")
        assert loaded is not None
        assert len(loaded.records) == 1
        assert loaded.instance.status is SagaStatus.RUNNING

    async def test_load_many_reads_each_instance_in_the_order_asked(self, store: Store) -> None:
        for saga_id in ("m1", "m2", "m3"):
            await store.create(instance(saga_id), [started(), step_record(1)])
        await store.append("m2", [step_record(2)], SagaStatus.RUNNING)
        found = await store.load_many(["m3", "nobody", "m1", "m2"])
        assert [s.instance.id for s in found] == ["m3", "m1", "m2"]
        for stored in found:
            alone = await store.load(stored.instance.id)
            assert alone is not None and stored.records == alone.records
        assert await store.load_many([]) == []

    async def test_load_of_unknown_id_is_none(self, store: Store) -> None:
        assert await store.load("nope") is None

    async def test_append_continues_the_log_and_sets_status(self, store: Store) -> None:
        await store.create(instance("a"), [started()])
        await store.append(
            "a",
            [step_record(1), step_record(2, RecordType.STEP_SUCCEEDED, "7")],
            SagaStatus.RUNNING,
        )
        last = step_record(3, RecordType.SAGA_COMPLETED)
        await store.append("a", [last], SagaStatus.COMPLETED)
        loaded = await store.load("a")
        assert loaded is not None
        assert [r.seq for r in loaded.records] == [0, 1, 2, 3]
        assert loaded.records[2].data == "7"
        assert loaded.instance.status is SagaStatus.COMPLETED
        assert loaded.instance.updated_at == pytest.approx(last.at)

    async def test_append_at_a_taken_position_is_refused_and_changes_nothing(
        self, store: Store
    ) -> None:
        await store.create(instance("a"), [started(), step_record(1)])
        with pytest.raises(ConcurrentUpdateError):
            await store.append("a", [step_record(1), step_record(2)], SagaStatus.COMPENSATING)
        loaded = await store.load("a")
        assert loaded is not None
        assert len(loaded.records) == 2
        assert loaded.instance.status is SagaStatus.RUNNING

    async def test_append_to_unknown_instance_is_refused(self, store: Store) -> None:
        with pytest.raises(UnknownSagaError):
            await store.append("ghost", [step_record(1)], SagaStatus.RUNNING)

    async def test_a_migration_moves_the_instance_to_its_new_version(self, store: Store) -> None:
        await store.create(instance("m"), [started()])
        moved = step_record(1, RecordType.OPERATOR_MIGRATED, '{"to_version":2}')
        await store.append_migrated("m", [moved], SagaStatus.RUNNING, 2)
        loaded = await store.load("m")
        assert loaded is not None
        assert loaded.records[1:] == [moved]
        assert (loaded.instance.version, loaded.instance.status) == (2, SagaStatus.RUNNING)
        assert [i.id for i in await store.instances(InstanceFilter(versions={2}))] == ["m"]
        old = await store.claim("w", 10, 30.0, due_only=False, known={"contract@1"})
        new = await store.claim("w", 10, 30.0, due_only=False, known={"contract@2"})
        assert (ids(old), ids(new)) == ([], ["m"])

    async def test_a_refused_migration_changes_nothing(self, store: Store) -> None:
        await store.create(instance("m"), [started(), step_record(1)])
        with pytest.raises(ConcurrentUpdateError):
            await store.append_migrated("m", [step_record(1)], SagaStatus.COMPENSATING, 2)
        loaded = await store.load("m")
        assert loaded is not None and len(loaded.records) == 2
        assert (loaded.instance.version, loaded.instance.status) == (1, SagaStatus.RUNNING)
        with pytest.raises(UnknownSagaError):
            await store.append_migrated("ghost", [step_record(1)], SagaStatus.RUNNING, 2)

    async def test_one_failing_write_does_not_fail_concurrent_ones(self, store: Store) -> None:
        ids = [f"s{i}" for i in range(20)]
        await asyncio.gather(*(store.create(instance(i), [started()]) for i in ids))
        bad = store.append("s0", [step_record(0)], SagaStatus.RUNNING)
        good = [store.append(i, [step_record(1)], SagaStatus.RUNNING) for i in ids]
        outcomes = await asyncio.gather(bad, *good, return_exceptions=True)
        assert isinstance(outcomes[0], ConcurrentUpdateError)
        assert outcomes[1:] == [None] * len(ids)
        for saga_id in ids:
            loaded = await store.load(saga_id)
            assert loaded is not None and len(loaded.records) == 2

    async def test_many_concurrent_sagas_all_land(self, store: Store) -> None:
        async def one(saga_id: str) -> None:
            await store.create(instance(saga_id), [started()])
            for seq in range(1, 6):
                await store.append(saga_id, [step_record(seq)], SagaStatus.RUNNING)
            await store.append(
                saga_id, [step_record(6, RecordType.SAGA_COMPLETED)], SagaStatus.COMPLETED
            )

        await asyncio.gather(*(one(f"c{i}") for i in range(200)))
        done = await store.instances(InstanceFilter(statuses={SagaStatus.COMPLETED}))
        assert len(done) == 200
        loaded = await store.load("c123")
        assert loaded is not None and [r.seq for r in loaded.records] == list(range(7))

    async def test_instances_newest_first_filtered_and_limited(self, store: Store) -> None:
        for i, status in enumerate(
            [SagaStatus.COMPLETED, SagaStatus.RUNNING, SagaStatus.COMPLETED]
        ):
            await store.create(instance(f"i{i}", status, at=1000.0 + i), [started(1000.0 + i)])
        assert [i.id for i in await store.instances()] == ["i2", "i1", "i0"]
        assert [
            i.id for i in await store.instances(InstanceFilter(statuses={SagaStatus.COMPLETED}))
        ] == ["i2", "i0"]
        assert [i.id for i in await store.instances(limit=1)] == ["i2"]

    async def test_unfinished_is_oldest_first_and_excludes_terminal(self, store: Store) -> None:
        statuses = [
            SagaStatus.COMPENSATING,
            SagaStatus.COMPLETED,
            SagaStatus.RUNNING,
            SagaStatus.NEEDS_ATTENTION,
            SagaStatus.COMPENSATED,
        ]
        for i, status in enumerate(statuses):
            await store.create(instance(f"u{i}", status, at=2000.0 + i), [started(2000.0 + i)])
        assert [i.id for i in await store.unfinished()] == ["u0", "u2"]

    async def test_engine_state_survives_the_round_trip(self, store: Store) -> None:
        saga = Saga("contract_engine")

        async def charge(ctx: object) -> dict[str, object]:
            return {"payment_id": "p-1", "amount": 12.5}

        async def refund(ctx: object) -> None:
            return None

        async def reserve(ctx: object) -> None:
            raise RuntimeError("out of stock")

        saga.add(charge, compensate=refund).add(reserve, compensate=refund)
        engine = Engine(store, [saga])
        result = await engine.run(saga, {"order": 1}, saga_id="rt")
        assert result.status is SagaStatus.COMPENSATED
        loaded = await store.load("rt")
        assert loaded is not None
        rebuilt = SagaState.from_records("rt", loaded.records)
        assert rebuilt.as_dict() == (await engine.status("rt")).as_dict()
        assert rebuilt.steps[0].status.value == "compensated"
        assert loaded.instance.status is SagaStatus.COMPENSATED

    async def test_no_call_is_made_before_its_started_record_is_stored(self, store: Store) -> None:
        """The write-ahead rule, seen from inside the calls: each action and compensation
        finds its own ``*_started`` record (this attempt's) already in the store."""
        seen: list[tuple[str, str, int, bool]] = []

        async def logged(saga_id: str, kind: RecordType, step: str, attempt: int) -> bool:
            stored = await store.load(saga_id)
            records = stored.records if stored else []
            return any(r.type is kind and r.step == step and r.attempt == attempt for r in records)

        async def act(ctx: StepContext) -> str:
            found = await logged(ctx.saga_id, RecordType.STEP_STARTED, ctx.step, ctx.attempt)
            seen.append(("action", ctx.step, ctx.attempt, found))
            if ctx.step == "third" or (ctx.step == "second" and ctx.attempt == 1):
                raise RuntimeError("fails")
            return ctx.step

        async def undo(ctx: CompensationContext) -> None:
            found = await logged(
                ctx.saga_id, RecordType.COMPENSATION_STARTED, ctx.step, ctx.attempt
            )
            seen.append(("compensation", ctx.step, ctx.attempt, found))

        saga = Saga("write_ahead")
        retry = Retry(attempts=2, backoff=0)
        for name in ("first", "second", "third"):
            saga.add(act, name=name, compensate=undo, retry=retry)
        result = await Engine(store, [saga]).run(saga, None, saga_id="wa")
        assert result.status is SagaStatus.COMPENSATED
        assert [(kind, step, attempt) for kind, step, attempt, _ in seen] == [
            ("action", "first", 1),
            ("action", "second", 1),
            ("action", "second", 2),
            ("action", "third", 1),
            ("action", "third", 2),
            ("compensation", "second", 1),
            ("compensation", "first", 1),
        ]
        assert all(found for *_, found in seen)

    async def test_a_watch_hears_each_append_made_after_it_was_entered(self, store: Store) -> None:
        await store.create(instance("w"), [started()])
        async with store.watch("w") as watch:
            await store.append("w", [step_record(1)], SagaStatus.RUNNING)  # before the wait
            await woken(watch)
            last = step_record(2, RecordType.SAGA_COMPLETED)
            await store.append("w", [last], SagaStatus.COMPLETED)  # after the first wait
            await woken(watch)

    async def test_a_wait_returns_after_its_timeout(self, store: Store) -> None:
        await store.create(instance("t"), [started()])
        async with store.watch("t") as watch, asyncio.timeout(10):
            await watch.wait(0.05)


class SchedulingContract:
    """Leases, due times and inboxes: what workers sharing one store rely on."""

    async def test_claim_takes_due_free_unfinished_instances_earliest_first(
        self, store: Store
    ) -> None:
        now = time.time()
        for saga_id, status, due in [
            ("late", SagaStatus.RUNNING, now - 1),
            ("early", SagaStatus.PENDING, now - 5),
            ("future", SagaStatus.RUNNING, now + 60),
            ("idle", SagaStatus.RUNNING, None),
            ("done", SagaStatus.COMPLETED, now - 9),
        ]:
            await store.create(instance(saga_id, status)._replace(due_at=due), [started()])
        assert ids(await store.claim("w1", 10, 30.0)) == ["early", "late"]
        assert ids(await store.claim("w2", 10, 30.0)) == []
        assert sorted(ids(await store.claim("w2", 10, 30.0, due_only=False))) == ["future", "idle"]

    async def test_a_claim_takes_only_the_sagas_its_claimer_knows(self, store: Store) -> None:
        now = time.time()
        for saga_id, name, version, due in [
            ("trip", "trip", 1, now - 3),
            ("order-v1", "order", 1, now - 2),
            ("order-v2", "order", 2, now - 1),
            ("order-v2-idle", "order", 2, None),
        ]:
            row = Instance(saga_id, name, version, SagaStatus.RUNNING, now, now, due_at=due)
            await store.create(row, [started()])
        assert ids(await store.claim("w1", 10, 30.0, known={"order@2"})) == ["order-v2"]
        assert ids(await store.claim("w2", 10, 30.0, known=set())) == []
        everything = await store.claim("w2", 10, 30.0, due_only=False, known={"order@1", "order@2"})
        assert sorted(ids(everything)) == ["order-v1", "order-v2-idle"]
        assert ids(await store.claim("w3", 10, 30.0)) == ["trip"]

    async def test_workers_report_themselves_and_retire(self, store: Store) -> None:
        now = time.time()
        first = WorkerInfo("h:1:a", "h", 1, ("order@1",), ("default",), now - 5, now - 5)
        second = WorkerInfo("h:2:b", "h", 2, ("order@1", "order@2"), (), now - 1, now - 1)
        await store.beat(first)
        await store.beat(second)
        assert await store.workers() == [first, second]
        later = first._replace(seen_at=now)
        await store.beat(later)
        assert await store.workers() == [later, second]
        await store.retire("h:2:b")
        assert await store.workers() == [later]
        forgotten = WorkerInfo(
            "h:3:c", "h", 3, (), (), now - 2 * FORGOTTEN_AFTER, now - 2 * FORGOTTEN_AFTER
        )
        await store.beat(forgotten)
        assert await store.workers() == [later]

    async def test_a_lapsed_lease_is_claimed_beside_a_backlog_of_due_work(
        self, store: Store
    ) -> None:
        """Its saga has waited since its lease lapsed; work that became due after that
        must not keep it waiting until the whole backlog is done."""
        now = time.time()
        await store.create(instance("orphan"), [started()])
        assert await store.acquire("dead", "orphan", -1.0)  # lapsed a second ago
        for n in range(20):
            await store.create(instance(f"due-{n:02}")._replace(due_at=now - 0.5), [started()])
        claimed = ids(await store.claim("alive", 5, 30.0))
        assert len(claimed) == 5 and "orphan" in claimed

    async def test_an_instance_both_lapsed_and_due_is_claimed_once(self, store: Store) -> None:
        await store.create(instance("both"), [started()])
        assert await store.acquire("dead", "both", -1.0)  # lapsed a second ago
        await store.send("both", "nudge", "1")  # and due now
        claimed = await store.claim("alive", 10, 30.0)
        assert ids(claimed) == ["both"]
        assert claimed[0].instance.lease_owner == "alive"

    async def test_claim_returns_each_instance_as_load_would(self, store: Store) -> None:
        """A worker drives what it claims without loading it again, so the claim must
        return the whole log, the lease just taken and the newest message's id."""
        past = time.time() - 1
        log = [started(), step_record(1), step_record(2, RecordType.STEP_SUCCEEDED, '{"a":1}')]
        await store.create(instance("quiet")._replace(due_at=past - 1), log[:1])
        await store.create(instance("busy")._replace(due_at=past), log[:1])
        await store.append("busy", log[1:], SagaStatus.RUNNING)
        await store.send("busy", "first", "1")
        newest = await store.send("busy", "second", "2")
        claimed = await store.claim("w1", 10, 30.0)
        assert ids(claimed) == ["quiet", "busy"]
        quiet, busy = claimed
        assert (quiet.records, quiet.last_message) == (log[:1], 0)
        assert (busy.records, busy.last_message) == (log, newest.id)
        assert busy.instance.lease_owner == "w1"
        assert busy == await store.load("busy")

    async def test_a_claimed_pending_instance_is_running(self, store: Store) -> None:
        """Its driver's first record says so; the claim says it first, so that record need
        not change the instance again. Its log is untouched."""
        log = [started()]
        await store.create(instance("fresh")._replace(due_at=time.time() - 1), log)
        (claimed,) = await store.claim("w1", 1, 30.0)
        assert claimed.instance.status is SagaStatus.RUNNING
        assert claimed.records == log
        stored = await store.load("fresh")
        assert stored is not None and stored.instance.status is SagaStatus.RUNNING

    async def test_a_claim_records_a_fresh_instances_first_call_where_it_may(
        self, store: Store
    ) -> None:
        """Only where the driver's first record would be that very call: a log holding
        ``saga_started`` alone, beginning as the call says, and an empty inbox."""
        due = instance("due")._replace(due_at=time.time() - 1)
        for saga_id, version in [
            ("fresh", 1),
            ("messaged", 1),
            ("started", 1),
            ("other-definition", 2),
            ("not-asked-for", 3),
        ]:
            await store.create(due._replace(id=saga_id, version=version), [started()])
        await store.send("messaged", "sagakit.cancel", "{}")
        await store.append("started", [step_record(1)], SagaStatus.RUNNING)
        head = '{"name":"contract","version":1,"steps":[],"deadline_at":null,"input":'
        call = FirstCall(head, "charge", '{"holder":"w1"}')
        calls = {"contract@1": call, "contract@2": call._replace(started='{"name":"other"')}
        before = time.time()
        claimed = {s.instance.id: s for s in await store.claim("w1", 10, 30.0, first_calls=calls)}
        assert len(claimed) == 5
        first = claimed["fresh"].records[1]
        assert (first.seq, first.type, first.step, first.attempt, first.data) == (
            1,
            RecordType.STEP_STARTED,
            "charge",
            1,
            '{"holder":"w1"}',
        )
        assert before <= first.at <= time.time()
        for saga_id, records in [
            ("fresh", 2),
            ("messaged", 1),
            ("started", 2),
            ("other-definition", 1),
            ("not-asked-for", 1),
        ]:
            assert len(claimed[saga_id].records) == records, saga_id
            assert claimed[saga_id] == await store.load(saga_id), saga_id
        with pytest.raises(ConcurrentUpdateError):
            await store.append("fresh", [step_record(1)], SagaStatus.RUNNING)
        await store.append("fresh", [step_record(2, RecordType.STEP_SUCCEEDED)], SagaStatus.RUNNING)

    async def test_claim_respects_the_limit(self, store: Store) -> None:
        for i in range(5):
            await store.create(instance(f"d{i}")._replace(due_at=time.time() - 10 + i), [started()])
        assert ids(await store.claim("w1", 2, 30.0)) == ["d0", "d1"]

    async def test_concurrent_claims_never_share_an_instance(self, store: Store) -> None:
        past = time.time() - 1
        for i in range(40):
            await store.create(instance(f"c{i}")._replace(due_at=past), [started()])
        batches = await asyncio.gather(*(store.claim(f"w{i}", 7, 30.0) for i in range(8)))
        taken = [saga_id for batch in batches for saga_id in ids(batch)]
        assert sorted(taken) == sorted(f"c{i}" for i in range(40))

    async def test_a_lapsed_lease_makes_the_instance_due_for_others(self, store: Store) -> None:
        await store.create(instance("x")._replace(due_at=time.time() - 1), [started()])
        assert ids(await store.claim("dead", 1, 0.0)) == ["x"]  # a lease that lapses at once
        assert ids(await store.claim("alive", 1, 30.0)) == ["x"]
        assert await store.renew("dead", ["x"], 30.0) == []
        assert await store.renew("alive", ["x"], 30.0) == ["x"]
        loaded = await store.load("x")
        assert loaded is not None and loaded.instance.lease_owner == "alive"

    async def test_release_sets_when_the_instance_is_due_again(self, store: Store) -> None:
        await store.create(instance("r")._replace(due_at=time.time() - 1), [started()])
        assert ids(await store.claim("w1", 1, 30.0)) == ["r"]
        await store.release("w1", "r", time.time() + 60)
        assert ids(await store.claim("w2", 1, 30.0)) == []
        assert await store.acquire("w2", "r", 30.0)
        await store.release("w2", "r", time.time() - 1)
        assert ids(await store.claim("w3", 1, 30.0)) == ["r"]
        await store.release("someone-else", "r", None)  # not the holder: no effect
        loaded = await store.load("r")
        assert loaded is not None and loaded.instance.lease_owner == "w3"

    async def test_a_message_sent_while_held_survives_the_release(self, store: Store) -> None:
        await store.create(instance("h")._replace(due_at=time.time() - 1), [started()])
        assert ids(await store.claim("w1", 1, 30.0)) == ["h"]
        await store.send("h", "stock_confirmed", "true")  # while w1 holds it
        await store.release("w1", "h", None)  # w1 goes to wait for a message
        assert ids(await store.claim("w2", 1, 30.0)) == ["h"]  # due now: the message is there

    async def test_acquire_takes_only_a_free_instance_of_any_status(self, store: Store) -> None:
        await store.create(instance("t", SagaStatus.NEEDS_ATTENTION), [started()])
        assert await store.acquire("op", "t", 30.0)
        assert not await store.acquire("other", "t", 30.0)
        assert await store.acquire("op", "t", 30.0)  # its own lease again
        assert not await store.acquire("op", "missing", 30.0)

    async def test_a_terminal_append_releases_the_lease(self, store: Store) -> None:
        await store.create(instance("f")._replace(due_at=time.time() - 1), [started()])
        assert ids(await store.claim("w1", 1, 30.0)) == ["f"]
        await store.append("f", [step_record(1, RecordType.SAGA_COMPLETED)], SagaStatus.COMPLETED)
        loaded = await store.load("f")
        assert loaded is not None
        assert (loaded.instance.lease_owner, loaded.instance.due_at) == (None, None)
        assert ids(await store.claim("w2", 1, 30.0, due_only=False)) == []

    async def test_send_queues_messages_and_wakes_the_instance(self, store: Store) -> None:
        await store.create(instance("m"), [started()])
        first = await store.send("m", "refund_settled", '{"ok":true}')
        second = await store.send("m", "sagakit.cancel", '{"by":"ops"}')
        assert second.id > first.id
        assert [(m.name, m.payload) for m in await store.messages("m")] == [
            ("refund_settled", '{"ok":true}'),
            ("sagakit.cancel", '{"by":"ops"}'),
        ]
        assert [m.name for m in await store.messages("m", after=first.id)] == ["sagakit.cancel"]
        assert ids(await store.claim("w1", 1, 30.0)) == ["m"]
        with pytest.raises(UnknownSagaError):
            await store.send("ghost", "x", "null")

    async def test_a_watch_is_woken_by_a_message_and_by_a_release(self, store: Store) -> None:
        """Two instances, so that a late notice of the message cannot pass for the release's."""
        await store.create(instance("sent"), [started()])
        await store.create(instance("held")._replace(due_at=time.time() - 1), [started()])
        assert ids(await store.claim("w1", 1, 30.0)) == ["held"]
        async with store.watch("sent") as watch:
            await store.send("sent", "go", "null")
            await woken(watch)
        async with store.watch("held") as watch:
            await store.release("w1", "held", None)
            await woken(watch)

    async def test_new_due_work_wakes_whoever_watches_any_instance(self, store: Store) -> None:
        async with store.watch(ANY_INSTANCE) as work:
            await store.create(instance("n")._replace(due_at=time.time()), [started()])
            await woken(work)
        async with store.watch(ANY_INSTANCE) as work:
            await store.send("n", "wake", "null")
            await woken(work)
