"""The README's examples run as they are written: each ```python block after the marker
`<!-- README example: tests/test_readme.py runs this block -->` runs in a fresh process
(bounded in time), and every `print(...)  # expected` comment in it is what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- README example: tests/test_readme.py runs this block -->"


def examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(re.escape(MARKER) + r"\n```python\n(.*?)\n```", text, re.S)
    assert len(blocks) == text.count(MARKER) >= 2, "a marker without a python block after it"
    return blocks


def expected_output(code: str) -> list[str]:
    """The lines the `print(...)  # comment` lines say they print (the comment's text up
    to a colon)."""
    return [
        m.group(1).split(":")[0].strip()
        for m in re.finditer(r"^\s*print\(.*\)\s+# (.+)$", code, re.M)
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["create-and-run", "asyncio-app"])
def test_readme_example_runs_as_written(index: int) -> None:
    code = examples()[index]
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
