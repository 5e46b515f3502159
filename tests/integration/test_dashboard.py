"""The dashboard (``sagakit ui``) against real saga logs the engine wrote: the order demo's
four sagas, a shop whose confirmation e-mail fails for good after the pivot, and approvals
that wait for a message (one held by a worker, one never driven).

Requests go through httpx's ASGI transport to the app in this process, over a store the
test opened (so the test reads the very log the dashboard writes). Every refusal is
checked by comparing the saga's records, inbox and row before and after: a refused action
writes nothing.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from saga_logs import SagaLogs
from sagakit import (
    Client,
    CompensationContext,
    Engine,
    Retry,
    Saga,
    StepContext,
    Store,
    open_store,
)
from sagakit.dashboard import create_app
from sagakit.dashboard._live import changes
from sagakit.demo import run_demo
from sagakit.log import Instance, Message, Record
from sagakit.operations import Query, find

TOKEN = "s3cret-token-for-tests"
HOLDER = "worker-x:1:test"
SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
Snapshot = tuple[Instance, list[Record], list[Message]]


# --------------------------------------------------------------------------- the log


def shop_saga() -> Saga:
    saga = Saga("shop", 1)

    @saga.step(compensate=refund)
    async def charge(ctx: StepContext) -> dict[str, str]:
        return {"payment": f"p-{ctx.input['order']}"}

    @saga.pivot()
    async def ship(ctx: StepContext) -> dict[str, str]:
        return {"parcel": f"parcel-{ctx.input['order']}"}

    @saga.retriable(retry=Retry(attempts=2, backoff=0, jitter=0))
    async def email(ctx: StepContext) -> None:
        raise RuntimeError("the mail server is down")

    return saga


async def refund(ctx: CompensationContext) -> None:
    return None


def approval_saga() -> Saga:
    saga = Saga("approval", 1)

    @saga.step(compensate=release)
    async def hold(ctx: StepContext) -> Any:
        return await ctx.wait_for("approved", timeout=3600)

    @saga.pivot()
    async def charge(ctx: StepContext) -> None:
        return None

    return saga


async def release(ctx: CompensationContext) -> None:
    return None


async def fill(url: str) -> dict[str, str]:
    """The log every test starts from; returns the demo's saga ids by order id."""
    assert await run_demo(url, Console(file=io.StringIO())) == 0
    store = await open_store(url)
    try:
        shop, approval = shop_saga(), approval_saga()
        engine = Engine(store, [shop, approval], hand_back=True)
        for n in (1, 2, 3):
            done = await engine.run(shop, {"order": n}, saga_id=f"shop-{n}")
            assert done.status.value == "needs_attention"
        for n in (1, 2):
            parked = await engine.run(approval, {"ticket": n}, saga_id=f"approval-{n}")
            assert parked.status.value == "running"
        await Client(store).start(approval, {"ticket": 3}, saga_id="approval-3")
        assert await store.acquire(HOLDER, "approval-2", 3600)
        page = await find(store, Query(names={"place_order"}))
        return {view.state.input["order_id"]: view.state.id for view in page.sagas}
    finally:
        await store.close()


@dataclass(frozen=True)
class Log:
    directory: Path
    demo: dict[str, str]
    """The demo's saga ids by order id: A-1001 completed, A-1002 and A-1004 compensated,
    A-1003 needs attention."""

    def copy(self, target: Path) -> str:
        target.mkdir(parents=True, exist_ok=True)
        for file in self.directory.glob("sagas.db*"):
            shutil.copy(file, target / file.name)
        return f"sqlite:///{target / 'sagas.db'}"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    directory = tmp_path_factory.mktemp("dashboard")
    demo = asyncio.run(fill(f"sqlite:///{directory / 'sagas.db'}"))
    return Log(directory, demo)


@pytest.fixture
def url(log: Log, tmp_path: Path) -> str:
    """A copy of the log of its own for each test, so actions never leak between tests."""
    return log.copy(tmp_path / "log")


@asynccontextmanager
async def dashboard(url: str, **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    """The app over the log at ``url`` (token ``TOKEN`` unless told otherwise)."""
    store = await open_store(url, create=False)
    options.setdefault("token", TOKEN)
    app = create_app(store, **options)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, store
    finally:
        await store.close()


async def snapshot(store: Store, saga_id: str) -> Snapshot:
    stored = await store.load(saga_id)
    assert stored is not None
    return stored.instance, stored.records, await store.messages(saga_id)


async def log_in(client: httpx.AsyncClient, name: str = "ada") -> str:
    """Log in as ``name``; the CSRF token of the session's forms."""
    answer = await client.post("/login", data={"token": TOKEN, "operator": name, "next": "/"})
    assert answer.status_code == 303, answer.text
    return csrf_of((await client.get("/sagas/shop-1")).text)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', page)
    assert found is not None
    return html.unescape(found.group(1))


def hidden_fields(page: str) -> dict[str, str]:
    form = page[page.index('id="confirm-form"') :]
    pairs = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
    return {name: html.unescape(value) for name, value in pairs}


async def confirm(
    client: httpx.AsyncClient, store: Store, saga_id: str, action: str, form: dict[str, str]
) -> httpx.Response:
    """Post an action's form, check its confirmation step wrote nothing, and confirm it."""
    before = await snapshot(store, saga_id)
    asked = await client.post(f"/sagas/{saga_id}/actions/{action}", data=form)
    assert asked.status_code == 200, asked.text
    assert f"Confirm: {action}" in asked.text
    assert await snapshot(store, saga_id) == before
    return await client.post(f"/sagas/{saga_id}/actions/{action}", data=hidden_fields(asked.text))


def listed(page: str) -> list[str]:
    return [html.unescape(i) for i in re.findall(r'class="saga-link" href="/sagas/([^"]+)"', page)]


def one_line(answer: httpx.Response) -> str:
    """The refusal's message: a JSON detail, or the page's problem line."""
    if answer.headers["content-type"].startswith("application/json"):
        detail = answer.json()["detail"]
    else:
        found = re.search(r'id="problem"[^>]*>([^<]*)<', answer.text)
        assert found is not None, answer.text
        detail = html.unescape(found.group(1))
    assert isinstance(detail, str) and "\n" not in detail
    assert_no_traceback_of_ours(answer)
    return detail


def assert_no_traceback_of_ours(answer: httpx.Response) -> None:
    """No traceback of the dashboard itself (a saga page shows its steps' tracebacks)."""
    assert "sagakit/dashboard/" not in answer.text and "starlette/" not in answer.text


# --------------------------------------------------------------------------- pages


async def test_every_page_renders_and_says_what_the_log_holds(url: str, log: Log) -> None:
    async with dashboard(url) as (client, _):
        home = await client.get("/")
        sagas = await client.get("/sagas")
        queue = await client.get("/attention")
        login = await client.get("/login")
        pages = [
            await client.get(f"/sagas/{saga_id}") for saga_id in (*log.demo.values(), "shop-1")
        ]

    for page in [home, sagas, queue, login, *pages]:
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
    assert 'id="count-needs_attention">4<' in home.text
    assert 'id="count-total">10<' in home.text
    assert "place_order@1" in home.text and "shop@1" in home.text
    assert "<svg" in home.text and "st-needs_attention" in home.text  # the per-hour chart
    assert "nobody to drive it" in home.text  # approvals in flight, no live worker
    assert len(listed(sagas.text)) == 10
    assert sorted(listed(queue.text)) == sorted(["shop-1", "shop-2", "shop-3", log.demo["A-1003"]])
    assert "the mail server is down" in queue.text  # each one says why
    assert 'name="token"' in login.text and TOKEN not in login.text


async def test_the_saga_page_shows_attempts_waits_lease_and_the_flowchart(
    url: str, log: Log
) -> None:
    attention = log.demo["A-1003"]
    async with dashboard(url) as (client, _):
        order = (await client.get(f"/sagas/{attention}")).text
        shop = (await client.get("/sagas/shop-1")).text
        held = (await client.get("/sagas/approval-2")).text
        fragment = await client.get(f"/sagas/{attention}/live")

    assert 'id="saga-status">needs_attention<' in order
    assert "held for fraud review" in order and "not undone" in order
    assert f"{attention}:create_shipment:compensation" in order  # the idempotency key
    assert "CompensationImpossible" in order and "(final)" in order
    assert '<pre class="mermaid" id="graph">' in order
    assert "classDef compensation_failed" in order and "flowchart TD" in order
    assert "&#34;order_id&#34;: &#34;A-1003&#34;" in order  # the input, escaped
    assert (
        "<summary>traceback</summary>" in shop and "RuntimeError: the mail server is down" in shop
    )
    assert "&#34;payment&#34;: &#34;p-1&#34;" in shop  # a step's result
    assert " ms<" in shop  # each attempt's duration
    assert "waiting now" in held and "<code>approved</code>" in held
    assert f'id="lease">{HOLDER} until' in held
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'id="saga-status"' in fragment.text


async def test_stored_text_is_escaped_everywhere(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    hostile = "<script>alert(1)</script>"
    store = await open_store(url)
    try:
        await Client(store).start(approval_saga(), {"ticket": hostile}, saga_id='x<b>"1')
    finally:
        await store.close()
    async with dashboard(url) as (client, _):
        pages = [await client.get(path) for path in ("/sagas", "/sagas/x%3Cb%3E%221")]
    for page in pages:
        assert page.status_code == 200
        assert hostile not in page.text and "x<b>" not in page.text
    assert "&lt;script&gt;" in pages[1].text
    assert listed(pages[0].text) == ["x%3Cb%3E%221"]


async def test_a_sagas_secret_fields_are_masked_on_its_page_and_in_the_api(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    secret = "4111111111111111"
    saga = Saga("paid", redact=["card_number"])

    @saga.pivot()
    async def charge(ctx: StepContext) -> dict[str, str]:
        return {"card_number": ctx.input["card_number"]}

    store = await open_store(url)
    try:
        await Engine(store, [saga]).run(saga, {"card_number": secret}, saga_id="paid-1")
    finally:
        await store.close()
    async with dashboard(url) as (client, _):
        answers = [await client.get(path) for path in ("/sagas/paid-1", "/api/sagas/paid-1")]
    for answer in answers:
        assert answer.status_code == 200
        assert secret not in answer.text and "***" in answer.text
    assert answers[1].json()["input"] == {"card_number": "***"}


# --------------------------------------------------------------------------- filters

Expect = Callable[[dict[str, str]], set[str]]
SHOPS = {"shop-1", "shop-2", "shop-3"}
APPROVALS = {"approval-1", "approval-2", "approval-3"}
FILTERS: list[tuple[str, Expect]] = [
    ("status=needs_attention", lambda d: SHOPS | {d["A-1003"]}),
    ("status=pending,running", lambda d: APPROVALS),
    ("status=completed&status=compensated", lambda d: {d["A-1001"], d["A-1002"], d["A-1004"]}),
    ("name=shop", lambda d: SHOPS),
    ("name=approval&version=1", lambda d: APPROVALS),
    ("version=2", lambda d: set()),
    ("input=order_id=A-1003", lambda d: {d["A-1003"]}),
    ("input=ticket=2", lambda d: {"approval-2"}),
    ("result=charge.payment=p-2", lambda d: {"shop-2"}),
    ("waiting=true", lambda d: {"approval-1", "approval-2"}),
    ("waiting_for=approved", lambda d: {"approval-1", "approval-2"}),
    ("waiting_for=paid", lambda d: set()),
    ("failing_step=email", lambda d: SHOPS),
    ("failing_step=confirm_order", lambda d: {d["A-1003"]}),
    ("error=FRAUD", lambda d: {d["A-1003"]}),
    ("error=mail+server+is+down", lambda d: SHOPS),
    ("stuck=0s", lambda d: {"approval-3"}),
    ("stuck=1h", lambda d: set()),
    ("created_after=1d", lambda d: SHOPS | APPROVALS | set(d.values())),
    ("created_before=1d", lambda d: set()),
    ("created_after=now", lambda d: set()),
    ("updated_after=1h&name=approval", lambda d: APPROVALS),
    ("updated_before=2020-01-01T00:00", lambda d: set()),
    ("due_before=now", lambda d: {"approval-3"}),
    (f"held_by={HOLDER}", lambda d: {"approval-2"}),
    ("held_by=nobody", lambda d: set()),
    ("status=needs_attention&name=shop&error=down&failing_step=email", lambda d: SHOPS),
    ("name=&version=&input=&stuck=&created_after=", lambda d: SHOPS | APPROVALS | set(d.values())),
]


@pytest.mark.parametrize(("query", "expect"), FILTERS, ids=[q for q, _ in FILTERS])
async def test_every_filter_finds_what_it_says_in_the_api_and_the_list(
    url: str, log: Log, query: str, expect: Expect
) -> None:
    async with dashboard(url) as (client, _):
        api = await client.get(f"/api/sagas?{query}&limit=500")
        page = await client.get(f"/sagas?{query}&limit=500")
        counts = await client.get(f"/api/counts?{query}")

    assert api.status_code == page.status_code == counts.status_code == 200, api.text
    wanted = expect(log.demo)
    assert {saga["id"] for saga in api.json()["sagas"]} == wanted
    assert set(listed(page.text)) == wanted
    assert sum(row["total"] for row in counts.json()) == len(wanted)


async def test_pages_follow_the_cursor_to_the_end(url: str) -> None:
    seen: list[str] = []
    async with dashboard(url) as (client, _):
        after = ""
        while True:
            page = (await client.get(f"/api/sagas?limit=3&after={after}")).json()
            seen += [saga["id"] for saga in page["sagas"]]
            if page["next"] is None:
                break
            after = page["next"]
        first = await client.get("/sagas?limit=4&name=shop&name=approval")
        link = re.search(r'id="next-page" href="([^"]+)"', first.text)
        assert link is not None
        second = await client.get(html.unescape(link.group(1)))
    assert len(seen) == len(set(seen)) == 10
    assert len(listed(first.text)) == 4
    assert set(listed(first.text)) | set(listed(second.text)) == SHOPS | APPROVALS


BAD_QUERIES = [
    ("/api/sagas?status=bogus", "invalid status 'bogus'"),
    ("/api/sagas?version=one", "invalid version 'one'"),
    ("/api/sagas?stuck=forever", "invalid stuck 'forever'"),
    ("/api/sagas?created_after=yesterday", "invalid created_after 'yesterday'"),
    ("/api/sagas?input=order_id", "invalid input 'order_id'"),
    ("/api/sagas?result=payment=1", "invalid result 'payment'"),
    ("/api/sagas?after=not-a-cursor", "invalid cursor"),
    ("/api/sagas?limit=0", "invalid limit"),
    ("/api/sagas?waiting=perhaps", "invalid waiting"),
    ("/api/counts?due_before=soon", "invalid due_before 'soon'"),
    ("/api/activity?last=0", "invalid last"),
    ("/sagas?status=bogus", "invalid status 'bogus'"),
    ("/sagas?after=%00%ff", "invalid cursor"),
    ("/attention?limit=-1", "invalid limit"),
    ("/sagas?updated_before=12/01/2026", "invalid updated_before"),
]


@pytest.mark.parametrize(("path", "said"), BAD_QUERIES, ids=[p for p, _ in BAD_QUERIES])
async def test_a_bad_filter_is_422_with_one_line(url: str, path: str, said: str) -> None:
    async with dashboard(url) as (client, _):
        answer = await client.get(path)
    assert answer.status_code == 422
    assert said in one_line(answer)


UNKNOWN = [
    ("GET", "/sagas/no-such-saga"),
    ("GET", "/sagas/no-such-saga/live"),
    ("GET", "/sagas/no-such-saga/events"),
    ("GET", "/api/sagas/no-such-saga"),
    ("POST", "/api/sagas/no-such-saga/resolve"),
    ("POST", "/api/sagas/no-such-saga/signal"),
    ("GET", "/no/such/page"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN, ids=[p for _, p in UNKNOWN])
async def test_an_unknown_saga_or_page_is_404(url: str, method: str, path: str) -> None:
    body = {"note": "n", "name": "approved"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with dashboard(url) as (client, _):
        answer = await client.request(method, path, json=body, headers=headers)
    assert answer.status_code == 404
    one_line(answer)


async def test_garbage_never_gets_a_server_error(url: str) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with dashboard(url) as (client, store):
        csrf = await log_in(client)
        before = await snapshot(store, "shop-1")
        answers = [
            await client.get("/sagas/%00%01%02"),
            await client.get("/sagas?" + "status=" * 300),
            await client.get("/api/sagas?limit=99999999999999999999"),
            await client.get("/api/sagas?after=" + "A" * 5000),
            await client.get("/api/sagas?created_after=9999-12-31T23:59:59%2B99:00"),
            await client.get("/api/sagas?stuck=1" + "0" * 400 + "w"),
            await client.post("/api/sagas/shop-1/skip", content=b"{not json", headers=bearer),
            await client.post("/api/sagas/shop-1/skip", json=[1, 2], headers=bearer),
            await client.post("/api/sagas/shop-1/skip", json={"step": "email"}, headers=bearer),
            await client.post("/api/sagas/shop-1/resolve", json={"note": " "}, headers=bearer),
            await client.post("/api/sagas/shop-1/signal", json={"name": ""}, headers=bearer),
            await client.post(
                "/sagas/shop-1/actions/skip",
                data={"csrf": csrf, "step": "email", "note": "n", "result": "{oops"},
            ),
            await client.post("/sagas/shop-1/actions/explode", data={"csrf": csrf}),
            await client.post("/sagas/shop-1/actions/signal", data={"csrf": csrf, "name": ""}),
            await client.post("/login", content=b"\xff\xfe=\x00", headers={"content-type": "x"}),
            await client.get("/login?next=https://elsewhere.example/"),
        ]
        after = await snapshot(store, "shop-1")
    for answer in answers:
        assert answer.status_code < 500, (answer.request.url, answer.text)
        assert_no_traceback_of_ours(answer)
    assert [a.status_code for a in answers[6:14]] == [422] * 8
    assert 'name="next" value="/"' in answers[-1].text  # no redirect elsewhere
    assert after == before


# --------------------------------------------------------------------------- actions


async def test_each_action_from_the_page_is_recorded_with_who_and_why(url: str) -> None:
    async with dashboard(url) as (client, store):
        csrf = await log_in(client, "ada")
        resolved = await confirm(
            client, store, "shop-1", "resolve", {"csrf": csrf, "note": "mailed by hand"}
        )
        retried = await confirm(
            client, store, "shop-2", "retry", {"csrf": csrf, "step": "email", "note": "smtp back"}
        )
        skipped = await confirm(
            client,
            store,
            "shop-3",
            "skip",
            {"csrf": csrf, "step": "email", "result": '{"message": "m-9"}', "note": "outlook"},
        )
        cancelled = await confirm(
            client, store, "approval-1", "cancel", {"csrf": csrf, "note": "customer called"}
        )
        signalled = await confirm(
            client,
            store,
            "approval-3",
            "signal",
            {"csrf": csrf, "name": "approved", "payload": '{"by": "boss"}'},
        )
        page = (await client.get("/sagas/shop-3")).text
        records = {i: (await snapshot(store, i))[1] for i in ("shop-1", "shop-2", "shop-3")}
        cancel = (await snapshot(store, "approval-1"))[1]
        inbox = (await snapshot(store, "approval-3"))[2]

    for done, saga_id in [
        (resolved, "shop-1"),
        (retried, "shop-2"),
        (skipped, "shop-3"),
        (cancelled, "approval-1"),
        (signalled, "approval-3"),
    ]:
        assert done.status_code == 303
        assert done.headers["location"].startswith(f"/sagas/{saga_id}?done=")
    assert _last(records["shop-1"]) == (
        "operator_resolved",
        None,
        {"by": "ada", "note": "mailed by hand"},
    )
    assert _last(records["shop-2"]) == (
        "operator_retry",
        "email",
        {"by": "ada", "note": "smtp back"},
    )
    assert _last(records["shop-3"]) == (
        "operator_skipped",
        "email",
        {"by": "ada", "note": "outlook", "result": {"message": "m-9"}},
    )
    assert [r.type.value for r in cancel[-2:]] == ["cancel_requested", "saga_compensating"]
    assert json.loads(cancel[-2].data or "") == {"by": "ada", "reason": "customer called"}
    assert [(m.name, json.loads(m.payload)) for m in inbox] == [("approved", {"by": "boss"})]
    assert 'class="by">ada<' in page and 'class="why">outlook' in page  # the history


def _last(records: list[Record]) -> tuple[str, str | None, Any]:
    record = records[-1]
    return record.type.value, record.step, json.loads(record.data or "null")


async def test_each_action_through_the_api_needs_the_bearer_token(url: str) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with dashboard(url) as (client, store):
        answers = [
            await client.post(
                "/api/sagas/shop-1/resolve", json={"note": "by phone", "by": "bot"}, headers=bearer
            ),
            await client.post(
                "/api/sagas/shop-2/retry", json={"from_step": "email"}, headers=bearer
            ),
            await client.post(
                "/api/sagas/shop-3/skip",
                json={"step": "email", "result": [1], "note": "done", "by": "bot"},
                headers=bearer,
            ),
            await client.post("/api/sagas/approval-1/cancel", json={"reason": "r"}, headers=bearer),
            await client.post(
                "/api/sagas/approval-3/signal",
                json={"name": "approved", "payload": 7},
                headers=bearer,
            ),
        ]
        resolved = (await snapshot(store, "shop-1"))[1]
        retried = (await snapshot(store, "shop-2"))[1]

    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert [a.json()["status"] for a in answers] == [
        "completed",
        "running",
        "running",
        "compensating",
        "pending",
    ]
    assert answers[0].json() == {
        "saga_id": "shop-1",
        "action": "resolve",
        "outcome": "resolved",
        "status": "completed",
    }
    assert _last(resolved) == ("operator_resolved", None, {"by": "bot", "note": "by phone"})
    assert _last(retried) == ("operator_retry", "email", {"by": "dashboard", "note": ""})


async def test_an_action_that_does_not_fit_is_409_and_writes_nothing(url: str, log: Log) -> None:
    done = log.demo["A-1001"]
    async with dashboard(url) as (client, store):
        csrf = await log_in(client)
        before = await snapshot(store, done)
        page = await client.post(
            f"/sagas/{done}/actions/resolve", data={"csrf": csrf, "note": "n", "confirmed": "yes"}
        )
        api = await client.post(
            f"/api/sagas/{done}/cancel", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        after = await snapshot(store, done)
    assert page.status_code == api.status_code == 409
    assert "it is completed, not needs_attention" in one_line(page)
    assert "it is completed" in one_line(api)
    assert after == before


REFUSED = ["retry", "skip", "resolve", "cancel", "signal"]


@pytest.mark.parametrize("action", REFUSED)
async def test_without_a_session_or_its_csrf_token_an_action_is_403_and_writes_nothing(
    url: str, action: str
) -> None:
    form = {"note": "n", "step": "email", "name": "approved", "confirmed": "yes"}
    async with dashboard(url) as (client, store):
        before = await snapshot(store, "shop-1")
        anonymous = await client.post(f"/sagas/shop-1/actions/{action}", data=form)
        await log_in(client)
        no_csrf = await client.post(f"/sagas/shop-1/actions/{action}", data=form)
        bad_csrf = await client.post(
            f"/sagas/shop-1/actions/{action}", data={**form, "csrf": "forged"}
        )
        client.cookies.set("sagakit_session", "forged.cookie")
        forged = await client.post(f"/sagas/shop-1/actions/{action}", data=form)
        after = await snapshot(store, "shop-1")
    assert [a.status_code for a in (anonymous, no_csrf, bad_csrf, forged)] == [403] * 4
    assert "log in" in one_line(anonymous) and "log in" in one_line(forged)
    assert "CSRF" in one_line(no_csrf) and "CSRF" in one_line(bad_csrf)
    assert after == before


@pytest.mark.parametrize("action", REFUSED)
async def test_without_the_bearer_token_an_api_action_is_403_and_writes_nothing(
    url: str, action: str
) -> None:
    body = {"note": "n", "step": "email", "name": "approved", "reason": "r"}
    async with dashboard(url) as (client, store):
        await log_in(client)  # a browser's session is no token for the API
        before = await snapshot(store, "shop-1")
        answers = [
            await client.post(f"/api/sagas/shop-1/{action}", json=body, headers=headers)
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
            )
        ]
        answers.append(await client.post(f"/api/sagas/shop-1/{action}", content=b"{not json"))
        after = await snapshot(store, "shop-1")
    assert [a.status_code for a in answers] == [403] * 5
    assert all("Authorization: Bearer" in one_line(a) for a in answers)
    assert after == before


@pytest.mark.parametrize(
    "options", [{"read_only": True}, {"token": None}], ids=["read-only", "no-token"]
)
async def test_a_read_only_dashboard_refuses_every_action_even_with_the_token(
    url: str, options: dict[str, Any]
) -> None:
    async with dashboard(url, **options) as (client, store):
        before = await snapshot(store, "shop-1")
        login = await client.post("/login", data={"token": TOKEN, "operator": "ada"})
        page = await client.get("/sagas/shop-1")
        answers = [
            await client.post(
                f"/api/sagas/shop-1/{action}",
                json={"note": "n", "step": "email", "name": "x"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            for action in REFUSED
        ]
        form = await client.post("/sagas/shop-1/actions/resolve", data={"note": "n"})
        after = await snapshot(store, "shop-1")
    assert login.status_code == 403 and "sagakit_session" not in login.headers.get("set-cookie", "")
    assert "read-only" in page.text and 'id="resolve-form"' not in page.text
    assert [a.status_code for a in answers] == [403] * 5
    assert all("read-only" in one_line(a) for a in answers)
    assert form.status_code == 403
    assert after == before


async def test_the_session_cookie_and_the_headers_keep_the_browser_safe(url: str) -> None:
    async with dashboard(url) as (client, _):
        wrong = await client.post("/login", data={"token": "guess", "operator": "eve"})
        right = await client.post(
            "/login", data={"token": TOKEN, "operator": "ada", "next": "//evil.example/x"}
        )
        page = await client.get("/sagas/shop-1")
        logout = await client.post("/logout", data={"csrf": csrf_of(page.text)})
        after = await client.get("/")
    cookie = right.headers["set-cookie"].lower()
    assert wrong.status_code == 403 and "set-cookie" not in wrong.headers
    assert right.status_code == 303 and right.headers["location"] == "/"
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert TOKEN.lower() not in cookie
    assert 'id="operator">ada<' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert TOKEN not in page.text
    assert logout.status_code == 303 and 'id="login-link"' in after.text


# --------------------------------------------------------------------------- live updates


async def test_the_live_stream_tells_each_change_as_it_lands(url: str) -> None:
    store = await open_store(url, create=False)
    try:
        stream = changes(store, "approval-1", lifetime=60, check=60)
        async with asyncio.timeout(30):  # bounds a failure only: the watch wakes the stream
            assert (await anext(stream)).startswith("retry:")
            first = await anext(stream)
            await Client(store).cancel("approval-1", reason="changed my mind", by="ada")
            second = await anext(stream)
        await stream.aclose()
    finally:
        await store.close()
    assert first.startswith("event: change\n") and '"status": "running"' in first
    assert second.startswith("event: change\n") and '"status": "compensating"' in second


async def test_the_events_endpoint_streams_the_saga_page_changes(url: str) -> None:
    async with dashboard(url, live_for=0) as (client, _):
        page = await client.get("/sagas/approval-1")
        stream = await client.get("/sagas/approval-1/events")
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    version = re.search(r'data-version="([^"]*)"', page.text)
    assert version is not None
    (event,) = [line for line in stream.text.splitlines() if line.startswith("data: ")]
    assert json.loads(event[len("data: ") :])["version"] == html.unescape(version.group(1))


# --------------------------------------------------------------------------- both stores


async def test_on_every_durable_store(saga_logs: SagaLogs, tmp_path: Path) -> None:
    url = saga_logs.new(tmp_path / "log")
    store = await open_store(url)
    try:
        shop = shop_saga()
        engine = Engine(store, [shop], hand_back=True)
        await engine.run(shop, {"order": 1}, saga_id="shop-1")
        await engine.run(shop, {"order": 2}, saga_id="shop-2")
    finally:
        await store.close()
    async with dashboard(url) as (client, store):
        found = await client.get("/api/sagas?result=charge.payment=p-2&failing_step=email")
        before = await snapshot(store, "shop-2")
        refused = await client.post("/api/sagas/shop-2/resolve", json={"note": "n"})
        after = await snapshot(store, "shop-2")
        done = await client.post(
            "/api/sagas/shop-2/resolve",
            json={"note": "n", "by": "ops"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        page = await client.get("/sagas/shop-2")
    assert [saga["id"] for saga in found.json()["sagas"]] == ["shop-2"]
    assert refused.status_code == 403 and after == before
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert "completed, resolved" in page.text


# --------------------------------------------------------------------------- the command


def _sagakit(*args: str, blocked: str | None = None) -> subprocess.CompletedProcess[str]:
    """``sagakit ARGS``; with ``blocked``, as if that module were not installed."""
    code = "import sys\n"
    if blocked is not None:
        code += f"sys.modules[{blocked!r}] = None\n"
    code += "from sagakit.cli import main\nsys.argv = ['sagakit', *sys.argv[1:]]\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("module", ["fastapi", "uvicorn", "jinja2"])
def test_without_the_extra_the_command_says_what_to_install(url: str, module: str) -> None:
    ran = _sagakit("ui", "--db", url, blocked=module)
    assert ran.returncode == 1
    assert ran.stderr == "error: the dashboard needs pip install 'sagakit[ui]'\n"
    assert ran.stdout == ""


def test_a_log_that_cannot_be_opened_is_one_line_without_its_password(tmp_path: Path) -> None:
    missing = _sagakit("ui", "--db", f"sqlite:///{tmp_path / 'missing.db'}")
    password = _sagakit("ui", "--db", "postgresql://app:hunter2@127.0.0.1:1/sagas?timeout=2")
    for ran in (missing, password):
        assert ran.returncode == 1, ran.stderr
        assert ran.stderr.startswith("error: ") and ran.stderr.count("\n") == 1
        assert "Traceback" not in ran.stderr
    assert not (tmp_path / "missing.db").exists()
    assert "hunter2" not in password.stderr and "app:***@" in password.stderr


def test_the_command_serves_and_never_prints_the_token(url: str) -> None:
    env = {"SAGAKIT_UI_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [SAGAKIT, "ui", "--db", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        where = re.search(r"on (http://127\.0\.0\.1:\d+) \(actions need the token\)", line)
        assert where is not None, line
        home = httpx.get(where.group(1) + "/", timeout=30)
        refused = httpx.post(where.group(1) + "/api/sagas/shop-1/resolve", json={"note": "n"})
        rebound = httpx.get(where.group(1) + "/", headers={"Host": "evil.example"}, timeout=30)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert home.status_code == 200 and "shop@1" in home.text
    assert refused.status_code == 403
    assert rebound.status_code == 400  # a DNS-rebinding page cannot read the dashboard
    assert TOKEN not in line + out + err


async def test_mermaid_is_drawn_only_with_a_local_copy(url: str, tmp_path: Path) -> None:
    script = tmp_path / "mermaid.min.js"
    script.write_text("window.mermaid = {initialize() {}, run() {}};\n")
    async with dashboard(url) as (client, _):
        plain = await client.get("/sagas/shop-1")
        absent = await client.get("/static/mermaid.js")
    async with dashboard(url, mermaid_js=script) as (client, _):
        drawn = await client.get("/sagas/shop-1")
        served = await client.get("/static/mermaid.js")
    assert "mermaid.js" not in plain.text.split("<body>")[0] and absent.status_code == 404
    assert '<script src="/static/mermaid.js" defer></script>' in drawn.text
    assert served.status_code == 200 and served.text == script.read_text()
    assert served.headers["content-type"].startswith("text/javascript")
    for page in (plain, drawn):
        assert not re.search(r'(src|href)="(https?:)?//', page.text)  # nothing from elsewhere
