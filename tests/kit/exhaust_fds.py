"""Run out of file descriptors under a listening socket; print a JSON result.

Usage: python tests/kit/exhaust_fds.py asyncio|uvloop

Run by tests/test_load.py in a child process, since it lowers RLIMIT_NOFILE. The client
sockets are made first (their descriptors exist before the limit drops); then the soft
limit is lowered so that only FREE more descriptors can be opened, and every client
connects. The listener accepts FREE of them, then accept() fails with EMFILE: that must
be logged, and the listener must stay up. Then the held connections are closed, and
from now on each accepted connection sends "ok" and closes: the listener must serve
every client still waiting in the backlog.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import sys
import time
from typing import Any

# run as a script: the project and tests/ (the kit's parent) on sys.path, not this directory
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0:1] = [os.path.dirname(_TESTS), _TESTS]

from kit.streams import captured_log  # noqa: E402
from usocket_asyncio import (  # noqa: E402
    CreateTCPSocketProvider,
    IIoMux,
    ISocket,
    LogFlags,
    ShutdownReason,
    USocket,
)

CLIENTS = 40
FREE = 8


class Conn(USocket):
    def __init__(self, app: App) -> None:
        self.app = app

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        self.app.accepted += 1
        if self.app.holding:
            self.app.held.append(socket)
        else:
            socket.Send(b"ok")
            socket.Shutdown()

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        socket.Delete()


class App(USocket):
    def __init__(self) -> None:
        self.bound: int | None = None
        self.ended: ShutdownReason | None = None
        self.accepted = 0
        self.holding = True
        self.held: list[ISocket] = []

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.bound = localPort
        socket.Listen()

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        socket.Accept(Conn(self))

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.ended = reason


def run_until(mux: IIoMux, cond: Any, timeout: float) -> bool:
    async def wait() -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    return bool(mux.loop.run_until_complete(wait()))


def main() -> int:
    mux = IIoMux.Create(uvloop=sys.argv[1] == "uvloop")
    errors: list[str] = []
    mux.loop.set_exception_handler(lambda loop, ctx: errors.append(str(ctx.get("message"))))
    log, handler = captured_log(LogFlags.LOG_TCP)

    clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(CLIENTS)]
    app = App()
    listener = CreateTCPSocketProvider().CreateSocket(mux, app, log)
    listener.Bind("127.0.0.1", 0)
    assert run_until(mux, lambda: app.bound is not None, 10)
    mux.loop.run_until_complete(asyncio.sleep(0.05))  # the loop's own descriptors exist now

    # fill every hole below the highest descriptor, so that exactly FREE are left
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fillers: list[int] = []
    while True:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd > top:
            os.close(fd)
            break
        fillers.append(fd)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1 + FREE, hard))
    for c in clients:
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", app.bound))

    def emfile() -> bool:
        return any("accept failed" in ln and "Too many open files" in ln for ln in handler.lines)

    logged = run_until(mux, emfile, 15)
    mux.loop.run_until_complete(asyncio.sleep(0.5))  # a few retries of the listener
    while_exhausted = app.accepted

    app.holding = False
    for s in app.held:
        s.Delete()
    app.held.clear()

    data = [b""] * CLIENTS
    closed: set[int] = set()

    def all_closed() -> bool:
        for i, c in enumerate(clients):
            if i in closed:
                continue
            try:
                d = c.recv(16)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if d:
                data[i] += d
            else:
                closed.add(i)
                c.close()  # our close ends the server's Shutdown at once
        return len(closed) == CLIENTS

    run_until(mux, all_closed, 30)
    oks = sum(1 for d in data if d == b"ok")
    empties = sum(1 for i, d in enumerate(data) if d == b"" and i in closed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for c in clients:
        c.close()
    for fd in fillers:
        os.close(fd)
    listener_end = app.ended
    listener.Delete()
    mux.loop.run_until_complete(asyncio.sleep(0.05))
    mux.loop.close()
    print(
        json.dumps(
            {
                "clients": CLIENTS,
                "free": FREE,
                "emfile_logged": logged,
                "accepted_while_exhausted": while_exhausted,
                "accepted_total": app.accepted,
                "served_ok": oks,
                "closed_unserved": empties,
                "listener_end": None if listener_end is None else listener_end.name,
                "loop_errors": errors,
                "log_sample": [ln for ln in handler.lines if "accept failed" in ln][:2],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
