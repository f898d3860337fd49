# ruff: noqa: E501  (SDP lines as Chrome writes them)
"""MediaConfigFromSdp / MediaConfigToSdp: Chrome's and aiortc's SDP read, ours accepted by aiortc.

Loop-free except the aiortc tests, which run aiortc on its own asyncio loop with candidates
restricted to 127.0.0.1 and no STUN server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usocket_asyncio import IInstanceLog, LogFlags
from usocket_asyncio._media_types import (
    CHANNEL_CANDIDATE_HOST,
    CHANNEL_CANDIDATE_PRFLX,
    CHANNEL_CANDIDATE_RELAY,
    CHANNEL_CANDIDATE_SRFLX,
    DEFAULT_PAYLOAD_TYPE_DTMF,
    DEFAULT_PAYLOAD_TYPE_OPUS,
    FAULT_CODE_RTP_DTLS_SRTP_FAILED,
    FAULT_CODE_RTP_ICE_FAILED,
    FAULT_CODE_RTP_SRTP_AUTH_FAILED,
    AudioCoder,
    Codec,
    IceCandidate,
    IceCandidates,
    MediaConfig,
    MediaEndpointEvent,
    MediaType,
    SetupRole,
)
from usocket_asyncio._sdp import MediaConfigFromSdp, MediaConfigToSdp, SdpAudioMid

SETTINGS = settings(
    derandomize=True,  # seeded: the same examples on every run
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

FP256 = "sha-256 " + ":".join(f"{i * 7 % 256:02X}" for i in range(32))

# What Chrome writes for an audio+video offer (shape of Chrome 120+; addresses are loopback
# or documentation ones): several codecs, extmap, ssrc, msid, TCP and mDNS candidates.
CHROME_OFFER = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 7b2b2b4e-1c1e-4d3c-9d7e-2d2f8e0c6a11
m=audio 50002 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 127.0.0.1
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 127.0.0.1 50002 typ host generation 0 network-id 1
a=candidate:2999745851 1 udp 2122194687 3b7e2f1c-8c8a-4c42-9d8e-0f5a1b2c3d4e.local 50004 typ host generation 0 network-id 2
a=candidate:467250027 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 network-id 1
a=candidate:842163049 1 udp 1686052607 203.0.113.7 61234 typ srflx raddr 127.0.0.1 rport 50002 generation 0 network-id 1
a=candidate:3307563226 1 udp 41885439 198.51.100.9 3478 typ relay raddr 203.0.113.7 rport 61234 generation 0 network-id 1
a=ice-ufrag:Hq3x
a=ice-pwd:4mJ0l0mR6j2d0rk5x1X3b7Zc
a=ice-options:trickle
a=fingerprint:sha-256 1F:5C:2B:9E:44:0A:71:3D:88:C2:60:AF:17:E9:5B:0C:D4:33:6A:9F:02:BE:71:48:C5:1D:E0:93:6F:A2:58:7B
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:7b2b2b4e-1c1e-4d3c-9d7e-2d2f8e0c6a11 0e6a4c55-0a8e-4bbf-9a38-8f8c3b9b8b11
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:oQn9PvG0cJc2QxZk
a=ssrc:3735928559 msid:7b2b2b4e-1c1e-4d3c-9d7e-2d2f8e0c6a11 0e6a4c55-0a8e-4bbf-9a38-8f8c3b9b8b11
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Hq3x
a=ice-pwd:4mJ0l0mR6j2d0rk5x1X3b7Zc
a=fingerprint:sha-256 1F:5C:2B:9E:44:0A:71:3D:88:C2:60:AF:17:E9:5B:0C:D4:33:6A:9F:02:BE:71:48:C5:1D:E0:93:6F:A2:58:7B
a=setup:actpass
a=mid:1
a=sendrecv
a=rtcp-mux
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
""".replace("\n", "\r\n")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def media_log() -> Iterator[tuple[IInstanceLog, _Lines]]:
    logger = logging.getLogger("test_sdp")
    handler = _Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield IInstanceLog(LogFlags.LOG_MEDIA, logger), handler
    finally:
        logger.removeHandler(handler)


def test_the_sdk_values() -> None:
    # media.h: enum AudioCoder from UNDEFINED = 0, the #defines, enum MediaEndpointEvent
    assert (AudioCoder.G711_A, AudioCoder.G711_U, AudioCoder.G722) == (1, 2, 22)
    assert (AudioCoder.DTMF, AudioCoder.OPUS_NB, AudioCoder.OPUS_WB) == (19, 25, 26)
    assert [int(r) for r in SetupRole] == [0, 1, 2, 3, 4]
    assert [int(e) for e in MediaEndpointEvent] == [0, 1, 2, 3]
    assert MediaEndpointEvent(2).name == "CHANNEL_MEDIA_STATISTICS"
    assert (DEFAULT_PAYLOAD_TYPE_DTMF, DEFAULT_PAYLOAD_TYPE_OPUS) == (101, 109)
    assert FAULT_CODE_RTP_SRTP_AUTH_FAILED == 0x50005
    assert FAULT_CODE_RTP_ICE_FAILED == 0x50008
    assert FAULT_CODE_RTP_DTLS_SRTP_FAILED == 0x50009
    assert (
        CHANNEL_CANDIDATE_HOST,
        CHANNEL_CANDIDATE_SRFLX,
        CHANNEL_CANDIDATE_PRFLX,
        CHANNEL_CANDIDATE_RELAY,
    ) == (0, 1, 2, 3)


def test_chrome_offer(media_log: tuple[IInstanceLog, _Lines]) -> None:
    log, lines = media_log
    config, setup, lite = MediaConfigFromSdp(CHROME_OFFER, log=log)
    assert setup == SetupRole.SETUP_ROLE_ACTPASS
    assert lite is False
    assert (config.type, config.defAddr, config.defPort) == (MediaType.AUDIO, "127.0.0.1", 50002)
    assert [(c.coder, c.pt, c.rate, c.number) for c in config.codecList] == [
        (AudioCoder.OPUS_WB, 111, 48000, 0),
        (AudioCoder.G722, 9, 8000, 1),
        (AudioCoder.G711_U, 0, 8000, 2),
        (AudioCoder.G711_A, 8, 8000, 3),
        (AudioCoder.DTMF, 110, 48000, 4),
        (AudioCoder.DTMF, 126, 8000, 5),
    ]
    ice = config.ice
    assert ice is not None
    assert (ice.iceUfrag, ice.icePwd, ice.rtcpMux) == ("Hq3x", "4mJ0l0mR6j2d0rk5x1X3b7Zc", True)
    assert ice.fingerprint is not None and ice.fingerprint.startswith("sha-256 1F:5C:2B:")
    assert ice.candidateList == [
        IceCandidate("127.0.0.1", 50002, 50002, 2122260223, 0, CHANNEL_CANDIDATE_HOST, "1467250027"),
        IceCandidate(
            "203.0.113.7", 61234, 61234, 1686052607, 0, CHANNEL_CANDIDATE_SRFLX, "842163049",
            "127.0.0.1", 50002,
        ),
        IceCandidate(
            "198.51.100.9", 3478, 3478, 41885439, 0, CHANNEL_CANDIDATE_RELAY, "3307563226",
            "203.0.113.7", 61234,
        ),
    ]  # fmt: skip
    # the skipped ones are logged: the mDNS and TCP candidates, red and CN
    text = "\n".join(lines.lines)
    assert "mDNS" in text and ".local" in text
    assert "tcp candidate" in text
    assert "payload type 63 (red/48000/2) skipped" in text
    assert "payload type 13 (CN/8000) skipped" in text
    assert SdpAudioMid(CHROME_OFFER) == "0"


def test_session_level_credentials_ice_lite_and_lf_line_ends() -> None:
    sdp = (
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nt=0 0\na=ice-lite\n"
        "a=ice-ufrag:abcd\na=ice-pwd:0123456789abcdef012345\n"
        f"a=fingerprint:SHA-1 {':'.join(['ab'] * 20)}\na=setup:passive\nc=IN IP4 127.0.0.2\n"
        "m=audio 4000 UDP/TLS/RTP/SAVPF 8 101\na=rtpmap:101 telephone-event/8000\n"
        "a=fmtp:101 0-16\na=ptime:30\n"
        "a=candidate:1 1 UDP 2130706431 127.0.0.2 4000 typ host\n"
        "a=candidate:1 2 UDP 2130706430 127.0.0.2 4001 typ host\n"
    )
    config, setup, lite = MediaConfigFromSdp(sdp)
    assert (setup, lite) == (SetupRole.SETUP_ROLE_PASSIVE, True)
    assert config.defAddr == "127.0.0.2"
    assert config.ice is not None
    assert config.ice.fingerprint == "sha-1 " + ":".join(["AB"] * 20)
    assert (config.ice.iceUfrag, config.ice.rtcpMux) == ("abcd", False)
    assert config.codecList == [
        Codec(AudioCoder.G711_A, 0, 8, 8000, 30, 30),
        Codec(AudioCoder.DTMF, 1, 101, 8000, 30, 30),
    ]
    # component 2 on a port of its own is kept beside component 1
    assert config.ice.candidateList == [
        IceCandidate("127.0.0.2", 4000, 4001, 2130706431, 2130706430, CHANNEL_CANDIDATE_HOST, "1")
    ]


def test_plain_rtp_peer() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n"
    config, setup, lite = MediaConfigFromSdp(sdp)
    assert config.ice is None
    assert (config.defAddr, config.defPort, setup, lite) == (
        "127.0.0.1", 5004, SetupRole.SETUP_ROLE_NONE, False,
    )  # fmt: skip
    assert config.codecList == [Codec(AudioCoder.G711_U, 0, 0, 8000)]


@pytest.mark.parametrize(
    ("sdp", "words"),
    [
        ("", "starts with the line v=0"),
        ("hello", "starts with the line v=0"),
        ("v=0\r\nthis is no sdp\r\n", "<letter>=<value>"),
        ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nm=video 9 RTP/AVP 96\r\n", "no audio section"),
        ("v=0\r\nm=audio 5004 RTP/AVP 0\r\n", "no c= line"),
        ("v=0\r\nc=IN IP4 nowhere\r\nm=audio 5004 RTP/AVP 0\r\n", "no IP address"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 99999 RTP/AVP 0\r\n", "port"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP\r\n", "audio <port>"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 96\r\n", "no codec"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP x\r\n", "payload type"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/SAVP 0\r\na=crypto:1 AES\r\n", "SDES"),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\na=ice-ufrag:ab\r\n", "ice-pwd"),
        (
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5 RTP/AVP 0\r\na=fingerprint:sha-256 AB:CD\r\n",
            "32 hex pairs",
        ),
        (
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5 RTP/AVP 0\r\na=fingerprint:md5 AB:CD\r\n",
            "no fingerprint with a supported hash",
        ),
        ("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5 RTP/AVP 0\r\na=setup:both\r\n", "a=setup"),
        (
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5 RTP/AVP 0\r\na=ice-ufrag:ab\r\n"
            "a=ice-pwd:abcdefghijklmnopqrstuv\r\na=candidate:1 1 udp 1 127.0.0.1 5\r\n",
            "a=candidate",
        ),
    ],
)
def test_malformed_sdp_raises_value_error(sdp: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        MediaConfigFromSdp(sdp)


def test_not_a_str() -> None:
    with pytest.raises(TypeError, match="str"):
        MediaConfigFromSdp(b"v=0")  # type: ignore[arg-type]


def _config(port: int = 40000, fingerprint: str | None = FP256) -> MediaConfig:
    return MediaConfig(
        type=MediaType.AUDIO,
        defAddr="127.0.0.1",
        defPort=port,
        ice=IceCandidates(
            fingerprint=fingerprint,
            iceUfrag="u1Fr",
            icePwd="pwdpwdpwdpwdpwdpwdpwdpwd",
            rtcpMux=True,
            candidateList=[
                IceCandidate("127.0.0.1", port, port, 2130706431, 0, CHANNEL_CANDIDATE_HOST, "h1"),
                IceCandidate(
                    "192.0.2.1", 50000, 50000, 1694498815, 0, CHANNEL_CANDIDATE_SRFLX, "s1",
                    "127.0.0.1", port,
                ),
                IceCandidate("::1", port, port, 2130706175, 0, CHANNEL_CANDIDATE_HOST, "h2"),
            ],
        ),
        codecList=[
            Codec(AudioCoder.OPUS_WB, 0, DEFAULT_PAYLOAD_TYPE_OPUS, 48000),
            Codec(AudioCoder.G711_U, 1, 0, 8000),
            Codec(AudioCoder.G711_A, 2, 8, 8000),
            Codec(AudioCoder.G722, 3, 9, 8000),
            Codec(AudioCoder.DTMF, 4, DEFAULT_PAYLOAD_TYPE_DTMF, 8000),
        ],
    )  # fmt: skip


@pytest.mark.parametrize("setup", list(SetupRole))
@pytest.mark.parametrize("lite", [False, True])
def test_round_trip(setup: SetupRole, lite: bool) -> None:
    config = _config()
    sdp = MediaConfigToSdp(config, setup, iceLite=lite, mid="audio0", ssrc=0xDEADBEEF)
    back, back_setup, back_lite = MediaConfigFromSdp(sdp)
    assert (back, back_setup, back_lite) == (config, setup, lite)
    assert SdpAudioMid(sdp) == "audio0"
    assert "a=group:BUNDLE audio0\r\n" in sdp and "a=ssrc:3735928559 cname:" in sdp
    assert "a=fmtp:101 0-15\r\n" in sdp and "a=sendrecv\r\n" in sdp and "msid" not in sdp


def test_round_trip_plain_rtp_and_ptime_and_rtcp_port() -> None:
    plain = MediaConfig(
        MediaType.AUDIO, "::1", 5004, None, [Codec(AudioCoder.G711_A, 0, 8, 8000, 40, 40)]
    )
    sdp = MediaConfigToSdp(plain, SetupRole.SETUP_ROLE_NONE)
    assert "m=audio 5004 RTP/AVP 8\r\nc=IN IP6 ::1\r\n" in sdp and "a=setup" not in sdp
    assert MediaConfigFromSdp(sdp) == (plain, SetupRole.SETUP_ROLE_NONE, False)
    split = _config()
    assert split.ice is not None
    split.ice.rtcpMux = False
    split.ice.candidateList[0].rtcpPort = 40001
    split.ice.candidateList[0].rtcpPriority = 2130706430
    assert MediaConfigFromSdp(MediaConfigToSdp(split, SetupRole.SETUP_ROLE_ACTIVE))[0] == split


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: setattr(c, "type", MediaType.VIDEO), "audio sections only"),
        (lambda c: setattr(c, "codecList", []), "no codec"),
        (lambda c: setattr(c, "codecList", c.codecList[-1:]), "only telephone-event"),
        (lambda c: setattr(c.codecList[0], "coder", AudioCoder.G729), "cannot write G729"),
        (lambda c: setattr(c.codecList[0], "pt", 128), "payload type 128"),
        (lambda c: setattr(c, "defAddr", "example.org"), "not an IP address"),
        (lambda c: setattr(c.ice, "icePwd", None), "without the other"),
        (lambda c: setattr(c.ice, "iceUfrag", "a b"), "cannot carry"),
        (lambda c: setattr(c.ice, "iceUfrag", "abc"), "4-256"),
        (lambda c: setattr(c.ice, "icePwd", "x" * 21), "22-256"),
        (lambda c: setattr(c.ice, "fingerprint", "md5 AB"), "fingerprint"),
        (lambda c: setattr(c.ice.candidateList[0], "type", 9), "CHANNEL_CANDIDATE_"),
        (lambda c: setattr(c.ice.candidateList[0], "addr", "x.local"), "not an IP address"),
    ],
)
def test_to_sdp_refuses_what_it_cannot_write(change: object, words: str) -> None:
    config = _config()
    change(config)  # type: ignore[operator]
    with pytest.raises(ValueError, match=words):
        MediaConfigToSdp(config, SetupRole.SETUP_ROLE_ACTPASS)


def test_to_sdp_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mid"):
        MediaConfigToSdp(_config(), SetupRole.SETUP_ROLE_ACTPASS, mid="a b")
    with pytest.raises(ValueError, match="32-bit"):
        MediaConfigToSdp(_config(), SetupRole.SETUP_ROLE_ACTPASS, ssrc=1 << 32)
    with pytest.raises(ValueError):
        MediaConfigToSdp(_config(), 7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MediaConfig"):
        MediaConfigToSdp("v=0", SetupRole.SETUP_ROLE_ACTPASS)  # type: ignore[arg-type]


# --- aiortc, a real WebRTC stack -------------------------------------------------------------


def _loopback_config() -> MediaConfig:
    """`_config` with its loopback candidates only: aiortc sends checks to every candidate
    it is given, and no datagram may leave the machine. Port 9 (discard): nobody answers."""
    config = _config(port=9)
    assert config.ice is not None
    config.ice.candidateList = [
        c for c in config.ice.candidateList if ipaddress.ip_address(c.addr).is_loopback
    ]
    assert config.ice.candidateList
    return config


def _aiortc_run(coro_fn: object) -> object:
    """Run aiortc on a loop of its own, its candidates on 127.0.0.1. Every datagram it
    sends is recorded; one to an address off the machine is dropped, not sent, and fails
    the test."""
    from asyncio.selector_events import _SelectorDatagramTransport  # type: ignore[attr-defined]

    import aioice.ice

    real_sendto = _SelectorDatagramTransport.sendto
    sent_to: list[Any] = []

    def sendto(self: Any, data: Any, addr: Any = None) -> None:
        sent_to.append(addr)
        if addr is None or ipaddress.ip_address(addr[0]).is_loopback:
            real_sendto(self, data, addr)

    with (
        mock.patch.object(aioice.ice, "get_host_addresses", return_value=["127.0.0.1"]),
        mock.patch.object(_SelectorDatagramTransport, "sendto", sendto),
    ):
        result = asyncio.run(coro_fn())  # type: ignore[operator]
    off = [a for a in sent_to if a is not None and not ipaddress.ip_address(a[0]).is_loopback]
    assert not off, f"aiortc sent to {off}"
    return result


def test_reads_aiortc_offer() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    async def offer() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("audio", direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    sdp = _aiortc_run(offer)
    assert isinstance(sdp, str)
    config, setup, lite = MediaConfigFromSdp(sdp)
    assert (setup, lite) == (SetupRole.SETUP_ROLE_ACTPASS, False)
    assert [c.coder for c in config.codecList] == [
        AudioCoder.OPUS_WB,
        AudioCoder.G722,
        AudioCoder.G711_U,
        AudioCoder.G711_A,
    ]
    assert config.ice is not None and config.ice.rtcpMux
    assert config.ice.fingerprint is not None
    assert config.ice.fingerprint.split()[0] == "sha-256"  # the first of aiortc's three
    hosts = config.ice.candidateList
    assert [(c.addr, c.type) for c in hosts] == [("127.0.0.1", CHANNEL_CANDIDATE_HOST)]
    assert hosts[0].rtpPort == config.defPort


@pytest.mark.parametrize("setup", [SetupRole.SETUP_ROLE_ACTPASS, SetupRole.SETUP_ROLE_PASSIVE])
def test_aiortc_answers_our_offer(setup: SetupRole) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    offer = MediaConfigToSdp(_loopback_config(), setup, ssrc=1234)

    async def answer() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    sdp = _aiortc_run(answer)
    assert isinstance(sdp, str)
    config, their_setup, _ = MediaConfigFromSdp(sdp)
    # aiortc answers actpass with active, and passive with active
    assert their_setup == SetupRole.SETUP_ROLE_ACTIVE
    # it keeps the codecs it shares with us, in our order, with our payload types
    assert [(c.coder, c.pt) for c in config.codecList] == [
        (AudioCoder.OPUS_WB, DEFAULT_PAYLOAD_TYPE_OPUS),
        (AudioCoder.G711_U, 0),
        (AudioCoder.G711_A, 8),
        (AudioCoder.G722, 9),
    ]
    assert SdpAudioMid(sdp) == "0"
    assert config.ice is not None and config.ice.candidateList


def test_aiortc_offer_answered_by_us() -> None:
    """Our answer to aiortc's offer (its mid, codec payload types) is one aiortc accepts."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    async def call() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("audio", direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            remote, _, _ = MediaConfigFromSdp(offer)
            mine = _loopback_config()
            mine.codecList = [c for c in remote.codecList if c.coder == AudioCoder.G711_U]
            mine.codecList[0].number = 0
            mid = SdpAudioMid(offer)
            assert mid is not None
            answer = MediaConfigToSdp(mine, SetupRole.SETUP_ROLE_PASSIVE, mid=mid)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            return str(pc.signalingState)
        finally:
            await pc.close()

    assert _aiortc_run(call) == "stable"


def test_candidate_components_in_any_order(media_log: tuple[IInstanceLog, _Lines]) -> None:
    log, lines = media_log
    sdp = (
        "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n"
        "a=candidate:7 2 udp 100 127.0.0.1 4001 typ host\r\n"  # before its component 1
        "a=candidate:7 1 udp 101 127.0.0.1 4000 typ host\r\n"
        "a=candidate:7 1 udp 99 127.0.0.1 4002 typ host\r\n"  # same foundation, other port
        "a=candidate:8 2 udp 98 127.0.0.1 4009 typ host\r\n"  # no component 1
        "a=candidate:9 1 udp 97 127.0.0.1 0 typ host\r\n"  # port 0
        "a=candidate:10 3 udp 96 127.0.0.1 4010 typ host\r\n"  # component 3
        "a=candidate:11 1 udp 95 127.0.0.1 4011 typ unknown\r\n"
    )
    config, _, _ = MediaConfigFromSdp(sdp, log=log)
    assert config.ice is not None
    assert config.ice.candidateList == [
        IceCandidate("127.0.0.1", 4000, 4001, 101, 100, CHANNEL_CANDIDATE_HOST, "7"),
        IceCandidate("127.0.0.1", 4002, 4002, 99, 0, CHANNEL_CANDIDATE_HOST, "7"),
    ]
    text = "\n".join(lines.lines)
    assert "8 127.0.0.1 component 2 skipped (no component 1)" in text
    assert "(port 0)" in text and "(component 3)" in text and "(unknown type unknown)" in text


@SETTINGS
@given(st.text(max_size=300))
def test_from_sdp_on_any_text_raises_only_value_error(text: str) -> None:
    for sdp in (text, "v=0\r\n" + text, CHROME_OFFER[:200] + text):
        try:
            MediaConfigFromSdp(sdp)
        except ValueError:
            pass


@SETTINGS
@given(st.data())
def test_from_sdp_on_damaged_chrome_sdp(data: st.DataObject) -> None:
    """Chrome's offer with lines dropped, repeated or changed: a config or a ValueError."""
    lines = CHROME_OFFER.split("\r\n")
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "repeat", "cut", "noise"]))
        if action == "drop":
            del lines[i]
        elif action == "repeat":
            lines.insert(i, lines[i])
        elif action == "cut":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        else:
            lines[i] += data.draw(st.text(max_size=12))
        if not lines:
            break
    try:
        config, _, _ = MediaConfigFromSdp("\r\n".join(lines))
    except ValueError:
        return
    assert config.codecList and config.type == MediaType.AUDIO


# What Firefox writes (its shape: session-level fingerprint and ice-options, upper-case UDP,
# candidates before the end-of-candidates of each section).
FIREFOX_OFFER = """v=0
o=mozilla...THIS_IS_SDPARTA-99.0 5129388411394870812 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9
a=group:BUNDLE 0
a=ice-options:trickle
a=msid-semantic:WMS *
m=audio 40412 UDP/TLS/RTP/SAVPF 109 9 0 8 101
c=IN IP4 127.0.0.1
a=candidate:0 1 UDP 2122252543 127.0.0.1 40412 typ host
a=candidate:1 1 TCP 2105524479 127.0.0.1 9 typ host tcptype active
a=sendrecv
a=end-of-candidates
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
a=fmtp:101 0-15
a=ice-pwd:2f3b0a5c0e9d6a7e4f1b2c3d4e5f6a7b
a=ice-ufrag:8a1c2b3d
a=mid:0
a=msid:{5a2b1c0d-7e6f-4a3b-9c8d-1e2f3a4b5c6d} {0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000/1
a=setup:actpass
a=ssrc:2655508255 cname:{8a0b1c2d-3e4f-5a6b-7c8d-9e0f1a2b3c4d}
""".replace("\n", "\r\n")


def test_firefox_offer() -> None:
    config, setup, lite = MediaConfigFromSdp(FIREFOX_OFFER)
    assert (setup, lite, config.defPort) == (SetupRole.SETUP_ROLE_ACTPASS, False, 40412)
    assert [(c.coder, c.pt, c.rate) for c in config.codecList] == [
        (AudioCoder.OPUS_WB, 109, 48000),
        (AudioCoder.G722, 9, 8000),  # G722/8000/1: the channel count written out
        (AudioCoder.G711_U, 0, 8000),
        (AudioCoder.G711_A, 8, 8000),
        (AudioCoder.DTMF, 101, 8000),
    ]
    ice = config.ice
    assert ice is not None and ice.rtcpMux
    assert ice.fingerprint is not None and ice.fingerprint.startswith("sha-256 0A:1B:")
    assert (ice.iceUfrag, ice.icePwd) == ("8a1c2b3d", "2f3b0a5c0e9d6a7e4f1b2c3d4e5f6a7b")
    assert ice.candidateList == [
        IceCandidate("127.0.0.1", 40412, 40412, 2122252543, 0, CHANNEL_CANDIDATE_HOST, "0")
    ]


def test_chrome_answer_without_candidates_yet() -> None:
    """Chrome's answer before its candidates trickle in: port 9, c=0.0.0.0, a=setup:active."""
    sdp = (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0 101\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:Zx9q\r\na=ice-pwd:qwertyuiopasdfghjklzxcvb\r\na=ice-options:trickle\r\n"
        f"a=fingerprint:{FP256}\r\na=setup:active\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    config, setup, _ = MediaConfigFromSdp(sdp)
    assert setup == SetupRole.SETUP_ROLE_ACTIVE
    assert (config.defAddr, config.defPort) == ("0.0.0.0", 9)
    assert config.ice is not None and config.ice.candidateList == []
    assert config.ice.fingerprint == FP256
