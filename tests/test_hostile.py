"""Hostile input: peers that speak garbage or break TLS, odd datagrams, malformed
addresses and certificate buffers (Hypothesis), and random call sequences on real
loopback sockets (a Hypothesis state machine).

Every socket test runs on asyncio and uvloop. The Hypothesis tests are derandomized
with bounded example counts (`EXAMPLES`), so each run tries the same inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit.certs import ended_once
from kit.conformance import Pump, call, connect, listen, sha, tls_kind
from kit.loop import Mux, Recorder, fd_count, have_ipv6, provider
from kit.machines import run_machine
from kit.streams import LogLines, captured_log

import usocket_asyncio._tls as tls_mod
from usocket_asyncio import (
    IInstanceLog,
    ISocket,
    ShutdownReason,
)
from usocket_asyncio._address import AddressError, parse_address
from usocket_asyncio._context import SocketContext
from usocket_asyncio._local import check_path

R = ShutdownReason

EXAMPLES = {"addresses": 120, "certificates": 250, "stateful": 60, "stateful_steps": 40}
"""Hypothesis example counts (per loop for the socket tests)."""


@pytest.fixture
def logged() -> tuple[IInstanceLog, LogLines]:
    """A log with every flag, whose lines the test can read."""
    return captured_log(0xFFFFFFFF)


# --------------------------------------------------------------------------- TLS peers


class TLSServer:
    """A library TLS listener (test CA certificate) that records every accepted socket,
    also the ones whose handshake fails."""

    def __init__(self, mux: Mux, log: IInstanceLog, ca: Any, version: str, tmp: str) -> None:
        self.kind = tls_kind(ca, version)
        self.recs: list[Recorder] = []

        def factory() -> Recorder:
            rec = Recorder(f"accepted{len(self.recs)}")
            self.recs.append(rec)
            return rec

        self.listener, self.lrec, self.accepted, self.address = listen(
            mux, log, self.kind, tmp, factory
        )
        self.port = int(self.address.rpartition(":")[2])


class RawTLS:
    """A TLS client driven by hand (memory BIOs over a raw socket), so the test can send
    exactly the records it wants: half a record, data after close_notify."""

    def __init__(self, mux: Mux, ca: Any, port: int, version: str) -> None:
        self.loop = mux.loop
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        ctx.maximum_version = ssl.TLSVersion["TLSv1_3" if version == "tls13" else "TLSv1_2"]
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.loop.run_until_complete(
            asyncio.wait_for(self.loop.sock_connect(self.sock, ("127.0.0.1", port)), 5)
        )

    async def _handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.loop.sock_sendall(self.sock, self.out.read())
                data = await self.loop.sock_recv(self.sock, 65536)
                if not data:
                    raise ConnectionError("the server closed during the handshake") from None
                self.inc.write(data)
        await self.loop.sock_sendall(self.sock, self.out.read())

    def handshake(self) -> None:
        self.loop.run_until_complete(asyncio.wait_for(self._handshake(), 5))

    def record(self, data: bytes) -> bytes:
        """`data` as TLS records (not sent)."""
        self.obj.write(data)
        return self.out.read()

    def close_notify(self) -> bytes:
        """Our close_notify alert (not sent)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        return self.out.read()

    def send(self, data: bytes) -> None:
        self.loop.run_until_complete(asyncio.wait_for(self.loop.sock_sendall(self.sock, data), 5))

    def close(self) -> None:
        self.sock.close()


VERSIONS = ["tls12", "tls13"]


def reading_peer(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, tmp: str, seed: int
) -> tuple[TLSServer, RawTLS, ISocket, Recorder]:
    """A RawTLS client whose handshake with a TLSServer completed; the accepted socket
    reads everything (a Pump with nothing to send)."""
    srv = TLSServer(mux, log, ca, version, tmp)
    raw = RawTLS(mux, ca, srv.port, version)
    raw.handshake()
    mux.run_until(lambda: bool(srv.accepted), what="accept")
    server, srec = srv.accepted[0]
    Pump(server, srec, b"", 10**6, seed).start()
    return srv, raw, server, srec


def _garbage(kind: str, rng: random.Random) -> bytes:
    if kind == "random":
        return rng.randbytes(3000)
    if kind == "record_header":  # a handshake record header, then noise
        return b"\x16\x03\x01\x01\x00" + rng.randbytes(256)
    if kind == "huge_length":  # a record that claims the maximum length and more
        return b"\x16\x03\x03\xff\xff" + rng.randbytes(2000)
    if kind == "sslv2":  # an SSLv2-style hello
        return b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + rng.randbytes(0x2E)
    if kind == "alert":  # a fatal alert instead of a hello
        return b"\x15\x03\x03\x00\x02\x02\x28"
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(100)


@pytest.mark.parametrize("version", VERSIONS)
def test_garbage_instead_of_client_hello(
    mux: Mux, logged: tuple[IInstanceLog, LogLines], ca: Any, version: str, short_tmp: str
) -> None:
    """Twelve raw clients send garbage of six shapes instead of a ClientHello: each
    accepted socket ends with SOCKET_TLS_HANDSHAKE_FAILED (never SocketAcceptComplete),
    the OpenSSL reason is logged under LOG_TLS, no descriptor is left over, and the
    listener goes on serving a real client."""
    log, lines = logged
    srv = TLSServer(mux, log, ca, version, short_tmp)
    rng = random.Random(81)
    shapes = ["random", "record_header", "huge_length", "sslv2", "alert", "http2"]
    fds = 0
    for rnd in range(2):  # descriptors are counted after the first round (warm-up)
        raws = []
        for shape in shapes:
            raw = socket.socket()
            raw.setblocking(False)
            mux.loop.run_until_complete(mux.loop.sock_connect(raw, ("127.0.0.1", srv.port)))
            with contextlib.suppress(OSError):
                mux.loop.run_until_complete(mux.loop.sock_sendall(raw, _garbage(shape, rng)))
            raws.append(raw)
        n = len(shapes) * (rnd + 1)
        mux.run_until(
            lambda n=n: len(srv.recs) == n and all(r.shutdown is not None for r in srv.recs),  # type: ignore[misc]
            what="every handshake failed",
        )
        for raw in raws:
            raw.close()
        mux.run_for(0.05)
        if rnd == 0:
            fds = fd_count()
    assert fd_count() <= fds
    for rec in srv.recs:
        ended_once(rec, R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert rec.names() == ["shutdown"]
    assert sum("TLS handshake failed" in ln for ln in lines.lines) >= len(srv.recs)
    # the listener still serves
    client, crec = connect(mux, log, srv.kind, srv.address)
    mux.run_until(lambda: "connect" in crec.names() and bool(srv.accepted), what="good client")
    server, srec = srv.accepted[0]
    call(srec, server.Recv, bytearray(5))
    call(crec, client.Send, b"hello")
    mux.run_until(lambda: srec.received == b"hello")
    for s in (client, server, srv.listener):
        s.Delete()


@pytest.mark.parametrize("version", VERSIONS)
def test_record_cut_in_half_then_eof(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, short_tmp: str
) -> None:
    """After a whole record, half of the next one and a TCP EOF: the whole record's
    bytes are delivered, then SOCKET_LOST (truncation), once; nothing of the half record."""
    srv, raw, server, srec = reading_peer(mux, log, ca, version, short_tmp, 82)
    whole = random.Random(83).randbytes(5000)
    first = raw.record(whole)
    second = raw.record(b"never delivered" * 100)
    raw.send(first + second[: len(second) // 2])
    raw.sock.shutdown(socket.SHUT_WR)
    mux.run_until(lambda: srec.shutdown is not None, what="truncation")
    assert sha(srec.received) == sha(whole)
    ended_once(srec, R.SOCKET_LOST)
    mux.run_for(0.02)
    ended_once(srec, R.SOCKET_LOST)
    raw.close()
    server.Delete()
    srv.listener.Delete()


@pytest.mark.parametrize("version", VERSIONS)
def test_application_data_after_close_notify(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, short_tmp: str
) -> None:
    """Data, close_notify, then application-data records in the same flight and later:
    the data before close_notify is delivered, then SOCKET_SHUTDOWN_BY_PEER once;
    nothing after it reaches the app, and nothing reaches the loop's exception handler.
    (A conforming sender cannot encrypt after its close_notify, so the records after it
    are forged: a real application-data header with a random body.)"""
    srv, raw, server, srec = reading_peer(mux, log, ca, version, short_tmp, 84)
    rng = random.Random(85)
    before = rng.randbytes(3000)
    forged = b"\x17\x03\x03\x00\x40" + rng.randbytes(64)
    raw.send(raw.record(before) + raw.close_notify() + forged)
    with contextlib.suppress(OSError):
        raw.send(forged * 20)
    mux.run_until(lambda: srec.shutdown is not None, what="end")
    with contextlib.suppress(OSError):
        raw.send(forged * 20)
    mux.run_for(0.05)
    assert sha(srec.received) == sha(before)
    ended_once(srec, R.SOCKET_SHUTDOWN_BY_PEER)
    raw.close()
    server.Delete()
    srv.listener.Delete()


@pytest.mark.parametrize("stage", ["partial_hello", "no_finished"])
def test_handshake_that_never_finishes(
    mux: Mux,
    log: IInstanceLog,
    ca: Any,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    short_tmp: str,
) -> None:
    """A client that stops half-way through its ClientHello, or after the server's first
    flight (it never sends Finished): with the handshake timeout lowered to 0.3 s the
    accepted socket ends with SOCKET_TLS_HANDSHAKE_FAILED, once, and its task, timer and
    descriptor are gone afterwards."""
    monkeypatch.setattr(tls_mod, "HANDSHAKE_TIMEOUT", 0.3)
    srv = TLSServer(mux, log, ca, "tls13", short_tmp)
    fds = tasks = 0
    for rnd in range(2):  # descriptors and tasks are counted after a first round
        raw = RawTLS(mux, ca, srv.port, "tls13")
        with contextlib.suppress(ssl.SSLWantReadError):
            raw.obj.do_handshake()
        hello = raw.out.read()
        if stage == "partial_hello":
            raw.send(hello[: len(hello) // 2])
        else:
            raw.send(hello)  # and never answer the server's flight
        mux.run_until(
            lambda rnd=rnd: len(srv.recs) == rnd + 1 and srv.recs[rnd].shutdown is not None,  # type: ignore[misc]
            what="timeout",
        )
        ended_once(srv.recs[rnd], R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert srv.recs[rnd].names() == ["shutdown"]
        raw.close()
        mux.run_for(0.05)
        if rnd == 0:
            fds = fd_count()
            tasks = len([t for t in asyncio.all_tasks(mux.loop) if not t.done()])
    assert fd_count() <= fds
    assert len([t for t in asyncio.all_tasks(mux.loop) if not t.done()]) <= tasks
    srv.listener.Delete()


# --------------------------------------------------------------------------- datagrams


@pytest.mark.parametrize("ipv6", [False, True], ids=["udp4", "udp6"])
def test_oversized_and_zero_length_datagrams(
    mux: Mux, logged: tuple[IInstanceLog, LogLines], ipv6: bool
) -> None:
    """In: the largest datagram the family allows into a 100-byte Recv is truncated
    (logged) with its first bytes intact; a zero-length datagram gives a result of 0
    bytes. Out: SendTo larger than any datagram is refused by the kernel, logged, still
    reported by one SocketSendResult, and the socket carries on."""
    if ipv6 and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    log, lines = logged
    host = "::1" if ipv6 else "127.0.0.1"
    biggest = 65527 if ipv6 else 65507
    fam = socket.AF_INET6 if ipv6 else socket.AF_INET
    prov = provider("udp")
    rec = Recorder("udp")
    sock = prov.CreateSocket(mux, rec, log, ipv6)
    call(rec, sock.Bind, host, 0)
    mux.run_until(lambda: "bind" in rec.names())
    port = rec.events[0][2]
    peer = socket.socket(fam, socket.SOCK_DGRAM)
    peer.bind((host, 0))
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
    big = random.Random(91).randbytes(biggest)
    peer.sendto(big, (host, port))
    peer.sendto(b"", (host, port))
    peer.sendto(b"after", (host, port))
    bufs = [bytearray(100) for _ in range(3)]
    for b in bufs:
        call(rec, sock.Recv, b)
    mux.run_until(lambda: rec.names().count("recvfrom") == 3, what="three datagrams")
    sizes = [e[1] for e in rec.events if e[0] == "recvfrom"]
    assert sizes == [100, 0, 5]
    assert bytes(bufs[0]) == big[:100] and bytes(bufs[2][:5]) == b"after"
    assert any("truncated" in ln for ln in lines.lines)
    # out: too large for any datagram
    peer_port = peer.getsockname()[1]
    call(rec, sock.SendTo, bytes(70000), None, host, peer_port)
    call(rec, sock.SendTo, b"still here", None, host, peer_port)
    mux.run_until(lambda: rec.sends_done == 2, what="send results")
    peer.settimeout(5)
    assert peer.recv(100) == b"still here"
    assert rec.shutdown is None and not rec.violations
    call(rec, sock.Shutdown)
    mux.run_until(lambda: rec.shutdown is not None)
    ended_once(rec, R.SOCKET_SHUTDOWN_NORMAL)
    peer.close()
    sock.Delete()


# --------------------------------------------------------------------------- Hypothesis:
# addresses

HOSTS = [
    "127.0.0.1",
    "[::1]",
    "::1",
    "localhost",
    "LOCALHOST.",
    "0.0.0.0",
    "[::]",
    "127.0.0.256",
    "1.2.3",
    "127.1",
    "0x7f.0.0.1",
    "[::1",
    "::1]",
    "[]",
    "",
    " ",
    "[127.0.0.1]",
    "[::ffff:127.0.0.1]",
    "[fe80::1%lo]",
    "999.1.1.1",
    "-a-.b",
    "a..b",
    "\u00e9.example",
    "\x00",
    "127.0.0.1\n",
    "\ud800",
]
PORTS = [
    "",
    ":",
    ":0",
    ":{PORT}",
    ":{PORT}0",
    ":65536",
    ":-1",
    ":+1",
    ": 1",
    ":1 ",
    ":\u0663",
    ":99999999999999999999",
    ":0x10",
    ":1:2",
    "::",
]
ADDRESSES = st.one_of(
    st.builds(
        lambda h, p: h + p,
        st.sampled_from(HOSTS) | st.text(max_size=12),
        st.sampled_from(PORTS) | st.text(max_size=6).map(lambda t: ":" + t),
    ),
    st.text(max_size=40),
)
ADDRESS_SETTINGS = settings(
    max_examples=EXAMPLES["addresses"],
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TRIED = {"connect": 0, "bind": 0, "skipped_off_box": 0}


def _stays_on_this_host(text: str, port: int, *, need_port: bool) -> bool:
    """May `text` be given to Connect (need_port) or Bind without reaching any other
    host or another process's port? True for strings that are no address at all."""
    try:
        a = parse_address(text, need_port=need_port, default_port=0)
    except AddressError:
        return True
    except Exception:
        return True  # the library call below must cope with it
    if a.port not in (0, port):
        return False
    if a.ip is None:
        return a.host.lower().rstrip(".") == "localhost"
    return a.ip.is_loopback


def _local_ok(text: str) -> bool:
    """A local socket path that stays in the test's own directory."""
    try:
        check_path(text)
    except AddressError:
        return True
    except Exception:
        return True
    return "/" not in text and text not in (".", "..")


def _invalid(kind: str, text: str, need_port: bool) -> bool:
    """The library's own parsers: is `text` no address? (non-AddressError: not decided)"""
    try:
        if kind == "local":
            check_path(text)
        else:
            parse_address(text, need_port=need_port)
    except AddressError:
        return True
    except Exception:
        return False
    return False


@pytest.mark.parametrize("kind", ["tcp", "udp", "tls", "local"])
def test_malformed_addresses_into_connect(
    mux: Mux,
    log: IInstanceLog,
    kind: str,
    short_tmp: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connect with Hypothesis strings: the call never raises; the socket ends with
    SOCKET_ADDRESS_INVALID exactly when the string is no address, otherwise some clean
    result; once, and nothing in the loop's exception handler. Strings that name
    another host or port are not connected to (counted in TRIED)."""
    monkeypatch.chdir(short_tmp)
    monkeypatch.setattr(tls_mod, "HANDSHAKE_TIMEOUT", 0.3)
    # our own target: a listener that denies every connection (TCP, TLS) / a local one
    lrec = Recorder("target")
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(None)
    target_prov = provider("local") if kind == "local" else provider("tcp")
    target = target_prov.CreateSocket(mux, lrec, log)
    target.Bind(os.path.join(short_tmp, "t") if kind == "local" else "127.0.0.1", 0)
    mux.run_until(lambda: "bind" in lrec.names())
    port = lrec.events[0][2]
    prov = provider(kind)

    @ADDRESS_SETTINGS
    @given(text=ADDRESSES)
    def one(text: str) -> None:
        text = text.replace("{PORT}", str(port))
        ok = _local_ok(text) if kind == "local" else _stays_on_this_host(text, port, need_port=True)
        if not ok:
            TRIED["skipped_off_box"] += 1
            return
        TRIED["connect"] += 1
        rec = Recorder("c")
        ctx = None
        if kind == "tls":
            ctx = prov.CreateSocketContext(log)
            ctx.DisableCertificateVerification()
        sock = prov.CreateSocket(mux, rec, log, False, ctx)
        call(rec, sock.Connect, text)
        mux.run_until(lambda: bool(rec.events), timeout=5, what=f"Connect({text!r})")
        if _invalid(kind, text, True):
            assert rec.events == [("shutdown", R.SOCKET_ADDRESS_INVALID)], (text, rec.events)
        else:
            assert rec.events[0][0] in ("connect", "shutdown"), (text, rec.events)
            assert rec.shutdown is not R.SOCKET_ADDRESS_INVALID or kind == "local", text
        sock.Delete()
        assert not rec.violations and not mux.errors, (text, rec.violations, mux.errors)

    one()
    target.Delete()
    print(f"\n[addresses] {mux.kind}/{kind}: {TRIED}")


@pytest.mark.parametrize("kind", ["tcp", "udp", "local"])
def test_malformed_addresses_into_bind(
    mux: Mux,
    log: IInstanceLog,
    kind: str,
    short_tmp: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bind with Hypothesis strings and ports (0 or out of range): the call never raises;
    SOCKET_ADDRESS_INVALID exactly when the string or the port is no address, otherwise
    SocketBindResult or another bind reason; once; nothing in the exception handler."""
    monkeypatch.chdir(short_tmp)
    prov = provider(kind)
    ports = st.sampled_from([0, 0, 0, -1, 65536, 2**31, -(2**63)])

    @ADDRESS_SETTINGS
    @given(text=ADDRESSES, port=ports)
    def one(text: str, port: int) -> None:
        text = text.replace("{PORT}", "0")
        # "" binds all interfaces (as None): not here, loopback only
        ok = (
            _local_ok(text)
            if kind == "local"
            else text != "" and _stays_on_this_host(text, 0, need_port=False)
        )
        if not ok:
            TRIED["skipped_off_box"] += 1
            return
        TRIED["bind"] += 1
        rec = Recorder("b")
        sock = prov.CreateSocket(mux, rec, log)
        call(rec, sock.Bind, text, port)
        mux.run_until(lambda: bool(rec.events), timeout=5, what=f"Bind({text!r}, {port})")
        bad = _invalid(kind, text, False) or (kind != "local" and not 0 <= port <= 65535)
        if bad:
            assert rec.events == [("shutdown", R.SOCKET_ADDRESS_INVALID)], (text, rec.events)
        else:
            assert rec.events[0][0] in ("bind", "shutdown"), (text, rec.events)
        sock.Delete()
        assert not rec.violations and not mux.errors, (text, rec.violations, mux.errors)

    one()
    assert not [f for f in os.listdir(short_tmp) if not f.startswith(".")], "a socket file stayed"
    print(f"\n[addresses] {mux.kind}/{kind}: {TRIED}")


# --------------------------------------------------------------------------- Hypothesis:
# certificate buffers


def _materials() -> dict[str, bytes]:
    """PEM pieces: keys and certificates of several kinds, matching and not."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID

    out: dict[str, bytes] = {}
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    keys: dict[str, Any] = {
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(65537, 2048),
    }
    for k, key in keys.items():
        algo = None if k == "ed25519" else hashes.SHA256()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, algo)
        )
        out[f"key_{k}"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        out[f"trad_{k}"] = (
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            if k != "ed25519"
            else out[f"key_{k}"]
        )
        out[f"enc_{k}"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        out[f"cert_{k}"] = cert.public_bytes(serialization.Encoding.PEM)
    return out


_MAT = _materials()
_VALID = [_MAT["key_ec"] + _MAT["cert_ec"], _MAT["cert_rsa"] + _MAT["trad_rsa"]]
PIECES = st.sampled_from(
    [
        *_MAT.values(),
        b"-----BEGIN CERTIFICATE-----\n",
        b"-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        b"-----BEGIN EC PRIVATE KEY-----\n\n-----END EC PRIVATE KEY-----\n",
        b"\0",
        b"\r\n",
        b"garbage",
    ]
)


def _mutate(pem: bytes, at: int, byte: int, how: str) -> bytes:
    i = at % (len(pem) + 1)
    if how == "flip":
        return pem[:i] + bytes([byte]) + pem[i + 1 :]
    if how == "truncate":
        return pem[:i]
    if how == "insert":
        return pem[:i] + bytes([byte]) + pem[i:]
    lines = pem.split(b"\n")  # drop a line
    del lines[i % len(lines)]
    return b"\n".join(lines)


CERT_BUFFERS = st.one_of(
    st.lists(PIECES, max_size=5).map(b"".join),
    st.builds(
        _mutate,
        st.sampled_from(_VALID),
        st.integers(0, 10**6),
        st.integers(0, 255),
        st.sampled_from(["flip", "truncate", "insert", "drop_line"]),
    ),
    st.binary(max_size=2000),
)


@settings(
    max_examples=EXAMPLES["certificates"],
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(buf=CERT_BUFFERS, cert_len=st.none() | st.integers(-3, 6000))
def test_certificate_buffers_raise_only_value_error(buf: bytes, cert_len: int | None) -> None:
    """SetServerCertificate with Hypothesis buffers: it raises ValueError or takes the
    buffer; a buffer it took makes a working server context (no failure left for the
    first connection to find) and a 32-byte fingerprint."""
    ctx = provider("tls").CreateSocketContext(IInstanceLog(0))
    assert isinstance(ctx, SocketContext)
    try:
        ctx.SetServerCertificate(buf, cert_len)
    except ValueError:
        return
    ctx.ssl_context(True)
    assert len(ctx.GetCertificateFingerprint()) == 32


@pytest.mark.parametrize("call_name", ["Connect", "Bind"])
def test_unencodable_local_path_is_address_invalid(
    mux: Mux, log: IInstanceLog, call_name: str
) -> None:
    """A path with a lone surrogate cannot be encoded for the file system: the socket
    ends with SOCKET_ADDRESS_INVALID; the call itself does not raise."""
    rec = Recorder("local")
    sock = provider("local").CreateSocket(mux, rec, log)
    call(rec, getattr(sock, call_name), "/tmp/\ud800")
    mux.run_until(lambda: rec.shutdown is not None)
    ended_once(rec, R.SOCKET_ADDRESS_INVALID)
    sock.Delete()


def test_random_call_sequences(mux: Mux) -> None:
    """Hypothesis drives random sequences of every ISocket call on real loopback TCP and
    local sockets (listeners accept two peers in three, deny the third). Invariants:
    only SocketModeError/ValueError ever raise from a call; no callback inside any
    call, after SocketShutdown, after Delete(), or to a user replaced by SetUser; at
    most one SocketShutdown per socket; the loop's exception handler stays empty; and
    once every socket is deleted, the library holds none and no task is left."""
    stats = run_machine(mux.kind, "stream", EXAMPLES["stateful"], EXAMPLES["stateful_steps"])
    print(f"\n[stateful] {mux.kind}: {stats}")


# --------------------------------------------------------------------------- flood


def _rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("name", ["tcp4", "local", "tls13"])
def test_flood_at_a_socket_that_never_reads(
    mux: Mux, log: IInstanceLog, ca: Any, name: str, short_tmp: str
) -> None:
    """A peer sends 24 MB as fast as SocketSendResult lets it at a socket with no Recv:
    the sender is held back (its SendResults stop), and the receiving process grows by
    less than 2 MB of traced memory (the library holds at most HOLD_LIMIT per socket;
    the rest waits in kernel buffers). Once the app reads, every byte arrives intact."""
    import tracemalloc

    from kit.conformance import STREAM_KINDS as KINDS

    from usocket_asyncio._stream import HOLD_LIMIT

    kind = tls_kind(ca, name) if name.startswith("tls") else KINDS[name]
    listener, _lrec, accepted, address = listen(mux, log, kind, short_tmp)
    client, crec = connect(mux, log, kind, address)
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names())
    server, srec = accepted[0]
    data = random.Random(95).randbytes(24_000_000)
    chunk = 65536
    off = [0]

    def more(s: ISocket) -> None:
        if off[0] < len(data):
            s.Send(data[off[0] : off[0] + chunk])
            off[0] += chunk

    crec.hooks["send"] = more
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        rss0 = _rss()
        call(crec, client.Send, data[:chunk])
        off[0] = chunk
        # run until the sender is stuck: no SendResult for 0.2 s (bounded: 100 rounds)
        last = -1
        for _ in range(100):
            if crec.sends_done == last:
                break
            last = crec.sends_done
            mux.run_for(0.2)
        grown = tracemalloc.get_traced_memory()[0] - base
        rss = _rss() - rss0
    finally:
        tracemalloc.stop()
    stopped = off[0]
    assert stopped < len(data), "the whole flood went out to a socket that never reads"
    assert grown < 2_000_000, f"the process grew by {grown} bytes"
    held = server._hend - server._hstart  # type: ignore[attr-defined]
    assert held <= HOLD_LIMIT + 65536, held
    Pump(server, srec, b"", len(data), 96).start()
    mux.run_until(lambda: len(srec.received) == len(data), timeout=40, what="the flood")
    assert sha(srec.received) == sha(data)
    print(
        f"\n[flood] {mux.kind}/{name}: sender stopped at {stopped} bytes, traced memory "
        f"{grown:+d} bytes, RSS {rss:+d} bytes"
    )
    for s in (client, server, listener):
        s.Delete()
