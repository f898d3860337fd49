"""Hostile input on an IMedia's port, during a live DTLS-SRTP call: STUN with bad
integrity or an unknown USERNAME (and floods of it), DTLS ClientHellos from strangers,
SRTP with bad tags, replays, RTP and RTCP from a third address. None of it is answered,
delivered or kept; each kind is counted and logged once; the call carries on intact."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest
from kit.loop import Mux
from kit.media import (
    PACKETS,
    Sender,
    close,
    connect,
    exchange,
    make,
    payload_for,
    relayed_call,
)
from kit.relays import DatagramFaults

from usocket_asyncio import (
    FAULT_CODE_RTP_SRTCP_AUTH_FAILED,
    FAULT_CODE_RTP_SRTP_AUTH_FAILED,
    IInstanceLog,
    _media,
)
from usocket_asyncio._stun import BINDING, REQUEST, StunMessage, encode

FLOOD = 1000


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


def answers(s: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(s.recv(4096))
        except BlockingIOError:
            return got


def stun_request(username: str, key: bytes) -> bytes:
    return encode(
        StunMessage(
            BINDING, REQUEST, os.urandom(12), username=username, priority=1, ice_controlling=1
        ),
        key,
    )


def media_lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_stun_bad_integrity_and_unknown_username(
    mux: Mux, mlog: IInstanceLog, attacker: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    ma, ua = a
    agent = ma._agent
    remotes = len(agent.remote_candidates)
    dest = ("127.0.0.1", ma.localPort)
    ufrag = ua.config.ice.iceUfrag
    bad_key = stun_request(f"{ufrag}:x", b"not the password")
    unknown = stun_request("nobody:x", ua.config.ice.icePwd.encode())
    for i in range(FLOOD):
        attacker.sendto(bad_key if i % 2 else unknown, dest)
        if i % 32 == 31:  # bursts the kernel buffer holds
            mux.run_ready()
    mux.run_until(lambda: ma.counters.stun_rejected == FLOOD, timeout=5, what="all refused")
    mux.run_ready()
    assert answers(attacker) == []  # no 401, no answer: nothing for a stranger
    assert len(agent.remote_candidates) == remotes  # no peer-reflexive candidate learned
    assert media_lines(caplog, "refused by the ICE agent") == 1  # logged once, counted
    # the call is untouched
    exchange(mux, a, b)
    mux.run_until(lambda: len(ua.payloads) == PACKETS and len(b[1].payloads) == PACKETS)
    assert ua.payloads == [payload_for(b"b", i) for i in range(PACKETS)]
    assert ua.errors == [] and ua.violations == []
    close(mux, a, b)


def client_hello() -> bytes:
    """A DTLS 1.2 ClientHello record header with a body of noise (the engine is never
    given it: the demux drops DTLS from strangers before)."""
    body = b"\x01" + os.urandom(100)
    return bytes([22, 0xFE, 0xFD]) + bytes(8) + len(body).to_bytes(2, "big") + body


def test_strangers_dtls_rtp_rtcp_and_noise(
    mux: Mux, mlog: IInstanceLog, attacker: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    ma, ua = a
    dest = ("127.0.0.1", ma.localPort)
    rtp = bytes([0x80, 0]) + os.urandom(10) + bytes(160)
    rtcp = bytes([0x80, 200, 0, 6]) + os.urandom(24)
    kinds = [client_hello(), rtp, rtcp, b"\xff" * 30, b"\x40hello"]
    for i in range(FLOOD):
        attacker.sendto(kinds[i % len(kinds)], dest)
        if i % 32 == 31:  # bursts the kernel buffer holds
            mux.run_ready()
    c = ma.counters
    mux.run_until(lambda: c.foreign + c.not_media >= FLOOD, timeout=5, what="all dropped")
    assert c.foreign == 3 * FLOOD // 5 and c.not_media == 2 * FLOOD // 5
    mux.run_ready()
    assert answers(attacker) == []  # no HelloVerifyRequest, no alert: nothing
    assert ua.ssrcs == [] and ua.payloads == []  # nothing delivered
    for text in ("DTLS from", "RTP/RTCP from", "is no STUN/DTLS/RTP"):
        assert media_lines(caplog, text) == 1, text
    exchange(mux, a, b)
    mux.run_until(lambda: len(ua.payloads) == PACKETS)
    assert ua.payloads == [payload_for(b"b", i) for i in range(PACKETS)]
    assert [s[2] for s in ua.ssrcs] == [b[0]._rtp.ssrc]
    close(mux, a, b)


def test_srtp_bad_tags_and_replays_from_the_peer_address(
    mux: Mux, mlog: IInstanceLog, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packets from the selected remote's address (the relay's, here) that fail SRTP
    authentication or repeat an index: dropped, counted, one
    FAULT_CODE_RTP_SRTP_AUTH_FAILED and one log line."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(_media, "RTCP_INTERVAL", 0.5)  # B's reports come within the test
    seen: list[bytes] = []

    seen_rtcp: list[bytes] = []

    def keep_rtp(index: int, data: bytes) -> str:
        if 128 <= data[0] <= 191:
            (seen_rtcp if 192 <= data[1] <= 223 else seen).append(data)
        return "pass"

    a, b, relay = relayed_call(mux, mlog, down=DatagramFaults(rule=keep_rtp))
    try:
        ma, ua = a
        exchange(mux, a, b)
        mux.run_until(lambda: len(ua.payloads) == PACKETS)
        to_a = relay._front  # the relay's front socket sends to A as the selected remote
        a_addr = ("127.0.0.1", ma.localPort)
        n_bad = 0
        for p in seen[:20]:
            to_a.sendto(p, a_addr)  # a replay
            forged = bytearray(p)
            forged[-1] ^= 1
            to_a.sendto(bytes(forged), a_addr)  # a bad tag
            forged2 = bytearray(p)
            forged2[20] ^= 0x55
            to_a.sendto(bytes(forged2), a_addr)  # changed payload, old tag
            n_bad += 3
        mux.run_until(lambda: ma.counters.srtp_failed == n_bad, timeout=5, what="dropped")
        mux.run_ready()
        assert len(ua.payloads) == PACKETS  # nothing of it delivered
        assert ua.error_codes() == [FAULT_CODE_RTP_SRTP_AUTH_FAILED]
        assert media_lines(caplog, "failed authentication or replay") == 1
        # SRTCP likewise: a replayed and a forged report, each dropped and counted
        mux.run_until(lambda: bool(seen_rtcp), timeout=5, what="an SRTCP report of B's")
        good = ma.counters.rtcp_received
        for p in seen_rtcp[:5]:
            to_a.sendto(p, a_addr)
            forged = bytearray(p)
            forged[-5] ^= 1  # the tag (before the 4-byte SRTCP index)
            to_a.sendto(bytes(forged), a_addr)
        n = min(5, len(seen_rtcp))
        mux.run_until(lambda: ma.counters.srtcp_failed >= 2 * n, timeout=5, what="SRTCP drops")
        assert ma.counters.srtcp_failed == 2 * n
        assert ma.counters.rtcp_received - good <= 2  # only B's own new reports counted
        assert ua.error_codes() == [
            FAULT_CODE_RTP_SRTP_AUTH_FAILED,
            FAULT_CODE_RTP_SRTCP_AUTH_FAILED,
        ]
        close(mux, a, b)
    finally:
        relay.close()


def test_early_dtls_is_bounded(mux: Mux, mlog: IInstanceLog, attacker: socket.socket) -> None:
    """Before a pair is selected, DTLS datagrams wait, at most EARLY_DTLS of them."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    ma = a[0]
    cfg = b[1].config
    cfg.ice.candidateList = []  # A has no way to B: ICE stays in progress
    ma.Connect(cfg, False, 3)
    for _ in range(100):
        attacker.sendto(client_hello(), ("127.0.0.1", ma.localPort))
    mux.run_until(
        lambda: ma.counters.early >= 100 - _media.EARLY_DTLS, timeout=5, what="early DTLS"
    )
    assert len(ma._early_dtls) == _media.EARLY_DTLS
    assert answers(attacker) == []
    close(mux, a, b)
    assert ma._early_dtls == []


def test_slow_reader_bounded(mux: Mux, mlog: IInstanceLog) -> None:
    """An app that never calls Recv: at most HOLD_PAYLOADS payloads wait; the oldest go."""
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    a[1].auto_recv = False
    connect(mux, a, b)
    n = _media.HOLD_PAYLOADS + 30
    s = Sender(mux, b[0], n, lambda i: payload_for(b"b", i), ms=2)
    s.start()
    mux.run_until(lambda: a[0].counters.rtp_received == n, timeout=10, what="all received")
    assert a[0].counters.held_dropped == 30
    assert len(a[0]._held) == _media.HOLD_PAYLOADS
    buf = bytearray(400)
    a[1].in_call = True
    a[0].Recv(buf)  # a payload is there: its result still comes from the loop, not here
    a[1].in_call = False
    mux.run_until(lambda: len(a[1].payloads) == 1)
    assert a[1].violations == []
    assert a[1].payloads == [payload_for(b"b", 30)]  # the oldest kept
    assert a[1].diffs == [1]
    close(mux, a, b)


def test_noise_from_the_peer_address(mux: Mux, mlog: IInstanceLog) -> None:
    """Random datagrams of every first-byte class from the selected remote's own address
    (the relay's): nothing raises, nothing is delivered, the call carries on."""
    import random

    a, b, relay = relayed_call(mux, mlog)
    try:
        (ma, ua) = a
        rnd = random.Random(7)
        to_a = relay._front
        a_addr = ("127.0.0.1", ma.localPort)
        for i in range(600):
            first = rnd.choice(
                [rnd.randrange(0, 4), rnd.randrange(20, 64), rnd.randrange(128, 192)]
            )
            size = rnd.randrange(1, 300)
            data = bytes([first]) + rnd.randbytes(size)
            if first < 4 and i % 2:  # a STUN header that parses further
                data = (
                    bytes([first, 1])
                    + len(data[20:]).to_bytes(2, "big")
                    + b"\x21\x12\xa4\x42"
                    + data[8:]
                )
            to_a.sendto(data, a_addr)
            if i % 32 == 31:
                mux.run_ready()
        mux.run_ready()
        assert ua.payloads == [] and ua.dtmf == []
        exchange(mux, a, b)
        mux.run_until(lambda: len(ua.payloads) == PACKETS, timeout=5)
        assert ua.payloads == [payload_for(b"b", i) for i in range(PACKETS)]
        assert ua.connect_error is None and ua.violations == []
        close(mux, a, b)
    finally:
        relay.close()
