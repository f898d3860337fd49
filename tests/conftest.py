"""Shared fixtures: the loop matrix, a recording USocket, certificates, short paths.

Every socket test takes the `mux` fixture, which runs it once on the default asyncio
loop and once on uvloop, and fails it if anything reached the loop's exception handler
(tests that provoke such errors on purpose take them out of `mux.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import usocket_asyncio
from usocket_asyncio import IInstanceLog, IIoMux, ISocket, LogFlags, ShutdownReason, USocket
from usocket_asyncio._base import LIVE

LOOPS = ["asyncio", "uvloop"]


def pytest_configure(config: pytest.Config) -> None:
    """With USOCKET_ASYNCIO_EXPECT_COMPILED=1 (the compiled run of .ci/run), refuse to
    test the pure-Python package by mistake."""
    if os.environ.get("USOCKET_ASYNCIO_EXPECT_COMPILED") == "1" and not usocket_asyncio.COMPILED:
        raise pytest.UsageError(
            f"expected the compiled build, but {usocket_asyncio.__file__} is pure Python"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if usocket_asyncio.COMPILED:
        skip = pytest.mark.skip(reason="patches module internals; the compiled build fixes them")
        for item in items:
            if "pure_only" in item.keywords:
                item.add_marker(skip)


ALL_LOG_FLAGS = int(
    LogFlags.LOG_APP
    | LogFlags.LOG_TCP
    | LogFlags.LOG_TLS
    | LogFlags.LOG_LDS
    | LogFlags.LOG_UDP
    | LogFlags.LOG_DTLS
)


class Mux(IIoMux):
    """An IIoMux for tests: records exception-handler calls, runs until a condition."""

    __slots__ = ("errors", "kind")

    def __init__(self, kind: str) -> None:
        created = IIoMux.Create(uvloop=kind == "uvloop")
        super().__init__(created.loop, owns_loop=True)
        self.kind = kind
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.errors.append(ctx))

    def run_until(self, cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Run the loop until `cond()` is true; fail the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout

        async def waiter() -> None:
            while not cond():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
                await asyncio.sleep(0.002)

        self.loop.run_until_complete(waiter())

    def run_for(self, seconds: float) -> None:
        """Run the loop for `seconds`."""
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def take_errors(self) -> list[dict[str, Any]]:
        """The exception-handler calls so far, and forget them (for tests that expect some)."""
        errs, self.errors = self.errors, []
        return errs


@pytest.fixture(params=LOOPS)
def mux(request: pytest.FixtureRequest) -> Iterator[Mux]:
    """An event loop per test, on both asyncio and uvloop."""
    m = Mux(request.param)
    try:
        yield m
        # let pending closes finish, then nothing may be left in the exception handler
        with contextlib.suppress(Exception):
            m.run_for(0.01)
        assert not m.errors, f"the loop's exception handler was called: {m.errors}"
    finally:
        loop = m.loop
        # a failed test may leave sockets behind: delete them, or uvloop's close() waits on them
        for sock in [s for s in LIVE if getattr(s, "_loop", None) is loop]:
            with contextlib.suppress(Exception):
                sock.Delete()
        with contextlib.suppress(Exception):
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:  # bounded: a task that ignores its cancellation must not hang the run
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def log() -> IInstanceLog:
    """A log with every flag set (tests see the library's log lines in failures)."""
    return IInstanceLog(ALL_LOG_FLAGS)


class Recorder(USocket):
    """A USocket that records every callback as (name, *args) and checks the contract.

    - a callback after SocketShutdown fails the test (recorded in `violations`);
    - `on_*` hooks (set as attributes) let a test act inside callbacks.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.events: list[tuple[Any, ...]] = []
        self.received = bytearray()
        self.shutdown: ShutdownReason | None = None
        self.violations: list[str] = []
        self.sends_done = 0
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.in_call = False  # set by tests around their own calls into the library

    def _rec(self, *ev: Any) -> None:
        if self.in_call:
            self.violations.append(f"{ev[0]} ran inside a library call")
        if self.shutdown is not None:
            self.violations.append(f"{ev[0]} after SocketShutdown({self.shutdown!r})")
        self.events.append(ev)

    def _hook(self, name: str, *args: Any) -> Any:
        fn = self.hooks.get(name)
        return fn(*args) if fn is not None else None

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    def SocketConnectComplete(self, socket: ISocket) -> None:
        self._rec("connect")
        self._hook("connect", socket)

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self._rec("bind", localAddr, localPort)
        self._hook("bind", socket, localAddr, localPort)

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        self._rec("listen", remoteAddr, remotePort)
        self._hook("listen", socket, remoteAddr, remotePort)

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        self._rec("accept")
        self._hook("accept", socket)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self._rec("shutdown", reason)
        self.shutdown = reason
        self._hook("shutdown", socket, reason)

    def SocketSendResult(self, socket: ISocket) -> None:
        self._rec("send")
        self.sends_done += 1
        self._hook("send", socket)

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        self._rec("recv", len)
        self.received += bytes(memoryview(buf)[:len])
        self._hook("recv", socket, buf, len)

    def SocketRecvFromResult(
        self, socket: ISocket, buf: Any, len: int, srcAddr: Any, srcPort: int
    ) -> None:
        self._rec("recvfrom", len, srcAddr, srcPort)
        self.received += bytes(memoryview(buf)[:len])
        self._hook("recvfrom", socket, buf, len, srcAddr, srcPort)

    def SocketRecvCanceled(self, socket: ISocket, buf: Any) -> None:
        self._rec("canceled", buf)
        self._hook("canceled", socket, buf)

    def SocketUpgradeToTLSComplete(self, socket: ISocket) -> None:
        self._rec("upgraded")
        self._hook("upgraded", socket)

    def SocketAcceptSelectedALPNProtocol(self, socket: ISocket, protocol: str) -> bool:
        self._rec("alpn", protocol)
        r = self._hook("alpn", socket, protocol)
        return True if r is None else bool(r)


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short directory for Unix socket paths (the 108-byte limit)."""
    d = tempfile.mkdtemp(prefix="us", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def free_port(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago on loopback."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def have_ipv6() -> bool:
    """True when ::1 can be bound."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="session")
def ca() -> Any:
    """A test CA (trustme) with a certificate for localhost and 127.0.0.1."""
    import trustme

    return trustme.CA()
