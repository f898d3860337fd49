"""The sans-IO DTLS engine with no event loop: two engines wired back to back in a plain
loop, on a simulated clock (nothing sleeps; a lost flight costs simulated seconds).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import pytest

from usocket_asyncio import ShutdownReason
from usocket_asyncio._context import default_server_cert
from usocket_asyncio._dtls_core import (
    COOKIE_WINDOW,
    HANDSHAKE_TIMEOUT,
    MAX_HANDSHAKING_PEERS,
    ApplicationData,
    ConnectionFailed,
    CookieListener,
    DtlsConfig,
    DtlsConnection,
    DtlsEvent,
    HandshakeCompleted,
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


def test_bad_fingerprint_length_is_refused() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        DtlsConnection(client_config(), fingerprint=b"\1" * 20)


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
