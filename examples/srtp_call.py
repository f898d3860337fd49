"""A DTLS-SRTP call over loopback: DTLS, SRTP, SRTCP and STUN on one UDP port per side.

    python -m examples.srtp_call [--uvloop] [--packets 50] [-v]

Two endpoints, as a WebRTC or SIP media stack has them (RFC 5764, RFC 5763): each has one
library UDP socket, an `IDtls` engine, and two `ISrtpSession`s (one per direction). Each
makes its own certificate; the two exchange an SDP-like offer and answer with the port
and the `a=fingerprint`, and each engine pins the other's certificate. The offerer
(`a=setup:actpass`) is the DTLS server, the answerer (`a=setup:active`) the client.

Every datagram a socket receives goes through one demultiplexer (RFC 7983, by the first
byte): DTLS (20..63) to the engine's `DtlsRecv`, RTP and RTCP (128..191) to the receiving
SRTP session, STUN (0..3) to the app untouched. Once the handshake gave the keys, each
side sends `--packets` RTP packets, a STUN consent check every ten packets, one forged
and one replayed packet (both must be dropped), and an RTCP sender report over SRTCP.
Then the answerer sends close_notify and the loop ends. An `ITimer` bounds the run.
Exit status 0 when every payload arrived intact on both sides.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import random
import re
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from usocket_asyncio import (
    DTLS_OPTION_USE_SRTP,
    LOG_APP,
    LOG_DTLS,
    LOG_UDP,
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IDtls,
    IInstanceLog,
    IIoMux,
    IPaddr,
    ISocket,
    ISocketContext,
    ISrtpSession,
    ITimer,
    ShutdownReason,
    SrtpKeys,
    UDtls,
    USocket,
    UTimer,
)

TIME_LIMIT_MS = 15_000
PACE_MS = 5  # one RTP packet every 5 ms (a real call: every 20 ms)
PAYLOAD = 160  # bytes: 20 ms of G.711
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- the SDP part


def make_certificate(name: str) -> bytes:
    """A fresh self-signed certificate and its key, PEM, as each WebRTC endpoint makes."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def sdp(port: int, fingerprint: bytes, setup: str) -> str:
    """The lines of an SDP media section that DTLS-SRTP needs."""
    return (
        f"m=audio {port} UDP/TLS/RTP/SAVP 0\r\n"
        f"c=IN IP4 {LOOPBACK}\r\n"
        f"a=fingerprint:sha-256 {fingerprint.hex(':').upper()}\r\n"
        f"a=setup:{setup}\r\n"
    )


def parse_sdp(text: str) -> tuple[str, int, bytes, str]:
    """(address, port, fingerprint, setup) from an SDP media section."""
    port = re.search(r"^m=audio (\d+) ", text, re.M)
    addr = re.search(r"^c=IN IP[46] (\S+)", text, re.M)
    fp = re.search(r"^a=fingerprint:sha-256 ([0-9A-Fa-f:]+)", text, re.M)
    setup = re.search(r"^a=setup:(\w+)", text, re.M)
    if not (port and addr and fp and setup):
        raise ValueError(f"not a DTLS-SRTP media section: {text!r}")
    return (
        addr.group(1),
        int(port.group(1)),
        bytes.fromhex(fp.group(1).replace(":", "")),
        setup.group(1),
    )


# --------------------------------------------------------------------------- packets


def rtp_header(seq: int, ts: int, ssrc: int) -> bytes:
    return (
        bytes([0x80, 0]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    )


def rtcp_sender_report(ssrc: int, packets: int, octets: int) -> bytes:
    # V=2, RC=0, PT=200 (SR), length 6 words: SSRC, NTP time (2), RTP time, counts (2)
    return (
        bytes([0x80, 200, 0, 6])
        + ssrc.to_bytes(4, "big")
        + bytes(12)
        + packets.to_bytes(4, "big")
        + octets.to_bytes(4, "big")
    )


def stun_binding_request(rnd: random.Random) -> bytes:
    # type 0x0001, length 0, magic cookie, 12-byte transaction id (RFC 5389)
    return b"\x00\x01\x00\x00\x21\x12\xa4\x42" + rnd.randbytes(12)


# --------------------------------------------------------------------------- an endpoint


class Endpoint(USocket, UDtls, UTimer):
    """One side of the call: one UDP socket for everything, one DTLS engine, two SRTP
    sessions once the handshake gave the keys."""

    def __init__(
        self,
        name: str,
        iomux: IIoMux,
        log: IInstanceLog,
        offerer: bool,
        packets: int,
        seed: int,
        on_change: Callable[[], None],
    ) -> None:
        self.name = name
        self.log = log
        self.offerer = offerer
        self.packets = packets
        self.on_change = on_change
        self.rnd = random.Random(seed)
        # this side's certificate: its fingerprint goes into the SDP
        self.ctx: ISocketContext = CreateTLSSocketProvider(None).CreateSocketContext(log)
        self.ctx.SetServerCertificate(make_certificate(name))
        self.fingerprint = self.ctx.GetCertificateFingerprint()
        self.udp = CreateUDPSocketProvider().CreateSocket(iomux, self, log)
        self.dtls = IDtls.Create(self, name, log)
        self.dtls_timer = ITimer(iomux, self)
        self.media_timer = ITimer(iomux, self)
        self.port = 0
        self.peer: tuple[IPaddr, int] | None = None
        self.server = False
        self.profile: str | None = None
        self.tx: ISrtpSession | None = None
        self.rx: ISrtpSession | None = None
        self.early: list[bytes] = []  # SRTP that came before this side had the keys
        # what this side sent (the peer checks it) and what it received
        self.ssrc = self.rnd.getrandbits(32)
        self.seq = self.rnd.getrandbits(16)  # random start: crosses the wrap at times
        self.sent_payloads: list[bytes] = []
        self.sent_stun: list[bytes] = []
        self.sent_rtcp: list[bytes] = []
        self.got_payloads: dict[int, bytes] = {}  # RTP sequence number -> payload
        self.got_stun: list[bytes] = []
        self.got_rtcp: list[bytes] = []
        self.rejected = 0
        self.closed: int | None = None
        self.deleted = False
        self.udp.Bind(LOOPBACK, 0)

    # -- the offer/answer ------------------------------------------------------------------

    def local_sdp(self) -> str:
        return sdp(self.port, self.fingerprint, "actpass" if self.offerer else "active")

    def remote_sdp(self, text: str) -> None:
        """The peer's SDP: where to send, whose certificate to accept, and which role."""
        addr, port, fingerprint, setup = parse_sdp(text)
        self.peer = (ipaddress.ip_address(addr), port)
        # RFC 5763: the answerer's a=setup:active makes it the DTLS client
        self.server = setup == "active"
        self.send_stun()  # an ICE-style connectivity check goes first
        self.dtls.DtlsConnect(self.server, DTLS_OPTION_USE_SRTP, addr, self.ctx, fingerprint)

    # -- the socket: one port, one demultiplexer ----------------------------------------------

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.port = localPort
        socket.Recv(bytearray(2048))
        self.on_change()

    def SocketRecvFromResult(
        self, socket: ISocket, buf: Any, len: int, srcAddr: IPaddr, srcPort: int
    ) -> None:
        if self.peer is not None and (srcAddr, srcPort) == self.peer:
            first = buf[0] if len else -1
            if self.dtls.DtlsRecv(buf, len, srcAddr, srcPort):
                pass  # DTLS (20..63): the engine took it
            elif 0 <= first <= 3:
                self.got_stun.append(bytes(buf[:len]))  # STUN: the app's, untouched
            elif 128 <= first <= 191:
                self.media(bytes(buf[:len]))
        if not self.deleted:  # the call may have ended inside this callback
            socket.Recv(buf)  # the buffer is ours again: the next datagram goes into it

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.log.Log(LOG_APP, "%s: UDP socket ended: %s", self.name, reason.name)

    def media(self, packet: bytes) -> None:
        if self.rx is None:
            if self.early.__len__() < 64:
                self.early.append(packet)
            return
        if 192 <= packet[1] <= 223:  # RTCP packet types 192..223 (RFC 5761)
            rtcp = self.rx.SrtcpUnprotect(packet)
            if rtcp is None:
                self.rejected += 1
            else:
                self.got_rtcp.append(rtcp)
        else:
            rtp = self.rx.Unprotect(packet)
            if rtp is None:
                self.rejected += 1  # forged, replayed, or not for our keys: dropped
            else:
                self.got_payloads[int.from_bytes(rtp[2:4], "big")] = rtp[12:]
        self.on_change()

    # -- the DTLS engine's callbacks ----------------------------------------------------------

    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        assert self.peer is not None
        self.udp.SendTo(buf, len, self.peer[0], self.peer[1])

    def DtlsTimerStart(self, ctx: Any, to: int) -> None:
        self.dtls_timer.Start(to)

    def DtlsTimerStop(self, ctx: Any) -> None:
        self.dtls_timer.Cancel()

    def DtlsSrtpKeys(self, ctx: Any, keys: bytes, profile: str) -> None:
        local_key, local_salt, remote_key, remote_salt = SrtpKeys(keys, profile, self.server)
        self.profile = profile
        self.tx = ISrtpSession.Create(local_key, local_salt, profile)
        self.rx = ISrtpSession.Create(remote_key, remote_salt, profile)
        self.log.Log(LOG_APP, "%s: DTLS-SRTP keys for %s", self.name, profile)

    def DtlsConnected(self, ctx: Any) -> None:
        self.log.Log(
            LOG_APP, "%s: DTLS connected as %s", self.name, "server" if self.server else "client"
        )
        early, self.early = self.early, []
        for packet in early:
            self.media(packet)
        self.media_timer.Start(PACE_MS)

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        self.closed = error
        self.dtls_timer.Cancel()
        self.media_timer.Cancel()
        self.log.Log(LOG_APP, "%s: DTLS closed (%d)", self.name, error)
        self.on_change()

    # -- sending media ------------------------------------------------------------------------

    def TimerOnTimeout(self, timer: ITimer) -> None:
        if timer is self.dtls_timer:
            self.dtls.DtlsTimeout()
            return
        if self.closed is not None:
            return
        n = self.sent_payloads.__len__()
        if n < self.packets:
            self.send_rtp(n)
            if n % 10 == 9:
                self.send_stun()  # consent freshness, between the media
            self.media_timer.Start(PACE_MS)
        else:
            self.send_rtcp()
            self.on_change()

    def send_rtp(self, n: int) -> None:
        assert self.tx is not None and self.peer is not None
        payload = self.rnd.randbytes(PAYLOAD)
        packet = self.tx.Protect(rtp_header(self.seq, n * PAYLOAD, self.ssrc), payload)
        self.udp.SendTo(packet, None, self.peer[0], self.peer[1])
        if n == 1:  # an attacker's copies of the packet: the peer must drop both
            forged = bytearray(packet)
            forged[-1] ^= 0x01
            self.udp.SendTo(forged, None, self.peer[0], self.peer[1])
            self.udp.SendTo(packet, None, self.peer[0], self.peer[1])  # replayed
        self.sent_payloads.append(payload)
        self.seq = (self.seq + 1) & 0xFFFF

    def send_rtcp(self) -> None:
        assert self.tx is not None and self.peer is not None
        report = rtcp_sender_report(self.ssrc, self.packets, self.packets * PAYLOAD)
        self.udp.SendTo(self.tx.SrtcpProtect(report), None, self.peer[0], self.peer[1])
        self.sent_rtcp.append(report)

    def send_stun(self) -> None:
        assert self.peer is not None
        request = stun_binding_request(self.rnd)
        self.udp.SendTo(request, None, self.peer[0], self.peer[1])
        self.sent_stun.append(request)

    # -- checking -------------------------------------------------------------------------------

    def got_everything_from(self, peer: Endpoint) -> bool:
        first = (peer.seq - peer.packets) & 0xFFFF  # the peer's first sequence number
        wanted = {(first + i) & 0xFFFF: p for i, p in enumerate(peer.sent_payloads)}
        return (
            peer.sent_payloads.__len__() == peer.packets
            and self.got_payloads == wanted
            and self.got_rtcp == peer.sent_rtcp != []
            and self.got_stun == peer.sent_stun
            and self.rejected == 2
        )

    def close(self) -> None:
        self.dtls_timer.Cancel()
        self.media_timer.Cancel()
        self.deleted = True
        self.udp.Delete()


# --------------------------------------------------------------------------- the call


class Call(UTimer):
    """Sets the two endpoints up, exchanges their SDPs, and ends the call when both sides
    have everything (or the time limit is reached)."""

    def __init__(self, iomux: IIoMux, log: IInstanceLog, packets: int) -> None:
        self.iomux = iomux
        self.log = log
        self.timed_out = False
        self.finished = False
        self.limit = ITimer(iomux, self)
        self.limit.Start(TIME_LIMIT_MS)
        self.offerer = Endpoint("offerer", iomux, log, True, packets, 1, self.changed)
        self.answerer = Endpoint("answerer", iomux, log, False, packets, 2, self.changed)
        self.negotiated = False

    def changed(self) -> None:
        a, b = self.offerer, self.answerer
        if not self.negotiated and a.port and b.port:
            self.negotiated = True
            offer = a.local_sdp()
            answer = b.local_sdp()
            self.log.Log(LOG_APP, "offer:\n%s\nanswer:\n%s", offer, answer)
            a.remote_sdp(answer)  # the DTLS server first, so the first ClientHello finds it
            b.remote_sdp(offer)
            return
        if self.negotiated and b.closed is None and self.ok_media:
            b.dtls.DtlsClose()  # close_notify; the offerer hears it as DtlsConnectionClosed(0)
        if a.closed is not None and b.closed is not None and not self.finished:
            self.finish()

    @property
    def ok_media(self) -> bool:
        a, b = self.offerer, self.answerer
        return a.got_everything_from(b) and b.got_everything_from(a)

    def finish(self) -> None:
        self.finished = True
        self.limit.Cancel()
        self.offerer.close()
        self.answerer.close()
        self.iomux.Terminate()

    def TimerOnTimeout(self, timer: ITimer) -> None:
        self.log.Log(LOG_APP, "srtp_call: time limit reached")
        self.timed_out = True
        self.finish()

    @property
    def ok(self) -> bool:
        a, b = self.offerer, self.answerer
        return not self.timed_out and self.ok_media and a.closed == 0 and b.closed == 0

    def summary(self) -> str:
        lines = [f"srtp_call: profile {self.offerer.profile}"]
        for me, peer in ((self.offerer, self.answerer), (self.answerer, self.offerer)):
            lines.append(
                f"  {me.name}: {me.got_payloads.__len__()}/{peer.packets} RTP payloads, "
                f"{me.got_rtcp.__len__()} SRTCP report, {me.got_stun.__len__()} STUN untouched, "
                f"{me.rejected} forged/replayed dropped, DTLS closed {me.closed}"
            )
        lines.append("srtp_call: " + ("every payload arrived intact" if self.ok else "FAILED"))
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.srtp_call", description=__doc__)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("--packets", type=int, default=50, help="RTP packets each way (default 50)")
    p.add_argument("-v", "--verbose", action="store_true", help="also log the library")
    args = p.parse_args(argv)
    if args.packets < 2:
        p.error("--packets must be at least 2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = IInstanceLog(LOG_APP | (LOG_DTLS | LOG_UDP if args.verbose else 0))
    iomux = IIoMux.Create(uvloop=args.uvloop)
    errors: list[dict[str, Any]] = []  # an exception in a callback fails the run

    def on_error(loop: Any, context: dict[str, Any]) -> None:
        errors.append(context)
        loop.default_exception_handler(context)

    iomux.loop.set_exception_handler(on_error)
    call = Call(iomux, log, args.packets)
    try:
        iomux.Run()
        iomux.loop.run_until_complete(iomux.loop.shutdown_asyncgens())
    finally:
        iomux.Close()
    print(call.summary())
    if errors:
        print(f"srtp_call: {errors.__len__()} exception(s) in callbacks")
    return 0 if call.ok and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
