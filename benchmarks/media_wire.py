"""What the media benchmark's processes share: the packet layout, the keys of the raw
reference, and the line protocol on stdin/stdout.

A test packet's payload is `PAYLOAD` bytes (20 ms of G.711 at 8 kHz): a tag (`TAG`: the
stream's id and the packet's number in its stream) and a fixed `FILLER`; its RTP
timestamp is the stream's first plus `FRAME` per packet number, and the servers echo it
unchanged. An echo checks out when it decrypts under the server's
key, its payload is the same `PAYLOAD` bytes, the tag names the stream it came back on,
and the filler is intact.

The raw reference has no DTLS: its keys come from `raw_keys(seed, stream, profile)` on
both sides (the IMedia endpoints get theirs from DTLS-SRTP).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Callable
from typing import Any

PAYLOAD = 160
"""Bytes of payload per packet: 20 ms of G.711 at 8 kHz."""
FRAME = 160
"""RTP timestamp units per packet (8 kHz, 20 ms)."""
PERIOD = 0.020
"""Seconds between two packets of one stream: 50 packets/s each way."""
TAG = struct.Struct("!II")
"""stream id, packet number (the load generator keeps each packet's send time)."""
FILLER = bytes((i * 37 + 11) & 0xFF for i in range(PAYLOAD - TAG.size))
RTP = struct.Struct("!BBHII")
"""The fixed RTP header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC."""
TS = struct.Struct("!I")
"""The RTP timestamp (at offset 4: in the clear in SRTP, and authenticated)."""
PROFILES = ("SRTP_AES128_CM_SHA1_80", "SRTP_AEAD_AES_128_GCM")
"""The SRTP profiles the DTLS engine negotiates (the benchmark offers one of them)."""
AUTH_TAG = {"SRTP_AES128_CM_SHA1_80": 10, "SRTP_AEAD_AES_128_GCM": 16}
"""Bytes SRTP adds to an RTP packet (the authentication tag) under each profile."""
KEY_SALT = {"SRTP_AES128_CM_SHA1_80": (16, 14), "SRTP_AEAD_AES_128_GCM": (16, 12)}


def raw_keys(seed: int, stream: int, direction: str, profile: str) -> bytes:
    """The key and salt (concatenated, as libsrtp takes them) of one direction ("up":
    load generator to server, "down": back) of raw stream `stream`."""
    key, salt = KEY_SALT[profile]
    material = hashlib.sha256(f"{seed}/{stream}/{direction}".encode()).digest()
    return material[: key + salt]


def srtp_session(key_salt: bytes, profile: str, outbound: bool) -> Any:
    """A pylibsrtp session for one direction (any SSRC)."""
    import pylibsrtp

    policy = pylibsrtp.Policy(
        key=key_salt,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        if outbound
        else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=getattr(pylibsrtp.Policy, "SRTP_PROFILE_" + profile[len("SRTP_") :]),
    )
    return pylibsrtp.Session(policy)


def reply(obj: Any) -> None:
    """One JSON line on stdout (to the orchestrator)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def runq_wait() -> float:
    """Seconds this process has spent runnable but waiting for a CPU (the scheduler's
    run_delay, /proc/self/schedstat; 0.0 where there is none): on a machine shared
    with other work, the time another task had the process's CPU."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def pin(cpu: int | None) -> None:
    """Run this process on `cpu` only, where the OS allows it."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


class Commands:
    """Reads JSON commands, one a line, from stdin on the loop and hands each to `handle`;
    end of input calls `eof`."""

    def __init__(
        self, loop: Any, handle: Callable[[dict[str, Any]], None], eof: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.handle = handle
        self.eof = eof
        self.pending = b""
        loop.add_reader(0, self._readable)

    def _readable(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.close()
            self.eof()
            return
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            if line.strip():
                self.handle(json.loads(line))

    def close(self) -> None:
        try:
            self.loop.remove_reader(0)
        except Exception:
            pass
