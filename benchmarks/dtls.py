"""DTLS: the library's DTLS sockets over loopback against the sans-IO engine driven
directly (two engines back to back in one process, no socket, no loop).

    python -m benchmarks.dtls [--rounds 5]

Prints handshakes/s and 1 KiB records/s (ping-pong: one record each way per round
trip), the median of `--rounds` runs each. The gap between the two is what the sockets,
the loop and the kernel's UDP add to OpenSSL's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from usocket_asyncio import (
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    IInstanceLog,
    IIoMux,
    ISocket,
    ShutdownReason,
    USocket,
)
from usocket_asyncio._context import default_server_cert
from usocket_asyncio._dtls_core import ApplicationData, DtlsConfig, DtlsConnection

RECORD = bytes(1024)
ADDR = ("127.0.0.1", 1)


# --------------------------------------------------------------------------- the engine


def _configs() -> tuple[DtlsConfig, DtlsConfig]:
    pem = default_server_cert().pem
    return DtlsConfig(False, None, use_srtp=True, verify=False), DtlsConfig(
        True, pem, use_srtp=True
    )


def _shuttle(a: DtlsConnection, b: DtlsConnection) -> None:
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for d in src.datagrams_to_send():
                moved = True
                dst.receive_datagram(d, 0.0, ADDR)


def engine_handshakes(n: int) -> float:
    ccfg, scfg = _configs()
    t = time.perf_counter()
    for _ in range(n):
        c = DtlsConnection(ccfg)
        s = DtlsConnection(scfg, peer=ADDR)
        c.start(0.0)
        _shuttle(c, s)
        assert c.established and s.established
    return n / (time.perf_counter() - t)


def engine_records(n: int) -> float:
    ccfg, scfg = _configs()
    c = DtlsConnection(ccfg)
    s = DtlsConnection(scfg, peer=ADDR)
    c.start(0.0)
    _shuttle(c, s)
    c.next_event()
    s.next_event()
    t = time.perf_counter()
    for _ in range(n):
        c.send_data(RECORD)
        _shuttle(c, s)
        ev = s.next_event()
        assert isinstance(ev, ApplicationData)
        s.send_data(ev.data)
        _shuttle(c, s)
        assert isinstance(c.next_event(), ApplicationData)
    return n / (time.perf_counter() - t)


# --------------------------------------------------------------------------- the sockets


class _User(USocket):
    def __init__(self, bench: _SocketBench, role: str) -> None:
        self.bench = bench
        self.role = role
        self.buf = bytearray(2048)

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.bench.port = localPort
        socket.Listen()

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        socket.Accept(_User(self.bench, "peer"))

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        self.bench.peers.append(socket)
        socket.Recv(self.buf)

    def SocketConnectComplete(self, socket: ISocket) -> None:
        self.bench.connected += 1

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        if self.role == "peer":
            socket.Send(buf, len)
        else:
            self.bench.echoes += 1
        socket.Recv(self.buf)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        pass


class _SocketBench:
    def __init__(self) -> None:
        self.mux = IIoMux.Create()
        self.log = IInstanceLog(0)
        self.prov = CreateTLSSocketProvider(CreateTCPSocketProvider())
        self.sctx = self.prov.CreateSocketContext(self.log)
        self.sctx.EnableDTLS(True)
        self.cctx = self.prov.CreateSocketContext(self.log)
        self.cctx.EnableDTLS(True)
        self.cctx.DisableCertificateVerification()
        self.port = 0
        self.connected = 0
        self.echoes = 0
        self.peers: list[ISocket] = []
        self.listener = self.prov.CreateSocket(
            self.mux, _User(self, "listener"), self.log, False, self.sctx
        )
        self.listener.Bind("127.0.0.1", 0)
        self._until(lambda: self.port != 0)

    def _until(self, cond: Any, timeout: float = 30.0) -> None:
        import asyncio

        async def wait() -> None:
            deadline = time.monotonic() + timeout
            while not cond():
                if time.monotonic() > deadline:
                    raise TimeoutError("benchmark stalled")
                await asyncio.sleep(0)

        self.mux.loop.run_until_complete(wait())

    def client(self) -> ISocket:
        cli = self.prov.CreateSocket(self.mux, _User(self, "client"), self.log, False, self.cctx)
        want = self.connected + 1
        cli.Connect(f"127.0.0.1:{self.port}")
        self._until(lambda: self.connected >= want)
        return cli

    def handshakes(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            cli = self.client()
            cli.Delete()
            for p in self.peers:
                p.Delete()
            self.peers.clear()
        return n / (time.perf_counter() - t)

    def records(self, n: int) -> float:
        cli = self.client()
        buf = bytearray(2048)
        cli.Recv(buf)
        self._until(lambda: bool(self.peers))
        start = self.echoes
        t = time.perf_counter()
        for i in range(n):
            cli.Send(RECORD)
            self._until(lambda i=i: self.echoes - start > i)
        rate = n / (time.perf_counter() - t)
        cli.Delete()
        for p in self.peers:
            p.Delete()
        self.peers.clear()
        return rate

    def close(self) -> None:
        self.listener.Delete()
        self.mux.loop.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--handshakes", type=int, default=30)
    ap.add_argument("--records", type=int, default=2000)
    args = ap.parse_args()
    bench = _SocketBench()
    rows: dict[str, list[float]] = {k: [] for k in ("eh", "sh", "er", "sr")}
    try:
        for _ in range(args.rounds):
            rows["eh"].append(engine_handshakes(args.handshakes))
            rows["sh"].append(bench.handshakes(args.handshakes))
            rows["er"].append(engine_records(args.records))
            rows["sr"].append(bench.records(args.records))
    finally:
        bench.close()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"DTLS 1.2, median of {args.rounds} runs")
    print(f"{'':28}{'handshakes/s':>14}{'1 KiB records/s (ping-pong)':>30}")
    print(f"{'engine driven directly':28}{med['eh']:>14.0f}{med['er']:>30.0f}")
    print(f"{'library DTLS sockets':28}{med['sh']:>14.0f}{med['sr']:>30.0f}")
    print(f"{'sockets / engine':28}{med['sh'] / med['eh']:>14.2f}{med['sr'] / med['er']:>30.2f}")


if __name__ == "__main__":
    main()
