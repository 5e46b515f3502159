"""The docs' code blocks as tests see them, and the examples they include as modules.

A page's fences hold snippet includes of files under docs/examples/ (see test_examples.py);
:func:`blocks` and :func:`includes` read them as MkDocs' snippets extension does. A test
imports an example by its path with :func:`load` and calls its functions, so a recipe's
behaviour is asserted beyond "it exits 0".
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<info>.*)$")
INCLUDE = re.compile(r'^--8<-- "(?P<path>docs/examples/[^":]+)(?::(?P<section>[\w-]+))?"$')
SOURCE = re.compile(r"^<!-- (?P<path>docs/examples/\S+) -->$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is and the lines between its fences."""

    page: Path
    line: int
    body: list[str]
    before: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, nested fences (content tabs) unindented."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index].removeprefix(indent))
            index += 1
        before = next((text for text in reversed(lines[:start]) if text.strip()), "")
        found.append(Block(page, start + 1, body, before.strip()))
        index += 1
    return found


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def section(path: Path, name: str | None) -> str:
    """The text MkDocs' snippets would include: a whole file, or the lines between markers."""
    text = path.read_text()
    if name is None:
        return text
    match = re.search(
        rf"^[^\n]*--8<-- \[start:{name}\][^\n]*\n(?P<body>.*?)^[^\n]*--8<-- \[end:{name}\]",
        text,
        flags=re.DOTALL | re.MULTILINE,
    )
    assert match is not None, f"{path} has no section {name!r}"
    return match["body"]


def includes(block: Block) -> list[tuple[Path, str | None]]:
    """What a docs block includes; a line that is not an include fails the test."""
    found = []
    for text in block.body:
        if not text.strip():
            continue
        match = INCLUDE.match(text.strip())
        assert match is not None, f"{block}: code in a page must be a docs/examples/ file: {text!r}"
        path = ROOT / match["path"]
        assert path.is_file(), f"{block}: {match['path']} does not exist"
        section(path, match["section"])
        found.append((path, match["section"]))
    assert found, f"{block}: an empty code block"
    return found


def load(relative: str) -> ModuleType:
    """Import ``docs/examples/<relative>`` (for example ``cookbook/refund.py``) afresh.

    Its directory goes first on ``sys.path`` so the example's own sibling imports work, as
    they do when the file is run as a script from that directory.
    """
    path = EXAMPLES / relative
    if not path.is_file():
        raise FileNotFoundError(path)
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = f"doc_example_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
