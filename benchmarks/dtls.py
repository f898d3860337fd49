"""DTLS: the library's DTLS sockets over loopback against the sans-IO engine driven
directly (two engines back to back in one process, no socket, no loop).

    python -m benchmarks.dtls [--rounds 5]
    python -m benchmarks.dtls --flood     # the engine's bounds under hostile datagrams
    python -m benchmarks.dtls --lossy     # handshake time under loss, by rto_initial

Prints handshakes/s and 1 KiB records/s (ping-pong: one record each way per round
trip), the median of `--rounds` runs each. The gap between the two is what the sockets,
the loop and the kernel's UDP add to OpenSSL's own cost.

`--flood` runs each flood of SECURITY.md's DTLS section in a fresh child process and
prints the growth of its resident size (RSS: OpenSSL's memory too, which tracemalloc
does not see), of Python's traced memory, and the CPU time per datagram. `--lossy`
runs handshakes on a simulated clock with seeded loss and one-way delay for several
first retransmission timeouts (`rto_initial`) and prints the median and 90th
percentile of the time to complete and the datagrams sent.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
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
from usocket_asyncio._dtls_core import (
    MAX_HANDSHAKING_PEERS,
    ApplicationData,
    CookieListener,
    DtlsConfig,
    DtlsConnection,
)

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


# --------------------------------------------------------------------------- floods


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _hello() -> bytes:
    c = DtlsConnection(_configs()[0])
    c.start(0.0)
    return c.datagrams_to_send()[0]


def _record(ctype: int, seq: int, body: bytes, epoch: int = 0) -> bytes:
    head = bytes([ctype, 0xFE, 0xFD]) + epoch.to_bytes(2, "big") + seq.to_bytes(6, "big")
    return head + len(body).to_bytes(2, "big") + body


def _fragment(mseq: int, body: bytes) -> bytes:
    n = len(body).to_bytes(3, "big")
    return bytes([11]) + n + mseq.to_bytes(2, "big") + bytes(3) + n + body


def _handshaking_server() -> DtlsConnection:
    """A server (no cookie) in handshake: it has the client's ClientHello and sent its
    flight."""
    ccfg, scfg = _configs()
    c = DtlsConnection(ccfg)
    s = DtlsConnection(scfg, cookie=False, peer=ADDR)
    c.start(0.0)
    s.start(0.0)
    for d in c.datagrams_to_send():
        s.receive_datagram(d, 0.0, ADDR)
    s.datagrams_to_send()
    return s


def _flood_case(name: str) -> dict[str, Any]:
    """One flood, measured in this process (a fresh child of `flood`)."""
    rng = random.Random(1)
    feed: Any
    if name == "oversized ClientHellos at a listener":
        lst = CookieListener(_configs()[1])
        hello = _hello()
        big = hello + bytes(65507 - len(hello))
        data = [big] * 2000

        def feed(i: int, d: bytes) -> None:
            lst.receive(d, ("127.0.0.9", 1024 + i), 0.0)

    else:
        s = _handshaking_server()
        if name == "junk (no well-formed record)":
            data = [bytes([rng.randint(20, 63)]) + rng.randbytes(60) for _ in range(100_000)]
        elif name == "ignored epoch-0 records, one per datagram":
            data = [_record(22, 5, _fragment(1000 + i % 60000, bytes(8))) for i in range(100_000)]
        elif name == "65507-byte datagrams packed with ignored records":
            one = _record(22, 5, _fragment(2000, bytes(8)))
            data = [(one * (65507 // len(one)))[:65507] for _ in range(2000)]
        elif name == "33-byte junk after 600 primers and an early CCS":
            # each primer: one record of 90 empty messages far ahead (numbers 20 on,
            # which OpenSSL drops); the engine before the bounds noted all 54,000 and
            # walked them for every datagram once a ChangeCipherSpec was held
            for i in range(600):
                body = b"".join(_fragment(20 + i * 90 + k, b"") for k in range(90))
                s.receive_datagram(_record(22, 100 + i, body), 0.0, ADDR)
            ccs = _record(20, 1000, b"\x01") + _record(22, 0, bytes(40), 1)
            s.receive_datagram(ccs, 0.0, ADDR)
            data = [_record(22, 2000 + i, _fragment(60_000, bytes(8))) for i in range(2_000)]
            assert all(len(d) == 33 for d in data)
        else:
            raise SystemExit(f"unknown flood {name!r}")

        def feed(i: int, d: bytes) -> None:
            s.receive_datagram(d, 0.0, ADDR)

    feed(0, data[0])
    gc.collect()
    tracemalloc.start()
    base_t = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    base = _rss()
    t = time.process_time()
    for i, d in enumerate(data):
        feed(i, d)
    cpu = time.process_time() - t
    gc.collect()
    grown = _rss() - base
    # traced memory, in a second pass (tracing slows the first)
    tracemalloc.start()
    for i, d in enumerate(data[:2000]):
        feed(i, d)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base_t
    tracemalloc.stop()
    return {"n": len(data), "rss": grown, "traced": traced, "us": cpu / len(data) * 1e6}


def _listener_most() -> dict[str, Any]:
    """A listener's most: its spare connection and MAX_HANDSHAKING_PEERS connections in
    handshake, each holding the largest early ChangeCipherSpec tail (a 65507-byte
    datagram) and a full set of peer digests."""
    base = _rss()
    gc.collect()
    tracemalloc.start()
    t0 = tracemalloc.get_traced_memory()[0]
    lst = CookieListener(_configs()[1])
    conns = []
    ccfg = _configs()[0]
    for i in range(MAX_HANDSHAKING_PEERS):
        addr = ("127.0.0.9", 1024 + i)
        c = DtlsConnection(ccfg)
        c.start(0.0)
        out, _, _ = lst.receive(c.datagrams_to_send()[0], addr, 0.0)
        c.receive_datagram(out[0], 0.0)
        _, conn, _ = lst.receive(c.datagrams_to_send()[0], addr, 0.0)
        assert conn is not None
        conn.accept_verified(0.0)
        conn.datagrams_to_send()
        for k in range(100):
            junk = _record(22, 5, _fragment(5000 + k, bytes(8)))
            conn.receive_datagram(junk, 0.0, addr)
        big = _record(23, 1, bytes(2**14), 1)
        tail = _record(20, 7, b"\x01") + big * 3
        tail += _record(23, 2, bytes(65507 - len(tail) - 13), 1)
        conn.receive_datagram(tail, 0.0, addr)
        conns.append(conn)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - t0
    tracemalloc.stop()
    return {"n": len(conns), "rss": _rss() - base, "traced": traced, "us": 0.0}


def replay(seconds: float = 10.0, every: float = 0.001) -> tuple[int, int, int]:
    """The client's ClientHello replayed to a server in handshake every `every` s of
    simulated time for `seconds`: (bytes in, bytes out, the server's flight size)."""
    ccfg, scfg = _configs()
    c = DtlsConnection(ccfg)
    s = DtlsConnection(scfg, cookie=False, peer=ADDR, handshake_timeout=seconds + 1)
    c.start(0.0)
    (ch,) = c.datagrams_to_send()
    s.start(0.0)
    s.receive_datagram(ch, 0.0, ADDR)
    flight = sum(map(len, s.datagrams_to_send()))
    got = sent = 0
    now = 0.0
    for _ in range(int(seconds / every)):
        now += every
        if (t := s.get_timer()) is not None and t <= now:
            s.handle_timer(now)
        s.receive_datagram(ch, now, ADDR)
        got += len(ch)
        sent += sum(map(len, s.datagrams_to_send()))
    return got, sent, flight


FLOODS = [
    "oversized ClientHellos at a listener",
    "junk (no well-formed record)",
    "ignored epoch-0 records, one per datagram",
    "65507-byte datagrams packed with ignored records",
    "33-byte junk after 600 primers and an early CCS",
]


def flood() -> None:
    """Each flood in a fresh child process; prints one table."""
    print(
        f"{'flood (at a server engine in handshake unless said)':52}{'datagrams':>10}"
        f"{'RSS':>10}{'traced':>10}{'CPU/datagram':>14}"
    )
    for name in [*FLOODS, "listener"]:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.dtls", "--flood-case", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out)
        label = (
            name
            if name != "listener"
            else (f"the most a listener holds ({MAX_HANDSHAKING_PEERS} handshakes, held tails)")
        )
        print(
            f"{label:52}{r['n']:>10}{r['rss'] / 1e6:>8.1f}MB{r['traced'] / 1e3:>8.0f}kB"
            f"{r['us']:>12.1f}us"
        )
    got, sent, size = replay()
    print(
        f"a ClientHello replayed every 1 ms for 10 s (simulated) to a server in handshake: "
        f"{got} bytes in, {sent} out ({sent / got:.3f}x; its flight is {size} bytes, "
        f"sent again {sent / size:.0f} times, timer included)"
    )


# --------------------------------------------------------------------------- loss


def _lossy_run(rto: float, loss: float, delay: float, seed: int) -> tuple[float | None, int]:
    """One handshake (cookie exchange included) on a simulated clock: each datagram is
    lost with probability `loss`, else delivered `delay` s later. (time, datagrams sent)."""
    rng = random.Random(seed)
    ccfg, scfg = _configs()
    c = DtlsConnection(ccfg, rto_initial=rto)
    s = DtlsConnection(scfg, cookie=True, peer=ADDR, rto_initial=rto)
    q: list[tuple[float, int, DtlsConnection, bytes]] = []
    n = sent = 0
    now = 0.0
    c.start(0.0)
    s.start(0.0)

    def flush(src: DtlsConnection, dst: DtlsConnection) -> None:
        nonlocal n, sent
        for d in src.datagrams_to_send():
            sent += 1
            if rng.random() >= loss:
                n += 1
                heapq.heappush(q, (now + delay, n, dst, d))

    flush(c, s)
    while not (c.established and s.established):
        due = [t for t in (c.get_timer(), s.get_timer()) if t is not None]
        if q:
            due.append(q[0][0])
        if not due or c.ended or s.ended:
            return None, sent
        now = min(due)
        if q and q[0][0] == now:
            _, _, dst, d = heapq.heappop(q)
            dst.receive_datagram(d, now, ADDR)
        for e in (c, s):
            t = e.get_timer()
            if t is not None and t <= now:
                e.handle_timer(now)
        flush(c, s)
        flush(s, c)
    return now, sent


def lossy(runs: int = 300) -> None:
    rtos = (1.0, 0.25, 0.1, 0.05)
    print(
        f"handshake time (median / 90th percentile, s) and datagrams sent, {runs} seeds;"
        " failed: no result in 30 s"
    )
    for delay in (0.001, 0.05, 0.15):
        for loss in (0.0, 0.1, 0.3):
            cells = []
            for rto in rtos:
                res = [_lossy_run(rto, loss, delay, seed) for seed in range(runs)]
                ts = sorted(t for t, _ in res if t is not None)
                failed = sum(1 for t, _ in res if t is None)
                sent = statistics.mean(x for _, x in res)
                cells.append(
                    f"rto {rto:g}: {statistics.median(ts):.2f}/{ts[int(len(ts) * 0.9)]:.2f}"
                    f" {sent:.0f}dg{f' {failed} failed' if failed else ''}"
                )
            print(f"one-way {delay * 1000:3.0f} ms, loss {loss:3.0%}: " + " | ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--handshakes", type=int, default=30)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--flood", action="store_true", help="the engine's bounds under floods")
    ap.add_argument("--flood-case", help=argparse.SUPPRESS)
    ap.add_argument("--lossy", action="store_true", help="handshake time under loss")
    args = ap.parse_args()
    if args.flood_case:
        case = args.flood_case
        print(json.dumps(_listener_most() if case == "listener" else _flood_case(case)))
        return
    if args.flood:
        flood()
        return
    if args.lossy:
        lossy()
        return
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
