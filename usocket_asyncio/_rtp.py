"""RTP and RTCP without I/O: packets, statistics, telephone-events, G.711.

Everything here is pure: bytes and numbers in, bytes, numbers and events out, no loop, no
clock (times are passed in, in seconds). The media adapter owns the socket, the timers and
SRTP; it calls these to build and read what goes over the wire.

- RTP (RFC 3550 §5): `rtp_header`/`pack_rtp` build packets, `parse_rtp` reads them (CSRCs,
  header extension and padding included). `is_rtcp` tells RTCP from RTP on a muxed port
  (RFC 5761 §4: packet types 192-223 are RTCP, which RTP avoids as payload types 64-95).
- RTCP (RFC 3550 §6): sender and receiver reports, SDES, BYE, and any other packet kept as
  `RtcpOther`; `pack_rtcp` makes a compound packet, `parse_rtcp` splits one.
- Statistics: `RtpReceiveStats` is the receiver of RFC 3550 A.1 (sequence validation with
  cycles), A.3 (expected, lost, fraction lost per interval) and A.8 (interarrival jitter),
  and makes the report block that carries them, with LSR/DLSR from the peer's last sender
  report. `RtpSendStats` counts what is sent for the sender report. `round_trip` turns a
  report block about our stream into a round-trip time (RFC 3550 §6.4.1).
- Telephone-events (RFC 4733): `dtmf_packets` is the sender's schedule for one digit,
  `DtmfReceiver` turns event packets into one start and one end per digit.
- G.711 (ITU-T G.711, the classic segment algorithm): `G711UEncode`/`G711UDecode` (µ-law)
  and `G711AEncode`/`G711ADecode` (A-law) between bytes of 16-bit signed little-endian
  samples and one byte per sample.

Parsers never raise anything but `ValueError` (with what is wrong) whatever the bytes, and
read at most the packet given.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Final, TypeAlias

_Bytes: TypeAlias = bytes | bytearray | memoryview

RTP_VERSION: Final = 2
RTP_HEADER_LEN: Final = 12

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204

SDES_CNAME: Final = 1

# seconds between 1900 (NTP's era 0) and 1970 (the Unix epoch)
NTP_UNIX_OFFSET: Final = 2208988800

_HEADER = struct.Struct("!BBHII")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_SR_INFO = struct.Struct("!IIIII")


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes, bytearray or memoryview, not {type(data).__name__}")


def _check_u(what: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{what} {value!r} is not a {bits}-bit unsigned number")


# --- RTP ----------------------------------------------------------------------------------


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet, read by `parse_rtp`.

    Attributes:
        pt: the payload type (0-127).
        marker: the M bit.
        seq: the 16-bit sequence number.
        timestamp: the 32-bit timestamp.
        ssrc: the synchronization source.
        payload: the payload (padding removed).
        csrcs: the contributing sources.
        extension: (profile, data) of the header extension, or None.
        padding: how many padding bytes followed the payload.
    """

    pt: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0


def rtp_header(pt: int, seq: int, timestamp: int, ssrc: int, marker: bool = False) -> bytes:
    """The 12-byte RTP header (no CSRC, no extension), as `ISrtpSession.Protect` takes it.

    Raises:
        ValueError: a field out of its range.
    """
    _check_u("the payload type", pt, 7)
    _check_u("the sequence number", seq, 16)
    _check_u("the timestamp", timestamp, 32)
    _check_u("the SSRC", ssrc, 32)
    return _HEADER.pack(0x80, (0x80 if marker else 0) | pt, seq, timestamp, ssrc)


def pack_rtp(
    pt: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    payload: _Bytes,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] | list[int] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """A whole RTP packet.

    Args:
        pt: payload type (0-127).
        seq: sequence number (16 bits).
        timestamp: timestamp (32 bits).
        ssrc: synchronization source (32 bits).
        payload: the payload.
        marker: the M bit.
        csrcs: up to 15 contributing sources.
        extension: (profile, data): a header extension; data a multiple of 4 bytes.
        padding: padding bytes to append (0, or 1-255; the last one holds the count).

    Raises:
        ValueError: a field out of its range.
    """
    if len(csrcs) > 15:
        raise ValueError(f"an RTP header has at most 15 CSRCs, not {len(csrcs)}")
    if not 0 <= padding <= 255:
        raise ValueError(f"padding is 0-255 bytes, not {padding}")
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    head = bytearray(rtp_header(pt, seq, timestamp, ssrc, marker))
    head[0] = first
    for csrc in csrcs:
        _check_u("a CSRC", csrc, 32)
        head += csrc.to_bytes(4, "big")
    if extension is not None:
        profile, data = extension
        _check_u("the extension profile", profile, 16)
        if len(data) % 4 or len(data) > 4 * 0xFFFF:
            raise ValueError(f"the header extension is a multiple of 4 bytes, not {len(data)}")
        head += struct.pack("!HH", profile, len(data) // 4) + bytes(data)
    head += _as_bytes(payload)
    if padding:
        head += bytes(padding - 1) + bytes((padding,))
    return bytes(head)


def parse_rtp(data: _Bytes) -> RtpPacket:
    """Read one RTP packet.

    Raises:
        ValueError: not an RTP packet (too short, not version 2, CSRCs, extension or padding
            longer than the packet).
        TypeError: `data` is not bytes-like.
    """
    buf = _as_bytes(data)
    n = len(buf)
    if n < RTP_HEADER_LEN:
        raise ValueError(f"an RTP packet is at least 12 bytes, not {n}")
    first, second, seq, timestamp, ssrc = _HEADER.unpack_from(buf)
    if first >> 6 != RTP_VERSION:
        raise ValueError(f"not RTP version 2 (first byte 0x{first:02x})")
    end = RTP_HEADER_LEN + 4 * (first & 0x0F)
    if end > n:
        raise ValueError(f"the RTP packet announces {first & 0x0F} CSRCs but is {n} bytes")
    csrcs = tuple(struct.unpack_from(f"!{first & 0x0F}I", buf, RTP_HEADER_LEN))
    extension = None
    if first & 0x10:
        if end + 4 > n:
            raise ValueError("the RTP packet has the X bit but no extension header")
        profile, words = struct.unpack_from("!HH", buf, end)
        start = end + 4
        end = start + 4 * words
        if end > n:
            raise ValueError(f"the RTP header extension of {4 * words} bytes overruns the packet")
        extension = (profile, buf[start:end])
    stop = n
    pad = 0
    if first & 0x20:
        pad = buf[-1]
        if pad == 0 or end + pad > n:
            raise ValueError(f"the RTP padding count {pad} does not fit the packet")
        stop = n - pad
    return RtpPacket(
        pt=second & 0x7F,
        marker=bool(second & 0x80),
        seq=seq,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=buf[end:stop],
        csrcs=csrcs,
        extension=extension,
        padding=pad,
    )


def is_rtcp(data: _Bytes) -> bool:
    """Whether a packet on an RTP/RTCP-muxed port is RTCP (RFC 5761 §4).

    RTCP packet types 192-223 put 64-95 in the low 7 bits of the second byte, where RTP has
    its payload type; RTP on a muxed port avoids payload types 64-95.
    """
    return len(data) >= 2 and 64 <= (data[1] & 0x7F) <= 95


# --- RTCP ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ReportBlock:
    """A reception report block (RFC 3550 §6.4.1).

    Attributes:
        ssrc: the source this block is about.
        fraction_lost: lost since the previous report, in 1/256.
        lost: cumulative number of packets lost (signed 24 bits: duplicates can make it < 0).
        highest_seq: the extended highest sequence number received.
        jitter: interarrival jitter, in timestamp units.
        lsr: the middle 32 bits of the NTP time of the last SR from `ssrc` (0: none yet).
        dlsr: delay since that SR, in 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(slots=True)
class SenderReport:
    """RTCP SR (RFC 3550 §6.4.1).

    Attributes:
        ssrc: the sender.
        ntp: the 64-bit NTP timestamp (`ntp_time`).
        rtp_timestamp: the RTP timestamp of the same instant.
        packets: packets sent.
        octets: payload octets sent.
        reports: reception report blocks.
    """

    ssrc: int
    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class ReceiverReport:
    """RTCP RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class Sdes:
    """RTCP SDES (RFC 3550 §6.5): per source, its items as (type, value).

    Attributes:
        chunks: (ssrc, [(item type, value), ...]) per source; `SDES_CNAME` is type 1.
    """

    chunks: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)


@dataclass(slots=True)
class Bye:
    """RTCP BYE (RFC 3550 §6.6)."""

    ssrcs: list[int] = field(default_factory=list)
    reason: bytes = b""


@dataclass(slots=True)
class RtcpOther:
    """An RTCP packet of another type (APP, RTPFB, PSFB, XR, ...), kept as it came.

    Attributes:
        pt: the packet type.
        count: the 5-bit count/subtype field.
        body: what follows the 4-byte header (padding removed).
    """

    pt: int
    count: int
    body: bytes


RtcpPacket: TypeAlias = SenderReport | ReceiverReport | Sdes | Bye | RtcpOther


def _rtcp_header(count: int, pt: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("an RTCP packet body is a multiple of 4 bytes")
    if count > 31:
        raise ValueError(f"an RTCP packet carries at most 31 items, not {count}")
    return struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body


def _pack_blocks(blocks: list[ReportBlock], checked: bool = True) -> bytes:
    """The report blocks, packed: each field checked first (`checked`), or, for the
    stream's own reports (`pack_report`), taken as `RtpReceiveStats.report_block` makes
    them (in range)."""
    if checked:
        for b in blocks:
            _check_u("a report block's SSRC", b.ssrc, 32)
            _check_u("fraction lost", b.fraction_lost, 8)
            if not -(1 << 23) <= b.lost < 1 << 23:
                raise ValueError(f"cumulative lost {b.lost} does not fit 24 signed bits")
            _check_u("the extended highest sequence number", b.highest_seq, 32)
            _check_u("the jitter", b.jitter, 32)
            _check_u("LSR", b.lsr, 32)
            _check_u("DLSR", b.dlsr, 32)
    pack = _REPORT_BLOCK.pack
    return b"".join(
        [
            pack(
                b.ssrc,
                (b.fraction_lost << 24) | (b.lost & 0xFFFFFF),
                b.highest_seq,
                b.jitter,
                b.lsr,
                b.dlsr,
            )
            for b in blocks
        ]
    )


def _pack_one(packet: RtcpPacket) -> bytes:
    if isinstance(packet, SenderReport):
        _check_u("the SSRC", packet.ssrc, 32)
        _check_u("the NTP timestamp", packet.ntp, 64)
        _check_u("the RTP timestamp", packet.rtp_timestamp, 32)
        body = struct.pack("!I", packet.ssrc) + _SR_INFO.pack(
            packet.ntp >> 32,
            packet.ntp & 0xFFFFFFFF,
            packet.rtp_timestamp,
            packet.packets & 0xFFFFFFFF,
            packet.octets & 0xFFFFFFFF,
        )
        return _rtcp_header(len(packet.reports), RTCP_SR, body + _pack_blocks(packet.reports))
    if isinstance(packet, ReceiverReport):
        _check_u("the SSRC", packet.ssrc, 32)
        body = struct.pack("!I", packet.ssrc) + _pack_blocks(packet.reports)
        return _rtcp_header(len(packet.reports), RTCP_RR, body)
    if isinstance(packet, Sdes):
        out = bytearray()
        for ssrc, items in packet.chunks:
            _check_u("the SSRC", ssrc, 32)
            chunk = bytearray(ssrc.to_bytes(4, "big"))
            for kind, value in items:
                if not 1 <= kind <= 255 or len(value) > 255:
                    raise ValueError("an SDES item has a type 1-255 and at most 255 bytes")
                chunk += bytes((kind, len(value))) + bytes(value)
            chunk += bytes(4 - len(chunk) % 4)  # the null item, then up to a 32-bit boundary
            out += chunk
        return _rtcp_header(len(packet.chunks), RTCP_SDES, bytes(out))
    if isinstance(packet, Bye):
        out = bytearray()
        for ssrc in packet.ssrcs:
            _check_u("the SSRC", ssrc, 32)
            out += ssrc.to_bytes(4, "big")
        if packet.reason:
            if len(packet.reason) > 255:
                raise ValueError("a BYE reason is at most 255 bytes")
            out += bytes((len(packet.reason),)) + packet.reason
            out += bytes(-len(out) % 4)
        return _rtcp_header(len(packet.ssrcs), RTCP_BYE, bytes(out))
    if isinstance(packet, RtcpOther):
        _check_u("the RTCP packet type", packet.pt, 8)
        return _rtcp_header(packet.count, packet.pt, packet.body)
    raise TypeError(f"not an RTCP packet: {type(packet).__name__}")


def pack_rtcp(packets: list[RtcpPacket]) -> bytes:
    """A compound RTCP packet: the packets one after the other (RFC 3550 §6.1).

    A compound packet starts with an SR or RR and carries an SDES with a CNAME; that is
    the caller's choice of `packets`.

    Raises:
        ValueError: a field out of range, more than 31 report blocks or chunks.
        TypeError: something that is not one of the packet classes.
    """
    if not packets:
        raise ValueError("a compound RTCP packet has at least one packet")
    return b"".join(_pack_one(p) for p in packets)


_SR_HEAD = struct.Struct("!BBHIIIIII")
_RR_HEAD = struct.Struct("!BBHI")


def pack_report(
    ssrc: int,
    sender: tuple[int, int, int, int] | None,
    blocks: list[ReportBlock],
    sdes: bytes,
) -> bytes:
    """A stream's own compound report, packed at once: an SR (`sender` = (NTP timestamp,
    RTP timestamp, packets, octets)) or, with `sender` None, an RR, carrying `blocks`,
    followed by `sdes` (an SDES packet `pack_rtcp` made once). The same bytes as
    `pack_rtcp([SenderReport(...) or ReceiverReport(...), sdes])`, for values that are
    in range as `RtpReceiveStats.report_block` and `RtpSendStats` make them (packets
    and octets are taken modulo 2**32); `pack_rtcp` checks each field, this does not.

    Raises:
        ValueError: more than 31 blocks.
    """
    count = len(blocks)
    if count > 31:
        raise ValueError(f"an RTCP report carries at most 31 blocks, not {count}")
    body = _pack_blocks(blocks, False)
    if sender is None:
        head = _RR_HEAD.pack(0x80 | count, RTCP_RR, 1 + 6 * count, ssrc)
    else:
        ntp, rtp_ts, packets, octets = sender
        head = _SR_HEAD.pack(
            0x80 | count,
            RTCP_SR,
            6 + 6 * count,
            ssrc,
            ntp >> 32,
            ntp & 0xFFFFFFFF,
            rtp_ts,
            packets & 0xFFFFFFFF,
            octets & 0xFFFFFFFF,
        )
    return head + body + sdes


def _parse_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    if offset + 24 * count > len(body):
        raise ValueError(f"the RTCP report announces {count} report blocks that do not fit")
    blocks = []
    for i in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            body, offset + 24 * i
        )
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
    return blocks


def _parse_sdes(body: bytes, count: int) -> Sdes:
    chunks = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise ValueError("an SDES chunk overruns the packet")
        ssrc = int.from_bytes(body[pos : pos + 4], "big")
        pos += 4
        items = []
        while True:
            if pos >= len(body):
                raise ValueError("an SDES chunk has no terminating null item")
            kind = body[pos]
            if kind == 0:
                pos += 1
                pos += -pos % 4  # to the next 32-bit boundary
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise ValueError("an SDES item overruns the packet")
            length = body[pos + 1]
            items.append((kind, body[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        chunks.append((ssrc, items))
    return Sdes(chunks)


def _parse_one(pt: int, count: int, body: bytes) -> RtcpPacket:
    if pt == RTCP_SR:
        if len(body) < 24:
            raise ValueError("an RTCP SR is at least 28 bytes")
        ssrc = int.from_bytes(body[:4], "big")
        ntp_hi, ntp_lo, rtp_ts, packets, octets = _SR_INFO.unpack_from(body, 4)
        reports = _parse_blocks(body, 24, count)
        return SenderReport(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets, reports)
    if pt == RTCP_RR:
        if len(body) < 4:
            raise ValueError("an RTCP RR is at least 8 bytes")
        return ReceiverReport(int.from_bytes(body[:4], "big"), _parse_blocks(body, 4, count))
    if pt == RTCP_SDES:
        return _parse_sdes(body, count)
    if pt == RTCP_BYE:
        if 4 * count > len(body):
            raise ValueError(f"the BYE announces {count} sources that do not fit")
        ssrcs = list(struct.unpack_from(f"!{count}I", body))
        reason = b""
        pos = 4 * count
        if pos < len(body):
            length = body[pos]
            if pos + 1 + length > len(body):
                raise ValueError("the BYE reason overruns the packet")
            reason = body[pos + 1 : pos + 1 + length]
        return Bye(ssrcs, reason)
    return RtcpOther(pt, count, body)


def parse_rtcp(data: _Bytes) -> list[RtcpPacket]:
    """Split a compound RTCP packet and read each part.

    Raises:
        ValueError: not RTCP (version, a length that overruns the datagram or leaves bytes
            over, a packet type outside 192-223, a report that does not fit its length).
        TypeError: `data` is not bytes-like.
    """
    buf = _as_bytes(data)
    if len(buf) < 4:
        raise ValueError(f"an RTCP packet is at least 4 bytes, not {len(buf)}")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise ValueError(f"{len(buf) - pos} bytes after the last RTCP packet")
        first, pt, words = struct.unpack_from("!BBH", buf, pos)
        if first >> 6 != RTP_VERSION:
            raise ValueError(f"not RTCP version 2 (byte 0x{first:02x} at offset {pos})")
        if not 192 <= pt <= 223:
            raise ValueError(f"RTCP packet type {pt} is outside 192-223")
        end = pos + 4 + 4 * words
        if end > len(buf):
            raise ValueError(f"the RTCP packet at offset {pos} overruns the datagram")
        body = buf[pos + 4 : end]
        if first & 0x20:
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise ValueError(f"the RTCP padding count {pad} does not fit the packet")
            body = body[: len(body) - pad]
        packets.append(_parse_one(pt, first & 0x1F, body))
        pos = end
    return packets


# --- time ---------------------------------------------------------------------------------


def ntp_time(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp (RFC 5905: 32.32 fixed point since 1900) of a Unix time."""
    value = int((unix_seconds + NTP_UNIX_OFFSET) * (1 << 32))
    return value & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: RTCP's LSR, in 1/65536 s."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """The round-trip time from a report block about our stream (RFC 3550 §6.4.1).

    Args:
        arrival_ntp: the 64-bit NTP time (`ntp_time`) at which the report arrived.
        lsr: the block's LSR (the middle 32 bits of our SR's NTP time).
        dlsr: the block's DLSR (how long the peer held our SR, in 1/65536 s).

    Returns:
        Seconds, or None when the block has no LSR yet (the peer saw no SR) or the result
        would be negative (clocks or a corrupt block).
    """
    if lsr == 0:
        return None
    rtt = (ntp_middle(arrival_ntp) - lsr - dlsr) & 0xFFFFFFFF
    if rtt >= 1 << 31:
        return None
    return rtt / 65536.0


# --- statistics ---------------------------------------------------------------------------

_RTP_SEQ_MOD: Final = 1 << 16
_MAX_DROPOUT: Final = 3000
_MAX_MISORDER: Final = 100


class RtpReceiveStats:
    """The receive side of one source: RFC 3550 A.1, A.3 and A.8.

    `update` takes each packet's sequence number, timestamp and arrival time; `report_block`
    gives the reception report block and starts a new interval for `fraction_lost`.

    Sequence numbers are validated as A.1 does: a jump of less than `_MAX_DROPOUT` ahead is
    accepted (a wrap of 16 bits adds a cycle), up to `_MAX_MISORDER` behind is a late or
    duplicate packet, and anything else is a "bad" sequence number that restarts the count
    only when the next packet follows it (the source restarted). With `probation` > 0 a new
    source is valid only after that many packets in sequence (A.1's MIN_SEQUENTIAL, 2 for
    unauthenticated RTP); with SRTP, where every packet is authenticated, 0.

    As in A.1, `received` counts duplicates, so `lost` can be negative.

    Args:
        clock_rate: the RTP clock rate in Hz (arrival times are converted to it for jitter).
        probation: packets in sequence before the source is valid.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_clock_rate",
        "_cycles",
        "_expected_prior",
        "_jitter16",
        "_lsr",
        "_lsr_arrival",
        "_max_seq",
        "_min_sequential",
        "_probation",
        "_received",
        "_received_prior",
        "_started",
        "_steady",
        "_transit",
    )

    def __init__(self, clock_rate: int, probation: int = 0) -> None:
        if clock_rate <= 0:
            raise ValueError(f"the clock rate is a positive number of Hz, not {clock_rate}")
        self._clock_rate = clock_rate
        self._min_sequential = probation
        self._started = False
        self._steady = False  # started and not on probation: `update`'s common case
        self._probation = probation
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = _RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit = -1  # the last packet's transit time; < 0: none to compare with
        self._jitter16 = 0  # jitter in timestamp units, times 16 (A.8's integer form)
        self._lsr = 0
        self._lsr_arrival = 0.0

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def _update_seq(self, seq: int) -> bool:
        """A.1 `update_seq`: whether the packet counts (and `_steady` kept)."""
        counts = self._a1_update_seq(seq)
        self._steady = self._probation == 0  # (started now)
        return counts

    def _a1_update_seq(self, seq: int) -> bool:
        if not self._started:
            self._started = True
            self._init_seq(seq)
            if self._min_sequential == 0:
                self._received = 1
                return True
            self._max_seq = (seq - 1) & 0xFFFF
            self._probation = self._min_sequential
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            if seq == (self._max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._received += 1
                    return True
            else:
                self._probation = self._min_sequential - 1
                self._max_seq = seq
            return False
        if udelta < _MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += _RTP_SEQ_MOD
            self._max_seq = seq
        elif udelta <= _RTP_SEQ_MOD - _MAX_MISORDER:
            if seq == self._bad_seq:
                # two packets in sequence after a big jump: the source restarted
                self._init_seq(seq)
                self._transit = -1
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: a duplicate or a packet out of order, within _MAX_MISORDER
        self._received += 1
        return True

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Count one packet.

        Args:
            seq: its sequence number.
            timestamp: its RTP timestamp.
            arrival: when it arrived, in seconds on any steady clock.

        Returns:
            Whether the packet counts (False: the source is on probation, or the sequence
            number is out of range; the caller may drop it).
        """
        max_seq = self._max_seq
        if (seq - max_seq) & 0xFFFF < _MAX_DROPOUT and self._steady:
            # the common case of `_update_seq`, inline: in order, or a gap ahead
            if seq < max_seq:
                self._cycles += _RTP_SEQ_MOD
            self._max_seq = seq
            self._received += 1
        elif not self._update_seq(seq):
            return False
        # A.8: transit time in timestamp units; differences modulo 2**32 (timestamps wrap)
        transit = (round(arrival * self._clock_rate) - timestamp) & 0xFFFFFFFF
        last = self._transit
        if last >= 0:
            d = (transit - last) & 0xFFFFFFFF
            if d >= 0x80000000:
                d = 0x100000000 - d
            j = self._jitter16
            self._jitter16 = j + d - ((j + 8) >> 4)
        self._transit = transit
        return True

    def sender_report(self, ntp: int, arrival: float) -> None:
        """Note the peer's SR: its NTP time becomes LSR, `arrival` the start of DLSR.

        Args:
            ntp: the SR's 64-bit NTP timestamp.
            arrival: when it arrived, in seconds on the clock `report_block` gets.
        """
        self._lsr = ntp_middle(ntp)
        self._lsr_arrival = arrival

    @property
    def received(self) -> int:
        """Packets counted (duplicates included, as in A.1)."""
        return self._received

    @property
    def extended_max(self) -> int:
        """The extended highest sequence number received (cycles * 65536 + max)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected: extended highest - first + 1 (A.3)."""
        if not self._started or self._probation:
            return 0
        return self.extended_max - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (expected - received), clamped to 24 signed bits."""
        return max(-(1 << 23), min((1 << 23) - 1, self.expected - self._received))

    @property
    def jitter(self) -> int:
        """The interarrival jitter, in timestamp units."""
        return self._jitter16 >> 4

    @property
    def jitter_ms(self) -> float:
        """The interarrival jitter, in milliseconds."""
        return self.jitter * 1000.0 / self._clock_rate

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """The report block about this source, and the start of a new interval (A.3).

        Args:
            ssrc: the source's SSRC.
            now: the current time, on the clock `sender_report` got.

        Returns:
            The block; `fraction_lost` covers the packets since the previous call.
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self._lsr:
            dlsr = min(0xFFFFFFFF, max(0, int((now - self._lsr_arrival) * 65536)))
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            lost=self.lost,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=self.jitter,
            lsr=self._lsr,
            dlsr=dlsr,
        )


class RtpSendStats:
    """The send side of one source: what an SR says about it.

    `sent` counts a packet; a per-packet path may update the attributes itself, as
    `sent` does.

    Attributes:
        packets: RTP packets sent.
        octets: their payload octets.
        last_ts: the RTP timestamp of the last one (None before the first).
        last_time: when it was sent, in seconds.

    Args:
        clock_rate: the RTP clock rate in Hz.
    """

    __slots__ = ("_clock_rate", "last_time", "last_ts", "octets", "packets")

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"the clock rate is a positive number of Hz, not {clock_rate}")
        self._clock_rate = clock_rate
        self.packets = 0
        self.octets = 0
        self.last_ts: int | None = None
        self.last_time = 0.0

    def sent(self, payload_len: int, timestamp: int, now: float) -> None:
        """Count one RTP packet sent.

        Args:
            payload_len: its payload's length (RTP header and padding not counted).
            timestamp: its RTP timestamp.
            now: when it was sent, in seconds.
        """
        self.packets += 1
        self.octets += payload_len
        self.last_ts = timestamp
        self.last_time = now

    def sender_report(
        self, ssrc: int, now: float, unix_now: float, reports: list[ReportBlock] | None = None
    ) -> SenderReport | None:
        """The SR for this source, or None when nothing was sent yet (send an RR then).

        Its RTP timestamp is the last one sent advanced by the time since, so that it names
        the same instant as the NTP timestamp (RFC 3550 §6.4.1).

        Args:
            ssrc: this source's SSRC.
            now: the current time on the clock `sent` got.
            unix_now: the current Unix time (for the NTP timestamp).
            reports: report blocks to carry.
        """
        if self.last_ts is None:
            return None
        elapsed = max(0.0, now - self.last_time)
        rtp_ts = (self.last_ts + int(elapsed * self._clock_rate)) & 0xFFFFFFFF
        return SenderReport(
            ssrc=ssrc,
            ntp=ntp_time(unix_now),
            rtp_timestamp=rtp_ts,
            packets=self.packets & 0xFFFFFFFF,
            octets=self.octets & 0xFFFFFFFF,
            reports=list(reports or []),
        )


# --- telephone-events (RFC 4733) ----------------------------------------------------------

DTMF_DIGITS: Final = "0123456789*#ABCD"


def dtmf_event(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit ('0'-'9' 0-9, '*' 10, '#' 11, 'A'-'D' 12-15).

    Raises:
        ValueError: not one of those characters.
    """
    if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
        raise ValueError(f"a DTMF digit is one of 0-9, *, #, A-D, not {digit!r}")
    return DTMF_DIGITS.index(digit.upper())


def pack_dtmf(event: int, end: bool, volume: int, duration: int) -> bytes:
    """One telephone-event payload (RFC 4733 §2.3): event, E bit, volume, duration."""
    _check_u("the event", event, 8)
    _check_u("the volume", volume, 6)
    _check_u("the duration", duration, 16)
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def parse_dtmf(payload: _Bytes) -> tuple[int, bool, int, int]:
    """Read a telephone-event payload: (event, end, volume, duration).

    Raises:
        ValueError: shorter than 4 bytes.
    """
    buf = _as_bytes(payload)
    if len(buf) < 4:
        raise ValueError(f"a telephone-event payload is 4 bytes, not {len(buf)}")
    event, flags, duration = struct.unpack_from("!BBH", buf)
    return event, bool(flags & 0x80), flags & 0x3F, duration


@dataclass(slots=True, frozen=True)
class DtmfPacket:
    """One packet of a telephone-event, as `dtmf_packets` schedules it.

    Every packet of one event carries the same RTP timestamp (the event's start) and a new
    sequence number.

    Attributes:
        offset_ms: when to send it, in ms after the first.
        marker: the RTP M bit (the first packet of the event).
        end: the E bit (the last three packets).
        payload: the 4-byte payload.
    """

    offset_ms: int
    marker: bool
    end: bool
    payload: bytes


def dtmf_packets(
    digit: str,
    *,
    duration_ms: int = 100,
    clock_rate: int = 8000,
    interval_ms: int = 50,
    end_interval_ms: int = 20,
    volume: int = 10,
) -> list[DtmfPacket]:
    """The packets of one digit (RFC 4733 §2.5.1).

    The first packet has the marker; an update follows every `interval_ms` while the tone
    lasts, each with the duration the tone reaches at the next update; then the final
    packet, with the E bit and the whole duration, three times `end_interval_ms` apart
    (§2.5.1.4: the end is sent three times, in case one is lost). Durations are in
    timestamp units (`clock_rate`).

    Args:
        digit: '0'-'9', '*', '#', 'A'-'D'.
        duration_ms: how long the tone lasts.
        clock_rate: the telephone-event's RTP clock rate (8000; 48000 with opus).
        interval_ms: time between updates.
        end_interval_ms: time between the three end packets.
        volume: the power level, 0-63 (-dBm0).

    Raises:
        ValueError: not a DTMF digit, a duration that does not fit 16 bits of timestamp
            units, or an interval that is not positive.
    """
    event = dtmf_event(digit)
    if interval_ms <= 0 or end_interval_ms <= 0 or duration_ms <= 0:
        raise ValueError("the duration and the intervals of a DTMF digit are positive ms")
    total = duration_ms * clock_rate // 1000
    if total > 0xFFFF:
        raise ValueError(
            f"{duration_ms} ms is {total} timestamp units at {clock_rate} Hz; at most 65535"
        )
    packets = []
    offset = 0
    while offset < duration_ms:
        units = min(offset + interval_ms, duration_ms) * clock_rate // 1000
        packets.append(
            DtmfPacket(offset, offset == 0, False, pack_dtmf(event, False, volume, units))
        )
        offset += interval_ms
    last = pack_dtmf(event, True, volume, total)
    for i in range(3):
        packets.append(DtmfPacket(duration_ms + i * end_interval_ms, False, True, last))
    return packets


class DtmfReceiver:
    """Telephone-event packets in, one start and one end per digit out (RFC 4733 §2.5.2).

    An event is known by its RTP timestamp: packets with the timestamp of the event under
    way update it; the first packet of a new timestamp starts a new one (and ends the one
    under way, whose end packets were lost); an E bit ends it, once, whatever the redundant
    end packets. A lost start is no matter (any packet of the event starts it); lost end
    packets are covered by the next event or by `poll` after `timeout` seconds of silence.
    Packets of events that ended recently are ignored (late redundant ends). Events other
    than the 16 DTMF digits are ignored.

    `on_packet` and `poll` return the events as ("start", digit) and ("end", digit), in
    order.

    Args:
        timeout: seconds without a packet after which an event under way ends.
    """

    __slots__ = ("_current", "_digit", "_ended", "_last", "_timeout")

    def __init__(self, timeout: float = 0.25) -> None:
        self._timeout = timeout
        self._current: int | None = None  # timestamp of the event under way
        self._digit = ""
        self._last = 0.0
        self._ended: deque[int] = deque(maxlen=8)

    def on_packet(self, timestamp: int, payload: _Bytes, now: float) -> list[tuple[str, str]]:
        """Take one telephone-event packet.

        Args:
            timestamp: its RTP timestamp.
            payload: its payload.
            now: when it arrived, in seconds.

        Returns:
            What began or ended: [("start", d)], [("end", d)], both, or nothing.
        """
        try:
            event, end, _, _ = parse_dtmf(payload)
        except ValueError:
            return []
        if event >= len(DTMF_DIGITS) or timestamp in self._ended:
            return []
        out: list[tuple[str, str]] = []
        if self._current is not None and timestamp != self._current:
            out.append(self._end())
        if self._current is None:
            self._current = timestamp
            self._digit = DTMF_DIGITS[event]
            out.append(("start", self._digit))
        self._last = now
        if end:
            out.append(self._end())
        return out

    def poll(self, now: float) -> list[tuple[str, str]]:
        """End the event under way if no packet came for `timeout` seconds.

        Returns:
            [("end", d)] or nothing.
        """
        if self._current is not None and now - self._last >= self._timeout:
            return [self._end()]
        return []

    @property
    def active(self) -> bool:
        """Whether an event is under way (then `poll` is due)."""
        return self._current is not None

    def _end(self) -> tuple[str, str]:
        assert self._current is not None
        self._ended.append(self._current)
        self._current = None
        return ("end", self._digit)


# --- G.711 --------------------------------------------------------------------------------

_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for i, end in enumerate(ends):
        if value <= end:
            return i
    return len(ends)


def _ulaw_from_linear(sample: int) -> int:
    value = sample >> 2  # 14 bits
    if value < 0:
        value = -value
        mask = 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + 0x21  # clip, then add the bias (0x84 >> 2)
    seg = _segment(value, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def _ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    t = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - t if code & 0x80 else t - 0x84


def _alaw_from_linear(sample: int) -> int:
    value = sample >> 3  # 13 bits
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    seg = _segment(value, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    code = seg << 4
    code |= (value >> 1) & 0x0F if seg < 2 else (value >> seg) & 0x0F
    return code ^ mask


def _alaw_to_linear(code: int) -> int:
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        t += 8
    else:
        t = (t + 0x108) << (seg - 1)
    return t if code & 0x80 else -t


# Encoding tables indexed by the top 14 (µ-law) or 13 (A-law) bits of the sample as an
# unsigned number, built on first use (about 15 ms together, kept out of the import);
# decoding tables of 256 samples.
_ENCODERS: dict[str, bytes] = {}


def _ulaw_table() -> bytes:
    table = _ENCODERS.get("u")
    if table is None:
        table = _ENCODERS["u"] = bytes(
            _ulaw_from_linear((i - (1 << 14) if i >= 1 << 13 else i) << 2) for i in range(1 << 14)
        )
    return table


def _alaw_table() -> bytes:
    table = _ENCODERS.get("a")
    if table is None:
        table = _ENCODERS["a"] = bytes(
            _alaw_from_linear((i - (1 << 13) if i >= 1 << 12 else i) << 3) for i in range(1 << 13)
        )
    return table


_ULAW_DEC = array("h", (_ulaw_to_linear(c) for c in range(256)))
_ALAW_DEC = array("h", (_alaw_to_linear(c) for c in range(256)))


def _samples(pcm: _Bytes) -> array[int]:
    buf = _as_bytes(pcm)
    if len(buf) % 2:
        raise ValueError(f"16-bit PCM is an even number of bytes, not {len(buf)}")
    samples = array("h")
    samples.frombytes(buf)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _pcm(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def G711UEncode(pcm: _Bytes) -> bytes:
    """µ-law encode 16-bit signed little-endian samples (one byte per sample).

    Raises:
        ValueError: an odd number of bytes.
    """
    table = _ulaw_table()
    return bytes([table[(s >> 2) & 0x3FFF] for s in _samples(pcm)])


def G711UDecode(data: _Bytes) -> bytes:
    """µ-law decode to 16-bit signed little-endian samples."""
    table = _ULAW_DEC
    return _pcm(array("h", [table[b] for b in _as_bytes(data)]))


def G711AEncode(pcm: _Bytes) -> bytes:
    """A-law encode 16-bit signed little-endian samples (one byte per sample).

    Raises:
        ValueError: an odd number of bytes.
    """
    table = _alaw_table()
    return bytes([table[(s >> 3) & 0x1FFF] for s in _samples(pcm)])


def G711ADecode(data: _Bytes) -> bytes:
    """A-law decode to 16-bit signed little-endian samples."""
    table = _ALAW_DEC
    return _pcm(array("h", [table[b] for b in _as_bytes(data)]))
