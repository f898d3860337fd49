"""The sans-IO DTLS engine with no event loop: two engines wired back to back in a plain
loop, on a simulated clock (nothing sleeps; a lost flight costs simulated seconds).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from usocket_asyncio import IDtls, IInstanceLog, LogFlags, ShutdownReason, UDtls
from usocket_asyncio._context import default_server_cert
from usocket_asyncio._dtls_core import (
    COOKIE_WINDOW,
    HANDSHAKE_TIMEOUT,
    MAX_HANDSHAKING_PEERS,
    MAX_RECORD_LENGTH,
    RTO_INITIAL,
    RTO_MAX,
    ApplicationData,
    ConnectionFailed,
    CookieListener,
    DtlsConfig,
    DtlsConnection,
    DtlsEvent,
    HandshakeCompleted,
    held_part,
    is_client_hello,
    is_dtls,
    split_records,
)

R = ShutdownReason
CLIENT_ADDR = ("127.0.0.1", 40000)
PEM = default_server_cert().pem
FP = hashlib.sha256(default_server_cert().leaf_der).digest()


def server_config(**kw: Any) -> DtlsConfig:
    kw.setdefault("use_srtp", True)
    return DtlsConfig(True, PEM, **kw)


def client_config(**kw: Any) -> DtlsConfig:
    kw.setdefault("use_srtp", True)
    kw.setdefault("verify", False)
    return DtlsConfig(False, PEM, **kw)


Drop = Callable[[str, bytes], bool]


class Wire:
    """A client and a server engine joined by a simulated network: `drop(direction,
    datagram)` loses datagrams, `shuffle` reorders each batch (seeded)."""

    def __init__(
        self,
        client: DtlsConnection,
        server: DtlsConnection,
        drop: Drop | None = None,
        shuffle: bool = False,
    ) -> None:
        self.client = client
        self.server = server
        self.drop = drop or (lambda d, data: False)
        self.rng = random.Random(7) if shuffle else None
        self.now = 0.0
        self.events: dict[str, list[DtlsEvent]] = {"c": [], "s": []}
        self.sent: list[tuple[str, bytes]] = []
        self.lost: list[tuple[str, bytes]] = []

    def _move(self, src: DtlsConnection, dst: DtlsConnection, direction: str) -> bool:
        batch = src.datagrams_to_send()
        if self.rng is not None:
            self.rng.shuffle(batch)
        for d in batch:
            self.sent.append((direction, d))
            if self.drop(direction, d):
                self.lost.append((direction, d))
                continue
            dst.receive_datagram(d, self.now, CLIENT_ADDR if direction == "c2s" else None)
        return bool(batch)

    def _events(self) -> None:
        for key, conn in (("c", self.client), ("s", self.server)):
            while (ev := conn.next_event()) is not None:
                self.events[key].append(ev)

    def run(self, done: Callable[[], bool], steps: int = 500) -> None:
        for _ in range(steps):
            moved = self._move(self.client, self.server, "c2s")
            moved = self._move(self.server, self.client, "s2c") or moved
            self._events()
            if done():
                return
            if moved:
                continue
            timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t]
            if not timers:
                return
            self.now = max(self.now, min(timers))
            for conn in (self.client, self.server):
                t = conn.get_timer()
                if t is not None and t <= self.now:
                    conn.handle_timer(self.now)
        raise AssertionError("the exchange did not settle")

    def kinds(self, key: str) -> list[str]:
        return [type(e).__name__ for e in self.events[key]]

    def handshake(self) -> None:
        self.client.start(self.now)
        self.server.start(self.now)
        self.run(lambda: both_done(self))


def both_done(w: Wire) -> bool:
    return all(w.events[k] for k in "cs") or (w.client.ended and w.server.ended)


def pair(
    ccfg: DtlsConfig | None = None, scfg: DtlsConfig | None = None, **kw: Any
) -> tuple[DtlsConnection, DtlsConnection]:
    cpin = kw.pop("client_pin", None)
    spin = kw.pop("server_pin", None)
    cookie = kw.pop("cookie", True)
    mtu = kw.pop("mtu", 1200)
    c = DtlsConnection(ccfg or client_config(), fingerprint=cpin, mtu=mtu)
    s = DtlsConnection(
        scfg or server_config(), cookie=cookie, peer=CLIENT_ADDR, fingerprint=spin, mtu=mtu
    )
    return c, s


def completed(w: Wire, key: str) -> HandshakeCompleted:
    ev = w.events[key][0]
    assert isinstance(ev, HandshakeCompleted), w.events[key]
    return ev


def failed(w: Wire, key: str) -> ConnectionFailed:
    evs = [e for e in w.events[key] if isinstance(e, ConnectionFailed)]
    assert len(evs) == 1, w.kinds(key)
    assert w.events[key][-1] is evs[0], w.kinds(key)
    return evs[0]


# --------------------------------------------------------------------------- handshake


def test_handshake_agrees_srtp_keys_and_fingerprints() -> None:
    """Both sides complete, agree a profile and the same keying material, and learn
    each other's certificate fingerprint; every datagram fits the MTU."""
    c, s = pair(client_pin=FP, server_pin=FP)
    w = Wire(c, s)
    w.handshake()
    ce, se = completed(w, "c"), completed(w, "s")
    assert ce.srtp_profile == se.srtp_profile == "SRTP_AEAD_AES_128_GCM"
    assert ce.srtp_keys is not None and len(ce.srtp_keys) == 56
    assert ce.srtp_keys == se.srtp_keys
    assert ce.peer_fingerprint == se.peer_fingerprint == FP
    assert ce.version == "DTLSv1.2"
    assert w.now == 0.0  # nothing was lost: no timer ran
    assert all(len(d) <= 1200 for _, d in w.sent)
    assert c.get_timer() is None and s.get_timer() is None


def test_application_data_both_ways_and_the_record_limit() -> None:
    c, s = pair()
    w = Wire(c, s)
    w.handshake()
    c.send_data(b"ping")
    s.send_data(b"pong" * 100)
    w.run(lambda: len(w.events["c"]) == 2 and len(w.events["s"]) == 2)
    sd, cd = w.events["s"][1], w.events["c"][1]
    assert isinstance(sd, ApplicationData) and sd.data == b"ping"
    assert isinstance(cd, ApplicationData) and cd.data == b"pong" * 100
    with pytest.raises(ValueError, match="cleartext MTU"):
        c.send_data(b"x" * (c.cleartext_mtu + 1))
    c.send_data(b"y" * c.cleartext_mtu)  # exactly the limit fits one datagram
    out = c.datagrams_to_send()
    assert len(out) == 1 and len(out[0]) <= 1200


def test_alpn_server_preference() -> None:
    c, s = pair(client_config(alpn=["b", "a"]), server_config(alpn=["a", "b"]))
    w = Wire(c, s)
    w.handshake()
    assert completed(w, "c").alpn == completed(w, "s").alpn == "a"


def test_small_mtu_packs_whole_records() -> None:
    """At a 300-byte MTU every datagram holds whole records and none is larger."""
    c, s = pair(mtu=300)
    w = Wire(c, s)
    w.handshake()
    completed(w, "c")
    assert all(len(d) <= 300 for _, d in w.sent)
    for _, d in w.sent:
        assert b"".join(split_records(d)) == d
        for rec in split_records(d):
            assert len(rec) >= 13 and len(rec) == 13 + int.from_bytes(rec[11:13], "big")


# --------------------------------------------------------------------------- loss, order


def flight_start(direction: str, data: bytes) -> tuple[Any, ...]:
    epoch = int.from_bytes(data[3:5], "big")
    return (direction, data[0], epoch, data[13] if data[0] == 22 and epoch == 0 else None)


def test_each_flights_first_datagram_lost() -> None:
    """The first datagram of every flight, both ways, is lost once: the flights are
    resent on the simulated timer (or at the peer's resend) and the handshake completes."""
    seen: set[tuple[Any, ...]] = set()

    def drop(direction: str, data: bytes) -> bool:
        key = flight_start(direction, data)
        if key in seen:
            return False
        seen.add(key)
        return True

    c, s = pair(mtu=400)
    w = Wire(c, s, drop=drop)
    w.handshake()
    ce, se = completed(w, "c"), completed(w, "s")
    assert ce.srtp_keys == se.srtp_keys
    assert len(w.lost) >= 5  # CH, HVR, CH2, flight 4, flight 5 and the server's last
    assert 0 < w.now < 1.0  # the timer ran (first after RTO_INITIAL, 0.1 s)


def test_servers_last_flight_lost_is_resent_when_the_client_resends() -> None:
    """The server's ChangeCipherSpec+Finished is lost: the client's resend of its own
    flight (a replay to the server) makes the server resend its last flight."""
    lost = [0]

    def drop(direction: str, data: bytes) -> bool:
        if direction == "s2c" and data[0] == 20 and lost[0] == 0:
            lost[0] = 1
            return True
        return False

    c, s = pair()
    w = Wire(c, s, drop=drop)
    w.handshake()
    assert isinstance(w.events["s"][0], HandshakeCompleted)
    w.run(lambda: bool(w.events["c"]))
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys
    assert lost == [1] and w.now == pytest.approx(0.1)  # at the client's first resend


def test_reordered_datagrams() -> None:
    c, s = pair(mtu=300)
    w = Wire(c, s, shuffle=True)
    w.handshake()
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys


@pytest.mark.parametrize("seed", range(20))
def test_random_loss_and_reordering(seed: int) -> None:
    """30% loss both ways and every batch reordered, at a 300-byte MTU (flights of
    several datagrams): the handshake completes on the simulated clock."""
    rng = random.Random(seed)
    c, s = pair(mtu=300)
    w = Wire(c, s, drop=lambda d, data: rng.random() < 0.3, shuffle=True)
    assert w.rng is not None
    w.rng.seed(seed)
    w.handshake()
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys


def test_early_change_cipher_spec_is_held_until_the_flight_is_complete() -> None:
    """The client's flight arrives last datagram first (ChangeCipherSpec and Finished
    before the certificate): OpenSSL would drop the early ChangeCipherSpec; the engine
    holds it, and the handshake completes without any resend."""

    c, s = pair(mtu=300)
    c.start(0.0)
    for _ in range(20):
        out = c.datagrams_to_send()
        if any(d[0] == 20 or 20 in [r[0] for r in split_records(d)] for d in out):
            out.reverse()
        for d in out:
            s.receive_datagram(d, 0.0, CLIENT_ADDR)
        for d in s.datagrams_to_send():
            c.receive_datagram(d, 0.0)
        if s.established and c.established:
            break
    assert s.established and c.established


def test_deadline_when_the_server_never_answers() -> None:
    c, s = pair()
    w = Wire(c, s, drop=lambda d, data: d == "s2c")
    w.handshake()
    ev = failed(w, "c")
    assert ev.reason is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert "no result after" in ev.detail
    assert w.now == pytest.approx(HANDSHAKE_TIMEOUT)
    assert c.ended and c.get_timer() is None


# --------------------------------------------------------------------------- cookies


def test_cookie_exchange_leaves_no_state() -> None:
    """A ClientHello without a cookie gets a HelloVerifyRequest and no connection; the
    one with the cookie becomes a connection that completes once accepted."""
    lst = CookieListener(server_config())
    c = DtlsConnection(client_config())
    c.start(0.0)
    (ch1,) = c.datagrams_to_send()
    assert is_client_hello(ch1)
    out, conn, why = lst.receive(ch1, CLIENT_ADDR, 0.0)
    assert conn is None and why is None
    assert len(out) == 1 and out[0][0] == 22 and out[0][13] == 3  # HelloVerifyRequest
    c.receive_datagram(out[0], 0.0)
    (ch2,) = c.datagrams_to_send()
    # the same ClientHello from another address carries a cookie that is not its own
    out, conn, _ = lst.receive(ch2, ("127.0.0.2", 40000), 0.0)
    assert conn is None
    out, conn, _ = lst.receive(ch2, CLIENT_ADDR, 0.0)
    assert conn is not None and out == []
    conn.accept_verified(0.0)
    w = Wire(c, conn)
    w.run(lambda: both_done(w))
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys


def test_cookie_expires_after_two_windows() -> None:
    lst = CookieListener(server_config())
    c = DtlsConnection(client_config())
    c.start(0.0)
    out, _, _ = lst.receive(c.datagrams_to_send()[0], CLIENT_ADDR, 0.0)
    c.receive_datagram(out[0], 0.0)
    ch2 = c.datagrams_to_send()[0]
    # next window: still valid
    out, conn, _ = lst.receive(ch2, CLIENT_ADDR, COOKIE_WINDOW * 1.5)
    assert conn is not None
    # two windows later: refused; a fresh HelloVerifyRequest, nothing kept
    later = COOKIE_WINDOW * 2.5
    out, conn, _ = lst.receive(ch2, CLIENT_ADDR, later)
    assert conn is None and len(out) == 1 and out[0][13] == 3
    c2 = DtlsConnection(client_config())
    c2.start(later)
    c2.receive_datagram(lst.receive(c2.datagrams_to_send()[0], CLIENT_ADDR, later)[0][0], later)
    assert lst.receive(c2.datagrams_to_send()[0], CLIENT_ADDR, later)[1] is not None


def test_listener_peer_caps() -> None:
    lst = CookieListener(server_config())
    c = DtlsConnection(client_config())
    c.start(0.0)
    ch = c.datagrams_to_send()[0]
    out, conn, why = lst.receive(ch, CLIENT_ADDR, 0.0, handshaking=MAX_HANDSHAKING_PEERS)
    assert (out, conn) == ([], None) and why is not None and "MAX_HANDSHAKING_PEERS" in why
    assert lst.receive(b"\x17garbage" * 4, CLIENT_ADDR, 0.0) == ([], None, None)


def test_listener_caps_and_timeout_set_by_the_caller() -> None:
    """The socket adapter passes its own caps and handshake deadline: a cap of 1 with
    one peer drops the ClientHello; a connection the listener makes fails at its
    `handshake_timeout`, not at the default."""
    lst = CookieListener(server_config(), handshake_timeout=2.0)
    c = DtlsConnection(client_config())
    c.start(0.0)
    ch = c.datagrams_to_send()[0]
    out, conn, why = lst.receive(ch, CLIENT_ADDR, 0.0, peers=1, max_peers=1)
    assert (out, conn) == ([], None) and why == "MAX_PEERS=1 reached" and lst.drops == 1
    out, conn, why = lst.receive(ch, CLIENT_ADDR, 0.0, handshaking=1, max_handshaking=1)
    assert conn is None and why == "MAX_HANDSHAKING_PEERS=1 reached" and lst.drops == 2
    out, _, _ = lst.receive(ch, CLIENT_ADDR, 0.0)
    c.receive_datagram(out[0], 0.0)
    out, conn, why = lst.receive(c.datagrams_to_send()[0], CLIENT_ADDR, 0.0)
    assert conn is not None and why is None
    conn.accept_verified(0.0)
    conn.datagrams_to_send()  # the server's flight, lost
    assert conn.get_timer() is not None
    while (t := conn.get_timer()) is not None:
        conn.handle_timer(t)
    ev = conn.next_event()
    assert isinstance(ev, ConnectionFailed) and "no result after 2s" in ev.detail


def test_server_deadline_from_start() -> None:
    """`start(deadline=True)`: a server that never hears from its client fails at the
    deadline (without it, the deadline waits for the first datagram)."""
    s = DtlsConnection(server_config(), cookie=False, peer=CLIENT_ADDR, handshake_timeout=3.0)
    s.start(0.0)
    assert s.get_timer() is None
    s.start(1.0, deadline=True)
    assert s.get_timer() == pytest.approx(4.0)
    s.handle_timer(4.0)
    ev = s.next_event()
    assert isinstance(ev, ConnectionFailed) and ev.reason is R.SOCKET_TLS_HANDSHAKE_FAILED


def test_config_srtp_profiles() -> None:
    """A server that offers only SRTP_AES128_CM_SHA1_80 agrees on it (60 bytes of keys)."""
    c, s = pair(scfg=server_config(srtp_profiles=b"SRTP_AES128_CM_SHA1_80"))
    w = Wire(c, s)
    w.handshake()
    for key in "cs":
        done = completed(w, key)
        assert done.srtp_profile == "SRTP_AES128_CM_SHA1_80"
        assert done.srtp_keys is not None and len(done.srtp_keys) == 60


def test_engine_server_runs_its_own_cookie_exchange() -> None:
    c, s = pair(cookie=True)
    w = Wire(c, s)
    w.handshake()
    hvr = [d for direction, d in w.sent if direction == "s2c" and d[0] == 22 and d[13] == 3]
    assert len(hvr) == 1
    assert completed(w, "s").srtp_keys == completed(w, "c").srtp_keys


def test_no_cookie_server() -> None:
    c, s = pair(cookie=False)
    w = Wire(c, s)
    w.handshake()
    assert not [d for direction, d in w.sent if direction == "s2c" and d[13] == 3]
    completed(w, "c")


# --------------------------------------------------------------------------- failures


def test_wrong_fingerprint_fails_both_sides() -> None:
    c, s = pair(client_pin=bytes(32))
    w = Wire(c, s)
    w.handshake()
    ev = failed(w, "c")
    assert ev.reason is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert "not the one pinned" in ev.detail
    assert failed(w, "s").reason is R.SOCKET_TLS_HANDSHAKE_FAILED  # the client's alert
    assert c.ended and s.ended


def test_server_pins_the_client() -> None:
    c, s = pair(server_pin=bytes(range(32)))
    w = Wire(c, s)
    w.handshake()
    assert "not the one pinned" in failed(w, "s").detail
    assert failed(w, "c").reason is R.SOCKET_TLS_HANDSHAKE_FAILED


def test_pin_refuses_a_client_without_certificate() -> None:
    c = DtlsConnection(DtlsConfig(False, None, use_srtp=True, verify=False))
    s = DtlsConnection(server_config(), peer=CLIENT_ADDR, fingerprint=FP)
    w = Wire(c, s)
    w.handshake()
    assert failed(w, "s").reason is R.SOCKET_TLS_HANDSHAKE_FAILED


HASHES = ["sha1", "sha224", "sha256", "sha384", "sha512"]


def own_digest(name: str) -> bytes:
    return hashlib.new(name, default_server_cert().leaf_der).digest()


@pytest.mark.parametrize("name", HASHES)
def test_each_hash_pins_both_sides(name: str) -> None:
    """A fingerprint of each hash SDP writes pins the peer: its length names the hash,
    and both sides complete with the certificate that digest names."""
    fp = own_digest(name)
    c, s = pair(client_pin=fp, server_pin=fp)
    w = Wire(c, s)
    w.handshake()
    ce, se = completed(w, "c"), completed(w, "s")
    assert ce.srtp_keys is not None and ce.srtp_keys == se.srtp_keys
    assert ce.peer_fingerprint == se.peer_fingerprint == FP  # reported as SHA-256


@pytest.mark.parametrize("name", HASHES)
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_wrong_fingerprint_of_each_hash_fails(name: str, side: str) -> None:
    """A digest of the right length for its hash but of another certificate (the right
    one with a bit flipped) fails the handshake on the side that pinned it."""
    right = own_digest(name)
    wrong = bytes([right[0] ^ 1]) + right[1:]
    c, s = pair(
        client_pin=wrong if side == "client" else right,
        server_pin=wrong if side == "server" else right,
    )
    w = Wire(c, s)
    w.handshake()
    key = side[0]
    ev = failed(w, key)
    assert ev.reason is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert "not the one pinned" in ev.detail and name.upper() in ev.detail
    assert failed(w, "s" if key == "c" else "c").reason is R.SOCKET_TLS_HANDSHAKE_FAILED


def test_bad_fingerprint_length_is_refused() -> None:
    for n in (0, 16, 31, 33, 65):
        with pytest.raises(ValueError, match="32 sha-256"):
            DtlsConnection(client_config(), fingerprint=b"\1" * n)


def test_no_common_srtp_profile() -> None:
    """The server offers no SRTP: the client's handshake fails (close_notify to the
    server, which completed its own and then sees the close)."""
    c, s = pair(scfg=server_config(use_srtp=False))
    w = Wire(c, s)
    w.handshake()
    w.run(lambda: len(w.events["s"]) >= 2 or s.ended)
    ev = failed(w, "c")
    assert ev.reason is R.SOCKET_TLS_HANDSHAKE_FAILED and "no SRTP profile" in ev.detail
    assert w.kinds("s") == ["HandshakeCompleted", "CloseNotify"]


def test_fatal_alert_from_a_verifying_client() -> None:
    """A client that verifies against an empty store (no trust in the self-signed
    server) sends a fatal alert: both sides fail, the server with OpenSSL's detail."""
    from trustme import CA

    c, s = pair(client_config(verify=True, trusted_pem=CA().cert_pem.bytes()))
    w = Wire(c, s)
    w.handshake()
    ce = failed(w, "c")
    assert ce.reason is R.SOCKET_TLS_HANDSHAKE_FAILED and "verification failed" in ce.detail
    se = failed(w, "s")
    assert se.reason is R.SOCKET_TLS_HANDSHAKE_FAILED and "alert" in se.detail
    assert w.kinds("s") == ["ConnectionFailed"]


# --------------------------------------------------------------------------- the end


@pytest.mark.parametrize("closer", ["c", "s"])
def test_close_notify_both_ways(closer: str) -> None:
    c, s = pair()
    w = Wire(c, s)
    w.handshake()
    (c if closer == "c" else s).close()
    other = "s" if closer == "c" else "c"
    w.run(lambda: len(w.events[other]) == 2)
    assert w.kinds(other) == ["HandshakeCompleted", "CloseNotify"]
    assert w.kinds(closer) == ["HandshakeCompleted"]  # the closing side gets no event
    assert c.ended and s.ended
    with pytest.raises(RuntimeError):
        c.send_data(b"late")


def test_records_before_close_notify_arrive_first() -> None:
    c, s = pair()
    w = Wire(c, s)
    w.handshake()
    for i in range(5):
        c.send_data(b"%d" % i)
    c.close()
    w.run(lambda: s.ended)
    assert w.kinds("s") == ["HandshakeCompleted"] + ["ApplicationData"] * 5 + ["CloseNotify"]
    assert [e.data for e in w.events["s"] if isinstance(e, ApplicationData)] == [
        b"0",
        b"1",
        b"2",
        b"3",
        b"4",
    ]


def test_abort_sends_nothing() -> None:
    c = pair()[0]
    c.start(0.0)
    c.abort()
    assert c.datagrams_to_send() == [] and c.get_timer() is None and c.ended
    c.receive_datagram(b"\x16" + bytes(30), 1.0)
    assert c.datagrams_to_send() == [] and c.next_event() is None


def test_is_dtls_by_first_byte() -> None:
    """RFC 7983: 20..63 is DTLS; STUN (0..3) and RTP/RTCP (128..191) are not."""
    assert [b for b in range(256) if is_dtls(b)] == list(range(20, 64))


# --------------------------------------------------------------------------- hostile input


def client_hello() -> bytes:
    """A genuine first ClientHello (no cookie) of a fresh client."""
    c = DtlsConnection(client_config())
    c.start(0.0)
    (ch,) = c.datagrams_to_send()
    assert is_client_hello(ch)
    return ch


def padded_hellos() -> dict[str, bytes]:
    """Oversized variants of a genuine ClientHello, each 65507 bytes (the largest IPv4
    UDP payload): padded with zeros, with copies of itself, and with its record length
    claiming the whole datagram."""
    ch = client_hello()
    size = 65507
    claim = bytearray(ch + bytes(size - len(ch)))
    claim[11:13] = (size - 13).to_bytes(2, "big")
    return {
        "zeros": ch + bytes(size - len(ch)),
        "copies": (ch * (size // len(ch) + 1))[:size],
        "claims-all": bytes(claim),
    }


def record(ctype: int, seq: int, body: bytes, epoch: int = 0) -> bytes:
    return (
        bytes([ctype, 0xFE, 0xFD])
        + epoch.to_bytes(2, "big")
        + seq.to_bytes(6, "big")
        + len(body).to_bytes(2, "big")
        + body
    )


def fragment(mseq: int, body: bytes, msg_type: int = 11) -> bytes:
    """A whole handshake message as one fragment."""
    n = len(body).to_bytes(3, "big")
    return bytes([msg_type]) + n + mseq.to_bytes(2, "big") + bytes(3) + n + body


STRAYS = {
    # a well-formed fragment of a message far ahead (OpenSSL drops it)
    "message_seq-20": record(22, 9, fragment(20, b"\x01\x02\x03\x04")),
    # a record whose length runs past the end of its datagram
    "runs-past": record(22, 9, fragment(5, b"\x01" * 40))[:30],
    # a record number far ahead (OpenSSL's replay window would move past the peer's)
    "record-number-far-ahead": record(22, 2**48 - 2, fragment(20, b"\x01\x02\x03\x04")),
    # the peer's next record numbers, each on a fragment OpenSSL drops (it would mark
    # them as seen, and drop the peer's records with those numbers as replays)
    "marks-the-next-numbers": b"".join(
        record(22, i, fragment(30 + i, b"\x01\x02\x03\x04")) for i in range(64)
    ),
}


@pytest.mark.parametrize("variant", sorted(padded_hellos()))
def test_oversized_client_hellos_leave_nothing_behind_in_the_listener(variant: str) -> None:
    """Three ClientHellos padded to 65507 bytes from three strangers: each gets at
    most a HelloVerifyRequest, and a genuine client then completes through the same
    listener at once (no timer ran). Before, the unread rest of each stayed in the
    listener's read BIO and was read in front of every later datagram."""
    lst = CookieListener(server_config())
    big = padded_hellos()[variant]
    for i in range(3):
        out, conn, _ = lst.receive(big, ("127.0.0.9", 1000 + i), 0.0)
        assert conn is None and len(out) <= 1
    c = DtlsConnection(client_config())
    c.start(0.0)
    out, conn, _ = lst.receive(c.datagrams_to_send()[0], CLIENT_ADDR, 0.0)
    assert conn is None and len(out) == 1 and out[0][13] == 3  # HelloVerifyRequest
    c.receive_datagram(out[0], 0.0)
    out, conn, _ = lst.receive(c.datagrams_to_send()[0], CLIENT_ADDR, 0.0)
    assert conn is not None
    conn.accept_verified(0.0)
    w = Wire(c, conn)
    w.run(lambda: both_done(w))
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys
    assert w.now == 0.0


@pytest.mark.parametrize("cookie", [True, False])
def test_oversized_datagrams_at_a_server_engine(cookie: bool) -> None:
    """The same padded ClientHellos and 65507-byte datagrams of records at a server
    engine (an IDtls server, with and without cookies) during its handshake, and before
    it when it runs the cookie exchange (without, the first ClientHello from anyone
    starts the handshake: the app gives it only its ICE-checked peer's): the handshake
    completes without a resend."""
    c, s = pair(cookie=cookie)
    junk = list(padded_hellos().values())
    junk.append(record(23, 1, bytes(MAX_RECORD_LENGTH), epoch=1) * 4)
    for d in junk if cookie else junk[-1:]:
        s.receive_datagram(d, 0.0, CLIENT_ADDR)
    s.datagrams_to_send()  # a HelloVerifyRequest to the stranger, at most
    w = Wire(c, s)
    c.start(0.0)
    s.start(0.0)
    for _ in range(3):  # and again between the flights
        w._move(c, s, "c2s")
        for d in junk:
            s.receive_datagram(d, 0.0, CLIENT_ADDR)
        w._move(s, c, "s2c")
    w.run(lambda: both_done(w))
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys
    assert w.now == 0.0


@pytest.mark.parametrize("stray", sorted(STRAYS))
@pytest.mark.parametrize("target", ["client", "no-cookie server"])
def test_a_stray_record_does_not_stall_the_handshake(stray: str, target: str) -> None:
    """One stray datagram of epoch-0 handshake records (a fragment of message 20, a
    record whose length runs past its datagram, a record number far ahead, the peer's
    next 64 record numbers) at a client or a server without cookies: the handshake
    completes without a resend. Before, the engine noted the stray message and held the
    peer's ChangeCipherSpec for a gap that never filled, and OpenSSL's replay window
    took the stray record numbers: the handshake failed at its deadline."""
    c, s = pair(cookie=False)
    w = Wire(c, s)
    c.start(0.0)
    s.start(0.0)
    (c if target == "client" else s).receive_datagram(STRAYS[stray], 0.0, CLIENT_ADDR)
    w.run(lambda: both_done(w))
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys
    assert w.now == 0.0


class CountingSSL:
    """An `SSL.Connection` that counts what is written into its read BIO."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.writes = 0
        self.written = 0

    def bio_write(self, data: bytes) -> int:
        self.writes += 1
        self.written += len(data)
        return int(self.conn.bio_write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def junk_datagrams(rng: random.Random, n: int) -> list[bytes]:
    """`n` datagrams no DTLS record can be read from: random bytes starting 20..63,
    records with a wrong version or content type, a length past the datagram."""
    out = []
    for i in range(n):
        kind = i % 4
        body = rng.randbytes(rng.randint(0, 60))
        if kind == 0:
            d = bytes([rng.randint(24, 63)]) + rng.randbytes(40)
        elif kind == 1:
            d = bytes([22, 0x03, 0x03]) + rng.randbytes(10) + body
        elif kind == 2:
            d = record(22, i, body)[:-1] if body else bytes([22, 0xFE, 0xFD]) + bytes(9)
        else:
            d = bytes([rng.choice([20, 21, 22, 23])]) + rng.randbytes(12)
            if len(body) < int.from_bytes(d[11:13], "big"):
                d += body
        out.append(d)
    return out


def test_junk_never_reaches_openssl() -> None:
    """Datagrams from which no well-formed record can be read are dropped by the
    header parse: OpenSSL's read BIO is never written, in handshake and after."""
    rng = random.Random(5)
    c, s = pair(cookie=False)
    spy = CountingSSL(s._conn)
    s._conn = spy  # type: ignore[assignment]
    junk = [b"", *junk_datagrams(rng, 2000)]
    junk.append(record(23, 1, b"application data in epoch 0"))
    junk.append(record(22, 1, b"epoch 2", epoch=2))
    junk.append(record(20, 1, b"\x01", epoch=1))
    for d in junk:
        s.receive_datagram(d, 0.0, CLIENT_ADDR)
    assert spy.writes == 0
    w = Wire(c, s)
    w.handshake()
    completed(w, "s")
    writes = spy.writes
    for d in junk:
        s.receive_datagram(d, 1.0, CLIENT_ADDR)
        c.receive_datagram(d, 1.0)
    assert spy.writes == writes
    assert s.established and c.established


def test_the_bookkeeping_is_bounded_whatever_arrives() -> None:
    """A server in handshake gets 5,000 epoch-0 handshake records OpenSSL drops (each
    a new record number and message number), then an early ChangeCipherSpec, then
    5,000 more: traced memory stays flat, at most one record goes to OpenSSL per
    datagram, and the genuine handshake then completes without a resend. Before, each
    datagram left an entry in three sets and one list (5.8 MB per 100,000), and each one
    after the early ChangeCipherSpec cost a walk over all of them."""
    c, s = pair(cookie=False)
    spy = CountingSSL(s._conn)
    s._conn = spy  # type: ignore[assignment]
    c.start(0.0)
    s.start(0.0)
    ch = c.datagrams_to_send()
    # a new record number and message number each
    primers = [record(22, 100 + i, fragment(1000 + i % 60000, b"\0" * 8)) for i in range(10_000)]
    early_ccs = record(20, 99_000, b"\x01") + record(22, 0, bytes(40), epoch=1)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for d in primers[:5_000]:
            s.receive_datagram(d, 0.0, CLIENT_ADDR)
        s.receive_datagram(early_ccs, 0.0, CLIENT_ADDR)
        for d in primers[5_000:]:
            s.receive_datagram(d, 0.0, CLIENT_ADDR)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, f"traced memory grew by {grown} bytes over 10,001 datagrams"
    assert spy.writes <= 10_000  # the early ChangeCipherSpec is held, not written
    assert s.datagrams_to_send() == []  # nothing answered
    for d in ch:
        s.receive_datagram(d, 0.0, CLIENT_ADDR)
    w = Wire(c, s)
    w.run(lambda: both_done(w))
    assert completed(w, "c").srtp_keys == completed(w, "s").srtp_keys
    assert w.now == 0.0


def test_replayed_datagrams_do_not_make_an_amplifier() -> None:
    """The client's ClientHello replayed to a server in handshake 1000 times at once,
    then every 10 ms for 10 s, and its last flight 1000 times to the server after its
    handshake: the server resends its flight at most once per interval that starts at
    RTO_INITIAL and doubles, so it sends a fraction of what it is sent. Before, every
    replay got the whole flight (about 3.9 times its size)."""
    c, s = pair(cookie=False)
    c.start(0.0)
    (ch,) = c.datagrams_to_send()
    s.start(0.0)
    s.receive_datagram(ch, 0.0, CLIENT_ADDR)
    flight = s.datagrams_to_send()
    size = sum(map(len, flight))
    sent_in = sent_out = 0
    for _ in range(1000):
        s.receive_datagram(ch, 0.0, CLIENT_ADDR)
        sent_in += len(ch)
    burst = sum(map(len, s.datagrams_to_send()))
    assert burst == size  # one resend for the burst
    now = 0.0
    for _ in range(1000):
        now += 0.01
        if (t := s.get_timer()) is not None and t <= now:
            s.handle_timer(now)
        s.receive_datagram(ch, now, CLIENT_ADDR)
        sent_in += len(ch)
        sent_out += sum(map(len, s.datagrams_to_send()))
    # timer resends at 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 s; resends for replays at most at
    # 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 s too: 12 flights at most
    assert sent_out <= 12 * size, (sent_out, size)
    assert sent_out < sent_in / 4
    # after the handshake: the client's last flight replayed
    w = Wire(c, s)
    for d in flight:
        c.receive_datagram(d, now)
    last = c.datagrams_to_send()
    for d in last:
        s.receive_datagram(d, now, CLIENT_ADDR)
    w.now = now
    w.run(lambda: c.established)
    assert s.established
    s.datagrams_to_send()
    for _ in range(1000):
        for d in last:
            s.receive_datagram(d, now, CLIENT_ADDR)
    assert len(s.datagrams_to_send()) <= 2  # one resend of the ChangeCipherSpec+Finished


def test_openssls_own_resend_is_not_packed_before_the_next_flight() -> None:
    """OpenSSL's wall-clock timer (1 s) runs out while the client waits for the
    HelloVerifyRequest: OpenSSL resends the first ClientHello inside the call that
    writes the one with the cookie. Only the new one goes out, and the listener
    accepts it at once. Before, both were packed into one datagram and the server read
    only the first (a stall until the next resend). This test waits 1 s of real time:
    OpenSSL's own timer reads no other clock."""
    lst = CookieListener(server_config())
    c = DtlsConnection(client_config())
    c.start(0.0)
    out, _, _ = lst.receive(c.datagrams_to_send()[0], CLIENT_ADDR, 0.0)
    time.sleep(1.05)
    c.receive_datagram(out[0], 0.05)
    dgrams = c.datagrams_to_send()
    hellos = [r for d in dgrams for r in split_records(d) if is_client_hello(r)]
    assert len(hellos) == 1, [len(d) for d in dgrams]
    out, conn, _ = lst.receive(dgrams[0], CLIENT_ADDR, 0.05)
    assert conn is not None and out == []


def resend_times(conn: DtlsConnection, until: float) -> list[float]:
    """When a client whose server never answers resends its ClientHello."""
    conn.start(0.0)
    conn.datagrams_to_send()
    times = []
    while (t := conn.get_timer()) is not None and t < until:
        conn.handle_timer(t)
        if conn.datagrams_to_send():
            times.append(t)
    return times


def test_first_resend_after_rto_initial_doubling_to_rto_max() -> None:
    """The first resend comes after `rto_initial` (RTO_INITIAL, 0.1 s, by default),
    each next one after twice the wait before, up to RTO_MAX (60 s)."""
    assert RTO_INITIAL == 0.1 and RTO_MAX == 60.0
    times = resend_times(DtlsConnection(client_config(), handshake_timeout=1000.0), 1000.0)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    want = [min(0.1 * 2**i, 60.0) for i in range(len(gaps))]
    assert gaps == pytest.approx(want)
    assert gaps[-1] == pytest.approx(60.0) and len(gaps) > 12
    times = resend_times(DtlsConnection(client_config(), rto_initial=1.0), 10.0)
    assert times == pytest.approx([1.0, 3.0, 7.0])


@pytest.mark.parametrize("bad", [0, -1.0, 0.0001, 61.0, "1", True, None])
def test_bad_rto_initial_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="rto_initial"):
        DtlsConnection(client_config(), rto_initial=bad)


def test_log_one_id_per_association_and_each_failure_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An `IDtls` whose handshake fails (a wrong pin): every log line of the
    association carries the IDtls's id, and the failure is logged once."""

    class Quiet(UDtls):
        def __init__(self) -> None:
            self.wire: list[bytes] = []
            self.closed: list[int] = []

        def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
            self.wire.append(bytes(buf))

        def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
            self.closed.append(error)

    log = IInstanceLog(LogFlags.LOG_DTLS)
    cu, su = Quiet(), Quiet()
    c = IDtls.Create(cu, "c", log)
    s = IDtls.Create(su, "s", IInstanceLog(0))
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        c.DtlsConnect(False, 0, "127.0.0.1", None, bytes(32))
        s.DtlsConnect(True, 1, "127.0.0.1", None, None)  # no cookie
        for _ in range(10):
            for src, dst in ((cu, s), (su, c)):
                wire, src.wire = src.wire, []
                for d in wire:
                    dst.DtlsRecv(d, None, "127.0.0.1", 5000)
    assert cu.closed == [int(R.SOCKET_TLS_HANDSHAKE_FAILED)]
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(f"idtls {id(c):x}:" in line for line in lines), lines
    assert sum("not the one pinned" in line for line in lines) == 1, lines


def test_rss_under_oversized_client_hellos_in_a_child_process() -> None:
    """600 ClientHellos padded to 65507 bytes from 600 sources at one listener: the
    child's resident size grows by less than 4 MiB (before: about 30 MB, all of it in
    OpenSSL's read BIO, where tracemalloc does not see it)."""
    code = """
import gc
from usocket_asyncio._context import default_server_cert
from usocket_asyncio._dtls_core import CookieListener, DtlsConfig, DtlsConnection
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
pem = default_server_cert().pem
lst = CookieListener(DtlsConfig(True, pem, use_srtp=True))
c = DtlsConnection(DtlsConfig(False, pem, use_srtp=True, verify=False))
c.start(0.0)
ch = c.datagrams_to_send()[0]
big = ch + bytes(65507 - len(ch))
for i in range(20):
    lst.receive(big, ('127.0.0.9', 1000 + i), 0.0)
gc.collect()
base = rss()
for i in range(600):
    lst.receive(big, ('127.0.0.9', 2000 + i), 0.0)
gc.collect()
print(rss() - base)
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env, cwd=root
    )
    assert proc.returncode == 0, proc.stderr
    grown = int(proc.stdout.strip())
    print(f"\n[dtls rss] 600 oversized ClientHellos: RSS {grown / 1e6:+.2f} MB")
    assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes"


def test_dtls_recv_len_larger_than_the_buffer_raises() -> None:
    """A caller's mistake raises at once (before: False, as for a datagram that is not
    DTLS, so the app passed it on as its own)."""

    class Sink(UDtls):
        def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
            pass

    d = IDtls.Create(Sink(), None, IInstanceLog(0))
    d.DtlsConnect(True, 1, "127.0.0.1", None, FP)
    ch = client_hello()
    with pytest.raises(ValueError, match="len=500 but the buffer holds 100 bytes"):
        d.DtlsRecv(ch[:100], 500, "127.0.0.1", 5000)
    assert d.DtlsRecv(ch, len(ch), "127.0.0.1", 5000)
    assert not d.DtlsRecv(b"\x80" + ch[1:], None, "127.0.0.1", 5000)  # RTP: the app's


@pytest.mark.parametrize(
    "setup", ["client certificate", "no client certificate", "server asks for none"]
)
def test_every_flight_reversed_costs_no_resend(setup: str) -> None:
    """At a 300-byte MTU each flight takes several datagrams; every flight is delivered
    last datagram first, both ways, so each ChangeCipherSpec comes before the messages
    it follows. The engines hold it until OpenSSL's state says it is next: the handshake
    completes with no timer and no datagram sent twice."""
    ccfg = client_config()
    scfg = server_config()
    if setup == "no client certificate":
        ccfg = DtlsConfig(False, None, use_srtp=True, verify=False)
    elif setup == "server asks for none":
        scfg = server_config(mutual=False)
    c = DtlsConnection(ccfg, mtu=300)
    s = DtlsConnection(scfg, cookie=False, peer=CLIENT_ADDR, mtu=300)
    c.start(0.0)
    s.start(0.0)
    sent: list[bytes] = []
    for _ in range(20):
        for src, dst in ((c, s), (s, c)):
            out = src.datagrams_to_send()
            sent += out
            for d in reversed(out):
                dst.receive_datagram(d, 0.0, CLIENT_ADDR)
        if s.established and c.established:
            break
    assert s.established and c.established
    assert len(set(sent)) == len(sent)  # nothing resent
    assert any(d[0] == 20 or d.find(b"\x14\xfe\xfd\x00\x00") > 0 for d in sent)


def test_held_part_is_the_change_cipher_spec_and_its_finished() -> None:
    """What an early ChangeCipherSpec holds is bounded: itself and the Finished after
    it (epoch 1, at most 256 bytes); what follows is dropped."""
    ccs = record(20, 7, b"\x01")
    fin = record(22, 0, bytes(48), epoch=1)
    app = record(23, 1, bytes(MAX_RECORD_LENGTH), epoch=1)
    assert held_part(ccs + fin + app + app) == ccs + fin
    assert held_part(ccs + app) == ccs
    assert held_part(ccs + record(22, 0, bytes(300), epoch=1)) == ccs


def test_junk_is_logged_once_per_thousand(caplog: pytest.LogCaptureFixture) -> None:
    """2,500 junk datagrams at an engine that logs LOG_DTLS: three lines, each with the
    count so far (a flood does not become a flood of log lines)."""
    s = DtlsConnection(
        server_config(), cookie=False, peer=CLIENT_ADDR, log=IInstanceLog(LogFlags.LOG_DTLS)
    )
    s.start(0.0)
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        for d in junk_datagrams(random.Random(3), 2500):
            s.receive_datagram(d, 0.0, CLIENT_ADDR)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert [("(1 such" in lines[0]), ("(1001 such" in lines[1]), ("(2001 such" in lines[2])] == [
        True
    ] * 3
    assert s.junk == 2500
