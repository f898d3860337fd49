"""A slow or absent reader never makes the process grow.

A stdlib peer, driven nonblocking on the same loop, pushes up to 256 MiB at a library
socket that has no pending `Recv` (and at one that reads slowly). The library must stop
reading once it holds a bounded amount, so the kernel buffers fill and the peer blocks;
the process's resident size stays within a few MiB of where it started. Afterwards the
app reads everything the peer managed to send, and the bytes are intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import time
from typing import Any

import pytest
from kit.loop import Mux, Recorder, rss
from kit.streams import listener

from usocket_asyncio import (
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    IInstanceLog,
    ISocket,
)

PUSH_LIMIT = 256 * 1024 * 1024
"""The peer stops after this many bytes..."""
BLOCKED_FOR = 0.5
"""...or once its sends have been refused for this long without a break."""
SLOW_PUSH_SECONDS = 0.6
"""With a slow reader the peer is never blocked for long: it pushes this long (a library
that held what the reader has not taken would read the loopback's hundreds of MiB a
second and be past RSS_SLACK within a fraction of this, and never refuse the peer)."""
RSS_SLACK = 8 * 1024 * 1024
"""How much the resident size may grow (allocator noise, the loop's own buffers)."""
CHUNK = random.Random(11).randbytes(1 << 20)


class Peer:
    """A nonblocking stdlib socket that sends CHUNK over and over from a loop task."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0
        self.refusals = 0
        self.longest_block = 0.0

    async def push(self, seconds: float | None) -> None:
        view = memoryview(CHUNK)
        start = time.monotonic()
        blocked_since: float | None = None
        while self.sent < PUSH_LIMIT:
            now = time.monotonic()
            if seconds is not None and now - start > seconds:
                return
            off = self.sent % len(CHUNK)
            try:
                self.sent += self.sock.send(view[off:])
                blocked_since = None
                await asyncio.sleep(0)
            except BlockingIOError:
                self.refusals += 1
                if blocked_since is None:
                    blocked_since = now
                self.longest_block = max(self.longest_block, now - blocked_since)
                if seconds is None and now - blocked_since >= BLOCKED_FOR:
                    return
                await asyncio.sleep(0.005)


def expected_hash(n: int) -> str:
    h = hashlib.sha256()
    whole, part = divmod(n, len(CHUNK))
    for _ in range(whole):
        h.update(CHUNK)
    h.update(CHUNK[:part])
    return h.hexdigest()


def setup(mux: Mux, log: IInstanceLog, kind: str, tmp: str) -> tuple[ISocket, Any, Peer]:
    if kind == "tcp":
        lsock, lrec, accepted = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1")
        raw = socket.create_connection(("127.0.0.1", lrec.events[0][2]), timeout=5)
    else:
        path = os.path.join(tmp, "m")
        lsock, lrec, accepted = listener(mux, log, CreateLocalSocketProvider(), path)
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(5)
        raw.connect(path)
    raw.setblocking(False)
    mux.run_until(lambda: bool(accepted), what="accept")
    lsock.Delete()
    return accepted[0][0], accepted[0][1], Peer(raw)


def drain(mux: Mux, sock: ISocket, rec: Recorder, total: int) -> None:
    """Read everything the peer sent, with partial Recvs, and check it."""
    buf = bytearray(1 << 20)
    h = hashlib.sha256()
    got = [0]

    def on_recv(s: ISocket, b: Any, n: int) -> None:
        h.update(memoryview(b)[:n])
        got[0] += n
        if got[0] < total:
            s.Recv(buf, None, True)

    rec.hooks["recv"] = on_recv
    rec.received = bytearray()  # the Recorder's copy is not needed here
    rec.hooks.pop("accept", None)
    sock.Recv(buf, None, True)
    mux.run_until(lambda: got[0] >= total, timeout=30, what="draining")
    assert got[0] == total
    assert h.hexdigest() == expected_hash(total)


class _Counting(Recorder):
    """A Recorder that does not keep the received bytes (they are hashed instead)."""

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        self._rec("recv", len)
        self._hook("recv", socket, buf, len)


@pytest.mark.parametrize("kind", ["tcp", "local"])
def test_no_pending_recv_holds_a_bounded_amount(
    mux: Mux, log: IInstanceLog, kind: str, short_tmp: str
) -> None:
    log.SetLogFlags(0)  # a log line per pause would itself be growth
    sock, _rec, peer = setup(mux, log, kind, short_tmp)
    counting = _Counting("server")
    sock.SetUser(counting)
    try:
        mux.run_for(0.05)
        before = rss()
        mux.loop.run_until_complete(peer.push(None))
        after = rss()
        assert peer.longest_block >= BLOCKED_FOR, (peer.sent, peer.refusals)
        assert peer.sent < PUSH_LIMIT, "the peer was never blocked"
        assert after - before < RSS_SLACK, (
            f"grew by {(after - before) / 2**20:.1f} MiB while the peer sent "
            f"{peer.sent / 2**20:.1f} MiB"
        )
        assert counting.events == []
        drain(mux, sock, counting, peer.sent)
        assert not counting.violations
    finally:
        peer.sock.close()
        sock.Delete()


@pytest.mark.parametrize("kind", ["tcp", "local"])
def test_slow_reader_holds_a_bounded_amount(
    mux: Mux, log: IInstanceLog, kind: str, short_tmp: str
) -> None:
    log.SetLogFlags(0)
    sock, _rec, peer = setup(mux, log, kind, short_tmp)
    counting = _Counting("server")
    sock.SetUser(counting)
    small, big = bytearray(16384), bytearray(1 << 20)
    h = hashlib.sha256()
    got = [0]
    fast = [False]

    def on_recv(s: ISocket, b: Any, n: int) -> None:
        h.update(memoryview(b)[:n])
        got[0] += n
        if fast[0]:
            if got[0] < peer.sent:
                s.Recv(big, None, True)
        else:  # the slow reader: 16 KiB every 5 ms at most, about 3 MiB/s
            mux.loop.call_later(0.005, lambda: s.Recv(small, None, True))

    counting.hooks["recv"] = on_recv
    try:
        mux.run_for(0.05)
        before = rss()
        sock.Recv(small, None, True)
        mux.loop.run_until_complete(peer.push(SLOW_PUSH_SECONDS))
        after = rss()
        assert peer.refusals > 0, "the peer was never blocked"
        assert 0 < got[0] < peer.sent
        assert after - before < RSS_SLACK, (
            f"grew by {(after - before) / 2**20:.1f} MiB while the peer sent "
            f"{peer.sent / 2**20:.1f} MiB and the app read {got[0] / 2**20:.1f} MiB"
        )
        # then read the rest at full speed and check the whole stream
        fast[0] = True
        mux.run_until(lambda: got[0] >= peer.sent, timeout=30, what="draining")
        assert got[0] == peer.sent
        assert h.hexdigest() == expected_hash(peer.sent)
        assert not counting.violations
    finally:
        peer.sock.close()
        sock.Delete()
