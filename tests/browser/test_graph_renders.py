"""``sagakit graph`` output is Mermaid that mermaid.js renders: the order saga's definition and
one instance of it, coloured by status, drawn in Debian's Chromium.

mermaid.js comes from the npm registry, pinned by ``tests/browser/mermaid/package-lock.json``
(``.ci/run`` runs ``npm ci`` there) and is served from 127.0.0.1 with the page; the browser
may reach nothing else, and the test checks it asked for nothing else.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Route, sync_playwright

HERE = Path(__file__).resolve().parent
MERMAID = HERE / "mermaid" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE = """<!doctype html><meta charset="utf-8"><script src="mermaid.min.js"></script>
<body><script>
mermaid.initialize({startOnLoad: false, securityLevel: "strict"});
window.rendered = Promise.all(GRAPHS.map((text, i) =>
  mermaid.render("graph" + i, text).then(out => out.svg, error => "error: " + error)));
</script></body>"""


def sagakit(*args: str, cwd: Path) -> str:
    env = {**os.environ, "SAGAKIT_ORDER_SERVICES": str(cwd / "services")}
    done = subprocess.run(
        [SAGAKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def graphs(directory: Path) -> list[str]:
    """The order saga's definition and its instance that needs attention, as Mermaid."""
    db = f"sqlite:///{directory / 'demo.db'}"
    sagakit("demo", "--db", db, cwd=directory)
    listed = sagakit("list", "--db", db, "--status", "needs_attention", "--jsonl", cwd=directory)
    saga_id = json.loads(listed.splitlines()[0])["id"]
    definition = sagakit("graph", "sagakit.demo:from_environment", cwd=directory)
    instance = sagakit("graph", "--db", db, saga_id, cwd=directory)
    assert "compensation_failed" in instance
    return [definition, instance]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Requests are not the test's output."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The page and mermaid.js, served from ``tmp_path`` on a free 127.0.0.1 port."""
    assert MERMAID.is_file(), "run `npm ci` in tests/browser/mermaid (.ci/run does)"
    (tmp_path / "mermaid.min.js").write_bytes(MERMAID.read_bytes())
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def test_the_order_sagas_definition_and_an_instance_render(tmp_path: Path, served: str) -> None:
    drawn = graphs(tmp_path)
    page_text = PAGE.replace("GRAPHS", json.dumps(drawn))
    (tmp_path / "graphs.html").write_text(page_text)
    elsewhere: list[str] = []

    def only_here(route: Route) -> None:
        if route.request.url.startswith(served + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_here)
            page.goto(f"{served}/graphs.html")
            svgs: list[str] = page.evaluate("window.rendered")
        finally:
            browser.close()

    assert elsewhere == []
    assert len(svgs) == 2
    for svg in svgs:
        assert svg.startswith("<svg"), svg[:300]
        assert "Syntax error" not in svg
    assert "confirm_order" in svgs[0] and "send_confirmation_email" in svgs[0]
    assert "compensation_failed" in svgs[1]
