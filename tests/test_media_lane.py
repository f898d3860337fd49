"""IMedia's lane: the per-packet shortcut it arms on its UDP socket (`IMedia._lane`,
`UDPSocket._set_media_lane`). The socket hands each datagram to the lane first; the
lane takes an RTP packet of the audio the stream already takes (the selected remote,
its SSRC and payload type) straight from the transport's bytes, and everything else
goes the socket's usual way to the slow path, which arms the lane again.

These tests arm the lane with a real call, then do each thing that must disarm it (a
new remote, new keys, a failure, `Close`, the socket's end) and check that the packets
after it go the slow path or nowhere, never to the app after `MediaCloseComplete`; and
that a failing SRTP packet on the lane is dropped and counted while the lane goes on.
Every test runs on both loops (the `mux` fixture). The lane's calls are counted by a
spy put in its place before it is armed (`spy_lane`).

Also here: `MediaRtpSendResult` is looked up on the app as the app has it (set on the
instance after `CreateMedia`, or a mock's), and the libsrtp calls written out
(`_srtp.direct`) and the stream's report packer (`_rtp.pack_report`) against the
public ones.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from typing import Any
from unittest.mock import Mock

import pytest
from kit.loop import Mux, have_ipv6
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
    udp_peers,
)

from usocket_asyncio import (
    CHANNEL_MEDIA_ERROR,
    FAULT_CODE_RTP_ICE_FAILED,
    FAULT_CODE_RTP_NO_MEDIA_DATA,
    FAULT_CODE_RTP_SRTP_AUTH_FAILED,
    SETUP_ROLE_NONE,
    AudioCoder,
    Codec,
    CreateMediaProvider,
    IInstanceLog,
    IMedia,
    MediaConfig,
    MediaType,
    UMedia,
    _iomux,
    _media,
)
from usocket_asyncio._rtp import (
    ReceiverReport,
    ReportBlock,
    Sdes,
    SenderReport,
    pack_report,
    pack_rtcp,
    parse_rtcp,
)
from usocket_asyncio._srtp import ISrtpSession, area, direct


@pytest.fixture
def peers() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two plain RTP peers: UDP sockets on loopback."""
    yield from udp_peers(blocking=False)


def rtp(seq: int, payload: bytes, ssrc: int = 0x5151, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, 1000 + 160 * seq, ssrc) + payload


def spy_lane(m: IMedia) -> list[bool]:
    """Put a spy in the lane's place (before it is armed): each call's answer (True:
    the lane took the datagram) is recorded."""
    calls: list[bool] = []
    real = m._lane_fn

    def lane(data: bytes, addr: Any) -> bool:
        taken = bool(real(data, addr))
        calls.append(taken)
        return taken

    m._lane_fn = lane
    return calls


def armed(m: IMedia) -> bool:
    """The lane is armed, on the stream's side and on its socket's."""
    sock = m._sock
    on_socket = sock is not None and getattr(sock, "_media_lane", None) is not None
    assert (m._lane_src is not None) == on_socket
    return on_socket


def plain_call(
    mux: Mux, mlog: IInstanceLog, peer: socket.socket, user: MediaRecorder | None = None
) -> tuple[IMedia, MediaRecorder, list[bool], tuple[str, int]]:
    """A stream connected to the plain RTP `peer`, its lane spied on; and its address."""
    ua = user or MediaRecorder("a")
    ma = CreateMediaProvider().CreateMedia(mux, ua, mlog)
    lane = spy_lane(ma)
    ua.in_call = True
    ma.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    ua.in_call = False
    mux.run_until(lambda: ua.initialized, what="initialized")
    ua.in_call = True
    ma.Connect(plain_config(peer.getsockname()[1], dtmf=False), False, SETUP_ROLE_NONE)
    ua.in_call = False
    mux.run_until(lambda: ua.connect_error is None, what="connected")
    return ma, ua, lane, ("127.0.0.1", ma.localPort)


def feed(
    mux: Mux,
    ua: MediaRecorder,
    peer: socket.socket,
    here: tuple[str, int],
    seqs: range,
    seed: bytes,
    delivered: bool = True,
) -> None:
    """The peer sends one packet per sequence number, each after the last arrived (or,
    `delivered` False, was handled without reaching the app)."""
    for s in seqs:
        n = len(ua.payloads)
        peer.sendto(rtp(s, payload_for(seed, s)), here)
        if delivered:
            mux.run_until(lambda n=n: len(ua.payloads) == n + 1, what=f"payload {s}")  # type: ignore[misc]
        else:
            mux.run_ready()


def test_the_lane_takes_the_audio_and_the_slow_path_the_rest(
    mux: Mux,
    mlog: IInstanceLog,
    monkeypatch: pytest.MonkeyPatch,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """The first packet arms the lane (slow path); the next ones of that source go by
    the lane, intact and in order; another SSRC, a short datagram and a stranger's
    packet are the slow path's (the lane says no), and the lane goes on after."""
    peer, stranger = peers
    slow = count_slow(monkeypatch)
    ma, ua, lane, here = plain_call(mux, mlog, peer)
    feed(mux, ua, peer, here, range(1), b"x")
    assert slow[0] == 1 and armed(ma) and lane == []
    feed(mux, ua, peer, here, range(1, 8), b"x")
    assert lane == [True] * 7 and slow[0] == 1
    peer.sendto(rtp(8, payload_for(b"y", 8), ssrc=0x7777), here)  # another source
    mux.run_until(lambda: len(ua.payloads) == 9, what="the other source's payload")
    assert lane[-1] is False and slow[0] == 2
    peer.sendto(b"\x80\x00\x00", here)  # too short to be RTP
    stranger.sendto(rtp(9, b"stranger"), here)
    mux.run_until(lambda: ma.counters.foreign == 1, what="the stranger counted")
    mux.run_ready()
    assert lane[-2:] == [False, False] and ma.counters.not_media == 1
    feed(mux, ua, peer, here, range(9, 12), b"y")  # the new source's, by the lane again
    assert ua.payloads == [payload_for(b"x", i) for i in range(8)] + [
        payload_for(b"y", i) for i in range(8, 12)
    ]
    assert ua.diffs == [1] * 12
    assert lane[-2:] == [True, True] and slow[0] == 3
    assert ma.counters.rtp_received == 12
    assert ua.violations == []
    close(mux, (ma, ua))
    assert not armed(ma)


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback here")
@pytest.mark.parametrize(
    ("local", "peer_host"),
    [(["::1"], "::1"), (["127.0.0.1", "::1"], "127.0.0.1")],
    ids=["v6", "v4-on-dual-stack"],
)
def test_the_lane_on_an_ipv6_socket(
    mux: Mux,
    mlog: IInstanceLog,
    monkeypatch: pytest.MonkeyPatch,
    local: list[str],
    peer_host: str,
) -> None:
    """On an IPv6 socket (the transport gives 4-tuple sources; an IPv4 peer on a
    dual-stack one comes as ::ffff:a.b.c.d) the lane takes the audio too, and `RtpSend`
    reaches the peer through the lane's send."""
    slow = count_slow(monkeypatch)
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    peer = socket.socket(family, socket.SOCK_DGRAM)
    try:
        peer.bind((peer_host, 0))
        peer.setblocking(False)
        ua = MediaRecorder("a")
        ma = CreateMediaProvider().CreateMedia(mux, ua, mlog)
        lane = spy_lane(ma)
        ma.Initialize(None, None, None, 0, 0, localAddresses=local)
        mux.run_until(lambda: ua.initialized, what="initialized")
        codecs = [Codec(AudioCoder.G711_U, 0, 0, 8000)]
        cfg = MediaConfig(MediaType.AUDIO, peer_host, peer.getsockname()[1], None, codecs)
        ma.Connect(cfg, False, SETUP_ROLE_NONE)
        mux.run_until(lambda: ua.connect_error is None, what="connected")
        here = (peer_host, ma.localPort)
        feed(mux, ua, peer, here, range(6), b"6")
        assert ua.payloads == [payload_for(b"6", i) for i in range(6)]
        assert slow[0] == 1 and lane == [True] * 5 and armed(ma)
        assert ma._tx_addr is not None
        ma.RtpSend(bytearray(b"back over v6"), None, 0)
        mux.run_until(lambda: _readable(peer), what="the peer gets RtpSend")
        assert peer.recv(2048)[12:] == b"back over v6"
        assert ua.violations == []
        close(mux, (ma, ua))
    finally:
        peer.close()


def test_a_new_remote_disarms_the_lane(
    mux: Mux,
    mlog: IInstanceLog,
    monkeypatch: pytest.MonkeyPatch,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """The pair changes (as when ICE selects another): the lane is disarmed at once;
    the old remote's packets go the slow path, which drops them as foreign; the new
    remote's first packet arms the lane again, and `RtpSend` goes to the new remote."""
    old, new = peers
    slow = count_slow(monkeypatch)
    ma, ua, lane, here = plain_call(mux, mlog, old)
    feed(mux, ua, old, here, range(4), b"o")
    assert armed(ma) and lane == [True] * 3
    ma._in_event = True  # as the ICE agent's PairSelected does, inside an event
    ma._select(("127.0.0.1", new.getsockname()[1]))
    ma._event_end()
    assert not armed(ma)
    old.sendto(rtp(4, b"late"), here)
    mux.run_until(lambda: ma.counters.foreign == 1, what="the old remote's packet dropped")
    assert len(lane) == 3 and slow[0] == 1  # not offered to the lane; foreign before RTP
    feed(mux, ua, new, here, range(100, 104), b"n")
    assert slow[0] == 2 and lane[3:] == [True] * 3 and armed(ma)
    assert ua.payloads[4:] == [payload_for(b"n", i) for i in range(100, 104)]
    ma.RtpSend(bytearray(b"to the new one"), None, 0)
    mux.run_until(lambda: _readable(new), what="the new remote gets RtpSend")
    assert new.recv(2048)[12:] == b"to the new one"
    assert ua.violations == []
    close(mux, (ma, ua))


def _readable(s: socket.socket) -> bool:
    try:
        s.recv(2048, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True


def test_new_keys_disarm_the_lane(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a DTLS-SRTP call, new keys (other than the peer's) disarm the lane: the
    peer's next packets go the slow path, fail the new keys there, are counted and
    never delivered; what this side sends from then on is protected with the new
    keys (the peer drops it)."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    (ma, ua), (mb, ub) = a, b
    lane = spy_lane(ma)
    connect(mux, a, b)
    exchange(mux, a, b)
    mux.run_until(lambda: len(ua.payloads) == PACKETS, what="the exchange")
    check_intact(ua, b"b")
    assert armed(ma) and lane.count(True) == PACKETS - 1
    slow = count_slow(monkeypatch)
    ma._srtp_keys(bytes(range(60)), "SRTP_AES128_CM_SHA1_80")  # as DtlsSrtpKeys would
    assert not armed(ma)
    taken = len(lane)
    more = Sender(mux, mb, 5, lambda i: payload_for(b"c", i), ms=5)
    more.start()
    mux.run_until(lambda: ma.counters.srtp_failed == 5, what="the old keys' packets dropped")
    assert slow[0] == 5
    assert len(lane) == taken and not armed(ma)
    assert len(ua.payloads) == PACKETS
    assert FAULT_CODE_RTP_SRTP_AUTH_FAILED in ua.error_codes()
    ma.RtpSend(bytearray(b"new keys"), None, 0)
    mux.run_until(lambda: mb.counters.srtp_failed == 1, what="the peer drops the new keys'")
    assert len(ub.payloads) == PACKETS
    assert ua.violations == [] and ub.violations == []
    close(mux, a, b)


def test_srtp_failures_on_the_lane_are_dropped_and_the_lane_goes_on(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replays and forged packets that reach the lane (the selected remote's address,
    the stream's SSRC and payload type) are dropped and counted there (one error
    event), none reaches the app, and the lane keeps taking the good ones."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    (ma, ua), (mb, _) = a, b
    lane = spy_lane(ma)
    connect(mux, a, b)
    seen: list[bytes] = []
    real = mb._lane_send  # the peer's way out for RtpSend: keep what it sends

    def keep(sock: Any, data: bytes, addr: Any) -> None:
        seen.append(data)
        real(sock, data, addr)

    mb._lane_send = keep
    exchange(mux, a, b)
    mux.run_until(lambda: len(ua.payloads) == PACKETS, what="the exchange")
    assert len(seen) == PACKETS
    slow = count_slow(monkeypatch)
    here = ("127.0.0.1", ma.localPort)
    b_sock = mb._sock._sock  # type: ignore[union-attr]  # the peer's port: the selected remote
    for p in seen[1:6]:
        b_sock.sendto(p, here)  # a replay
        forged = bytearray(p)
        forged[-1] ^= 1
        b_sock.sendto(bytes(forged), here)  # a bad tag
    mux.run_until(lambda: ma.counters.srtp_failed == 10, what="dropped")
    mux.run_ready()
    assert slow[0] == 0 and lane[-10:] == [True] * 10  # the lane took them: dropped
    assert len(ua.payloads) == PACKETS
    assert ua.error_codes() == [FAULT_CODE_RTP_SRTP_AUTH_FAILED]
    assert armed(ma)
    more = Sender(mux, mb, 5, lambda i: payload_for(b"d", i), ms=5)
    more.start()
    mux.run_until(lambda: len(ua.payloads) == PACKETS + 5, what="the call goes on")
    assert ua.payloads[PACKETS:] == [payload_for(b"d", i) for i in range(5)]
    assert slow[0] == 0 and lane[-5:] == [True] * 5
    assert ua.violations == []
    close(mux, a, b)


def test_a_recv_buffer_the_app_shrank_gets_what_fits(mux: Mux, mlog: IInstanceLog) -> None:
    """The lane writes a payload from libsrtp's buffer straight into the app's: a
    bytearray the app shrank after its `Recv` gets what fits (the truncation logged),
    never more; the stream goes on."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    (ma, ua), (mb, _) = a, b
    lane = spy_lane(ma)
    connect(mux, a, b)
    exchange(mux, a, b)
    mux.run_until(lambda: len(ua.payloads) == PACKETS, what="the exchange")
    assert armed(ma) and ma._rx_direct is not None
    buf = ma._recvs[0][0]  # the recorder's buffer, posted again in its last result
    del buf[10:]
    ua.auto_recv = False
    more = Sender(mux, mb, 1, lambda i: payload_for(b"s", i))
    more.start()
    mux.run_until(lambda: len(ua.payloads) == PACKETS + 1, what="the payload")
    assert ua.payloads[-1] == payload_for(b"s", 0)[:10] and ua.events[-1] == ("recv", 10)
    assert len(buf) == 10 and lane[-1] is True
    ua.auto_recv = True
    ma.Recv(bytearray(2048))
    more = Sender(mux, mb, 3, lambda i: payload_for(b"t", i), ts0=9000)
    more.start()
    mux.run_until(lambda: len(ua.payloads) == PACKETS + 4, what="the call goes on")
    assert ua.payloads[-3:] == [payload_for(b"t", i) for i in range(3)]
    assert ua.violations == []
    close(mux, a, b)


def test_a_failure_disarms_the_lane(
    mux: Mux,
    mlog: IInstanceLog,
    monkeypatch: pytest.MonkeyPatch,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """A failure (here: ICE consent lost) disarms the lane: every packet after it goes
    the slow path (which still hands a failed stream's audio to the app, as before the
    lane) and the lane is not armed again."""
    peer, _ = peers
    slow = count_slow(monkeypatch)
    ma, ua, lane, here = plain_call(mux, mlog, peer)
    feed(mux, ua, peer, here, range(3), b"f")
    assert armed(ma) and slow[0] == 1
    ma._in_event = True  # as the ICE agent's ConsentLost does, inside an event
    ma._fail("ICE consent lost (test)", "FAULT_CODE_RTP_ICE_FAILED", "ice")
    ma._event_end()
    assert not armed(ma)
    taken = len(lane)
    feed(mux, ua, peer, here, range(3, 7), b"f")
    assert slow[0] == 5 and len(lane) == taken and not armed(ma)
    assert ua.payloads == [payload_for(b"f", i) for i in range(7)]
    assert [e.code for e in ua.errors] == [FAULT_CODE_RTP_ICE_FAILED]
    assert ua.violations == []
    close(mux, (ma, ua))


def test_close_inside_the_callback_stops_the_lane(
    mux: Mux,
    mlog: IInstanceLog,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """The app closes the stream in the lane's `MediaRtpRecvResult` while more packets
    wait in the kernel: nothing more reaches the app, `MediaCloseComplete` is the last
    callback, the lane is disarmed."""
    peer, _ = peers
    ma, ua, lane, here = plain_call(mux, mlog, peer)
    feed(mux, ua, peer, here, range(2), b"c")
    assert armed(ma)

    def close_at_third(n: int) -> None:
        if len(ua.payloads) == 3:
            ua.auto_recv = False  # (no Recv after Close)
            ma.Close()

    ua.hooks["recv"] = close_at_third
    for s in range(2, 12):  # a burst: most are read in the same loop iteration
        peer.sendto(rtp(s, payload_for(b"c", s)), here)
    mux.run_until(lambda: ua.closed, what="MediaCloseComplete")
    for s in range(12, 15):
        peer.sendto(rtp(s, payload_for(b"c", s)), here)
    mux.run_ready()
    assert ua.payloads == [payload_for(b"c", i) for i in range(3)]
    assert ua.names()[-1] == "closed" and ua.violations == []
    assert ma._lane_src is None and ma._sock is None
    assert lane.count(True) == 2


def test_the_socket_end_disarms_the_lane(
    mux: Mux,
    mlog: IInstanceLog,
    peers: tuple[socket.socket, socket.socket],
) -> None:
    """The port is lost under the stream (its transport ends): the lane is disarmed,
    the app hears `CHANNEL_MEDIA_ERROR` (no media data), `RtpSend` is ignored, and
    nothing reaches the app after, through `Close` and `MediaCloseComplete`."""
    peer, _ = peers
    ma, ua, lane, here = plain_call(mux, mlog, peer)
    feed(mux, ua, peer, here, range(3), b"e")
    sock = ma._sock
    assert armed(ma) and sock is not None
    sock._tr.abort()  # type: ignore[attr-defined]
    mux.run_until(lambda: bool(ua.errors), what="the media error")
    assert [e.code for e in ua.errors] == [FAULT_CODE_RTP_NO_MEDIA_DATA]
    assert ua.events[-1][1] == CHANNEL_MEDIA_ERROR
    assert ma._lane_src is None and ma._sock is None
    assert sock._media_lane is None  # type: ignore[attr-defined]
    ma.RtpSend(bytearray(b"nowhere"), None, 0)  # ignored: the media stopped
    peer.sendto(rtp(3, b"after the end"), here)
    mux.run_ready()
    assert len(ua.payloads) == 3 and lane.count(True) == 2
    close(mux, (ma, ua))


# -- MediaRtpSendResult, looked up on the app as it has it --------------------------------


class KeepsTheNoOp(MediaRecorder):
    """An app whose class keeps UMedia's MediaRtpSendResult (it does nothing)."""

    MediaRtpSendResult = UMedia.MediaRtpSendResult


@pytest.mark.parametrize("when", ["after CreateMedia", "in MediaConnectResult"])
def test_a_send_result_set_on_the_instance_later_is_called(
    mux: Mux, mlog: IInstanceLog, peers: tuple[socket.socket, socket.socket], when: str
) -> None:
    """An app sets `MediaRtpSendResult` on its instance after `CreateMedia` (right
    after it, or in a later callback): each `RtpSend` from then on gets its result."""
    peer, _ = peers
    ua = KeepsTheNoOp("a")
    results: list[IMedia] = []

    def sent(media: IMedia) -> None:
        results.append(media)

    if when == "after CreateMedia":
        ma = CreateMediaProvider().CreateMedia(mux, ua, mlog)
        ua.MediaRtpSendResult = sent  # type: ignore[method-assign]
        ma.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
        mux.run_until(lambda: ua.initialized, what="initialized")
        ma.Connect(plain_config(peer.getsockname()[1], dtmf=False), False, SETUP_ROLE_NONE)
        mux.run_until(lambda: ua.connect_error is None, what="connected")
    else:
        ua.hooks["connect"] = lambda error: setattr(ua, "MediaRtpSendResult", sent)
        ma, _, _, _ = plain_call(mux, mlog, peer, ua)
    for i in range(10):
        ma.RtpSend(bytearray(payload_for(b"s", i)), None, i * 160)
    mux.run_until(lambda: len(results) == 10, timeout=5, what="10 send results")
    mux.run_ready()
    assert results == [ma] * 10 and ma.counters.rtp_sent == 10
    close(mux, (ma, ua))


def test_a_mock_user_gets_its_send_results(
    mux: Mux, mlog: IInstanceLog, peers: tuple[socket.socket, socket.socket]
) -> None:
    """A `Mock(spec=UMedia)` as the app: each `RtpSend` gets its `MediaRtpSendResult`,
    and `MediaCloseComplete` comes last."""
    peer, _ = peers
    user = Mock(spec=UMedia)
    ma = CreateMediaProvider().CreateMedia(mux, user, mlog)
    ma.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    mux.run_until(lambda: user.MediaInitializeComplete.called, what="initialized")
    ma.Connect(plain_config(peer.getsockname()[1], dtmf=False), False, SETUP_ROLE_NONE)
    mux.run_until(lambda: user.MediaConnectResult.called, what="connected")
    user.MediaConnectResult.assert_called_once_with(ma, None)
    for i in range(10):
        ma.RtpSend(payload_for(b"m", i), None, i * 160)
    mux.run_until(lambda: user.MediaRtpSendResult.call_count == 10, timeout=5, what="results")
    ma.Close()
    mux.run_until(lambda: user.MediaCloseComplete.called, what="closed")
    mux.run_ready()
    assert user.MediaRtpSendResult.call_count == 10
    assert user.method_calls[-1] == ("MediaCloseComplete", (ma,), {})


# -- libsrtp written out, the report packer (no loop) --------------------------------------


@pytest.mark.parametrize(
    "profile", ["SRTP_AES128_CM_SHA1_80", "SRTP_AEAD_AES_128_GCM", "SRTP_AEAD_AES_256_GCM"]
)
def test_direct_libsrtp_calls_match_the_sessions_methods(profile: str) -> None:
    """What `direct` protects, the session's `Unprotect` of a twin session takes back,
    and the other way round; a replay and a bad tag fail the written-out unprotect."""
    key_len = 32 if profile.endswith("256_GCM") else 16
    salt_len = 14 if profile.endswith("SHA1_80") else 12
    key, salt = bytes(range(key_len)), bytes(range(100, 100 + salt_len))
    tx, rx = ISrtpSession.Create(key, salt, profile), ISrtpSession.Create(key, salt, profile)

    class Loop:
        """Stands for a loop (`area` keys its buffer by a weak reference)."""

    loop = Loop()
    shared = area(loop)
    assert shared is not None and area(loop) is shared and area(Loop()) is not shared
    out, inp = direct(tx, True, shared), direct(rx, False, shared)
    assert out is not None and inp is not None
    for seq in range(20):
        payload = payload_for(b"d", seq)
        call, ctx, buf, view, cell, at12, memmove, _ = out
        struct.pack_into("!BBHII", view, 0, 0x80, 0, seq, seq * 160, 0xABCD)
        memmove(at12, payload, len(payload))
        cell[0] = 12 + len(payload)
        assert call(ctx, buf, cell) == 0
        srtp = view[0 : cell[0]]
        assert rx.Unprotect(srtp) == struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xABCD) + (
            payload
        )
        assert rx.Unprotect(srtp) is None  # a replay
    twin = ISrtpSession.Create(key, salt, profile)
    call, ctx, buf, view, cell, _, _, _ = inp
    rx2 = direct(ISrtpSession.Create(key, salt, profile), False, shared)
    assert rx2 is not None
    for seq in range(5):
        packet = struct.pack("!BBHII", 0x80, 8, seq, 0, 0x1234) + payload_for(b"e", seq)
        srtp = twin.Protect(packet[:12], packet[12:])
        view[0 : len(srtp)] = srtp
        cell[0] = len(srtp)
        assert call(ctx, buf, cell) == 0 and view[0 : cell[0]] == packet
        view[0 : len(srtp)] = srtp
        cell[0] = len(srtp)
        assert call(ctx, buf, cell) != 0  # a replay
        bad = bytearray(srtp)
        bad[-1] ^= 1
        c2, x2, b2, v2, l2, _, _, _ = rx2
        v2[0 : len(bad)] = bytes(bad)
        l2[0] = len(bad)
        assert c2(x2, b2, l2) != 0  # a bad tag


class EchoBack(MediaRecorder):
    """Sends each payload back from inside its `MediaRtpRecvResult` (as an echo app
    does), with the received timestamp, then posts the buffer again; a callback that
    came inside those calls is a violation."""

    def MediaRtpRecvResult(
        self,
        media: IMedia,
        buf: Any,
        len: int,
        timestamp: int,
        sequenceNumberDiff: int,
        marker: bool,
    ) -> None:
        self.payloads.append(bytes(buf[:len]))
        self._rec("recv", len)
        self.in_call = True
        try:
            media.RtpSend(buf, len, timestamp)
            media.Recv(buf)
        finally:
            self.in_call = False


class EchoQuiet(EchoBack):
    """An echo that keeps `UMedia`'s no-op `MediaRtpSendResult` (as the media
    benchmark's does)."""

    MediaRtpSendResult = UMedia.MediaRtpSendResult


@pytest.mark.parametrize("send_results", [False, True], ids=["no-send-results", "send-results"])
def test_an_echoed_packet_arms_no_timer_and_schedules_no_callback(
    mux: Mux,
    mlog: IInstanceLog,
    monkeypatch: pytest.MonkeyPatch,
    peers: tuple[socket.socket, socket.socket],
    send_results: bool,
) -> None:
    """An echo app's packets (the lane in, `RtpSend` out from inside the callback,
    `Recv` again) make the loop do nothing more than read and write them: no timer is
    started or cancelled, and no callback is scheduled on the loop, neither the
    stream's (`_emit`'s) nor the socket's (the loop's deferred batch), so a packet
    costs the loop no extra iteration. An app with a `MediaRtpSendResult` of its own
    gets one for each echo, right after the `MediaRtpRecvResult` that sent it (the
    lane's datagram is the socket's event: the send's result is delivered at its end).
    Every echo comes back intact."""
    peer, _ = peers
    echo = EchoBack("a") if send_results else EchoQuiet("a")
    ma, ua, lane, here = plain_call(mux, mlog, peer, echo)
    feed(mux, ua, peer, here, range(1), b"p")  # the slow path arms the lane
    mux.run_ready()
    assert armed(ma)
    counts = {"timer": 0, "emit": 0, "deferred": 0}

    def counting(name: str, real: Any) -> Any:
        def spy(*args: Any, **kw: Any) -> Any:
            counts[name] += 1
            return real(*args, **kw)

        return spy

    monkeypatch.setattr(_iomux.ITimer, "Start", counting("timer", _iomux.ITimer.Start))
    monkeypatch.setattr(_iomux.ITimer, "Cancel", counting("timer", _iomux.ITimer.Cancel))
    monkeypatch.setattr(_media.IMedia, "_emit", counting("emit", _media.IMedia._emit))
    monkeypatch.setattr(_iomux._Deferred, "add", counting("deferred", _iomux._Deferred.add))
    sent = ua.sent
    feed(mux, ua, peer, here, range(1, 21), b"p")
    assert lane[-20:] == [True] * 20
    assert counts == {"timer": 0, "emit": 0, "deferred": 0}
    if send_results:  # each echo's result right after the payload that made it
        assert ua.sent == sent + 20
        names = [n for n in ua.names() if n in ("recv", "sent")]
        assert names[-40:] == ["recv", "sent"] * 20
    got: list[bytes] = []
    mux.run_until(lambda: _drain(peer, got) >= 21, what="the echoes")
    assert [p[12:] for p in got] == [payload_for(b"p", i) for i in range(21)]
    assert [struct.unpack_from("!I", p, 4)[0] for p in got] == [1000 + 160 * i for i in range(21)]
    assert ua.violations == []
    close(mux, (ma, ua))


def _drain(sock: socket.socket, into: list[bytes]) -> int:
    """Read what `sock` has now into `into`; how many are there."""
    while True:
        try:
            into.append(sock.recv(2048))
        except BlockingIOError:
            return len(into)


def test_the_streams_of_a_loop_share_one_libsrtp_buffer(mux: Mux, mlog: IInstanceLog) -> None:
    """The written-out libsrtp calls of every stream on a loop work in one buffer
    (`_srtp.area`): an echo stream unprotects into it, and its app's `RtpSend` protects
    in it again from inside the callback, while the peer's sends and receives use it
    between: every echo comes back intact, in order, on its own timestamp."""
    echo = EchoBack("echo")
    media = CreateMediaProvider().CreateMedia(mux, echo, mlog)
    media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    mux.run_until(lambda: echo.initialized, what="echo: initialized")
    a = (media, echo)
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    txa, rxa, txb, rxb = a[0]._tx_direct, a[0]._rx_direct, b[0]._tx_direct, b[0]._rx_direct
    assert txa is not None and rxa is not None and txb is not None and rxb is not None
    assert txa[2] is rxa[2] is txb[2] is rxb[2] is area(mux.loop)[0]  # type: ignore[index]
    assert txa[1] is not rxa[1]  # each its own libsrtp context
    send = Sender(mux, b[0], PACKETS, lambda i: payload_for(b"b", i))
    send.start()
    mux.run_until(lambda: send.done and len(b[1].payloads) == PACKETS, timeout=10)
    assert echo.payloads == [payload_for(b"b", i) for i in range(PACKETS)]
    check_intact(b[1], b"b")  # the echoes: payloads, timestamps, order
    close(mux, a, b)
    assert echo.violations == [] and b[1].violations == []


def test_the_stream_still_works_without_the_written_out_calls(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where pylibsrtp's internals are not as `direct` knows them, the stream uses the
    sessions' public calls: a DTLS-SRTP call carries its payloads intact both ways."""
    monkeypatch.setattr(_media, "direct", lambda session, outbound, shared: None)
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    assert a[0]._rx_direct is None and a[0]._tx_direct is None
    exchange(mux, a, b)
    mux.run_until(lambda: len(a[1].payloads) == PACKETS and len(b[1].payloads) == PACKETS)
    check_intact(a[1], b"b")
    check_intact(b[1], b"a")
    close(mux, a, b)


def test_pack_report_is_what_pack_rtcp_makes() -> None:
    """The stream's report packer gives `pack_rtcp`'s bytes for an SR and an RR with 0
    to 8 blocks, packets and octets taken modulo 2**32."""
    rng = random.Random(7)
    sdes = pack_rtcp([Sdes([(0x11223344, [(1, b"usocket_asyncio")])])])
    for count in range(9):
        blocks = [
            ReportBlock(
                ssrc=rng.getrandbits(32),
                fraction_lost=rng.randrange(256),
                lost=rng.randrange(-(1 << 23), 1 << 23),
                highest_seq=rng.getrandbits(32),
                jitter=rng.getrandbits(31),
                lsr=rng.getrandbits(32),
                dlsr=rng.getrandbits(32),
            )
            for _ in range(count)
        ]
        ntp, ts = rng.getrandbits(64), rng.getrandbits(32)
        packets, octets = (1 << 32) + 5, (1 << 33) + 1234
        sr = pack_report(0x11223344, (ntp, ts, packets, octets), blocks, sdes)
        want = SenderReport(0x11223344, ntp, ts, 5, 1234, blocks)
        assert sr == pack_rtcp([want]) + sdes
        rr = pack_report(0x11223344, None, blocks, sdes)
        assert rr == pack_rtcp([ReceiverReport(0x11223344, blocks)]) + sdes
        assert parse_rtcp(rr)[0] == ReceiverReport(0x11223344, blocks)
    with pytest.raises(ValueError, match="31 blocks"):
        pack_report(1, None, blocks * 4, sdes)
