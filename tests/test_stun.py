"""STUN messages (`_stun.py`): the RFC 5769 test vectors, the attributes ICE uses, the
parser's errors, and (Hypothesis) that no input whatever makes it raise anything but
`StunError`."""

from __future__ import annotations

import binascii
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usocket_asyncio._stun import (
    BINDING,
    ERROR,
    INDICATION,
    MAGIC_COOKIE,
    REQUEST,
    SUCCESS,
    StunError,
    StunMessage,
    check_integrity,
    encode,
    is_stun,
    long_term_key,
    message_type,
    parse,
    split_type,
)

SETTINGS = settings(
    derandomize=True,  # seeded: the same examples on every run
    database=None,
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2 (Copyright (c) 2010 IETF Trust and the persons identified as the document
# authors; Simplified BSD License). The padding of SOFTWARE and USERNAME in §2.1-2.3 is
# 0x20 on purpose: a parser must ignore padding bytes.
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = h("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
SAMPLE_REQUEST = h("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
SAMPLE_IPV4_RESPONSE = h("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
SAMPLE_IPV6_RESPONSE = h("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")
SAMPLE_LONG_TERM_REQUEST = h("""
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
    53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66""")
VECTORS = [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, SAMPLE_LONG_TERM_REQUEST]


# --------------------------------------------------------------------------- RFC 5769


def test_rfc5769_sample_request() -> None:
    m = parse(SAMPLE_REQUEST)
    assert (m.method, m.cls, m.transaction_id) == (BINDING, REQUEST, TID)
    assert m.software == "STUN test client"
    assert m.username == "evtj:h6vY"
    assert m.priority == 0x6E0001FF
    assert m.ice_controlled == 0x932FF9B151263B36
    assert m.ice_controlling is None and not m.use_candidate
    assert m.fingerprint and m.unknown_required == ()
    assert check_integrity(m, PASSWORD)
    assert not check_integrity(m, PASSWORD[:-1] + b"u")


def test_rfc5769_sample_request_encoded_byte_for_byte() -> None:
    msg = StunMessage(
        BINDING,
        REQUEST,
        TID,
        software="STUN test client",
        priority=0x6E0001FF,
        ice_controlled=0x932FF9B151263B36,
        username="evtj:h6vY",
    )
    assert encode(msg, PASSWORD, _pad=b" ") == SAMPLE_REQUEST
    # the usual zero padding changes the bytes, MESSAGE-INTEGRITY and FINGERPRINT with them
    plain = encode(msg, PASSWORD)
    assert plain != SAMPLE_REQUEST and check_integrity(parse(plain), PASSWORD)


@pytest.mark.parametrize(
    ("data", "mapped"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
    ids=["ipv4", "ipv6"],
)
def test_rfc5769_sample_responses(data: bytes, mapped: tuple[str, int]) -> None:
    m = parse(data)
    assert (m.method, m.cls, m.transaction_id) == (BINDING, SUCCESS, TID)
    assert m.software == "test vector"
    assert m.xor_mapped_address == mapped
    assert m.fingerprint and check_integrity(m, PASSWORD)
    again = StunMessage(BINDING, SUCCESS, TID, software="test vector", xor_mapped_address=mapped)
    assert encode(again, PASSWORD, _pad=b" ") == data


def test_rfc5769_long_term_request() -> None:
    m = parse(SAMPLE_LONG_TERM_REQUEST)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # "matorikkusu" in katakana
    assert m.username == username
    assert m.nonce == "f//499k954d6OL34oL9FSTvy64sA"
    assert m.realm == "example.org"
    assert not m.fingerprint
    # the password "TheMatrIX" is SASLprep("TheM\u00aatr\u2168")
    key = long_term_key(username, "example.org", "TheMatrIX")
    assert check_integrity(m, key)
    assert not check_integrity(m, long_term_key(username, "example.org", "thematrix"))
    again = StunMessage(
        BINDING,
        REQUEST,
        m.transaction_id,
        username=username,
        nonce="f//499k954d6OL34oL9FSTvy64sA",
        realm="example.org",
    )
    assert encode(again, key, fingerprint=False) == SAMPLE_LONG_TERM_REQUEST


@pytest.mark.parametrize("index", range(len(SAMPLE_IPV4_RESPONSE) - 8))
def test_any_flipped_bit_fails_fingerprint_or_integrity(index: int) -> None:
    # every byte up to the end of MESSAGE-INTEGRITY (a flip in FINGERPRINT's own header
    # can make it an ignored attribute after MESSAGE-INTEGRITY: still authentic)
    data = bytearray(SAMPLE_IPV4_RESPONSE)
    data[index] ^= 0x01
    try:
        m = parse(bytes(data))
    except StunError:
        return  # the FINGERPRINT (or the framing) caught it
    assert not check_integrity(m, PASSWORD)


# --------------------------------------------------------------------------- attributes


def test_message_type_bits() -> None:
    assert message_type(BINDING, REQUEST) == 0x0001
    assert message_type(BINDING, INDICATION) == 0x0011
    assert message_type(BINDING, SUCCESS) == 0x0101
    assert message_type(BINDING, ERROR) == 0x0111
    for method in (0x001, 0x003, 0x00F, 0x010, 0x0FF, 0xFFF):
        for cls in (REQUEST, INDICATION, SUCCESS, ERROR):
            assert split_type(message_type(method, cls)) == (method, cls)


def test_ice_attributes_round_trip() -> None:
    tid = bytes(range(12))
    msg = StunMessage(
        BINDING,
        REQUEST,
        tid,
        username="abcd:efgh",
        priority=1853824767,
        use_candidate=True,
        ice_controlling=2**64 - 1,
    )
    m = parse(encode(msg, b"secret-password-of-22c"))
    assert m.username == "abcd:efgh" and m.priority == 1853824767 and m.use_candidate
    assert m.ice_controlling == 2**64 - 1 and m.ice_controlled is None
    assert check_integrity(m, b"secret-password-of-22c") and m.fingerprint
    err = StunMessage(BINDING, ERROR, tid, error_code=(487, "Role Conflict"))
    m = parse(encode(err, b"k"))
    assert m.cls == ERROR and m.error_code == (487, "Role Conflict")
    err = StunMessage(BINDING, ERROR, tid, error_code=(420, "Unknown"), unknown_attributes=(7, 9))
    assert parse(encode(err)).unknown_attributes == (7, 9)
    v6 = StunMessage(
        BINDING, SUCCESS, tid, mapped_address=("::1", 9), xor_mapped_address=("::1", 9)
    )
    m = parse(encode(v6))
    assert m.mapped_address == ("::1", 9) and m.xor_mapped_address == ("::1", 9)


def test_no_integrity_means_no_check() -> None:
    m = parse(encode(StunMessage(BINDING, REQUEST, bytes(12), username="a:b")))
    assert m.integrity_at == -1 and not check_integrity(m, b"")


def with_attrs(*attrs: tuple[int, bytes], cls: int = REQUEST) -> bytes:
    """A message with these raw attributes (zero-padded), no integrity."""
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4) for t, v in attrs)
    header = struct.pack("!HHI12s", message_type(BINDING, cls), len(body), MAGIC_COOKIE, TID)
    return header + body


def test_unknown_comprehension_required_attributes_are_listed() -> None:
    m = parse(with_attrs((0x0099, b"x"), (0x7FFF, b""), (0xC001, b"optional"), (0x0099, b"")))
    assert m.unknown_required == (0x0099, 0x7FFF)  # once each; 0xC001 is optional


def test_repeated_attribute_first_counts_and_after_integrity_ignored() -> None:
    data = with_attrs((0x0024, struct.pack("!I", 1)), (0x0024, struct.pack("!I", 2)))
    assert parse(data).priority == 1
    signed = encode(StunMessage(BINDING, REQUEST, TID, username="a:b"), b"k", fingerprint=False)
    extra = struct.pack("!HH", 0x0024, 4) + struct.pack("!I", 5)
    tampered = bytearray(signed + extra)
    struct.pack_into("!H", tampered, 2, len(tampered) - 20)
    m = parse(bytes(tampered))
    assert m.priority is None  # after MESSAGE-INTEGRITY: not covered, ignored
    assert check_integrity(m, b"k")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter"),
        (SAMPLE_REQUEST[:19], "shorter"),
        (b"\x80" + SAMPLE_REQUEST[1:], "first two bits"),
        (SAMPLE_REQUEST[:4] + b"\0\0\0\0" + SAMPLE_REQUEST[8:], "magic cookie"),
        (SAMPLE_REQUEST[:-1], "length field"),
        (SAMPLE_REQUEST + b"\0\0\0\0", "length field"),
        (SAMPLE_REQUEST[:-4] + b"\0\0\0\0", "FINGERPRINT does not match"),
        (with_attrs((0x0024, b"abc")), "PRIORITY of 3 bytes"),
        (with_attrs((0x0025, b"x")), "USE-CANDIDATE of 1 bytes"),
        (with_attrs((0x802A, b"1234")), "ICE-CONTROLLING of 4 bytes"),
        (with_attrs((0x0008, b"short")), "MESSAGE-INTEGRITY of 5 bytes"),
        (with_attrs((0x0006, b"\xff\xfe")), "USERNAME is not UTF-8"),
        (with_attrs((0x0006, b"u" * 600)), "USERNAME of 600 bytes"),
        (with_attrs((0x0020, b"\0\x03\0\0abcd")), "unknown family 3"),
        (with_attrs((0x0020, b"\0\x01\0\0abc")), "IPv4 address attribute of 7 bytes"),
        (with_attrs((0x0001, b"\0\x02\0\0" + bytes(8))), "IPv6 address attribute of 12"),
        (with_attrs((0x0009, b"\0\0\x07\x00")), "ERROR-CODE class 7"),
        (with_attrs((0x0009, b"\0\0\x04\x64")), "number 100"),
        (with_attrs((0x000A, b"abc")), "UNKNOWN-ATTRIBUTES of an odd length"),
        (with_attrs((0x8028, b"\0\0\0\0"), (0x0024, b"\0\0\0\1")), "not the last"),
    ],
)
def test_malformed(data: bytes, why: str) -> None:
    with pytest.raises(StunError, match=why):
        parse(data)


def test_truncated_attribute_header_and_value() -> None:
    data = bytearray(with_attrs((0x0024, b"\0\0\0\1")))
    struct.pack_into("!H", data, 22, 8)  # the value claims 8 bytes; 4 are there
    with pytest.raises(StunError, match="runs past the end"):
        parse(bytes(data))
    short = with_attrs() + b"\0\x24"
    short = short[:2] + struct.pack("!H", 2) + short[4:]
    with pytest.raises(StunError, match="length field"):
        parse(short)


def test_encode_refuses_bad_fields() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        encode(StunMessage(BINDING, REQUEST, b"short"))
    with pytest.raises(ValueError, match=r"300\.\.699"):
        encode(StunMessage(BINDING, ERROR, TID, error_code=(200, "OK")))


def test_is_stun_demux() -> None:
    assert all(is_stun(v) for v in VECTORS)
    assert not is_stun(b"\x80" + bytes(40))  # RTP
    assert not is_stun(b"\x16\xfe\xfd" + bytes(40))  # DTLS
    assert not is_stun(SAMPLE_REQUEST[:19])
    assert not is_stun(SAMPLE_REQUEST[:4] + b"\0\0\0\0" + SAMPLE_REQUEST[8:])  # RFC 3489


def test_largest_message_parses_in_one_pass() -> None:
    # 16383 zero-length attributes of distinct unknown optional types and one required:
    # one pass, a bounded result
    attrs = [(0x8100 + i, b"") for i in range(16382)] + [(0x0042, b"")]
    m = parse(with_attrs(*attrs))
    assert len(m.raw) == 20 + 4 * 16383 and m.unknown_required == (0x0042,)


# --------------------------------------------------------------------------- fuzz


def _mutations() -> st.SearchStrategy[bytes]:
    flips = st.tuples(
        st.sampled_from(VECTORS), st.dictionaries(st.integers(0, 120), st.integers(1, 255))
    ).map(lambda t: bytes(b ^ t[1].get(i, 0) for i, b in enumerate(t[0])))
    cuts = st.tuples(st.sampled_from(VECTORS), st.integers(0, 120)).map(lambda t: t[0][: t[1]])
    soup = st.lists(
        st.tuples(
            st.sampled_from([1, 6, 8, 9, 0xA, 0x14, 0x15, 0x20, 0x24, 0x25, 0x8022, 0x8028]),
            st.binary(max_size=24),
        ),
        max_size=8,
    ).map(lambda attrs: with_attrs(*attrs))
    fixed = st.tuples(soup, st.integers(0, 3)).map(
        lambda t: t[0][:2] + struct.pack("!H", max(0, len(t[0]) - 20 - 4 * t[1])) + t[0][4:]
    )
    return st.one_of(st.binary(max_size=200), flips, cuts, soup, fixed)


def _with_fingerprint(data: bytes) -> bytes:
    """`data` with a valid FINGERPRINT appended (so the parser gets past it)."""
    body = data[20:] if len(data) >= 20 else b""
    header = data[:20] if len(data) >= 20 else with_attrs()[:20]
    header = header[:2] + struct.pack("!H", len(body) + 8) + header[4:]
    crc = (binascii.crc32(header + body) ^ 0x5354554E) & 0xFFFFFFFF
    return header + body + struct.pack("!HHI", 0x8028, 4, crc)


@SETTINGS
@given(data=_mutations(), fp=st.booleans())
def test_parse_raises_only_stun_error(data: bytes, fp: bool) -> None:
    if fp:
        data = _with_fingerprint(data)
    try:
        m = parse(data)
    except StunError:
        return
    assert m.raw == data and len(m.transaction_id) == 12
    check_integrity(m, PASSWORD)  # must not raise either
    if m.integrity_at >= 0:
        assert 20 <= m.integrity_at <= len(data) - 24
