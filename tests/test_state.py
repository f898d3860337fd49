"""The state machines as data: `TRANSITIONS` (stream sockets) and `UDP_TRANSITIONS`.

Every move outside the table raises `SocketModeError` and leaves the state as it was;
every move in it is taken. Then the public calls: in each state a stream socket can
really be in, every call that is illegal there raises and changes nothing (the state,
the callbacks that follow, and the socket's further life).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kit.loop import Mux, Recorder
from kit.streams import bound_port, client, listener

from usocket_asyncio import (
    CreateTCPSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    ShutdownReason,
    SocketModeError,
)
from usocket_asyncio._base import State
from usocket_asyncio._stream import TRANSITIONS, StreamSocket
from usocket_asyncio._udp import UDP_TRANSITIONS

S = State
TABLES = {"stream": TRANSITIONS, "udp": UDP_TRANSITIONS}


def make(kind: str, mux: Mux, log: IInstanceLog) -> Any:
    prov = CreateTCPSocketProvider() if kind == "stream" else CreateUDPSocketProvider()
    return prov.CreateSocket(mux, Recorder(), log)


def moves(kind: str) -> Iterator[tuple[State, State, bool]]:
    table = TABLES[kind]
    for old, new in itertools.product(table, State):
        yield old, new, new in table[old]


def test_tables_are_closed() -> None:
    assert set(TRANSITIONS) == set(State)
    for table in TABLES.values():
        for old, targets in table.items():
            assert targets <= set(table), old
            assert old not in targets, f"{old} -> itself"
            if old is not S.DELETED:
                assert S.DELETED in targets, f"{old} cannot be deleted"
        assert table[S.DELETED] == frozenset()
        assert table[S.CLOSED] == {S.DELETED}
    # every state is reachable from IDLE
    for table in TABLES.values():
        seen, todo = {S.IDLE}, [S.IDLE]
        while todo:
            for t in table[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        assert seen == set(table)


@pytest.mark.parametrize("kind", list(TABLES))
def test_every_move(mux: Mux, log: IInstanceLog, kind: str) -> None:
    """Each (old, new) pair: legal ones are taken, the others raise and change nothing."""
    n_illegal = 0
    for old, new, legal in moves(kind):
        sock = make(kind, mux, log)
        sock._state = old
        if legal:
            sock._set_state(new)
            assert sock._state is new
        else:
            n_illegal += 1
            with pytest.raises(SocketModeError) as ei:
                sock._set_state(new)
            assert sock._state is old, (old, new)
            assert str(ei.value), "the error must say what to do"
        sock._state = S.IDLE
        sock.Delete()
    assert n_illegal > 40


# ----------------------------------------------------------------------- public calls


class Sockets:
    """Real stream sockets in each state they can be in, made on demand."""

    def __init__(self, mux: Mux, log: IInstanceLog, tmp: str) -> None:
        self.mux, self.log = mux, log
        self.prov = CreateTCPSocketProvider()
        self.peers: list[socket.socket] = []
        self.made: list[ISocket] = []

    def new(self) -> tuple[ISocket, Recorder]:
        rec = Recorder()
        sock = self.prov.CreateSocket(self.mux, rec, self.log)
        self.made.append(sock)
        return sock, rec

    def in_state(self, state: State) -> tuple[Any, Recorder]:
        mux = self.mux
        if state is S.IDLE:
            return self.new()
        if state is S.CONNECTING:
            holder = socket.socket()
            holder.bind(("127.0.0.1", 0))
            holder.listen(1)
            self.peers.append(holder)
            sock, rec = self.new()
            sock.Connect(f"127.0.0.1:{holder.getsockname()[1]}")
            return sock, rec
        if state is S.BINDING:
            sock, rec = self.new()
            sock.Bind("127.0.0.1", 0)
            return sock, rec
        if state in (S.BOUND, S.LISTENING):
            sock, rec = self.new()
            sock.Bind("127.0.0.1", 0)
            mux.run_until(lambda: bool(rec.events))
            if state is S.LISTENING:
                sock.Listen()
            return sock, rec
        if state in (S.CONNECTED, S.CLOSING, S.CLOSED, S.DELETED):
            lsock, lrec, accepted = listener(mux, self.log, self.prov, "127.0.0.1")
            self.made.append(lsock)
            csock, crec = client(mux, self.log, self.prov, f"127.0.0.1:{bound_port(lrec)}")
            self.made.append(csock)
            mux.run_until(lambda: "connect" in crec.names() and len(accepted) == 1)
            if state is S.CLOSING:
                csock.Shutdown()  # the peer (accepted, not reading) does not close
            elif state is S.CLOSED:
                csock.Shutdown()
                accepted[0][0].Shutdown()
                mux.run_until(lambda: crec.shutdown is not None)
            elif state is S.DELETED:
                csock.Delete()
            self.made.append(accepted[0][0])
            return csock, crec
        raise AssertionError(state)

    def close(self) -> None:
        for s in self.made:
            try:
                s.Delete()
            except SocketModeError:
                pass
        for p in self.peers:
            p.close()


Call = tuple[str, Callable[[ISocket], Any]]
ADDR = "127.0.0.1:9"
CALLS: dict[str, Callable[[ISocket], Any]] = {
    "Connect": lambda s: s.Connect(ADDR),
    "Bind": lambda s: s.Bind("127.0.0.1", 0),
    "Listen": lambda s: s.Listen(),
    "Accept": lambda s: s.Accept(None),
    "Send": lambda s: s.Send(b"x"),
    "Recv": lambda s: s.Recv(bytearray(1)),
    "RecvCancel": lambda s: s.RecvCancel(),
    "SetUser": lambda s: s.SetUser(Recorder()),
    "GetLocalAddress": lambda s: s.GetLocalAddress(),
    "SetQoS": lambda s: s.SetQoS(0),  # type: ignore[arg-type]
    "Shutdown": lambda s: s.Shutdown(),
    "Delete": lambda s: s.Delete(),
}
ILLEGAL: dict[State, set[str]] = {
    S.IDLE: {"Listen", "Accept", "Send"},
    S.CONNECTING: {"Connect", "Bind", "Listen", "Accept"},
    S.BINDING: {"Connect", "Bind", "Accept", "Send", "Recv"},
    S.BOUND: {"Connect", "Bind", "Accept", "Send", "Recv"},
    S.LISTENING: {"Connect", "Bind", "Listen", "Accept", "Send", "Recv"},
    S.CONNECTED: {"Connect", "Bind", "Listen", "Accept"},
    S.CLOSING: {"Connect", "Bind", "Listen", "Accept"},
    S.CLOSED: {"Connect", "Bind", "Listen", "Accept"},
    S.DELETED: set(CALLS),
}
"""The public calls that raise SocketModeError in each state (ACCEPTING is never seen
by the app: the socket is handed over at SocketAcceptComplete, already connected)."""


@pytest.mark.parametrize("state", list(ILLEGAL), ids=lambda s: s.value)
def test_illegal_public_calls_raise_and_change_nothing(
    mux: Mux, log: IInstanceLog, short_tmp: str, state: State
) -> None:
    socks = Sockets(mux, log, short_tmp)
    try:
        sock, rec = socks.in_state(state)
        assert sock._state is state
        before = list(rec.events)
        for name in sorted(ILLEGAL[state]):
            with pytest.raises(SocketModeError) as ei:
                CALLS[name](sock)
            assert sock._state is state, name
            assert len(str(ei.value)) > 20, f"{name}: say what to do instead"
        assert rec.events == before, "an illegal call led to a callback"
        # BINDING, LISTENING: the once-only Listen is fine the first time
        if state is S.BINDING:
            sock.Listen()
            with pytest.raises(SocketModeError):
                sock.Listen()
        # the socket still lives its normal life afterwards
        if state in (S.BINDING, S.CONNECTING):
            mux.run_until(lambda: len(rec.events) > len(before))
            assert rec.names()[-1] in ("bind", "connect"), rec.events
        if state is S.CONNECTED:
            sock.Shutdown()
            mux.run_until(lambda: rec.shutdown is not None)
            assert rec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
        assert not rec.violations
    finally:
        socks.close()


@pytest.mark.parametrize("state", list(ILLEGAL), ids=lambda s: s.value)
def test_legal_calls_are_accepted_in_each_state(
    mux: Mux, log: IInstanceLog, short_tmp: str, state: State
) -> None:
    """The complement: every call not in ILLEGAL[state] returns without raising."""
    for name in sorted(set(CALLS) - ILLEGAL[state]):
        socks = Sockets(mux, log, short_tmp)
        try:
            sock, rec = socks.in_state(state)
            CALLS[name](sock)
            mux.run_for(0.01)
            assert not rec.violations
        finally:
            socks.close()


def test_stream_socket_is_the_stream_engine() -> None:
    # the table above is about StreamSocket; the TCP class adds no state of its own
    from usocket_asyncio._tcp import TCPSocket

    assert issubclass(TCPSocket, StreamSocket)
