"""The choreography demo hands its broker URL to its service processes in their environment:
while they run, no command line on the machine (what ``ps`` shows every user) holds the
password, and the demo still ends every order as expected.

Redis without ``requirepass`` accepts any password for its ``nopass`` default user, so the
machine's Redis takes a URL with one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagakit.demo.processes import BROKER_ENV, ServiceProcess
from servers import REDIS

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
SECRET = "s3cretPW"
WAIT = 90.0
"""Seconds the demo may take before the test kills it and fails."""


def with_password(url: str) -> str:
    """``url`` (``redis://host:port/db``) with :data:`SECRET` as its password."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://:{SECRET}@{rest.rsplit('@', 1)[-1]}"


def children(pid: int) -> dict[int, bytes]:
    """The raw command lines of every living descendant of ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, bytes] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                try:
                    found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes()
                except OSError:
                    continue
                frontier.append(child)
    return found


def environment(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes()
    except OSError:
        return b""


@pytest.mark.redis
def test_no_service_process_shows_the_broker_password_on_its_command_line(
    tmp_path: Path,
) -> None:
    url = with_password(REDIS)
    env = {
        **os.environ,
        BROKER_ENV: url,
        "SAGAKIT_DB": f"sqlite:///{tmp_path / 'sagas.db'}",
        "COLUMNS": "140",
    }
    demo = subprocess.Popen(
        [SAGAKIT, "demo", "--flavor", "choreography"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    seen: dict[int, set[bytes]] = {}  # a pid's command line changes at its exec
    through_env: set[int] = set()
    deadline = time.monotonic() + WAIT
    while demo.poll() is None:
        for pid, cmdline in children(demo.pid).items():
            seen.setdefault(pid, set()).add(cmdline)
            if f"{BROKER_ENV}={url}".encode() in environment(pid):
                through_env.add(pid)
        if time.monotonic() > deadline:
            demo.kill()
            demo.communicate()
            pytest.fail(f"the demo did not end within {WAIT:g}s")
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(timeout=0.02)  # between looks at /proc; returns as soon as it ends
    out, err = demo.communicate()

    assert demo.returncode == 0, (out + err).decode(errors="replace")
    assert b"every order ended as expected" in out
    services = {p for p, lines in seen.items() if any(b"demo.processes" in c for c in lines)}
    assert len(services) == 4, seen  # looked while all four services ran
    assert through_env >= services
    for cmdline in set().union(*seen.values()):
        assert SECRET.encode() not in cmdline and b"redis://" not in cmdline
    assert SECRET.encode() not in out + err


def test_a_service_process_s_command_line_holds_no_url(tmp_path: Path) -> None:
    process = ServiceProcess(
        "payments", tmp_path, with_password(REDIS), options=["--max-attempts", "3"]
    )
    assert not any("://" in arg or SECRET in arg for arg in process.argv)


def test_a_service_process_without_a_broker_says_where_to_put_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != BROKER_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "sagakit.demo.processes", "payments", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        env=env,
    )
    assert done.returncode == 2
    assert f"set {BROKER_ENV} to the broker's URL" in done.stderr
