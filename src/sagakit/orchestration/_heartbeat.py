"""A worker's reports of itself to the saga log, while it runs: who it is, which saga
versions and queues it serves. ``sagakit versions`` reads them to say whether a version
still has a live worker, which is what a rolling deploy waits on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Collection

from sagakit.orchestration._background import Complaint, beside
from sagakit.store import Store, WorkerInfo
from sagakit.store._fleet import HEARTBEAT

logger = logging.getLogger("sagakit.orchestration")


@contextlib.asynccontextmanager
async def reporting(
    store: Store, owner: str, sagas: Collection[str], queues: Collection[str]
) -> AsyncIterator[None]:
    """Report at once, then every :data:`HEARTBEAT` seconds, and retire on the way out.

    A report that fails (the database is away) is logged and tried again next time: being
    unseen for a while must never stop a worker from driving sagas.
    """
    started = time.time()
    info = WorkerInfo(
        owner, socket.gethostname(), os.getpid(), tuple(sorted(sagas)), tuple(sorted(queues)),
        started, started,
    )  # fmt: skip
    complaint = Complaint(logger, f"worker {owner}: reporting itself")
    await _report(store, info, complaint)
    try:
        async with beside(_keep_reporting(store, info, complaint)):
            yield
    finally:
        with contextlib.suppress(Exception):
            await store.retire(owner)


async def _keep_reporting(store: Store, info: WorkerInfo, complaint: Complaint) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT)  # a period, not a wait for something
        await _report(store, info._replace(seen_at=time.time()), complaint)


async def _report(store: Store, info: WorkerInfo, complaint: Complaint) -> None:
    try:
        await store.beat(info)
    except Exception as error:
        complaint.failed(error)
    else:
        complaint.worked()
