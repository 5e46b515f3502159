"""docs/getting-started.md, followed by a reader with only the commands on the page.

Runs getting_started/tutorial.sh with the files it saves, getting_started/shop.py and
getting_started/place_orders.py. The page's console blocks are the tutorial's sections, in
order, and together they are all of it; its Python blocks are the files saved. The test lays
out what the reader has (a copy of the sagakit clone as ``sagakit/``, the saved files in
``shop/``), runs the script with bash and checks what the page says happens: a compensated
order, a SIGKILLed process resumed by a worker with no effect made twice, and a worker on
PostgreSQL finishing eight orders a Client started. The one change to the page's text is the
PostgreSQL URL, pointed at a schema of this run's own.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from doc_examples import EXAMPLES, ROOT, blocks, includes, section
from servers import POSTGRES

PAGE = ROOT / "docs" / "getting-started.md"
TUTORIAL = EXAMPLES / "getting_started" / "tutorial.sh"
PAGE_URL = "postgresql://postgres@127.0.0.1:5432/test?schema=shop"
INSTALL_TIMEOUT = 600.0

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(INSTALL_TIMEOUT + 180)]


def page_commands() -> list[str]:
    """The sections of tutorial.sh the page shows, in the order it shows them."""
    names = []
    for block in blocks(PAGE):
        for path, name in includes(block):
            if path == TUTORIAL:
                assert name is not None, "the page shows the tutorial section by section"
                names.append(name)
    return names


def saved_files() -> list[Path]:
    """The whole files the page tells the reader to save."""
    return [
        path
        for block in blocks(PAGE)
        for path, name in includes(block)
        if path.suffix == ".py" and name is None
    ]


def test_the_page_shows_every_command_of_the_tutorial_in_order() -> None:
    script = TUTORIAL.read_text()
    in_file = re.findall(r"--8<-- \[start:([\w-]+)\]", script)
    assert page_commands() == in_file
    commands = "".join(section(TUTORIAL, name) for name in in_file).splitlines()
    outside = [
        line for line in script.splitlines() if line not in commands and not line.startswith("#")
    ]
    assert outside == [], "tutorial.sh runs commands the page does not show"


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"docs_tutorial_{uuid.uuid4().hex[:10]}"
    yield name

    async def drop() -> None:
        connection = await asyncpg.connect(POSTGRES)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await connection.close()

    asyncio.run(drop())


def reader_machine(root: Path) -> Path:
    """A directory with the clone as ``sagakit/`` and the reader's saved files in ``shop/``."""
    clone = root / "sagakit"
    clone.mkdir()
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "Makefile"):
        shutil.copy2(ROOT / name, clone / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", clone / "src", ignore=junk)
    shop = root / "shop"
    shop.mkdir()
    for path in saved_files():
        shutil.copy2(path, shop / path.name)
    return root


def base_python_first() -> str:
    """PATH with ``python3`` being the interpreter this venv was made from, not the venv."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    return f"{base.parent}{os.pathsep}{os.environ.get('PATH', '')}"


def test_a_reader_gets_a_resumed_saga_and_a_worker_on_postgres(tmp_path: Path, schema: str) -> None:
    root = reader_machine(tmp_path)
    url = POSTGRES + f"?schema={schema}"
    script = TUTORIAL.read_text().replace(PAGE_URL, url)
    assert url in script
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SAGAKIT_") and key not in {"VIRTUAL_ENV", "PYTHONPATH"}
    }
    env |= {"PATH": base_python_first(), "COLUMNS": "120"}

    done = subprocess.run(
        ["bash", "-eu", "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT + 120,
    )

    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "order-1 completed" in out
    assert "order-2 compensated" in out
    assert "shop.py died with status 137" in out
    effects = (root / "shop" / "effects.log").read_text().splitlines()
    first = (EXAMPLES / "getting_started" / "first_effects.txt").read_text().splitlines()
    assert effects[: len(first)] == first
    order_3 = [line for line in effects if "order-3" in line]
    assert order_3 == [
        "charge order-3 key=order-3:charge:action",
        "reserve order-3 key=order-3:reserve:action",
        "ship order-3 key=order-3:ship:action",
    ]
    assert "resumed 1 saga(s): 1 completed" in out
    assert "call_taken_over" in out
    placed = re.findall(r"^(?!order-)\S+ (completed|compensated)$", out, flags=re.MULTILINE)
    finished = Counter(placed)
    assert finished == {"completed": 4, "compensated": 4}
    worker = (root / "shop" / "worker.log").read_text()
    assert "started (order@1)" in worker
    assert "worker stopped" in worker
