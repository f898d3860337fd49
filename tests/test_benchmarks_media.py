"""The media benchmark's load generator counts what a server does wrong: against an echo
server that drops, delays, corrupts and repeats chosen packets, its late, lost, bad and
duplicate counts are those packets, on both loops, whether it decrypts every echo or one
in eight (it matches echoes to packets by their RTP timestamp)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from benchmarks.media_client import Generator
from benchmarks.media_wire import RTP, TAG, raw_keys, srtp_session
from benchmarks.servers import new_loop

PROFILE = "SRTP_AES128_CM_SHA1_80"
SEED = 7
STREAMS = 4
DELAY = 1.2
"""How late the delayed echoes come (the run counts more than `LATE` as late)."""
LATE = 0.5


def fate(n: int) -> str:
    """What the faulty server does with packet number `n` of a stream (two in ten are
    corrupted, one odd and one even, so that one in 8 decrypted finds some whatever
    the stream's first number)."""
    return {3: "drop", 5: "delay", 7: "corrupt", 8: "corrupt", 9: "twice"}.get(n % 10, "echo")


class FaultyEcho(asyncio.DatagramProtocol):
    """A raw-keyed echo (as benchmarks/media_server.py's raw server) that drops, delays,
    corrupts the payload of, or repeats packets by their number; it notes each fate."""

    def __init__(self, sid: int, loop: asyncio.AbstractEventLoop, log: dict[str, set[Any]]):
        self.rx = srtp_session(raw_keys(SEED, sid, "up", PROFILE), PROFILE, False)
        self.tx = srtp_session(raw_keys(SEED, sid, "down", PROFILE), PROFILE, True)
        self.sid = sid
        self.loop = loop
        self.log = log
        self.seq = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pkt = self.rx.unprotect(data)
        _, b1, _, ts, _ = RTP.unpack_from(pkt)
        payload = bytearray(pkt[12:])
        sid, n = TAG.unpack_from(payload)
        what = fate(n)
        self.log[what].add((sid, n))
        if what == "drop":
            return
        if what == "corrupt":
            payload[TAG.size + 5] ^= 0xFF
        self.seq += 1
        out = self.tx.protect(RTP.pack(0x80, b1, self.seq, ts, 0x1234) + bytes(payload))
        if what == "delay":
            self.loop.call_later(DELAY, self.transport.sendto, out, addr)
            return
        self.transport.sendto(out, addr)
        if what == "twice":
            self.transport.sendto(out, addr)


@contextmanager
def faulty_servers(loop_kind: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Generator]]:
    """A new loop of `loop_kind`, `STREAMS` faulty echo servers on it and a generator
    that expects them; all closed on the way out."""
    loop = new_loop(loop_kind)
    log: dict[str, set[Any]] = {k: set() for k in ("drop", "delay", "corrupt", "twice", "echo")}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    gen = Generator(loop, sock, PROFILE)
    transports = []
    try:
        streams = []
        for sid in range(STREAMS):
            t, _ = loop.run_until_complete(
                loop.create_datagram_endpoint(
                    lambda sid=sid: FaultyEcho(sid, loop, log),  # type: ignore[misc]
                    local_addr=("127.0.0.1", 0),
                )
            )
            transports.append(t)
            streams.append({"id": sid, "port": t.get_extra_info("sockname")[1]})
        gen.expect({"impl": "raw", "streams": streams, "seed": SEED, "profile": PROFILE})
        yield loop, gen
    finally:
        for t in transports:
            t.close()
        gen.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("check_every", [1, 8])
def test_generator_counts_a_faulty_servers_echoes(loop_kind: str, check_every: int) -> None:
    with faulty_servers(loop_kind) as (loop, gen):
        cmd = {
            "count": STREAMS,
            "seconds": 1.0,
            "warmup": 0.0,  # every packet measured (the bad counter is not per run)
            "late": LATE,
            "grace": DELAY + 0.6,
            "check_every": check_every,
        }
        res = loop.run_until_complete(gen.run_streams(cmd))
    sent: int = res["sent"]
    assert sent >= STREAMS * 45 and res["check_every"] == check_every
    # each fate is every 10th packet of each stream: over the measured run, a tenth of
    # what was sent, within one packet per stream (where the run starts and ends)
    tenth: float = sent / 10

    def about(x: int) -> bool:
        return bool(abs(x - tenth) <= STREAMS)

    assert about(res["late"]), res  # the delayed ones, and only those
    assert about(res["duplicate"]), res  # the repeated ones
    if check_every == 1:  # every corrupted echo decrypted, found bad, not received
        assert abs(res["counters"]["bad"] - 2 * tenth) <= 2 * STREAMS, res
        assert about(res["lost"] - res["counters"]["bad"]), res  # the dropped ones
        assert res["decrypted"] >= res["received"]  # (warm-up echoes decrypted too)
    else:  # one in 8 decrypted: some corrupted ones found (at least one a stream), the
        # dropped ones all lost
        assert STREAMS <= res["counters"]["bad"] < tenth, res
        assert about(res["lost"] - res["counters"]["bad"]), res
        assert res["decrypted"] < res["received"] / 4
    assert res["received"] + res["lost"] == sent
    assert res["counters"]["foreign"] == 0 and res["client_drops"] == 0
    assert res["send_failed"] == 0


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_echoes_after_their_run_are_stale_not_bad(loop_kind: str) -> None:
    """A run whose delayed echoes come only after it ended counts them lost; when they
    come (between runs or in the next run) they are stale, not bad echoes of the next."""
    with faulty_servers(loop_kind) as (loop, gen):
        cmd = {"count": STREAMS, "seconds": 0.5, "warmup": 0.0, "late": LATE, "grace": 0.1}
        first = loop.run_until_complete(gen.run_streams(cmd))
        second = loop.run_until_complete(gen.run_streams({**cmd, "grace": DELAY + 0.4}))
        loop.run_until_complete(asyncio.sleep(DELAY + 0.2))
    delayed_first = first["sent"] / 10
    # the first run's delayed echoes were not there within its grace: lost, not late
    assert (
        first["late"] == 0
        and abs(first["lost"] - first["counters"]["bad"] - 2 * delayed_first) <= 2 * STREAMS
    )
    # they came during the second run: stale there, no bad echo but the corrupted ones
    assert second["counters"]["stale"] >= delayed_first - STREAMS, second
    assert abs(second["counters"]["bad"] - 2 * second["sent"] / 10) <= 2 * STREAMS, second
    assert gen.counters["stale"] >= second["counters"]["stale"]
