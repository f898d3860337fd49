"""Load: thousands of connections at once, connection churn, and running out of
descriptors; afterwards descriptors, tasks and memory are back where they started.

The default run takes a few seconds per test; `-m soak` runs the long variants.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import pytest
from kit.load import EchoClient, Tally, start_server
from kit.loop import Mux, R, fd_count

from usocket_asyncio import (
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    IInstanceLog,
    ISocket,
    ISocketProvider,
)
from usocket_asyncio._base import LIVE, SocketBase

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_nofile(need: int) -> None:
    """Raise the soft descriptor limit to `need` where the hard limit allows; else skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _referrers(obj: Any) -> list[str]:
    return [type(r).__name__ + ":" + repr(r)[:80] for r in gc.get_referrers(obj)][:4]


def socket_objects() -> list[Any]:
    """Every socket object still in memory (weak references would not do: the compiled
    build's classes cannot be weakly referenced safely, see README)."""
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, SocketBase)]


def live_on(mux: Mux) -> int:
    return sum(1 for s in LIVE if getattr(s, "_loop", None) is mux.loop)


def pending_tasks(mux: Mux) -> int:
    return sum(1 for t in asyncio.all_tasks(mux.loop) if not t.done())


class Level:
    """Descriptors, tasks, live sockets and traced memory at one moment."""

    def __init__(self, mux: Mux) -> None:
        gc.collect()
        self.fds = fd_count()
        self.tasks = pending_tasks(mux)
        self.live = live_on(mux)
        self.mem = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0


def settle(mux: Mux, before: Level) -> Level:
    """Run the loop until descriptors are back to `before` (bounded), then measure."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        mux.run_for(0.02)
        gc.collect()
        if fd_count() <= before.fds and pending_tasks(mux) <= before.tasks:
            break
    return Level(mux)


def provider_and_addr(kind: str, tmp: str) -> tuple[ISocketProvider, str, int]:
    if kind == "local":
        return CreateLocalSocketProvider(), os.path.join(tmp, "load"), 0
    if kind == "tls":  # the server uses the default self-signed certificate
        return CreateTLSSocketProvider(None), "127.0.0.1", 0
    return CreateTCPSocketProvider(), "127.0.0.1", 0


def connect_address(kind: str, bound: tuple[str, int]) -> str:
    return bound[0] if kind == "local" else f"127.0.0.1:{bound[1]}"


# --------------------------------------------------------------------------- concurrent


def serving(
    mux: Mux, log: IInstanceLog, kind: str, tmp: str, tally: Tally
) -> tuple[Any, ISocket, str]:
    """An echo server of `kind` that is listening: its provider, listener and address."""
    prov, addr, port = provider_and_addr(kind, tmp)
    listener, server = start_server(mux, log, prov, tally, addr, port)
    mux.run_until(lambda: server.bound is not None, what="bind")
    assert server.bound is not None
    return prov, listener, connect_address(kind, server.bound)


def hold_many(mux: Mux, log: IInstanceLog, n: int, tmp: str, kind: str = "tcp") -> None:
    """`n` connections open at once, each echoing a seeded message; then all close."""
    raise_nofile(2 * n + 512)
    # warm up: the loop makes some descriptors of its own on first use (uvloop's
    # resolver thread pool); they are not per connection
    churn(mux, log, kind, tmp, 20, 10, 10)
    before = settle(mux, Level(mux))
    tally = Tally()
    prov, listener, target = serving(mux, log, kind, tmp, tally)
    rng = random.Random(61)
    clients: list[tuple[ISocket, EchoClient]] = []
    client_ids: set[int] = set()  # no socket is made after them, so an id stays theirs
    t0 = time.monotonic()
    for _ in range(n):
        user = EchoClient(tally, rng.randbytes(rng.randrange(1, 200)), hold=True)
        sock = prov.CreateSocket(mux, user, log)
        sock.Connect(target)
        clients.append((sock, user))
        client_ids.add(id(sock))
    mux.run_until(
        lambda: tally.echoed + tally.bad_echo == n and tally.accepted == n,
        timeout=90,
        what=f"{n} connections up and echoed",
    )
    up = time.monotonic() - t0
    # every connection is open at this moment: both ends, plus the listener
    assert live_on(mux) - before.live == 2 * n + 1
    assert fd_count() - before.fds >= 2 * n
    assert tally.echoed == n and tally.bad_echo == 0
    for c, _ in clients:
        c.Shutdown()
    del sock, c
    mux.run_until(
        lambda: tally.clients_done == n and tally.servers_done == n, timeout=60, what="all closed"
    )
    assert tally.client_ends == {R.SOCKET_SHUTDOWN_NORMAL: n}
    assert tally.server_ends == {R.SOCKET_SHUTDOWN_BY_PEER: n}
    assert not tally.violations, tally.violations[:5]
    listener.Delete()
    clients.clear()
    after = settle(mux, before)
    assert after.fds == before.fds, (before.fds, after.fds)
    assert after.tasks == before.tasks
    assert after.live == before.live
    kept = [o for o in socket_objects() if id(o) in client_ids]
    assert not kept, f"{len(kept)} deleted sockets still referenced, e.g. by {_referrers(kept[0])}"
    print(
        f"\n[load] {mux.kind}/{kind}: {n} connections held at once, up and echoed in {up:.2f}s, "
        f"{tally.bytes_verified} bytes verified"
    )


def test_2000_concurrent_tcp_connections(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    hold_many(mux, IInstanceLog(0), 2000, short_tmp)


def test_2000_concurrent_local_connections(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    hold_many(mux, IInstanceLog(0), 2000, short_tmp, "local")


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_soak_8000_concurrent_tcp_connections(mux: Mux, short_tmp: str) -> None:
    hold_many(mux, IInstanceLog(0), 8000, short_tmp)


# --------------------------------------------------------------------------- churn


def churn(
    mux: Mux, log: IInstanceLog, kind: str, tmp: str, total: int, parallel: int, seconds: float
) -> tuple[Tally, float]:
    """Connect/echo/close `total` connections, `parallel` at a time (stops early after
    `seconds`); returns the tally and the connections per second."""
    tally = Tally()
    prov, listener, target = serving(mux, log, kind, tmp, tally)
    ctx = None
    if kind == "tls":
        ctx = prov.CreateSocketContext(log)
        ctx.DisableCertificateVerification()
    rng = random.Random(71)
    started = [0]
    deadline = time.monotonic() + seconds

    def start_one() -> None:
        if started[0] >= total or time.monotonic() > deadline:
            return
        started[0] += 1
        user = EchoClient(tally, rng.randbytes(rng.randrange(1, 2000)), on_end=start_one)
        prov.CreateSocket(mux, user, log, False, ctx).Connect(target)

    t0 = time.monotonic()
    for _ in range(parallel):
        start_one()
    mux.run_until(
        lambda: tally.clients_done == started[0] and tally.servers_done == started[0],
        timeout=seconds + 30,
        what="churn",
    )
    rate = started[0] / (time.monotonic() - t0)
    listener.Delete()
    n = started[0]
    assert tally.client_ends == {R.SOCKET_SHUTDOWN_NORMAL: n}
    assert tally.server_ends == {R.SOCKET_SHUTDOWN_BY_PEER: n}
    assert tally.echoed == n and tally.bad_echo == 0 and not tally.violations
    return tally, rate


@pytest.mark.parametrize(
    ("kind", "warm", "total", "at_once", "per_conn"),
    [("tcp", 200, 2000, 50, 100), ("local", 200, 2000, 50, 100), ("tls", 40, 300, 20, 300)],
    ids=["tcp", "local", "tls"],
)
def test_churn_returns_to_its_starting_level(
    mux: Mux,
    kind: str,
    warm: int,
    total: int,
    at_once: int,
    per_conn: int,
    short_tmp: str,
    request: pytest.FixtureRequest,
) -> None:
    """A warm-up round, then `total` connect/echo/close cycles, `at_once` at a time (TCP
    and local: 2000, 50; TLS: 300 handshake/echo/close_notify cycles, 20): descriptors,
    tasks and live sockets are back to the level after the warm-up, and traced memory
    grew by less than `per_conn` bytes per connection (TLS: 300, else 100)."""
    log = IInstanceLog(0)
    churn(mux, log, kind, short_tmp, warm, at_once, 30)
    before_fds = settle(mux, Level(mux))
    tracemalloc.start()
    request.addfinalizer(tracemalloc.stop)
    before = Level(mux)
    tally, rate = churn(mux, log, kind, short_tmp, total, at_once, 60)
    after = settle(mux, before)
    assert tally.clients_done == total
    assert after.fds == before_fds.fds == before.fds
    assert after.tasks == before.tasks and after.live == before.live
    growth = after.mem - before.mem
    limit = per_conn * total
    assert growth < limit, f"traced memory grew by {growth} bytes over {total} connections"
    print(
        f"\n[churn] {mux.kind}/{kind}: {total} connections at {rate:.0f}/s (traced), "
        f"memory {growth:+d} bytes, fds {after.fds - before.fds:+d}"
    )


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["tcp", "local", "tls"])
def test_soak_churn(mux: Mux, kind: str, short_tmp: str) -> None:
    """Ten minutes at most of churn (100 000 connections), untraced; same checks."""
    log = IInstanceLog(0)
    churn(mux, log, kind, short_tmp, 200, 50, 30)
    before = settle(mux, Level(mux))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tally, rate = churn(mux, log, kind, short_tmp, 100_000, 100, 600)
    after = settle(mux, before)
    assert after.fds == before.fds and after.tasks == before.tasks and after.live == before.live
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"\n[soak] {mux.kind}/{kind}: {tally.clients_done} connections at {rate:.0f}/s, "
        f"max RSS {rss0} -> {rss1} kB"
    )


# --------------------------------------------------------------------------- exhaustion


def test_accept_survives_descriptor_exhaustion(mux: Mux) -> None:
    """In a child process with RLIMIT_NOFILE lowered: accepts fail with EMFILE and are
    logged, the listener stays up, and once descriptors are freed it serves every
    client that waited in the backlog (tests/kit/exhaust_fds.py)."""
    script = os.path.join(HERE, "kit", "exhaust_fds.py")
    proc = subprocess.run(
        [sys.executable, script, mux.kind],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(HERE),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["emfile_logged"], res
    assert res["accepted_while_exhausted"] <= res["free"], res
    # the held ones were closed by the app; every other client got its "ok"
    assert res["closed_unserved"] == res["accepted_while_exhausted"], res
    assert res["served_ok"] == res["clients"] - res["accepted_while_exhausted"], res
    assert res["listener_end"] is None, res
    assert res["loop_errors"] == [], res
    print(f"\n[exhaust] {mux.kind}: {json.dumps(res)}")
