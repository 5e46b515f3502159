"""The order saga over its fake services: every path ends where it should, crashes included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from sagakit import Engine, MemoryStore, Retry, Saga, SagaStatus, idempotency_key
from sagakit.demo import OrderServices, build_order_saga, open_services

FAST = Retry(attempts=None, backoff=0.001, max_backoff=0.01)


class Crash(BaseException):
    """The process dies: the engine cannot catch it, so the log stops where a kill would."""


@pytest.fixture
def services() -> Iterator[OrderServices]:
    with open_services(email_fail_first=1) as services:
        services.inventory.add_stock("LAMP", 10)
        services.inventory.add_stock("GLOBE", 2)
        services.loyalty.grant("ada", 1000, date.today() + timedelta(days=30))
        yield services


@pytest.fixture
def saga(services: OrderServices) -> Saga:
    return build_order_saga(services, email_retry=FAST, compensation_retry=FAST)


def order(**extra: Any) -> dict[str, Any]:
    return {
        "order_id": "A-1",
        "customer_id": "ada",
        "email": "ada@example.com",
        "card": "tok_visa",
        "total_cents": 4990,
        "loyalty_points": 300,
        "items": [{"sku": "LAMP", "qty": 2}],
        "address": "1 Loop Rd",
        **extra,
    }


def crash_after(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` commits its effect, then the process dies before the engine records it."""

    def call(*args: Any, **kwargs: Any) -> Any:
        method(*args, **kwargs)
        raise Crash

    return call


async def test_an_order_completes_and_its_e_mail_is_retried(
    services: OrderServices, saga: Saga
) -> None:
    result = await Engine(MemoryStore(), [saga]).run(saga, order(), saga_id="s")

    assert result.status is SagaStatus.COMPLETED
    assert services.orders.status("A-1") == "confirmed"
    assert services.email.calls(idempotency_key("s", "send_confirmation_email")) == 2
    assert len(services.email.sent("A-1")) == 1
    assert services.loyalty.points("ada") == 700
    assert services.inventory.held("A-1") == {"LAMP": 2}


async def test_partial_stock_compensates_everything_including_the_partial_reservation(
    services: OrderServices, saga: Saga
) -> None:
    items = [{"sku": "LAMP", "qty": 1}, {"sku": "GLOBE", "qty": 3}]

    result = await Engine(MemoryStore(), [saga]).run(saga, order(items=items), saga_id="s")

    assert result.status is SagaStatus.COMPENSATED
    assert "short of 1 GLOBE" in (result.reason or "")
    assert services.undone("A-1")
    assert services.inventory.available("GLOBE") == 2
    assert services.loyalty.points("ada") == 1000


async def test_a_parcel_already_picked_up_leaves_the_saga_needing_attention(
    services: OrderServices, saga: Saga
) -> None:
    services.orders.hold("A-1", "fraud review")

    result = await Engine(MemoryStore(), [saga]).run(saga, order(shipping="same_day"), saga_id="s")

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert result.failed_compensations == ("create_shipment",)
    (left,) = services.outstanding("A-1")
    assert left.startswith("shipping:")
    assert services.payments.net_charged("A-1") == 0


async def test_a_crash_after_the_charge_commits_does_not_charge_twice(
    services: OrderServices, saga: Saga, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    monkeypatch.setattr(services.payments, "charge", crash_after(services.payments.charge))
    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, order(), saga_id="s")
    monkeypatch.undo()

    (result,) = await Engine(store, [saga]).resume()

    key = idempotency_key("s", "charge_payment")
    assert result.status is SagaStatus.COMPLETED
    assert (services.payments.calls(key), services.payments.effects_applied(key)) == (2, 1)
    assert services.payments.net_charged("A-1") == 4990


async def test_a_crash_after_a_refund_commits_does_not_refund_twice(
    services: OrderServices, saga: Saga, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    monkeypatch.setattr(services.payments, "refund", crash_after(services.payments.refund))
    with pytest.raises(Crash):
        await Engine(store, [saga]).run(
            saga, order(items=[{"sku": "GLOBE", "qty": 3}]), saga_id="s"
        )
    monkeypatch.undo()

    (result,) = await Engine(store, [saga]).resume()

    key = idempotency_key("s", "charge_payment", "compensation")
    assert result.status is SagaStatus.COMPENSATED
    assert (services.payments.calls(key), services.payments.effects_applied(key)) == (2, 1)
    assert services.undone("A-1")
