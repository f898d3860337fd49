"""`IMedia` / `UMedia`: the SDK's media endpoint (`common/interface/media.h`), audio.

Theory of operation
-------------------
One `IMedia` is one media stream on one UDP port. It owns:

- one library UDP socket (`CreateUDPSocketProvider`), bound in `minPort..maxPort`, with a
  few `Recv` buffers always posted. It is the stream's only port: every datagram of the
  stream (STUN, DTLS, SRTP, SRTCP) comes in and goes out on it, and its end, its reasons
  and `Close` are the stream's. Most datagrams take its `Recv`/`SendTo` path; the audio
  of the selected remote takes the socket's lane (below), which skips its per-datagram
  buffer work but nothing else of the socket;
- an ICE agent (`_ice.IceAgent`, sans-IO): it takes the STUN datagrams and the time, and
  gives the datagrams to send, the time it wants to be called again, and events (the pair
  selected, consent lost, ICE failed, a candidate gathered);
- an `IDtls` engine (sans-IO) once `Connect` was given a remote fingerprint, and the two
  `ISrtpSession`s its keys make (one protects what this side sends, one checks what it
  receives);
- the RTP/RTCP state of RFC 3550 (`_rtp`): this stream's SSRC and sequence numbers, the
  receive statistics of each remote SSRC, the RFC 4733 DTMF sender and receiver;
- its timers, every one an `ITimer` kept in a field and cancelled on every way out: the
  ICE agent's, the DTLS engine's, the RTCP report's, the statistics', the DTMF pacer's.

Who owns each datagram. The UDP socket hands each datagram the lane (below) does not
take to `_datagram` (the slow path), which tells them apart by the first byte (RFC 7983):
0..3 STUN goes to the ICE agent (which checks USERNAME, MESSAGE-INTEGRITY and
FINGERPRINT and keeps no state for a request that fails);
20..63 DTLS goes to the engine, but only from the selected pair's remote address (a few
that arrive before the pair is selected wait, bounded, for the selection: an ICE peer
may start its handshake as soon as its own checks succeed); 128..191 RTP/RTCP is taken
only from the selected remote address, SRTP-unprotected (failures and replays dropped
and counted), then told apart by the second byte (RFC 5761: 192..223 is RTCP). Anything
else, or from anywhere else, is dropped and counted (`counters`), and the first of each
kind is logged under `LOG_MEDIA`. The socket's `Recv` buffer is the stream's again as
soon as the datagram was handled: nothing of the peer's is kept but bounded queues
(payloads waiting for the app's `Recv`, `HOLD_PAYLOADS`; early DTLS, `EARLY_DTLS`).

Payloads go to the app in arrival order, one per `Recv`; `MediaRtpRecv` comes first
for each new SSRC. What this side sends goes to the selected remote address only; each
send of the socket is noted (RTP or not) so that its `SocketSendResult` becomes
`MediaRtpSendResult` for the app's packets only. An app that keeps `UMedia`'s no-op
`MediaRtpSendResult` gets a socket user without `SocketSendResult` (`_Glue`), so its
socket reports no sends at all; that is decided at `CreateMedia` and looked at again
before and after each callback but the per-packet ones (`_recheck_send_results`): a
`MediaRtpSendResult` the app sets later (on its instance or its class), or a mock's,
gets the result of each RTP packet sent from then on.

The per-packet paths: the lane. When the slow path (`_media_in`) has taken an RTP packet
of a connected stream from the selected remote (a plain 12-byte header, a payload type
that cannot read as RTCP, no `dropMediaRx`), it arms the lane for that source: it gives
the UDP socket `_lane` (`UDPSocket._set_media_lane`, internal to the library) and keeps
the source as the transport gave it, the SSRC, the payload type and that SSRC's
statistics. From then on the socket's `datagram_received` offers each datagram, the
transport's `bytes` and source as they came, to `_lane` first (not while datagrams wait
in the socket's hold: they come first), as an event of the socket's (the results of the
sends the app makes in it, its echo, come at its end, with no loop callback per packet).
`_lane` takes (returns True) only a packet from
that source with a plain 12-byte header, that SSRC and payload type, at most `_BUFFER`
bytes, while the app has a `Recv` posted and nothing is queued for it; it does in one
frame what the slow path does for such a packet: unprotect (libsrtp called through its
binding straight, `_srtp.direct`, in the one buffer all streams of the loop share,
`_srtp.area`; a failure is dropped and counted as on the slow path,
and the lane stays armed), the RFC 3550 statistics, the payload copied from libsrtp's
buffer into the oldest `Recv` (never more than the buffer holds now), the app's
`MediaRtpRecvResult` (run as the slow path runs it: not inside an app call, its
exception to the loop's handler). Whatever it does not take (another source, SSRC or
payload type, DTMF, RTCP, STUN, DTLS, a short or long datagram, a held payload, a
callback still queued) goes the socket's usual way to the slow path, with its checks and
counters. The lane is disarmed (`_disarm`, on both sides) by a new remote (`_select`),
new keys (`_srtp_keys`), a failure (`_fail`: ICE, DTLS, consent lost, the socket's
end), `Close` (before the socket's `Shutdown`, so nothing reaches the app after it) and
by each packet of the slow path (which arms it again when it may); once disarmed, every
datagram goes the slow path, and after `Close` or the socket's end nowhere.

`RtpSend` and `Recv` have fast paths of their own for the common case (a bytearray or
bytes on a connected stream, from the loop's thread); anything else takes the checked
path with its errors. `RtpSend`'s packs the header into that buffer, protects it
there and sends it through the socket's lane send (`UDPSocket._media_lane_send`: the
socket's `SendTo` for a `bytes` datagram to the sockaddr `_select` made once, with the
socket's end, queueing and send results as `SendTo` has them; a remote the socket's
family cannot reach keeps `SendTo`, which says why).

The life of a stream. `Initialize` binds the port (the next port of the range after an
address in use), adds the host candidates and asks each STUN server (a name is looked
up first) for the server-reflexive address; `MediaInitializeComplete` comes once every
server answered or gave up. `Connect` gives the agent its role and the remote's
candidates (or, without ICE credentials, fixes the plain peer's address); the first
`PairSelected` starts DTLS (this side's certificate, the remote's pinned by its
fingerprint), whose keys make the SRTP sessions; `MediaConnectResult(None)` comes when
DTLS is done (at once on the selected pair without a fingerprint), and with it the RTCP
and statistics timers start.

Callbacks. Every callback to the app goes through one queue (`_emit`): during a network
event (a datagram, a timer) it is run at the end of the event, once the stream's state is
consistent; during the app's own call it runs from the loop, never inside the call.

What ends the stream. Only `Close()`: it sends close_notify (when DTLS is up), stops the
ICE agent, cancels every timer and shuts the UDP socket; when the socket reports it
closed, `MediaCloseComplete` is the last callback. A failure (ICE, DTLS, consent lost)
is reported (`MediaConnectResult` with the reason, or `MediaEventReceived` with
`CHANNEL_MEDIA_ERROR`) and stops the media, but the app still calls `Close()`.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import ipaddress
import math
import random
import secrets
import socket
import struct
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from . import _ice
from . import _media_types as mt
from ._address import parse_address
from ._api import ISocket, ISocketContext, ISocketProvider, USocket
from ._base import as_view
from ._context import _make_self_signed
from ._dns import IDns, UDns
from ._idtls import DTLS_OPTION_NO_COOKIE, DTLS_OPTION_USE_SRTP, IDtls, UDtls
from ._iomux import ITimer, UTimer, call_user
from ._media_types import (
    CHANNEL_CANDIDATE_HOST,
    CHANNEL_CANDIDATE_PRFLX,
    CHANNEL_CANDIDATE_RELAY,
    CHANNEL_CANDIDATE_SRFLX,
    AudioCoder,
    Codec,
    EventMediaStatistics,
    IceCandidate,
    IceCandidates,
    MediaConfig,
    MediaType,
    SetupRole,
)
from ._providers import CreateTLSSocketProvider, CreateUDPSocketProvider
from ._rtp import (
    DtmfReceiver,
    ReceiverReport,
    RtpReceiveStats,
    RtpSendStats,
    Sdes,
    SenderReport,
    dtmf_packets,
    ntp_time,
    pack_report,
    pack_rtcp,
    parse_rtcp,
    round_trip,
)
from ._srtp import _BUFFER, _MAX_RTP, ISrtpSession, SrtpKeys, area, direct, srtp_error
from ._types import IPaddr, LogFlags, ShutdownReason, SocketModeError

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

LOG = LogFlags.LOG_MEDIA

HOLD_PAYLOADS = 64
"""Received payloads kept for an app with no pending `Recv`; beyond, the oldest is dropped."""
EARLY_DTLS = 8
"""DTLS datagrams kept while no ICE pair is selected yet (the peer's first flight)."""
RECV_BUFFERS = 4
"""`Recv` buffers kept posted on the UDP socket."""
MAX_DATAGRAM = 2048
"""The size of each of them: a longer datagram is no media of ours (truncated, dropped)."""
RTCP_INTERVAL = 5.0
"""Seconds between two RTCP reports: RFC 3550's minimum (6.2), which a two-party audio call
never exceeds by its bandwidth share, each randomized to 0.5..1.5 times (6.3.1); the first
report waits half as long (6.2: "the initial RTCP packet ... half the minimum")."""
STATISTICS_INTERVAL = 5.0
"""Seconds between two rounds of `EventMediaStatistics` (one for each direction)."""
CERT_RENEW_DAYS = 30
"""A provider's shared self-signed certificate (valid for a year) is renewed for the
streams that initialize after it is this many days old."""
DTMF_GAP_MS = 50
"""Milliseconds between the last packet of a digit and the first of the next."""
DTMF_END_MS = 300
"""A received digit whose end packets were all lost ends this long after its last packet."""
DTLS_RTO_INITIAL = 0.1
"""Seconds before a lost DTLS flight is first resent (`IDtls.DtlsConnect`'s `rtoInitial`):
short, as browsers resend after about 50 ms, not RFC 6347's 1 s; it doubles at each resend."""


class _State(enum.Enum):
    IDLE = "idle"
    INITIALIZING = "initializing"
    READY = "ready"  # MediaInitializeComplete given; Connect may come
    CONNECTING = "connecting"
    CONNECTED = "connected"  # MediaConnectResult(None) given
    FAILED = "failed"  # an initialize or connect failure was reported
    CLOSING = "closing"
    CLOSED = "closed"


_MOVES: dict[_State, frozenset[_State]] = {
    _State.IDLE: frozenset({_State.INITIALIZING, _State.CLOSING}),
    _State.INITIALIZING: frozenset({_State.READY, _State.FAILED, _State.CLOSING}),
    _State.READY: frozenset({_State.CONNECTING, _State.FAILED, _State.CLOSING}),
    _State.CONNECTING: frozenset({_State.CONNECTED, _State.FAILED, _State.CLOSING}),
    _State.CONNECTED: frozenset({_State.FAILED, _State.CLOSING}),
    _State.FAILED: frozenset({_State.CLOSING}),
    _State.CLOSING: frozenset({_State.CLOSED}),
    _State.CLOSED: frozenset(),
}
"""The legal moves of a stream; `IMedia._set_state` checks every move against it."""


class _S:
    """The states as plain class attributes, for the paths that run often: looking one up
    here is a dict hit, while an Enum class attribute costs a descriptor call (on Python
    3.11, `EnumType.__getattr__`), about ten times as long."""

    IDLE: Final = _State.IDLE
    INITIALIZING: Final = _State.INITIALIZING
    READY: Final = _State.READY
    CONNECTING: Final = _State.CONNECTING
    CONNECTED: Final = _State.CONNECTED
    FAILED: Final = _State.FAILED
    CLOSING: Final = _State.CLOSING
    CLOSED: Final = _State.CLOSED


_CONNECTED: Final = _State.CONNECTED
"""For the per-packet paths: a module global is a specialized dict hit on Python 3.11,
where an attribute of a class (`_S.CONNECTED`) takes the generic attribute lookup."""


class UMedia:
    """The app's side of an `IMedia`: override what it needs; every callback defaults to
    doing nothing. Each arrives on the loop, never inside the app's call that caused it."""

    def MediaInitializeComplete(self, media: IMedia, localMediaConfig: Any) -> None:
        """The port is open and the candidates gathered: `localMediaConfig` is this
        side's `MediaConfig` (for the offer or answer), or None when that failed."""

    def MediaConnectResult(self, media: IMedia, error: str | None) -> None:
        """None: media can flow. Else why not (ICE or DTLS failed)."""

    def MediaRtpSendResult(self, media: IMedia) -> None:
        """The packet of one `RtpSend` was handed to the kernel."""

    def MediaRtpRecvResult(
        self,
        media: IMedia,
        buf: Any,
        len: int,
        timestamp: int,
        sequenceNumberDiff: int,
        marker: bool,
    ) -> None:
        """One payload, in the buffer of the oldest pending `Recv`."""

    def MediaRtpRecv(self, media: IMedia, src_addr: str, src_port: int, ssrc: int, pt: int) -> None:
        """The first packet of a new SSRC arrived (before its payload's result)."""

    def MediaEventReceived(self, media: IMedia, event: Any, ctx: Any) -> None:
        """`CHANNEL_MEDIA_STATISTICS` with an `EventMediaStatistics`, or
        `CHANNEL_MEDIA_ERROR` with an `EventMediaError`."""

    def MediaRtpDtmfNearStart(self, digit: str) -> None:
        """A telephone-event from the peer begins."""

    def MediaRtpDtmfNear(self, digit: str) -> None:
        """... and ends (once, whatever the redundant end packets)."""

    def MediaCloseComplete(self, media: IMedia) -> None:
        """`Close` is done: the port is closed; nothing follows."""


class IMediaProvider:
    """Makes media streams (the SDK's `IMediaProvider`).

    Its streams that are given no `socketContext` share one self-signed DTLS certificate,
    made at the first stream's `Initialize` and renewed after `CERT_RENEW_DAYS`: making
    an EC key and a certificate per stream cost each stream's set-up CPU, and an OpenSSL
    context per certificate kept hundreds of KB per connected stream (one for each
    distinct certificate; equal ones share it). An app that wants a certificate per call
    makes a provider per call, or passes a `socketContext` of its own.
    """

    __slots__ = ("_cert", "_cert_at")

    def __init__(self) -> None:
        self._cert: bytes | None = None
        self._cert_at = 0.0

    def _certificate(self) -> bytes:
        """The key and certificate PEM this provider's streams present by default."""
        now = time.time()
        if self._cert is None or now - self._cert_at > CERT_RENEW_DAYS * 86400:
            self._cert = _make_self_signed().pem
            self._cert_at = now
        return self._cert

    def CreateMedia(self, iomux: IIoMux, user: UMedia, log: IInstanceLog) -> IMedia:
        """A new stream on `iomux` calling back `user`; call `Initialize` next.

        Raises:
            TypeError: `user` is no `UMedia` (it needs `MediaCloseComplete`).
        """
        if user is None or not callable(getattr(user, "MediaCloseComplete", None)):
            raise TypeError("CreateMedia needs a UMedia (the object that gets the callbacks)")
        iomux.on_loop("CreateMedia")
        return IMedia(iomux, user, log, self)

    def Delete(self) -> None:
        """The streams it made live on."""


def _overrides(user: Any, name: str) -> bool:
    """Does `user` have callback `name` of its own (not `UMedia`'s, which does nothing),
    however it has it: a method of its class (also one added later), a function set on
    the instance, a mock's attribute, a name `__getattr__` forwards? Looked up on the
    user itself, as the call would be."""
    try:
        fn = getattr(user, name)
    except Exception:  # AttributeError, or whatever a forwarding __getattr__ raises
        return False
    default = getattr(UMedia, name)
    return fn is not None and fn is not default and getattr(fn, "__func__", None) is not default


_CLOCKS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _clock_of(loop: Any) -> Any:
    """`loop.time`, for the per-packet paths: `time.monotonic` itself where the loop's
    `time` is asyncio's (which returns it: one Python call less), else the loop's own
    (uvloop's, or a loop that keeps a clock of its own, as a test's simulated one), one
    bound method for all the loop's streams (one object the CPU keeps at hand, not one
    per stream)."""
    if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    try:
        clock = _CLOCKS.get(loop)
        if clock is None:
            clock = _CLOCKS[loop] = loop.time
    except TypeError:  # a loop without weak references
        return loop.time
    return clock


def CreateMediaProvider() -> IMediaProvider:
    """The media provider (the SDK's `CreateMediaProvider`)."""
    return IMediaProvider()


class MediaCounters:
    """What the stream dropped, by kind (beyond the SDK: for monitoring and tests).

    Attributes:
        foreign: RTP/RTCP or DTLS from an address other than the selected remote.
        srtp_failed: SRTP packets that failed authentication or the replay check.
        srtcp_failed: the same for SRTCP.
        stun_rejected: STUN the ICE agent refused (bad integrity, unknown USERNAME, ...).
        not_media: datagrams that are none of STUN, DTLS, RTP, RTCP (or too short).
        early: RTP/RTCP before the keys were there, or DTLS before a pair was selected
            beyond `EARLY_DTLS`.
        held_dropped: payloads dropped because the app's `Recv`s fell behind.
        rtp_received: RTP packets accepted; rtcp_received: RTCP packets accepted.
        rtp_lost: packets of the current remote source lost so far (RFC 3550 A.3).
        peer_lost: packets of this stream the peer's last report says it lost.
        rtp_sent: RTP packets sent.
    """

    __slots__ = (
        "early",
        "foreign",
        "held_dropped",
        "not_media",
        "peer_lost",
        "rtcp_received",
        "rtp_lost",
        "rtp_received",
        "rtp_sent",
        "srtcp_failed",
        "srtp_failed",
        "stun_rejected",
    )

    def __init__(self) -> None:
        self.foreign = 0
        self.srtp_failed = 0
        self.srtcp_failed = 0
        self.stun_rejected = 0
        self.not_media = 0
        self.early = 0
        self.held_dropped = 0
        self.rtp_received = 0
        self.rtp_lost = 0
        self.peer_lost = 0
        self.rtcp_received = 0
        self.rtp_sent = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {k: getattr(self, k) for k in self.__slots__}


class _Glue(USocket, UDtls, UTimer):
    """The stream's private user of its socket, engine and timers (so that their
    callbacks are not public methods of `IMedia`).

    `SocketRecvFromResult`, the per-datagram callback, is the stream's own `_datagram`
    (a slot, set per instance: one call less for each datagram). `SocketSendResult` is
    a slot too, set (to `IMedia._sent`) only while the app has a `MediaRtpSendResult` of
    its own (`IMedia._recheck_send_results`): without it the socket reports no sends at
    all (the UDP socket skips the results of a user without the callback)."""

    __slots__ = ("SocketRecvFromResult", "SocketSendResult", "m")

    def __init__(self, m: IMedia) -> None:
        self.m = m
        self.SocketRecvFromResult = m._datagram  # type: ignore[method-assign,assignment]

    # the UDP socket
    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.m._bound(socket, localPort)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.m._socket_end(socket, reason)

    # the DTLS engine
    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        self.m._send_raw(buf, False)

    def DtlsTimerStart(self, ctx: Any, to: int) -> None:
        self.m._dtls_timer.Start(to)

    def DtlsTimerStop(self, ctx: Any) -> None:
        self.m._dtls_timer.Cancel()

    def DtlsSrtpKeys(self, ctx: Any, keys: bytes, profile: str) -> None:
        self.m._srtp_keys(keys, profile)

    def DtlsConnected(self, ctx: Any) -> None:
        self.m._dtls_connected()

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        self.m._dtls_closed(error)

    # the timers
    def TimerOnTimeout(self, timer: ITimer) -> None:
        self.m._timeout(timer)


class _StunLookup(UDns):
    """The lookup of one STUN server's name: the first address of the family of the
    stream's base goes to `IMedia._stun_resolved`, once."""

    __slots__ = ("done", "m", "name", "port", "v6")

    def __init__(self, m: IMedia, name: str, port: int) -> None:
        self.m = m
        self.name = name
        self.port = port
        self.v6 = ipaddress.ip_address(m._base_address()).version == 6
        self.done = False

    def DnsGetHostByNameResult(self, addr: str | None, isIPv6: bool) -> None:
        if self.done or (addr is not None and isIPv6 != self.v6):
            return
        self.done = True
        self.m._stun_resolved(self.name, addr, self.port)


def _fingerprint(text: str | None) -> tuple[str, bytes] | None:
    """("sha-256", digest) from SDP's "sha-256 AB:CD:..." (None for None)."""
    if not text:
        return None
    try:
        name, hexes = text.split(None, 1)
        digest = bytes.fromhex(hexes.replace(":", "").strip())
    except ValueError:
        raise ValueError(
            f"the remote fingerprint {text!r} is not as SDP writes it ('sha-256 AB:CD:...')"
        ) from None
    name = name.lower()
    want = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}.get(name)
    if want is None or len(digest) != want:
        raise ValueError(
            f"the remote fingerprint {text!r}: use sha-1/224/256/384/512 with its digest"
        )
    return name, digest


def host_addresses() -> list[str]:
    """The addresses of this host's interfaces (IPv4 and global IPv6), loopback last:
    the default `localAddresses`."""
    found: list[str] = []
    try:
        import fcntl

        for _, name in socket.if_nameindex():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    req = struct.pack("256s", name.encode()[:15])
                    res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
                except OSError:
                    continue
                found.append(socket.inet_ntoa(res[20:24]))
    except (ImportError, OSError):
        pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, _, _, scope = line.split()[:4]
                if scope == "00":  # global scope only: link-local needs a zone
                    found.append(str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))))
    except (OSError, ValueError):
        pass
    if not found:
        found = ["127.0.0.1"]
    uniq = list(dict.fromkeys(found))
    return sorted(uniq, key=lambda a: ipaddress.ip_address(a).is_loopback)


_RTP_HEADER = struct.Struct("!BBHII")
_pack_header = _RTP_HEADER.pack_into
_len = len
"""`len`, for the calls whose parameter `len` hides it (the interpreter's fast `len`
call, where `x.__len__()` goes through a slot wrapper)."""
_FAST_PAYLOAD = _MAX_RTP - 12
"""The largest payload `RtpSend`'s fast path sends: what `ISrtpSession.Protect` takes
(a longer one takes the slow path, which raises its ValueError)."""


class IMedia:
    """One media stream: one UDP port for STUN, DTLS, RTP and RTCP. Made by
    `IMediaProvider.CreateMedia`; see the module docstring and docs/media.md."""

    __slots__ = (
        "_agent",
        "_clock",
        "_closing_socket",
        "_connect_reported",
        "_counters",
        "_ctx",
        "_drop_rx",
        "_drop_tx",
        "_dtls",
        "_dtls_server",
        "_dtls_timer",
        "_dtmf_pt_rx",
        "_dtmf_rx_timer",
        "_dtmf_timer",
        "_early_dtls",
        "_fast_pt",
        "_fast_ssrc",
        "_fast_stats",
        "_flush_handle",
        "_flushing",
        "_gathering",
        "_glue",
        "_held",
        "_ice_at",
        "_ice_timer",
        "_in_event",
        "_iomux",
        "_lane_fn",
        "_lane_send",
        "_lane_sock",
        "_lane_src",
        "_local_addrs",
        "_local_config",
        "_log",
        "_logged",
        "_loop",
        "_no_host",
        "_out",
        "_port",
        "_ports",
        "_profile",
        "_provider",
        "_recvs",
        "_remote",
        "_remote_config",
        "_rng",
        "_rtcp_timer",
        "_rtp",
        "_rx",
        "_rx_direct",
        "_rx_unprotect",
        "_send_kinds",
        "_send_results",
        "_sending",
        "_sock",
        "_src_host",
        "_src_ip",
        "_srtp_errors",
        "_state",
        "_stats_timer",
        "_stun_servers",
        "_tx",
        "_tx_addr",
        "_tx_direct",
        "_tx_protect",
        "_udp_provider",
        "_user",
        "_want_dtls",
    )

    def __init__(
        self,
        iomux: IIoMux,
        user: UMedia,
        log: IInstanceLog,
        provider: IMediaProvider | None = None,
    ) -> None:
        self._iomux = iomux
        self._provider = provider
        self._loop = iomux.loop
        self._clock = _clock_of(self._loop)
        self._user = user
        self._log = log
        # an app that keeps UMedia's no-op MediaRtpSendResult is not called for each packet,
        # and its socket is asked for no send results (a glue without SocketSendResult);
        # decided here, looked at again before each callback (`_recheck_send_results`)
        self._glue = _Glue(self)
        self._send_results = False  # (set at the end of __init__)
        self._state = _S.IDLE
        self._rng = random.Random(secrets.randbits(64))
        self._counters = MediaCounters()
        self._logged: set[str] = set()
        self._out: collections.deque[tuple[str, tuple[Any, ...]]] = collections.deque()
        self._flush_handle: Any = None
        self._flushing = False
        self._in_event = False
        self._sock: ISocket | None = None
        self._closing_socket: ISocket | None = None
        self._udp_provider: ISocketProvider | None = None
        self._ports: list[int] = []
        self._port = 0
        self._local_addrs: list[str] = []
        self._stun_servers: list[str] = []
        self._no_host = False
        self._drop_tx = 0  # percent of RTP dropped on the way out (the SDK's test aid)
        self._drop_rx = 0  # ... and on the way in
        self._gathering = 0  # STUN servers (and lookups) not done yet
        self._ctx: ISocketContext | None = None
        self._local_config: Any = None
        self._remote_config: Any = None
        self._agent: Any = None
        self._dtls: IDtls | None = None
        self._dtls_server = False
        self._want_dtls: tuple[str, bytes] | None = None
        self._early_dtls: list[tuple[bytes, tuple[str, int]]] = []
        self._remote: tuple[str, int] | None = None
        self._tx: Any = None
        self._profile: str | None = None
        self._rx: Any = None
        # the libsrtp calls of the per-packet paths, straight (see `_srtp_keys`)
        self._tx_protect: Any = None
        self._rx_unprotect: Any = None
        self._srtp_errors: tuple[type[Exception], ...] = (ValueError,)
        # ... or, where pylibsrtp allows, written out (`_srtp.direct`): (call, context,
        # buffer, view, length, payload, memmove, owner) of each direction, in the
        # buffer all streams of the loop share (`_srtp.area`)
        self._tx_direct: Any = None
        self._rx_direct: Any = None
        # the lane (`_lane`), armed by `_media_in` on the socket (`_lane_sock`): the
        # selected remote as the transport gives its datagrams' source (`_lane_src`;
        # None: not armed), the SSRC and payload type of its audio, that SSRC's
        # statistics. `_lane_fn` is the bound `_lane`, made once
        self._lane_fn = self._lane
        self._lane_sock: Any = None
        self._lane_src: Any = None
        self._fast_ssrc = -1
        self._fast_pt = -1
        self._fast_stats: Any = None
        # the way out of `RtpSend`: the socket's lane send (`_media_lane_send`) and the
        # selected remote as the socket's sockaddr (None: through `ISocket.SendTo`)
        self._lane_send: Any = None
        self._tx_addr: Any = None
        self._sending = False
        self._connect_reported = False
        self._send_kinds: collections.deque[bool] = collections.deque()
        self._src_ip: Any = None  # the last datagram's source, and its str()
        self._src_host = ""
        # the app's pending `Recv`s: (buffer, what a payload is written into, its `len`);
        # a bytearray is written into itself (a slice of the same length: no resize, and
        # no view that would keep the app from resizing it in its callback)
        self._recvs: collections.deque[tuple[Any, Any, int]] = collections.deque()
        self._held: collections.deque[tuple[bytes, int, int, bool]] = collections.deque(
            maxlen=HOLD_PAYLOADS
        )
        self._dtmf_pt_rx: set[int] = set()
        self._rtp: Any = None  # the RTP/RTCP state, made at Connect
        self._ice_at: float | None = None
        self._ice_timer = ITimer(iomux, self._glue)
        self._dtls_timer = ITimer(iomux, self._glue)
        self._rtcp_timer = ITimer(iomux, self._glue)
        self._stats_timer = ITimer(iomux, self._glue)
        self._dtmf_timer = ITimer(iomux, self._glue)
        self._dtmf_rx_timer = ITimer(iomux, self._glue)
        self._recheck_send_results()

    def __repr__(self) -> str:
        return f"<IMedia {id(self):x} {self._state.value} port {self._port}>"

    # ------------------------------------------------------------------ state, log, callbacks

    def _set_state(self, new: _State) -> None:
        old = self._state
        if new not in _MOVES[old]:
            raise SocketModeError(f"IMedia: {old.value} -> {new.value} is not a legal move")
        self._state = new
        self._log.Log(LOG, "media %x: %s -> %s", id(self), old.value, new.value)

    def _once(self, key: str, fmt: str, *args: Any) -> None:
        """Log `fmt` the first time `key` happens on this stream (drops are counted)."""
        if key not in self._logged:
            self._logged.add(key)
            self._log.Log(LOG, "media %x: " + fmt + " (logged once, counted)", id(self), *args)

    def _check(self, call: str) -> None:
        self._iomux.on_loop(f"IMedia.{call}")
        if self._state is _S.CLOSING or self._state is _S.CLOSED:
            raise SocketModeError(f"IMedia.{call} after Close: make a new IMedia")

    def _emit(self, name: str, *args: Any) -> None:
        """Queue one callback to the app: run at the end of the current network event,
        or from the loop when the app's own call queued it."""
        self._out.append((name, args))
        if self._in_event or self._flushing:
            return
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._flushing:
            return
        self._flushing = True
        try:
            out = self._out
            while out:
                name, args = out.popleft()
                st = self._state
                if st is _S.CLOSED and name != "MediaCloseComplete":
                    continue
                if st is _S.CLOSING:
                    continue
                per_packet = name == "MediaRtpRecvResult" or name == "MediaRtpSendResult"
                if not self._send_results and not per_packet:
                    self._recheck_send_results()
                fn = getattr(self._user, name)
                if name.startswith("MediaRtpDtmf"):
                    call_user(self._loop, fn, *args)
                else:
                    call_user(self._loop, fn, self, *args)
                if not self._send_results and not per_packet:
                    self._recheck_send_results()
        finally:
            self._flushing = False

    def _recheck_send_results(self) -> None:
        """Look (again) whether the app has a `MediaRtpSendResult` of its own
        (`_overrides`): at `CreateMedia`, and before and after each callback but the
        per-packet ones (`_flush`), so that one the app sets later, on the instance or
        the class, counts from then on. Once it has one, the glue gets the socket's
        `SocketSendResult` and the socket is told (`_recheck_send`): each RTP packet
        sent from then on gets its `MediaRtpSendResult`."""
        if self._send_results or not _overrides(self._user, "MediaRtpSendResult"):
            return
        self._send_results = True
        self._glue.SocketSendResult = self._sent  # type: ignore[method-assign,assignment]
        recheck = getattr(self._sock, "_recheck_send", None)
        if recheck is not None:
            recheck()

    def _event_end(self) -> None:
        self._in_event = False
        if self._out and not self._flushing:
            self._flush()

    # ------------------------------------------------------------------ Initialize

    def Initialize(
        self,
        udpSocketProvider: ISocketProvider | None,
        tcpSocketProvider: ISocketProvider | None,
        socketContext: ISocketContext | None,
        minPort: int,
        maxPort: int,
        stunServers: Sequence[str] | None = None,
        turnServers: Sequence[str] | None = None,
        turnUsername: str | None = None,
        turnPassword: str | None = None,
        media: MediaType = MediaType.AUDIO,
        stunSlow: bool = False,
        turnOnly: bool = False,
        iceNoHost: bool = False,
        dropMediaTx: int = 0,
        dropMediaRx: int = 0,
        hostPbx: str | None = None,
        noVpnAddresses: bool = False,
        *,
        localAddresses: Sequence[str] | None = None,
    ) -> None:
        """Open the port, gather the candidates, make this side's certificate.

        Leads to `MediaInitializeComplete(media, localMediaConfig)`: this side's
        `MediaConfig` (ICE credentials, candidates, fingerprint, codecs), or None when no
        port in `minPort..maxPort` could be bound (detail under `LOG_MEDIA`).

        Args:
            udpSocketProvider: the UDP provider for the port (None: a new one).
            tcpSocketProvider: for TURN over TCP: unused in this version.
            socketContext: holds this side's DTLS certificate; None: the self-signed
                one of this stream's `IMediaProvider`, shared by its streams.
            minPort: the lowest port to bind (with `maxPort` 0: any port).
            maxPort: the highest port to bind.
            stunServers: "host:port" of STUN servers for server-reflexive candidates.
            turnServers: must be empty: TURN is not in this version.
            turnUsername: for TURN: unused.
            turnPassword: for TURN: unused.
            media: `MediaType.AUDIO` (the default).
            stunSlow: accepted for the SDK's signature.
            turnOnly: must be False (TURN is not in this version).
            iceNoHost: offer no host candidates (only server-reflexive ones).
            dropMediaTx: drop this percentage of outgoing RTP (a test aid of the SDK's).
            dropMediaRx: drop this percentage of incoming RTP.
            hostPbx: accepted for the SDK's signature.
            noVpnAddresses: accepted for the SDK's signature.
            localAddresses: the host candidates' addresses (beyond the SDK); None: the
                addresses of the host's interfaces.

        Raises:
            NotImplementedError: `turnServers` given or `turnOnly` set.
            ValueError: a port range or address that cannot be.
            SocketModeError: called twice, or after `Close`.
        """
        self._check("Initialize")
        if turnServers or turnOnly:
            raise NotImplementedError(
                "TURN is not in this version of IMedia: pass turnServers=None and turnOnly=False "
                "(host and STUN server-reflexive candidates work)"
            )
        if self._state is not _S.IDLE:
            raise SocketModeError("IMedia.Initialize twice: make a new IMedia per stream")
        if media != MediaType.AUDIO:
            raise ValueError("this version of IMedia does audio only: media=MediaType.AUDIO")
        if not (0 <= minPort <= 65535 and 0 <= maxPort <= 65535) or (maxPort and minPort > maxPort):
            raise ValueError(f"port range {minPort}..{maxPort}: give 0..65535 with min <= max")
        addrs = list(localAddresses) if localAddresses is not None else host_addresses()
        for a in addrs:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"localAddresses: {a!r} is no IP address literal") from None
        if not addrs:
            raise ValueError("localAddresses is empty: give at least one address")
        if udpSocketProvider is None:
            udpSocketProvider = CreateUDPSocketProvider()
        self._udp_provider = udpSocketProvider
        self._local_addrs = addrs
        self._stun_servers = list(stunServers or [])
        self._no_host = bool(iceNoHost)
        self._drop_tx = max(0, min(100, int(dropMediaTx)))
        self._drop_rx = max(0, min(100, int(dropMediaRx)))
        if socketContext is None:
            socketContext = CreateTLSSocketProvider(None).CreateSocketContext(self._log)
            provider = self._provider
            socketContext.SetServerCertificate(
                provider._certificate() if provider is not None else _make_self_signed().pem
            )
        self._ctx = socketContext
        if minPort == 0 and maxPort == 0:
            self._ports = [0]
        else:
            hi = maxPort or minPort
            span = list(range(max(1, minPort), hi + 1))
            start = self._rng.randrange(len(span))
            self._ports = span[start:] + span[:start]
        self._set_state(_S.INITIALIZING)
        self._open_next()

    def _bind_host(self) -> tuple[str, bool]:
        """The address to bind and whether the socket is IPv6."""
        addrs = self._local_addrs
        v6 = any(ipaddress.ip_address(a).version == 6 for a in addrs)
        if len(addrs) == 1:
            return addrs[0], v6
        return ("::" if v6 else "0.0.0.0"), v6

    def _open_next(self) -> None:
        """Bind a new socket to the next port of the range (or fail Initialize)."""
        if not self._ports:
            self._log.Log(LOG, "media %x: no port of the range could be bound", id(self))
            self._set_state(_S.FAILED)
            self._emit("MediaInitializeComplete", None)
            return
        port = self._ports.pop(0)
        host, v6 = self._bind_host()
        assert self._udp_provider is not None
        sock = self._udp_provider.CreateSocket(self._iomux, self._glue, self._log, v6)
        self._sock = sock
        sock.Bind(host, port)

    def _bound(self, sock: ISocket, port: int) -> None:
        if sock is not self._sock or self._state is not _S.INITIALIZING:
            return
        self._in_event = True
        try:
            self._port = port
            self._log.Log(LOG, "media %x: port %d open", id(self), port)
            # the library's UDP socket's lane send, as its class's function (one object
            # for all streams; `RtpSend` passes the socket)
            self._lane_send = getattr(type(sock), "_media_lane_send", None)
            for _ in range(RECV_BUFFERS):
                sock.Recv(bytearray(MAX_DATAGRAM))
            self._start_ice()
        finally:
            self._event_end()

    def _socket_end(self, sock: ISocket, reason: ShutdownReason) -> None:
        self._in_event = True
        try:
            if sock is self._closing_socket:
                self._closing_socket = None
                self._finish_close()
                return
            if sock is not self._sock:
                return
            if self._state is _S.INITIALIZING and self._port == 0:
                self._log.Log(
                    LOG, "media %x: binding failed: %s", id(self), ShutdownReason(reason).name
                )
                sock.Delete()
                self._sock = None
                self._open_next()
                return
            # the port is gone under a live stream (the transport was lost)
            self._log.Log(LOG, "media %x: the UDP socket ended: %s", id(self), reason.name)
            self._disarm()
            self._sock = None
            self._lane_send = None
            self._tx_addr = None
            self._send_kinds.clear()
            self._stop_media("the UDP socket ended: " + reason.name)
        finally:
            self._event_end()

    # ------------------------------------------------------------------ ICE

    def _start_ice(self) -> None:
        """The port is open: make the ICE agent, its host candidates, and ask the STUN
        servers for server-reflexive ones; `_gathered` completes Initialize."""

        agent = _ice.IceAgent(True, rng=self._rng)  # the role is the app's word at Connect
        self._agent = agent
        self._ice_at = None
        if not self._no_host:
            for a in self._local_addrs:
                agent.add_host_candidate(a, self._port)
        self._gathering = 0
        base = (self._base_address(), self._port)
        now = self._loop.time()
        for server in self._stun_servers:
            target = self._stun_target(server)  # None: skipped, or looked up first
            if target is None:
                continue
            self._gathering += 1
            agent.gather_srflx(target, base, now)
        self._pump_ice()
        self._gathered()

    def _base_address(self) -> str:
        for a in self._local_addrs:
            if ipaddress.ip_address(a).version == 4:
                return a
        return self._local_addrs[0]

    def _stun_target(self, server: str) -> tuple[str, int] | None:
        """("ip", port) of a "host:port" STUN server; a name is looked up (`IDns`), and
        its gather starts when the address is known (None is returned then)."""

        try:
            addr = parse_address(server)
        except ValueError:
            self._log.Log(
                LOG, "media %x: STUN server %r skipped: give 'host:port'", id(self), server
            )
            return None
        try:
            ipaddress.ip_address(addr.host)
        except ValueError:
            self._gathering += 1
            lookup = _StunLookup(self, addr.host, addr.port)
            IDns.Create(self._iomux).GetHostByName(addr.host, lookup, self._log, all=True)
            return None
        return addr.host, addr.port

    def _stun_resolved(self, name: str, ip: str | None, port: int) -> None:
        """A STUN server's name was looked up (`ip` None: not found in time)."""
        if self._state is not _S.INITIALIZING or self._agent is None:
            return
        self._in_event = True
        try:
            if ip is None:
                self._log.Log(LOG, "media %x: STUN server %s: no address", id(self), name)
                self._gathering -= 1
                self._gathered()
                return
            self._agent.gather_srflx(
                (ip, port), (self._base_address(), self._port), self._loop.time()
            )
            self._pump_ice()
        finally:
            self._event_end()

    def _gathered(self) -> None:
        """Initialize is complete once every STUN server answered or gave up."""
        if self._state is not _S.INITIALIZING or self._gathering > 0:
            return
        self._local_config = self._make_local_config()
        self._set_state(_S.READY)
        self._emit("MediaInitializeComplete", self._local_config)

    def _make_local_config(self) -> Any:
        assert self._ctx is not None
        fp = self._ctx.GetCertificateFingerprint()
        cands = [_to_sdk(c) for c in self._agent.local_candidates]
        default = cands[0] if cands else None
        return MediaConfig(
            type=MediaType.AUDIO,
            defAddr=default.addr if default is not None else self._base_address(),
            defPort=default.rtpPort if default is not None else self._port,
            ice=IceCandidates(
                fingerprint="sha-256 " + fp.hex(":").upper(),
                iceUfrag=self._agent.local_ufrag,
                icePwd=self._agent.local_pwd,
                rtcpMux=True,
                candidateList=cands,
            ),
            codecList=[
                Codec(AudioCoder.G711_U, 0, 0, 8000),
                Codec(AudioCoder.G711_A, 1, 8, 8000),
                Codec(AudioCoder.DTMF, 2, 101, 8000),
            ],
        )

    def _pump_ice(self) -> None:
        """Send what the agent wants sent, handle its events, rearm its timer."""
        agent = self._agent
        if agent is None:
            return
        now = self._loop.time()
        for data, addr in agent.datagrams_to_send(now):
            self._send_to(data, addr[0], addr[1], False)
        while (ev := agent.next_event()) is not None:
            self._ice_event(ev)
            if self._agent is None:
                return
        at = agent.get_timer()
        if at is None:
            if self._ice_at is not None:
                self._ice_at = None
                self._ice_timer.Cancel()
        elif at != self._ice_at:
            self._ice_at = at
            self._ice_timer.Start(max(0, math.ceil((at - now) * 1000)))

    def _ice_event(self, ev: Any) -> None:
        if isinstance(ev, _ice.CandidateGathered):
            self._log.Log(LOG, "media %x: candidate %s", id(self), ev.candidate)
            self._gathering -= 1
            self._gathered()
        elif isinstance(ev, _ice.GatherFailed):
            self._log.Log(LOG, "media %x: STUN server %s: %s", id(self), ev.server, ev.reason)
            self._gathering -= 1
            self._gathered()
        elif isinstance(ev, _ice.PairSelected):
            self._select(_addr_of(ev.remote))
        elif isinstance(ev, _ice.IceFailed):
            self._fail("ICE failed: " + str(ev.reason), "FAULT_CODE_RTP_ICE_FAILED", "ice")
        elif isinstance(ev, _ice.ConsentLost):
            self._fail(
                f"ICE consent lost ({ev.remote}): sending stopped",
                "FAULT_CODE_RTP_ICE_FAILED",
                "ice",
            )
        elif isinstance(ev, _ice.RoleChanged):
            self._log.Log(
                LOG,
                "media %x: ICE role conflict: now %s",
                id(self),
                "controlling" if ev.controlling else "controlled",
            )

    # ------------------------------------------------------------------ Connect

    def Connect(self, remoteMediaConfig: Any, iceRemoteRole: bool, remoteDtlsRole: Any) -> None:
        """Connect to the remote side described by `remoteMediaConfig`.

        With ICE credentials in it, ICE runs with its candidates (`iceRemoteRole` True:
        the remote controls; False: this side does, as toward an ice-lite remote);
        without, the remote is a plain RTP peer at `defAddr:defPort`. With a fingerprint,
        DTLS-SRTP follows on the selected pair, pinned to it: `remoteDtlsRole`
        `SETUP_ROLE_ACTIVE` makes this side the DTLS server, `PASSIVE` and `ACTPASS` the
        client. Without one, RTP is plain.

        Leads to `MediaConnectResult(media, None)` once media can flow, or with the
        reason it cannot (also reported as `CHANNEL_MEDIA_ERROR`).

        Raises:
            SocketModeError: before `MediaInitializeComplete` gave a config, twice, or
                after `Close`.
            ValueError: a config with no codec to send, or a fingerprint SDP would not
                write.
        """
        self._check("Connect")
        if self._state is not _S.READY:
            raise SocketModeError(
                f"IMedia.Connect on a stream that is {self._state.value}: connect once, "
                "after MediaInitializeComplete gave a config"
            )
        cfg = remoteMediaConfig
        send = [c for c in cfg.codecList if c.coder not in (AudioCoder.DTMF, AudioCoder.CN)]
        if not send:
            raise ValueError("the remote config has no codec to send with (codecList)")
        ice = cfg.ice
        fp = _fingerprint(ice.fingerprint if ice is not None else None)
        use_ice = ice is not None and bool(ice.iceUfrag) and bool(ice.icePwd)
        plain: tuple[str, int] | None = None
        if not use_ice:
            try:
                plain = (str(ipaddress.ip_address(cfg.defAddr)), int(cfg.defPort))
            except ValueError:
                raise ValueError(
                    f"the plain RTP peer's defAddr {cfg.defAddr!r} is no IP address literal"
                ) from None
            if not 0 < plain[1] < 65536:
                raise ValueError(f"the plain RTP peer's defPort {cfg.defPort} is not 1..65535")
        self._remote_config = cfg
        self._dtmf_pt_rx = {c.pt for c in cfg.codecList if c.coder == AudioCoder.DTMF}
        if self._local_config is not None:
            self._dtmf_pt_rx |= {
                c.pt for c in self._local_config.codecList if c.coder == AudioCoder.DTMF
            }
        self._rtp = _RtpState(self._rng, send[0].pt, send[0].rate)
        if fp is not None:
            self._want_dtls = fp
            self._dtls_server = SetupRole(remoteDtlsRole) == SetupRole.SETUP_ROLE_ACTIVE
        self._set_state(_S.CONNECTING)
        agent = self._agent
        if use_ice:
            assert ice is not None
            controlling = not iceRemoteRole
            self._log.Log(
                LOG,
                "media %x: connect: ICE as %s, %d remote candidates%s",
                id(self),
                "controlling" if controlling else "controlled",
                len(ice.candidateList),
                ", DTLS as " + ("server" if self._dtls_server else "client") if fp else "",
            )
            agent.set_role(controlling)
            agent.set_remote(
                ice.iceUfrag,
                ice.icePwd,
                [_from_sdk(c) for c in ice.candidateList],
                now=self._loop.time(),
            )
            self._pump_ice()
        else:
            self._log.Log(
                LOG, "media %x: connect: plain peer %s:%d", id(self), cfg.defAddr, cfg.defPort
            )
            if agent is not None:
                agent.close()
                self._agent = None
                self._ice_timer.Cancel()
            assert plain is not None
            self._select(plain)

    def _select(self, remote: tuple[str, int]) -> None:
        """The pair to send on is chosen (or changed)."""
        if self._state is not _S.CONNECTING and self._state is not _S.CONNECTED:
            return
        first = self._remote is None
        self._remote = remote
        self._disarm()  # the lane is armed again by the new remote's first packet
        self._tx_addr = None
        sock = self._sock
        if self._lane_send is not None and sock is not None:
            try:
                self._tx_addr = sock._dest(remote[0], remote[1])  # type: ignore[attr-defined]
            except ValueError:  # an address of the wrong family: `_send_to` says why
                pass
        self._log.Log(LOG, "media %x: sending to %s:%d", id(self), remote[0], remote[1])
        if not first:
            return
        fp = self._want_dtls
        if fp is None:
            self._connected()
            return
        dtls = IDtls.Create(self._glue, self, self._log)
        self._dtls = dtls
        opts = DTLS_OPTION_USE_SRTP | (DTLS_OPTION_NO_COOKIE if self._dtls_server else 0)
        # the digest's length names its hash (sha-1/224/256/384/512, as _fingerprint checked)
        dtls.DtlsConnect(
            self._dtls_server,
            opts,
            remote[0],
            self._ctx,
            fp[1],
            rtoInitial=DTLS_RTO_INITIAL,
        )
        early, self._early_dtls = self._early_dtls, []
        for data, src in early:
            if src == remote and self._dtls is dtls:
                dtls.DtlsRecv(data, None, src[0], src[1])
            else:
                self._counters.foreign += 1

    def _srtp_keys(self, keys: bytes, profile: str) -> None:
        self._profile = profile
        lk, ls, rk, rs = SrtpKeys(keys, profile, self._dtls_server)
        self._tx = ISrtpSession.Create(lk, ls, profile)
        self._rx = ISrtpSession.Create(rk, rs, profile)
        self._disarm()
        # the per-packet paths call libsrtp straight, written out where pylibsrtp allows
        # (`direct`), else through its methods: what they raise is libsrtp's error (or
        # ValueError for a packet longer than its buffer), as `ISrtpSession` catches
        self._tx_protect = self._tx._outbound().protect
        self._rx_unprotect = self._rx._inbound().unprotect
        self._srtp_errors = (self._rx._error, ValueError)
        shared = area(self._loop)  # one buffer for the loop's streams (`_srtp.area`)
        self._tx_direct = direct(self._tx, True, shared) if shared is not None else None
        self._rx_direct = direct(self._rx, False, shared) if shared is not None else None
        self._log.Log(LOG, "media %x: DTLS-SRTP %s", id(self), profile)

    def _dtls_connected(self) -> None:
        if self._tx is None:
            self._fail("DTLS agreed no SRTP profile", "FAULT_CODE_RTP_DTLS_SRTP_FAILED", "dtls")
            return
        self._connected()

    def _dtls_closed(self, error: int) -> None:
        if self._state is _S.CLOSING or self._state is _S.CLOSED:
            return
        self._dtls_timer.Cancel()
        if error:
            self._fail(
                f"DTLS failed: {ShutdownReason(error).name} (detail under LOG_DTLS)",
                "FAULT_CODE_RTP_DTLS_SRTP_FAILED",
                "dtls",
            )
        else:
            self._log.Log(LOG, "media %x: the peer closed DTLS (close_notify)", id(self))
            self._sending = False

    def _connected(self) -> None:
        if self._state is not _S.CONNECTING:
            return
        self._set_state(_S.CONNECTED)
        self._sending = True
        self._connect_reported = True
        self._emit("MediaConnectResult", None)
        self._rtcp_timer.Start(self._rtcp_delay(first=True))
        self._stats_timer.Start(int(STATISTICS_INTERVAL * 1000))

    def _fail(self, text: str, code: str, src: str) -> None:
        """ICE or DTLS failed, or consent was lost: stop the media and say why."""

        st = self._state
        if st is _S.CLOSING or st is _S.CLOSED or st is _S.FAILED:
            return
        self._log.Log(LOG, "media %x: %s", id(self), text)
        self._sending = False
        self._disarm()
        if st is _S.CONNECTING:
            self._set_state(_S.FAILED)
            self._emit("MediaConnectResult", text)
        elif st is _S.INITIALIZING:
            self._set_state(_S.FAILED)
            self._emit("MediaInitializeComplete", None)
        else:
            self._set_state(_S.FAILED)
        self._emit(
            "MediaEventReceived",
            mt.CHANNEL_MEDIA_ERROR,
            mt.EventMediaError(getattr(mt, code), text, src),
        )
        dtls = self._dtls
        if dtls is not None and self._tx is None and src != "dtls":
            dtls.DtlsAbortConnect()  # a handshake under way stops (an established one: Close)
            self._dtls_timer.Cancel()
        self._rtcp_timer.Cancel()
        self._stats_timer.Cancel()
        self._dtmf_timer.Cancel()
        self._dtmf_rx_timer.Cancel()

    def _stop_media(self, text: str) -> None:
        self._fail(text, "FAULT_CODE_RTP_NO_MEDIA_DATA", "udp")

    # ------------------------------------------------------------------ the datagrams

    def _send_to(self, data: bytes, host: str, port: int, rtp: bool) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.SendTo(data, None, host, port)
        except ValueError as e:  # an address of the wrong family (a peer's candidate)
            self._once("sendto", "not sent to %s:%d: %s", host, port, e)
            return
        if self._send_results:  # else the socket reports no sends (`_Glue`)
            self._send_kinds.append(rtp)

    def _send_raw(self, data: bytes, rtp: bool) -> None:
        remote = self._remote
        if remote is not None:
            self._send_to(data, remote[0], remote[1], rtp)

    def _sent(self, sock: ISocket) -> None:
        if sock is not self._sock or not self._send_kinds:
            return
        if self._send_kinds.popleft():
            # the socket's result is a network event of its own (from the loop, never
            # inside the app's call): the app hears at its end, with no deferral more
            self._out.append(("MediaRtpSendResult", ()))
            if not self._in_event and not self._flushing:
                self._flush()

    def _lane(self, data: bytes, addr: Any) -> bool:
        """The socket's lane (`UDPSocket._set_media_lane`), armed by `_media_in`: it sees
        each datagram first, the transport's `bytes` and source, and takes (True) an RTP
        packet of the audio the stream already takes: from the selected remote (the
        source that armed it, compared as the transport gives it), a 12-byte header
        (version 2, no padding, extension or CSRC), the known SSRC and payload type, at
        most `_BUFFER` bytes, with a `Recv` posted and nothing queued for the app. It
        does what `_datagram`, `_demux` and `_media_in` do for such a packet, in this one
        frame, with no `Recv` buffer of the socket's: unprotect (a failure is dropped and
        counted as there), count it in its source's statistics, copy the payload into
        the oldest `Recv`, call the app. Everything else (another address, SSRC or
        payload type, DTMF, RTCP, STUN, DTLS, a held payload, a callback still queued)
        goes the socket's usual way (False) to the slow path."""
        if (
            addr == self._lane_src
            and self._recvs
            and not self._held
            and not self._out
            and not self._flushing
        ):
            n = len(data)
            if 12 <= n <= _BUFFER:
                b0, b1, seq, ts, ssrc = _RTP_HEADER.unpack_from(data)
            else:
                b0 = b1 = seq = ts = ssrc = -1
            if b0 == 0x80 and ssrc == self._fast_ssrc and b1 & 0x7F == self._fast_pt:
                rx = self._rx_direct
                if rx is not None:  # libsrtp's unprotect, written out (`_srtp.direct`)
                    call, ctx, cbuf, view, cell, at12, memmove, _ = rx
                    view[0:n] = data
                    cell[0] = n
                    if call(ctx, cbuf, cell):
                        self._lane_failed()
                        return True
                    k = cell[0] - 12
                    pkt = None  # the packet stays in libsrtp's buffer
                elif self._rx_unprotect is not None:
                    try:
                        pkt = self._rx_unprotect(data)
                    except self._srtp_errors:
                        self._lane_failed()
                        return True
                    k = len(pkt) - 12
                else:  # plain RTP
                    pkt = data
                    k = n - 12
                self._counters.rtp_received += 1
                clock = self._clock  # (a callable in a slot: called from a local, as a
                now = clock()  # method call of a slot takes the generic lookup on 3.11)
                self._fast_stats.update(seq, ts, now)
                rtp = self._rtp
                last = rtp.last_seq
                rtp.last_seq = seq
                diff = 1 if last is None else ((seq - last + 0x8000) & 0xFFFF) - 0x8000
                rbuf, mv, want = self._recvs.popleft()
                if k > want:
                    self._once("trunc", "payload of %d bytes truncated to %d", k, want)
                    k = want
                if pkt is None:  # from libsrtp's buffer straight into the app's
                    if k > len(mv):  # a bytearray the app shrank since its Recv
                        self._once("trunc", "payload of %d bytes truncated to %d", k, len(mv))
                        k = len(mv)
                    memmove(mv, at12, k)  # checked: k <= len(mv), 12 + k <= the buffer
                else:
                    mv[:k] = pkt[12 : 12 + k]
                self._flushing = True
                try:
                    self._user.MediaRtpRecvResult(self, rbuf, k, ts, diff, b1 > 127)
                except Exception as e:  # as `call_user`: the loop's exception handler
                    fn = getattr(self._user, "MediaRtpRecvResult", None)
                    self._loop.call_exception_handler(
                        {
                            "message": f"exception in callback {getattr(fn, '__qualname__', fn)}",
                            "exception": e,
                        }
                    )
                finally:
                    self._flushing = False
                if self._out:
                    self._flush()
                return True
        return False

    def _lane_failed(self) -> None:
        """The lane's packet failed SRTP: dropped and counted, as `_media_in` does."""
        self._in_event = True
        try:
            remote = self._remote
            assert remote is not None
            self._srtp_failed(remote[0], remote[1])
        finally:
            self._event_end()

    def _datagram(self, sock: ISocket, buf: Any, n: int, src: IPaddr, port: int) -> None:
        """The socket's `SocketRecvFromResult` (the glue's slot: called straight) for
        what the lane (`_lane`) did not take: the slow path (`_demux`)."""
        if sock is not self._sock:
            return
        self._in_event = True
        try:
            if 0 < n < MAX_DATAGRAM:
                if src is not self._src_ip:  # one object per address (`ip_of`): one str()
                    self._src_ip = src
                    self._src_host = str(src)
                self._demux(buf, n, self._src_host, port)
            else:
                self._counters.not_media += 1
                self._once("size", "datagram of %d bytes from %s:%d dropped", n, src, port)
        finally:
            st = self._state
            if sock is self._sock and st is not _S.CLOSING and st is not _S.CLOSED:
                sock.Recv(buf)  # the buffer is the stream's again: post it for the next
            self._event_end()

    def _srtp_failed(self, host: str, port: int) -> None:
        """An SRTP packet failed authentication or the replay check: counted, the
        first logged and reported."""
        c = self._counters
        c.srtp_failed += 1
        if c.srtp_failed == 1:
            self._once("srtp", "SRTP from %s:%d failed authentication or replay", host, port)
            self._emit(
                "MediaEventReceived",
                mt.CHANNEL_MEDIA_ERROR,
                mt.EventMediaError(
                    mt.FAULT_CODE_RTP_SRTP_AUTH_FAILED,
                    "an SRTP packet failed authentication or the replay check",
                    "srtp",
                ),
            )

    def _demux(self, buf: Any, n: int, host: str, port: int) -> None:
        """RFC 7983: the first byte tells STUN, DTLS and RTP/RTCP apart."""
        b = buf[0]
        src = (host, port)
        c = self._counters
        if b < 4:
            agent = self._agent
            if agent is None:
                c.not_media += 1
                self._once("stun", "STUN from %s:%d with no ICE: dropped", host, port)
                return
            stats = agent.stats
            before = sum(stats[k] for k in _STUN_REJECTIONS)
            if not agent.receive(bytes(buf[:n]), src, self._loop.time()):
                c.not_media += 1
                self._once("stun-not", "not STUN from %s:%d (first byte 0..3)", host, port)
            elif sum(stats[k] for k in _STUN_REJECTIONS) != before:
                c.stun_rejected += 1
                self._once("stun-bad", "STUN from %s:%d refused by the ICE agent", host, port)
            self._pump_ice()
        elif 20 <= b <= 63:
            remote = self._remote
            if remote is None:
                if (
                    self._want_dtls is not None
                    and self._state is _S.CONNECTING
                    and len(self._early_dtls) < EARLY_DTLS
                ):
                    self._early_dtls.append((bytes(buf[:n]), src))
                else:
                    c.early += 1
                    self._once("dtls-early", "DTLS from %s:%d before ICE: dropped", host, port)
            elif src != remote:
                c.foreign += 1
                self._once("dtls-foreign", "DTLS from %s:%d, not the peer: dropped", host, port)
            elif self._dtls is not None:
                self._dtls.DtlsRecv(buf, n, host, port)
            else:
                c.not_media += 1
                self._once("dtls-none", "DTLS from %s:%d, no DTLS here: dropped", host, port)
        elif 128 <= b <= 191:
            if src != self._remote:
                c.foreign += 1
                self._once("rtp-foreign", "RTP/RTCP from %s:%d, not the peer: dropped", host, port)
                return
            if n < 12:
                c.not_media += 1
                return
            self._media_in(bytes(buf[:n]), host, port)
        else:
            c.not_media += 1
            self._once("other", "datagram from %s:%d is no STUN/DTLS/RTP: dropped", host, port)

    def _media_in(self, data: bytes, host: str, port: int) -> None:
        c = self._counters
        rtp = self._rtp
        st = self._state
        if rtp is None or (st is not _S.CONNECTED and st is not _S.FAILED):
            c.early += 1
            return
        want_srtp = self._want_dtls is not None
        rx = self._rx
        if want_srtp and rx is None:
            c.early += 1
            return
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761)
            pkt = rx.SrtcpUnprotect(data) if rx is not None else data
            if pkt is None:
                c.srtcp_failed += 1
                if c.srtcp_failed == 1:
                    self._once("srtcp", "SRTCP from %s:%d failed authentication", host, port)
                    self._emit(
                        "MediaEventReceived",
                        mt.CHANNEL_MEDIA_ERROR,
                        mt.EventMediaError(
                            mt.FAULT_CODE_RTP_SRTCP_AUTH_FAILED,
                            "an SRTCP packet failed authentication or replay checks",
                            "srtp",
                        ),
                    )
                return
            c.rtcp_received += 1
            if not rtp.rtcp_in(pkt, self._loop.time(), time.time()):
                c.not_media += 1
                self._once("rtcp-bad", "malformed RTCP from %s:%d dropped", host, port)
            return
        pkt = rx.Unprotect(data) if rx is not None else data
        if pkt is None:
            self._srtp_failed(host, port)
            return
        drop = self._drop_rx
        if drop and self._rng.random() * 100 < drop:
            return
        parsed = _parse_rtp(pkt)
        if parsed is None:
            c.not_media += 1
            self._once("rtp-bad", "malformed RTP from %s:%d dropped", host, port)
            return
        b1, seq, ts, ssrc, payload = parsed
        c.rtp_received += 1
        pt = b1 & 0x7F
        if rtp.rtp_in(ssrc, seq, ts, self._loop.time()):
            self._emit("MediaRtpRecv", host, port, ssrc, pt)
        if self._lane_src is not None:
            self._disarm()
        if pt in self._dtmf_pt_rx:
            for start, digit in rtp.dtmf_in(payload, ts, self._loop.time()):
                self._emit("MediaRtpDtmfNearStart" if start else "MediaRtpDtmfNear", digit)
            if rtp.dtmf_rx.active:
                self._dtmf_rx_timer.Start(DTMF_END_MS)
            else:
                self._dtmf_rx_timer.Cancel()
            return
        held = self._held
        if len(held) == held.maxlen:
            c.held_dropped += 1
            self._once("held", "the app's Recv is behind: oldest payload dropped")
        held.append((payload, seq, ts, bool(b1 & 0x80)))
        self._deliver()
        if st is _S.CONNECTED and not drop and pkt[0] == 0x80 and not 64 <= pt <= 95:
            # the lane (`_lane`) takes this source's next packets; a payload type in
            # 64..95 with the marker set would read as RTCP (RFC 5761)
            sock = self._sock
            arm = getattr(sock, "_set_media_lane", None)  # the library's UDP socket
            if arm is not None:
                src = arm(self._lane_fn)  # this datagram's source, as the transport gave it
                if src is not None:
                    self._lane_sock = sock
                    self._lane_src = src
                    if src == self._tx_addr:  # `RtpSend` sends to the tuple the lane
                        self._tx_addr = src  # compares with: one object, not two
                    self._fast_ssrc = ssrc
                    self._fast_pt = pt
                    self._fast_stats = rtp.sources[ssrc].stats

    def _disarm(self) -> None:
        """The lane takes nothing more (`_media_in` arms it again): a new remote, new
        keys, a failure, `Close`, the socket's end, a packet of the slow path."""
        self._lane_src = None
        sock = self._lane_sock
        if sock is not None:
            self._lane_sock = None
            sock._set_media_lane(None)

    def _deliver(self) -> None:
        held, recvs = self._held, self._recvs
        rtp = self._rtp
        while held and recvs:
            payload, seq, ts, marker = held.popleft()
            buf, mv, want = recvs.popleft()
            n = min(want, len(payload))
            if n < len(payload):
                self._once("trunc", "payload of %d bytes truncated to %d", len(payload), n)
            mv[:n] = payload[:n]
            self._emit("MediaRtpRecvResult", buf, n, ts, rtp.seq_diff(seq), marker)

    # ------------------------------------------------------------------ the app's calls

    def RtpSend(self, buf: Any, len: int | None, timestamp: int) -> None:
        """Send one payload as one RTP packet (SRTP once DTLS gave the keys) to the
        selected pair: this stream's SSRC and next sequence number, the payload type of
        the remote's first codec (telephone-event and CN skipped), `timestamp`. Leads
        to `MediaRtpSendResult` once the kernel has it. Ignored (and logged once) when
        the media stopped (consent lost, the peer closed) or never started (the connect
        failed).

        Raises:
            SocketModeError: before `MediaConnectResult(media, None)`, or after `Close`.
            ValueError: `len` larger than the buffer, or a payload too large for SRTP.
        """
        if self._sending and self._iomux._owner._is_owned():
            # the fast path: a connected stream, the loop's thread, a bytearray or
            # bytes whose payload fits SRTP; what `_rtp_out` and `_send_raw` do, in
            # one frame (anything else: the checks and errors below)
            t = type(buf)
            if t is bytearray or t is bytes:
                size = _len(buf)
                n = size if len is None else len
                if 0 <= n <= size and n <= _FAST_PAYLOAD and not self._drop_tx:
                    rtp = self._rtp
                    seq = rtp.seq
                    rtp.seq = (seq + 1) & 0xFFFF
                    ts = timestamp & 0xFFFFFFFF
                    clock = self._clock  # (called from a local: see `_lane`)
                    now = clock()
                    send = rtp.send
                    send.packets = packets = send.packets + 1  # `RtpSendStats.sent`, inline
                    send.octets += n
                    send.last_ts = ts
                    send.last_time = now
                    b1 = rtp.pt | 0x80 if packets == 1 else rtp.pt  # M: the first packet
                    tx = self._tx_direct
                    if tx is not None:  # libsrtp's protect, written out (`_srtp.direct`)
                        call, ctx, cbuf, view, cell, payload, memmove, _ = tx
                        _pack_header(view, 0, 0x80, b1, seq, ts, rtp.ssrc)
                        memmove(payload, buf, n)  # n <= len(buf), 12 + n <= len(view)
                        cell[0] = n + 12
                        rc = call(ctx, cbuf, cell)
                        if rc:
                            raise ValueError(
                                f"libsrtp refused to protect sequence number {seq} "
                                f"({srtp_error(rc)}): give every packet a new sequence number"
                            )
                        pkt = view[0 : cell[0]]
                    else:
                        pkt = _RTP_HEADER.pack(0x80, b1, seq, ts, rtp.ssrc) + (
                            buf if n == size else buf[:n]
                        )
                        protect = self._tx_protect
                        if protect is not None:
                            try:
                                pkt = protect(pkt)
                            except self._srtp_errors as e:
                                raise ValueError(
                                    f"libsrtp refused to protect sequence number {seq} ({e}): "
                                    "give every packet a new sequence number"
                                ) from None
                    self._counters.rtp_sent += 1
                    addr = self._tx_addr
                    if addr is not None:  # the socket's lane send (`_select` made `addr`)
                        send_to = self._lane_send
                        send_to(self._sock, pkt, addr)
                        if self._send_results:
                            self._send_kinds.append(True)
                        return
                    remote = self._remote
                    sock = self._sock
                    if remote is not None and sock is not None:  # `_send_to`, inline
                        try:
                            sock.SendTo(pkt, None, remote[0], remote[1])
                        except ValueError as e:  # an address of the wrong family
                            self._once("sendto", "not sent to %s:%d: %s", *remote, e)
                            return
                        if self._send_results:
                            self._send_kinds.append(True)
                    return
        self._check("RtpSend")
        payload = _payload(buf, len, "RtpSend")
        if not self._sending:
            if self._state is _S.CONNECTED or self._state is _S.FAILED:
                self._once("send-stopped", "RtpSend ignored: the media stopped")
                return
            raise SocketModeError(
                "IMedia.RtpSend before MediaConnectResult(media, None): send once connected"
            )
        self._rtp_out(payload, timestamp, None, False)

    def _rtp_out(self, payload: bytes, timestamp: int, pt: int | None, marker: bool) -> None:
        rtp = self._rtp
        header = rtp.header(payload, timestamp, pt, marker, self._loop.time())
        tx = self._tx
        pkt = tx.Protect(header, payload) if tx is not None else header + payload
        self._counters.rtp_sent += 1
        drop = self._drop_tx
        if drop and self._rng.random() * 100 < drop:
            self._emit("MediaRtpSendResult")
            return
        self._send_raw(pkt, True)

    def RtcpSend(self, buf: Any, len: int | None = None) -> None:
        """Send an RTCP packet the app built (SRTCP-protected once DTLS gave the keys).
        No callback follows.

        Raises:
            SocketModeError: before `MediaConnectResult(media, None)`, or after `Close`.
            ValueError: no RTCP packet (8 bytes at least, version 2, type 192..223).
        """
        self._check("RtcpSend")
        pkt = _payload(buf, len, "RtcpSend")
        if not (pkt.__len__() >= 8 and pkt[0] >> 6 == 2 and 192 <= pkt[1] <= 223):
            raise ValueError(
                "RtcpSend: an RTCP packet is 8 bytes or more, version 2, type 192..223"
            )
        if not self._sending:
            if self._state is _S.CONNECTED or self._state is _S.FAILED:
                return
            raise SocketModeError(
                "IMedia.RtcpSend before MediaConnectResult(media, None): send once connected"
            )
        self._rtcp_out(pkt)

    def _rtcp_out(self, pkt: bytes) -> None:
        tx = self._tx
        self._send_raw(tx.SrtcpProtect(pkt) if tx is not None else pkt, False)

    def Recv(self, buf: Any, len: int | None = None, recvPartial: bool = False) -> None:
        """Ask for the next payload: `MediaRtpRecvResult` delivers it into `buf` (its
        first `len` bytes; a longer payload is truncated and the truncation logged).
        Several `Recv`s queue in order; one payload each, in arrival order.
        `recvPartial` is kept for the SDK's signature.

        Raises:
            SocketModeError: after `Close`.
            ValueError: `len` larger than the buffer, or a read-only buffer.
        """
        if (
            type(buf) is bytearray and self._state is _CONNECTED and self._iomux._owner._is_owned()
        ):  # the fast path: a bytearray on a connected stream, from the loop's thread
            size = _len(buf)
            want = size if len is None else len
            if 0 <= want <= size:
                self._recvs.append((buf, buf, want))  # a bytearray: written into itself
                if self._held:
                    self._deliver()
                return
        self._check("Recv")
        mv = as_view(buf, "IMedia.Recv")
        if mv.format != "B" or not mv.c_contiguous:
            try:
                mv = mv.cast("B")
            except TypeError:
                raise ValueError(
                    "IMedia.Recv needs a contiguous buffer (a bytearray, or a memoryview of one)"
                ) from None
        if mv.readonly:
            raise ValueError("IMedia.Recv needs a writable buffer (bytearray or memoryview)")
        want = mv.nbytes if len is None else len
        if want < 0 or want > mv.nbytes:
            raise ValueError(f"IMedia.Recv: len={len} but the buffer holds {mv.nbytes} bytes")
        self._recvs.append((buf, mv, want))
        if self._held:
            self._deliver()

    def RtpDtmf(self, digit: str, pt: int) -> None:
        """Send `digit` ('0'-'9', '*', '#', 'A'-'D') as an RFC 4733 telephone-event with
        payload type `pt`: 100 ms of tone, a packet every 50 ms, then the end packet three
        times 20 ms apart (RFC 4733 2.5.1), paced by a timer, on the timestamp of the
        moment the digit starts. A digit sent while another is still going waits for it.
        No callback follows.

        Raises:
            SocketModeError: before `MediaConnectResult(media, None)`, or after `Close`.
            ValueError: no DTMF digit, or `pt` not 0..127.
        """
        self._check("RtpDtmf")
        if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            raise ValueError(f"RtpDtmf: {digit!r} is no DTMF digit: use '0'-'9', '*', '#', 'A'-'D'")
        if not 0 <= pt <= 127:
            raise ValueError(f"RtpDtmf: payload type {pt} is not 0..127")
        if not self._sending:
            if self._state is _S.CONNECTED or self._state is _S.FAILED:
                return
            raise SocketModeError(
                "IMedia.RtpDtmf before MediaConnectResult(media, None): send once connected"
            )
        if self._rtp.dtmf_queue(digit.upper(), pt) and not self._dtmf_timer.IsRunning():
            self._dtmf_timer.Start(0)

    def Close(self) -> None:
        """End the stream: close_notify (when DTLS is up), the ICE agent stopped, every
        timer cancelled, the port closed. Leads to `MediaCloseComplete(media)`, the last
        callback. A second `Close` does nothing.
        """
        self._iomux.on_loop("IMedia.Close")
        if self._state is _S.CLOSING or self._state is _S.CLOSED:
            return
        self._set_state(_S.CLOSING)
        self._sending = False
        self._disarm()  # before the socket's Shutdown: nothing reaches the app from now on
        self._tx_addr = None
        self._out.clear()
        self._held.clear()
        self._recvs.clear()
        self._early_dtls.clear()
        dtls = self._dtls
        if dtls is not None:
            dtls.DtlsClose()  # close_notify goes out through the socket before it closes
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        for t in (
            self._ice_timer,
            self._dtls_timer,
            self._rtcp_timer,
            self._stats_timer,
            self._dtmf_timer,
            self._dtmf_rx_timer,
        ):
            t.Cancel()
        sock, self._sock = self._sock, None
        self._send_kinds.clear()
        if sock is not None:
            self._closing_socket = sock
            sock.Shutdown()
        else:
            self._loop.call_soon(self._finish_close)

    def _finish_close(self) -> None:
        if self._state is not _S.CLOSING:
            return
        sock = self._closing_socket
        if sock is not None:
            self._closing_socket = None
            sock.Delete()
        self._set_state(_S.CLOSED)
        self._log.Log(LOG, "media %x: closed (%s)", id(self), self._counters.as_dict())
        self._emit("MediaCloseComplete")

    @property
    def counters(self) -> MediaCounters:
        """What the stream dropped and passed, by kind (beyond the SDK)."""
        rtp = self._rtp
        if rtp is not None:
            self._counters.rtp_lost = rtp.lost()
            self._counters.peer_lost = rtp.peer_lost
        return self._counters

    def GetSrtpProfile(self) -> str | None:
        """The SRTP profile DTLS agreed (e.g. "SRTP_AEAD_AES_128_GCM"), or None (plain RTP,
        or not yet) (beyond the SDK, as `ISocket.GetSrtpProfile`)."""
        return self._profile

    @property
    def localPort(self) -> int:
        """The stream's UDP port (0 before it is open) (beyond the SDK)."""
        return self._port

    # ------------------------------------------------------------------ timers

    def _timeout(self, timer: ITimer) -> None:
        self._in_event = True
        try:
            if timer is self._ice_timer:
                self._ice_at = None
                if self._agent is not None:
                    self._agent.handle_timer(self._loop.time())
                    self._pump_ice()
            elif timer is self._dtls_timer:
                if self._dtls is not None:
                    self._dtls.DtlsTimeout()
            elif timer is self._rtcp_timer:
                if self._sending and self._rtp is not None:
                    self._rtcp_out(self._rtp.report(self._loop.time(), time.time()))
                    self._rtcp_timer.Start(self._rtcp_delay())
            elif timer is self._stats_timer:
                self._statistics()
            elif timer is self._dtmf_timer:
                self._dtmf_tick()
            elif timer is self._dtmf_rx_timer and self._rtp is not None:
                for start, digit in self._rtp.dtmf_poll(self._loop.time() + 0.001):
                    name = "MediaRtpDtmfNearStart" if start else "MediaRtpDtmfNear"
                    self._emit(name, digit)
        finally:
            self._event_end()

    def _rtcp_delay(self, first: bool = False) -> int:
        """Milliseconds to the next report: `RTCP_INTERVAL` (half of it for the `first`)
        times a random 0.5..1.5 (RFC 3550 6.2, 6.3.1)."""
        interval = RTCP_INTERVAL / 2 if first else RTCP_INTERVAL
        return int(interval * (0.5 + self._rng.random()) * 1000)

    def _statistics(self) -> None:
        if self._rtp is None or self._state is not _S.CONNECTED:
            return
        for stats in self._rtp.statistics():
            self._emit("MediaEventReceived", mt.CHANNEL_MEDIA_STATISTICS, stats)
        self._stats_timer.Start(int(STATISTICS_INTERVAL * 1000))

    def _dtmf_tick(self) -> None:
        if not self._sending or self._rtp is None:
            return
        out = self._rtp.dtmf_next(self._loop.time())
        if out is None:
            return
        payload, ts, pt, marker, wait = out
        self._rtp_out(payload, ts, pt, marker)
        if wait is not None:
            self._dtmf_timer.Start(wait)


def _payload(buf: Any, len: int | None, call: str) -> bytes:
    if type(buf) is bytes and (len is None or len == buf.__len__()):
        return buf
    mv = as_view(buf, call)
    if len is None:
        return mv.tobytes()
    if len < 0 or len > mv.nbytes:
        raise ValueError(f"{call}: len={len} but the buffer holds {mv.nbytes} bytes")
    return mv[:len].tobytes()


def _parse_rtp(pkt: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(second byte, sequence number, timestamp, SSRC, payload) of an RTP packet, or None."""
    n = len(pkt)
    if n < 12 or pkt[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = _RTP_HEADER.unpack_from(pkt)
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if n < off + 4:
            return None
        off += 4 + 4 * int.from_bytes(pkt[off + 2 : off + 4], "big")
    end = n
    if b0 & 0x20:
        end -= pkt[-1]
    if off > end:
        return None
    return b1, seq, ts, ssrc, pkt[off:end]


def _addr_of(c: Any) -> tuple[str, int]:
    """(IP text, port) of an ICE agent's candidate or address tuple."""
    if isinstance(c, tuple):
        return str(ipaddress.ip_address(c[0])), int(c[1])
    return str(ipaddress.ip_address(c.addr)), int(c.port)


MAX_SOURCES = 8
"""Remote SSRCs whose statistics are kept; a new one beyond replaces the oldest."""
CNAME = b"usocket_asyncio"
"""The CNAME of this side's SDES (RFC 3550 6.5.1; one per stream would do as well)."""


class _Source:
    """One remote SSRC: its RFC 3550 receiver statistics and its statistics interval."""

    __slots__ = ("expected_prior", "received_prior", "stats")

    def __init__(self, rate: int) -> None:
        self.stats = RtpReceiveStats(rate)
        self.expected_prior = 0
        self.received_prior = 0


class _RtpState:
    """This stream's RTP and RTCP state (RFC 3550) over the sans-IO helpers of `_rtp`:
    what it sends (SSRC, sequence numbers, counts for its sender reports), what it
    receives (one `RtpReceiveStats` per remote SSRC, at most `MAX_SOURCES`), the peer's
    last report about this stream, and the RFC 4733 DTMF sender queue and receiver."""

    __slots__ = (
        "dtmf_out",
        "dtmf_rx",
        "dtmf_ts",
        "last_seq",
        "last_time",
        "last_ts",
        "peer_block",
        "peer_lost",
        "pt",
        "rate",
        "rtt",
        "sdes",
        "send",
        "seq",
        "sources",
        "ssrc",
    )

    def __init__(self, rng: random.Random, pt: int, rate: int) -> None:
        self.ssrc = rng.getrandbits(32)
        self.seq = rng.getrandbits(16)
        self.pt = pt
        self.rate = rate
        self.last_seq: int | None = None
        # the RTP clock until audio is sent (a random start, running from its first use,
        # for DTMF and reports); from then on `send.last_ts` and `send.last_time` are it
        self.last_ts = rng.getrandbits(32)
        self.last_time: float | None = None
        self.sources: dict[int, _Source] = {}
        self.send = RtpSendStats(rate)
        self.sdes: bytes | None = None  # this source's SDES (CNAME), packed at the first report
        self.peer_block: Any = None  # the peer's last report block about this stream
        self.peer_lost = 0
        self.rtt: float | None = None  # seconds
        self.dtmf_out: collections.deque[tuple[int, Any]] = collections.deque()
        self.dtmf_ts = 0
        self.dtmf_rx = DtmfReceiver()

    # -- sending ----------------------------------------------------------------------

    def header(
        self, payload: bytes, timestamp: int, pt: int | None, marker: bool, now: float
    ) -> bytes:
        """The header of the next packet (and count it for the sender report)."""
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        ts = timestamp & 0xFFFFFFFF
        if pt is None:
            self.send.sent(len(payload), ts, now)
            b1 = self.pt | (0x80 if self.send.packets == 1 else 0)  # M: the first packet
        else:
            b1 = pt | (0x80 if marker else 0)
        return _RTP_HEADER.pack(0x80, b1, seq, ts, self.ssrc)

    def now_ts(self, now: float) -> int:
        """The RTP timestamp of `now`: the last audio timestamp (`send`'s) advanced by the
        time since."""
        send = self.send
        if send.last_ts is not None:
            return (send.last_ts + int((now - send.last_time) * self.rate)) & 0xFFFFFFFF
        if self.last_time is None:  # no audio yet: the clock starts at the first use
            self.last_time = now
        return (self.last_ts + int((now - self.last_time) * self.rate)) & 0xFFFFFFFF

    # -- receiving --------------------------------------------------------------------

    def rtp_in(self, ssrc: int, seq: int, ts: int, now: float) -> bool:
        """Count one packet; True when its SSRC is new."""
        src = self.sources.get(ssrc)
        new = src is None
        if src is None:
            if len(self.sources) >= MAX_SOURCES:
                self.sources.pop(next(iter(self.sources)))
            src = self.sources[ssrc] = _Source(self.rate)
        src.stats.update(seq, ts, now)
        return new

    def seq_diff(self, seq: int) -> int:
        """`sequenceNumberDiff` of a payload handed to the app: against the previous."""
        last = self.last_seq
        self.last_seq = seq
        if last is None:
            return 1
        d = (seq - last) & 0xFFFF
        return d - 0x10000 if d >= 0x8000 else d

    def rtcp_in(self, pkt: bytes, now: float, unix_now: float) -> bool:
        """Take the peer's compound RTCP packet; False if it does not parse."""

        try:
            packets = parse_rtcp(pkt)
        except ValueError:
            return False
        for p in packets:
            if isinstance(p, SenderReport):
                src = self.sources.get(p.ssrc)
                if src is not None:
                    src.stats.sender_report(p.ntp, now)
            if isinstance(p, SenderReport | ReceiverReport):
                for b in p.reports:
                    if b.ssrc == self.ssrc:
                        self.peer_block = b
                        self.peer_lost = b.lost
                        rtt = round_trip(ntp_time(unix_now), b.lsr, b.dlsr)
                        if rtt is not None:
                            self.rtt = rtt
        return True

    # -- RTCP out ---------------------------------------------------------------------

    def report(self, now: float, unix_now: float) -> bytes:
        """This side's compound report: SR (once it sent) or RR, with a block per
        source, then SDES with the CNAME."""

        blocks = [s.stats.report_block(ssrc, now) for ssrc, s in self.sources.items()]
        send = self.send
        sender = None
        if send.last_ts is not None:  # an SR once it sent (`RtpSendStats.sender_report`)
            sender = (ntp_time(unix_now), self.now_ts(now), send.packets, send.octets)
        if self.sdes is None:
            self.sdes = pack_rtcp([Sdes([(self.ssrc, [(1, CNAME)])])])
        return pack_report(self.ssrc, sender, blocks, self.sdes)

    def statistics(self) -> list[Any]:
        """`EventMediaStatistics` for the peer's view (xmit True, from its last report)
        and this side's (xmit False, since the previous call), each when there is one."""

        rtt = round(self.rtt * 1000) if self.rtt is not None else 0
        out = []
        b = self.peer_block
        if b is not None:
            self.peer_block = None
            out.append(
                EventMediaStatistics(
                    xmit=True,
                    loss=b.fraction_lost,
                    jitter=round(b.jitter * 1000 / self.rate),
                    roundTrip=rtt,
                )
            )
        src = self._main()
        if src is not None:
            st = src.stats
            expected, received = st.expected, st.received
            exp_i = expected - src.expected_prior
            lost_i = exp_i - (received - src.received_prior)
            src.expected_prior, src.received_prior = expected, received
            if exp_i > 0:
                loss = min(255, (lost_i << 8) // exp_i) if lost_i > 0 else 0
                out.append(
                    EventMediaStatistics(
                        xmit=False, loss=loss, jitter=round(st.jitter_ms), roundTrip=rtt
                    )
                )
        return out

    def _main(self) -> _Source | None:
        """The source media comes from: the newest."""
        if not self.sources:
            return None
        return self.sources[next(reversed(self.sources))]

    def lost(self) -> int:
        """Packets lost from the main source so far (RFC 3550 A.3; < 0 with duplicates)."""
        src = self._main()
        return src.stats.lost if src is not None else 0

    # -- DTMF -------------------------------------------------------------------------

    def dtmf_queue(self, digit: str, pt: int) -> bool:
        """Queue one digit's packets; True when nothing else was queued (start the pacer)."""

        idle = not self.dtmf_out
        for p in dtmf_packets(digit, clock_rate=self.rate):
            self.dtmf_out.append((pt, p))
        return idle

    def dtmf_next(self, now: float) -> tuple[bytes, int, int, bool, int | None] | None:
        """The next DTMF packet: (payload, timestamp, pt, marker, ms until the one after
        or None)."""
        if not self.dtmf_out:
            return None
        pt, p = self.dtmf_out.popleft()
        if p.marker:
            self.dtmf_ts = self.now_ts(now)
        wait = None
        if self.dtmf_out:
            nxt = self.dtmf_out[0][1]
            wait = DTMF_GAP_MS if nxt.marker else max(0, nxt.offset_ms - p.offset_ms)
        return p.payload, self.dtmf_ts, pt, p.marker, wait

    def dtmf_in(self, payload: bytes, ts: int, now: float) -> list[tuple[bool, str]]:
        """A telephone-event packet: (True, digit) for a start, (False, digit) for an end."""
        return [(k == "start", d) for k, d in self.dtmf_rx.on_packet(ts, payload, now)]

    def dtmf_poll(self, now: float) -> list[tuple[bool, str]]:
        """End a digit whose end packets were all lost."""
        return [(k == "start", d) for k, d in self.dtmf_rx.poll(now)]


_STUN_REJECTIONS = (
    "not_stun_parsed",
    "bad_request",
    "unknown_username",
    "bad_integrity",
    "unknown_attribute",
    "unmatched_response",
    "bad_response",
)


def _to_sdk(c: Any) -> Any:
    """An ICE agent's candidate as the SDK's `IceCandidate` (RTP and RTCP muxed)."""

    kind = {
        "host": CHANNEL_CANDIDATE_HOST,
        "srflx": CHANNEL_CANDIDATE_SRFLX,
        "prflx": CHANNEL_CANDIDATE_PRFLX,
        "relay": CHANNEL_CANDIDATE_RELAY,
    }[c.type]
    return IceCandidate(
        addr=c.addr,
        rtpPort=c.port,
        rtcpPort=c.port,
        rtpPriority=c.priority,
        rtcpPriority=c.priority - 1 if c.priority else 0,
        type=kind,
        foundation=c.foundation,
        relatedAddr=c.related_addr,
        relatedRtpPort=c.related_port,
        relatedRtcpPort=c.related_port,
    )


def _from_sdk(c: Any) -> Any:
    """The SDK's `IceCandidate` as the ICE agent's (component 1: the RTP port)."""

    kind = ("host", "srflx", "prflx", "relay")[c.type]
    return _ice.Candidate(
        addr=c.addr,
        port=c.rtpPort,
        type=kind,
        priority=c.rtpPriority,
        foundation=c.foundation,
        related_addr=c.relatedAddr,
        related_port=c.relatedRtpPort,
    )
