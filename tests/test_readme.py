"""The examples in the README and in docs/ run as they are written: each ```python block
after the marker `<!-- README example: tests/test_readme.py runs this block -->`, in
README.md or any docs/*.md page, runs in a fresh process (bounded in time), and every
`print(...)  # expected` comment in it is what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- README example: tests/test_readme.py runs this block -->"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def blocks_of(page: Path) -> list[str]:
    """The marked blocks of one page, in order."""
    text = page.read_text()
    blocks = re.findall(re.escape(MARKER) + r"\n```python\n(.*?)\n```", text, re.S)
    assert len(blocks) == text.count(MARKER), (
        f"{page.name}: a marker without a python block after it"
    )
    return blocks


def examples() -> list[tuple[str, str]]:
    """(an id naming the page and the block's place in it, the code) for every marked block."""
    return [
        (f"{page.relative_to(ROOT)}#{n}", code)
        for page in PAGES
        for n, code in enumerate(blocks_of(page), 1)
    ]


EXAMPLES = examples()


def expected_output(code: str) -> list[str]:
    """The lines the `print(...)  # comment` lines say they print (the comment's text up
    to a colon)."""
    return [
        m.group(1).split(":")[0].strip()
        for m in re.finditer(r"^\s*print\(.*\)\s+# (.+)$", code, re.M)
    ]


def test_the_front_page_and_the_guide_have_their_examples() -> None:
    """The README's first example (create and run) is marked, and so is the asyncio-app
    example of Getting started: moving a page cannot drop them from the run unnoticed."""
    ids = [i for i, _ in EXAMPLES]
    assert "README.md#1" in ids
    assert "IIoMux.Create()" in dict(EXAMPLES)["README.md#1"]
    started = [code for i, code in EXAMPLES if i.startswith("docs/getting-started.md#")]
    assert any("IIoMux.FromLoop()" in code for code in started), ids


@pytest.mark.parametrize("code", [c for _, c in EXAMPLES], ids=[i for i, _ in EXAMPLES])
def test_example_runs_as_written(code: str) -> None:
    expected = expected_output(code)
    assert expected
    # the environment and working directory of this run: the same build is imported
    env = dict(os.environ, PYTHONWARNINGS="error")
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected, done.stdout + done.stderr
    assert "Warning" not in done.stderr and "Task was destroyed" not in done.stderr, done.stderr
