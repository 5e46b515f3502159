"""What docs/testing.md claims: its example test modules pass, as many tests as the page's
table says, both as the scripts a reader runs (no pytest configuration at all) and inside a
project configured like this one (pytest-asyncio's auto mode, warnings as errors)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doc_examples import EXAMPLES, ROOT, load
from sagakit import Engine, MemoryStore, SagaStatus

PAGE = ROOT / "docs" / "testing.md"
HERE = EXAMPLES / "testing"
SUMMARY = re.compile(r"^(?P<passed>\d+) passed in [\d.]+s$")


def page_counts() -> dict[str, int]:
    """The page's table: test module -> number of tests."""
    found = re.findall(r"^\| `(test_\w+\.py)` \| (\d+) \|", PAGE.read_text(), flags=re.MULTILINE)
    return {name: int(count) for name, count in found}


def modules() -> list[str]:
    return sorted(p.name for p in HERE.glob("test_*.py"))


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SAGAKIT_", "PYTEST_"))}


def copy(tmp_path: Path) -> Path:
    here = tmp_path / "testing"
    shutil.copytree(HERE, here, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return here


def passed(stdout: str) -> int:
    """The number of tests in pytest's one-line summary, which must say nothing but passes."""
    last = stdout.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match is not None, f"not a clean pass: {last!r}\n{stdout}"
    return int(match["passed"])


def test_the_table_lists_every_example_test_module() -> None:
    assert sorted(page_counts()) == modules()


@pytest.mark.parametrize("module", modules())
def test_each_module_passes_as_a_script_from_a_bare_directory(tmp_path: Path, module: str) -> None:
    here = copy(tmp_path)
    done = subprocess.run(
        [sys.executable, module],
        cwd=here,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert passed(done.stdout) == page_counts()[module]
    assert not (here / ".pytest_cache").exists()  # -p no:cacheprovider


@pytest.mark.parametrize("module", modules())
def test_each_module_passes_in_auto_mode_with_warnings_as_errors(
    tmp_path: Path, module: str
) -> None:
    here = copy(tmp_path)
    command = [sys.executable, "-m", "pytest", module, "-q", "-p", "no:cacheprovider"]
    options = ["-W", "error", "-o", "asyncio_mode=auto"]
    options += ["-o", "asyncio_default_fixture_loop_scope=function"]
    done = subprocess.run(
        [*command, *options],
        cwd=here,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert passed(done.stdout) == page_counts()[module]


def test_the_contract_suites_fail_to_set_up_in_strict_mode(tmp_path: Path) -> None:
    """What the page's warning says: without auto mode the broker suite cannot run."""
    here = copy(tmp_path)
    command = [sys.executable, "-m", "pytest", "test_backend_contracts.py", "-q"]
    done = subprocess.run(
        [*command, "-p", "no:cacheprovider", "-k", "TestMemoryBroker"],
        cwd=here,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "error" in done.stdout.strip().splitlines()[-1]


def test_the_saga_module_runs_one_trip(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(load("testing/trip_saga.py").main())
    assert capsys.readouterr().out == "trip-1 completed\n"


async def test_the_fake_applies_a_key_once_and_fails_as_told() -> None:
    trip = load("testing/trip_saga.py")
    fake = trip.FakeService("cards")
    assert await fake.call("charge", "k1", "first") == "first"
    assert await fake.call("charge", "k1", "second") == "first"  # a repeated key
    fake.fail("charge", trip.SupplierError("down"))
    with pytest.raises(trip.SupplierError):
        await fake.call("charge", "k2", "x")
    fake.fail("charge", trip.SupplierError("lost reply"), after_effect=True)
    with pytest.raises(trip.SupplierError):
        await fake.call("charge", "k3", "y")
    assert fake.applied("charge") == ["first", "y"]  # k2 failed before its effect
    assert [key for _, key in fake.calls] == ["k1", "k1", "k2", "k3"]


async def test_the_default_email_policy_is_patient_and_the_tests_one_is_not() -> None:
    trip = load("testing/trip_saga.py")
    assert trip.EMAIL_RETRY.attempts == 8 and trip.EMAIL_RETRY.backoff == 1.0
    assert (trip.FAST_RETRY.attempts, trip.FAST_RETRY.backoff) == (5, 0)
    services = trip.TripServices()
    for _ in range(5):
        services.mail.fail("send", trip.SupplierError("smtp down"))
    saga = trip.build_trip_saga(services, email_retry=trip.FAST_RETRY)
    result = await Engine(MemoryStore()).run(saga, trip.TRIP, saga_id="x")
    assert result.status is SagaStatus.NEEDS_ATTENTION  # five failures use up five attempts
    assert services.cards.applied("refund") == []  # after the pivot nothing is undone


def test_the_page_shows_every_example_of_its_directory() -> None:
    shown = set(re.findall(r'--8<-- "docs/examples/(testing/[^":]+)', PAGE.read_text()))
    assert {f"testing/{p.name}" for p in HERE.glob("*.py")} == shown
