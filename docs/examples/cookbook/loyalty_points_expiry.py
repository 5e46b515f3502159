"""Recipe: credit loyalty points back, minding their expiry.

Points come in lots that expire on different days. The debit records the lots it spent and
their expiry; the credit gives each lot back with its own expiry, or, if it lapsed in the
meantime, a goodwill voucher instead. "Today" is passed in, so tests choose the day.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sagakit import Client, CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store


@dataclass
class FakeLoyalty:
    lots: list[tuple[int, date]]  # (points, expiry) of one member, soonest expiry first
    debits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # all by key
    credits: dict[str, tuple[int, date]] = field(default_factory=dict)
    vouchers: dict[str, int] = field(default_factory=dict)

    def debit(self, key: str, points: int, today: date) -> list[dict[str, Any]]:
        if key not in self.debits:
            self.debits[key] = []
            for n, (have, expires) in enumerate(self.lots):
                take = min(have, points) if expires >= today else 0  # skip lapsed lots
                if take:
                    self.lots[n], points = (have - take, expires), points - take
                    self.debits[key].append({"points": take, "expires_on": str(expires)})
        return self.debits[key]

    def credit(self, key: str, points: int, expires: date) -> None:
        if key not in self.credits:
            self.credits[key] = (points, expires)
            self.lots = sorted([*self.lots, (points, expires)], key=lambda lot: lot[1])


def build_saga(loyalty: FakeLoyalty, today: Callable[[], date] = date.today) -> Saga:
    order = Saga("place_order")

    # --8<-- [start:points]
    async def credit_back(ctx: CompensationContext) -> None:
        for n, lot in enumerate(ctx.result["lots"]):  # one key per lot, derived from ours
            key, expires = f"{ctx.idempotency_key}:{n}", date.fromisoformat(lot["expires_on"])
            if expires >= today():
                loyalty.credit(key, lot["points"], expires)  # back with the expiry it had
            else:
                loyalty.vouchers.setdefault(key, lot["points"])  # lapsed: goodwill instead

    @order.step(compensate=credit_back)
    async def debit_points(ctx: StepContext) -> dict[str, Any]:
        return {"lots": loyalty.debit(ctx.idempotency_key, ctx.input["points"], today())}

    # --8<-- [end:points]

    @order.pivot()
    async def await_transfer(ctx: StepContext) -> Any:
        return await ctx.wait_for("transfer_received")  # the customer pays by bank transfer

    return order


async def main() -> None:
    store = await open_store("memory://")
    days = [date(2026, 3, 30)]  # the calendar: days[-1] is today
    loyalty = FakeLoyalty(lots=[(300, date(2026, 3, 31)), (400, date(2026, 12, 31))])
    order = build_saga(loyalty, today=lambda: days[-1])
    engine, client = Engine(store, [order], hand_back=True), Client(store)

    # --8<-- [start:story]
    await engine.run(order, {"points": 500}, saga_id="o-1")  # 300 of March 31, 200 of Dec 31
    await client.cancel("o-1", reason="unpaid")  # the same day: every lot is still good
    assert (await engine.resume_saga("o-1")).status is SagaStatus.COMPENSATED
    assert loyalty.credits == {
        "o-1:debit_points:compensation:0": (300, date(2026, 3, 31)),
        "o-1:debit_points:compensation:1": (200, date(2026, 12, 31)),
    }

    await engine.run(order, {"points": 500}, saga_id="o-2")  # the same two lots again
    days.append(days[-1] + timedelta(days=3))  # three days on, still no transfer
    await client.cancel("o-2", reason="unpaid after three days")
    assert (await engine.resume_saga("o-2")).status is SagaStatus.COMPENSATED
    assert loyalty.credits["o-2:debit_points:compensation:1"] == (200, date(2026, 12, 31))
    assert loyalty.vouchers == {"o-2:debit_points:compensation:0": 300}  # March's lapsed
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
