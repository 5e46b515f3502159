"""What README.md claims about its own examples holds (test_examples.py runs them)."""

from __future__ import annotations

import re

from doc_examples import EXAMPLES, ROOT

README = ROOT / "README.md"

QUICK_START = EXAMPLES / "readme" / "quickstart.py"


def test_the_quick_start_has_as_many_lines_as_its_heading_says() -> None:
    claimed = re.search(r"^## A saga in (\d+) lines$", README.read_text(), flags=re.MULTILINE)
    assert claimed is not None
    assert len(QUICK_START.read_text().splitlines()) == int(claimed[1])


def test_the_quick_start_is_a_script_a_worker_can_import() -> None:
    assert 'if __name__ == "__main__":' in QUICK_START.read_text()
    assert "<!-- docs/examples/readme/quickstart.py -->" in README.read_text()


def test_every_guide_page_the_readme_links_exists() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)\)", README.read_text())
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []
