"""IMedia calling IMedia on loopback: full ICE on both sides (role conflicts included),
DTLS-SRTP, payloads checked by content, DTMF both ways, loss and reordering through the
kit's datagram relay (the statistics match what the relay did), a plain RTP peer without
ICE or DTLS, and the contract's rules (no callback inside the call, nothing after
MediaCloseComplete, caller mistakes raise at once, one thread)."""

from __future__ import annotations

import hashlib
import logging
import threading
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
    exchange,
    make,
    payload_for,
    plain_config,
    relayed_call,
)
from kit.relays import DatagramFaults, drop_first, dtls_content_type

from usocket_asyncio import (
    FAULT_CODE_RTP_DTLS_SRTP_FAILED,
    FAULT_CODE_RTP_ICE_FAILED,
    SETUP_ROLE_ACTIVE,
    SETUP_ROLE_ACTPASS,
    SETUP_ROLE_NONE,
    SETUP_ROLE_PASSIVE,
    AudioCoder,
    Codec,
    CreateMediaProvider,
    IceCandidate,
    IceCandidates,
    IInstanceLog,
    MediaConfig,
    SocketModeError,
    _iomux,
    _media,
)


@pytest.fixture
def fast_stats(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_media, "STATISTICS_INTERVAL", 0.5)
    monkeypatch.setattr(_media, "RTCP_INTERVAL", 0.3)
    yield


# --------------------------------------------------------------------------- calls


@pytest.mark.parametrize(
    "a_controls,b_controls",
    [(True, False), (True, True), (False, False)],
    ids=["roles-agreed", "both-controlling", "both-controlled"],
)
def test_imedia_calls_imedia_with_full_ice(
    mux: Mux, mlog: IInstanceLog, a_controls: bool, b_controls: bool
) -> None:
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b, a_controls, b_controls)
    # a conflict was resolved by the tie-breakers: exactly one side controls now
    assert a[0]._agent.controlling != b[0]._agent.controlling
    exchange(mux, a, b)
    mux.run_until(lambda: len(a[1].payloads) == PACKETS and len(b[1].payloads) == PACKETS)
    check_intact(a[1], b"b")
    check_intact(b[1], b"a")
    for m, _ in (a, b):
        c = m.counters
        assert c.srtp_failed == c.foreign == c.stun_rejected == c.held_dropped == 0
        assert c.rtp_received == PACKETS and c.rtp_sent == PACKETS
    close(mux, a, b)


def test_remote_passive_makes_this_side_the_dtls_client(mux: Mux, mlog: IInstanceLog) -> None:
    """remoteDtlsRole PASSIVE: this side is the client; the other side, told ACTIVE, is
    the server; media flows."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    b[0].Connect(a[1].config, True, SETUP_ROLE_ACTIVE)  # A will be active: B serves
    a[0].Connect(b[1].config, False, SETUP_ROLE_PASSIVE)  # B is passive: A is the client
    mux.run_until(lambda: a[1].connected and b[1].connected, timeout=10, what="connected")
    assert (a[0]._dtls_server, b[0]._dtls_server) == (False, True)
    exchange(mux, a, b, 5)
    mux.run_until(lambda: len(a[1].payloads) == 5 and len(b[1].payloads) == 5)
    close(mux, a, b)


def test_dtmf_both_ways(mux: Mux, mlog: IInstanceLog) -> None:
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    (ma, ua), (mb, ub) = a, b
    ua.in_call = ub.in_call = True
    for d in "1#9":
        ma.RtpDtmf(d, 101)
    mb.RtpDtmf("*", 101)
    mb.RtpDtmf("d", 101)
    ua.in_call = ub.in_call = False
    want_b = [(k, d) for d in "1#9" for k in ("start", "end")]
    want_a = [(k, d) for d in "*D" for k in ("start", "end")]
    mux.run_until(lambda: len(ub.dtmf) >= 6 and len(ua.dtmf) >= 4, timeout=5, what="digits")
    mux.run_for(0.35)  # a late redundant end would show now
    assert ub.dtmf == want_b and ua.dtmf == want_a, (ua.dtmf, ub.dtmf)
    assert ua.payloads == ub.payloads == []  # telephone-events are no audio payloads
    close(mux, a, b)


def test_loss_and_reordering_through_a_relay(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sends to B through the relay, which drops three of A's RTP packets and swaps two;
    B's statistics and A's view from B's reports count exactly that."""
    monkeypatch.setattr(_media, "STATISTICS_INTERVAL", 1.6)  # one interval covers the call
    monkeypatch.setattr(_media, "RTCP_INTERVAL", 0.3)
    rtp_of: dict[int, int] = {}  # the relay's datagram index -> A's RTP packet index
    drops = {5, 17, 30}
    holds = {10, 25}

    def rule(index: int, data: bytes) -> str:
        if 128 <= data[0] <= 191 and not 192 <= data[1] <= 223:  # RTP, not RTCP
            i = rtp_of[index] = len(rtp_of)
            if i in drops:
                return "drop"
            if i in holds:
                return "hold"  # goes out after the next one: a swap
        return "pass"

    a, b, relay = relayed_call(mux, mlog, up=DatagramFaults(rule=rule))
    try:
        exchange(mux, a, b)
        want = PACKETS - len(drops)
        mux.run_until(lambda: len(b[1].payloads) == want, timeout=5, what="B's payloads")
        got = b[1].payloads
        assert sorted(got) == sorted(payload_for(b"a", i) for i in range(PACKETS) if i not in drops)
        order = [next(i for i in range(PACKETS) if payload_for(b"a", i) == p) for p in got]
        # what the relay forwarded, in the order it did (a held packet goes out after
        # the next datagram, which may be RTCP or STUN): B got exactly that, in that order
        expect = [rtp_of[i] for i in relay.ways["up"].order if i in rtp_of]
        assert order == expect
        assert order != sorted(order)  # the holds did reorder
        diffs = [order[0] - 0 + 1] + [order[k] - order[k - 1] for k in range(1, len(order))]
        assert b[1].diffs[1:] == diffs[1:]
        assert b[0].counters.rtp_lost == len(drops)
        mux.run_until(lambda: a[0].counters.peer_lost == len(drops), timeout=5, what="B's RR")
        mux.run_until(lambda: any(not s.xmit for s in b[1].stats), timeout=5, what="B's stats")
        first = next(s for s in b[1].stats if not s.xmit)
        assert first.loss == (len(drops) << 8) // PACKETS  # 3 of 40 in the one interval
        close(mux, a, b)
    finally:
        relay.close()


@pytest.mark.parametrize("way", ["up", "down"])
def test_lost_dtls_flight_is_resent(mux: Mux, mlog: IInstanceLog, way: str) -> None:
    """The relay drops the first DTLS handshake datagram one way: the stream's DTLS
    timer resends it and the call connects, after about the short first timeout
    (`DTLS_RTO_INITIAL`, 0.1 s), not RFC 6347's 1 s."""
    assert _media.DTLS_RTO_INITIAL <= 0.2
    drop_first_handshake = drop_first(1, lambda d: dtls_content_type(d) == 22)
    dropped_at: list[float] = []

    def rule(index: int, data: bytes) -> str:
        verdict = drop_first_handshake(index, data)
        if verdict == "drop":
            dropped_at.append(mux.loop.time())
        return verdict

    faults = DatagramFaults(rule=rule)
    a, b, relay = relayed_call(
        mux, mlog, up=faults if way == "up" else None, down=faults if way == "down" else None
    )
    try:
        connected_at = mux.loop.time()  # relayed_call ran until both sides connected
        assert relay.ways[way].dropped, "no DTLS handshake datagram was dropped"
        assert len(dropped_at) == 1
        # the resend came after the short timeout (a 1 s first timeout costs >= 1 s);
        # a generous bound, not a timing: the handshake itself takes a few ms
        assert connected_at - dropped_at[0] < 0.6, connected_at - dropped_at[0]
        exchange(mux, a, b, 5)
        mux.run_until(lambda: len(b[1].payloads) == 5 and len(a[1].payloads) == 5)
        close(mux, a, b)
    finally:
        relay.close()


class LitePeer:
    """An ice-lite peer in a few lines: it answers Binding requests for its ufrag (with
    integrity under its password), sends no checks, and echoes RTP back."""

    UFRAG = "lite"
    PWD = "litepasswordlitepassword"

    def __init__(self, mux: Mux) -> None:
        import socket

        self.loop = mux.loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self.echoed = 0
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        from usocket_asyncio._stun import BINDING, REQUEST, SUCCESS, StunMessage, encode, parse

        try:
            data, src = self.sock.recvfrom(2048)
        except BlockingIOError:
            return
        if data[0] < 4:
            msg = parse(data)
            if msg.cls == REQUEST and (msg.username or "").startswith(self.UFRAG + ":"):
                answer = StunMessage(BINDING, SUCCESS, msg.transaction_id, xor_mapped_address=src)
                self.sock.sendto(encode(answer, self.PWD.encode()), src)
                self.answered += 1
        elif 128 <= data[0] <= 191 and not 192 <= data[1] <= 223:
            self.sock.sendto(data, src)
            self.echoed += 1

    def config(self) -> MediaConfig:
        cfg = plain_config(self.port)
        cfg.ice = IceCandidates(
            None,
            self.UFRAG,
            self.PWD,
            True,
            [IceCandidate("127.0.0.1", self.port, self.port, 2130706431, 0, 0, "1")],
        )
        return cfg

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def test_ice_lite_peer_without_dtls(mux: Mux, mlog: IInstanceLog) -> None:
    """An ice-lite remote sends no checks: this side controls (iceRemoteRole False),
    checks, nominates, and plain RTP (no fingerprint) flows on the selected pair."""
    lite = LitePeer(mux)
    try:
        a = make(mux, mlog, "a")
        a[0].Connect(lite.config(), False, SETUP_ROLE_NONE)
        mux.run_until(lambda: a[1].connect_error is not False, timeout=10, what="connected")
        assert a[1].connect_error is None and lite.answered >= 2  # a check and the nomination
        assert a[0].GetSrtpProfile() is None
        for i in range(5):
            a[0].RtpSend(payload_for(b"lite", i), None, i * 160)
        mux.run_until(lambda: len(a[1].payloads) == 5, timeout=5, what="the echo")
        assert a[1].payloads == [payload_for(b"lite", i) for i in range(5)]
        assert a[1].ssrcs[0][1] == lite.port
        close(mux, a)
    finally:
        lite.close()


def test_plain_rtp_peer(mux: Mux, mlog: IInstanceLog) -> None:
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    (ma, ua), (mb, ub) = a, b
    ua.in_call = ub.in_call = True
    ma.Connect(plain_config(mb.localPort), False, SETUP_ROLE_NONE)
    mb.Connect(plain_config(ma.localPort), False, SETUP_ROLE_NONE)
    ua.in_call = ub.in_call = False
    mux.run_until(lambda: ua.connected and ub.connected, what="plain connect")
    exchange(mux, a, b)
    mux.run_until(lambda: len(ua.payloads) == PACKETS and len(ub.payloads) == PACKETS)
    check_intact(ua, b"b")
    check_intact(ub, b"a")
    assert ma.counters.stun_rejected == 0 and ma.counters.not_media == 0
    close(mux, a, b)


def test_payload_type_is_the_remotes_first_audio_codec(mux: Mux, mlog: IInstanceLog) -> None:
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    for_a = plain_config(b[0].localPort)
    for_a.codecList = [Codec(AudioCoder.DTMF, 0, 101, 8000), Codec(AudioCoder.G711_A, 1, 8, 8000)]
    a[0].Connect(for_a, False, SETUP_ROLE_NONE)
    b[0].Connect(plain_config(a[0].localPort), False, SETUP_ROLE_NONE)
    mux.run_until(lambda: a[1].connected and b[1].connected)
    a[0].RtpSend(b"x" * 160, None, 0)
    mux.run_until(lambda: bool(b[1].ssrcs))
    assert b[1].ssrcs[0][3] == 8  # PCMA: telephone-event is not an audio codec to send with
    close(mux, a, b)


def test_rtp_header_random_ssrc_and_sequence_start(mux: Mux, mlog: IInstanceLog) -> None:
    """RtpSend builds the header on the wire: version 2, the first packet marked, this
    stream's SSRC (the one the peer's MediaRtpRecv reports), sequence numbers counting up
    by one from a random start, the app's timestamps; SSRCs and starts differ between
    streams."""
    import socket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    starts: list[tuple[int, int]] = []
    try:
        for k in range(3):
            m, u = make(mux, mlog, f"s{k}")
            m.Connect(plain_config(sink.getsockname()[1]), False, SETUP_ROLE_NONE)
            mux.run_until(lambda: u.connected)  # noqa: B023 (runs in this turn)
            for i in range(4):
                m.RtpSend(b"p" * 160, None, 1000 + 160 * i)
            mux.run_until(lambda: u.sent == 4)  # noqa: B023
            heads = [sink.recv(2048)[:12] for _ in range(4)]
            assert [h[0] >> 6 for h in heads] == [2] * 4
            assert [h[1] >> 7 for h in heads] == [1, 0, 0, 0]  # the marker on the first
            assert {h[1] & 0x7F for h in heads} == {0}  # PCMU, the remote's first codec
            seqs = [int.from_bytes(h[2:4], "big") for h in heads]
            assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]
            assert [int.from_bytes(h[4:8], "big") for h in heads] == [
                1000 + 160 * i for i in range(4)
            ]
            ssrcs = {int.from_bytes(h[8:12], "big") for h in heads}
            assert len(ssrcs) == 1
            starts.append((ssrcs.pop(), seqs[0]))
            close(mux, (m, u))
    finally:
        sink.close()
    assert len({ssrc for ssrc, _ in starts}) == 3 and len({seq for _, seq in starts}) == 3


def test_drop_media_rx_drops_received_rtp(mux: Mux, mlog: IInstanceLog) -> None:
    """dropMediaRx=100 drops every RTP packet on the way in (the SDK's test aid): the
    other side sent them, nothing is delivered; RTCP still arrives."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b", dropMediaRx=100)
    connect(mux, a, b)
    (ma, ua), (mb, ub) = a, b
    for i in range(10):
        ma.RtpSend(payload_for(b"a", i), None, i * 160)
    mux.run_until(lambda: ua.sent == 10, what="send results")
    app = bytes([0x80, 204, 0, 2]) + (1234).to_bytes(4, "big") + b"test"
    ma.RtcpSend(app)
    mux.run_until(lambda: mb.counters.rtcp_received >= 1, timeout=5, what="RTCP")
    mux.run_for(0.1)
    assert ub.payloads == [] and ub.ssrcs == []
    close(mux, a, b)


def test_rtcp_reports_every_five_seconds_randomized(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 3550 6.2/6.3.1: the report timer is RTCP's 5 s minimum interval times a random
    0.5..1.5, the first after half of it; nothing is sent before the first is due."""
    starts: list[tuple[Any, int]] = []
    real_start = _iomux.ITimer.Start

    def start(timer: _iomux.ITimer, ms: int) -> None:
        starts.append((timer, ms))
        real_start(timer, ms)

    monkeypatch.setattr(_iomux.ITimer, "Start", start)
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    for m, _ in (a, b):
        first = [ms for t, ms in starts if t is m._rtcp_timer]
        assert len(first) == 1 and 1250 <= first[0] < 3750, first
    # the next ones: RTCP_INTERVAL (5 s) randomized, spread over the whole 2.5..7.5 s
    later = [a[0]._rtcp_delay() for _ in range(400)]
    assert 2500 <= min(later) < 3000 and 7000 < max(later) < 7500, (min(later), max(later))
    assert 4700 < sum(later) / len(later) < 5300
    mux.run_for(0.3)
    assert a[0].counters.rtcp_received == b[0].counters.rtcp_received == 0  # none due yet
    close(mux, a, b)


def test_streams_of_one_provider_share_one_certificate_and_openssl_context(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider's streams given no socketContext present one self-signed certificate
    (one key made, one fingerprint) and their DTLS associations share one OpenSSL
    context: nothing of that is made per stream. Another provider has its own."""
    made: list[bytes] = []
    real = _media._make_self_signed  # type: ignore[attr-defined]

    def counted() -> Any:
        ck = real()
        made.append(ck.pem)
        return ck

    monkeypatch.setattr(_media, "_make_self_signed", counted)
    mine, theirs = CreateMediaProvider(), CreateMediaProvider()
    streams = []
    for provider, name in ((mine, "a1"), (mine, "a2"), (theirs, "b1"), (theirs, "b2")):
        user = MediaRecorder(name)
        media = provider.CreateMedia(mux, user, mlog)
        media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
        streams.append((media, user))
    mux.run_until(lambda: all(u.initialized for _, u in streams), what="initialized")
    (a1, a2, b1, b2) = streams
    assert len(made) == 2  # one key and certificate per provider, not per stream
    fps = [u.config.ice.fingerprint for _, u in streams]
    assert fps[0] == fps[1] and fps[2] == fps[3] and fps[0] != fps[2]
    connect(mux, a1, b1)
    connect(mux, a2, b2)
    # a1 and a2 serve DTLS (b answers active), b1 and b2 are clients
    assert a1[0]._dtls_server and a2[0]._dtls_server and not b1[0]._dtls_server
    for x, y in ((a1, a2), (b1, b2)):
        dx, dy = x[0]._dtls, y[0]._dtls
        assert dx is not None and dy is not None
        cx, cy = dx._conn, dy._conn
        assert cx is not None and cy is not None
        assert cx.config.ssl_ctx is cy.config.ssl_ctx
    exchange(mux, a1, b1, 5)
    exchange(mux, a2, b2, 5)
    mux.run_until(lambda: all(len(u.payloads) == 5 for _, u in streams), what="payloads")
    close(mux, a1, b1)
    close(mux, a2, b2)


def test_statistics_both_ways(mux: Mux, mlog: IInstanceLog, fast_stats: None) -> None:
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    exchange(mux, a, b)
    for _, u in (a, b):
        mux.run_until(lambda u=u: {s.xmit for s in u.stats} == {True, False}, timeout=5)  # type: ignore[misc]
        assert all(s.loss == 0 and s.jitter < 50 for s in u.stats)
        assert any(s.roundTrip >= 0 for s in u.stats if s.xmit)
    close(mux, a, b)


# --------------------------------------------------------------------------- the rules


def test_recv_into_a_view_truncates(mux: Mux, mlog: IInstanceLog) -> None:
    """A Recv buffer (here a slice of a view) shorter than the payload gets its first
    bytes (the truncation is logged); bad buffers and lengths raise at once."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    a[1].auto_recv = False
    connect(mux, a, b)
    view = memoryview(bytearray(100))[10:60]
    a[0].Recv(view, 40)
    with pytest.raises(ValueError, match="len=51"):
        a[0].Recv(view, 51)
    with pytest.raises(ValueError, match="writable"):
        a[0].Recv(b"read-only")
    b[0].RtpSend(payload_for(b"b", 0), None, 0)
    mux.run_until(lambda: len(a[1].payloads) == 1)
    assert a[1].payloads == [payload_for(b"b", 0)[:40]]
    assert bytes(view[:40]) == payload_for(b"b", 0)[:40]
    close(mux, a, b)


def test_rtcp_send_and_drop_media(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RtcpSend sends the app's RTCP (SRTCP-protected: the peer takes it); dropMediaTx
    drops RTP as a lossy network would, each RtpSend still reported."""
    monkeypatch.setattr(_media, "RTCP_INTERVAL", 60.0)  # no report of the stream's own
    a = make(mux, mlog, "a", dropMediaTx=100)
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    (ma, ua), (mb, ub) = a, b
    app = bytes([0x80, 204, 0, 2]) + (1234).to_bytes(4, "big") + b"test"  # APP "test"
    ma.RtcpSend(app)
    with pytest.raises(ValueError, match="RTCP packet"):
        ma.RtcpSend(b"\x80\x00" + bytes(10))  # RTP, not RTCP
    mux.run_until(lambda: mb.counters.rtcp_received == 1, timeout=5, what="the app's RTCP")
    for i in range(10):
        ma.RtpSend(payload_for(b"a", i), None, i * 160)
    mux.run_until(lambda: ua.sent == 10, what="send results")
    mux.run_for(0.1)
    assert ub.payloads == [] and mb.counters.rtp_received == 0
    assert mb.counters.srtcp_failed == 0
    close(mux, a, b)


def test_ice_failure_is_the_connect_result(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only remote candidate never answers: every check fails, and Connect ends with
    MediaConnectResult(media, "ICE failed: ...") and FAULT_CODE_RTP_ICE_FAILED."""
    import copy
    import socket

    from usocket_asyncio import _ice

    monkeypatch.setattr(_ice, "CHECK_RTO_MIN", 0.05)
    monkeypatch.setattr(_ice, "CHECK_RTO_MAX", 0.05)
    monkeypatch.setattr(_ice, "CHECK_SENDS", 2)
    monkeypatch.setattr(_ice, "FAIL_GRACE", 0.3)  # no late candidate is coming
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        a = make(mux, mlog, "a")
        b = make(mux, mlog, "b")
        cfg = copy.deepcopy(b[1].config)
        cfg.ice.candidateList[0].rtpPort = silent.getsockname()[1]
        a[0].Connect(cfg, False, SETUP_ROLE_ACTIVE)
        mux.run_until(lambda: a[1].connect_error is not False, timeout=5, what="ICE failed")
        assert isinstance(a[1].connect_error, str) and "ICE failed" in a[1].connect_error
        assert a[1].error_codes() == [FAULT_CODE_RTP_ICE_FAILED]
        a[0].RtpSend(b"x", None, 0)  # ignored after the failure (logged once)
        mux.run_ready()
        assert a[1].sent == 0
        close(mux, a, b)
    finally:
        silent.close()


def sdp_fingerprint(media: Any, name: str, flip: bool = False) -> str:
    """The fingerprint of the certificate `media` presents, by hash `name` ("sha-384"),
    as SDP writes it; `flip`: one bit of it wrong (the same length, another certificate's)."""
    der = media._ctx._server[None].leaf_der  # the stream's own self-signed certificate
    digest = bytearray(hashlib.new(name.replace("-", ""), der).digest())
    if flip:
        digest[-1] ^= 1
    return name + " " + bytes(digest).hex(":").upper()


@pytest.mark.parametrize("name", ["sha-1", "sha-224", "sha-384", "sha-512"])
def test_a_remote_fingerprint_of_each_hash_connects(
    mux: Mux, mlog: IInstanceLog, name: str
) -> None:
    """A peer's fingerprint by sha-1/224/384/512 (as MediaConfigFromSdp reads it) pins
    its certificate by that hash: both sides connect and media flows intact."""
    import copy

    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    for m, u in (a, b):
        assert u.config.ice.fingerprint == sdp_fingerprint(m, "sha-256")  # the cert hashed
    cfg_for_a = copy.deepcopy(b[1].config)
    cfg_for_b = copy.deepcopy(a[1].config)
    cfg_for_a.ice.fingerprint = sdp_fingerprint(b[0], name)
    cfg_for_b.ice.fingerprint = sdp_fingerprint(a[0], name)
    connect(mux, a, b, cfg_for_a=cfg_for_a, cfg_for_b=cfg_for_b)
    assert a[1].connect_error is None and b[1].connect_error is None
    exchange(mux, a, b, 5)
    mux.run_until(lambda: len(a[1].payloads) == 5 and len(b[1].payloads) == 5)
    assert a[1].payloads == [payload_for(b"b", i) for i in range(5)]
    assert b[1].payloads == [payload_for(b"a", i) for i in range(5)]
    with pytest.raises(ValueError, match="fingerprint"):
        bad = copy.deepcopy(cfg_for_a)
        bad.ice.fingerprint = name + " 12:34"  # too short for its hash
        make(mux, mlog, "c")[0].Connect(bad, False, SETUP_ROLE_ACTIVE)
    close(mux, a, b)


@pytest.mark.parametrize("name", ["sha-1", "sha-224", "sha-256", "sha-384", "sha-512"])
@pytest.mark.parametrize("wrong_side", ["client", "server"])
def test_a_certificate_that_is_not_the_fingerprints_fails(
    mux: Mux, mlog: IInstanceLog, wrong_side: str, name: str
) -> None:
    """The remote's certificate is pinned by its fingerprint: a side given a wrong one
    (of each hash: the right digest with one bit flipped) ends its connect with
    FAULT_CODE_RTP_DTLS_SRTP_FAILED, and no media flows."""
    import copy

    a = make(mux, mlog, "a")  # the DTLS server (B answers active)
    b = make(mux, mlog, "b")
    cfg_for_a = copy.deepcopy(b[1].config)
    cfg_for_b = copy.deepcopy(a[1].config)
    cfg_for_a.ice.fingerprint = sdp_fingerprint(b[0], name, flip=wrong_side == "server")
    cfg_for_b.ice.fingerprint = sdp_fingerprint(a[0], name, flip=wrong_side == "client")
    b[0].Connect(cfg_for_b, True, SETUP_ROLE_ACTPASS)
    a[0].Connect(cfg_for_a, False, SETUP_ROLE_ACTIVE)
    checker = b if wrong_side == "client" else a
    mux.run_until(lambda: checker[1].connect_error is not False, timeout=10, what="failure")
    assert isinstance(checker[1].connect_error, str) and "DTLS" in checker[1].connect_error
    assert checker[1].error_codes() == [FAULT_CODE_RTP_DTLS_SRTP_FAILED]
    assert checker[0].GetSrtpProfile() is None
    close(mux, a, b)


def test_caller_mistakes_raise_at_once(mux: Mux, mlog: IInstanceLog) -> None:
    user = MediaRecorder("x")
    media = CreateMediaProvider().CreateMedia(mux, user, mlog)
    with pytest.raises(NotImplementedError, match="TURN"):
        media.Initialize(None, None, None, 0, 0, turnServers=["127.0.0.1:3478"])
    with pytest.raises(ValueError, match="port range"):
        media.Initialize(None, None, None, 5000, 4000, localAddresses=["127.0.0.1"])
    with pytest.raises(SocketModeError, match="MediaConnectResult"):
        media.RtpSend(b"x", None, 0)
    with pytest.raises(SocketModeError, match="MediaInitializeComplete"):
        media.Connect(plain_config(9), False, SETUP_ROLE_NONE)
    with pytest.raises(TypeError):
        CreateMediaProvider().CreateMedia(mux, None, mlog)  # type: ignore[arg-type]
    media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    with pytest.raises(SocketModeError, match="twice"):
        media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    mux.run_until(lambda: user.initialized)
    with pytest.raises(ValueError, match="no IP address literal"):
        bad = plain_config(9)
        bad.defAddr = "peer.example"
        media.Connect(bad, False, SETUP_ROLE_NONE)
    with pytest.raises(ValueError, match="DTMF digit"):
        media.Connect(plain_config(9), False, SETUP_ROLE_NONE)
        media.RtpDtmf("x", 101)
    media.Close()
    with pytest.raises(SocketModeError, match="after Close"):
        media.Recv(bytearray(10))
    mux.run_until(lambda: user.closed)
    assert user.names() == ["init", "closed"]


def test_default_local_addresses() -> None:
    """Without localAddresses the host's interface addresses are used: IP literals,
    no duplicates, loopback (if any) last."""
    import ipaddress

    addrs = _media.host_addresses()
    assert addrs and len(set(addrs)) == len(addrs)
    ips = [ipaddress.ip_address(a) for a in addrs]
    loop = [ip.is_loopback for ip in ips]
    assert loop == sorted(loop)
    assert not any(ip.version == 6 and ip.is_link_local for ip in ips)


def test_port_range(mux: Mux, mlog: IInstanceLog) -> None:
    """minPort..maxPort bound the port; a taken port is skipped."""
    import socket

    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    taken = blocker.getsockname()[1]
    try:
        users = []
        for _ in range(3):
            user = MediaRecorder()
            media = CreateMediaProvider().CreateMedia(mux, user, mlog)
            media.Initialize(None, None, None, taken, taken + 1, localAddresses=["127.0.0.1"])
            users.append((media, user))
        mux.run_until(lambda: all(u.initialized for _, u in users))
        ports = [m.localPort for m, u in users if u.config is not None]
        assert ports in ([taken + 1], [])  # one free port in the range, at most one gets it
        assert sum(u.config is None for _, u in users) == 3 - len(ports)
        for m, _ in users:
            m.Close()
        mux.run_until(lambda: all(u.closed for _, u in users))
    finally:
        blocker.close()


def test_calls_from_another_thread_raise(mux: Mux, mlog: IInstanceLog) -> None:
    a = make(mux, mlog, "a")
    errors: list[BaseException] = []

    def other() -> None:
        try:
            a[0].Recv(bytearray(10))
        except BaseException as e:
            errors.append(e)

    async def run_thread() -> None:
        t = threading.Thread(target=other)
        t.start()
        while t.is_alive():
            await __import__("asyncio").sleep(0.01)

    mux.loop.run_until_complete(run_thread())
    assert len(errors) == 1 and isinstance(errors[0], SocketModeError)
    close(mux, a)


def test_close_mid_call(mux: Mux, mlog: IInstanceLog, caplog: pytest.LogCaptureFixture) -> None:
    """Close in the middle of a call: the peer gets close_notify, the port is closed,
    every timer is cancelled, MediaCloseComplete is the last callback and nothing follows
    it while the peer keeps sending to the closed port."""
    import socket

    caplog.set_level(logging.INFO)
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    port = a[0].localPort
    sb = Sender(mux, b[0], 200, lambda i: payload_for(b"b", i), ms=5)
    sb.start()
    mux.run_until(lambda: len(a[1].payloads) > 5)
    a[1].in_call = True
    a[0].Close()
    a[1].in_call = False
    assert "closed" not in a[1].names()  # not inside Close
    mux.run_until(lambda: a[1].closed)
    n = len(a[1].events)
    mux.run_until(
        lambda: any("the peer closed DTLS" in r.getMessage() for r in caplog.records),
        timeout=5,
        what="B got close_notify",
    )
    mux.run_for(0.1)
    assert len(a[1].events) == n and a[1].violations == []
    timers = [getattr(a[0], f) for f in dir(a[0]) if f.endswith("_timer")]
    assert len(timers) >= 6 and not any(t.IsRunning() for t in timers)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the port is free again
    sb.stop()
    close(mux, b)


def test_consent_loss_reports_ice_failed(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer goes away (its port closes): consent expires and CHANNEL_MEDIA_ERROR
    says FAULT_CODE_RTP_ICE_FAILED; sending stops."""
    from usocket_asyncio import _ice

    real = _ice.IceAgent.__init__

    def short(self: Any, *a: Any, **kw: Any) -> None:
        kw["consent_interval"] = 0.1
        kw["consent_timeout"] = 0.6
        real(self, *a, **kw)

    monkeypatch.setattr(_ice.IceAgent, "__init__", short)
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    close(mux, b)
    mux.run_until(lambda: a[1].errors != [], timeout=5, what="consent lost")
    assert a[1].error_codes() == [FAULT_CODE_RTP_ICE_FAILED]
    a[0].RtpSend(b"late", None, 0)  # ignored: the media stopped
    mux.run_for(0.05)
    assert a[1].sent == 0
    close(mux, a)
