"""STUN messages (RFC 8489, RFC 5389), sans-IO: bytes in, a `StunMessage` out, and back.

Theory of operation
-------------------
This module knows the wire format only: no socket, no clock, no transaction state (the
ICE agent in `_ice.py` keeps that). `parse` turns one datagram into a `StunMessage` or
raises `StunError`, the only exception it ever raises, whatever the bytes; its work is
linear in the datagram's length (one pass over the attributes, each looked at once).
`encode` turns a `StunMessage` into bytes, appending MESSAGE-INTEGRITY (HMAC-SHA1 under
a short-term key, the ICE password) and FINGERPRINT (CRC-32 xor 0x5354554e) last, in
that order, as RFC 8489 §14.5/§14.7 place them.

What the parser checks (each failure is a `StunError`): the header (first two bits 0,
the magic cookie, a length that is a multiple of 4 and matches the datagram), every
attribute's length against the bytes left, the size of the fixed-size attributes it
decodes, a FINGERPRINT that is the last attribute and matches. What it does not check:
MESSAGE-INTEGRITY, which needs a key (`check_integrity` does, against the bytes as
received), and comprehension-required attributes it does not know, which it lists in
`unknown_required` for the caller to answer with 420 (a request) or to ignore the
message (a response). Of a repeated attribute the first counts; attributes after
MESSAGE-INTEGRITY other than FINGERPRINT are ignored (RFC 8489 §14.5).

Addresses are (ip, port) tuples with the ip in `ipaddress`'s compressed form.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Final

MAGIC_COOKIE: Final = 0x2112A442
"""The fixed value in bytes 4..7 of every RFC 5389/8489 message."""
HEADER_LENGTH: Final = 20
FINGERPRINT_XOR: Final = 0x5354554E

# methods
BINDING: Final = 0x001

# classes (the two class bits, C1 C0)
REQUEST: Final = 0
INDICATION: Final = 1
SUCCESS: Final = 2
ERROR: Final = 3

# attribute types
ATTR_MAPPED_ADDRESS: Final = 0x0001
ATTR_USERNAME: Final = 0x0006
ATTR_MESSAGE_INTEGRITY: Final = 0x0008
ATTR_ERROR_CODE: Final = 0x0009
ATTR_UNKNOWN_ATTRIBUTES: Final = 0x000A
ATTR_REALM: Final = 0x0014
ATTR_NONCE: Final = 0x0015
ATTR_MESSAGE_INTEGRITY_SHA256: Final = 0x001C
ATTR_PASSWORD_ALGORITHM: Final = 0x001D
ATTR_USERHASH: Final = 0x001E
ATTR_XOR_MAPPED_ADDRESS: Final = 0x0020
ATTR_PRIORITY: Final = 0x0024
ATTR_USE_CANDIDATE: Final = 0x0025
ATTR_PASSWORD_ALGORITHMS: Final = 0x8002
ATTR_ALTERNATE_DOMAIN: Final = 0x8003
ATTR_SOFTWARE: Final = 0x8022
ATTR_ALTERNATE_SERVER: Final = 0x8023
ATTR_FINGERPRINT: Final = 0x8028
ATTR_ICE_CONTROLLED: Final = 0x8029
ATTR_ICE_CONTROLLING: Final = 0x802A

KNOWN_REQUIRED: Final = frozenset(
    {
        ATTR_MAPPED_ADDRESS,
        ATTR_USERNAME,
        ATTR_MESSAGE_INTEGRITY,
        ATTR_ERROR_CODE,
        ATTR_UNKNOWN_ATTRIBUTES,
        ATTR_REALM,
        ATTR_NONCE,
        ATTR_MESSAGE_INTEGRITY_SHA256,
        ATTR_PASSWORD_ALGORITHM,
        ATTR_USERHASH,
        ATTR_XOR_MAPPED_ADDRESS,
        ATTR_PRIORITY,
        ATTR_USE_CANDIDATE,
    }
)
"""The comprehension-required attributes (type < 0x8000) this module knows: any other in a
request is answered with 420 (Unknown Attribute) by the ICE agent."""

MAX_USERNAME: Final = 513
"""The longest USERNAME accepted (RFC 8489 §14.3), in bytes."""

_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
_HDR = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")


class StunError(ValueError):
    """A datagram that is not a well-formed STUN message (the detail says why)."""


@dataclass(slots=True)
class StunMessage:
    """One STUN message: its header fields and the attributes this module knows.

    The fields after `unknown_attributes` are set by `parse` only (`encode` ignores them).
    """

    method: int
    cls: int
    transaction_id: bytes
    username: str | None = None
    priority: int | None = None
    use_candidate: bool = False
    ice_controlling: int | None = None
    ice_controlled: int | None = None
    xor_mapped_address: tuple[str, int] | None = None
    mapped_address: tuple[str, int] | None = None
    error_code: tuple[int, str] | None = None
    software: str | None = None
    realm: str | None = None
    nonce: str | None = None
    unknown_attributes: tuple[int, ...] = ()
    """The UNKNOWN-ATTRIBUTES attribute (of a 420 answer)."""
    unknown_required: tuple[int, ...] = ()
    """Comprehension-required attribute types in the message that this module does not know."""
    integrity_at: int = -1
    """Offset of the MESSAGE-INTEGRITY attribute in `raw`; -1 without one."""
    fingerprint: bool = False
    """A FINGERPRINT was present (and matched: a mismatch fails `parse`)."""
    raw: bytes = field(default=b"", repr=False)
    """The datagram as received."""


def is_stun(data: bytes) -> bool:
    """Could `data` be an RFC 5389/8489 STUN message (first byte 0..3, RFC 7983; at least a
    header; the magic cookie in place)? Cheap, for demultiplexing: `parse` decides."""
    return len(data) >= HEADER_LENGTH and data[0] < 4 and data[4:8] == _COOKIE_BYTES


def message_type(method: int, cls: int) -> int:
    """The 14-bit message type of a method and class (RFC 8489 §5: the class bits C0 and
    C1 sit between the method bits M0-M3, M4-M6 and M7-M11)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 1) << 4)
        | ((cls & 2) << 7)
    )


def split_type(mtype: int) -> tuple[int, int]:
    """(method, class) of a 14-bit message type."""
    method = (mtype & 0x000F) | ((mtype >> 1) & 0x0070) | ((mtype >> 2) & 0x0F80)
    cls = ((mtype >> 4) & 1) | ((mtype >> 7) & 2)
    return method, cls


# --------------------------------------------------------------------------- parsing


def _address(value: bytes, tid: bytes, xor: bool) -> tuple[str, int]:
    if len(value) < 4 or value[0] != 0:
        raise StunError("an address attribute shorter than 4 bytes or with a nonzero first byte")
    family = value[1]
    port = int.from_bytes(value[2:4], "big")
    if xor:
        port ^= MAGIC_COOKIE >> 16
    if family == 1:
        if len(value) != 8:
            raise StunError(f"an IPv4 address attribute of {len(value)} bytes, not 8")
        raw = int.from_bytes(value[4:8], "big")
        if xor:
            raw ^= MAGIC_COOKIE
        return str(ipaddress.IPv4Address(raw)), port
    if family == 2:
        if len(value) != 20:
            raise StunError(f"an IPv6 address attribute of {len(value)} bytes, not 20")
        raw = int.from_bytes(value[4:20], "big")
        if xor:
            raw ^= int.from_bytes(_COOKIE_BYTES + tid, "big")
        return str(ipaddress.IPv6Address(raw)), port
    raise StunError(f"an address attribute of unknown family {family}")


def _text(value: bytes, name: str, limit: int = 763) -> str:
    if len(value) > limit:
        raise StunError(f"{name} of {len(value)} bytes, more than {limit}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunError(f"{name} is not UTF-8") from exc


def _fixed(value: bytes, size: int, name: str) -> bytes:
    if len(value) != size:
        raise StunError(f"{name} of {len(value)} bytes, not {size}")
    return value


def parse(data: bytes) -> StunMessage:
    """Parse one datagram as a STUN message.

    Args:
        data: the datagram.

    Returns:
        The message; `raw` is `data`.

    Raises:
        StunError: `data` is not a well-formed STUN message (nothing else is ever raised).
    """
    data = bytes(data)
    n = len(data)
    if n < HEADER_LENGTH:
        raise StunError(f"{n} bytes, shorter than a STUN header")
    mtype, length, cookie, tid = _HDR.unpack_from(data)
    if mtype & 0xC000:
        raise StunError("the first two bits are not 0")
    if cookie != MAGIC_COOKIE:
        raise StunError("no magic cookie (not RFC 5389/8489 STUN)")
    if length & 3 or length != n - HEADER_LENGTH:
        raise StunError(f"length field {length} does not fit a {n}-byte datagram")
    method, cls = split_type(mtype)
    msg = StunMessage(method=method, cls=cls, transaction_id=tid, raw=data)
    seen: set[int] = set()
    unknown: list[int] = []
    off = HEADER_LENGTH
    while off < n:
        if n - off < 4:
            raise StunError("a truncated attribute header")
        atype, alen = _ATTR.unpack_from(data, off)
        start = off + 4
        end = start + alen
        if end > n:
            raise StunError(f"attribute 0x{atype:04x} of {alen} bytes runs past the end")
        value = data[start:end]
        at = off
        off = start + ((alen + 3) & ~3)
        if off > n:
            raise StunError(f"attribute 0x{atype:04x} lacks its padding")
        if atype == ATTR_FINGERPRINT:
            _fixed(value, 4, "FINGERPRINT")
            if off != n:
                raise StunError("FINGERPRINT is not the last attribute")
            want = (binascii.crc32(data[:at]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if int.from_bytes(value, "big") != want:
                raise StunError("FINGERPRINT does not match")
            msg.fingerprint = True
            break
        if msg.integrity_at >= 0 or atype in seen:
            continue  # after MESSAGE-INTEGRITY, or a repeat: ignored
        seen.add(atype)
        if atype == ATTR_MESSAGE_INTEGRITY:
            _fixed(value, 20, "MESSAGE-INTEGRITY")
            msg.integrity_at = at
        elif atype == ATTR_USERNAME:
            msg.username = _text(value, "USERNAME", MAX_USERNAME)
        elif atype == ATTR_PRIORITY:
            msg.priority = int.from_bytes(_fixed(value, 4, "PRIORITY"), "big")
        elif atype == ATTR_USE_CANDIDATE:
            _fixed(value, 0, "USE-CANDIDATE")
            msg.use_candidate = True
        elif atype == ATTR_ICE_CONTROLLING:
            msg.ice_controlling = int.from_bytes(_fixed(value, 8, "ICE-CONTROLLING"), "big")
        elif atype == ATTR_ICE_CONTROLLED:
            msg.ice_controlled = int.from_bytes(_fixed(value, 8, "ICE-CONTROLLED"), "big")
        elif atype == ATTR_XOR_MAPPED_ADDRESS:
            msg.xor_mapped_address = _address(value, tid, True)
        elif atype == ATTR_MAPPED_ADDRESS:
            msg.mapped_address = _address(value, tid, False)
        elif atype == ATTR_ERROR_CODE:
            if len(value) < 4:
                raise StunError("ERROR-CODE shorter than 4 bytes")
            klass = value[2] & 7
            number = value[3]
            if not 3 <= klass <= 6 or number > 99:
                raise StunError(f"ERROR-CODE class {klass} number {number} out of range")
            reason = value[4:].decode("utf-8", "replace")
            msg.error_code = (klass * 100 + number, reason)
        elif atype == ATTR_UNKNOWN_ATTRIBUTES:
            if len(value) & 1:
                raise StunError("UNKNOWN-ATTRIBUTES of an odd length")
            msg.unknown_attributes = tuple(
                int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)
            )
        elif atype == ATTR_SOFTWARE:
            msg.software = value.decode("utf-8", "replace")
        elif atype == ATTR_REALM:
            msg.realm = _text(value, "REALM")
        elif atype == ATTR_NONCE:
            msg.nonce = _text(value, "NONCE")
        elif atype < 0x8000 and atype not in KNOWN_REQUIRED:
            unknown.append(atype)
    msg.unknown_required = tuple(unknown)
    return msg


def check_integrity(msg: StunMessage, key: bytes) -> bool:
    """Does `msg` (as parsed) carry a MESSAGE-INTEGRITY that matches `key` (RFC 8489
    §14.5: HMAC-SHA1 over the message up to the attribute, with the length field counting
    up to its end)?"""
    at = msg.integrity_at
    if at < 0:
        return False
    raw = msg.raw
    header = raw[:2] + struct.pack("!H", at + 24 - HEADER_LENGTH) + raw[4:HEADER_LENGTH]
    mac = hmac.new(key, header + raw[HEADER_LENGTH:at], hashlib.sha1).digest()
    return hmac.compare_digest(mac, raw[at + 4 : at + 24])


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """The RFC 8489 §9.2.2 long-term credential key, MD5(username ":" realm ":" password)
    (the strings already SASLprep'ed / OpaqueString'ed)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


# --------------------------------------------------------------------------- encoding


def _attr(atype: int, value: bytes, pad: bytes) -> bytes:
    return _ATTR.pack(atype, len(value)) + value + pad * (-len(value) % 4)


def _encode_address(addr: tuple[str, int], tid: bytes, xor: bool) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    port = addr[1] ^ (MAGIC_COOKIE >> 16) if xor else addr[1]
    if ip.version == 4:
        raw = int(ip) ^ MAGIC_COOKIE if xor else int(ip)
        return struct.pack("!BBH", 0, 1, port) + raw.to_bytes(4, "big")
    raw = int(ip) ^ int.from_bytes(_COOKIE_BYTES + tid, "big") if xor else int(ip)
    return struct.pack("!BBH", 0, 2, port) + raw.to_bytes(16, "big")


def encode(
    msg: StunMessage, key: bytes | None = None, *, fingerprint: bool = True, _pad: bytes = b"\0"
) -> bytes:
    """Encode `msg`, with MESSAGE-INTEGRITY under `key` when given, then FINGERPRINT.

    Args:
        msg: the message; the fields set only by `parse` are ignored.
        key: the HMAC-SHA1 key (short-term credentials: the password's UTF-8 bytes).
        fingerprint: append a FINGERPRINT attribute.

    Raises:
        ValueError: a transaction id that is not 12 bytes, or a field out of range.
    """
    tid = msg.transaction_id
    if len(tid) != 12:
        raise ValueError(f"a STUN transaction id is 12 bytes, not {len(tid)}")
    # The order of RFC 5769's vectors (any order is valid; this one reproduces them).
    body = bytearray()
    if msg.software is not None:
        body += _attr(ATTR_SOFTWARE, msg.software.encode(), _pad)
    if msg.priority is not None:
        body += _attr(ATTR_PRIORITY, struct.pack("!I", msg.priority), _pad)
    if msg.ice_controlled is not None:
        body += _attr(ATTR_ICE_CONTROLLED, struct.pack("!Q", msg.ice_controlled), _pad)
    if msg.ice_controlling is not None:
        body += _attr(ATTR_ICE_CONTROLLING, struct.pack("!Q", msg.ice_controlling), _pad)
    if msg.use_candidate:
        body += _attr(ATTR_USE_CANDIDATE, b"", _pad)
    if msg.username is not None:
        body += _attr(ATTR_USERNAME, msg.username.encode(), _pad)
    if msg.error_code is not None:
        code, reason = msg.error_code
        if not 300 <= code <= 699:
            raise ValueError(f"a STUN error code is 300..699, not {code}")
        value = struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()
        body += _attr(ATTR_ERROR_CODE, value, _pad)
    if msg.unknown_attributes:
        value = b"".join(struct.pack("!H", t) for t in msg.unknown_attributes)
        body += _attr(ATTR_UNKNOWN_ATTRIBUTES, value, _pad)
    if msg.nonce is not None:
        body += _attr(ATTR_NONCE, msg.nonce.encode(), _pad)
    if msg.realm is not None:
        body += _attr(ATTR_REALM, msg.realm.encode(), _pad)
    if msg.mapped_address is not None:
        body += _attr(ATTR_MAPPED_ADDRESS, _encode_address(msg.mapped_address, tid, False), _pad)
    if msg.xor_mapped_address is not None:
        value = _encode_address(msg.xor_mapped_address, tid, True)
        body += _attr(ATTR_XOR_MAPPED_ADDRESS, value, _pad)
    mtype = message_type(msg.method, msg.cls)
    if key is not None:
        header = _HDR.pack(mtype, len(body) + 24, MAGIC_COOKIE, tid)
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += _attr(ATTR_MESSAGE_INTEGRITY, mac, _pad)
    if fingerprint:
        header = _HDR.pack(mtype, len(body) + 8, MAGIC_COOKIE, tid)
        crc = (binascii.crc32(header + body) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        body += _attr(ATTR_FINGERPRINT, struct.pack("!I", crc), _pad)
    if len(body) > 0xFFFF:
        raise ValueError(f"a STUN message body of {len(body)} bytes, more than 65535")
    return _HDR.pack(mtype, len(body), MAGIC_COOKIE, tid) + bytes(body)
