"""The guide builds with ``mkdocs build --strict``: no broken link, include or API page.

``make lint`` builds it too; this test keeps CI, which runs ``make test``, from landing a
page that does not build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from doc_examples import ROOT

MKDOCS = Path(sys.executable).with_name("mkdocs")


def test_the_guide_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "reference" / "api" / "index.html").exists()
