"""The README's example is run as written, so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def programs() -> list[str]:
    """The blocks that are whole programs (the others are fragments of them)."""
    return [block for block in python_blocks() if "asyncio.run(" in block]


def test_the_quick_start_runs_and_compensates(tmp_path: Path) -> None:
    (example,) = programs()
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refund pay-8", "completed compensated"]
    assert (tmp_path / "orders.db").exists()
