"""``sagakit demo``: four orders that between them walk every path of the order saga.

1. completes: the confirmation e-mail fails once and is retried after the pivot;
2. fails at inventory with 2 of 3 units in stock: the partial reservation is released, the
   points are credited back and the payment refunded;
3. is rejected at the pivot (fraud hold) after a same-day courier already collected the
   parcel: the shipment cannot be cancelled, so the saga ends ``needs_attention``, having
   still undone everything else;
4. has its card declined: compensated, with nothing to undo.

Each saga's timeline is printed, then the services are asked whether what should have
happened did (the service databases, not the saga log, are the evidence). Back-offs are tens
of milliseconds so the whole demo takes about a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from sagakit._retry import Retry
from sagakit._timeline import render_timeline, status_text
from sagakit.demo._saga import build_order_saga, order_input
from sagakit.demo._services import OrderServices, open_services
from sagakit.log import SagaStatus
from sagakit.orchestration import Engine, SagaResult
from sagakit.store import open_store

DEMO_EMAIL_RETRY = Retry(attempts=None, backoff=0.02, max_backoff=0.1)
DEMO_COMPENSATION_RETRY = Retry(attempts=3, backoff=0.02, max_backoff=0.1)
POINTS = 1000
"""Every demo customer starts with this many points."""

Check = tuple[str, bool]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One demo order: what it is, what the saga should end as, and how to verify it."""

    title: str
    order: dict[str, Any]
    expect: SagaStatus
    verify: Callable[[OrderServices, dict[str, Any], SagaResult], list[Check]]


def _verify_completed(
    services: OrderServices, order: dict[str, Any], result: SagaResult
) -> list[Check]:
    order_id, mail = order["order_id"], services.email
    key = f"{result.saga_id}:send_confirmation_email:action"
    return [
        ("order confirmed", services.orders.status(order_id) == "confirmed"),
        ("card charged once", services.payments.net_charged(order_id) == order["total_cents"]),
        ("e-mail sent once, on the 2nd try", len(mail.sent(order_id)) == 1 == mail.calls(key) - 1),
        ("points debited", services.loyalty.points(order["customer_id"]) == POINTS - 200),
    ]


def _verify_undone(services: OrderServices, order: dict[str, Any], _: SagaResult) -> list[Check]:
    return [
        ("every effect undone", services.undone(order["order_id"])),
        ("points restored", services.loyalty.points(order["customer_id"]) == POINTS),
        ("stock back to 2 GLOBE", services.inventory.available("GLOBE") == 2),
    ]


def _verify_attention(
    services: OrderServices, order: dict[str, Any], result: SagaResult
) -> list[Check]:
    left = services.outstanding(order["order_id"])
    return [
        ("only the shipment is left", len(left) == 1 and left[0].startswith("shipping:")),
        ("create_shipment named", result.failed_compensations == ("create_shipment",)),
        ("payment refunded", services.payments.net_charged(order["order_id"]) == 0),
        ("points restored", services.loyalty.points(order["customer_id"]) == POINTS),
    ]


def _verify_declined(services: OrderServices, order: dict[str, Any], _: SagaResult) -> list[Check]:
    order_id = order["order_id"]
    return [
        ("nothing charged", services.payments.payments(order_id) == []),
        ("no later service called", services.loyalty.debits(order_id) == []),
    ]


SCENARIOS = (
    Scenario(
        "completes; the confirmation e-mail fails once and is retried",
        order_input("A-1001", "ada"),
        SagaStatus.COMPLETED,
        _verify_completed,
    ),
    Scenario(
        "only 2 of 3 globes in stock: partial reservation released, points and payment back",
        order_input("A-1002", "bob", items=[{"sku": "GLOBE", "qty": 3}]),
        SagaStatus.COMPENSATED,
        _verify_undone,
    ),
    Scenario(
        "fraud hold at the pivot after a same-day courier took the parcel: needs attention",
        order_input("A-1003", "cy", shipping="same_day"),
        SagaStatus.NEEDS_ATTENTION,
        _verify_attention,
    ),
    Scenario(
        "card declined: compensated, with nothing to undo",
        order_input("A-1004", "dee", card="tok_chargeDeclined"),
        SagaStatus.COMPENSATED,
        _verify_declined,
    ),
)


def _seed(services: OrderServices) -> None:
    """The world the scenarios need: stock, points, a stolen card and a fraud hold."""
    services.inventory.add_stock("LAMP", 10)
    services.inventory.add_stock("GLOBE", 2)
    for customer in ("ada", "bob", "cy", "dee"):
        services.loyalty.grant(customer, POINTS, date.today() + timedelta(days=90))
    services.payments.decline("tok_chargeDeclined")
    services.orders.hold("A-1003", "held for fraud review")


async def run_demo(db_url: str, console: Console) -> int:
    """Run every scenario on the saga log at ``db_url``; 0 if each ended as expected."""
    store = await open_store(db_url)
    try:
        with open_services(email_fail_first=1) as services:
            _seed(services)
            saga = build_order_saga(
                services,
                email_retry=DEMO_EMAIL_RETRY,
                compensation_retry=DEMO_COMPENSATION_RETRY,
            )
            engine = Engine(store, [saga])
            run = uuid.uuid4().hex[:6]  # fresh saga ids, so a reused database does not clash
            outcomes = []
            for number, scenario in enumerate(SCENARIOS, 1):
                saga_id = f"{scenario.order['order_id']}-{run}"
                result = await engine.run(saga, scenario.order, saga_id=saga_id)
                console.rule(f"[bold]{number}. {scenario.title}")
                console.print(render_timeline(await engine.status(saga_id)))
                checks = scenario.verify(services, scenario.order, result)
                _print_checks(console, checks)
                outcomes.append((scenario, result, checks))
    finally:
        await store.close()
    return _summary(console, outcomes)


def _print_checks(console: Console, checks: list[Check]) -> None:
    for text, ok in checks:
        mark = "[green]ok[/]  " if ok else "[bold red]FAIL[/]"
        console.print(f"  {mark} {text}")
    console.print()


def _summary(console: Console, outcomes: list[tuple[Scenario, SagaResult, list[Check]]]) -> int:
    table = Table(title="summary", title_justify="left")
    table.add_column("saga")
    table.add_column("expected")
    table.add_column("got")
    table.add_column("checks", justify="right")
    failures = 0
    for scenario, result, checks in outcomes:
        passed = sum(ok for _, ok in checks)
        good = result.status is scenario.expect and passed == len(checks)
        failures += not good
        table.add_row(
            result.saga_id,
            status_text(scenario.expect),
            status_text(result.status),
            f"{passed}/{len(checks)}",
        )
    console.print(table)
    if failures:
        console.print(f"[bold red]{failures} scenario(s) did not end as expected[/]")
        return 1
    console.print("[bold green]every scenario ended as expected[/]")
    return 0
