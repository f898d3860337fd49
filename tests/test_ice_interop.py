"""The ICE agent over real UDP on loopback, both loops: against aioice in both roles, and
server-reflexive gathering against a real STUN server (coturn's turnserver)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import aioice
import aioice.ice
import pytest
from kit.ice import UdpIce
from kit.loop import Mux
from kit.relays import DatagramFaults, DatagramRelay
from kit.stunserver import TURNSERVER, coturn

from usocket_asyncio._ice import (
    Candidate,
    CandidateGathered,
    IceAgent,
    PairSelected,
    RoleChanged,
)

pytestmark = pytest.mark.interop


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers on 127.0.0.1 only (and uses no STUN server: none is given)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def to_aioice(c: Candidate) -> aioice.Candidate:
    return aioice.Candidate(
        foundation=c.foundation,
        component=1,
        transport="udp",
        priority=c.priority,
        host=c.addr,
        port=c.port,
        type=c.type,
    )


def from_aioice(c: aioice.Candidate) -> Candidate:
    return Candidate(c.host, c.port, c.type, c.priority, c.foundation)


@pytest.mark.parametrize("ours_controlling", [True, False], ids=["we-control", "aioice-controls"])
def test_aioice_selects_a_pair_and_carries_data(
    mux: Mux, loopback_only: None, ours_controlling: bool
) -> None:
    loop = mux.loop

    async def setup() -> tuple[UdpIce, aioice.Connection]:
        ours = await UdpIce.open(IceAgent(ours_controlling))
        peer = aioice.Connection(ice_controlling=not ours_controlling, components=1)
        await peer.gather_candidates()
        return ours, peer

    ours, peer = loop.run_until_complete(setup())
    agent = ours.agent
    try:
        assert [c.host for c in peer.local_candidates] == ["127.0.0.1"]
        peer.remote_username = agent.local_ufrag
        peer.remote_password = agent.local_pwd

        async def feed_peer() -> None:
            for c in agent.local_candidates:
                await peer.add_remote_candidate(to_aioice(c))
            await peer.add_remote_candidate(None)

        loop.run_until_complete(feed_peer())
        agent.set_remote(
            peer.local_username,
            peer.local_password,
            [from_aioice(c) for c in peer.local_candidates],
            now=loop.time(),
        )
        ours.pump()
        connect = loop.create_task(peer.connect())
        mux.run_until(
            lambda: connect.done() and agent.selected is not None, 15, "both sides connected"
        )
        connect.result()  # aioice's own verdict: raises if it failed
        peer_addr = ("127.0.0.1", peer.local_candidates[0].port)
        assert agent.selected == peer_addr
        selected = [e for e in ours.events if isinstance(e, PairSelected)]
        assert selected and selected[-1].remote.address == peer_addr
        assert not [e for e in ours.events if isinstance(e, RoleChanged)]
        assert agent.controlling == ours_controlling

        # data both ways on the selected pair, told apart from STUN by the first byte
        up = [b"\x80" + bytes([i]) * 100 for i in range(5)]
        for d in up:
            loop.run_until_complete(peer.send(d))
        mux.run_until(lambda: len(ours.other) == len(up), 5, "aioice's data")
        assert (
            hashlib.sha256(b"".join(d for d, _ in ours.other)).digest()
            == hashlib.sha256(b"".join(up)).digest()
        )
        assert {a[:2] for _, a in ours.other} == {peer_addr}
        assert ours.transport is not None
        down = b"\x80" + b"our data" * 10
        ours.transport.sendto(down, agent.selected)
        got = loop.run_until_complete(asyncio.wait_for(peer.recv(), 5))
        assert got == down
        assert agent.stats["bad_integrity"] == 0 and agent.stats["unknown_username"] == 0
    finally:
        ours.close()
        loop.run_until_complete(peer.close())


@pytest.fixture
def stun_server(tmp_path: Any) -> Iterator[tuple[str, int]]:
    if TURNSERVER is None:
        pytest.skip("turnserver is not installed (Debian package coturn; .ci/run installs it)")
    with coturn(str(tmp_path)) as address:
        yield address


def test_srflx_from_coturn(mux: Mux, stun_server: tuple[str, int]) -> None:
    loop = mux.loop

    async def setup() -> UdpIce:
        return await UdpIce.open(IceAgent(True))

    ours = loop.run_until_complete(setup())
    try:
        agent = ours.agent
        me = ours.address
        agent.gather_srflx(stun_server, me, loop.time())
        ours.pump()
        mux.run_until(lambda: bool(ours.events), 10, "the STUN server's answer")
        (ev,) = ours.events
        assert isinstance(ev, CandidateGathered), ev
        c = ev.candidate
        # on loopback the server sees the socket's own address
        assert (c.addr, c.port) == me
        assert c.type == "srflx" and (c.related_addr, c.related_port) == me
        assert c.priority >> 24 == 100
        # equal to its base: not signalled (RFC 8445 §5.1.3), the gathering still reported
        assert [x.type for x in agent.local_candidates] == ["host"]
        assert agent.get_timer() is None  # the transaction is over
    finally:
        ours.close()


@pytest.mark.parametrize("ours_controlling", [True, False], ids=["we-control", "aioice-controls"])
def test_aioice_behind_a_lossy_relay_learns_peer_reflexive(
    mux: Mux, loopback_only: None, ours_controlling: bool
) -> None:
    """We are told aioice's candidate is a relay's address (the relay forwards to aioice
    and loses our first check); aioice's own checks come straight from its real address,
    which we never heard of: a peer-reflexive candidate. Both sides select a pair."""
    loop = mux.loop

    async def setup() -> tuple[UdpIce, aioice.Connection]:
        ours = await UdpIce.open(IceAgent(ours_controlling))
        peer = aioice.Connection(ice_controlling=not ours_controlling, components=1)
        await peer.gather_candidates()
        return ours, peer

    ours, peer = loop.run_until_complete(setup())
    agent = ours.agent
    (real,) = peer.local_candidates
    relay = DatagramRelay(loop, f"127.0.0.1:{real.port}", up=DatagramFaults(drop=frozenset({0})))
    try:
        host, port = relay.address.rsplit(":", 1)
        front = (host, int(port))
        peer.remote_username = agent.local_ufrag
        peer.remote_password = agent.local_pwd

        async def feed_peer() -> None:
            for c in agent.local_candidates:
                await peer.add_remote_candidate(to_aioice(c))
            await peer.add_remote_candidate(None)

        loop.run_until_complete(feed_peer())
        told = Candidate(*front, "host", real.priority, real.foundation)
        agent.set_remote(peer.local_username, peer.local_password, [told], now=loop.time())
        ours.pump()
        connect = loop.create_task(peer.connect())
        mux.run_until(
            lambda: connect.done() and agent.selected is not None and relay.ways["up"].seen >= 2,
            20,
            "both sides connected, our check through the relay resent",
        )
        connect.result()
        assert relay.ways["up"].dropped == [0] and agent.stats["retransmissions"] >= 1
        (prflx,) = [c for c in agent.remote_candidates if c.type == "prflx"]
        assert prflx.address == ("127.0.0.1", real.port)
        assert agent.selected in (front, prflx.address)
        loop.run_until_complete(peer.send(b"\x80from aioice"))
        mux.run_until(lambda: bool(ours.other), 5, "aioice's data")
        assert ours.other[0][0] == b"\x80from aioice"
    finally:
        relay.close()
        ours.close()
        loop.run_until_complete(peer.close())
