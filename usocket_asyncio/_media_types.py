"""The data of the SDK's media interface (`common/interface/media.h`): enums, constants, configs.

The SDK's C structs (`MediaConfig`, `IceCandidates`, `IceCandidate`, `Codec`,
`EventMediaStatistics`, `EventMediaError`) are dataclasses here with the SDK's field names;
its lists (`istd::list`) are Python lists, its `char *` strings are `str` (None where the SDK
has NULL). The enums and `#define`s keep the SDK's names and values; the prefixed enum
members (`SETUP_ROLE_*`, `CHANNEL_*`) are also module-level names, as they are global names
in C++.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final


class MediaType(enum.IntEnum):
    """What a media stream carries (`enum MediaType`). This version does `AUDIO`."""

    AUDIO = 0
    VIDEO = 1
    APPSHARING = 2
    MP4_CONTAINER = 3
    WEBM_VP8_CONTAINER = 4
    WEBM_VP9_CONTAINER = 5
    APPSHARING_CONTAINER = 6


class AudioCoder(enum.IntEnum):
    """The audio coders of the SDK (`enum AudioCoder`), with its values.

    `MediaConfigFromSdp`/`MediaConfigToSdp` know `G711_U` (PCMU), `G711_A` (PCMA), `G722`,
    `OPUS_WB` (opus/48000/2) and `DTMF` (telephone-event); the other coders are names only.
    """

    UNDEFINED = 0
    G711_A = 1
    G711_U = 2
    G723_53 = 3
    G723_63 = 4
    G729 = 5
    G729A = 6
    G729B = 7
    G729AB = 8
    G726_40 = 9
    G726_32 = 10
    G726_24 = 11
    G726_16 = 12
    GSM = 13
    DVI4 = 14
    LPC = 15
    L16 = 16
    ILBC = 17
    SPEEX = 18
    DTMF = 19
    CN = 20
    RED = 21
    G722 = 22
    G7221 = 23
    CLEARCHANNEL = 24
    OPUS_NB = 25
    OPUS_WB = 26
    AMR_WB = 27


class SetupRole(enum.IntEnum):
    """The DTLS role of `a=setup` (RFC 4145, RFC 5763) (`enum SetupRole`)."""

    SETUP_ROLE_NONE = 0
    SETUP_ROLE_ACTIVE = 1
    SETUP_ROLE_PASSIVE = 2
    SETUP_ROLE_ACTPASS = 3
    SETUP_ROLE_HOLDCONN = 4


SETUP_ROLE_NONE: Final = SetupRole.SETUP_ROLE_NONE
SETUP_ROLE_ACTIVE: Final = SetupRole.SETUP_ROLE_ACTIVE
SETUP_ROLE_PASSIVE: Final = SetupRole.SETUP_ROLE_PASSIVE
SETUP_ROLE_ACTPASS: Final = SetupRole.SETUP_ROLE_ACTPASS
SETUP_ROLE_HOLDCONN: Final = SetupRole.SETUP_ROLE_HOLDCONN


class MediaEndpointEvent(enum.IntEnum):
    """What `UMedia.MediaEventReceived` reports (`enum MediaEndpointEvent`).

    `CHANNEL_MEDIA_STATISTICS` comes with an `EventMediaStatistics` as its context,
    `CHANNEL_MEDIA_ERROR` with an `EventMediaError`. The first two are video events of the
    SDK, never reported for audio.
    """

    CHANNEL_FULL_INTRA_REQUEST = 0
    CHANNEL_PACKET_LOST_INDICATION = 1
    CHANNEL_MEDIA_STATISTICS = 2
    CHANNEL_MEDIA_ERROR = 3


CHANNEL_FULL_INTRA_REQUEST: Final = MediaEndpointEvent.CHANNEL_FULL_INTRA_REQUEST
CHANNEL_PACKET_LOST_INDICATION: Final = MediaEndpointEvent.CHANNEL_PACKET_LOST_INDICATION
CHANNEL_MEDIA_STATISTICS: Final = MediaEndpointEvent.CHANNEL_MEDIA_STATISTICS
CHANNEL_MEDIA_ERROR: Final = MediaEndpointEvent.CHANNEL_MEDIA_ERROR

# ICE candidate types (IceCandidate.type)
CHANNEL_CANDIDATE_HOST: Final = 0
CHANNEL_CANDIDATE_SRFLX: Final = 1
CHANNEL_CANDIDATE_PRFLX: Final = 2
CHANNEL_CANDIDATE_RELAY: Final = 3

# The SDK's payload types: the static ones of RFC 3551, its choices for the dynamic ones.
DEFAULT_PAYLOAD_TYPE_G711_U: Final = 0
DEFAULT_PAYLOAD_TYPE_G726: Final = 2
DEFAULT_PAYLOAD_TYPE_GSM: Final = 3
DEFAULT_PAYLOAD_TYPE_G723: Final = 4
DEFAULT_PAYLOAD_TYPE_DVI4: Final = 5
DEFAULT_PAYLOAD_TYPE_LPC: Final = 7
DEFAULT_PAYLOAD_TYPE_G711_A: Final = 8
DEFAULT_PAYLOAD_TYPE_G722: Final = 9
DEFAULT_PAYLOAD_TYPE_L16: Final = 10
DEFAULT_PAYLOAD_TYPE_G729: Final = 18
DEFAULT_PAYLOAD_TYPE_CN: Final = 19
DEFAULT_PAYLOAD_TYPE_DTMF: Final = 101
DEFAULT_PAYLOAD_TYPE_H264: Final = 102
DEFAULT_PAYLOAD_TYPE_VP8: Final = 107
DEFAULT_PAYLOAD_TYPE_VP9: Final = 108
DEFAULT_PAYLOAD_TYPE_OPUS: Final = 109
DEFAULT_PAYLOAD_TYPE_AMR: Final = 110

# Fault codes of EventMediaError.code
FAULT_CODE_RTP: Final = 0x00050000
FAULT_CODE_RTP_NO_MEDIA_DATA: Final = FAULT_CODE_RTP | 1
FAULT_CODE_RTP_EXCESSIVE_LOSS_OF_DATA: Final = FAULT_CODE_RTP | 2
FAULT_CODE_RTP_WRONG_PAYLOAD_TYPE: Final = FAULT_CODE_RTP | 3
FAULT_CODE_RTP_STUN_FAILED: Final = FAULT_CODE_RTP | 4
FAULT_CODE_RTP_SRTP_AUTH_FAILED: Final = FAULT_CODE_RTP | 5
FAULT_CODE_RTP_SRTCP_AUTH_FAILED: Final = FAULT_CODE_RTP | 6
FAULT_CODE_RTP_STUN_DNS_FAILED: Final = FAULT_CODE_RTP | 7
FAULT_CODE_RTP_ICE_FAILED: Final = FAULT_CODE_RTP | 8
FAULT_CODE_RTP_DTLS_SRTP_FAILED: Final = FAULT_CODE_RTP | 9
FAULT_CODE_RTP_RECORDING_FAILED: Final = FAULT_CODE_RTP | 10


@dataclass(slots=True)
class Codec:
    """One codec of a `MediaConfig` (the SDK's `class Codec`).

    Attributes:
        coder: which coder (`AudioCoder`).
        number: the coder's place in the list it came from (0 for the first).
        pt: the RTP payload type.
        rate: the RTP clock rate in Hz (8000 for G.711 and G.722, 48000 for opus).
        xmitPacket: the packet time this side sends, in ms (`a=ptime`).
        recvPacket: the packet time this side wants to receive, in ms.
        flags: the SDK's coder flags (none are used by this version).
        addr: an address of its own for this codec, or None (the config's `defAddr`).
        port: a port of its own, or 0.
    """

    coder: AudioCoder
    number: int
    pt: int
    rate: int
    xmitPacket: int = 20
    recvPacket: int = 20
    flags: int = 0
    addr: str | None = None
    port: int = 0


@dataclass(slots=True)
class IceCandidate:
    """One ICE candidate (RFC 8445) (the SDK's `class IceCandidate`).

    With rtcp-mux RTP and RTCP share the port: `rtcpPort` equals `rtpPort` and
    `rtcpPriority` is the priority a component-2 candidate would have (or 0).

    Attributes:
        addr: the candidate's IP address, as text.
        rtpPort: its port for RTP (component 1).
        rtcpPort: its port for RTCP (component 2).
        rtpPriority: the candidate's priority for component 1.
        rtcpPriority: its priority for component 2.
        type: `CHANNEL_CANDIDATE_HOST`, `_SRFLX`, `_PRFLX` or `_RELAY`.
        foundation: the foundation string.
        relatedAddr: `raddr` of a reflexive or relayed candidate, or None.
        relatedRtpPort: `rport` for component 1, or 0.
        relatedRtcpPort: `rport` for component 2, or 0.
    """

    addr: str
    rtpPort: int
    rtcpPort: int
    rtpPriority: int
    rtcpPriority: int
    type: int
    foundation: str
    relatedAddr: str | None = None
    relatedRtpPort: int = 0
    relatedRtcpPort: int = 0


@dataclass(slots=True)
class IceCandidates:
    """A side's ICE credentials, DTLS fingerprint and candidates (the SDK's `IceCandidates`).

    Attributes:
        fingerprint: the DTLS certificate's fingerprint as SDP writes it, hash name first
            (`"sha-256 AB:CD:..."`), or None for plain RTP. sha-1, sha-224, sha-256, sha-384
            and sha-512 are accepted from a peer.
        iceUfrag: the ICE username fragment, or None without ICE.
        icePwd: the ICE password, or None without ICE.
        rtcpMux: RTP and RTCP on one port (RFC 5761).
        candidateList: the candidates.
    """

    fingerprint: str | None
    iceUfrag: str | None
    icePwd: str | None
    rtcpMux: bool
    candidateList: list[IceCandidate] = field(default_factory=list)


@dataclass(slots=True)
class MediaConfig:
    """One side's media description (the SDK's `class MediaConfig`).

    Attributes:
        type: the media (`MediaType.AUDIO`).
        defAddr: the default address (SDP `c=`), where a plain RTP peer sends.
        defPort: the default port (SDP `m=`).
        ice: ICE and DTLS data, or None for a plain RTP peer.
        codecList: the codecs in order of preference, `telephone-event` included.
        mcAddr: a multicast address, or None.
        mcPort: a multicast port, or 0.
    """

    type: MediaType
    defAddr: str
    defPort: int
    ice: IceCandidates | None
    codecList: list[Codec]
    mcAddr: str | None = None
    mcPort: int = 0


@dataclass(slots=True)
class EventMediaStatistics:
    """The context of `CHANNEL_MEDIA_STATISTICS` (the SDK's `EventMediaStatistics`).

    Attributes:
        xmit: False: this side's receive statistics; True: the peer's, from its RTCP reports.
        loss: the fraction lost since the last report, in 1/256 (RFC 3550's `fraction lost`).
        jitter: the interarrival jitter in ms.
        roundTrip: the round-trip time in ms (from LSR/DLSR; 0 while unknown).
    """

    xmit: bool = False
    loss: int = 0
    jitter: int = 0
    roundTrip: int = 0


@dataclass(slots=True)
class EventMediaError:
    """The context of `CHANNEL_MEDIA_ERROR` (the SDK's `EventMediaError`).

    Attributes:
        code: a `FAULT_CODE_RTP_*` constant.
        errorText: what happened, in words.
        src: where: the part of the stream that failed (`"ice"`, `"dtls"`, `"srtp"`, ...).
    """

    code: int
    errorText: str
    src: str
