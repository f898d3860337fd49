"""ISrtpSession and SrtpKeys: against pylibsrtp used directly in each direction, the three
profiles; tampered and replayed packets rejected; the RFC 5764 key split; and (Hypothesis)
random payloads and sequence numbers, across the 16-bit wrap, round-tripping; and the
DTLS-SRTP call example, which runs them over the IDtls engine on one UDP port per side."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from typing import Any

import pylibsrtp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit.certs import connect, delete
from kit.dtls import dtls_ctx
from kit.loop import Mux, free_port
from kit.peers import keying_material, output, ready_peer, wait_for_output

from usocket_asyncio import IInstanceLog, ISocketProvider, ISrtpSession, SrtpKeys
from usocket_asyncio._context import default_server_cert
from usocket_asyncio._dtls import DTLSSocket
from usocket_asyncio._dtls_core import (
    SRTP_PROFILES,
    ConnectionFailed,
    DtlsConfig,
    DtlsConnection,
    HandshakeCompleted,
)

PROFILES = {
    # name: (key, salt, pylibsrtp's constant)
    "SRTP_AES128_CM_SHA1_80": (16, 14, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
    "SRTP_AEAD_AES_128_GCM": (16, 12, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM),
    "SRTP_AEAD_AES_256_GCM": (32, 12, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM),
}

SETTINGS = settings(
    derandomize=True,  # seeded: the same examples on every run
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def key_salt(profile: str, seed: int) -> tuple[bytes, bytes]:
    key_len, salt_len, _ = PROFILES[profile]
    rnd = random.Random(seed)
    return rnd.randbytes(key_len), rnd.randbytes(salt_len)


def direct(profile: str, key: bytes, salt: bytes, outbound: bool) -> pylibsrtp.Session:
    """A pylibsrtp session made the way libsrtp's own examples make one."""
    policy = pylibsrtp.Policy(
        key=key + salt,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        if outbound
        else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=PROFILES[profile][2],
    )
    return pylibsrtp.Session(policy)


def rtp_header(seq: int, ts: int = 160, ssrc: int = 0x11223344, pt: int = 0) -> bytes:
    return (
        bytes([0x80, pt]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    )


def rtcp_packet(ssrc: int = 0x11223344, body: bytes = b"") -> bytes:
    """An RTCP receiver report with no blocks, plus `body` as an APP-like tail."""
    words = (8 + len(body)) // 4 - 1
    return bytes([0x80, 201]) + words.to_bytes(2, "big") + ssrc.to_bytes(4, "big") + body


def payloads(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randrange(0, 1200)) for _ in range(n)]


# -- against pylibsrtp, each direction ------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_protect_is_what_libsrtp_unprotects(profile: str) -> None:
    key, salt = key_salt(profile, 1)
    ours = ISrtpSession.Create(key, salt, profile)
    theirs = direct(profile, key, salt, outbound=False)
    for i, body in enumerate(payloads(40, 2)):
        head = rtp_header(1000 + i, ts=160 * i)
        packet = ours.Protect(head, body)
        assert packet[:12] == head  # the header travels in the clear
        assert body == b"" or body not in packet  # the payload does not
        assert theirs.unprotect(packet) == head + body


@pytest.mark.parametrize("profile", PROFILES)
def test_unprotect_takes_what_libsrtp_protects(profile: str) -> None:
    key, salt = key_salt(profile, 3)
    ours = ISrtpSession.Create(key, salt, profile)
    theirs = direct(profile, key, salt, outbound=True)
    for i, body in enumerate(payloads(40, 4)):
        head = rtp_header(7 + i, ts=160 * i, ssrc=0xCAFE)
        assert ours.Unprotect(theirs.protect(head + body)) == head + body


@pytest.mark.parametrize("profile", PROFILES)
def test_srtcp_both_directions_against_libsrtp(profile: str) -> None:
    key, salt = key_salt(profile, 5)
    ours = ISrtpSession.Create(key, salt, profile)
    their_rx = direct(profile, key, salt, outbound=False)
    their_tx = direct(profile, key, salt, outbound=True)
    for i in range(20):
        rtcp = rtcp_packet(body=i.to_bytes(4, "big") * (i + 1))
        assert their_rx.unprotect_rtcp(ours.SrtcpProtect(rtcp)) == rtcp
        assert ours.SrtcpUnprotect(their_tx.protect_rtcp(rtcp)) == rtcp


@pytest.mark.parametrize("profile", PROFILES)
def test_header_with_csrcs_and_extension(profile: str) -> None:
    key, salt = key_salt(profile, 6)
    tx, rx = ISrtpSession.Create(key, salt, profile), direct(profile, key, salt, False)
    csrcs = (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    extension = b"\xbe\xde\x00\x01" + b"\x10\xff\x00\x00"  # RFC 8285 one-byte header, 1 word
    head = bytes([0x92, 96]) + rtp_header(5)[2:] + csrcs + extension  # X=1, CC=2
    assert rx.unprotect(tx.Protect(head, b"media")) == head + b"media"


# -- tamper and replay ------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("where", [1, 8, 12, 30, -1])  # header fields, payload, tag
def test_a_flipped_bit_is_rejected(profile: str, where: int) -> None:
    key, salt = key_salt(profile, 7)
    tx, rx = ISrtpSession.Create(key, salt, profile), ISrtpSession.Create(key, salt, profile)
    packet = tx.Protect(rtp_header(1), bytes(40))
    bad = bytearray(packet)
    bad[where] ^= 0x01
    assert rx.Unprotect(bytes(bad)) is None
    assert rx.Unprotect(packet) == rtp_header(1) + bytes(40)  # the real one still passes


@pytest.mark.parametrize("profile", PROFILES)
def test_a_replayed_packet_is_rejected(profile: str) -> None:
    key, salt = key_salt(profile, 8)
    tx, rx = ISrtpSession.Create(key, salt, profile), ISrtpSession.Create(key, salt, profile)
    first, second = tx.Protect(rtp_header(10), b"one"), tx.Protect(rtp_header(11), b"two")
    assert rx.Unprotect(second) == rtp_header(11) + b"two"
    assert rx.Unprotect(first) == rtp_header(10) + b"one"  # late, but inside the window
    assert rx.Unprotect(first) is None
    assert rx.Unprotect(second) is None


@pytest.mark.parametrize("profile", PROFILES)
def test_srtcp_tamper_and_replay_are_rejected(profile: str) -> None:
    key, salt = key_salt(profile, 9)
    tx, rx = ISrtpSession.Create(key, salt, profile), ISrtpSession.Create(key, salt, profile)
    rtcp = rtcp_packet(body=b"abcd")
    packet = tx.SrtcpProtect(rtcp)
    for where in (1, 9, len(packet) - 1):
        bad = bytearray(packet)
        bad[where] ^= 0x80
        assert rx.SrtcpUnprotect(bytes(bad)) is None
    assert rx.SrtcpUnprotect(packet) == rtcp
    assert rx.SrtcpUnprotect(packet) is None


@pytest.mark.parametrize("profile", PROFILES)
def test_wrong_key_and_garbage_give_none(profile: str) -> None:
    key, salt = key_salt(profile, 10)
    other_key, _ = key_salt(profile, 11)
    tx = ISrtpSession.Create(key, salt, profile)
    rx = ISrtpSession.Create(other_key, salt, profile)
    assert rx.Unprotect(tx.Protect(rtp_header(1), b"secret")) is None
    assert rx.SrtcpUnprotect(tx.SrtcpProtect(rtcp_packet())) is None
    for junk in (b"", b"\x80", bytes(11), b"\x16\xfe\xfd" + bytes(40), bytes(1600)):
        assert rx.Unprotect(junk) is None
        assert rx.SrtcpUnprotect(junk) is None


@pytest.mark.parametrize("profile", PROFILES)
def test_protecting_a_sequence_number_twice_raises(profile: str) -> None:
    key, salt = key_salt(profile, 12)
    tx = ISrtpSession.Create(key, salt, profile)
    tx.Protect(rtp_header(3), b"a")
    with pytest.raises(ValueError, match="new sequence number"):
        tx.Protect(rtp_header(3), b"b")


# -- the caller's mistakes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "salt", "profile", "error", "match"),
    [
        (bytes(16), bytes(14), "SRTP_AES128_CM_SHA1_32", ValueError, "unknown SRTP profile"),
        (bytes(16), bytes(14), "srtp_aes128_cm_sha1_80", ValueError, "unknown SRTP profile"),
        (bytes(16), bytes(14), 1, TypeError, "profile"),
        (bytes(15), bytes(14), "SRTP_AES128_CM_SHA1_80", ValueError, "16-byte master key"),
        (bytes(16), bytes(12), "SRTP_AES128_CM_SHA1_80", ValueError, "14-byte master salt"),
        (bytes(16), bytes(14), "SRTP_AEAD_AES_128_GCM", ValueError, "12-byte master salt"),
        (bytes(16), bytes(12), "SRTP_AEAD_AES_256_GCM", ValueError, "32-byte master key"),
        (bytes(30), b"", "SRTP_AES128_CM_SHA1_80", ValueError, "SrtpKeys"),
        ("0" * 16, bytes(14), "SRTP_AES128_CM_SHA1_80", TypeError, "masterKey"),
        (bytes(16), None, "SRTP_AES128_CM_SHA1_80", TypeError, "masterSalt"),
    ],
)
def test_create_refuses_bad_input(
    key: object, salt: object, profile: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ISrtpSession.Create(key, salt, profile)  # type: ignore[arg-type]


def test_create_takes_any_bytes_like() -> None:
    key, salt = key_salt("SRTP_AEAD_AES_128_GCM", 13)
    tx = ISrtpSession.Create(bytearray(key), memoryview(salt), "SRTP_AEAD_AES_128_GCM")
    rx = ISrtpSession.Create(key, salt, "SRTP_AEAD_AES_128_GCM")
    packet = tx.Protect(bytearray(rtp_header(1)), memoryview(b"payload"))
    assert rx.Unprotect(bytearray(packet)) == rtp_header(1) + b"payload"


@pytest.mark.parametrize(
    ("header", "payload", "error", "match"),
    [
        (bytes(11), b"", ValueError, "at least 12 bytes"),
        (b"\x40" + bytes(11), b"", ValueError, "version 2"),
        (b"\x83" + bytes(11) + bytes(8), b"", ValueError, "CSRC count"),  # CC=3, 2 given
        (b"\x90" + bytes(11), b"", ValueError, "extension"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), b"", ValueError, "extension"),
        (rtp_header(1), bytes(1345), ValueError, "too long"),
        ("header", b"", TypeError, "RTP header"),
        (rtp_header(1), "payload", TypeError, "RTP payload"),
    ],
)
def test_protect_refuses_bad_input(
    header: object, payload: object, error: type[Exception], match: str
) -> None:
    tx = ISrtpSession.Create(*key_salt("SRTP_AES128_CM_SHA1_80", 14), "SRTP_AES128_CM_SHA1_80")
    with pytest.raises(error, match=match):
        tx.Protect(header, payload)  # type: ignore[arg-type]


def test_longest_packet_is_accepted() -> None:
    tx = ISrtpSession.Create(*key_salt("SRTP_AES128_CM_SHA1_80", 15), "SRTP_AES128_CM_SHA1_80")
    rx = ISrtpSession.Create(*key_salt("SRTP_AES128_CM_SHA1_80", 15), "SRTP_AES128_CM_SHA1_80")
    body = random.Random(16).randbytes(1356 - 12)
    assert rx.Unprotect(tx.Protect(rtp_header(1), body)) == rtp_header(1) + body


def test_srtcp_protect_refuses_bad_input() -> None:
    tx = ISrtpSession.Create(*key_salt("SRTP_AES128_CM_SHA1_80", 17), "SRTP_AES128_CM_SHA1_80")
    with pytest.raises(ValueError, match="RTCP"):
        tx.SrtcpProtect(bytes(7))
    with pytest.raises(ValueError, match="version 2"):
        tx.SrtcpProtect(bytes(8))
    with pytest.raises(ValueError, match="too long"):
        tx.SrtcpProtect(rtcp_packet(body=bytes(1348)))
    with pytest.raises(TypeError, match="RTCP packet"):
        tx.SrtcpProtect("rtcp")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SRTP packet"):
        tx.Unprotect(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SRTCP packet"):
        tx.SrtcpUnprotect(1)  # type: ignore[arg-type]


@pytest.mark.pure_only
def test_create_without_pylibsrtp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pylibsrtp", None)  # import pylibsrtp now fails
    with pytest.raises(ImportError, match=r"pip install 'usocket_asyncio\[srtp\]'"):
        ISrtpSession.Create(bytes(16), bytes(14), "SRTP_AES128_CM_SHA1_80")
    # the key split needs no libsrtp
    assert SrtpKeys(bytes(60), "SRTP_AES128_CM_SHA1_80", False)[0] == bytes(16)


# -- SrtpKeys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "client_key", "server_key", "client_salt", "server_salt"),
    [
        # RFC 5764 §4.2: client_write_key | server_write_key | client_salt | server_salt
        ("SRTP_AES128_CM_SHA1_80", range(0, 16), range(16, 32), range(32, 46), range(46, 60)),
        ("SRTP_AEAD_AES_128_GCM", range(0, 16), range(16, 32), range(32, 44), range(44, 56)),
        ("SRTP_AEAD_AES_256_GCM", range(0, 32), range(32, 64), range(64, 76), range(76, 88)),
    ],
)
def test_srtp_keys_layout(
    profile: str, client_key: range, server_key: range, client_salt: range, server_salt: range
) -> None:
    material = bytes(range(len(client_key) * 2 + len(client_salt) * 2))
    ck, cs, sk, ss = map(bytes, (client_key, client_salt, server_key, server_salt))
    assert SrtpKeys(material, profile, False) == (ck, cs, sk, ss)
    assert SrtpKeys(material, profile, True) == (sk, ss, ck, cs)


@pytest.mark.parametrize("profile", PROFILES)
def test_srtp_keys_sides_agree_and_media_flows(profile: str) -> None:
    key_len, salt_len, _ = PROFILES[profile]
    material = random.Random(18).randbytes(2 * (key_len + salt_len))
    c_key, c_salt, c_rkey, c_rsalt = SrtpKeys(bytearray(material), profile, False)
    s_key, s_salt, s_rkey, s_rsalt = SrtpKeys(memoryview(material), profile, True)
    assert (c_key, c_salt) == (s_rkey, s_rsalt)
    assert (s_key, s_salt) == (c_rkey, c_rsalt)
    assert c_key != s_key
    # a call: each side sends with its local pair, receives with the remote one
    client_tx, client_rx = (
        ISrtpSession.Create(c_key, c_salt, profile),
        ISrtpSession.Create(c_rkey, c_rsalt, profile),
    )
    server_tx, server_rx = (
        ISrtpSession.Create(s_key, s_salt, profile),
        ISrtpSession.Create(s_rkey, s_rsalt, profile),
    )
    up, down = client_tx.Protect(rtp_header(1), b"up"), server_tx.Protect(rtp_header(1), b"dn")
    assert server_rx.Unprotect(up) == rtp_header(1) + b"up"
    assert client_rx.Unprotect(down) == rtp_header(1) + b"dn"
    assert client_rx.Unprotect(up) is None  # the other direction's key does not fit


@pytest.mark.parametrize(
    ("keys", "profile", "error", "match"),
    [
        (bytes(59), "SRTP_AES128_CM_SHA1_80", ValueError, "60 bytes"),
        (bytes(56), "SRTP_AES128_CM_SHA1_80", ValueError, "not 56"),
        (bytes(60), "SRTP_AEAD_AES_128_GCM", ValueError, "56 bytes"),
        (bytes(56), "SRTP_AEAD_AES_256_GCM", ValueError, "88 bytes"),
        (bytes(60), "SRTP_NULL_SHA1_80", ValueError, "unknown SRTP profile"),
        ("0" * 60, "SRTP_AES128_CM_SHA1_80", TypeError, "keying material"),
    ],
)
def test_srtp_keys_refuses_bad_input(
    keys: object, profile: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        SrtpKeys(keys, profile, False)  # type: ignore[arg-type]


# -- Hypothesis: random media round-trips -------------------------------------------------------


@SETTINGS
@given(
    profile=st.sampled_from(sorted(PROFILES)),
    seed=st.integers(0, 2**32 - 1),
    first_seq=st.one_of(st.integers(0, 65535), st.integers(65500, 65535)),
    ssrc=st.integers(0, 2**32 - 1),
    bodies=st.lists(st.binary(max_size=1344), min_size=1, max_size=12),
    skip=st.integers(1, 40),
)
def test_random_media_round_trips(
    profile: str, seed: int, first_seq: int, ssrc: int, bodies: list[bytes], skip: int
) -> None:
    key, salt = key_salt(profile, seed)
    tx, rx = ISrtpSession.Create(key, salt, profile), ISrtpSession.Create(key, salt, profile)
    libsrtp_rx = direct(profile, key, salt, outbound=False)
    seq = first_seq
    for i, body in enumerate(bodies):
        head = rtp_header(seq, ts=i * 160, ssrc=ssrc, pt=96 + i % 2)
        packet = tx.Protect(head, body)
        assert rx.Unprotect(packet) == head + body
        assert libsrtp_rx.unprotect(packet) == head + body
        assert rx.Unprotect(packet) is None
        seq = (seq + skip) % 65536  # gaps (lost packets) and the wrap to the next roll-over


# -- the example: a DTLS-SRTP call on one port per side -----------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", [[], ["--uvloop"]])
def test_srtp_call_example_runs_and_exits_0(flag: list[str]) -> None:
    """Two endpoints, one UDP port each: DTLS with pinned fingerprints, 50 RTP packets
    each way, SRTCP, STUN passed through, a forged and a replayed packet dropped."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(
        [sys.executable, "-m", "examples.srtp_call", *flag],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for side in ("offerer", "answerer"):
        assert (
            f"{side}: 50/50 RTP payloads, 1 SRTCP report, 6 STUN untouched, "
            "2 forged/replayed dropped, DTLS closed 0"
        ) in run.stdout
    assert "every payload arrived intact" in run.stdout
    assert "Traceback" not in run.stderr


# -- SRTP_AEAD_AES_256_GCM through the DTLS engine -----------------------------------------------


def _engines_agree(server_profiles: bytes) -> tuple[HandshakeCompleted, HandshakeCompleted]:
    """A client engine with the default offer and a server offering `server_profiles`,
    joined directly (no loss): both HandshakeCompleted events."""
    pem = default_server_cert().pem
    client = DtlsConnection(DtlsConfig(False, pem, use_srtp=True, verify=False))
    server = DtlsConnection(
        DtlsConfig(True, pem, use_srtp=True, srtp_profiles=server_profiles),
        peer=("127.0.0.1", 40000),
    )
    done: dict[str, HandshakeCompleted] = {}
    client.start(0.0)
    server.start(0.0)
    for _ in range(50):
        for src, dst, addr in ((client, server, ("127.0.0.1", 40000)), (server, client, None)):
            for datagram in src.datagrams_to_send():
                dst.receive_datagram(datagram, 0.0, addr)
        for key, conn in (("c", client), ("s", server)):
            while (ev := conn.next_event()) is not None:
                assert not isinstance(ev, ConnectionFailed), ev
                if isinstance(ev, HandshakeCompleted):
                    done[key] = ev
        if len(done) == 2:
            return done["c"], done["s"]
    raise AssertionError("the handshake did not complete")


def test_the_engine_offers_aes_256_gcm_and_media_flows() -> None:
    """A server that takes only SRTP_AEAD_AES_256_GCM (profile 0x0008) agrees on it with
    the engine's default offer; the 88 bytes of keying material both sides export split
    into keys that carry media both ways."""
    c, s = _engines_agree(b"SRTP_AEAD_AES_256_GCM")
    assert c.srtp_profile == s.srtp_profile == "SRTP_AEAD_AES_256_GCM"
    assert c.srtp_keys is not None and c.srtp_keys == s.srtp_keys and len(c.srtp_keys) == 88
    profile = "SRTP_AEAD_AES_256_GCM"
    ck, csalt, crk, crsalt = SrtpKeys(c.srtp_keys, profile, False)
    sk, ssalt, srk, srsalt = SrtpKeys(c.srtp_keys, profile, True)
    up = ISrtpSession.Create(ck, csalt, profile).Protect(rtp_header(7), b"from the client")
    down = ISrtpSession.Create(sk, ssalt, profile).Protect(rtp_header(9), b"from the server")
    assert ISrtpSession.Create(srk, srsalt, profile).Unprotect(up) == rtp_header(7) + (
        b"from the client"
    )
    assert ISrtpSession.Create(crk, crsalt, profile).Unprotect(down) == rtp_header(9) + (
        b"from the server"
    )


def test_the_engine_still_prefers_aes_128_gcm() -> None:
    """Offered everything, the engine as server keeps its own first choice."""
    c, s = _engines_agree(SRTP_PROFILES)
    assert c.srtp_profile == s.srtp_profile == "SRTP_AEAD_AES_128_GCM"


@pytest.mark.interop
@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_library_client_against_s_server_aes_256_gcm(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """openssl s_server offering only SRTP_AEAD_AES_256_GCM: the library's DTLS client
    agrees on it and exports the same 88 bytes of keying material openssl prints."""
    port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
    args = ["openssl", "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{port}"]
    args += ["-cert", files["server"], "-use_srtp", "SRTP_AEAD_AES_256_GCM", "-naccept", "1"]
    args += ["-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", "88"]
    with ready_peer(args, "ACCEPT") as proc:
        cctx = dtls_ctx(prov, log, trust=ca.cert_pem.bytes())
        cli, crec = connect(mux, log, prov, cctx, port, "localhost")
        mux.run_until(lambda: crec.events != [], 10, "the handshake")
        assert crec.names() == ["connect"], (crec.events, output(proc))
        assert isinstance(cli, DTLSSocket)
        wait_for_output(mux, proc, "Keying material:")
        assert "SRTP Extension negotiated, profile=SRTP_AEAD_AES_256_GCM" in output(proc)
        assert cli.GetSrtpProfile() == "SRTP_AEAD_AES_256_GCM"
        keys = cli.GetSrtpKeys()
        assert keys is not None and len(keys) == 88
        assert keys == keying_material(output(proc))
        delete(cli)
