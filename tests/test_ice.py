"""The sans-IO ICE agent (`_ice.py`) on a simulated clock: two agents through `SimNet`."""

from __future__ import annotations

import random

import pytest
from kit.ice import SimNet

from usocket_asyncio._ice import Candidate, IceAgent, PairSelected

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


def pair(
    a_controlling: bool = True,
    b_controlling: bool = False,
    net: SimNet | None = None,
    **kw: float,
) -> tuple[SimNet, IceAgent, IceAgent]:
    """Two agents on `net`, each with one host candidate, not yet told of each other."""
    net = net if net is not None else SimNet()
    a = IceAgent(a_controlling, rng=random.Random(1), **kw)  # type: ignore[arg-type]
    b = IceAgent(b_controlling, rng=random.Random(2), **kw)  # type: ignore[arg-type]
    net.attach(a, a.add_host_candidate(*A).address)
    net.attach(b, b.add_host_candidate(*B).address)
    return net, a, b


def introduce(net: SimNet, a: IceAgent, b: IceAgent, *, lite_b: bool = False) -> None:
    """Each agent learns the other's credentials and candidates (the SDP exchange)."""
    a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates, lite=lite_b, now=net.now)
    b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates, now=net.now)


def selected_events(net: SimNet, agent: IceAgent) -> list[PairSelected]:
    return [e for e in net.events_of(agent) if isinstance(e, PairSelected)]


@pytest.mark.parametrize("a_controlling", [True, False])
def test_host_pair_selected_both_roles(a_controlling: bool) -> None:
    net, a, b = pair(a_controlling, not a_controlling)
    introduce(net, a, b)
    assert net.run_until(lambda: a.selected is not None and b.selected is not None, 5.0)
    assert a.selected == B and b.selected == A
    assert net.now < 0.2  # one round trip of 20 ms, a few Ta: no retransmission needed
    for me, other in ((a, B), (b, A)):
        (ev,) = selected_events(net, me)
        assert ev.remote.address == other
        assert isinstance(ev.local, Candidate) and ev.local.type == "host"
        assert me.stats["retransmissions"] == 0
