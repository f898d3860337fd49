"""`IDtls` / `UDtls`: the engine with no loop, then over library UDP sockets (the app
demuxes with `DtlsRecv`) between two engines and against openssl and GnuTLS peers,
in both roles, with the keying material compared to what the tool exports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest
from kit.browser import in_loopback_namespace, namespace_unavailable
from kit.dtls import OWN_FP, SRTP, Endpoint, SimNet, is_client_hello
from kit.loop import Mux, R, free_port, wake
from kit.peers import (
    EXPORT,
    client_against,
    fingerprint_of,
    keying_material,
    output,
    peer,
    ready_peer,
    wait_for_exit,
    wait_for_output,
)

from usocket_asyncio import (
    DTLS_OPTION_NO_COOKIE,
    DTLS_OPTION_NO_MUTUAL,
    IDtls,
    IInstanceLog,
    IPaddr,
    ISocket,
    ITimer,
    LogFlags,
    SocketModeError,
    UDtls,
)
from usocket_asyncio._context import default_server_cert
from usocket_asyncio._idtls import EARLY_MAX, EARLY_MAX_BYTES, HELLO_MAX, HELLO_PIECES

STUN = bytes([0, 1, 0, 0]) + bytes.fromhex("2112a442") + bytes(12)
RTP = bytes([0x80, 0x00, 0x00, 0x01]) + bytes(8) + b"rtp payload"


# --------------------------------------------------------------------------- no loop


class Side(UDtls):
    """Records every callback; its `DtlsSend`s go to `wire` and its timer is a value."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[Any, ...]] = []
        self.wire: list[bytes] = []
        self.timer: int | None = None
        self.keys: tuple[bytes, str] | None = None
        self.data: list[bytes] = []
        self.fp: bytes | None = None
        self.stops = 0

    def DtlsInitialized(self, ctx: Any, fingerprint: bytes) -> None:
        self.fp = fingerprint

    def DtlsConnected(self, ctx: Any) -> None:
        assert ctx == self.name
        self.calls.append(("connected",))

    def DtlsTimerStart(self, ctx: Any, to: int) -> None:
        assert to >= 0
        self.timer = to

    def DtlsTimerStop(self, ctx: Any) -> None:
        self.stops += 1
        self.timer = None

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        self.calls.append(("closed", error))

    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        assert len == buf.__len__() <= 1200
        self.wire.append(bytes(buf))

    def DtlsRecvApplicationData(self, ctx: Any, buf: bytes, len: int) -> None:
        self.data.append(bytes(buf[:len]))

    def DtlsSrtpKeys(self, ctx: Any, keys: bytes, profile: str) -> None:
        self.keys = (keys, profile)
        self.calls.append(("keys", profile))


def shuttle(a: tuple[Side, IDtls], b: tuple[Side, IDtls], rounds: int = 50) -> None:
    """Carry datagrams between two engines until neither sends; fire due timers."""
    for _ in range(rounds):
        moved = False
        for (src, _), (_, dst) in ((a, b), (b, a)):
            wire, src.wire = src.wire, []
            for d in wire:
                moved = True
                assert dst.DtlsRecv(d, None, "127.0.0.1", 5000)
        if not moved:
            for side, eng in (a, b):
                if side.timer is not None:
                    side.timer = None
                    eng.DtlsTimeout()
                    moved = True
            if not moved:
                return


def engines(
    coptions: int = SRTP, soptions: int = SRTP, **kw: Any
) -> tuple[tuple[Side, IDtls], tuple[Side, IDtls]]:
    log = IInstanceLog(0)
    cs, ss = Side("c"), Side("s")
    c, s = IDtls.Create(cs, "c", log), IDtls.Create(ss, "s", log)
    s.DtlsConnect(True, soptions, "127.0.0.1", None, kw.get("spin", OWN_FP))
    c.DtlsConnect(
        False, coptions, "127.0.0.1", None, kw.get("cpin", OWN_FP), kw.get("paused", False)
    )
    return (cs, c), (ss, s)


def test_engines_back_to_back_without_a_loop() -> None:
    (cs, c), (ss, s) = engines()
    c.DtlsInitialize()
    assert cs.fp == OWN_FP
    shuttle((cs, c), (ss, s))
    assert cs.calls[-2:] == [("keys", "SRTP_AEAD_AES_128_GCM"), ("connected",)]
    assert ss.calls[-2:] == [("keys", "SRTP_AEAD_AES_128_GCM"), ("connected",)]
    assert cs.keys == ss.keys and cs.keys is not None and len(cs.keys[0]) == 56
    c.DtlsSendApplicationData(b"hello", None)
    s.DtlsSendApplicationData(bytearray(b"world!!"), 5)
    shuttle((cs, c), (ss, s))
    assert ss.data == [b"hello"] and cs.data == [b"world"]
    c.DtlsClose()
    assert cs.calls[-1] == ("closed", 0)
    shuttle((cs, c), (ss, s))
    assert ss.calls[-1] == ("closed", 0)
    n = len(ss.calls)
    s.DtlsClose()  # already closed: nothing more
    assert len(ss.calls) == n


def test_dtls_recv_leaves_other_datagrams_to_the_app() -> None:
    """RFC 7983: STUN, RTP, RTCP, TURN channel data and empty datagrams are not DTLS."""
    (_, c), _ = engines()
    assert not c.DtlsRecv(STUN, None, "127.0.0.1", 1)
    assert not c.DtlsRecv(RTP, None, "127.0.0.1", 1)
    assert not c.DtlsRecv(bytes([0x81, 200]) + bytes(6), None, "127.0.0.1", 1)  # RTCP SR
    assert not c.DtlsRecv(bytes([0x40, 0, 0, 4]) + bytes(4), None, "127.0.0.1", 1)  # TURN
    assert not c.DtlsRecv(b"", None, "127.0.0.1", 1)
    assert not c.DtlsRecv(bytearray(b"\x16\x00"), 0, "127.0.0.1", 1)
    assert c.DtlsRecv(bytes([23, 0xFE, 0xFD]) + bytes(20), None, "127.0.0.1", 1)


def test_paused_sends_nothing_until_unpaused() -> None:
    (cs, c), (ss, s) = engines(paused=True)
    assert cs.wire == [] and cs.timer is None
    c.DtlsUnpause()
    assert len(cs.wire) == 1 and cs.timer is not None
    shuttle((cs, c), (ss, s))
    assert ("connected",) in cs.calls and ("connected",) in ss.calls


def test_abort_connect_stops_the_timer_and_says_nothing_more() -> None:
    (cs, c), (ss, s) = engines()
    assert cs.timer is not None
    c.DtlsAbortConnect()
    assert cs.calls == [] and cs.stops == 1 and cs.timer is None
    wire, cs.wire = cs.wire, []
    for d in wire:
        s.DtlsRecv(d, None, "127.0.0.1", 5000)
    for d in ss.wire:
        c.DtlsRecv(d, None, "127.0.0.1", 5000)
    assert cs.calls == [] and cs.stops == 1 and cs.wire == []


def test_lost_flights_are_resent_on_the_apps_timer() -> None:
    """The server's first answers are lost: the client's timer (asked for in ms) brings
    them back, and no other clock is read."""
    (cs, c), (ss, s) = engines(soptions=SRTP | DTLS_OPTION_NO_COOKIE)
    assert cs.timer is not None and 90 <= cs.timer <= 110  # RTO_INITIAL, 0.1 s
    for _ in range(2):
        for d in cs.wire:
            s.DtlsRecv(d, None, "127.0.0.1", 5000)
        cs.wire.clear()
        ss.wire.clear()  # lost
        c.DtlsTimeout()
        assert cs.wire  # the flight again
    shuttle((cs, c), (ss, s))
    assert ("connected",) in cs.calls and ("connected",) in ss.calls
    assert cs.keys == ss.keys and cs.keys is not None


def test_wrong_fingerprint_closes_with_the_handshake_reason() -> None:
    (cs, c), (ss, s) = engines(cpin=bytes(32))
    shuttle((cs, c), (ss, s))
    assert cs.calls[-1] == ("closed", int(R.SOCKET_TLS_HANDSHAKE_FAILED))
    assert ss.calls[-1] == ("closed", int(R.SOCKET_TLS_HANDSHAKE_FAILED))
    assert cs.timer is None and ss.timer is None


@pytest.mark.parametrize("name", ["sha1", "sha224", "sha256", "sha384", "sha512"])
def test_fingerprint_of_each_hash_pins_and_a_wrong_one_fails(name: str) -> None:
    """`DtlsConnect`'s fingerprint is a digest whose length names its hash: the right
    digest of each hash connects; the same length with one bit flipped closes both
    engines with the handshake reason; the log says which hash pinned."""
    right = hashlib.new(name, default_server_cert().leaf_der).digest()
    (cs, c), (ss, s) = engines(cpin=right, spin=right)
    shuttle((cs, c), (ss, s))
    assert cs.calls[-1] == ss.calls[-1] == ("connected",)
    assert cs.keys == ss.keys and cs.keys is not None
    wrong = bytes([right[0] ^ 1]) + right[1:]
    (cs, c), (ss, s) = engines(cpin=wrong, spin=right)
    shuttle((cs, c), (ss, s))
    assert cs.calls[-1] == ss.calls[-1] == ("closed", int(R.SOCKET_TLS_HANDSHAKE_FAILED))
    assert ("connected",) not in cs.calls + ss.calls


def test_pinning_is_logged_with_its_hash(caplog: pytest.LogCaptureFixture) -> None:
    log = IInstanceLog(int(LogFlags.LOG_DTLS))
    fp = hashlib.sha384(default_server_cert().leaf_der).digest()
    with caplog.at_level(logging.DEBUG):
        IDtls.Create(Side("c"), "c", log).DtlsConnect(False, SRTP, "127.0.0.1", None, fp)
    assert "pinned by sha384" in caplog.text


@pytest.mark.parametrize("rto", [0.05, 0.1, 1.0])
def test_rto_initial_sets_the_first_resend(rto: float) -> None:
    """`rtoInitial` (beyond the SDK): the first `DtlsTimerStart` after a flight asks for
    that many ms, and a lost flight resent on it doubles the wait."""
    log = IInstanceLog(0)
    side = Side("c")
    c = IDtls.Create(side, "c", log)
    c.DtlsConnect(False, SRTP, "127.0.0.1", None, OWN_FP, rtoInitial=rto)
    assert side.wire and side.timer is not None
    assert abs(side.timer - rto * 1000) <= 1
    first = side.timer
    side.wire.clear()
    c.DtlsTimeout()  # the ClientHello was lost
    assert side.wire and side.timer is not None and abs(side.timer - 2 * first) <= 1
    for bad in (0, -1, 61, True, "0.1"):
        with pytest.raises(ValueError, match="rtoInitial"):
            IDtls.Create(Side("x"), "x", log).DtlsConnect(
                False,
                SRTP,
                "127.0.0.1",
                None,
                OWN_FP,
                rtoInitial=bad,  # type: ignore[arg-type]
            )


def client_hello_datagrams(versions: list[int], key_share: int, mtu: int = 1200) -> list[bytes]:
    """A ClientHello offering `versions` (supported_versions after a key share of
    `key_share` bytes, as Chromium orders them), in as many fragments as `mtu` needs."""
    ext = b""
    for kind, data in (
        (51, bytes(key_share)),
        (43, bytes([2 * len(versions)]) + b"".join(v.to_bytes(2, "big") for v in versions)),
    ):
        ext += kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
    body = b"\xfe\xfd" + bytes(32) + b"\0\0" + b"\0\2\xc0\x2b" + b"\1\0"
    body += len(ext).to_bytes(2, "big") + ext
    out = []
    step = mtu - 25
    for off in range(0, len(body), step):
        frag = body[off : off + step]
        hs = b"\1" + len(body).to_bytes(3, "big") + b"\0\0" + off.to_bytes(3, "big")
        hs += len(frag).to_bytes(3, "big") + frag
        out.append(b"\x16\xfe\xff" + bytes(8) + len(hs).to_bytes(2, "big") + hs)
    return out


def test_the_first_client_hellos_offered_versions_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under LOG_DTLS the engine logs what the peer's first ClientHello offers, gathered
    from its fragments in any order (a browser's DTLS 1.3 offer spans two datagrams):
    a library client offers DTLS 1.2 alone; a 1.3 offer is logged as such, and its
    handshake is still DTLS 1.2, logged at the end."""
    log = IInstanceLog(int(LogFlags.LOG_DTLS))
    with caplog.at_level(logging.DEBUG):
        frags = client_hello_datagrams([0xFEFC, 0xFEFD], key_share=1258)
        assert len(frags) == 2
        server = IDtls.Create(Side("s"), "s", log)
        server.DtlsConnect(True, SRTP | DTLS_OPTION_NO_COOKIE, "127.0.0.1", None, None)
        assert server.DtlsRecv(frags[1], None, "127.0.0.1", 7)
        assert "offers" not in caplog.text
        assert server.DtlsRecv(frags[0], None, "127.0.0.1", 7)
        assert "ClientHello from 127.0.0.1:7 offers DTLSv1.3, DTLSv1.2" in caplog.text
        caplog.clear()
        cs, ss = Side("c"), Side("s")
        c, s = IDtls.Create(cs, "c", log), IDtls.Create(ss, "s", log)
        s.DtlsConnect(True, SRTP, "127.0.0.1", None, OWN_FP)
        c.DtlsConnect(False, SRTP, "127.0.0.1", None, OWN_FP)
        shuttle((cs, c), (ss, s))
        assert ("connected",) in ss.calls
    lines = [r.getMessage() for r in caplog.records]
    assert sum("offers DTLSv1.2" in m for m in lines) == 1, lines
    assert any("handshake done: DTLSv1.2 " in m for m in lines), lines


def test_client_hello_gathering_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """A ClientHello longer than `HELLO_MAX`, or whose fragments never complete within
    `HELLO_PIECES` datagrams, is not logged, and nothing is kept of it."""
    log = IInstanceLog(int(LogFlags.LOG_DTLS))
    with caplog.at_level(logging.DEBUG):
        big = client_hello_datagrams([0xFEFD], key_share=HELLO_MAX)
        e = IDtls.Create(Side("s"), "s", log)
        e.DtlsRecv(big[0], None, "127.0.0.1", 7)
        assert e._hello is False
        first = client_hello_datagrams([0xFEFD], key_share=1258)[0]
        e = IDtls.Create(Side("s"), "s", log)
        for _ in range(HELLO_PIECES):
            e.DtlsRecv(first, None, "127.0.0.1", 7)
        assert e._hello is False
        e.DtlsRecv(client_hello_datagrams([0xFEFD], key_share=1258)[1], None, "127.0.0.1", 7)
    assert "offers" not in caplog.text


def test_without_a_fingerprint_the_contexts_verification_applies() -> None:
    """No fingerprint: the client's context decides. Verification on (the default) and
    the server's self-signed certificate untrusted: the handshake fails; the same
    context with `DisableCertificateVerification`: it connects."""
    from usocket_asyncio import CreateTLSSocketProvider

    for verify, want in ((True, ("closed", int(R.SOCKET_TLS_HANDSHAKE_FAILED))), (False, None)):
        ctx = CreateTLSSocketProvider(None).CreateSocketContext(IInstanceLog(0))
        if not verify:
            ctx.DisableCertificateVerification()
        cs, ss = Side("c"), Side("s")
        c, s = IDtls.Create(cs, "c", IInstanceLog(0)), IDtls.Create(ss, "s", IInstanceLog(0))
        s.DtlsConnect(True, SRTP | DTLS_OPTION_NO_MUTUAL, "127.0.0.1", None, None)
        c.DtlsConnect(False, SRTP, "127.0.0.1", ctx, None)
        shuttle((cs, c), (ss, s))
        if want is None:
            assert cs.calls[-1] == ss.calls[-1] == ("connected",)
        else:
            assert cs.calls[-1] == want and ("connected",) not in cs.calls


def test_no_common_srtp_profile() -> None:
    (cs, c), (ss, s) = engines(soptions=0)
    shuttle((cs, c), (ss, s))
    assert cs.calls[-1] == ("closed", int(R.SOCKET_TLS_HANDSHAKE_FAILED))
    assert ss.calls == [("connected",), ("closed", 0)]


def test_no_mutual_server_gets_no_client_certificate() -> None:
    (cs, c), (ss, s) = engines(soptions=SRTP | DTLS_OPTION_NO_MUTUAL, spin=None)
    shuttle((cs, c), (ss, s))
    assert ("connected",) in cs.calls and ("connected",) in ss.calls


def test_caller_mistakes_raise() -> None:
    (_, c), _ = engines()
    with pytest.raises(SocketModeError, match="DtlsConnected"):
        c.DtlsSendApplicationData(b"early")
    with pytest.raises(SocketModeError, match="new IDtls"):
        c.DtlsConnect(False, 0, "127.0.0.1", None, None)
    with pytest.raises(ValueError, match="32 sha-256"):
        IDtls.Create(Side("x"), "x", IInstanceLog(0)).DtlsConnect(
            False, 0, "127.0.0.1", None, b"short"
        )
    with pytest.raises(TypeError):
        IDtls.Create(object(), None, IInstanceLog(0))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- over UDP


def test_two_endpoints_share_the_port_with_stun_and_rtp(mux: Mux, log: IInstanceLog) -> None:
    """Two library endpoints, one UDP port each: the handshake, records both ways, and
    STUN/RTP datagrams interleaved on the same port reach the app untouched."""
    srv = Endpoint(mux, log, True)
    mux.run_until(lambda: srv.port != 0)
    cli = Endpoint(mux, log, False, peer_port=srv.port)
    mux.run_until(lambda: cli.port != 0)
    cli.udp.SendTo(STUN, None, "127.0.0.1", srv.port)
    cli.connect()
    cli.udp.SendTo(RTP, None, "127.0.0.1", srv.port)
    mux.run_until(lambda: cli.connected and srv.connected, 10, "the handshake")
    assert cli.keys == srv.keys and cli.keys is not None
    assert cli.keys[1] == "SRTP_AEAD_AES_128_GCM"
    srv.udp.SendTo(RTP, None, "127.0.0.1", cli.port)
    cli.dtls.DtlsSendApplicationData(b"from the client")
    srv.dtls.DtlsSendApplicationData(b"from the server")
    mux.run_until(lambda: bool(cli.received and srv.received and cli.other))
    assert srv.received == [b"from the client"] and cli.received == [b"from the server"]
    assert srv.other == [STUN, RTP] and cli.other == [RTP]
    cli.dtls.DtlsClose()
    mux.run_until(lambda: srv.closed is not None)
    assert cli.closed == 0 and srv.closed == 0
    cli.close()
    srv.close()


# --------------------------------------------------------------------------- real peers

GNUTLS_EXPORT = ["--keymatexport=EXTRACTOR-dtls_srtp", "--keymatexportsize=60"]
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
needs_gnutls = pytest.mark.skipif(
    shutil.which("gnutls-cli") is None or shutil.which("gnutls-serv") is None,
    reason="needs gnutls-bin",
)


def s_server_args(port: int, files: dict[str, str], *extra: str) -> list[str]:
    """`openssl s_server` for one DTLS 1.2 client with DTLS-SRTP on 127.0.0.1:`port`."""
    args = ["openssl", "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{port}"]
    return [
        *args,
        "-cert",
        files["server"],
        "-use_srtp",
        "SRTP_AES128_CM_SHA1_80",
        *extra,
        "-naccept",
        "1",
    ]


def s_client_args(port: int, files: dict[str, str], *extra: str) -> list[str]:
    """`openssl s_client` over DTLS 1.2 with DTLS-SRTP to 127.0.0.1:`port`, reading on
    after its stdin ends."""
    args = ["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}"]
    args += ["-use_srtp", "SRTP_AES128_CM_SHA1_80", *extra, "-mtu", "1200", "-ign_eof"]
    return [*args, "-cert", files["client"]]


@pytest.mark.interop
@pytest.mark.timeout(40)
@needs_openssl
def test_engine_client_against_openssl_s_server(
    mux: Mux, log: IInstanceLog, files: dict[str, str]
) -> None:
    port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
    args = s_server_args(port, files, *EXPORT)
    with ready_peer(args, "ACCEPT") as proc:
        cli = client_against(mux, log, port, fingerprint_of(files["server"]))
        wait_for_output(mux, proc, "Keying material:")
        assert cli.keys is not None
        assert cli.keys == (keying_material(output(proc)), "SRTP_AES128_CM_SHA1_80")
        cli.dtls.DtlsSendApplicationData(b"hello from the engine\n")
        wait_for_output(mux, proc, "hello from the engine")
        assert proc.stdin is not None
        proc.stdin.write(b"hello from s_server\n")
        proc.stdin.flush()
        mux.run_until(lambda: bool(cli.received), 10, "s_server's line")
        assert cli.received == [b"hello from s_server\n"]
        cli.dtls.DtlsClose()
        assert cli.closed == 0
        wait_for_exit(mux, proc, "s_server to see close_notify", 10)
        cli.close()


@pytest.mark.interop
@pytest.mark.timeout(40)
@needs_openssl
def test_openssl_s_client_against_engine_server(
    mux: Mux, log: IInstanceLog, files: dict[str, str]
) -> None:
    srv = Endpoint(mux, log, True, fingerprint=None)
    mux.run_until(lambda: srv.port != 0)
    args = s_client_args(srv.port, files, *EXPORT)
    with peer(args, b"hello from s_client\n") as proc:
        mux.run_until(lambda: bool(srv.received), 20, "s_client's line")
        assert srv.received == [b"hello from s_client\n"]
        wait_for_output(mux, proc, "Keying material:")
        assert srv.keys == (keying_material(output(proc)), "SRTP_AES128_CM_SHA1_80")
        hello_then_close(mux, srv, proc, "s_client")
    assert srv.closed == 0
    srv.close()


def hello_then_close(mux: Mux, ep: Endpoint, proc: Any, who: str) -> None:
    """The engine sends a line the peer prints, then closes; the peer sees close_notify."""
    ep.dtls.DtlsSendApplicationData(b"hello from the engine\n")
    wait_for_output(mux, proc, "hello from the engine")
    ep.dtls.DtlsClose()
    wait_for_exit(mux, proc, f"{who} to see close_notify", 10)


@pytest.mark.interop
@pytest.mark.timeout(40)
@needs_gnutls
def test_engine_client_against_gnutls_serv(mux: Mux, files: dict[str, str]) -> None:
    """gnutls-serv (echo) agrees the profile and echoes a record; it prints no keying
    material, so the keys are compared against GnuTLS in the other role only.

    gnutls-serv cannot bind one address and would listen on every interface, so it and
    the library's client run in a child process inside a network namespace of their own
    that has only loopback (tests/kit/idtls_netns.py); without one the test is skipped, it
    never listens anywhere else."""
    why = namespace_unavailable()
    if why is not None:
        pytest.skip(why)
    child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kit", "idtls_netns.py")
    args = in_loopback_namespace([sys.executable, child, mux.kind, files["server"]])
    run = subprocess.run(args, capture_output=True, timeout=35, check=False)
    stderr = run.stderr.decode("latin-1", "replace")
    assert run.returncode == 0, (run.stdout, stderr)
    result = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert result["profile"] == "SRTP_AES128_CM_SHA1_80", stderr
    assert result["received"] == ["echo me\n"]
    assert result["closed"] == 0
    assert "DTLS profile set to SRTP_AES128_CM_HMAC_SHA1_80" in result["server_output"]
    assert result["loop_errors"] == []


@pytest.mark.interop
@pytest.mark.timeout(40)
@needs_gnutls
def test_gnutls_cli_against_engine_server(
    mux: Mux, log: IInstanceLog, files: dict[str, str]
) -> None:
    srv = Endpoint(mux, log, True, fingerprint=fingerprint_of(files["client"]))
    mux.run_until(lambda: srv.port != 0)
    args = ["gnutls-cli", "--udp", "--insecure", "-p", str(srv.port), "127.0.0.1"]
    args += ["--x509certfile", files["client"], "--x509keyfile", files["client"]]
    args += ["--srtp-profiles", "SRTP_AES128_CM_HMAC_SHA1_80", *GNUTLS_EXPORT]
    with peer(args, b"hello from gnutls-cli\n") as proc:
        mux.run_until(lambda: bool(srv.received), 20, "gnutls-cli's line")
        assert srv.received == [b"hello from gnutls-cli\n"]
        assert srv.keys is not None
        assert srv.keys == (keying_material(output(proc)), "SRTP_AES128_CM_SHA1_80")
        hello_then_close(mux, srv, proc, "gnutls-cli")
    assert srv.closed == 0
    srv.close()


# --------------------------------------------------------------------------- early datagrams


@pytest.mark.parametrize("options", [SRTP, SRTP | DTLS_OPTION_NO_COOKIE])
def test_client_hello_before_connect_is_held_and_fed_at_connect(options: int) -> None:
    """A passive side starts its engine 50 ms after the peer's ClientHello came (a
    browser's comes before its ICE nomination): the ClientHello is held, fed to the
    engine at DtlsConnect, and the handshake completes before the client's first
    retransmission timeout (1 s on the simulated clock), with no timer fired."""
    net = SimNet()
    c, s = net.c, net.s
    c.eng.DtlsConnect(False, SRTP, "127.0.0.1", None, OWN_FP)
    net.run(lambda: bool(s.received))
    assert is_client_hello(s.received[0]) and s.names() == []  # taken, nothing said yet
    net.now += 0.05
    s.eng.DtlsConnect(True, options, "127.0.0.1", None, OWN_FP)
    net.run(lambda: c.connected and s.connected)
    assert c.connected and s.connected, (c.trace, s.trace)
    assert net.timeouts == 0 and net.now < 1.0, net.now
    hellos = [t for t in c.trace if t[0] == "send" and is_client_hello(t[1])]
    assert len(hellos) == (1 if options & DTLS_OPTION_NO_COOKIE else 2)


def test_held_client_hello_and_a_paused_connect() -> None:
    """A held ClientHello given to a paused DtlsConnect: the answer waits for
    DtlsUnpause, then the handshake completes with no timer fired."""
    net = SimNet()
    c, s = net.c, net.s
    c.eng.DtlsConnect(False, SRTP, "127.0.0.1", None, OWN_FP)
    net.run(lambda: bool(s.received))
    s.eng.DtlsConnect(True, SRTP | DTLS_OPTION_NO_COOKIE, "127.0.0.1", None, OWN_FP, True)
    assert s.trace == []
    net.now += 0.05
    s.eng.DtlsUnpause()
    names = s.names()  # the server's flight, then its timer
    assert names[-1] == "timer_start" and set(names[:-1]) == {"send"}, names
    net.run(lambda: c.connected and s.connected)
    assert c.connected and s.connected and net.timeouts == 0


def test_datagrams_before_connect_are_bounded_and_drops_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood of DTLS datagrams before DtlsConnect: the engine takes each (True), holds
    at most EARLY_MAX of them and EARLY_MAX_BYTES, logs the first drop and, at
    DtlsConnect, how many were dropped; the ClientHello that came first still
    completes the handshake without a retransmission."""
    net = SimNet()
    c, s = net.c, net.s
    s.eng = IDtls.Create(s, "s", IInstanceLog(LogFlags.LOG_DTLS))
    c.eng.DtlsConnect(False, SRTP, "127.0.0.1", None, OWN_FP)
    net.run(lambda: bool(s.received))
    rng = random.Random(7)
    flood = 5000
    junk = [bytes([23, 0xFE, 0xFD]) + rng.randbytes(1197) for _ in range(16)]
    with caplog.at_level("INFO", logger="usocket_asyncio"):
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for i in range(flood):
                assert s.eng.DtlsRecv(junk[i % 16], None, "127.0.0.1", 5000)
            grown = sum(
                st.size_diff for st in tracemalloc.take_snapshot().compare_to(before, "filename")
            )
        finally:
            tracemalloc.stop()
        held = s.eng._early
        assert len(held) <= EARLY_MAX and sum(len(d) for d, _, _ in held) <= EARLY_MAX_BYTES
        assert grown < 64 * 1024, grown  # the flood was 6 MB
        drops = [
            r.getMessage() for r in caplog.records if "before DtlsConnect: dropped" in r.message
        ]
        assert len(drops) == 1, drops
        s.eng.DtlsConnect(True, SRTP, "127.0.0.1", None, OWN_FP)
    dropped = flood - (len(held) - 1)
    assert f"({dropped} more were dropped)" in caplog.text, caplog.text
    net.run(lambda: c.connected and s.connected)
    assert c.connected and s.connected and net.timeouts == 0


def test_nothing_held_after_abort_or_for_other_datagrams() -> None:
    """Non-DTLS datagrams before DtlsConnect stay the app's (False, not held); an engine
    aborted before DtlsConnect holds nothing and refuses DtlsConnect."""
    net = SimNet()
    s = net.s
    assert not s.eng.DtlsRecv(STUN, None, "127.0.0.1", 1)
    assert not s.eng.DtlsRecv(RTP, None, "127.0.0.1", 1)
    assert s.eng._early == []
    s.eng.DtlsAbortConnect()
    assert s.eng.DtlsRecv(bytes([22, 0xFE, 0xFD]) + bytes(20), None, "127.0.0.1", 1)
    assert s.eng._early == []
    with pytest.raises(SocketModeError, match="new IDtls"):
        s.eng.DtlsConnect(True, SRTP, "127.0.0.1", None, OWN_FP)
    assert s.trace == []


class NominatedLate(Endpoint):
    """A passive media endpoint that starts its engine on ICE nomination, 50 ms after
    the peer's first datagram came (a browser sends its ClientHello first); every
    datagram goes to DtlsRecv from the start. Counts the ClientHellos it saw."""

    def __init__(self, mux: Mux, log: IInstanceLog, **kw: Any) -> None:
        super().__init__(mux, log, True, **kw)
        self.nomination = ITimer(mux, self)
        self.hellos = 0
        self.hellos_at_first_send: int | None = None
        self.hellos_at_connected: int | None = None

    def SocketRecvFromResult(
        self, socket: ISocket, buf: Any, len: int, srcAddr: IPaddr, srcPort: int
    ) -> None:
        data = bytes(buf[:len])
        self.hellos += is_client_hello(data)
        if self.peer is None:
            self.peer = (srcAddr, srcPort)
            self.nomination.Start(50)
        if not self.dtls.DtlsRecv(buf, len, srcAddr, srcPort):
            self.other.append(data)
        socket.Recv(buf)
        wake()

    def TimerOnTimeout(self, timer: ITimer) -> None:
        if timer is self.nomination:
            self.connect()
        else:
            super().TimerOnTimeout(timer)

    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        if self.hellos_at_first_send is None:
            self.hellos_at_first_send = self.hellos
        super().DtlsSend(ctx, buf, len)

    def DtlsConnected(self, ctx: Any) -> None:
        self.hellos_at_connected = self.hellos
        super().DtlsConnected(ctx)

    def close(self) -> None:
        self.nomination.Cancel()
        super().close()


@pytest.mark.interop
@pytest.mark.timeout(40)
@needs_openssl
def test_openssl_client_hello_before_connect(
    mux: Mux, log: IInstanceLog, files: dict[str, str]
) -> None:
    """openssl s_client's first ClientHello reaches DtlsRecv 50 ms before DtlsConnect:
    the engine answers that very ClientHello (not openssl's resend of it, 1 s later),
    and the handshake completes after the two of the cookie exchange (counted, not
    timed)."""
    srv = NominatedLate(mux, log, fingerprint=None)
    mux.run_until(lambda: srv.port != 0)
    args = s_client_args(srv.port, files)
    with peer(args, b"hello from s_client\n") as proc:
        mux.run_until(lambda: bool(srv.received), 20, "s_client's line")
        assert srv.connected and srv.received == [b"hello from s_client\n"]
        # a ClientHello lost at DtlsConnect would be answered only after openssl's
        # resend: two ClientHellos before the first DtlsSend
        assert srv.hellos_at_first_send == 1, srv.hellos
        # and none resent: the cookie exchange's two, no more
        assert srv.hellos_at_connected == 2, srv.hellos
        hello_then_close(mux, srv, proc, "s_client")
    assert srv.closed == 0
    srv.close()


# ------------------------------------------------------------------- close inside a callback


class ClosesOnFirstRecord(Endpoint):
    """Closes the association inside DtlsRecvApplicationData (on the peer's first
    record) and its UDP socket inside DtlsConnectionClosed, the natural place: a
    close_notify handed to DtlsSend after that could never leave."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.deleted = False
        self.late: list[str] = []

    def SocketRecvFromResult(
        self, socket: ISocket, buf: Any, len: int, srcAddr: IPaddr, srcPort: int
    ) -> None:
        if self.peer is None:
            self.peer = (srcAddr, srcPort)
            self.connect()
        self.dtls.DtlsRecv(buf, len, srcAddr, srcPort)
        if not self.deleted:  # the socket may have gone inside DtlsRecv
            socket.Recv(buf)
        wake()

    def DtlsRecvApplicationData(self, ctx: Any, buf: bytes, len: int) -> None:
        super().DtlsRecvApplicationData(ctx, buf, len)
        self.dtls.DtlsClose()

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        super().DtlsConnectionClosed(ctx, error)
        self.udp.Delete()
        self.deleted = True

    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        if self.deleted:
            self.late.append(f"DtlsSend of {len} bytes after DtlsConnectionClosed")
            return
        super().DtlsSend(ctx, buf, len)

    def close(self) -> None:
        self.timer.Cancel()
        if not self.deleted:
            self.udp.Delete()


@pytest.mark.interop
@pytest.mark.timeout(40)
@needs_openssl
def test_close_inside_a_callback_against_openssl_s_server(
    mux: Mux, log: IInstanceLog, files: dict[str, str]
) -> None:
    port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
    args = s_server_args(port, files)
    with ready_peer(args, "ACCEPT") as proc:
        cli = ClosesOnFirstRecord(
            mux, log, False, fingerprint=fingerprint_of(files["server"]), peer_port=port
        )
        mux.run_until(lambda: cli.port != 0)
        cli.connect()
        mux.run_until(lambda: cli.connected or cli.closed is not None, 15, "the handshake")
        assert cli.connected
        assert proc.stdin is not None
        proc.stdin.write(b"hello from s_server\n")
        proc.stdin.flush()
        mux.run_until(lambda: cli.closed is not None, 10, "the line, then the close")
        assert cli.received == [b"hello from s_server\n"] and cli.closed == 0
        assert cli.deleted and cli.late == []
        wait_for_exit(mux, proc, "s_server to see close_notify", 10)
    cli.close()


@pytest.mark.interop
@pytest.mark.timeout(40)
@needs_openssl
def test_close_inside_a_callback_against_openssl_s_client(
    mux: Mux, log: IInstanceLog, files: dict[str, str]
) -> None:
    srv = ClosesOnFirstRecord(mux, log, True, fingerprint=None)
    mux.run_until(lambda: srv.port != 0)
    args = s_client_args(srv.port, files)
    with peer(args, b"hello from s_client\n") as proc:
        mux.run_until(lambda: srv.closed is not None, 20, "s_client's line, then the close")
        assert srv.received == [b"hello from s_client\n"] and srv.closed == 0
        assert srv.deleted and srv.late == []
        wait_for_exit(mux, proc, "s_client to see close_notify", 10)
    srv.close()
