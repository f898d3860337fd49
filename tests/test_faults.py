"""Every socket kind through the fault-injection relay (tests/kit/relays.py), on both loops.

Each test checks what a user would: the bytes that arrive are exactly the bytes sent
(hashed), or for a cut connection exactly the bytes before the cut; the right
`ShutdownReason`; exactly one `SocketShutdown`, and nothing after it.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from typing import Any

import pytest
from kit.conformance import STREAM_KINDS as PLAIN_KINDS
from kit.conformance import Pump, StreamKind, call, close_pair, connect, listen, sha, tls_kind
from kit.loop import Mux, Recorder, have_ipv6
from kit.relays import (
    DatagramFaults,
    DatagramRelay,
    StreamFaults,
    StreamRelay,
    drop_first,
    dtls_content_type,
)

from usocket_asyncio import (
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    ShutdownReason,
)

R = ShutdownReason
STREAM_KINDS = ["tcp4", "tcp6", "local", "tls12", "tls13"]


def stream_kind(name: str, ca: Any) -> StreamKind:
    if name == "tcp6" and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    if name.startswith("tls"):
        return tls_kind(ca, name)
    return PLAIN_KINDS[name]


_OPEN_RELAYS: list[StreamRelay | DatagramRelay] = []


@pytest.fixture(autouse=True)
def _close_relays(mux: Mux) -> Any:
    """Close the relays a test made, also when it failed half-way (before the loop goes)."""
    yield
    while _OPEN_RELAYS:
        relay = _OPEN_RELAYS.pop()
        try:
            relay.close()
        except Exception:
            pass


class Relayed:
    """A library client connected through a relay to a library server."""

    def upload(self, data: bytes, seed_a: int, seed_b: int) -> None:
        """The client sends `data`; the server reads as much (the pumps run on)."""
        Pump(self.client, self.crec, data, 0, seed_a).start()
        Pump(self.server, self.srec, b"", len(data), seed_b).start()

    def __init__(
        self,
        mux: Mux,
        log: IInstanceLog,
        kind: StreamKind,
        tmp: str,
        up: StreamFaults | None = None,
        down: StreamFaults | None = None,
    ) -> None:
        self.mux = mux
        self.listener, self.lrec, accepted, address = listen(mux, log, kind, tmp)
        self.relay = StreamRelay(mux.loop, address, os.path.join(tmp, "relay"), up, down)
        _OPEN_RELAYS.append(self.relay)
        self.client, self.crec = connect(mux, log, kind, self.relay.address)
        mux.run_until(lambda: bool(accepted) and "connect" in self.crec.names(), what="connect")
        self.server, self.srec = accepted[0]

    def close(self) -> None:
        from kit.conformance import Pair

        close_pair(
            self.mux,
            Pair(
                self.listener,
                self.lrec,
                self.server,
                self.srec,
                self.client,
                self.crec,
                self.relay.address,
            ),
        )
        self.relay.close()
        assert not self.relay.errors, self.relay.errors


def ended_once(rec: Recorder, *reasons: ShutdownReason) -> None:
    """Exactly one SocketShutdown, the last callback, with one of `reasons`."""
    assert not rec.violations, rec.violations
    assert rec.names().count("shutdown") == 1, rec.events[-5:]
    assert rec.names()[-1] == "shutdown"
    assert rec.shutdown in reasons, (rec.shutdown, reasons)


# --------------------------------------------------------------------------- stream


@pytest.mark.parametrize("name", STREAM_KINDS)
def test_split_and_delay_lose_nothing(
    mux: Mux, log: IInstanceLog, ca: Any, name: str, short_tmp: str
) -> None:
    """Client to server in 1-byte segments, server to client in delayed chunks: both
    hashes match, every Send got its SendResult, then a clean end on both sides."""
    kind = stream_kind(name, ca)
    r = Relayed(
        mux, log, kind, short_tmp, up=StreamFaults(split=True), down=StreamFaults(delay=0.001)
    )
    rng = random.Random(11)
    a, b = rng.randbytes(6000), rng.randbytes(400_000)
    pa = Pump(r.client, r.crec, a, len(b), 12)
    pb = Pump(r.server, r.srec, b, len(a), 13)
    pa.start()
    pb.start()
    mux.run_until(lambda: pa.done() and pb.done(), timeout=40, what="transfer")
    assert sha(r.srec.received) == sha(a) and sha(r.crec.received) == sha(b)
    assert r.relay.stats["up"].writes >= len(a)  # every byte its own write
    assert r.crec.sends_done == pa.sends and r.srec.sends_done == pb.sends
    call(r.crec, r.client.Shutdown)
    call(r.srec, r.server.Recv, bytearray(16), 16, True)
    mux.run_until(lambda: r.crec.shutdown is not None and r.srec.shutdown is not None)
    ended_once(r.crec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(r.srec, R.SOCKET_SHUTDOWN_BY_PEER)
    mux.run_for(0.02)
    ended_once(r.crec, R.SOCKET_SHUTDOWN_NORMAL)
    r.close()


@pytest.mark.parametrize("name", STREAM_KINDS)
def test_half_close_at_offset(
    mux: Mux, log: IInstanceLog, ca: Any, name: str, short_tmp: str
) -> None:
    """The relay sends FIN to the server after `cut` bytes of the client's stream. A
    plain stream: the server gets exactly those bytes, then SOCKET_SHUTDOWN_BY_PEER. TLS:
    a cut without close_notify is truncation, SOCKET_LOST, after a prefix of the data."""
    kind = stream_kind(name, ca)
    cut = 100_017
    r = Relayed(mux, log, kind, short_tmp, up=StreamFaults(half_close_at=cut))
    data = random.Random(21).randbytes(300_000)
    r.upload(data, 22, 23)
    mux.run_until(lambda: r.srec.shutdown is not None, timeout=20, what="server end")
    got = bytes(r.srec.received)
    tls = name.startswith("tls")
    if tls:
        assert 0 < len(got) < cut and got == data[: len(got)]
        ended_once(r.srec, R.SOCKET_LOST)
    else:
        assert sha(got) == sha(data[:cut])
        ended_once(r.srec, R.SOCKET_SHUTDOWN_BY_PEER)
    # the server's end reaches the client through the other way (the relay drops what
    # the client still sends); its sends that completed did so in order, before the end
    call(r.crec, r.client.Recv, bytearray(8), 8, True)
    mux.run_until(lambda: r.crec.shutdown is not None, what="client end")
    ended_once(r.crec, R.SOCKET_SHUTDOWN_BY_PEER, *((R.SOCKET_LOST,) if tls else ()))
    assert r.relay.stats["up"].half_closes == 1
    r.close()


@pytest.mark.parametrize("name", STREAM_KINDS)
def test_reset_at_offset(mux: Mux, log: IInstanceLog, ca: Any, name: str, short_tmp: str) -> None:
    """The relay resets both sides after `cut` bytes of the client's stream: the server
    gets every byte before the reset (a plain stream: exactly `cut`), then SOCKET_LOST;
    the client gets SOCKET_LOST too. A local socket has no reset: its close may look
    like the peer's ordinary close."""
    kind = stream_kind(name, ca)
    cut = 65_537
    r = Relayed(mux, log, kind, short_tmp, up=StreamFaults(reset_at=cut))
    data = random.Random(31).randbytes(400_000)
    r.upload(data, 32, 33)
    mux.run_until(
        lambda: r.srec.shutdown is not None and r.crec.shutdown is not None,
        timeout=20,
        what="both ends",
    )
    got = bytes(r.srec.received)
    lost: tuple[ShutdownReason, ...] = (R.SOCKET_LOST,)
    if name == "local":
        lost += (R.SOCKET_SHUTDOWN_BY_PEER,)
    if name.startswith("tls"):
        assert 0 < len(got) < cut and got == data[: len(got)]
    else:
        assert sha(got) == sha(data[:cut])
    ended_once(r.srec, *lost)
    ended_once(r.crec, *lost)
    assert r.relay.stats["up"].resets == 1
    mux.run_for(0.02)
    ended_once(r.srec, *lost)
    r.close()


def _tcp_wmem_max() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024


@pytest.mark.parametrize("name", STREAM_KINDS)
def test_stalled_reader_backs_up_then_delivers(
    mux: Mux, log: IInstanceLog, ca: Any, name: str, short_tmp: str
) -> None:
    """The relay stops reading after `at` bytes while the client has 12 MB (at least
    three times what the kernel buffers on the way hold) to send in 64 kB Sends: the
    SendResults stop once those buffers are full (at most their size plus a few Sends in
    flight is reported sent), the server has at most what came before the stall. After
    the release every byte arrives, and every SendResult follows, in order."""
    kind = stream_kind(name, ca)
    at = 65_536
    chunk = 65_536
    r = Relayed(mux, log, kind, short_tmp, up=StreamFaults(stall_at=at))
    # the client's kernel send buffer holds at most tcp_wmem's maximum (4 MB by default),
    # plus what the relay's small receive buffer and the transports above hold
    bound = _tcp_wmem_max() + at + 4 * chunk
    data = random.Random(41).randbytes(max(12_000_000, 3 * bound))
    sends = 0
    for off in range(0, len(data), chunk):
        call(r.crec, r.client.Send, data[off : off + chunk])
        sends += 1
    pb = Pump(r.server, r.srec, b"", len(data), 42)
    pb.start()
    mux.run_until(lambda: r.relay.stats["up"].stalls == 1, what="stall")
    if not name.startswith("tls"):
        mux.run_until(lambda: len(r.srec.received) == at, what="bytes before the stall")
    mux.run_for(0.1)
    assert r.crec.sends_done * chunk <= bound, r.crec.sends_done
    assert r.crec.sends_done < sends
    assert len(r.srec.received) <= at
    r.relay.release()
    mux.run_until(lambda: len(r.srec.received) == len(data), timeout=40, what="the rest")
    mux.run_until(lambda: r.crec.sends_done == sends, what="send results")
    assert sha(r.srec.received) == sha(data)
    assert r.crec.names() == ["connect"] + ["send"] * sends
    r.close()


# --------------------------------------------------------------------------- datagram


def _expected(n: int, drop: set[int], hold: set[int]) -> list[int]:
    """The order a relay forwards `n` datagrams with these faults (hold = swap with the
    next one forwarded)."""
    out: list[int] = []
    held: list[int] = []
    for i in range(n):
        if i in drop:
            continue
        if i in hold:
            held.append(i)
            continue
        out.append(i)
        out.extend(held)
        held.clear()
    return out + held


@pytest.mark.parametrize("ipv6", [False, True], ids=["udp4", "udp6"])
def test_udp_drop_and_reorder(mux: Mux, log: IInstanceLog, ipv6: bool) -> None:
    """Chosen datagrams dropped and swapped both ways: the server gets exactly the
    others, in the relay's order, each intact (hashed); so does the client for the
    echoes; nothing is duplicated; each socket ends once, NORMAL."""
    if ipv6 and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    host = "::1" if ipv6 else "127.0.0.1"
    n = 40
    rng = random.Random(51)
    payloads = [rng.randbytes(rng.randrange(0, 1400)) for _ in range(n)]
    up_drop, up_hold = {3, 10, 11}, {5, 20}
    down_drop, down_hold = {2, 30}, {7}
    prov = CreateUDPSocketProvider()

    srec = Recorder("server")
    server = prov.CreateSocket(mux, srec, log, ipv6)
    got_up: list[int] = []

    def on_from(s: ISocket, buf: Any, k: int, addr: Any, port: int) -> None:
        seq, digest = struct.unpack("!I32s", bytes(buf[:36]))
        body = bytes(buf[36:k])
        assert hashlib.sha256(body).digest() == digest and body == payloads[seq]
        got_up.append(seq)
        s.SendTo(bytes(buf[:k]), k, addr, port)
        s.Recv(bytearray(2048))

    srec.hooks["recvfrom"] = on_from
    call(srec, server.Bind, host, 0)
    mux.run_until(lambda: "bind" in srec.names())
    call(srec, server.Recv, bytearray(2048))
    port = srec.events[0][2]
    target = f"[{host}]:{port}" if ipv6 else f"{host}:{port}"
    relay = DatagramRelay(
        mux.loop,
        target,
        up=DatagramFaults(drop=frozenset(up_drop), hold=frozenset(up_hold)),
        down=DatagramFaults(drop=frozenset(down_drop), hold=frozenset(down_hold)),
    )
    _OPEN_RELAYS.append(relay)
    crec = Recorder("client")
    client = prov.CreateSocket(mux, crec, log, ipv6)
    got_down: list[int] = []

    def on_recv(s: ISocket, buf: Any, k: int) -> None:
        seq, digest = struct.unpack("!I32s", bytes(buf[:36]))
        assert hashlib.sha256(bytes(buf[36:k])).digest() == digest
        got_down.append(seq)
        s.Recv(bytearray(2048))

    crec.hooks["recv"] = on_recv
    call(crec, client.Connect, relay.address)
    call(crec, client.Recv, bytearray(2048))
    mux.run_until(lambda: "connect" in crec.names())
    for seq, body in enumerate(payloads):
        dgram = struct.pack("!I32s", seq, hashlib.sha256(body).digest()) + body
        call(crec, client.Send, dgram)
        # one at a time: only the relay's faults may lose or reorder anything
        mux.run_until(lambda seq=seq: relay.ways["up"].seen == seq + 1, what="relay saw it")  # type: ignore[misc]
    expect_up = _expected(n, up_drop, up_hold)
    mux.run_until(lambda: len(got_up) == len(expect_up), what="server got all")
    expect_down = [expect_up[i] for i in _expected(len(expect_up), down_drop, down_hold)]
    mux.run_until(lambda: len(got_down) == len(expect_down), what="client got all")
    mux.run_for(0.05)
    assert got_up == expect_up
    assert got_down == expect_down
    assert relay.ways["up"].dropped == sorted(up_drop)
    assert crec.sends_done == n and srec.sends_done == len(expect_up)
    for sock, rec in ((client, crec), (server, srec)):
        call(rec, sock.Shutdown)
    mux.run_until(lambda: crec.shutdown is not None and srec.shutdown is not None)
    mux.run_for(0.02)
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(srec, R.SOCKET_SHUTDOWN_NORMAL)
    relay.close()
    client.Delete()
    server.Delete()


def test_udp_rule_drops_by_content(mux: Mux, log: IInstanceLog) -> None:
    """A rule decides by content (as a DTLS test drops a handshake flight): the first two
    datagrams that look like DTLS handshake records are lost, everything else arrives,
    in order, once."""
    prov = CreateUDPSocketProvider()
    srec = Recorder("server")
    server = prov.CreateSocket(mux, srec, log)
    call(srec, server.Bind, "127.0.0.1", 0)
    mux.run_until(lambda: "bind" in srec.names())
    for _ in range(8):
        call(srec, server.Recv, bytearray(100))
    relay = DatagramRelay(
        mux.loop,
        f"127.0.0.1:{srec.events[0][2]}",
        up=DatagramFaults(rule=drop_first(2, lambda d: dtls_content_type(d) == 22)),
    )
    _OPEN_RELAYS.append(relay)
    crec = Recorder("client")
    client = prov.CreateSocket(mux, crec, log)
    call(crec, client.Connect, relay.address)
    hello = b"\x16\xfe\xfd" + bytes(10)  # a DTLS 1.2 handshake record header
    sent = [hello + b"1", b"plain1", hello + b"2", hello + b"3", b"plain2"]
    for d in sent:
        call(crec, client.Send, d)
    mux.run_until(lambda: srec.names().count("recvfrom") == 3, what="three datagrams")
    mux.run_for(0.05)
    got = [e[1] for e in srec.events if e[0] == "recvfrom"]
    assert got == [6, 14, 6] and srec.received == b"plain1" + hello + b"3" + b"plain2"
    assert relay.ways["up"].dropped == [0, 2]
    client.Delete()
    server.Delete()


@pytest.mark.parametrize("version", ["tls12", "tls13"])
def test_tls_upgrade_through_split_segments(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, short_tmp: str
) -> None:
    """STARTTLS through the relay, every byte its own segment both ways: the client
    upgrades right after its plaintext line, the server once it has read that line (the
    ClientHello trickles in byte by byte around the hand-over). Both upgrades complete,
    the application data arrives intact both ways, and no TCP user sees a byte of TLS."""
    from kit.certs import make_ctx, pem_of

    kind = PLAIN_KINDS["tcp4"]
    r = Relayed(
        mux,
        log,
        kind,
        short_tmp,
        up=StreamFaults(split=True),
        down=StreamFaults(split=True, delay=0.0005),
    )
    prov = CreateTLSSocketProvider(None)
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"), version=version)
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    rng = random.Random(61)
    a, b = rng.randbytes(20_000), rng.randbytes(30_000)
    call(r.crec, r.client.Send, b"STARTTLS\r\n")
    c = Recorder("tls-client")
    tls_c = call(r.crec, prov.UpgradeToTLSSocket, r.client, mux, c, log, False, cctx)
    s = Recorder("tls-server")
    got: list[ISocket] = []

    def on_line(sock: ISocket, buf: Any, n: int) -> None:
        assert bytes(buf[:n]) == b"STARTTLS\r\n"
        got.append(prov.UpgradeToTLSSocket(sock, mux, s, log, True, sctx))

    r.srec.hooks["recv"] = on_line
    call(r.srec, r.server.Recv, bytearray(10))
    mux.run_until(lambda: "upgraded" in c.names() and "upgraded" in s.names(), timeout=30)
    pc = Pump(tls_c, c, a, len(b), 62)
    ps = Pump(got[0], s, b, len(a), 63)
    pc.start()
    ps.start()
    mux.run_until(lambda: pc.done() and ps.done(), timeout=40, what="data")
    assert sha(c.received) == sha(b) and sha(s.received) == sha(a)
    assert r.srec.received == b"STARTTLS\r\n" and not r.crec.received
    assert r.relay.stats["up"].writes == r.relay.stats["up"].forwarded
    call(c, tls_c.Shutdown)
    call(s, got[0].Recv, bytearray(1))
    mux.run_until(lambda: c.shutdown is not None and s.shutdown is not None, timeout=20)
    ended_once(c, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(s, R.SOCKET_SHUTDOWN_BY_PEER)
    tls_c.Delete()
    got[0].Delete()
    r.listener.Delete()
    r.relay.close()
    for rec in (c, s, r.crec, r.srec):
        assert not rec.violations, rec.violations


@pytest.mark.parametrize("fault", ["reset", "half_close"])
@pytest.mark.parametrize("name", ["tls12", "tls13"])
def test_tls_fault_during_the_handshake(
    mux: Mux, log: IInstanceLog, ca: Any, name: str, fault: str, short_tmp: str
) -> None:
    """The relay cuts the client's ClientHello after 100 bytes (a reset, or a FIN): the
    client ends with SOCKET_TLS_HANDSHAKE_FAILED (its TCP connection did open), the
    accepted socket with SOCKET_TLS_HANDSHAKE_FAILED, never SocketAcceptComplete; each
    once, and the listener goes on serving."""
    kind = stream_kind(name, ca)
    recs: list[Recorder] = []

    def factory() -> Recorder:
        recs.append(Recorder(f"accepted{len(recs)}"))
        return recs[-1]

    listener, _lrec, accepted, address = listen(mux, log, kind, short_tmp, factory)
    up = StreamFaults(reset_at=100) if fault == "reset" else StreamFaults(half_close_at=100)
    relay = StreamRelay(mux.loop, address, os.path.join(short_tmp, "relay"), up)
    _OPEN_RELAYS.append(relay)
    client, crec = connect(mux, log, kind, relay.address)
    mux.run_until(
        lambda: crec.shutdown is not None and bool(recs) and recs[0].shutdown is not None,
        timeout=20,
        what="both ends",
    )
    ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    ended_once(recs[0], R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert crec.names() == ["shutdown"] and recs[0].names() == ["shutdown"]
    assert not accepted
    client.Delete()
    # the listener still serves, directly
    c2, c2rec = connect(mux, log, kind, address)
    mux.run_until(lambda: "connect" in c2rec.names() and bool(accepted), what="good client")
    for s in (c2, accepted[0][0], listener):
        s.Delete()
