"""Every code block in README.md and docs/ is a file under docs/examples/ that this suite runs.

A page never holds code of its own: each fence in docs/ contains only snippet includes
(``--8<-- "docs/examples/..."``, MkDocs renders the file), and each fence in README.md (which
GitHub renders, so it cannot include) follows a ``<!-- docs/examples/... -->`` comment and must
equal that file. Every ``.py`` and ``.sh`` example then runs as a reader would run it, from a
copy of its directory, and must exit 0; a ``.out`` beside it is its exact expected output.
An example no page shows is an error too, so nothing is tested that nobody reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doc_examples import EXAMPLES, ROOT, SOURCE, Block, blocks, doc_pages, includes

README = ROOT / "README.md"
BIN = Path(sys.executable).parent

RUNNABLE = (".py", ".sh")
LINT_SETTINGS = EXAMPLES / "ruff.toml"

# Examples another file runs in the setting they need, instead of the plain run here: that
# file (a test, or an example that starts what this one needs) names them.
RUN_ELSEWHERE = {
    # the page's commands, in order, from a fresh copy of the clone, and the files it saves
    "getting_started/tutorial.sh": "tests/docs/test_getting_started.py",
    "getting_started/shop.py": "tests/docs/test_getting_started.py",
    "getting_started/place_orders.py": "tests/docs/test_getting_started.py",
    # a client needs a worker: the script starts one first
    "readme/place_order.py": "docs/examples/readme/workers.sh",
}


def readme_source(block: Block) -> Path:
    match = SOURCE.match(block.before)
    assert match is not None, (
        f"{block}: a README block must follow <!-- docs/examples/FILE --> naming its source"
    )
    path = ROOT / match["path"]
    assert path.is_file(), f"{block}: {match['path']} does not exist"
    return path


def shown() -> set[Path]:
    """Every example file some page or the README shows."""
    paths = {readme_source(block) for block in blocks(README)}
    for page in doc_pages():
        paths |= {path for block in blocks(page) for path, _ in includes(block)}
    return paths


def test_every_docs_block_includes_examples_that_exist() -> None:
    counted = 0
    for page in doc_pages():
        for block in blocks(page):
            includes(block)
            counted += 1
    assert counted > 0


def test_every_readme_block_is_its_example_verbatim() -> None:
    readme = blocks(README)
    assert readme
    for block in readme:
        source = readme_source(block)
        assert "\n".join(block.body) + "\n" == source.read_text(), (
            f"{block} differs from {source.relative_to(ROOT)}"
        )


def example_files() -> list[Path]:
    """The files of docs/examples/, without caches and the examples' own ruff settings."""
    return [
        path
        for path in EXAMPLES.rglob("*")
        if path.is_file()
        and path != LINT_SETTINGS
        and not any(part.startswith(".") or part == "__pycache__" for part in path.parts)
    ]


def test_every_example_is_shown_somewhere() -> None:
    every = set(example_files())
    outputs = {
        path
        for path in every
        if path.suffix == ".out" and {path.with_suffix(kind) for kind in RUNNABLE} & every
    }
    unshown = sorted(str(path.relative_to(ROOT)) for path in every - outputs - shown())
    assert not unshown, f"examples no page shows: {unshown}"


def runnable() -> list[str]:
    every = (str(path.relative_to(EXAMPLES)) for path in example_files())
    return sorted({name for name in every if name.endswith(RUNNABLE)} - set(RUN_ELSEWHERE))


def test_examples_run_elsewhere_exist_and_are_run() -> None:
    for example, runner in RUN_ELSEWHERE.items():
        assert (EXAMPLES / example).is_file()
        assert Path(example).name in (ROOT / runner).read_text()


SERVERS_USED = {"redis": "redis://127.0.0.1", "postgres": "postgresql://postgres@127.0.0.1"}
"""An example whose text names one of the machine's servers is marked as needing it."""


def with_servers(example: str) -> object:
    text = (EXAMPLES / example).read_text()
    marks = [getattr(pytest.mark, name) for name, url in SERVERS_USED.items() if url in text]
    return pytest.param(example, marks=marks, id=example)


@pytest.mark.parametrize("example", [with_servers(example) for example in runnable()])
def test_example_runs(example: str, tmp_path: Path) -> None:
    source = EXAMPLES / example
    here = tmp_path / source.parent.name
    shutil.copytree(source.parent, here, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    command = [sys.executable] if source.suffix == ".py" else ["bash", "-eu"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("SAGAKIT_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "100"}
    done = subprocess.run(
        [*command, source.name],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (
        f"{example} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    expected = source.with_suffix(".out")
    if expected.exists():
        assert done.stdout == expected.read_text()
