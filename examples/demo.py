"""The echo server and client in one process over loopback: the first thing to run.

    python -m examples.demo [--uvloop]

The server binds 127.0.0.1 on a free port; three clients connect one after another,
each sends a few lines and checks the greeting and the echoes; then the server stops
listening and the loop ends. An `ITimer` bounds the whole run. Exit status 0 on success.
"""

from __future__ import annotations

import argparse
import logging

from examples.echo_client import EchoClient
from examples.echo_server import EchoServer
from usocket_asyncio import LOG_APP, LOG_TCP, IInstanceLog, IIoMux, ITimer, UTimer

CLIENTS = 3
TIME_LIMIT_MS = 10_000


class Demo(UTimer):
    """Runs the server, then the clients one by one, under a time limit."""

    def __init__(self, iomux: IIoMux, log: IInstanceLog) -> None:
        self.iomux = iomux
        self.log = log
        self.results: list[bool] = []
        self.timed_out = False
        self.timer = ITimer(iomux, self)
        self.timer.Start(TIME_LIMIT_MS)
        self.server = EchoServer(iomux, log, 0, bind="127.0.0.1", on_ready=self.ready)

    def ready(self, port: int) -> None:
        self.port = port
        self.next_client()

    def next_client(self) -> None:
        n = len(self.results)
        lines = [f"line {i} of client {n}" for i in range(1, 4)]
        EchoClient(self.iomux, self.log, f"127.0.0.1:{self.port}", lines, on_done=self.done)

    def done(self, client: EchoClient) -> None:
        self.results.append(client.ok)
        if len(self.results) < CLIENTS and client.ok:
            self.next_client()
            return
        self.timer.Cancel()
        self.server.Close()
        self.iomux.Terminate()

    def TimerOnTimeout(self, timer: ITimer) -> None:
        self.log.Log(LOG_APP, "demo: time limit reached")
        self.timed_out = True
        self.iomux.Terminate()

    @property
    def ok(self) -> bool:
        return not self.timed_out and len(self.results) == CLIENTS and all(self.results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("-v", "--verbose", action="store_true", help="also log the library (LOG_TCP)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = IInstanceLog(LOG_APP | (LOG_TCP if args.verbose else 0))
    iomux = IIoMux.Create(uvloop=args.uvloop)
    demo = Demo(iomux, log)
    try:
        iomux.Run()
        iomux.loop.run_until_complete(iomux.loop.shutdown_asyncgens())
    finally:
        iomux.Close()
    print(
        f"demo: {sum(demo.results)}/{CLIENTS} clients echoed correctly"
        + (" (timed out)" if demo.timed_out else "")
    )
    return 0 if demo.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
