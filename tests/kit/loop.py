"""The test event loop and the recording user: `Mux`, `Recorder`, and small facts about
this process (free ports, IPv6, open file descriptors, resident memory).

`Mux.run_until` wakes when something happens: every `Recorder` callback (and the other
recorders of the kit: relays, the DTLS endpoint, the load clients) calls `wake()`, which
resolves the future the running wait sleeps on. A condition that no recorder sees (a
child process's output, the library's own state) is still checked every `POLL` seconds.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import types
from collections.abc import Callable
from typing import Any

from usocket_asyncio import (
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IIoMux,
    ISocket,
    ISocketProvider,
    LogFlags,
    ShutdownReason,
    USocket,
)

LOOPS = ["asyncio", "uvloop"]

ALL_LOG_FLAGS = int(
    LogFlags.LOG_APP
    | LogFlags.LOG_TCP
    | LogFlags.LOG_TLS
    | LogFlags.LOG_LDS
    | LogFlags.LOG_UDP
    | LogFlags.LOG_DTLS
)

POLL = 0.02
"""Seconds between two checks of a waited-for condition when nothing wakes the wait."""

READY_ROUNDS = 50
"""Loop iterations `Mux.run_ready` runs at most."""
MIN_ROUNDS = 3
"""Loop iterations `Mux.run_ready` runs at least."""

_waiting: list[asyncio.Future[None]] = []


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def wake() -> None:
    """Something happened: a running `Mux.run_until` checks its condition now (safe to
    call from any thread, and when nothing waits)."""
    while _waiting:
        fut = _waiting.pop()
        loop = fut.get_loop()
        try:
            same = asyncio.get_running_loop() is loop
        except RuntimeError:
            same = False
        if same:
            _resolve(fut)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, fut)


class Mux(IIoMux):
    """An IIoMux for tests: records exception-handler calls, runs until a condition."""

    __slots__ = ("errors", "kind")

    def __init__(self, kind: str) -> None:
        created = IIoMux.Create(uvloop=kind == "uvloop")
        super().__init__(created.loop, owns_loop=True)
        self.kind = kind
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.errors.append(ctx))

    def run_until(
        self, cond: Callable[[], bool], timeout: float = 10.0, what: str = "", poll: float = POLL
    ) -> None:
        """Run the loop until `cond()` is true (checked at each `wake()`, else every
        `poll` seconds: shorter for a condition on state no recorder sees change);
        fail the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout

        async def waiter() -> None:
            loop = asyncio.get_running_loop()
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
                fut: asyncio.Future[None] = loop.create_future()
                _waiting.append(fut)
                timer = loop.call_later(min(poll, left), _resolve, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    if fut in _waiting:
                        _waiting.remove(fut)

        self.loop.run_until_complete(waiter())

    def run_for(self, seconds: float) -> None:
        """Run the loop for `seconds`."""
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def run_ready(self, rounds: int = READY_ROUNDS) -> None:
        """Run the loop until nothing is left to do now, without waiting for time to pass:
        what was scheduled (closes, deferred callbacks, and what they schedule in turn) and
        what the kernel already has for us (bytes, ends of connections) is handled. On
        asyncio it stops after `MIN_ROUNDS` iterations once an iteration's poll found
        nothing and no callback is queued; uvloop shows no queue, so it runs all `rounds`
        (each iteration polls without blocking: microseconds)."""
        loop = self.loop
        queue = getattr(loop, "_ready", None)  # asyncio's queue of handles to run

        async def spin() -> None:
            for i in range(rounds):
                await asyncio.sleep(0)
                # here this iteration's poll has queued its callbacks (after this task)
                if queue is not None and i + 1 >= MIN_ROUNDS and not queue:
                    return

        loop.run_until_complete(spin())

    def take_errors(self) -> list[dict[str, Any]]:
        """The exception-handler calls so far, and forget them (for tests that expect some)."""
        errs, self.errors = self.errors, []
        return errs


class Recorder(USocket):
    """A USocket that records every callback as (name, *args) and checks the contract.

    - a callback after SocketShutdown fails the test (recorded in `violations`);
    - `on_*` hooks (set as attributes) let a test act inside callbacks;
    - every callback wakes the running `Mux.run_until` (which looks once it returned).
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
        wake()

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


USER_CALLBACKS = (
    "SocketConnectComplete",
    "SocketBindResult",
    "SocketListenResult",
    "SocketAcceptComplete",
    "SocketShutdown",
    "SocketSendResult",
    "SocketRecvResult",
    "SocketRecvFromResult",
    "SocketRecvCanceled",
    "SocketUpgradeToTLSComplete",
    "SocketAcceptSelectedALPNProtocol",
)
"""Every callback of `USocket`."""


class InstanceRecorder(Recorder):
    """A `Recorder` whose callbacks are set on the instance (`user.SocketSendResult =
    fn`), as an app may write them: its class has `USocket`'s defaults, which do
    nothing (SocketShutdown, which a class must implement, records nothing either)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        for cb in USER_CALLBACKS:
            setattr(self, cb, types.MethodType(getattr(Recorder, cb), self))


for _cb in USER_CALLBACKS:
    if _cb != "SocketShutdown":
        setattr(InstanceRecorder, _cb, getattr(USocket, _cb))
InstanceRecorder.SocketShutdown = lambda self, socket, reason: None  # type: ignore[method-assign]


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


PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


R = ShutdownReason
"""The tests' short name for `ShutdownReason`."""


def provider(kind: str) -> ISocketProvider:
    """A fresh provider of `kind`: "tcp", "udp", "local" or "tls" (over its own TCP)."""
    if kind == "tcp":
        return CreateTCPSocketProvider()
    if kind == "udp":
        return CreateUDPSocketProvider()
    if kind == "local":
        return CreateLocalSocketProvider()
    assert kind == "tls", kind
    return CreateTLSSocketProvider(None)
