"""One ticket service as a process of its own: ``python ticket_service_process.py payments``.

The broker's URL comes from ``SAGAKIT_BROKER``, not the command line: a URL may carry a
password, and ``ps`` shows every process's arguments to every user. SIGTERM or SIGINT
stops the service cleanly: the handler running finishes and is acknowledged, events fetched
but not handled go back to the broker, the relay stops. Without ``SAGAKIT_BROKER`` it uses
``memory://``, which no other process can reach, so it stops as soon as it has subscribed:
a check of the wiring.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from sagakit import Broker, Service, open_broker

from ticket_sale import payment_service, seat_service, ticket_service

SERVICES: dict[str, Callable[[Broker], Service]] = {
    "seats": seat_service,
    "payments": payment_service,
    "tickets": ticket_service,
}


# --8<-- [start:process]
async def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "payments"
    url = os.environ.get("SAGAKIT_BROKER")
    broker = await open_broker(url or "memory://")  # retried, then BrokerConnectionError
    service = SERVICES[name](broker)  # its database is a file in the current directory
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(service.run(stop))
    ready = asyncio.create_task(service.ready.wait())  # or a signal came first
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if service.ready.is_set():  # subscribed: events published from now on reach it
        print("ready", name, flush=True)
    if url is None:
        stop.set()
    await running
    await service.close()
    await broker.close()
    print("stopped", name, "after handling", service.handled, "event(s)")


# --8<-- [end:process]

if __name__ == "__main__":
    asyncio.run(main())
