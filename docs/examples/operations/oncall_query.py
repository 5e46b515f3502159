"""The query API under `sagakit list`: find, count and page through sagas from Python.

It first makes the saga log the operations guide starts from, as oncall_morning.sh does with
the CLI (placing a start twice changes nothing, so it may run on that log too), then asks it
what an on-call engineer asks, and checks the answers.
"""

import asyncio
import os
from typing import NamedTuple

from sagakit import Client, DriveReport, SagaStatus, Store, open_store
from sagakit.operations import Query, SagaView, count, find
from sagakit.orchestration import resume_all
from sagakit.store import Count

from oncall_shop import place, sagas

DB = os.environ.get("SAGAKIT_DB", "sqlite:///shop.db")


def quietly(report: DriveReport) -> None:
    pass


async def make_morning(store: Store) -> None:
    """Yesterday's order goes through; today's are driven while the mail server is down."""
    client = Client(store)
    await place(client, "yesterday")
    await resume_all(store, sagas, report=quietly)
    await place(client, "today")
    os.environ["MAIL_SERVER_DOWN"] = "1"
    try:
        await resume_all(store, sagas, report=quietly, max_attempts=3)
    finally:
        del os.environ["MAIL_SERVER_DOWN"]


class OnCall(NamedTuple):
    first: list[SagaView]
    second: list[SagaView]
    failing_mail: list[Count]
    stuck: list[Count]
    settling: list[SagaView]


# --8<-- [start:query]
async def on_call(store: Store) -> OnCall:
    attention = Query(names={"order"}, statuses={SagaStatus.NEEDS_ATTENTION})
    page = await find(store, attention, limit=2)  # newest first
    for view in page.sagas:
        print(view.instance.id, view.state.reason, view.instance.lease_owner, sep="  ")
    more = await find(store, attention, limit=2, after=page.next)  # the page after it
    failing_mail = await count(store, Query(failing_step="send_confirmation_email"))
    stuck = await count(store, Query(stuck_for=600))  # ten minutes, in seconds
    settling = await find(store, Query(waiting_for="settled"))
    return OnCall(page.sagas, more.sagas, failing_mail, stuck, settling.sagas)


# --8<-- [end:query]


def ids(views: list[SagaView]) -> list[str]:
    return [view.instance.id for view in views]


async def main() -> None:
    store = await open_store(DB)
    try:
        await make_morning(store)
        found = await on_call(store)
    finally:
        await store.close()
    assert ids(found.first) == ["order-6", "order-5"]
    assert ids(found.second) == ["order-4", "order-3"]
    assert all(view.instance.lease_owner is None for view in found.first)  # nobody holds them
    assert found.failing_mail == [Count("order", 1, SagaStatus.NEEDS_ATTENTION, 3)]
    assert found.stuck == []  # the two running sagas wait for a message, on time
    [refund] = found.settling
    waiting = refund.waiting
    assert refund.instance.id == "refund-9" and waiting is not None
    assert waiting[0].name == "record_settlement" and waiting[1]["until"] is None


if __name__ == "__main__":
    asyncio.run(main())
