"""Each choreographed order service as a process of its own, talking to the others by broker.

::

    SAGAKIT_BROKER=redis://:password@127.0.0.1:6379/0 \\
        python -m sagakit.demo.processes payments --dir services/

The broker's URL comes from the environment (``SAGAKIT_BROKER``), not the command line: a
URL may carry a password, and every user of the machine can read a process's arguments
(``ps``), not its environment. ``--broker`` still works for a URL without one.

The process prints ``ready payments`` on stdout once it is subscribed (events published
from then on reach it), and stops cleanly on SIGTERM or SIGINT: running handlers finish,
unhandled events go back to the broker. Killed outright, it loses nothing either: its
unacknowledged events are redelivered, its inbox drops what it had already done, and its
relay publishes what its outbox still holds when it starts again. A broker that cannot be
reached is retried with back-off, and the log names its URL (without the password).

:class:`ServiceProcess` starts and stops such processes, for the demo and the fault tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sagakit._signals import stop_on_signals
from sagakit.bus import Broker, open_broker
from sagakit.choreography._relay import RELAY_RETRY
from sagakit.demo._choreography import SERVICES, STREAM, build_service
from sagakit.demo._service_process import BROKER_ENV, READY, ServiceProcess, ServiceProcessError
from sagakit.errors import BrokerConnectionError, SagakitError

__all__ = ["BROKER_ENV", "ServiceProcess", "ServiceProcessError", "main"]

logger = logging.getLogger("sagakit.demo")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sagakit.demo.processes",
        description="Run one choreographed order service until SIGTERM.",
    )
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--dir", required=True, help="directory of the services' databases")
    parser.add_argument(
        "--broker",
        default=os.environ.get(BROKER_ENV),
        help=f"redis://, nats:// or amqp:// URL (default: ${BROKER_ENV}, the place for a "
        "URL with a password)",
    )
    parser.add_argument("--stream", default=STREAM)
    parser.add_argument("--redeliver-after", type=float, default=30.0)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--relay-poll", type=float, default=0.5)
    args = parser.parse_args(argv)
    if not args.broker:
        parser.error(f"set {BROKER_ENV} to the broker's URL (or pass --broker)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {args.service}[%(process)d] %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("sagakit").setLevel(logging.INFO)  # the services' lifecycle too
    try:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        return asyncio.run(serve(args))
    except (SagakitError, OSError) as error:  # one line, as the CLI shows sagakit's errors
        print(f"error: {error}", file=sys.stderr)
        return 1


async def serve(args: argparse.Namespace) -> int:
    """Run the service until a signal; 0 on a clean stop."""
    stop = stop_on_signals()
    broker = await connect_retrying(args.broker, stop, redeliver_after=args.redeliver_after)
    if broker is None:
        return 0
    service = build_service(
        args.service,
        args.dir,
        broker,
        stream=args.stream,
        max_attempts=args.max_attempts,
        concurrency=args.concurrency,
        relay_poll=args.relay_poll,
    )
    try:
        running = asyncio.get_running_loop().create_task(service.run(stop))
        ready = asyncio.ensure_future(service.ready.wait())
        await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
        if service.ready.is_set():
            print(f"{READY} {service.name}", flush=True)
        ready.cancel()
        await running  # which logs what the service did
    finally:
        await service.close()
        await broker.close()
    return 0


async def connect_retrying(
    url: str, stop: asyncio.Event, *, redeliver_after: float = 30.0
) -> Broker | None:
    """Connect to ``url``, retrying with back-off until it answers; None if stopped first."""
    failures = 0
    while not stop.is_set():
        try:
            return await open_broker(url, redeliver_after=redeliver_after)
        except BrokerConnectionError as error:
            failures += 1
            delay = RELAY_RETRY.delay(failures)
            logger.error("%s; again in %.1fs", error, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
    return None


if __name__ == "__main__":
    raise SystemExit(main())
