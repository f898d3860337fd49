"""ISrtpSession and SrtpKeys: the SDK's SRTP session (`common/interface/media.h`) on libsrtp 2.

libsrtp comes from PyPI's `pylibsrtp` (the optional extra `[srtp]`), imported only when a
session is created, so the rest of the library never needs it.

A libsrtp session is either outbound (it protects) or inbound (it unprotects and keeps the
replay window). An `ISrtpSession` holds one key and salt and makes each of the two libsrtp
sessions the first time it is needed: `Protect`/`SrtcpProtect` use the outbound one,
`Unprotect`/`SrtcpUnprotect` the inbound one. A call uses one `ISrtpSession` per direction,
as the SDK does: one with its local key and salt for what it sends, one with the peer's for
what it receives (`SrtpKeys` gives both pairs). Both directions on one object exist so that
a test or a loopback can check a session against itself; real media never sends with the
key it receives with.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pylibsrtp

# profile name (as OpenSSL and the DTLS engine spell it) -> (master key, master salt) lengths
_PROFILES: dict[str, tuple[int, int]] = {
    "SRTP_AES128_CM_SHA1_80": (16, 14),
    "SRTP_AEAD_AES_128_GCM": (16, 12),
    "SRTP_AEAD_AES_256_GCM": (32, 12),
}
# profile name -> the name of pylibsrtp's Policy constant
_LIBSRTP: dict[str, str] = {
    "SRTP_AES128_CM_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
    "SRTP_AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM",
    "SRTP_AEAD_AES_256_GCM": "SRTP_PROFILE_AEAD_AES_256_GCM",
}

# pylibsrtp processes packets in a buffer of 1500 bytes that must also hold the trailer
# it appends (authentication tag and MKI, at most 144 bytes for RTP, 148 for RTCP).
_BUFFER = 1500
_MAX_RTP = _BUFFER - (16 + 128)
_MAX_RTCP = _BUFFER - (4 + 16 + 128)

_Bytes = bytes | bytearray | memoryview


def _profile_lengths(profile: object) -> tuple[int, int]:
    if not isinstance(profile, str):
        raise TypeError(
            f"the SRTP profile is a str such as 'SRTP_AES128_CM_SHA1_80', not {profile!r}"
        )
    try:
        return _PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown SRTP profile {profile!r}: use one of {', '.join(sorted(_PROFILES))}"
        ) from None


def _as_bytes(what: str, data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, not {type(data).__name__}")


def _libsrtp_error() -> type[Exception]:
    """pylibsrtp's error class, importing pylibsrtp (the first time) or saying how to get it."""
    try:
        import pylibsrtp
    except ImportError as e:
        raise ImportError(
            "ISrtpSession needs pylibsrtp (libsrtp 2): install the extra with "
            "pip install 'usocket_asyncio[srtp]'"
        ) from e
    return pylibsrtp.Error


def SrtpKeys(keys: _Bytes, profile: str, server: bool) -> tuple[bytes, bytes, bytes, bytes]:
    """Split DTLS-SRTP keying material into this side's and the peer's key and salt.

    The layout is RFC 5764 §4.2: client key | server key | client salt | server salt,
    2 * (key + salt) bytes in all: 60 for `SRTP_AES128_CM_SHA1_80`, 56 for
    `SRTP_AEAD_AES_128_GCM`, 88 for `SRTP_AEAD_AES_256_GCM` (what `DtlsSrtpKeys` and
    `GetSrtpKeys` give).

    Args:
        keys: the keying material.
        profile: the negotiated profile.
        server: True on the DTLS server's side.

    Returns:
        (local key, local salt, remote key, remote salt): the local pair makes the session
        that protects what this side sends, the remote pair the one that unprotects what
        it receives.

    Raises:
        ValueError: an unknown profile, or keying material of the wrong length.
        TypeError: `keys` is not bytes-like.
    """
    key_len, salt_len = _profile_lengths(profile)
    material = _as_bytes("the keying material", keys)
    want = 2 * (key_len + salt_len)
    if len(material) != want:
        raise ValueError(
            f"{profile} keying material is {want} bytes (2 * ({key_len} key + {salt_len} salt)), "
            f"not {len(material)}: pass what DtlsSrtpKeys or GetSrtpKeys gave"
        )
    client_key = material[:key_len]
    server_key = material[key_len : 2 * key_len]
    client_salt = material[2 * key_len : 2 * key_len + salt_len]
    server_salt = material[2 * key_len + salt_len :]
    if server:
        return server_key, server_salt, client_key, client_salt
    return client_key, client_salt, server_key, server_salt


def _check_rtp_header(header: bytes) -> None:
    if len(header) < 12:
        raise ValueError(f"an RTP header is at least 12 bytes, not {len(header)}")
    if header[0] >> 6 != 2:
        raise ValueError(
            f"an RTP header starts with version 2 (first byte 0x80..0xbf), not 0x{header[0]:02x}"
        )
    end = 12 + 4 * (header[0] & 0x0F)
    if header[0] & 0x10:  # X: a header extension follows the CSRCs
        if len(header) < end + 4:
            raise ValueError("the RTP header has the X bit set but no extension header")
        end += 4 + 4 * int.from_bytes(header[end + 2 : end + 4], "big")
    if len(header) < end:
        raise ValueError(
            f"the RTP header's CSRC count and extension need {end} bytes, "
            f"the header has {len(header)}"
        )


_AREAS: weakref.WeakKeyDictionary[Any, tuple[Any, Any, Any, Any, Any]] = weakref.WeakKeyDictionary()


def area(loop: Any) -> tuple[Any, Any, Any, Any, Any] | None:
    """The libsrtp buffer the written-out calls (`direct`) of every stream on `loop`
    share: (buffer, view, length, payload, memmove), made at the first call for that
    loop and kept while the loop lives; None where pylibsrtp's CFFI binding is not as
    this version knows it.

    `buffer` is `_BUFFER` bytes (a packet to protect leaves room for the trailer,
    `_MAX_RTP`; one to unprotect is at most `_BUFFER`), `view` its `ffi.buffer`,
    `length` an `int *` cell, `payload` the address of the buffer's byte 12 (where an
    RTP payload after a plain header goes: `memmove(payload, data, k)` copies k bytes of
    `data` there, unchecked: the caller keeps k within both).

    Why one for the loop: a packet's call touches the buffer, its view and its cell;
    one of each per session was, on a server of many streams, memory the CPU had to
    fetch again for each packet (the streams take turns, each every 20 ms), while the
    loop's one is in its caches. Sharing is safe because a loop runs in one thread at a
    time and each use is over before the next begins: the caller copies what it needs
    out of the buffer before it runs anything else (the app's callback, a send)."""
    got = _AREAS.get(loop)
    if got is None:
        try:
            from pylibsrtp import _binding

            ffi = _binding.ffi
            buffer = ffi.new("char[]", _BUFFER)
            got = (buffer, ffi.buffer(buffer), ffi.new("int *"), buffer + 12, ffi.memmove)
        except Exception:  # ImportError, AttributeError, a changed CFFI declaration
            return None
        _AREAS[loop] = got
    return got


def direct(
    session: ISrtpSession, outbound: bool, shared: tuple[Any, Any, Any, Any, Any]
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any] | None:
    """libsrtp's `srtp_protect` (`outbound`) or `srtp_unprotect` of `session`, for a
    per-packet path that writes the call out, in the loop's buffer `shared` (`area`):
    (call, context, buffer, view, length, payload, memmove, owner), so

        view[0:n] = packet; length[0] = n
        rc = call(context, buffer, length)  # 0: done, else libsrtp's error (`srtp_error`)
        out = view[0 : length[0]]

    does what `pylibsrtp.Session.protect`/`unprotect` do, without their two Python calls
    and the cell they allocate per packet. The libsrtp context is the one `session`
    keeps (the same replay window and keystream as its methods); `owner`, the pylibsrtp
    session, keeps it alive as long as the tuple is kept. Only `context` and `owner` are
    the session's; the rest is shared (`area`).

    None when pylibsrtp's internals are not as this version knows them (its CFFI binding,
    the context in `Session._srtp`, libsrtp 2's three-argument calls): the caller uses
    the session's public methods then."""
    try:
        from pylibsrtp import _binding

        ffi, lib = _binding.ffi, _binding.lib
        s = session._outbound() if outbound else session._inbound()
        ctx = s._srtp[0]
        call = lib.srtp_protect if outbound else lib.srtp_unprotect
        if ffi.typeof(ctx) is not ffi.typeof("srtp_t") or len(ffi.typeof(call).args) != 3:
            return None
        buffer, view, length, payload, memmove = shared
        return call, ctx, buffer, view, length, payload, memmove, s
    except Exception:  # ImportError, AttributeError, a changed CFFI declaration
        return None


def srtp_error(rc: int) -> str:
    """libsrtp's words for its error code `rc` (as pylibsrtp raises them)."""
    import pylibsrtp

    errors = getattr(pylibsrtp, "ERRORS", ())
    return errors[rc] if 0 <= rc < len(errors) else f"libsrtp error {rc}"


class ISrtpSession:
    """One SRTP/SRTCP crypto context (master key and salt, one profile).

    Make one with `ISrtpSession.Create`. Protecting and unprotecting keep separate libsrtp
    state (see the module's docstring); a call uses one session per direction.
    """

    __slots__ = ("_error", "_in", "_key", "_out", "_profile")

    def __init__(self, error: type[Exception], key: bytes, profile: str) -> None:
        self._error = error
        self._key = key
        self._profile = profile
        self._out: pylibsrtp.Session | None = None
        self._in: pylibsrtp.Session | None = None

    @staticmethod
    def Create(masterKey: _Bytes, masterSalt: _Bytes, profile: str) -> ISrtpSession:
        """A session for `profile` with the given master key and salt.

        Args:
            masterKey: 16 bytes (32 for `SRTP_AEAD_AES_256_GCM`).
            masterSalt: 14 bytes for `SRTP_AES128_CM_SHA1_80`, 12 for the two AEAD profiles.
            profile: `"SRTP_AES128_CM_SHA1_80"`, `"SRTP_AEAD_AES_128_GCM"` or
                `"SRTP_AEAD_AES_256_GCM"`, the names the DTLS engine reports.

        Raises:
            ImportError: pylibsrtp is not installed (the `[srtp]` extra).
            ValueError: an unknown profile, or a key or salt of the wrong length.
            TypeError: a key or salt that is not bytes-like.
        """
        error = _libsrtp_error()
        key_len, salt_len = _profile_lengths(profile)
        key = _as_bytes("masterKey", masterKey)
        salt = _as_bytes("masterSalt", masterSalt)
        if len(key) != key_len or len(salt) != salt_len:
            raise ValueError(
                f"{profile} takes a {key_len}-byte master key and a {salt_len}-byte master salt, "
                f"not {len(key)} and {len(salt)}: split the keying material with SrtpKeys"
            )
        return ISrtpSession(error, key + salt, profile)

    def _session(self, outbound: bool) -> pylibsrtp.Session:
        import pylibsrtp

        policy = pylibsrtp.Policy(
            key=self._key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            if outbound
            else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=getattr(pylibsrtp.Policy, _LIBSRTP[self._profile]),
        )
        return pylibsrtp.Session(policy)

    def _outbound(self) -> pylibsrtp.Session:
        if self._out is None:
            self._out = self._session(True)
        return self._out

    def _inbound(self) -> pylibsrtp.Session:
        if self._in is None:
            self._in = self._session(False)
        return self._in

    def Protect(self, header: _Bytes, payload: _Bytes) -> bytes:
        """Encrypt and authenticate one RTP packet.

        Args:
            header: the RTP header (12 bytes, plus CSRCs and extension if it says so).
            payload: the payload, appended to the header.

        Returns:
            The SRTP packet to send.

        Raises:
            ValueError: not an RTP header, a packet longer than 1356 bytes, or a sequence
                number this session already protected (SRTP never encrypts two packets
                with one keystream).
            TypeError: header or payload not bytes-like.
        """
        head = _as_bytes("the RTP header", header)
        body = _as_bytes("the RTP payload", payload)
        _check_rtp_header(head)
        packet = head + body
        if len(packet) > _MAX_RTP:
            raise ValueError(
                f"an RTP packet of {len(packet)} bytes is too long: at most {_MAX_RTP} bytes "
                "(the SRTP tag must still fit a 1500-byte datagram)"
            )
        try:
            return self._outbound().protect(packet)
        except self._error as e:
            raise ValueError(
                f"libsrtp refused to protect sequence number {int.from_bytes(head[2:4], 'big')}"
                f" ({e}): give every packet a new sequence number"
            ) from None

    def Unprotect(self, packet: _Bytes) -> bytes | None:
        """Check and decrypt one SRTP packet.

        Returns:
            The RTP packet (header and payload), or None when authentication fails, the
            replay check rejects it (a packet seen before, or too old), or it is not SRTP.

        Raises:
            TypeError: packet not bytes-like.
        """
        return self._unprotect("the SRTP packet", packet, rtcp=False)

    def SrtcpProtect(self, rtcpPacket: _Bytes) -> bytes:
        """Encrypt and authenticate one RTCP (compound) packet.

        Returns:
            The SRTCP packet to send (the SRTCP index comes from the session).

        Raises:
            ValueError: not an RTCP packet (at least 8 bytes, version 2), or longer than
                1352 bytes.
            TypeError: rtcpPacket not bytes-like.
        """
        data = _as_bytes("the RTCP packet", rtcpPacket)
        if len(data) < 8 or data[0] >> 6 != 2:
            raise ValueError("an RTCP packet is at least 8 bytes and starts with version 2")
        if len(data) > _MAX_RTCP:
            raise ValueError(
                f"an RTCP packet of {len(data)} bytes is too long: at most {_MAX_RTCP} bytes"
            )
        try:
            return self._outbound().protect_rtcp(data)
        except self._error as e:
            raise ValueError(f"libsrtp refused to protect the RTCP packet ({e})") from None

    def SrtcpUnprotect(self, packet: _Bytes) -> bytes | None:
        """Check and decrypt one SRTCP packet.

        Returns:
            The RTCP packet, or None when authentication or the replay check fails, or it
            is not SRTCP.

        Raises:
            TypeError: packet not bytes-like.
        """
        return self._unprotect("the SRTCP packet", packet, rtcp=True)

    def _unprotect(self, what: str, packet: _Bytes, rtcp: bool) -> bytes | None:
        """`Unprotect` or `SrtcpUnprotect`: None for what does not check out."""
        data = _as_bytes(what, packet)
        if len(data) > _BUFFER:
            return None
        session = self._inbound()
        try:
            return session.unprotect_rtcp(data) if rtcp else session.unprotect(data)
        except self._error:
            return None
