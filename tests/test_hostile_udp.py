"""Random call sequences on real loopback UDP sockets (a Hypothesis state machine).

The machinery is the one of the stream sockets (kit/machines.py: `UDPMachine` beside
`SocketMachine`): the same invariants, with UDP's calls. Derandomized, with a bounded
example count (`EXAMPLES`), so each run tries the same sequences.
"""

from __future__ import annotations

from kit.loop import Mux
from kit.machines import run_machine

EXAMPLES = {"stateful": 60, "stateful_steps": 50}
"""Hypothesis example counts per loop."""


def test_random_udp_call_sequences(mux: Mux) -> None:
    """Hypothesis drives random sequences of Bind, Connect, SendTo, Send, Recv,
    RecvCancel, Shutdown, Delete and SetUser on real loopback UDP sockets (to live
    sockets, a port nobody serves, port 0, non-addresses; datagrams up to 70000
    bytes). Invariants: only SocketModeError/ValueError ever raise from a call; no
    callback inside any call, after SocketShutdown, after Delete(), or to a user
    replaced by SetUser; at most one SocketShutdown per socket; every datagram
    delivered is intact (a prefix of what was sent) and from loopback; the loop's
    exception handler stays empty; once every socket is deleted, the library holds
    none and no task is left."""
    stats = run_machine(mux.kind, "udp", EXAMPLES["stateful"], EXAMPLES["stateful_steps"])
    assert stats["runs"] >= EXAMPLES["stateful"] // 2
    assert stats.get("recvfrom", 0) > 0 and stats.get("recv", 0) > 0
    print(f"\n[stateful udp] {mux.kind}: {stats}")
