"""The part of the store contract that listings rely on: every filter of
:class:`sagakit.operations.Query`, counts and cursor paging, on the store under test.

The logs are written record by record, as the engine and a tracker would leave them, so
that each condition is tested on exactly the state it names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sagakit.errors import InvalidArgumentError
from sagakit.log import Instance, Record, RecordType, SagaStatus
from sagakit.operations import Query, count, find
from sagakit.store import Count, FieldEquals, InstanceFilter, Store

T0 = 1_700_000_000.0
"""A fixed epoch for the instances' times, so bounds are exact."""


class Log:
    """An instance's log under construction."""

    def __init__(self, saga_id: str, name: str, at: float, input: Any, steps: list[str]) -> None:
        self.saga_id, self.name, self.at = saga_id, name, at
        started = {
            "name": name,
            "version": 1,
            "input": input,
            "deadline_at": None,
            "steps": [{"name": step, "kind": "compensatable"} for step in steps],
        }
        self.records = [Record(0, RecordType.SAGA_STARTED, at, data=json.dumps(started))]

    def add(
        self, kind: RecordType, step: str | None = None, data: Any = None, at: float = 0.0
    ) -> Log:
        attempt = 1 if kind in (RecordType.STEP_STARTED, RecordType.STEP_FAILED) else 0
        encoded = None if data is None else json.dumps(data)
        when = at or self.records[-1].at + 1
        self.records.append(Record(len(self.records), kind, when, step, attempt, encoded))
        return self


async def put(
    store: Store,
    log: Log,
    status: SagaStatus = SagaStatus.RUNNING,
    version: int = 1,
    **row: Any,
) -> None:
    """Store the log with its row (``row``: ``due_at``, ``lease_owner``, ``lease_expires``)."""
    first = log.records[0]
    instance = Instance(log.saga_id, log.name, version, status, first.at, log.records[-1].at, **row)
    assert await store.create(instance, log.records)


def failure(message: str, retry_at: float | None = None) -> dict[str, Any]:
    return {"error": {"type": "SmtpError", "message": message}, "retry_at": retry_at}


def ids(found: list[Instance]) -> list[str]:
    return [instance.id for instance in found]


class QueryContract:
    """Listings, filters, counts and pages; mixed into :class:`StoreContract`."""

    async def test_row_filters_each_narrow_the_listing(self, store: Store) -> None:
        await put(store, Log("a", "order", T0, {}, []), SagaStatus.COMPLETED)
        await put(store, Log("b", "order", T0 + 10, {}, []), SagaStatus.NEEDS_ATTENTION, 2)
        await put(store, Log("c", "trip", T0 + 20, {}, []), SagaStatus.NEEDS_ATTENTION)
        await put(store, Log("d", "trip", T0 + 30, {}, []), due_at=T0 + 100)
        await put(store, Log("e", "order", T0 + 40, {}, []), lease_owner="w1", lease_expires=T0)

        async def listed(rows: InstanceFilter) -> list[str]:
            return ids(await store.instances(rows))

        assert await listed(InstanceFilter()) == ["e", "d", "c", "b", "a"]
        attention = {SagaStatus.NEEDS_ATTENTION}
        assert await listed(InstanceFilter(statuses=attention)) == ["c", "b"]
        assert await listed(InstanceFilter(statuses=attention, names={"order"})) == ["b"]
        assert await listed(InstanceFilter(names={"order", "trip"}, versions={2})) == ["b"]
        both = {SagaStatus.COMPLETED, SagaStatus.RUNNING}
        assert await listed(InstanceFilter(statuses=both)) == ["e", "d", "a"]
        between = InstanceFilter(created_after=T0 + 10, created_before=T0 + 40)
        assert await listed(between) == ["d", "c"]
        assert await listed(InstanceFilter(updated_after=T0 + 30)) == ["e"]
        assert await listed(InstanceFilter(updated_before=T0 + 10)) == ["a"]
        assert await listed(InstanceFilter(due_before=T0 + 99)) == []
        assert await listed(InstanceFilter(due_before=T0 + 100)) == ["d"]
        assert await listed(InstanceFilter(lease_owner="w1")) == ["e"]
        assert await listed(InstanceFilter(names={"nobody"})) == []

    async def test_an_input_field_matches_by_its_text(self, store: Store) -> None:
        inputs = {
            "number": {"order_id": 42, "customer": {"id": "c-7"}, "vip": True},
            "string": {"order_id": "42", "customer": {"id": "c-8"}, "vip": False},
            "float": {"order_id": 4.5, "customer": None},
            "other": {"order_id": 43, "customer": {"id": {"nested": 1}}},
            "none": None,
        }
        for n, (saga_id, value) in enumerate(inputs.items()):
            await put(store, Log(saga_id, "order", T0 + n, value, []))

        async def matching(path: str, text: str) -> list[str]:
            rows = InstanceFilter(fields=[FieldEquals(tuple(path.split(".")), text)])
            return sorted(ids(await store.instances(rows)))

        assert await matching("order_id", "42") == ["number", "string"]
        assert await matching("order_id", "4.5") == ["float"]
        assert await matching("customer.id", "c-7") == ["number"]
        assert await matching("vip", "true") == ["number"]
        assert await matching("vip", "false") == ["string"]
        assert await matching("customer", "null") == []
        assert await matching("customer.id", '{"nested": 1}') == []
        assert await matching("missing", "42") == []
        assert await matching("order_id", "NaN") == await matching("order_id", "1e999") == []
        two = [FieldEquals(("order_id",), "42"), FieldEquals(("vip",), "false")]
        assert ids(await store.instances(InstanceFilter(fields=two))) == ["string"]

    async def test_a_result_field_matches_the_step_that_returned_it(self, store: Store) -> None:
        paid = Log("paid", "order", T0, {}, ["charge", "ship"])
        paid.add(RecordType.STEP_STARTED, "charge")
        paid.add(RecordType.STEP_SUCCEEDED, "charge", {"payment_id": "p-1", "cents": 1200})
        await put(store, paid)
        shipped = Log("shipped", "order", T0 + 1, {}, ["charge", "ship"])
        shipped.add(RecordType.STEP_STARTED, "ship")
        shipped.add(RecordType.STEP_SUCCEEDED, "ship", {"payment_id": "p-1"})
        await put(store, shipped)

        async def matching(step: str, path: str, text: str) -> list[str]:
            field = FieldEquals(tuple(path.split(".")), text, step=step)
            return ids(await store.instances(InstanceFilter(fields=[field])))

        assert await matching("charge", "payment_id", "p-1") == ["paid"]
        assert await matching("charge", "cents", "1200") == ["paid"]
        assert await matching("ship", "payment_id", "p-1") == ["shipped"]
        assert await matching("charge", "payment_id", "p-2") == []
        found = await find(store, Query(results={"charge.payment_id": "p-1"}))
        assert [view.instance.id for view in found.sagas] == ["paid"]

    async def test_pages_walk_every_match_once_newest_first(self, store: Store) -> None:
        for n in range(23):  # pairs share a creation time: the id breaks the tie
            await put(store, Log(f"s{n:02}", "order", T0 + n // 2, {}, []))
        seen: list[str] = []
        after = None
        for _ in range(10):
            page = await find(store, Query(names={"order"}), limit=5, after=after)
            seen += [view.instance.id for view in page.sagas]
            if page.next is None:
                break
            after = page.next
        assert seen == [f"s{n:02}" for n in reversed(range(23))]
        exact = await find(store, Query(), limit=23)
        assert len(exact.sagas) == 23 and exact.next is None

    async def test_counts_are_per_name_version_and_status(self, store: Store) -> None:
        statuses = [SagaStatus.COMPLETED, SagaStatus.COMPLETED, SagaStatus.NEEDS_ATTENTION]
        for n, status in enumerate(statuses):
            await put(store, Log(f"o{n}", "order", T0 + n, {}, []), status)
        await put(store, Log("o-v2", "order", T0 + 4, {}, []), SagaStatus.COMPLETED, 2)
        await put(store, Log("t0", "trip", T0 + 5, {}, []), SagaStatus.COMPLETED)
        assert await store.counts() == [
            Count("order", 1, SagaStatus.COMPLETED, 2),
            Count("order", 1, SagaStatus.NEEDS_ATTENTION, 1),
            Count("order", 2, SagaStatus.COMPLETED, 1),
            Count("trip", 1, SagaStatus.COMPLETED, 1),
        ]
        assert await count(store, Query(names={"order"}, statuses={SagaStatus.COMPLETED})) == [
            Count("order", 1, SagaStatus.COMPLETED, 2),
            Count("order", 2, SagaStatus.COMPLETED, 1),
        ]

    async def test_log_conditions_waiting_failing_error_and_stuck(self, store: Store) -> None:
        now = T0 + 10_000
        waits = Log("waits", "refund", T0, {}, ["settle"]).add(RecordType.STEP_STARTED, "settle")
        waits.add(RecordType.STEP_WAITING, "settle", _waiting("settled", now + 3600))
        await put(store, waits)
        overdue = Log("overdue", "refund", T0 + 1, {}, ["settle"])
        overdue.add(RecordType.STEP_STARTED, "settle")
        overdue.add(RecordType.STEP_WAITING, "settle", _waiting("settled", T0 + 100))
        await put(store, overdue)
        smtp = Log("smtp", "order", T0 + 2, {}, ["mail"]).add(RecordType.STEP_STARTED, "mail")
        for _ in range(3):  # failing over and over is no progress
            smtp.add(RecordType.STEP_FAILED, "mail", failure("SMTP down", now))
            smtp.add(RecordType.STEP_STARTED, "mail", at=now - 5)
            smtp.records[-1] = smtp.records[-1]._replace(attempt=2)
        await put(store, smtp)
        fresh = Log("fresh", "order", now - 60, {}, ["mail"]).add(RecordType.STEP_STARTED, "mail")
        await put(store, fresh)
        stopped = Log("stopped", "order", T0 + 3, {}, ["mail"])
        stopped.add(RecordType.STEP_FAILED, "mail", failure("mailbox full"))
        stopped.add(RecordType.SAGA_NEEDS_ATTENTION, None, {"reason": "no mail", "failed": []})
        await put(store, stopped, SagaStatus.NEEDS_ATTENTION)

        async def found(query: Query) -> list[str]:
            page = await find(store, query, now=now)
            return sorted(view.instance.id for view in page.sagas)

        assert await found(Query(waiting=True)) == ["overdue", "waits"]
        assert await found(Query(waiting_for="settled", created_after=T0)) == ["overdue"]
        assert await found(Query(waiting_for="other")) == []
        assert await found(Query(failing_step="mail")) == ["smtp", "stopped"]
        assert await found(Query(failing_step="mail", statuses={SagaStatus.RUNNING})) == ["smtp"]
        assert await found(Query(error="smtp DOWN")) == ["smtp"]
        assert await found(Query(error="no mail")) == ["stopped"]
        assert await found(Query(stuck_for=600)) == ["overdue", "smtp"]
        assert await found(Query(stuck_for=600, statuses={SagaStatus.COMPLETED})) == []
        stuck = [
            Count("order", 1, SagaStatus.RUNNING, 1),
            Count("refund", 1, SagaStatus.RUNNING, 1),
        ]
        assert await count(store, Query(stuck_for=600), now=now) == stuck

    async def test_a_cursor_that_no_listing_printed_is_refused(self, store: Store) -> None:
        with pytest.raises(InvalidArgumentError, match="invalid cursor"):
            await find(store, Query(), after="not-a-cursor")


def _waiting(signal: str, until: float) -> dict[str, Any]:
    return {"signal": signal, "until": until, "role": "action"}
