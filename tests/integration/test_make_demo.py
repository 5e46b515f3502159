"""A newcomer's first command, ``make demo``, on a fresh copy of the tree: it installs the core
only (sagakit, typer, rich), never a test, lint or broker tool, and the demo runs on that.

The copy is of the working tree (the files a clone has, uncommitted edits included), built
with the interpreter this venv was made from, so pip uses the package index it always does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ["pyproject.toml", "Makefile", "README.md", "CHANGELOG.md"]
INSTALL_TIMEOUT = 600.0
"""Seconds ``make demo`` may take from nothing (about 15 here; a cold pip cache is slower)."""
NEVER_FOR_THE_DEMO = {
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "hypothesis",
    "ruff",
    "mypy",
    "import-linter",
    "asyncpg",
    "redis",
    "nats-py",
    "aio-pika",
    "dbos",
}

NOT_INHERITED = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
"""Not this venv's, nor an enclosing make's: the copy builds and uses its own .venv."""


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extras() -> set[str]:
    """Every package any extra of pyproject.toml names (none of them is the demo's)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for requirements in project["optional-dependencies"].values():
        for requirement in requirements:
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            assert match, requirement
            names.add(normalized(match.group()))
    return names


def base_python() -> str:
    """The interpreter this venv was made from (``sys.executable`` when not in a venv)."""
    found: str = getattr(sys, "_base_executable", sys.executable)
    return found


def fresh_copy(destination: Path) -> Path:
    for name in FILES:
        shutil.copy2(ROOT / name, destination / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", destination / "src", ignore=junk)
    return destination


def make(target: str, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make is not None, "make is one of the two tools README.md asks for"
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    env["PYTHON"] = base_python()
    return subprocess.run(
        [make, *options, target],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


def installed(venv: Path) -> set[str]:
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {normalized(package["name"]) for package in json.loads(listed.stdout)}


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_make_demo_on_a_fresh_copy_installs_the_core_only_and_runs(tmp_path: Path) -> None:
    tree = fresh_copy(tmp_path)

    done = make("demo", tree)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "every scenario ended as expected" in done.stdout
    packages = installed(tree / ".venv")
    assert {"sagakit", "typer", "rich"} <= packages
    assert not packages & (NEVER_FOR_THE_DEMO | extras())
    listed = subprocess.run(
        [str(tree / ".venv" / "bin" / "sagakit"), "list", "--db", "sqlite:///demo.db", "--json"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    statuses = {saga["status"] for saga in json.loads(listed.stdout)}
    assert {"completed", "compensated", "needs_attention"} <= statuses
    again = make("demo", tree, "--dry-run")
    assert again.returncode == 0, again.stderr
    assert "-m venv" not in again.stdout and "pip install" not in again.stdout  # done once
