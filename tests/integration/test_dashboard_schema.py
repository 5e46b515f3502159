"""The dashboard's JSON API keeps its OpenAPI schema: schemathesis generates requests for
every operation of ``/openapi.json`` (valid ones and invalid ones, with the token and
without), sends them to the app in this process (ASGI), and checks each answer: never a
server error, and status, content type, headers and body all as the schema says.

The saga log is real SQLite, filled by the order demo and a shop whose e-mail fails for
good, so reads find sagas and actions on ``shop-1`` can succeed as well as be refused.
Examples are few and derandomized: the run is the same each time, and short.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rich.console import Console
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sagakit import Engine, Retry, Saga, StepContext, open_store
from sagakit.dashboard import create_app
from sagakit.demo import run_demo

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]
TOKEN = "schema-test-token"
EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = {
    "GET /api/sagas",
    "GET /api/sagas/{saga_id}",
    "GET /api/counts",
    "GET /api/activity",
    "POST /api/sagas/{saga_id}/retry",
    "POST /api/sagas/{saga_id}/skip",
    "POST /api/sagas/{saga_id}/resolve",
    "POST /api/sagas/{saga_id}/cancel",
    "POST /api/sagas/{saga_id}/signal",
}


def shop_saga() -> Saga:
    saga = Saga("shop", 1)

    @saga.pivot()
    async def ship(ctx: StepContext) -> dict[str, str]:
        return {"parcel": f"parcel-{ctx.input['order']}"}

    @saga.retriable(retry=Retry(attempts=1, backoff=0, jitter=0))
    async def email(ctx: StepContext) -> None:
        raise RuntimeError("the mail server is down")

    return saga


async def fill(url: str) -> None:
    assert await run_demo(url, Console(file=io.StringIO())) == 0
    store = await open_store(url)
    try:
        shop = shop_saga()
        engine = Engine(store, [shop], hand_back=True)
        for n in (1, 2):
            await engine.run(shop, {"order": n}, saga_id=f"shop-{n}")
    finally:
        await store.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> BaseSchema:
    """The schema the app serves, loaded from it; its lifespan opens the log (once)."""
    path: Path = tmp_path_factory.mktemp("schema") / "sagas.db"
    asyncio.run(fill(f"sqlite:///{path}"))
    app = create_app(f"sqlite:///{path}", token=TOKEN)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema: BaseSchema) -> list[Operation]:
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err fails the test here
        found.append(operation)
    return found


def test_the_schema_has_every_api_operation_and_no_page(api: BaseSchema) -> None:
    assert {f"{op.method.upper()} {op.path}" for op in operations(api)} == OPERATIONS


def _exercise(operation: Operation, mode: GenerationMode, token: bool, known: bool) -> bool:
    """Send the operation its examples and check each answer; False if no invalid request
    can be made for it (nothing in it to get wrong)."""
    headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
    fixed = {"saga_id": "shop-1"} if known and "{saga_id}" in operation.path else None
    strategy: st.SearchStrategy[AnyCase] = operation.as_strategy(mode, path_parameters=fixed)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: AnyCase) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:
            return False
        raise
    return True


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
RUNS = [
    pytest.param(POSITIVE, True, True, id="valid-with-token-on-a-saga-that-exists"),
    pytest.param(POSITIVE, True, False, id="valid-with-token-any-id"),
    pytest.param(POSITIVE, False, True, id="valid-without-token"),
    pytest.param(NEGATIVE, True, False, id="invalid-with-token"),
    pytest.param(NEGATIVE, False, False, id="invalid-without-token"),
]
"""(generation mode, send the token, aim at ``shop-1``): an invalid request has nothing
left to make invalid once its only parameter, the saga id, is fixed."""


@pytest.mark.parametrize(("mode", "token", "known"), RUNS)
def test_every_operation_answers_as_its_schema_says(
    api: BaseSchema, mode: GenerationMode, token: bool, known: bool
) -> None:
    untried = {
        f"{op.method.upper()} {op.path}"
        for op in operations(api)
        if not _exercise(op, mode, token, known)
    }
    # A saga id can be any text: a request for one saga has nothing to get wrong.
    assert untried <= {"GET /api/sagas/{saga_id}"}
