"""RTP/RTCP packing and parsing, RFC 3550 statistics, RFC 4733 events, G.711: no loop, no clock.

Times are plain numbers passed in; the statistics are checked against scenarios computed by
hand from RFC 3550 A.1/A.3/A.8 (written out beside each assertion).
"""

from __future__ import annotations

import math
import random
import struct
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usocket_asyncio._rtp import (
    Bye,
    DtmfReceiver,
    G711ADecode,
    G711AEncode,
    G711UDecode,
    G711UEncode,
    ReceiverReport,
    ReportBlock,
    RtcpOther,
    RtcpPacket,
    RtpReceiveStats,
    RtpSendStats,
    Sdes,
    SenderReport,
    dtmf_event,
    dtmf_packets,
    is_rtcp,
    ntp_middle,
    ntp_time,
    pack_dtmf,
    pack_rtcp,
    pack_rtp,
    parse_dtmf,
    parse_rtcp,
    parse_rtp,
    round_trip,
    rtp_header,
)

SETTINGS = settings(
    derandomize=True,  # seeded: the same examples on every run
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

u32 = st.integers(0, 0xFFFFFFFF)


# --- RTP ----------------------------------------------------------------------------------


def test_rtp_header_bytes() -> None:
    packet = pack_rtp(0, 1, 160, 0x01020304, b"\xff" * 4, marker=True)
    assert packet.hex() == "8080000100" + "0000a001020304" + "ffffffff"
    assert rtp_header(111, 0xFFFF, 0xFFFFFFFF, 7) == bytes.fromhex("806fffffffffffff00000007")


def test_parse_rtp_with_csrcs_extension_and_padding() -> None:
    # V=2 P=1 X=1 CC=2, M=1 PT=96, seq 0x1234, ts 0xdeadbeef, ssrc 1,
    # CSRCs 2 and 3, extension profile 0xbede with one word, payload "abc", 5 bytes padding
    raw = bytes.fromhex("b2e01234deadbeef000000010000000200000003bede000110ff00006162630000000005")
    p = parse_rtp(raw)
    assert (p.pt, p.marker, p.seq, p.timestamp, p.ssrc) == (96, True, 0x1234, 0xDEADBEEF, 1)
    assert p.csrcs == (2, 3)
    assert p.extension == (0xBEDE, bytes.fromhex("10ff0000"))
    assert (p.payload, p.padding) == (b"abc", 5)
    again = pack_rtp(
        96, 0x1234, 0xDEADBEEF, 1, b"abc", marker=True, csrcs=(2, 3),
        extension=(0xBEDE, bytes.fromhex("10ff0000")), padding=5,
    )  # fmt: skip
    assert again == raw


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("80000001000000000000", "at least 12"),
        ("400000010000000000000001", "version 2"),
        ("820000010000000000000001" + "00000002", "CSRCs"),
        ("900000010000000000000001" + "bede", "extension header"),
        ("900000010000000000000001" + "bede0002" + "00000000", "overruns"),
        ("a00000010000000000000001" + "616200", "padding count 0"),
        ("a00000010000000000000001" + "616209", "padding count 9"),
    ],
)
def test_parse_rtp_refuses(raw: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_rtp(bytes.fromhex(raw))


def test_pack_rtp_refuses_out_of_range() -> None:
    with pytest.raises(ValueError, match="payload type"):
        rtp_header(128, 0, 0, 0)
    with pytest.raises(ValueError, match="sequence"):
        rtp_header(0, 1 << 16, 0, 0)
    with pytest.raises(ValueError, match="15 CSRCs"):
        pack_rtp(0, 0, 0, 0, b"", csrcs=list(range(16)))
    with pytest.raises(ValueError, match="multiple of 4"):
        pack_rtp(0, 0, 0, 0, b"", extension=(1, b"abc"))
    with pytest.raises(TypeError):
        pack_rtp(0, 0, 0, 0, "text")  # type: ignore[arg-type]


def test_is_rtcp_by_rfc_5761() -> None:
    assert is_rtcp(bytes((0x80, 200)))  # SR
    assert is_rtcp(bytes((0x81, 201)))  # RR
    assert is_rtcp(bytes((0x80, 192))) and is_rtcp(bytes((0x80, 223)))
    assert not is_rtcp(bytes((0x80, 224)))
    assert not is_rtcp(rtp_header(0, 1, 2, 3))
    assert not is_rtcp(rtp_header(111, 1, 2, 3, marker=True))  # 0xef
    assert not is_rtcp(rtp_header(63, 1, 2, 3, marker=True)) and not is_rtcp(b"\x80")


@SETTINGS
@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=u32,
    ssrc=u32,
    marker=st.booleans(),
    payload=st.binary(max_size=200),
    csrcs=st.lists(u32, max_size=15),
    ext=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)),
    padding=st.integers(0, 255),
)
def test_rtp_round_trip(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    marker: bool,
    payload: bytes,
    csrcs: list[int],
    ext: tuple[int, bytes] | None,
    padding: int,
) -> None:
    if ext is not None:
        ext = (ext[0], ext[1][: len(ext[1]) // 4 * 4])
    raw = pack_rtp(
        pt, seq, ts, ssrc, payload, marker=marker, csrcs=csrcs, extension=ext, padding=padding
    )
    p = parse_rtp(raw)
    assert (p.pt, p.seq, p.timestamp, p.ssrc, p.marker) == (pt, seq, ts, ssrc, marker)
    assert (p.payload, p.csrcs, p.extension, p.padding) == (payload, tuple(csrcs), ext, padding)


@SETTINGS
@given(st.binary(max_size=120))
def test_parse_rtp_raises_only_value_error(data: bytes) -> None:
    try:
        p = parse_rtp(data)
    except ValueError:
        return
    assert len(p.payload) + p.padding + 12 + 4 * len(p.csrcs) <= len(data)


@SETTINGS
@given(st.binary(min_size=12, max_size=60), st.integers(0, 59), st.integers(0, 255))
def test_parse_rtp_on_corrupted_packets(data: bytes, where: int, value: int) -> None:
    raw = bytearray(b"\x80" + data[1:])
    raw[where % len(raw)] = value
    try:
        parse_rtp(bytes(raw))
    except ValueError:
        pass


# --- RTCP ---------------------------------------------------------------------------------


def test_parse_receiver_report_bytes() -> None:
    raw = bytes.fromhex("81c9000711223344aabbccdd40fffffe00010005000000201234567800008000")
    assert parse_rtcp(raw) == [
        ReceiverReport(
            0x11223344, [ReportBlock(0xAABBCCDD, 64, -2, 0x10005, 32, 0x12345678, 0x8000)]
        )
    ]
    assert pack_rtcp(parse_rtcp(raw)) == raw


def test_compound_round_trip() -> None:
    sr = SenderReport(
        ssrc=1,
        ntp=ntp_time(1_700_000_000.25),
        rtp_timestamp=0xFFFFFF00,
        packets=500,
        octets=80000,
        reports=[
            ReportBlock(2, 25, 3, 70000, 12, 0xABCD0000, 100),
            ReportBlock(3, 0, -5, 10, 0, 0, 0),
        ],
    )
    packets: list[RtcpPacket] = [
        sr,
        Sdes([(1, [(1, b"user@host")]), (4, [(1, b"x"), (2, b"name")])]),
        RtcpOther(205, 1, bytes(8)),  # an RTPFB (generic NACK) kept as it is
        Bye([1], b"done"),
    ]
    raw = pack_rtcp(packets)
    assert len(raw) % 4 == 0
    assert parse_rtcp(raw) == packets
    # the SR's length field: (4 + 20 + 2 * 24) / 4 = 18 words after the header
    assert raw[:4] == bytes.fromhex("82c80012")


def test_rtcp_with_padding() -> None:
    body = bytes.fromhex("00000001")  # RR of SSRC 1, no blocks, 4 bytes of padding
    raw = bytes.fromhex("a0c90002") + body + bytes.fromhex("00000004")
    assert parse_rtcp(raw) == [ReceiverReport(1, [])]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("80c9", "at least 4"),
        ("40c9000100000001", "version 2"),
        ("80c8000100000001", "SR is at least"),
        ("81c9000100000001", "do not fit"),
        ("80c9000200000001", "overruns"),
        ("81ca000100000001", "no terminating null"),
        ("80e0000100000001", "outside 192-223"),
        ("80c900010000000100", "after the last"),
        ("81cb0000", "sources that do not fit"),
    ],
)
def test_parse_rtcp_refuses(raw: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_rtcp(bytes.fromhex(raw))


@SETTINGS
@given(st.binary(max_size=160))
def test_parse_rtcp_raises_only_value_error(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except ValueError:
        pass


@SETTINGS
@given(st.lists(st.integers(0, 255), min_size=4, max_size=100), st.integers(0, 99))
def test_parse_rtcp_on_corrupted_reports(noise: list[int], where: int) -> None:
    raw = bytearray(
        pack_rtcp([SenderReport(1, 2, 3, 4, 5, [ReportBlock(6, 7, 8, 9, 10, 11, 12)]), Bye([1])])
    )
    raw[where % len(raw)] = noise[0]
    raw += bytes(noise[1:])
    try:
        parse_rtcp(bytes(raw))
    except ValueError:
        pass


block = st.builds(
    ReportBlock,
    u32,
    st.integers(0, 255),
    st.integers(-(1 << 23), (1 << 23) - 1),
    u32,
    u32,
    u32,
    u32,
)


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.builds(
                SenderReport,
                u32,
                st.integers(0, (1 << 64) - 1),
                u32,
                u32,
                u32,
                st.lists(block, max_size=3),
            ),
            st.builds(ReceiverReport, u32, st.lists(block, max_size=3)),
            st.builds(
                Sdes,
                st.lists(
                    st.tuples(
                        u32,
                        st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=20)), max_size=3),
                    ),
                    max_size=3,
                ),
            ),
            st.builds(Bye, st.lists(u32, max_size=3), st.binary(max_size=20)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_rtcp_round_trip(packets: list[RtcpPacket]) -> None:
    assert parse_rtcp(pack_rtcp(packets)) == packets


# --- statistics ---------------------------------------------------------------------------


def test_receive_stats_loss_reorder_duplicate() -> None:
    """Seqs 100-109 sent; arrivals 100 101 103 102 103 105 106 108 109 (104 and 107 lost,
    102 late, 103 twice). A.1 counts the duplicate, so lost = 10 expected - 9 received = 1."""
    stats = RtpReceiveStats(8000)
    now = 0.0
    for seq in (100, 101, 103, 102, 103, 105, 106, 108, 109):
        assert stats.update(seq, seq * 160, now)
        now += 0.02
    assert (stats.expected, stats.received, stats.lost, stats.extended_max) == (10, 9, 1, 109)
    first = stats.report_block(0x55, now)
    # fraction: lost 1 of 10 expected in the interval -> (1 << 8) // 10 = 25
    assert (first.ssrc, first.fraction_lost, first.lost, first.highest_seq) == (0x55, 25, 1, 109)
    assert (first.lsr, first.dlsr) == (0, 0)
    # second interval: 110-119 all there -> fraction 0, cumulative still 1
    for seq in range(110, 120):
        stats.update(seq, seq * 160, now)
        now += 0.02
    second = stats.report_block(0x55, now)
    assert (second.fraction_lost, second.lost, second.highest_seq) == (0, 1, 119)
    # third: 120-129 without 125 and 127 -> 2 of 10 -> 51; cumulative 3
    for seq in range(120, 130):
        if seq not in (125, 127):
            stats.update(seq, seq * 160, now)
        now += 0.02
    third = stats.report_block(0x55, now)
    assert (third.fraction_lost, third.lost, third.highest_seq) == (51, 3, 129)
    # an interval with nothing: fraction 0
    assert stats.report_block(0x55, now).fraction_lost == 0


def test_receive_stats_more_duplicates_than_loss() -> None:
    stats = RtpReceiveStats(8000)
    for seq in (1, 2, 2, 2, 3):
        stats.update(seq, 0, 0.0)
    assert (stats.expected, stats.received, stats.lost) == (3, 5, -2)
    b = stats.report_block(1, 0.0)
    assert (b.lost, b.fraction_lost) == (-2, 0)  # a negative interval loss reports 0
    assert parse_rtcp(pack_rtcp([ReceiverReport(9, [b])]))[0] == ReceiverReport(9, [b])


def test_receive_stats_sequence_wrap() -> None:
    stats = RtpReceiveStats(8000)
    for seq in (65533, 65534, 65535, 0, 1, 65535 - 1, 2):  # 65534 again after the wrap: late
        stats.update(seq, 0, 0.0)
    # cycles 1: extended max = 65536 + 2; expected = 65538 - 65533 + 1 = 6; received 7
    assert stats.extended_max == 65538
    assert (stats.expected, stats.received, stats.lost) == (6, 7, -1)
    assert stats.report_block(1, 0.0).highest_seq == 65538


def test_receive_stats_many_wraps() -> None:
    stats = RtpReceiveStats(8000)
    seq = 40000
    for _ in range(3 * 65536):
        stats.update(seq, 0, 0.0)
        seq = (seq + 1) & 0xFFFF
    assert stats.extended_max == 40000 + 3 * 65536 - 1
    assert (stats.expected, stats.lost) == (3 * 65536, 0)


def test_receive_stats_restart_after_a_jump() -> None:
    stats = RtpReceiveStats(8000)
    for k, seq in enumerate((1000, 1001, 1002)):
        assert stats.update(seq, k * 160, k * 0.02)
    assert not stats.update(40000, 7_000_000, 0.06)  # a jump: not counted yet
    # the next in sequence: the source restarted, with timestamps of its own; its jitter
    # does not count the jump of the timestamps
    assert stats.update(40001, 7_000_160, 0.08)
    assert stats.jitter == 0
    assert (stats.expected, stats.received, stats.extended_max) == (1, 1, 40001)
    assert not stats.update(5000, 0, 0.0)  # a lone far packet is dropped
    assert stats.update(40002, 0, 0.0)
    assert (stats.expected, stats.received) == (2, 2)


def test_receive_stats_probation() -> None:
    stats = RtpReceiveStats(8000, probation=2)
    assert not stats.update(10, 0, 0.0)
    assert stats.expected == 0
    assert stats.update(11, 160, 0.02)
    assert (stats.expected, stats.received) == (1, 1)
    other = RtpReceiveStats(8000, probation=2)
    assert not other.update(10, 0, 0.0)
    assert not other.update(20, 0, 0.0)  # not in sequence: probation starts over
    assert other.update(21, 0, 0.0)
    assert (other.expected, other.received) == (1, 1)


def test_jitter_hand_computed() -> None:
    """A.8 in its integer form, J16 += |D| - ((J16 + 8) >> 4); 20 ms packets at 8 kHz.

    packet 0: on time (transit 0); 1: on time, D 0 -> J16 0; 2: 5 ms late (transit 40),
    D 40 -> J16 40, J 2; 3: on time, D 40 -> J16 = 40 + 40 - 3 = 77, J 4; 4: on time,
    D 0 -> J16 = 77 - 5 = 72, J 4.
    """
    stats = RtpReceiveStats(8000)
    late = {2: 40}
    seen = []
    for k in range(5):
        stats.update(k, k * 160, (k * 160 + late.get(k, 0)) / 8000)
        seen.append(stats.jitter)
    assert seen == [0, 0, 2, 4, 4]
    assert stats.jitter_ms == 0.5
    assert stats.report_block(1, 0.0).jitter == 4


def test_jitter_across_the_timestamp_wrap() -> None:
    """A steady stream whose timestamps wrap 2**32 has no jitter; one with a constant
    random offset neither (transit differences are taken modulo 2**32)."""
    stats = RtpReceiveStats(48000)
    ts = (1 << 32) - 5 * 960
    for k in range(10):
        stats.update(k, ts, 1000.0 + k * 0.02)
        ts = (ts + 960) & 0xFFFFFFFF
    assert stats.jitter == 0
    # one packet 10 ms late just after the wrap: D = 480 both ways, J16 = 480, then 480+480-30
    stats.update(10, ts, 1000.0 + 10 * 0.02 + 0.01)
    assert stats.jitter == 30
    stats.update(11, (ts + 960) & 0xFFFFFFFF, 1000.0 + 11 * 0.02)
    assert stats.jitter == (480 + 480 - 30) >> 4


def test_lsr_dlsr_and_round_trip() -> None:
    ours = ntp_time(1000.0)  # our SR goes out at Unix time 1000.0
    peer = RtpReceiveStats(8000)
    peer.update(1, 0, 50.0)
    peer.sender_report(ours, arrival=50.125)  # the peer's clock is its own
    b = peer.report_block(7, now=50.625)  # it holds our SR 0.5 s
    assert b.lsr == ntp_middle(ours) == ((1000 + 2208988800) << 16) & 0xFFFFFFFF
    assert b.dlsr == 32768
    # the report arrives 0.875 s after our SR: 0.875 - 0.5 = 0.375 s round trip
    rtt = round_trip(ntp_time(1000.875), b.lsr, b.dlsr)
    assert rtt is not None and abs(rtt - 0.375) < 2 / 65536
    assert round_trip(ntp_time(1000.875), 0, 0) is None  # no SR seen yet
    assert round_trip(ntp_time(1000.0), b.lsr, 65536) is None  # negative: nonsense


def test_ntp_time() -> None:
    assert ntp_time(0.0) == 2208988800 << 32
    assert ntp_time(1.5) == ((2208988801 << 32) | (1 << 31))


def test_send_stats_sender_report() -> None:
    stats = RtpSendStats(8000)
    assert stats.sender_report(1, 0.0, 1000.0) is None  # nothing sent: an RR is due
    for k in range(3):
        stats.sent(160, (0xFFFFFF00 + k * 160) & 0xFFFFFFFF, k * 0.02)
    sr = stats.sender_report(0xAB, 0.05, 1000.5, [ReportBlock(1, 0, 0, 0, 0, 0, 0)])
    assert sr is not None
    # last timestamp 0xffffff00 + 320 wraps to 0x40; 10 ms later +80
    assert (sr.ssrc, sr.packets, sr.octets, sr.rtp_timestamp) == (0xAB, 3, 480, 0x40 + 80)
    assert sr.ntp == ntp_time(1000.5) and len(sr.reports) == 1


# --- telephone-events ---------------------------------------------------------------------


def test_dtmf_codes() -> None:
    assert [dtmf_event(d) for d in "0123456789*#ABCDabcd"] == [*range(16), 12, 13, 14, 15]
    for bad in ("", "12", "E", "x", 5):
        with pytest.raises(ValueError, match="DTMF digit"):
            dtmf_event(bad)  # type: ignore[arg-type]
    assert pack_dtmf(11, True, 10, 800) == bytes.fromhex("0b8a0320")
    assert parse_dtmf(bytes.fromhex("0b8a0320")) == (11, True, 10, 800)
    with pytest.raises(ValueError, match="4 bytes"):
        parse_dtmf(b"\x01")


def test_dtmf_sender_schedule() -> None:
    packets = dtmf_packets("5")  # 100 ms, updates every 50 ms, at 8 kHz
    assert [(p.offset_ms, p.marker, p.end, p.payload.hex()) for p in packets] == [
        (0, True, False, "050a0190"),  # duration 400 units (50 ms)
        (50, False, False, "050a0320"),  # 800
        (100, False, True, "058a0320"),  # the end, three times
        (120, False, True, "058a0320"),
        (140, False, True, "058a0320"),
    ]
    long = dtmf_packets("#", duration_ms=160, clock_rate=48000)
    durations = [parse_dtmf(p.payload)[3] for p in long]
    assert durations == [2400, 4800, 7200, 7680, 7680, 7680, 7680]
    assert [p.offset_ms for p in long] == [0, 50, 100, 150, 160, 180, 200]
    assert sum(p.marker for p in long) == 1
    with pytest.raises(ValueError, match="65535"):
        dtmf_packets("1", duration_ms=2000, clock_rate=48000)
    with pytest.raises(ValueError, match="positive"):
        dtmf_packets("1", interval_ms=0)


def _feed(rx: DtmfReceiver, items: list[tuple[int, bytes, float]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for ts, payload, now in items:
        out += rx.on_packet(ts, payload, now)
    return out


def _digit(d: str, ts: int, t0: float) -> list[tuple[int, bytes, float]]:
    return [(ts, p.payload, t0 + p.offset_ms / 1000) for p in dtmf_packets(d)]


def test_dtmf_receiver_once_per_digit() -> None:
    rx = DtmfReceiver()
    events = _feed(rx, _digit("1", 1000, 0.0) + _digit("1", 5000, 0.5) + _digit("#", 9000, 1.0))
    assert events == [
        ("start", "1"), ("end", "1"), ("start", "1"), ("end", "1"), ("start", "#"), ("end", "#"),
    ]  # fmt: skip
    assert not rx.active and rx.poll(10.0) == []


def test_dtmf_receiver_lost_start_and_lost_end() -> None:
    rx = DtmfReceiver()
    seven = _digit("7", 1000, 0.0)
    nine = _digit("9", 5000, 0.5)
    # the start of 7 lost: its update starts it; all of 7's ends lost: 9 ends it first
    assert _feed(rx, seven[1:2]) == [("start", "7")]
    assert _feed(rx, nine[:1]) == [("end", "7"), ("start", "9")]
    # a late redundant end of 7 after that is ignored; 9's three ends end it once
    assert _feed(rx, seven[2:3]) == []
    assert _feed(rx, nine[1:]) == [("end", "9")]
    # only an end packet of a digit: start and end at once
    assert _feed(rx, _digit("A", 9000, 1.0)[-1:]) == [("start", "A"), ("end", "A")]


def test_dtmf_receiver_timeout_ends_a_digit() -> None:
    rx = DtmfReceiver(timeout=0.25)
    assert _feed(rx, _digit("3", 1000, 0.0)[:2]) == [("start", "3")]
    assert rx.active
    assert rx.poll(0.05 + 0.2) == []
    assert rx.poll(0.05 + 0.25) == [("end", "3")]
    assert rx.poll(1.0) == []
    # its end packets arrive after all: nothing more
    assert _feed(rx, _digit("3", 1000, 0.0)[2:]) == []


def test_dtmf_receiver_ignores_other_events_and_garbage() -> None:
    rx = DtmfReceiver()
    assert rx.on_packet(1, pack_dtmf(16, False, 10, 400), 0.0) == []  # flash: not a digit
    assert rx.on_packet(2, b"\x01\x02", 0.0) == []
    assert not rx.active


@settings(SETTINGS, max_examples=100)
@given(st.data())
def test_dtmf_any_loss_gives_one_start_and_one_end_per_digit(data: st.DataObject) -> None:
    """Send "0123456789*#ABCD" through any loss and reordering within a digit's packets,
    keeping at least one packet of each: exactly start, end per digit, in order."""
    rx = DtmfReceiver()
    events: list[tuple[str, str]] = []
    now = 0.0
    for i, digit in enumerate("0123456789*#ABCD"):
        packets = _digit(digit, 1000 + 4000 * i, now)
        kept = data.draw(st.lists(st.sampled_from(packets), min_size=1, max_size=len(packets) + 3))
        for ts, payload, _ in kept:
            events += rx.on_packet(ts, payload, now)
        now += 0.5
    events += rx.poll(now + 1.0)
    assert events == [(kind, d) for d in "0123456789*#ABCD" for kind in ("start", "end")]


# --- G.711 --------------------------------------------------------------------------------


def _audioop() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")


ALL_SAMPLES = struct.pack("<65536h", *range(-32768, 32768))


def test_g711_known_values() -> None:
    assert G711UEncode(struct.pack("<3h", 0, 32767, -32768)) == bytes((0xFF, 0x80, 0x00))
    assert G711AEncode(struct.pack("<3h", 0, 32767, -32768)) == bytes((0xD5, 0xAA, 0x2A))
    assert struct.unpack("<4h", G711UDecode(bytes((0xFF, 0x7F, 0x00, 0x80)))) == (
        0, 0, -32124, 32124,
    )  # fmt: skip
    assert struct.unpack("<4h", G711ADecode(bytes((0xD5, 0x55, 0x2A, 0xAA)))) == (
        8, -8, -32256, 32256,
    )  # fmt: skip
    with pytest.raises(ValueError, match="even number"):
        G711UEncode(b"\x00")


def test_g711_matches_audioop_on_every_sample() -> None:
    audioop = _audioop()
    assert G711UEncode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert G711AEncode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    codes = bytes(range(256))
    assert G711UDecode(codes) == audioop.ulaw2lin(codes, 2)
    assert G711ADecode(codes) == audioop.alaw2lin(codes, 2)


def test_g711_code_round_trip() -> None:
    codes = bytes(range(256))
    # every code but µ-law's negative zero (0x7f, decoded 0, encoded 0xff) comes back
    assert G711UEncode(G711UDecode(codes)) == codes.replace(b"\x7f", b"\xff")
    assert G711AEncode(G711ADecode(codes)) == codes


@pytest.mark.parametrize("amplitude", [16384, 1000])
@pytest.mark.parametrize(("enc", "dec"), [(G711UEncode, G711UDecode), (G711AEncode, G711ADecode)])
def test_g711_tone_quality(enc: object, dec: object, amplitude: int) -> None:
    """The 1004 Hz test tone, loud (-6 dBFS) or soft (-30 dBFS), keeps a signal-to-noise
    ratio above 35 dB through the codec (G.711's companding keeps it about constant:
    36-39 dB measured)."""
    tone = [round(amplitude * math.sin(2 * math.pi * 1004 * n / 8000 + 0.1)) for n in range(8000)]
    pcm = struct.pack(f"<{len(tone)}h", *tone)
    back = struct.unpack(f"<{len(tone)}h", dec(enc(pcm)))  # type: ignore[operator]
    noise = sum((a - b) ** 2 for a, b in zip(tone, back, strict=True))
    signal = sum(a * a for a in tone)
    assert 10 * math.log10(signal / noise) > 35


def test_g711_random_round_trip_error_bound() -> None:
    rng = random.Random(7)
    samples = [rng.randint(-32768, 32767) for _ in range(4000)]
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    for enc, dec in ((G711UEncode, G711UDecode), (G711AEncode, G711ADecode)):
        back = struct.unpack(f"<{len(samples)}h", dec(enc(pcm)))
        # the quantization step is at most 1/16 of the magnitude, plus the clip at 32124/32256
        for a, b in zip(samples, back, strict=True):
            assert abs(a - b) <= max(abs(a) / 16 + 16, 1024 if abs(a) > 31000 else 0)
