"""The dashboard as an operator uses it, in Debian's Chromium driven by Playwright.

``sagakit ui`` runs as a real process over a SQLite log the order demo wrote (one order of
which needs attention); the browser may reach 127.0.0.1 and nothing else: every other
request is aborted and the test asserts there was none. The operator filters the list to
``needs_attention``, opens the saga, tries to resolve it before logging in (refused with
403, and the log is unchanged), logs in with the token, resolves it with a note through
the confirmation step, and sees it become ``compensated, resolved``, in a second tab too,
which was left open on the saga and updates itself (Server-Sent Events). The saga page is
then saved as ``docs/images/saga-page.png``.

Waits are Playwright's own (auto-waiting locators and ``expect``), never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from sagakit import open_store
from sagakit.log import Record

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "saga-page.png"
SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-token"
NOTE = "recalled the parcel from the courier by phone"


@dataclass
class Dashboard:
    url: str
    """The saga log's URL."""
    base: str
    """Where ``sagakit ui`` serves."""
    output: list[str] = field(default_factory=list)


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    demo = subprocess.run(
        [SAGAKIT, "demo", "--db", url], capture_output=True, text=True, timeout=120
    )
    assert demo.returncode == 0, demo.stderr
    env = {**os.environ, "SAGAKIT_UI_TOKEN": TOKEN}
    server = subprocess.Popen(
        [SAGAKIT, "ui", "--db", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once the socket listens
        where = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
        assert where is not None, line
        running = Dashboard(url, where.group(1), [line])
        yield running
    finally:
        server.terminate()
        try:
            out, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
    running.output += [out, err]
    assert TOKEN not in "".join(running.output)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def records(url: str, saga_id: str) -> list[Record]:
    """The saga's log as the store has it (read in a thread of its own: Playwright's sync
    API keeps an event loop running in this one)."""

    async def load() -> list[Record]:
        store = await open_store(url, create=False)
        try:
            stored = await store.load(saga_id)
            assert stored is not None
            return stored.records
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, load()).result()


def test_an_operator_finds_and_resolves_the_saga_that_needs_attention(
    dashboard: Dashboard, browser: Browser
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    made: list[str] = []

    def only_here(route: Route) -> None:
        made.append(route.request.url)
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_here)
    page = context.new_page()

    saga_id = _find_the_saga(page, dashboard.base)
    watcher = context.new_page()  # a second tab, left open on the saga: it updates live
    watcher.goto(page.url)
    expect(watcher.locator("#saga-status")).to_have_text("needs_attention")
    before = records(dashboard.url, saga_id)
    _resolve_without_logging_in(page)
    assert records(dashboard.url, saga_id) == before

    _log_in(page)
    expect(page.locator("#saga-status")).to_have_text("needs_attention")
    page.locator("#resolve-form input[name=note]").fill(NOTE)
    page.locator("#resolve-form button").click()
    expect(page.locator("#said")).to_contain_text(f"resolve saga '{saga_id}'")
    expect(page.locator("#said")).to_contain_text("finished by hand")
    page.locator("#confirm").click()

    expect(page.locator("#done")).to_have_text("resolved")
    expect(page.locator("#saga-status")).to_have_text("compensated, resolved")
    expect(page.locator("#resolution")).to_have_text(f"ada: {NOTE}")
    expect(page.locator("#history td.by")).to_have_text("ada")
    expect(watcher.locator("#saga-status")).to_have_text("compensated, resolved")
    expect(watcher.locator("#history td.why")).to_have_text(NOTE)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    context.close()

    last = records(dashboard.url, saga_id)[-1]
    assert (last.type.value, json.loads(last.data or "")) == (
        "operator_resolved",
        {"by": "ada", "note": NOTE},
    )
    assert made and outside == []
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _find_the_saga(page: Page, base: str) -> str:
    """Open the dashboard, filter the list to needs_attention and open the one found."""
    page.goto(base + "/")
    expect(page.locator("#count-needs_attention")).to_have_text("1")
    page.get_by_role("link", name="Sagas", exact=True).click()
    expect(page.locator("a.saga-link")).to_have_count(4)
    page.locator("#filters input[name=status][value=needs_attention]").check()
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=needs_attention"))
    found = page.locator("a.saga-link")
    expect(found).to_have_count(1)
    saga_id = found.inner_text()
    found.click()
    expect(page.locator("#saga-id")).to_have_text(saga_id)
    expect(page.locator("#saga-status")).to_have_text("needs_attention")
    expect(page.locator("pre.mermaid")).to_contain_text("classDef compensation_failed")
    return saga_id


def _resolve_without_logging_in(page: Page) -> None:
    page.locator("#resolve-form input[name=note]").fill("trying my luck")
    with page.expect_response(re.compile(r"/actions/resolve$")) as refused:
        page.locator("#resolve-form button").click()
    assert refused.value.status == 403
    expect(page.locator("#problem")).to_contain_text("log in")
    page.go_back()


def _log_in(page: Page) -> None:
    page.locator("#login-link").click()
    page.locator("#login input[name=token]").fill(TOKEN)
    page.locator("#login input[name=operator]").fill("ada")
    page.locator("#login button").click()
    expect(page.locator("#operator")).to_have_text("ada")
