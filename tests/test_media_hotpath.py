"""IMedia's per-packet path does no work an app cannot see the result of (the media
benchmark, benchmarks/media.py, counts each packet's instructions): the source address
becomes a string once per address, not once per datagram, an app that keeps
`UMedia`'s no-op `MediaRtpSendResult` is not called with it for every packet; and the
fast paths (receive: IMedia's lane on its socket, `IMedia._lane`; `RtpSend`) give what the
slow ones give."""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from kit.loop import Mux
from kit.media import (
    PACKETS,
    MediaRecorder,
    Sender,
    check_intact,
    close,
    connect,
    count_slow,
    exchange,
    make,
    payload_for,
    plain_config,
    relayed_call,
    udp_peers,
)
from kit.relays import DatagramFaults

from usocket_asyncio import (
    FAULT_CODE_RTP_SRTP_AUTH_FAILED,
    SETUP_ROLE_NONE,
    CreateMediaProvider,
    IInstanceLog,
    IMedia,
    UMedia,
    _media,
)
from usocket_asyncio._iomux import call_user
from usocket_asyncio._rtp import dtmf_packets


class NoSendResult(MediaRecorder):
    """An app that keeps UMedia's MediaRtpSendResult (it does nothing)."""

    MediaRtpSendResult = UMedia.MediaRtpSendResult


def make_with(mux: Mux, log: IInstanceLog, user: MediaRecorder) -> tuple[IMedia, MediaRecorder]:
    media = CreateMediaProvider().CreateMedia(mux, user, log)
    media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    mux.run_until(lambda: user.initialized, what=f"{user.name}: initialized")
    assert user.config is not None
    return media, user


def send_both_ways(mux: Mux, a: Any, b: Any, until: Any) -> None:
    sa = Sender(mux, a[0], PACKETS, lambda i: payload_for(b"a", i))
    sb = Sender(mux, b[0], PACKETS, lambda i: payload_for(b"b", i))
    sa.start()
    sb.start()
    mux.run_until(lambda: sa.done and sb.done and until(), timeout=10)


def test_no_send_result_for_an_app_that_keeps_the_no_op(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[tuple[Any, str]] = []
    real = call_user

    def spy(loop: Any, fn: Any, *args: Any) -> Any:
        called.append((getattr(fn, "__self__", None), fn.__name__))
        return real(loop, fn, *args)

    monkeypatch.setattr(_media, "call_user", spy)
    sent_results: list[IMedia] = []
    real_sent = IMedia._sent

    def sent_spy(self: IMedia, sock: Any) -> None:
        sent_results.append(self)
        real_sent(self, sock)

    monkeypatch.setattr(IMedia, "_sent", sent_spy)
    a = make_with(mux, mlog, NoSendResult("a"))
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    send_both_ways(
        mux,
        a,
        b,
        lambda: (
            len(a[1].payloads) == PACKETS and len(b[1].payloads) == PACKETS and b[1].sent == PACKETS
        ),
    )
    check_intact(a[1], b"b")
    check_intact(b[1], b"a")
    names_a = [name for user, name in called if user is a[1]]
    names_b = [name for user, name in called if user is b[1]]
    assert len(a[1].payloads) == PACKETS  # (the receive fast path calls the app itself)
    assert "MediaRtpSendResult" not in names_a
    assert names_b.count("MediaRtpSendResult") == PACKETS  # an app with its own gets each
    assert a[0].counters.rtp_sent == PACKETS
    # a's socket reports no sends at all (its user has no SocketSendResult); b's each
    assert a[0] not in sent_results
    assert sent_results.count(b[0]) >= PACKETS
    close(mux, a, b)


def test_the_source_address_is_made_a_string_once_per_address(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    strs = [0]
    real = ipaddress.IPv4Address.__str__

    def counting(self: ipaddress.IPv4Address) -> str:
        strs[0] += 1
        return real(self)

    monkeypatch.setattr(ipaddress.IPv4Address, "__str__", counting)
    send_both_ways(
        mux, a, b, lambda: len(a[1].payloads) == PACKETS and len(b[1].payloads) == PACKETS
    )
    monkeypatch.undo()
    check_intact(a[1], b"b")
    check_intact(b[1], b"a")
    # 2 x PACKETS datagrams arrived from one address each: a str() or two, not 80
    assert strs[0] <= 4, strs[0]
    close(mux, a, b)


# -- the receive fast path (the lane: `IMedia._lane`) ------------------------------------
#
# It takes an RTP packet of the audio the stream already takes (the selected remote's
# address, the known SSRC and payload type, a 12-byte header) and leaves everything else
# to the slow path (`IMedia._media_in`). These tests feed a stream the packets the fast
# path must not take, or must take and treat as the slow path would, between packets it
# takes; they count the slow path's packets so that a fast path that stopped taking any
# shows too.


def rtp(
    seq: int,
    ssrc: int,
    payload: bytes,
    pt: int = 0,
    *,
    ts: int | None = None,
    marker: bool = False,
    csrc: bytes = b"",
    padding: int = 0,
) -> bytes:
    b0 = 0x80 | (0x20 if padding else 0) | (len(csrc) // 4)
    b1 = pt | (0x80 if marker else 0)
    head = struct.pack("!BBHII", b0, b1, seq, 1000 + seq * 160 if ts is None else ts, ssrc)
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return head + csrc + payload + pad


def dtmf(digit: int, end: bool, duration: int) -> bytes:
    return struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)


@pytest.fixture
def peers() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A plain RTP peer and a stranger: two UDP sockets on loopback."""
    yield from udp_peers(blocking=True)


def test_fast_path_delivers_what_the_slow_path_would(
    mux: Mux,
    mlog: IInstanceLog,
    monkeypatch: pytest.MonkeyPatch,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """From a plain RTP peer, between runs of packets the fast path takes: a packet of
    the same source from a stranger's address (dropped and counted), a reordered pair,
    a DTMF digit, a new SSRC (MediaRtpRecv before its payload), a packet with a CSRC,
    one with padding, another payload type. Payloads, sequence differences, markers,
    DTMF, the statistics and the counters are what the slow path gives."""
    peer, stranger = peers
    slow = count_slow(monkeypatch)
    a = make(mux, mlog, "a")
    ma, ua = a
    ua.in_call = True
    ma.Connect(plain_config(peer.getsockname()[1]), False, SETUP_ROLE_NONE)
    ua.in_call = False
    mux.run_until(lambda: ua.connect_error is None, what="connected")
    here = ("127.0.0.1", ma.localPort)
    pport = peer.getsockname()[1]
    x, y = 0x1111, 0x2222
    want: list[tuple[bytes, int, bool]] = []  # payload, sequenceNumberDiff, marker

    def send(sock: socket.socket, pkt: bytes, expect: tuple[bytes, int, bool] | None) -> None:
        sock.sendto(pkt, here)
        if expect is not None:
            want.append(expect)
        mux.run_until(lambda: len(ua.payloads) == len(want), what=f"{len(want)} payloads")

    def pl(i: int) -> bytes:
        return payload_for(b"p", i)

    send(peer, rtp(100, x, pl(0), marker=True), (pl(0), 1, True))  # the slow path arms
    for i in range(1, 6):
        send(peer, rtp(100 + i, x, pl(i)), (pl(i), 1, False))  # fast
    assert slow[0] == 1
    stranger.sendto(rtp(106, x, b"stranger" * 20), here)  # its address: never delivered
    mux.run_until(lambda: ma.counters.foreign == 1, what="the stranger's packet counted")
    mux.run_ready()
    send(peer, rtp(106, x, pl(6)), (pl(6), 1, False))
    send(peer, rtp(108, x, pl(8), marker=True), (pl(8), 2, True))  # one missing ...
    send(peer, rtp(107, x, pl(7)), (pl(7), -1, False))  # ... comes late
    assert slow[0] == 1
    send(peer, rtp(109, x, dtmf(5, False, 160), pt=101, ts=99, marker=True), None)
    mux.run_until(lambda: ua.dtmf == [("start", "5")], what="the digit's start")
    send(peer, rtp(110, x, dtmf(5, True, 800), pt=101, ts=99), None)  # its end
    mux.run_until(lambda: len(ua.dtmf) == 2, what="the digit's end")
    send(peer, rtp(111, x, pl(11)), (pl(11), 4, False))  # DTMF is no payload of the app's
    send(peer, rtp(112, x, pl(12)), (pl(12), 1, False))
    send(peer, rtp(5000, y, pl(20)), (pl(20), 5000 - 112, False))  # a new source
    send(peer, rtp(5001, y, pl(21)), (pl(21), 1, False))
    send(peer, rtp(5003, y, pl(23)), (pl(23), 2, False))  # 5002 lost
    send(peer, rtp(5004, y, pl(24), csrc=b"\x00\x00\x00\x07"), (pl(24), 1, False))
    send(peer, rtp(5005, y, pl(25), padding=3), (pl(25), 1, False))
    send(peer, rtp(5006, y, pl(26), pt=8), (pl(26), 1, False))  # another codec
    send(peer, rtp(5007, y, pl(27), pt=8), (pl(27), 1, False))
    mux.run_ready()
    assert ua.payloads == [p for p, _, _ in want]
    assert ua.diffs == [d for _, d, _ in want]
    assert ua.markers == [m for _, _, m in want]
    assert ua.timestamps[-1] == 1000 + 5007 * 160
    assert ua.dtmf == [("start", "5"), ("end", "5")]
    assert ua.ssrcs == [("127.0.0.1", pport, x, 0), ("127.0.0.1", pport, y, 0)]
    names = [n for n in ua.names() if n in ("ssrc", "recv")]
    assert names.index("ssrc", 1) == 12  # y's MediaRtpRecv right before its first payload
    c = ma.counters
    assert c.rtp_received == len(want) + 2 and c.foreign == 1
    assert c.rtp_lost == 1  # y: 5000..5007 expected, 5002 missing
    # the slow path took: the first, two DTMF, the one after, y's first, the CSRC, the
    # padding, the new payload type; the fast path the other 11
    assert slow[0] == 8, slow[0]
    assert ua.violations == []
    close(mux, a)


def test_fast_path_drops_and_counts_srtp_failures(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a DTLS-SRTP call, replays and forged packets from the selected remote's
    address (a relay's) with the stream's SSRC and payload type reach the fast path:
    each is dropped and counted, one FAULT_CODE_RTP_SRTP_AUTH_FAILED, none delivered;
    the call goes on."""
    seen: list[bytes] = []

    def keep_rtp(index: int, data: bytes) -> str:
        if 128 <= data[0] <= 191 and not 192 <= data[1] <= 223:
            seen.append(data)
        return "pass"

    a, b, relay = relayed_call(mux, mlog, down=DatagramFaults(rule=keep_rtp))
    try:
        (ma, ua), (mb, _) = a, b
        exchange(mux, a, b)
        mux.run_until(lambda: len(ua.payloads) == PACKETS)
        check_intact(ua, b"b")
        slow = count_slow(monkeypatch)
        to_a = relay._front
        a_addr = ("127.0.0.1", ma.localPort)
        for p in seen[1:11]:
            to_a.sendto(p, a_addr)  # a replay
            forged = bytearray(p)
            forged[-1] ^= 1
            to_a.sendto(bytes(forged), a_addr)  # a bad tag
        mux.run_until(lambda: ma.counters.srtp_failed == 20, timeout=5, what="dropped")
        mux.run_ready()
        assert slow[0] == 0  # the fast path saw them all
        assert len(ua.payloads) == PACKETS
        assert ua.error_codes() == [FAULT_CODE_RTP_SRTP_AUTH_FAILED]
        more = Sender(mux, mb, 10, lambda i: payload_for(b"c", i))
        more.start()
        mux.run_until(lambda: len(ua.payloads) == PACKETS + 10, timeout=5)
        assert ua.payloads[PACKETS:] == [payload_for(b"c", i) for i in range(10)]
        assert ua.diffs[PACKETS:] == [1] * 10
        assert ma.counters.rtp_received == PACKETS + 10
        assert ua.violations == []
        close(mux, a, b)
    finally:
        relay.close()


def test_rtp_send_fast_path_packets(
    mux: Mux,
    mlog: IInstanceLog,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """`RtpSend`'s fast path (a bytearray with `len`, bytes without) and the slow one
    (a memoryview, the DTMF sender) share one sequence counter and SSRC: a plain RTP
    peer gets consecutive sequence numbers, the marker on the first audio packet
    only, the timestamps given (modulo 2**32), the payloads intact, and a sender
    report that counts the audio packets and octets."""
    peer, _ = peers
    peer.setblocking(False)
    a = make(mux, mlog, "a")
    ma, ua = a
    ua.in_call = True
    ma.Connect(plain_config(peer.getsockname()[1]), False, SETUP_ROLE_NONE)
    ua.in_call = False
    mux.run_until(lambda: ua.connect_error is None, what="connected")
    got: list[bytes] = []
    reports: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                d = peer.recv(2048)
            except BlockingIOError:
                return
            (reports if 192 <= d[1] <= 223 else got).append(d)

    def wait(n: int) -> None:
        def have() -> bool:
            drain()
            return len(got) >= n

        mux.run_until(have, timeout=5, what=f"{n} packets at the peer")

    sent: list[tuple[bytes, int]] = []
    for i in range(4):
        p = payload_for(b"s", i)
        ts = (1 << 32) + 5 + 160 * i
        ma.RtpSend(bytearray(p) + b"tail", len(p), ts)  # fast: bytearray, len
        sent.append((p, ts & 0xFFFFFFFF))
    wait(4)
    ma.RtpDtmf("1", 101)  # the slow path's packets, paced by a timer
    wait(5)
    p = payload_for(b"s", 4)
    ma.RtpSend(p, None, 5000)  # fast: bytes, no len (between DTMF packets)
    sent.append((p, 5000))
    mux.run_until(lambda: not ma._rtp.dtmf_out, timeout=5, what="the digit sent")
    p = payload_for(b"s", 5)
    ma.RtpSend(memoryview(p), len(p), 5160)  # slow: a memoryview
    sent.append((p, 5160))
    n_digit = len(dtmf_packets("1"))  # the start, updates, three ends
    wait(len(sent) + n_digit)
    heads = [struct.unpack_from("!BBHII", d) for d in got]
    assert all(h[0] == 0x80 for h in heads)
    seqs = [h[2] for h in heads]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    assert len({h[4] for h in heads}) == 1
    audio = [(d, h) for d, h in zip(got, heads, strict=True) if h[1] & 0x7F == 0]
    digit = [h for h in heads if h[1] & 0x7F == 101]
    assert len(digit) == n_digit and digit[0][1] & 0x80
    assert [(d[12:], h[3]) for d, h in audio] == sent
    assert [bool(h[1] & 0x80) for _, h in audio] == [True] + [False] * 5
    assert ma.counters.rtp_sent == len(got)

    def have_report() -> bool:
        drain()
        return any(r[1] == 200 for r in reports)

    mux.run_until(have_report, timeout=5, what="a sender report")
    sr = next(r for r in reports if r[1] == 200)
    ssrc, _, _, _, packets, octets = struct.unpack_from("!IIIIII", sr, 4)
    assert ssrc == heads[0][4]
    assert (packets, octets) == (len(sent), sum(len(p) for p, _ in sent))
    assert ua.violations == []
    close(mux, a)


def test_fast_path_app_raising_goes_to_the_exception_handler(
    mux: Mux,
    mlog: IInstanceLog,
    monkeypatch: pytest.MonkeyPatch,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """An app's `MediaRtpRecvResult` that raises on a packet of the fast path: the
    loop's exception handler gets it, the stream carries on (the next payloads come,
    in order, by the fast path)."""
    peer, _ = peers
    slow = count_slow(monkeypatch)
    a = make(mux, mlog, "a")
    ma, ua = a
    ua.in_call = True
    ma.Connect(plain_config(peer.getsockname()[1]), False, SETUP_ROLE_NONE)
    ua.in_call = False
    mux.run_until(lambda: ua.connect_error is None, what="connected")
    here = ("127.0.0.1", ma.localPort)

    def boom(n: int) -> None:
        if len(ua.payloads) == 3:
            raise RuntimeError("the app's bug")

    ua.hooks["recv"] = boom

    def have(n: int) -> bool:
        return len(ua.payloads) == n

    for i in range(6):
        peer.sendto(rtp(200 + i, 0x3333, payload_for(b"r", i)), here)
        mux.run_until(functools.partial(have, i + 1), what=f"payload {i}")
        if i == 2:  # the raise skipped the app's next Recv: it posts one now
            ma.Recv(bytearray(ua.recv_size))
    mux.run_ready()
    assert ua.payloads == [payload_for(b"r", i) for i in range(6)]
    assert ua.diffs == [1] * 6
    assert slow[0] == 1
    assert [type(e.get("exception")) for e in mux.errors] == [RuntimeError]
    assert "MediaRtpRecvResult" in mux.errors[0]["message"]
    mux.errors.clear()
    close(mux, a)
