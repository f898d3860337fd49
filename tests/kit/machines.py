"""The Hypothesis state machine of random call sequences on real loopback sockets.

`SocketMachine` drives Connect, Bind, Listen, Send, Recv, RecvCancel, Shutdown, Delete,
SetUser and Accept on TCP and local sockets; `UDPMachine` the same machinery with UDP's
calls (SendTo, connected Send, datagrams up to 70000 bytes). `run_machine` runs either,
built by `machine_for` as a `RuleBasedStateMachine` whose rules are the kind's, with the
same invariants: only SocketModeError/ValueError raise from a call; no callback inside
any call, after SocketShutdown, after Delete() or to a user replaced by SetUser; at most
one SocketShutdown per socket; the loop's exception handler stays empty; once every socket
is deleted, the library holds none and no task is left. Derandomized and bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from usocket_asyncio import (
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    SocketModeError,
)
from usocket_asyncio._base import LIVE

from .loop import Mux, Recorder

STATS: dict[str, int] = {"runs": 0, "calls": 0}
"""What the last `run_machine` did: runs, calls, and each call and callback by name."""

PATTERN = bytes(range(256)) * 274
"""Every datagram the UDP machine sends is a prefix of this (GREETING is one too)."""
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


class _Shared:
    """State every recorder of one machine run shares: are we inside a library call?"""

    def __init__(self) -> None:
        self.in_call = False


class StateRec(Recorder):
    """A Recorder that also fails on a callback inside any library call, after its
    socket's Delete(), or after SetUser moved the socket to another user."""

    def __init__(self, shared: _Shared, name: str) -> None:
        super().__init__(name)
        self.shared = shared
        self.gone = ""  # "deleted" / "replaced"

    def _rec(self, *ev: Any) -> None:
        if self.shared.in_call:
            self.violations.append(f"{self.name}: {ev[0]} ran inside a library call")
        if self.gone:
            self.violations.append(f"{self.name}: {ev[0]} after its socket was {self.gone}")
        super()._rec(*ev)


class Entry:
    """A socket of the machine: its kind, its current user, and whether it was deleted."""

    def __init__(self, sock: ISocket, kind: str, rec: StateRec) -> None:
        self.sock, self.kind, self.rec = sock, kind, rec
        self.deleted = False
        self.listening = False
        self.address = ""


MAX_SOCKETS = 12
GREETING = bytes(range(256)) * 12


class SocketMachine:
    """Random sequences of Connect, Bind, Listen, Send, Recv, RecvCancel, Shutdown,
    Delete and SetUser on real loopback TCP and local sockets (built as a Hypothesis
    `RuleBasedStateMachine` by `machine_for`)."""

    LOOP = "asyncio"

    def setup(self) -> None:
        self.start()
        # a port that refuses (bound, never listening) and is in use
        self.refuser = socket.socket()
        self.refuser.bind(("127.0.0.1", 0))
        self.refused = f"127.0.0.1:{self.refuser.getsockname()[1]}"
        self.calls = 0
        # a listener of each kind to connect to (the rules may end them too)
        for kind in ("tcp", "local"):
            self.create(kind)
            e = self.entries[-1]
            self.bind(0, "good", e)
            self.listen(0, e)
        self.mux.run_until(lambda: all(e.address for e in self.entries), what="listeners")
        # and a connected pair of each kind, so that every run starts with live data paths
        for kind in ("tcp", "local"):
            self.open_client(kind, "listener")
        self.mux.run_until(lambda: len(self.entries) == 6, what="pairs")
        self.calls = 0

    # ------------------------------------------------------------------ helpers

    def start(self) -> None:
        """What every machine has before its own setup: a loop, a log, a directory."""
        self.mux = Mux(self.LOOP)
        self.log = IInstanceLog(0)
        self.tmp = tempfile.mkdtemp(prefix="usm", dir="/tmp")
        self.shared = _Shared()
        self.calls = 0
        self.entries: list[Entry] = []
        self.recs: list[StateRec] = []
        self.paths = 0
        self.accepts = 0

    def new_rec(self, name: str) -> StateRec:
        rec = StateRec(self.shared, name)
        self.recs.append(rec)
        rec.hooks["listen"] = self._on_listen
        rec.hooks["bind"] = self._on_bind
        rec.hooks["connect"] = lambda s: s.Send(GREETING)
        return rec

    def _on_bind(self, sock: ISocket, addr: str, port: int) -> None:
        for e in self.entries:
            if e.sock is sock:
                e.address = addr if e.kind == "local" else f"127.0.0.1:{port}"

    def _on_listen(self, sock: ISocket, addr: str, port: int) -> None:
        listener = next(e for e in self.entries if e.sock is sock)
        self.accepts += 1
        if self.accepts % 3 == 0 or self.live() >= 2 * MAX_SOCKETS:
            sock.Accept(None)  # deny every third
            return
        rec = self.new_rec(f"accepted{self.accepts}")
        holder: list[Entry] = []

        def on_accept(s: ISocket) -> None:
            e = Entry(s, listener.kind, rec)
            holder.append(e)
            self.entries.append(e)
            s.Send(GREETING)  # so that the peer's Recv calls have something to get

        rec.hooks["accept"] = on_accept
        sock.Accept(rec)

    def lib(self, fn: Any, *args: Any) -> bool:
        """Call the library: only the caller's mistakes may raise. True if none did."""
        self.calls += 1
        name = "call_" + getattr(fn, "__name__", "?")
        STATS[name] = STATS.get(name, 0) + 1
        self.shared.in_call = True
        ok = True
        try:
            fn(*args)
        except (SocketModeError, ValueError):
            ok = False
        finally:
            self.shared.in_call = False
        self.mux.run_ready()  # the loop runs what is due between calls
        return ok

    def pick(self, i: int) -> Entry:
        """Mostly a live socket; i >= 10 picks among all, deleted ones too."""
        live = [e for e in self.entries if not e.deleted]
        if i >= 10 or not live:
            return self.entries[i % len(self.entries)]
        return live[i % len(live)]

    def live(self) -> int:
        return sum(1 for e in self.entries if not e.deleted)

    # ------------------------------------------------------------------ rules

    def create(self, kind: str) -> None:
        prov = CreateLocalSocketProvider() if kind == "local" else CreateTCPSocketProvider()
        rec = self.new_rec(f"{kind}{len(self.recs)}")
        self.entries.append(Entry(prov.CreateSocket(self.mux, rec, self.log), kind, rec))

    def open_client(self, kind: str, target: str) -> None:
        self.create(kind)
        self.connect(len(self.entries) - 1, target, self.entries[-1])

    def open_server(self, kind: str) -> None:
        self.create(kind)
        e = self.entries[-1]
        self.bind(0, "good", e)
        self.listen(0, e)

    def connect(self, i: int, target: str, e: Entry | None = None) -> None:
        e = e or self.pick(i)
        if target == "listener":
            same = [x for x in self.entries if x.kind == e.kind and x.listening and not x.deleted]
            addr = same[-1].address if same else "nonsense"
        elif target == "refused":
            addr = self.refused if e.kind == "tcp" else os.path.join(self.tmp, "nobody")
        else:
            addr = "not an address"
        self.lib(e.sock.Connect, addr)

    def bind(self, i: int, which: str, e: Entry | None = None) -> None:
        e = e or self.pick(i)
        if which == "good":
            if e.kind == "local":
                self.paths += 1
                self.lib(e.sock.Bind, os.path.join(self.tmp, f"s{self.paths}"), 0)
            else:
                self.lib(e.sock.Bind, "127.0.0.1", 0)
        elif which == "in_use":
            if e.kind == "local":
                live = [x.address for x in self.entries if x.kind == "local" and x.address]
                self.lib(e.sock.Bind, live[0] if live else "", 0)
            else:
                self.lib(e.sock.Bind, "127.0.0.1", int(self.refused.rpartition(":")[2]))
        else:
            self.lib(e.sock.Bind, "300.1.1.1" if e.kind == "tcp" else "", 0)

    def listen(self, i: int, e: Entry | None = None) -> None:
        e = e or self.pick(i)
        if self.lib(e.sock.Listen):
            e.listening = True

    def send(self, i: int, n: int, as_view: bool) -> None:
        data = bytes(range(256)) * (n // 256 + 1)
        buf: Any = memoryview(bytearray(data[:n])) if as_view else data[:n]
        self.lib(self.pick(i).sock.Send, buf)

    def recv(self, i: int, size: int, length: str, partial: bool) -> None:
        n = {"none": None, "half": size // 2, "full": size, "zero": 0, "over": size + 1}[length]
        self.lib(self.pick(i).sock.Recv, bytearray(size), n, partial)

    def recv_cancel(self, i: int) -> None:
        self.lib(self.pick(i).sock.RecvCancel)

    def shutdown(self, i: int) -> None:
        self.lib(self.pick(i).sock.Shutdown)

    def delete(self, i: int) -> None:
        e = self.pick(i)
        self.lib(e.sock.Delete)
        e.deleted = True
        e.rec.gone = "deleted"

    def set_user(self, i: int) -> None:
        e = self.pick(i)
        new = self.new_rec(e.rec.name + "'")
        if e.deleted:
            new.gone = "deleted"
        self.lib(e.sock.SetUser, new)
        if not e.deleted:
            e.rec.gone = "replaced"
            e.rec = new

    def accept_outside(self, i: int) -> None:
        self.lib(self.pick(i).sock.Accept, None)

    def run(self, ms: int) -> None:
        self.mux.run_for(ms / 1000)

    # ------------------------------------------------------------------ invariants

    def check(self) -> None:
        for rec in self.recs:
            assert not rec.violations, rec.violations
            assert rec.names().count("shutdown") <= 1
        assert not self.mux.errors, self.mux.errors

    def teardown(self) -> None:
        try:
            for e in self.entries:
                if not e.deleted:
                    self.lib(e.sock.Delete)
                    e.deleted = True
                    e.rec.gone = "deleted"
            self.mux.run_ready()
            self.check()
            left = [s for s in LIVE if getattr(s, "_loop", None) is self.mux.loop]
            assert not left, f"deleted sockets still held by the library: {left}"
            STATS["runs"] += 1
            STATS["calls"] += self.calls
            for rec in self.recs:
                for name in rec.names():
                    STATS[name] = STATS.get(name, 0) + 1
        finally:
            loop = self.mux.loop
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            loop.close()
            self.refuser.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            assert not pending, f"tasks left after every socket was deleted: {pending}"


class UDPMachine(SocketMachine):
    """Random sequences of Bind, Connect, SendTo, Send, Recv, RecvCancel, Shutdown,
    Delete and SetUser on real loopback UDP sockets. Besides `SocketMachine`'s
    invariants: every datagram delivered is a prefix of what some socket sent (a
    truncated one too) and comes from 127.0.0.1 with a real port."""

    def setup(self) -> None:
        self.start()
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

    def open_server(self, kind: str) -> None:
        self.create(kind)
        self.bind(0, "good", self.entries[-1])

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


@dataclass(frozen=True)
class Spec:
    """What one kind of machine draws: the socket kinds, where clients connect to, sizes."""

    machine: type[SocketMachine]
    kinds: list[str]
    client_dests: list[str]
    connect_dests: list[str]
    sizes: Any


SPECS = {
    "stream": Spec(
        SocketMachine,
        ["tcp", "local"],
        ["listener", "listener", "refused", "invalid"],
        ["listener", "refused", "invalid"],
        st.integers(0, 70000),
    ),
    "udp": Spec(
        UDPMachine,
        ["udp"],
        ["bound", "bound", "closed", "invalid"],
        ["bound", "closed", "invalid"],
        st.one_of(st.integers(0, 1500), st.sampled_from([65507, 65508, 70000])),
    ),
}


def machine_for(loop_kind: str, kind: str) -> Any:
    """The Hypothesis state machine over the `kind` ("stream" or "udp") machine, on
    `loop_kind`."""
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

    spec = SPECS[kind]
    idx = st.integers(0, MAX_SOCKETS - 1)
    has = precondition(lambda self: bool(self.m.entries))
    room = precondition(lambda self: self.m.live() < MAX_SOCKETS)

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.m = spec.machine()
            self.m.LOOP = loop_kind
            self.m.setup()

        @room
        @rule(kind=st.sampled_from(spec.kinds))
        def create(self, kind: str) -> None:
            self.m.create(kind)

        @room
        @rule(kind=st.sampled_from(spec.kinds), dest=st.sampled_from(spec.client_dests))
        def open_client(self, kind: str, dest: str) -> None:
            self.m.open_client(kind, dest)

        @room
        @rule(kind=st.sampled_from(spec.kinds))
        def open_server(self, kind: str) -> None:
            self.m.open_server(kind)

        @has
        @rule(i=idx, dest=st.sampled_from(spec.connect_dests))
        def connect(self, i: int, dest: str) -> None:
            self.m.connect(i, dest)

        @has
        @rule(i=idx, which=st.sampled_from(["good", "good", "in_use", "invalid"]))
        def bind(self, i: int, which: str) -> None:
            self.m.bind(i, which)

        @has
        @rule(i=idx, n=spec.sizes, as_view=st.booleans())
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

    if kind == "udp":

        class UDP(Machine):
            @has
            @rule(
                i=idx,
                n=spec.sizes,
                dest=st.sampled_from(["bound", "bound", "closed", "port0", "invalid"]),
                as_view=st.booleans(),
            )
            def send_to(self, i: int, n: int, dest: str, as_view: bool) -> None:
                assert isinstance(self.m, UDPMachine)
                self.m.send_to(i, n, dest, as_view)

        return UDP

    class Stream(Machine):
        @has
        @rule(i=idx)
        def listen(self, i: int) -> None:
            self.m.listen(i)

        @has
        @rule(i=idx)
        def accept_outside(self, i: int) -> None:
            self.m.accept_outside(i)

    return Stream


def run_machine(loop_kind: str, kind: str, examples: int, steps: int) -> dict[str, int]:
    """Run the `kind` machine on `loop_kind` (derandomized, bounded); `STATS` after."""
    from hypothesis.stateful import run_state_machine_as_test

    STATS.clear()
    STATS.update(runs=0, calls=0)
    run_state_machine_as_test(
        machine_for(loop_kind, kind),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    return STATS
