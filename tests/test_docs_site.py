"""The documentation site, opened in a real browser.

The site is built as `.ci/run` builds it (`mkdocs build --strict`: a broken link or anchor,
or a page left out of the nav, fails the build), served on 127.0.0.1, and every page is
opened in headless Chromium (tests/kit/browser.py): no console error, no failed or
refused load, no request to anywhere but the server, and the page's h1 is the title its
Markdown source starts with. The server and the browser run in a child process inside a
network namespace that has only loopback; where none can be made, or Chromium is missing,
the test is skipped with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from kit.browser import chromium_binary, in_loopback_namespace, namespace_unavailable

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHILD = Path(__file__).resolve().parent / "kit" / "browser.py"


def pages() -> dict[str, str]:
    """Each page's path on the site (`x.md` is `/x/`, `index.md` is `/`) and the title
    its source starts with (`# Title`)."""
    found: dict[str, str] = {}
    for source in sorted(DOCS.glob("**/*.md")):
        first = source.read_text().splitlines()[0]
        assert first.startswith("# "), f"{source}: a page starts with its title, '# ...'"
        rel = source.relative_to(DOCS).with_suffix("")
        path = "/" if rel.name == "index" else f"/{rel.as_posix()}/"
        found[path] = first[2:].strip()
    return found


@pytest.mark.timeout(120)
def test_every_page_opens_in_chromium_without_errors() -> None:
    if chromium_binary() is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    why = namespace_unavailable()
    if why is not None:
        pytest.skip(why)
    expected = pages()
    assert len(expected) >= 10, expected
    with tempfile.TemporaryDirectory() as site:
        build = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", site],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert build.returncode == 0, build.stdout + build.stderr
        run = subprocess.run(
            in_loopback_namespace([sys.executable, str(CHILD), "pages", site, *expected]),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(seen) == sorted(expected)
    for path, title in expected.items():
        page = seen[path]
        assert page["errors"] == [], (path, page["errors"])
        assert page["h1"] == title, (path, page["h1"])
        # the page and what it loads (style sheets, scripts) came from the server
        assert page["urls"][0].endswith(path), (path, page["urls"])
        assert len(page["urls"]) > 1, (path, page["urls"])
