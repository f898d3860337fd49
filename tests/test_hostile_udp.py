"""Random call sequences on real loopback UDP sockets (a Hypothesis state machine).

The machinery is the TCP/local one of tests/test_hostile.py (`SocketMachine`,
`StateRec`, `Entry`): the same invariants, with UDP's calls. Derandomized, with a
bounded example count (`EXAMPLES`), so each run tries the same sequences.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import test_hostile
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from kit.loop import Mux
from test_hostile import Entry, SocketMachine, StateRec, _Shared

from usocket_asyncio import CreateUDPSocketProvider, IInstanceLog, ISocket

EXAMPLES = {"stateful": 60, "stateful_steps": 50}
"""Hypothesis example counts per loop."""

PATTERN = bytes(range(256)) * 274
"""Every datagram the machine sends is a prefix of this (GREETING is one too)."""
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
MAX_SOCKETS = 12


class UDPMachine(SocketMachine):
    """Random sequences of Bind, Connect, SendTo, Send, Recv, RecvCancel, Shutdown,
    Delete and SetUser on real loopback UDP sockets. Besides `SocketMachine`'s
    invariants: every datagram delivered is a prefix of what some socket sent (a
    truncated one too) and comes from 127.0.0.1 with a real port."""

    def setup(self) -> None:
        import tempfile

        self.mux = Mux(self.LOOP)
        self.log = IInstanceLog(0)
        self.tmp = tempfile.mkdtemp(prefix="usm", dir="/tmp")
        self.shared = _Shared()
        self.entries: list[Entry] = []
        self.recs: list[StateRec] = []
        self.paths = 0
        self.accepts = 0
        self.bad: list[str] = []
        self.datagrams = 0
        # a port nobody serves (ICMP port unreachable) and one that is in use
        self.refuser = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.refuser.bind(("127.0.0.1", 0))
        self.in_use = int(self.refuser.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.closed_port = int(s.getsockname()[1])
        self.calls = 0
        # a bound socket with Recv calls pending, and a socket connected to it
        self.create("udp")
        self.bind(0, "good", self.entries[-1])
        self.mux.run_until(lambda: bool(self.entries[0].address), what="bind")
        for _ in range(4):
            self.recv(0, 4000, "none", False)
        self.open_client("udp", "bound")
        self.mux.run_until(lambda: self.datagrams > 0, what="the greeting")
        self.calls = 0

    # ------------------------------------------------------------------ helpers

    def new_rec(self, name: str) -> StateRec:
        rec = super().new_rec(name)
        rec.hooks["recvfrom"] = self._on_recvfrom
        rec.hooks["recv"] = self._on_recv
        return rec

    def _check_data(self, buf: Any, n: int) -> None:
        self.datagrams += 1
        if bytes(memoryview(buf)[:n]) != PATTERN[:n]:
            self.bad.append(f"a datagram of {n} bytes is not what was sent")

    def _on_recv(self, sock: ISocket, buf: Any, n: int) -> None:
        self._check_data(buf, n)

    def _on_recvfrom(self, sock: ISocket, buf: Any, n: int, addr: Any, port: int) -> None:
        self._check_data(buf, n)
        if addr != LOOPBACK or not 0 < port < 65536:
            self.bad.append(f"a datagram from {addr!r}:{port}")
        if n > 100:  # echo the head once (an echo is too short to be echoed again)
            sock.SendTo(buf, 100, addr, port)

    def _target(self, which: str) -> tuple[str, int]:
        if which == "bound":
            bound = [e for e in self.entries if e.address and not e.deleted]
            if bound:
                host, _, port = bound[-1].address.rpartition(":")
                return host, int(port)
            return "127.0.0.1", self.closed_port
        if which == "closed":
            return "127.0.0.1", self.closed_port
        if which == "port0":
            return "127.0.0.1", 0
        return "300.1.1.1", 9

    # ------------------------------------------------------------------ rules

    def create(self, kind: str) -> None:
        rec = self.new_rec(f"udp{len(self.recs)}")
        sock = CreateUDPSocketProvider().CreateSocket(self.mux, rec, self.log)
        self.entries.append(Entry(sock, "udp", rec))

    def connect(self, i: int, target: str, e: Entry | None = None) -> None:
        e = e or self.pick(i)
        if target == "invalid":
            self.lib(e.sock.Connect, "not an address")
        else:
            host, port = self._target(target)
            self.lib(e.sock.Connect, f"{host}:{port}")

    def bind(self, i: int, which: str, e: Entry | None = None) -> None:
        e = e or self.pick(i)
        if which == "good":
            self.lib(e.sock.Bind, "127.0.0.1", 0)
        elif which == "in_use":
            self.lib(e.sock.Bind, "127.0.0.1", self.in_use)
        else:
            self.lib(e.sock.Bind, "300.1.1.1", 0)

    def send_to(self, i: int, n: int, target: str, as_view: bool) -> None:
        host, port = self._target(target)
        buf: Any = memoryview(bytearray(PATTERN[:n])) if as_view else PATTERN[:n]
        self.lib(self.pick(i).sock.SendTo, buf, None, host, port)

    def send(self, i: int, n: int, as_view: bool) -> None:
        buf: Any = memoryview(bytearray(PATTERN[:n])) if as_view else PATTERN[:n]
        self.lib(self.pick(i).sock.Send, buf)

    def check(self) -> None:
        super().check()
        assert not self.bad, self.bad


def udp_machine_for(loop_kind: str) -> Any:
    """The Hypothesis state machine over `UDPMachine`, on `loop_kind`."""
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

    idx = st.integers(0, MAX_SOCKETS - 1)
    has = precondition(lambda self: bool(self.m.entries))
    room = precondition(lambda self: self.m.live() < MAX_SOCKETS)
    sizes = st.one_of(st.integers(0, 1500), st.sampled_from([65507, 65508, 70000]))
    targets = st.sampled_from(["bound", "bound", "closed", "port0", "invalid"])

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.m = UDPMachine()
            self.m.LOOP = loop_kind
            self.m.setup()

        @room
        @rule()
        def create(self) -> None:
            self.m.create("udp")

        @room
        @rule(dest=st.sampled_from(["bound", "bound", "closed", "invalid"]))
        def open_client(self, dest: str) -> None:
            self.m.open_client("udp", dest)

        @room
        @rule()
        def open_server(self) -> None:
            self.m.create("udp")
            self.m.bind(0, "good", self.m.entries[-1])

        @has
        @rule(i=idx, dest=st.sampled_from(["bound", "closed", "invalid"]))
        def connect(self, i: int, dest: str) -> None:
            self.m.connect(i, dest)

        @has
        @rule(i=idx, which=st.sampled_from(["good", "good", "in_use", "invalid"]))
        def bind(self, i: int, which: str) -> None:
            self.m.bind(i, which)

        @has
        @rule(i=idx, n=sizes, dest=targets, as_view=st.booleans())
        def send_to(self, i: int, n: int, dest: str, as_view: bool) -> None:
            self.m.send_to(i, n, dest, as_view)

        @has
        @rule(i=idx, n=sizes, as_view=st.booleans())
        def send(self, i: int, n: int, as_view: bool) -> None:
            self.m.send(i, n, as_view)

        @has
        @rule(
            i=idx,
            size=st.integers(0, 3000),
            length=st.sampled_from(["none", "none", "half", "full", "zero", "over"]),
            partial=st.booleans(),
        )
        def recv(self, i: int, size: int, length: str, partial: bool) -> None:
            self.m.recv(i, size, length, partial)

        @has
        @rule(i=idx)
        def recv_cancel(self, i: int) -> None:
            self.m.recv_cancel(i)

        @has
        @rule(i=idx)
        def shutdown(self, i: int) -> None:
            self.m.shutdown(i)

        @has
        @rule(i=idx)
        def delete(self, i: int) -> None:
            self.m.delete(i)

        @has
        @rule(i=idx)
        def set_user(self, i: int) -> None:
            self.m.set_user(i)

        @rule(ms=st.sampled_from([0, 1, 5, 20]))
        def run(self, ms: int) -> None:
            self.m.run(ms)

        @invariant()
        def contract_holds(self) -> None:
            self.m.check()

        def teardown(self) -> None:
            self.m.teardown()

    return Machine


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
    from hypothesis.stateful import run_state_machine_as_test

    stats = test_hostile.STATS
    stats.clear()
    stats.update(runs=0, calls=0)
    run_state_machine_as_test(
        udp_machine_for(mux.kind),
        settings=settings(
            max_examples=EXAMPLES["stateful"],
            stateful_step_count=EXAMPLES["stateful_steps"],
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    assert stats["runs"] >= EXAMPLES["stateful"] // 2
    assert stats.get("recvfrom", 0) > 0 and stats.get("recv", 0) > 0
    print(f"\n[stateful udp] {mux.kind}: {stats}")
