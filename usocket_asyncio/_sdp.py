"""SDP for WebRTC peers: a `MediaConfig` from an offer or answer, and one written as SDP.

Beyond the SDK, which leaves signaling to the app. What is read (RFC 8866, RFC 8839,
RFC 8842, RFC 5761, RFC 4145):

- the first `m=audio` section: its port (`defPort`), its `c=` (media level, else session
  level: `defAddr`), its codecs in the order of the `m=` line;
- `a=ice-ufrag`, `a=ice-pwd`, `a=fingerprint` and `a=setup` at media level, else at session
  level; `a=ice-lite` at either level; `a=rtcp-mux`;
- UDP candidates of the four types. TCP candidates and mDNS (`*.local`) or other host-name
  candidates are skipped (this side speaks UDP to IP addresses only), and so are codecs it
  does not know; each skip is logged under `LOG_MEDIA` when a log is given.

Codecs known: PCMU (`G711_U`), PCMA (`G711_A`), G722, opus/48000/2 (`OPUS_WB`) and
telephone-event (`DTMF`, at any clock rate). Everything else (extmap, ssrc, msid, rtcp-fb,
fmtp of other codecs, bandwidth) is read past. SDES keying (`a=crypto` on RTP/SAVP without a
fingerprint) is refused: only DTLS-SRTP or plain RTP.

What is written is one audio section, bundled (`a=group:BUNDLE`), with rtcp-mux,
`a=sendrecv`, ICE credentials and candidates (only component 1 when RTCP is muxed on the
RTP port), the fingerprint and `a=setup`, the codecs with `telephone-event` fmtp `0-15`,
and no msid (browsers make a stream of their own for it).
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from ._log import IInstanceLog
from ._media_types import (
    CHANNEL_CANDIDATE_HOST,
    CHANNEL_CANDIDATE_PRFLX,
    CHANNEL_CANDIDATE_RELAY,
    CHANNEL_CANDIDATE_SRFLX,
    AudioCoder,
    Codec,
    IceCandidate,
    IceCandidates,
    MediaConfig,
    MediaType,
    SetupRole,
)
from ._types import LogFlags

_CANDIDATE_TYPES = {
    "host": CHANNEL_CANDIDATE_HOST,
    "srflx": CHANNEL_CANDIDATE_SRFLX,
    "prflx": CHANNEL_CANDIDATE_PRFLX,
    "relay": CHANNEL_CANDIDATE_RELAY,
}
_CANDIDATE_NAMES = {v: k for k, v in _CANDIDATE_TYPES.items()}

_SETUP = {
    "active": SetupRole.SETUP_ROLE_ACTIVE,
    "passive": SetupRole.SETUP_ROLE_PASSIVE,
    "actpass": SetupRole.SETUP_ROLE_ACTPASS,
    "holdconn": SetupRole.SETUP_ROLE_HOLDCONN,
}
_SETUP_NAMES = {v: k for k, v in _SETUP.items()}

# hash name -> digest length in bytes (RFC 8122 names, as SDP writes them)
_HASHES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}

# encoding name (lower case), clock rate -> coder; telephone-event at any rate
_CODECS: dict[tuple[str, int], AudioCoder] = {
    ("pcmu", 8000): AudioCoder.G711_U,
    ("pcma", 8000): AudioCoder.G711_A,
    ("g722", 8000): AudioCoder.G722,
    ("opus", 48000): AudioCoder.OPUS_WB,
}
# payload types of RFC 3551 that need no rtpmap
_STATIC: dict[int, tuple[AudioCoder, int]] = {
    0: (AudioCoder.G711_U, 8000),
    8: (AudioCoder.G711_A, 8000),
    9: (AudioCoder.G722, 8000),
}
# coder -> (encoding name as written, channels suffix)
_NAMES: dict[AudioCoder, tuple[str, str]] = {
    AudioCoder.G711_U: ("PCMU", ""),
    AudioCoder.G711_A: ("PCMA", ""),
    AudioCoder.G722: ("G722", ""),
    AudioCoder.OPUS_WB: ("opus", "/2"),
    AudioCoder.DTMF: ("telephone-event", ""),
}

_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
_HEX_PAIRS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*$")


class _Section:
    """The lines of one SDP level: attributes in order, and the `c=` line."""

    __slots__ = ("attrs", "conn", "media")

    def __init__(self, media: str | None) -> None:
        self.media = media
        self.conn: str | None = None
        self.attrs: list[tuple[str, str]] = []

    def get(self, name: str) -> str | None:
        for key, value in self.attrs:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.attrs if key == name]

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.attrs)


def _split(sdp: str) -> tuple[_Section, list[_Section]]:
    if not isinstance(sdp, str):
        raise TypeError(f"the SDP is a str, not {type(sdp).__name__}")
    lines = [line for line in re.split(r"\r?\n", sdp) if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise ValueError("this is not SDP: an SDP text starts with the line v=0")
    session = _Section(None)
    sections: list[_Section] = []
    current = session
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise ValueError(
                f"SDP line {number} ({line[:40]!r}) is not of the form <letter>=<value>"
            )
        kind, value = line[0], line[2:]
        if kind == "m":
            current = _Section(value)
            sections.append(current)
        elif kind == "c":
            current.conn = value
        elif kind == "a":
            name, _, rest = value.partition(":")
            current.attrs.append((name.strip().lower(), rest.strip()))
    return session, sections


def _first_audio(sections: list[_Section]) -> _Section | None:
    return next((s for s in sections if s.media is not None and s.media.startswith("audio ")), None)


def _log(log: IInstanceLog | None, fmt: str, *args: object) -> None:
    if log is not None:
        log.Log(LogFlags.LOG_MEDIA, fmt, *args)


def _address(conn: str) -> str:
    parts = conn.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise ValueError(f"the SDP line c={conn} is not 'IN IP4 <address>' or 'IN IP6 <address>'")
    addr = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"the SDP line c={conn} has no IP address") from None
    return addr


def _port(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{what} {text!r} is not a port number (0-65535)")
    return int(text)


def _fingerprint(values: list[str], log: IInstanceLog | None) -> str | None:
    """The first fingerprint with a known hash, normalized: lower-case name, upper-case hex."""
    if not values:
        return None
    for value in values:
        parts = value.split()
        if len(parts) != 2:
            raise ValueError(f"a=fingerprint:{value} is not '<hash> <hex>:<hex>:...'")
        name, digest = parts[0].lower(), parts[1]
        if name not in _HASHES:
            _log(log, "SDP: fingerprint with hash %s skipped (not supported)", name)
            continue
        if not _HEX_PAIRS.match(digest) or len(digest) != 3 * _HASHES[name] - 1:
            raise ValueError(
                f"a=fingerprint:{value}: a {name} fingerprint is {_HASHES[name]} hex pairs "
                "separated by colons"
            )
        return f"{name} {digest.upper()}"
    raise ValueError(
        "the SDP has no fingerprint with a supported hash (sha-1, sha-224, sha-256, sha-384, "
        "sha-512)"
    )


def _candidates(values: list[str], log: IInstanceLog | None) -> list[IceCandidate]:
    result: list[IceCandidate] = []
    rtcp: list[IceCandidate] = []  # component 2, RTCP port in rtpPort until joined
    for value in values:
        parts = value.split()
        if len(parts) < 8 or parts[6] != "typ":
            raise ValueError(
                f"a=candidate:{value} is not '<foundation> <component> <transport> <priority> "
                "<address> <port> typ <type> ...'"
            )
        foundation, component, transport, priority, addr, port, _, kind = parts[:8]
        if transport.lower() != "udp":
            _log(log, "SDP: %s candidate %s skipped (only UDP)", transport, value)
            continue
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            why = "mDNS name" if addr.lower().endswith(".local") else "not an IP address"
            _log(log, "SDP: candidate %s skipped (%s)", value, why)
            continue
        if kind not in _CANDIDATE_TYPES:
            _log(log, "SDP: candidate %s skipped (unknown type %s)", value, kind)
            continue
        if component not in ("1", "2"):
            _log(log, "SDP: candidate %s skipped (component %s)", value, component)
            continue
        if not priority.isdigit() or int(priority) >= 1 << 32:
            raise ValueError(f"a=candidate:{value}: the priority is not a 32-bit number")
        rtp_port = _port(port, f"a=candidate:{value}: the port")
        extra = dict(zip(parts[8::2], parts[9::2], strict=False))
        raddr = extra.get("raddr")
        rport = _port(extra["rport"], f"a=candidate:{value}: rport") if "rport" in extra else 0
        if rtp_port == 0:
            _log(log, "SDP: candidate %s skipped (port 0)", value)
            continue
        cand = IceCandidate(
            addr, rtp_port, 0, int(priority), 0, _CANDIDATE_TYPES[kind], foundation, raddr
        )
        if component == "1":
            cand.relatedRtpPort = rport
            result.append(cand)
        else:
            cand.relatedRtcpPort = rport
            rtcp.append(cand)
    # a component 2 joins the first component 1 of its foundation, type and address that
    # has none yet (SDP lists them in any order)
    for c2 in rtcp:
        for cand in result:
            if cand.rtcpPort == 0 and (cand.foundation, cand.addr, cand.type) == (
                c2.foundation,
                c2.addr,
                c2.type,
            ):
                cand.rtcpPort, cand.rtcpPriority = c2.rtpPort, c2.rtpPriority
                cand.relatedRtcpPort = c2.relatedRtcpPort
                break
        else:
            _log(log, "SDP: candidate %s %s component 2 skipped (no component 1)", c2.foundation,
                 c2.addr)  # fmt: skip
    for cand in result:
        if cand.rtcpPort == 0:  # RTCP on the RTP port (rtcp-mux)
            cand.rtcpPort = cand.rtpPort
    return result


def _codecs(section: _Section, fmts: list[str], log: IInstanceLog | None) -> list[Codec]:
    rtpmap: dict[int, str] = {}
    for value in section.all("rtpmap"):
        number, _, name = value.partition(" ")
        if number.isdigit():
            rtpmap[int(number)] = name.strip()
    ptime_text = section.get("ptime")
    ptime = int(ptime_text) if ptime_text is not None and ptime_text.isdigit() else 20
    codecs: list[Codec] = []
    for fmt in fmts:
        if not fmt.isdigit() or int(fmt) > 127:
            raise ValueError(f"the m= line's format {fmt!r} is not an RTP payload type (0-127)")
        pt = int(fmt)
        coder: AudioCoder | None = None
        if pt in rtpmap:
            parts = rtpmap[pt].split("/")
            name = parts[0].lower()
            if len(parts) < 2 or not parts[1].isdigit():
                raise ValueError(f"a=rtpmap:{pt} {rtpmap[pt]} is not '<name>/<clock rate>'")
            rate = int(parts[1])
            if name == "telephone-event":
                coder = AudioCoder.DTMF
            elif name == "opus" and (len(parts) < 3 or parts[2] != "2"):
                coder = None  # RFC 7587: opus is always written opus/48000/2
            else:
                coder = _CODECS.get((name, rate))
        elif pt in _STATIC:
            coder, rate = _STATIC[pt]
        if coder is None:
            _log(log, "SDP: payload type %d (%s) skipped", pt, rtpmap.get(pt, "no rtpmap"))
            continue
        codecs.append(Codec(coder, len(codecs), pt, rate, ptime, ptime))
    return codecs


def MediaConfigFromSdp(
    sdp: str, *, log: IInstanceLog | None = None
) -> tuple[MediaConfig, SetupRole, bool]:
    """Read the first audio section of an SDP offer or answer.

    Args:
        sdp: the SDP text (CRLF or LF line ends).
        log: beyond the contract: where to log what is skipped (TCP and mDNS candidates,
            unknown codecs, fingerprints of unknown hashes), under `LOG_MEDIA`.

    Returns:
        (config, setup, iceLite): the audio section's `MediaConfig` (`ice` None for a plain
        RTP peer without ICE credentials and fingerprint); the peer's `a=setup`
        (`SETUP_ROLE_NONE` when absent); whether the peer is `a=ice-lite`.

    Raises:
        ValueError: not SDP, no audio section, a malformed line that matters (c=, m=,
            candidate, fingerprint, rtpmap), only one of ice-ufrag and ice-pwd, SDES keying
            without a fingerprint, or no codec this side knows.
        TypeError: `sdp` is not a str.
    """
    session, sections = _split(sdp)
    audio = _first_audio(sections)
    if audio is None or audio.media is None:
        raise ValueError("the SDP has no audio section (m=audio ...)")
    fields = audio.media.split()
    if len(fields) < 4:
        raise ValueError(f"m={audio.media} is not 'audio <port> <proto> <formats...>'")
    port = _port(fields[1].split("/")[0], "the m= line's port")
    proto = fields[2].upper()
    conn = audio.conn if audio.conn is not None else session.conn
    if conn is None:
        raise ValueError("the SDP's audio section has no address (no c= line)")
    addr = _address(conn)

    def attr(name: str) -> str | None:
        value = audio.get(name)
        return value if value is not None else session.get(name)

    ufrag, pwd = attr("ice-ufrag"), attr("ice-pwd")
    if (ufrag is None) != (pwd is None):
        raise ValueError("the SDP has one of a=ice-ufrag and a=ice-pwd without the other")
    fingerprints = audio.all("fingerprint") or session.all("fingerprint")
    fingerprint = _fingerprint(fingerprints, log)
    if fingerprint is None and "SAVP" in proto:
        raise ValueError(
            f"the audio section is {fields[2]} without a=fingerprint (SDES keying with "
            "a=crypto): only DTLS-SRTP or plain RTP are supported"
        )
    setup_text = attr("setup")
    setup = SetupRole.SETUP_ROLE_NONE
    if setup_text is not None:
        if setup_text.lower() not in _SETUP:
            raise ValueError(f"a=setup:{setup_text} is not active, passive, actpass or holdconn")
        setup = _SETUP[setup_text.lower()]
    ice_lite = audio.has("ice-lite") or session.has("ice-lite")
    rtcp_mux = audio.has("rtcp-mux")
    codecs = _codecs(audio, fields[3:], log)
    if not any(c.coder != AudioCoder.DTMF for c in codecs):
        raise ValueError(
            f"the audio section offers no codec this side knows (formats {' '.join(fields[3:])}):"
            " PCMU, PCMA, G722 or opus"
        )
    ice: IceCandidates | None = None
    if ufrag is not None or fingerprint is not None:
        ice = IceCandidates(
            fingerprint=fingerprint,
            iceUfrag=ufrag,
            icePwd=pwd,
            rtcpMux=rtcp_mux,
            candidateList=_candidates(audio.all("candidate"), log),
        )
    config = MediaConfig(
        type=MediaType.AUDIO, defAddr=addr, defPort=port, ice=ice, codecList=codecs
    )
    return config, setup, ice_lite


def SdpAudioMid(sdp: str) -> str | None:
    """Beyond the contract: the `a=mid` of the first audio section, for the answer's `mid`.

    Args:
        sdp: the SDP text of an offer.

    Returns:
        The mid, or None when the audio section has none.

    Raises:
        ValueError: not SDP, or no audio section.
    """
    _, sections = _split(sdp)
    audio = _first_audio(sections)
    if audio is None:
        raise ValueError("the SDP has no audio section (m=audio ...)")
    return audio.get("mid")


def _check_config(config: MediaConfig) -> None:
    if not isinstance(config, MediaConfig):
        raise TypeError(f"config is a MediaConfig, not {type(config).__name__}")
    if config.type != MediaType.AUDIO:
        raise ValueError(f"MediaConfigToSdp writes audio sections only, not {config.type!r}")
    if not config.codecList:
        raise ValueError("the MediaConfig has no codec: put at least one in codecList")
    if not any(c.coder != AudioCoder.DTMF for c in config.codecList):
        raise ValueError("the MediaConfig has only telephone-event: add an audio codec")
    for codec in config.codecList:
        if codec.coder not in _NAMES:
            raise ValueError(
                f"MediaConfigToSdp cannot write {AudioCoder(codec.coder).name}: "
                "use G711_U, G711_A, G722, OPUS_WB or DTMF"
            )
        if not 0 <= codec.pt <= 127:
            raise ValueError(f"the payload type {codec.pt} is not 0-127")
    try:
        ipaddress.ip_address(config.defAddr)
    except ValueError:
        raise ValueError(f"defAddr {config.defAddr!r} is not an IP address") from None
    ice = config.ice
    if ice is not None:
        if (ice.iceUfrag is None) != (ice.icePwd is None):
            raise ValueError("IceCandidates has one of iceUfrag and icePwd without the other")
        for text, least in ((ice.iceUfrag, 4), (ice.icePwd, 22)):
            if text is not None and not _ICE_CHARS.match(text):
                raise ValueError(f"the ICE credential {text!r} has characters SDP cannot carry")
            if text is not None and not least <= len(text) <= 256:
                raise ValueError(
                    f"the ICE credential {text!r} is {len(text)} characters; RFC 8839 wants "
                    f"{least}-256 (ice-ufrag 4, ice-pwd 22 at least)"
                )
        if ice.fingerprint is not None:
            parts = ice.fingerprint.split()
            if len(parts) != 2 or parts[0].lower() not in _HASHES or not _HEX_PAIRS.match(parts[1]):
                raise ValueError(
                    f"the fingerprint {ice.fingerprint!r} is not '<sha-256|...> AB:CD:...'"
                )


def _ip(addr: str) -> str:
    return "IP6" if ipaddress.ip_address(addr).version == 6 else "IP4"


def MediaConfigToSdp(
    config: MediaConfig,
    setup: SetupRole,
    *,
    iceLite: bool = False,
    mid: str = "0",
    ssrc: int | None = None,
) -> str:
    """Write `config` as an SDP offer or answer with one audio section.

    The section is bundled under `mid`, rtcp-mux, `a=sendrecv`, and has the ICE credentials
    and candidates, the fingerprint and `a=setup` (none for `SETUP_ROLE_NONE`), the codecs
    in order with `a=ptime` (the first codec's `recvPacket`). `UDP/TLS/RTP/SAVPF` with a
    fingerprint, `RTP/AVP` without. Candidates write component 1, and component 2 only when
    its port differs from the RTP port.

    Args:
        config: this side's config (what `MediaInitializeComplete` gave).
        setup: this side's DTLS role: `SETUP_ROLE_ACTPASS` in an offer, `ACTIVE` or
            `PASSIVE` in an answer.
        iceLite: write `a=ice-lite`.
        mid: the section's mid; an answer uses the offer's (`SdpAudioMid`).
        ssrc: this side's SSRC, written as `a=ssrc:<ssrc> cname:...`; None writes none.

    Returns:
        The SDP text, CRLF line ends.

    Raises:
        ValueError: a config that cannot be written (not audio, no codec, a codec other
            than PCMU/PCMA/G722/opus/telephone-event, a bad address or credential), a mid
            that is not a token, an ssrc out of 32 bits.
        TypeError: config is not a MediaConfig.
    """
    _check_config(config)
    setup = SetupRole(setup)
    if not isinstance(mid, str) or not _TOKEN.match(mid):
        raise ValueError(f"mid {mid!r} is not an SDP token (letters, digits, -._ and the like)")
    if ssrc is not None and not 0 <= ssrc < 1 << 32:
        raise ValueError(f"ssrc {ssrc} is not a 32-bit number")
    ice = config.ice
    secure = ice is not None and ice.fingerprint is not None
    proto = "UDP/TLS/RTP/SAVPF" if secure else "RTP/AVP"
    pts = " ".join(str(c.pt) for c in config.codecList)
    out = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN {_ip(config.defAddr)} {config.defAddr}",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {mid}",
    ]
    if iceLite:
        out.append("a=ice-lite")
    out += [
        f"m=audio {config.defPort} {proto} {pts}",
        f"c=IN {_ip(config.defAddr)} {config.defAddr}",
        f"a=mid:{mid}",
        "a=sendrecv",
    ]
    if ice is None or ice.rtcpMux:
        out.append("a=rtcp-mux")
    if ice is not None:
        if ice.iceUfrag is not None and ice.icePwd is not None:
            out += [f"a=ice-ufrag:{ice.iceUfrag}", f"a=ice-pwd:{ice.icePwd}"]
        if ice.fingerprint is not None:
            name, digest = ice.fingerprint.split()
            out.append(f"a=fingerprint:{name.lower()} {digest.upper()}")
    if setup != SetupRole.SETUP_ROLE_NONE:
        out.append(f"a=setup:{_SETUP_NAMES[setup]}")
    for codec in config.codecList:
        name, channels = _NAMES[AudioCoder(codec.coder)]
        out.append(f"a=rtpmap:{codec.pt} {name}/{codec.rate}{channels}")
        if codec.coder == AudioCoder.DTMF:
            out.append(f"a=fmtp:{codec.pt} 0-15")
        elif codec.coder == AudioCoder.OPUS_WB:
            out.append(f"a=fmtp:{codec.pt} minptime=10;useinbandfec=1")
    out.append(f"a=ptime:{config.codecList[0].recvPacket}")
    if ssrc is not None:
        out.append(f"a=ssrc:{ssrc} cname:{secrets.token_hex(8)}")
    if ice is not None:
        for cand in ice.candidateList:
            out += _candidate_lines(cand)
        out.append("a=end-of-candidates")
    return "\r\n".join(out) + "\r\n"


def _candidate_lines(cand: IceCandidate) -> list[str]:
    kind = _CANDIDATE_NAMES.get(cand.type)
    if kind is None:
        raise ValueError(f"candidate type {cand.type} is not one of CHANNEL_CANDIDATE_*")
    if not _TOKEN.match(cand.foundation):
        raise ValueError(f"the foundation {cand.foundation!r} is not an SDP token")
    try:
        ipaddress.ip_address(cand.addr)
    except ValueError:
        raise ValueError(f"the candidate address {cand.addr!r} is not an IP address") from None
    lines = []
    components = [(1, cand.rtpPort, cand.rtpPriority, cand.relatedRtpPort)]
    if cand.rtcpPort not in (0, cand.rtpPort):
        components.append((2, cand.rtcpPort, cand.rtcpPriority, cand.relatedRtcpPort))
    for component, port, priority, rport in components:
        line = (
            f"a=candidate:{cand.foundation} {component} udp {priority} {cand.addr} {port} "
            f"typ {kind}"
        )
        if cand.relatedAddr is not None:
            line += f" raddr {cand.relatedAddr} rport {rport}"
        lines.append(line)
    return lines
