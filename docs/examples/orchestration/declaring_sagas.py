"""Three ways to declare one definition, and the retry policies each step kind gets when it
names none."""

import asyncio

from sagakit import CompensationContext, Saga, Step, StepContext, StepKind


async def cancel_order(ctx: CompensationContext) -> None:
    pass


async def create_order(ctx: StepContext) -> None:
    pass


async def charge_card(ctx: StepContext) -> None:
    pass


async def email_receipt(ctx: StepContext) -> None:
    pass


# --8<-- [start:decorators]
def decorated_saga() -> Saga:
    saga = Saga("place_order", version=3, deadline=600.0, queue="orders")

    @saga.step(compensate=cancel_order)  # the step's name is the function's
    async def create_order(ctx: StepContext) -> None:
        pass

    @saga.pivot()
    async def charge_card(ctx: StepContext) -> None:
        pass

    @saga.retriable(timeout=10.0)
    async def email_receipt(ctx: StepContext) -> None:
        pass

    return saga


# --8<-- [end:decorators]

# --8<-- [start:builder]
built = (
    Saga("place_order", version=3, deadline=600.0, queue="orders")
    .add(create_order, compensate=cancel_order)  # name: create_order
    .add(charge_card, kind="pivot")
    .add(email_receipt, kind=StepKind.RETRIABLE, timeout=10.0)
)
# --8<-- [end:builder]

# --8<-- [start:steps]
listed = Saga(
    "place_order",
    version=3,
    deadline=600.0,
    queue="orders",
    steps=[
        Step("create_order", create_order, compensation=cancel_order),
        Step("charge_card", charge_card, kind=StepKind.PIVOT),
        Step("email_receipt", email_receipt, kind=StepKind.RETRIABLE, timeout=10.0),
    ],
)
# --8<-- [end:steps]


async def main() -> None:
    decorated = decorated_saga()
    shapes = {
        saga_form: [(s.name, s.kind, s.timeout) for s in saga.steps]
        for saga_form, saga in (("decorated", decorated), ("built", built), ("listed", listed))
    }
    assert shapes["decorated"] == shapes["built"] == shapes["listed"]
    assert decorated.key == "place_order@3" and decorated.queue == "orders"
    for step in decorated.steps:
        policy, undo = step.retry_policy, step.compensation_retry
        print(f"{step.name:<18} {step.kind.value:<14} attempts={policy.attempts}", end="")
        print(f"  compensation attempts={undo.attempts if step.compensation else '-'}")


if __name__ == "__main__":
    asyncio.run(main())
