"""Stream helpers: a listening library socket, a library client, small waits, captured
log lines, calls from another thread. (The generic checker is in conformance.py.)"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from usocket_asyncio import IInstanceLog, ISocket, ISocketProvider, ShutdownReason, SocketModeError

from .loop import Mux, Recorder


def listener(
    mux: Mux,
    log: IInstanceLog,
    provider: ISocketProvider,
    addr: str | None,
    port: int = 0,
    use_ipv6: bool = False,
    accept: bool = True,
) -> tuple[ISocket, Recorder, list[tuple[ISocket, Recorder]]]:
    """A bound and listening library socket; accepted sockets land in the returned list."""
    lrec = Recorder("listener")
    accepted: list[tuple[ISocket, Recorder]] = []

    def on_listen(sock: ISocket, a: str, p: int) -> None:
        if not accept:
            return
        rec = Recorder("server")
        rec.hooks["accept"] = lambda s: accepted.append((s, rec))
        sock.Accept(rec)

    lrec.hooks["bind"] = lambda sock, a, p: sock.Listen()
    lrec.hooks["listen"] = on_listen
    sock = provider.CreateSocket(mux, lrec, log, use_ipv6)
    sock.Bind(addr, port)
    mux.run_until(lambda: bool(lrec.events), what="bind result")
    assert lrec.names() == ["bind"], lrec.events
    return sock, lrec, accepted


def bound_port(rec: Recorder) -> int:
    """The port from a recorder's SocketBindResult."""
    ev: Any = next(e for e in rec.events if e[0] == "bind")
    return int(ev[2])


def client(
    mux: Mux, log: IInstanceLog, provider: ISocketProvider, address: str, use_ipv6: bool = False
) -> tuple[ISocket, Recorder]:
    """A library client socket with Connect called."""
    rec = Recorder("client")
    sock = provider.CreateSocket(mux, rec, log, use_ipv6)
    sock.Connect(address)
    return sock, rec


def ended(mux: Mux, rec: Recorder, what: str = "SocketShutdown") -> None:
    """Run until `rec` saw SocketShutdown, then a little longer (nothing may follow)."""
    mux.run_until(lambda: rec.shutdown is not None, what=what)
    mux.run_for(0.02)
    assert rec.names().count("shutdown") == 1 and rec.names()[-1] == "shutdown", rec.events
    assert not rec.violations, rec.violations


class LogLines(logging.Handler):
    """Collects the formatted lines of one logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.lines)


_counter = itertools.count()


def captured_log(flags: int) -> tuple[IInstanceLog, LogLines]:
    """An IInstanceLog with `flags` writing to a fresh logger whose lines are kept."""
    logger = logging.getLogger(f"usocket_asyncio.test.{next(_counter)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = LogLines()
    logger.addHandler(handler)
    return IInstanceLog(flags, logger), handler


def expect_end(
    mux: Mux,
    make: Callable[[Recorder], ISocket],
    action: Callable[[ISocket], None],
    reason: ShutdownReason,
    timeout: float = 10.0,
) -> tuple[ISocket, Recorder]:
    """Make a socket, do `action` on it (nothing may be called back inside), and check that
    the socket's one and only callback is `SocketShutdown(reason)`."""
    rec = Recorder("failing")
    sock = make(rec)
    rec.in_call = True
    try:
        action(sock)
    finally:
        rec.in_call = False
    mux.run_until(lambda: rec.shutdown is not None, timeout=timeout, what=f"{reason.name}")
    mux.run_for(0.02)
    assert rec.events == [("shutdown", reason)], rec.events
    assert not rec.violations, rec.violations
    sock.Delete()
    return sock, rec


def _calling(calls: dict[str, Callable[[], object]], said: dict[str, str]) -> None:
    """Make each of `calls`, noting what each said ("accepted", or the SocketModeError's
    message)."""
    for name, fn in calls.items():
        try:
            fn()
            said[name] = "accepted"
        except SocketModeError as e:
            said[name] = str(e)


def from_another_thread(mux: Mux, calls: dict[str, Callable[[], object]]) -> dict[str, str]:
    """Run each of `calls` on another thread while the loop runs: what each said
    ("accepted", or the SocketModeError's message)."""
    said: dict[str, str] = {}
    done = threading.Event()

    def worker() -> None:
        try:
            _calling(calls, said)
        finally:
            done.set()

    thread = threading.Thread(target=worker)
    mux.loop.call_soon(thread.start)
    mux.run_until(done.is_set, what="the other thread")
    thread.join()
    return said


def from_a_thread_here(calls: dict[str, Callable[[], object]]) -> dict[str, str]:
    """Run each of `calls` on a thread started here and waited for here: called inside a
    callback, the loop's thread stays in that callback while the other thread calls (an
    app handing work off). What each said."""
    said: dict[str, str] = {}
    thread = threading.Thread(target=_calling, args=(calls, said))
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the calls from the other thread did not return"
    return said


def refused(said: dict[str, str], calls: dict[str, Callable[[], object]]) -> None:
    """Every one of `calls` raised the thread check's SocketModeError."""
    for name in calls:
        assert "call_soon_threadsafe" in said.get(name, ""), (name, said.get(name))
