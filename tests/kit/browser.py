"""Headless Chromium for tests: no network but loopback, driven over the DevTools protocol.

Theory of operation. The browser is Debian's `chromium`, started headless with
`--remote-debugging-pipe`: it reads DevTools commands from its descriptor 3 and writes
replies and events to descriptor 4, one JSON object per message, each ended by a NUL byte.
A pipe needs no port and no WebSocket client, and nothing else on the machine can talk to
the browser. `Browser` writes a command and pumps the reply pipe (with `select`, bounded in
time) until the reply with the command's id comes; events that come meanwhile are filed
under the page (the DevTools session) they belong to. Each `Page` is a fresh target with
Runtime, Log, Network and Page events on, so what it records from its first request on is
complete: console calls, uncaught exceptions, the browser's own error log (failed loads,
refused resources), every request's URL and every response's status.

Keeping the browser on loopback takes two layers. The test runs the browser, and whatever
serves the page, in a network namespace that has only `lo` (`in_loopback_namespace`, the
same as the GnuTLS tests): no packet can leave it. And the browser is told not to try:
`NETWORK_FLAGS` turns off proxies, background networking (safe browsing, variations,
update checks), component updates, sync, the first-run and default-app fetches and the
media router, and maps every host name to nothing, so only IP literals (127.0.0.1) load.
`Page.errors()` then reports any request to another origin as an error too, so a page that
would reach out (a CDN's script) fails the test even where it would have worked.

For a WebRTC page, pass `MEDIA_FLAGS` too: a fake microphone and camera that need no
permission prompt (the fake audio device plays a beep tone), autoplay without a gesture,
and loopback ICE candidates, which Chromium leaves out by default.

Run as a script, it is the child that a test starts inside the namespace:

    python tests/kit/browser.py pages SITE_DIR PATH...

serves SITE_DIR on 127.0.0.1, opens each PATH, and prints one JSON object mapping each PATH
to its first `h1`'s text, its errors and the URLs it requested.

    python tests/kit/browser.py served [--flag F]... [--query Q] --until JS -- SERVER...

starts the command SERVER, reads the first http://127.0.0.1:PORT/ address it prints, opens
it (with Q appended) in a browser with the extra flags, awaits the JavaScript promise JS in
the page, then stops the server with SIGINT; prints one JSON object: JS's value, the
page's errors and console, and the server's exit code and output.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# Every flag that keeps Chromium from reaching for the network on its own.
NETWORK_FLAGS = (
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-features=MediaRouter",
    "--no-default-browser-check",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
# Headless, with the DevTools protocol on descriptors 3 and 4, no GPU and no /dev/shm need.
BASE_FLAGS = ("--headless", "--remote-debugging-pipe", "--disable-gpu", "--disable-dev-shm-usage")
# A WebRTC page: fake devices without a prompt, autoplay, loopback ICE candidates.
MEDIA_FLAGS = (
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
)


def chromium_binary() -> str | None:
    """The Chromium executable: Debian's real binary (its `chromium` launcher script only
    adds flags of its own), else whichever Chromium or Chrome is on PATH; None if none."""
    if os.access("/usr/lib/chromium/chromium", os.X_OK):
        return "/usr/lib/chromium/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def in_loopback_namespace(args: Sequence[str]) -> list[str]:
    """`args` run in a fresh network namespace that has only loopback, brought up first."""
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *args]


def namespace_unavailable() -> str | None:
    """Why `in_loopback_namespace` cannot run here, or None when it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) for a loopback-only namespace"
    probe = subprocess.run(
        in_loopback_namespace(["true"]), capture_output=True, timeout=10, check=False
    )
    if probe.returncode != 0:
        why = probe.stderr.decode("latin-1", "replace").strip()
        return f"cannot make a private network namespace (unshare --net): {why}"
    return None


def only_loopback() -> bool:
    """True when this process sees no interface but `lo` (the namespace is private)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files; logs nothing (a test reads what the browser saw instead)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: str) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port) from a thread; yields the
    base URL, ending in `/`. The server is shut down and closed on exit."""
    handler = functools.partial(_QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class BrowserError(RuntimeError):
    """The browser failed a command, ended, or did not answer in time."""


def _text(args: list[dict[str, Any]]) -> str:
    """A console call's arguments as the console shows them: values, else descriptions."""
    return " ".join(str(a.get("value", a.get("description", ""))) for a in args)


class Page:
    """One browser tab and what it recorded since it was made."""

    __slots__ = ("browser", "events", "session", "target")

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command in this page's session; its result."""
        return self.browser.call(method, params, self.session)

    def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Load `url` and wait for its load event."""
        loaded = len(self.events)
        reply = self.call("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"navigating to {url}: {reply['errorText']}")
        self.wait_for(lambda e: e["method"] == "Page.loadEventFired", timeout, since=loaded)

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The value of a JavaScript expression in the page (a promise awaited if asked)."""
        reply = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": await_promise, "returnByValue": True},
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, since: int = 0
    ) -> dict[str, Any]:
        """The first event from index `since` on that `match`es, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[since:]:
                if match(event):
                    return event
            since = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no matching event within {timeout} s")
            self.browser.pump(left)

    def console(self) -> list[tuple[str, str]]:
        """(type, text) of every console call so far: ("log", "..."), ("error", "...")."""
        return [
            (e["params"]["type"], _text(e["params"]["args"]))
            for e in self.events
            if e["method"] == "Runtime.consoleAPICalled"
        ]

    def requested_urls(self) -> list[str]:
        """Every URL the page requested, in order."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def errors(self, origin: str | None = None) -> list[str]:
        """What went wrong: console errors and assertions, uncaught exceptions, the browser's
        error log, failed loads, responses of 400 or more, and, given `origin`, every
        request elsewhere (data: and blob: URLs are the page's own)."""
        found: list[str] = []
        for e in self.events:
            method, p = e["method"], e["params"]
            if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                found.append("console: " + _text(p["args"]))
            elif method == "Runtime.exceptionThrown":
                details = p["exceptionDetails"]
                found.append(
                    "exception: "
                    + str(details.get("exception", {}).get("description", details["text"]))
                )
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log ({p['entry']['source']}): {p['entry']['text']}")
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                found.append(f"load failed: {p['errorText']} ({p.get('type')})")
            elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
                found.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
            elif method == "Network.requestWillBeSent" and origin is not None:
                url = p["request"]["url"]
                if not url.startswith((origin, "data:", "blob:")):
                    found.append(f"request outside {origin}: {url}")
        return found


class Browser:
    """Headless Chromium on a DevTools pipe; a context manager that ends it on exit."""

    def __init__(self, flags: Sequence[str] = (), timeout: float = 20.0) -> None:
        binary = chromium_binary()
        if binary is None:
            raise BrowserError("no Chromium found: install Debian's chromium package")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.pages: dict[str, Page] = {}
        self.browser_events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._buffer = b""
        command_r, self._command_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        args = [binary, *BASE_FLAGS, *NETWORK_FLAGS, *flags, f"--user-data-dir={self.profile}"]
        if os.geteuid() == 0:
            # Chromium refuses to run as root with its sandbox; the pages it loads here are
            # the test's own, from loopback, in a namespace with no other network.
            args.append("--no-sandbox")
        args.append("about:blank")

        def give_pipes() -> None:  # in the child, before exec: the protocol's descriptors
            os.dup2(command_r, 3)
            os.dup2(reply_w, 4)

        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            pass_fds=(3, 4),
            preexec_fn=give_pipes,  # the child runs nothing after it but exec
        )
        os.close(command_r)
        os.close(reply_w)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stderr_text(self) -> str:
        """What the browser wrote on stderr so far (for a failure message)."""
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and wait (up to the browser's timeout) for its result."""
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._command_w, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"the browser has ended:\n{self.stderr_text()[-2000:]}") from None
        deadline = time.monotonic() + self.timeout
        while ident not in self._replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no reply to {method} within {self.timeout} s")
            self.pump(left)
        reply = self._replies.pop(ident)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def pump(self, timeout: float) -> None:
        """Read what the browser sent within `timeout` s (at least one read if any came)
        and file each message: a reply by its id, an event under its page."""
        ready, _, _ = select.select([self._reply_r], [], [], max(0.0, timeout))
        if not ready:
            return
        chunk = os.read(self._reply_r, 1 << 20)
        if not chunk:
            raise BrowserError(f"the browser has ended:\n{self.stderr_text()[-2000:]}")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            if "id" in message:
                self._replies[message["id"]] = message
            elif message.get("sessionId") in self.pages:
                self.pages[message["sessionId"]].events.append(message)
            else:
                self.browser_events.append(message)

    def new_page(self) -> Page:
        """A fresh tab with Runtime, Log, Network and Page events on."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = self.pages[session] = Page(self, target, session)
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.call(f"{domain}.enable")
        return page

    def open(self, url: str) -> Page:
        """A fresh tab with `url` loaded."""
        page = self.new_page()
        page.navigate(url)
        return page

    def close(self) -> None:
        """End the browser (politely, then by force) and remove its profile."""
        if self.process.poll() is None:
            with contextlib.suppress(BrowserError, OSError):
                self.call("Browser.close")
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for fd in (self._command_w, self._reply_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# the text of a page's first h1, without the permalink mark that the toc extension adds
FIRST_H1 = "(() => { const h = document.querySelector('h1'); if (!h) return null; \
const c = h.cloneNode(true); c.querySelectorAll('a.headerlink').forEach(a => a.remove()); \
return c.textContent.trim(); })()"


def check_pages(site: str, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Serve `site`, open each path in a fresh tab; per path: its first h1, its errors
    (anything requested outside the server included), the URLs it requested."""
    results: dict[str, dict[str, Any]] = {}
    with serve_directory(site) as base, Browser() as browser:
        origin = base.rstrip("/")
        for path in paths:
            page = browser.open(base + path.lstrip("/"))
            # let late scripts (the search index, deferred handlers) run before reading
            page.evaluate("new Promise(r => setTimeout(r, 100))", await_promise=True)
            results[path] = {
                "h1": page.evaluate(FIRST_H1),
                "errors": page.errors(origin),
                "urls": page.requested_urls(),
            }
            page.call("Page.close")
    return results


def first_address(server: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The first http://127.0.0.1:PORT/ that `server` prints on stdout, within `timeout` s,
    and what it printed up to there."""
    assert server.stdout is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = server.stdout.readline()
        if not line:
            break
        seen += line
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if found:
            return found.group(0), seen
    raise BrowserError(f"the server printed no http://127.0.0.1:PORT/ address: {seen!r}")


def open_served(
    server_args: Sequence[str], flags: Sequence[str], query: str, until: str, timeout: float
) -> dict[str, Any]:
    """Start a server, open its page, await `until` in it, stop the server (SIGINT)."""
    server = subprocess.Popen(
        server_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    result: dict[str, Any] = {}
    printed = ""
    try:
        base, printed = first_address(server, 20)
        with Browser(flags, timeout=timeout + 10) as browser:
            page = browser.open(base + query)
            result["value"] = page.evaluate(until, await_promise=True)
            result["errors"] = page.errors(base.rstrip("/"))
            result["console"] = page.console()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        try:
            out, err = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
    result.update(server_rc=server.returncode, server_stdout=printed + out, server_stderr=err)
    return result


def main(argv: Sequence[str]) -> int:
    if not only_loopback():
        print(json.dumps({"error": f"not a private namespace: {socket.if_nameindex()}"}))
        return 2
    if len(argv) >= 2 and argv[0] == "pages":
        print(json.dumps(check_pages(argv[1], argv[2:])))
        return 0
    if argv and argv[0] == "served":
        p = argparse.ArgumentParser(prog="browser.py served")
        p.add_argument("--flag", action="append", default=[])
        p.add_argument("--query", default="")
        p.add_argument("--until", required=True)
        p.add_argument("--timeout", type=float, default=30.0)
        p.add_argument("server", nargs="+")
        a = p.parse_args(argv[1:])
        print(json.dumps(open_served(a.server, a.flag, a.query, a.until, a.timeout)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
