"""A loopback fault-injection relay, run on the test's event loop (asyncio or uvloop).

Stream mode (`StreamRelay`): listens on a loopback address (or a Unix socket path),
connects each incoming client to the target, and copies bytes both ways. Each way
("up" = client to server, "down" = server to client) has its own `StreamFaults`:

- `delay`: seconds to wait before forwarding each chunk read;
- `split`: forward every byte as its own write (TCP_NODELAY: its own segment);
- `reset_at`: after exactly this many bytes went that way, reset both sides
  (SO_LINGER 0, then close: a TCP RST). The relay first waits until the receiver's
  kernel took every forwarded byte, so the bytes before the reset are all there to read;
- `half_close_at`: after exactly this many bytes, send FIN to the receiver and drop
  whatever the sender still sends that way (the other way keeps working);
- `stall_at`: after exactly this many bytes, stop reading from the sender until
  `release()`: the sender's kernel buffers fill and its writes back up.

A reset, EOF or error from either side is passed on to the other (a reset as a reset).

Datagram mode (`DatagramRelay`): a front socket takes the client's datagrams and a back
socket per client sends them to the target (and the answers back). Each way has a
`DatagramFaults`: the datagrams with the chosen indices (0-based, counted per way over
all clients) are dropped or held; a held datagram goes out right after the next one
forwarded that way (a swap), or at `flush()`. `rule(index, data)` can decide instead
("pass", "drop" or "hold"), e.g. by looking at a DTLS record's content type
(`dtls_content_type`, `drop_first`). DTLS runs through it unchanged: point the DTLS
client at `relay.address` instead of the server, e.g. to lose the first ClientHello:
`DatagramRelay(loop, server, up=DatagramFaults(rule=drop_first(1, lambda d:
dtls_content_type(d) == 22)))`.

Both relays are bounded (every wait has a timeout, every queue a size) and `close()`
ends every task and socket they made.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .loop import wake

UP = "up"
DOWN = "down"
_CHUNK = 65536
_FLUSH_TIMEOUT = 5.0
_STALL_TIMEOUT = 30.0


def parse_target(address: str) -> tuple[int, Any]:
    """A library Connect string ("a.b.c.d:port", "[v6]:port" or a path) as
    (family, sockaddr)."""
    if address.startswith("/"):
        return socket.AF_UNIX, address
    host, _, port = address.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


def format_target(family: int, sockaddr: Any) -> str:
    """The library Connect string for a bound relay socket."""
    if family == socket.AF_UNIX:
        return str(sockaddr)
    if family == socket.AF_INET6:
        return f"[{sockaddr[0]}]:{sockaddr[1]}"
    return f"{sockaddr[0]}:{sockaddr[1]}"


def _loopback(family: int) -> str:
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


# --------------------------------------------------------------------------- stream


@dataclass
class StreamFaults:
    """The faults of one way of a stream relay (see the module docstring)."""

    delay: float = 0.0
    split: bool = False
    reset_at: int | None = None
    half_close_at: int | None = None
    stall_at: int | None = None

    def limit(self, done: int) -> int:
        """How much to read next so that no fault offset is crossed."""
        n = _CHUNK
        for at in (self.reset_at, self.half_close_at, self.stall_at):
            if at is not None and at > done:
                n = min(n, at - done)
        return n


@dataclass
class WayStats:
    """What went one way, over all connections."""

    forwarded: int = 0
    writes: int = 0
    dropped: int = 0
    resets: int = 0
    half_closes: int = 0
    stalls: int = 0


class _Conn:
    __slots__ = ("a", "b", "done", "tasks")

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.a = a  # the client's side
        self.b = b  # the server's side
        self.tasks: list[asyncio.Task[None]] = []
        self.done = False


class StreamRelay:
    """A stream relay between a client and `target`; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: str,
        listen_path: str | None = None,
        up: StreamFaults | None = None,
        down: StreamFaults | None = None,
    ) -> None:
        self.loop = loop
        self.family, self.target = parse_target(target)
        self.faults = {UP: up or StreamFaults(), DOWN: down or StreamFaults()}
        self.stats = {UP: WayStats(), DOWN: WayStats()}
        self.conns: list[_Conn] = []
        self.errors: list[BaseException] = []
        self._released = asyncio.Event()
        self._lsock = socket.socket(self.family, socket.SOCK_STREAM)
        self._lsock.setblocking(False)
        if self.family == socket.AF_UNIX:
            if listen_path is None:
                raise ValueError("a relay for a local socket needs listen_path")
            self._lsock.bind(listen_path)
        else:
            self._lsock.bind((_loopback(self.family), 0))
        self._lsock.listen(128)
        self._path = listen_path if self.family == socket.AF_UNIX else None
        self.address = format_target(self.family, self._lsock.getsockname())
        self._accept_task: asyncio.Task[None] | None = loop.create_task(self._accept_loop())

    # ------------------------------------------------------------------ control

    def release(self) -> None:
        """End every stall: the relay reads again."""
        self._released.set()

    async def aclose(self) -> None:
        """Stop: end every task and close every socket the relay made."""
        tasks = [t for c in self.conns for t in c.tasks]
        if self._accept_task is not None:
            tasks.append(self._accept_task)
            self._accept_task = None
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_FLUSH_TIMEOUT)
        for c in self.conns:
            for s in (c.a, c.b):
                s.close()
        self._lsock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)

    def close(self) -> None:
        """`aclose` for a loop that is not running (tests between `run_until` calls)."""
        self.loop.run_until_complete(self.aclose())

    # ------------------------------------------------------------------ the work

    async def _accept_loop(self) -> None:
        while True:
            a, _ = await self.loop.sock_accept(self._lsock)
            a.setblocking(False)
            b = socket.socket(self.family, socket.SOCK_STREAM)
            b.setblocking(False)
            if self.family != socket.AF_UNIX:
                for s in (a, b):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for way, s in ((UP, a), (DOWN, b)):
                if self.faults[way].stall_at is not None:
                    # a small fixed receive buffer: the stall reaches the sender soon
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            try:
                await asyncio.wait_for(self.loop.sock_connect(b, self.target), _FLUSH_TIMEOUT)
            except (TimeoutError, OSError) as e:
                self.errors.append(e)
                _reset(a)
                b.close()
                continue
            c = _Conn(a, b)
            self.conns.append(c)
            c.tasks.append(self.loop.create_task(self._pump(c, UP, a, b)))
            c.tasks.append(self.loop.create_task(self._pump(c, DOWN, b, a)))

    async def _pump(self, c: _Conn, way: str, src: socket.socket, dst: socket.socket) -> None:
        f = self.faults[way]
        st = self.stats[way]
        loop = self.loop
        done = 0
        try:
            while True:
                if f.stall_at is not None and done == f.stall_at and not self._released.is_set():
                    st.stalls += 1
                    wake()
                    await asyncio.wait_for(self._released.wait(), _STALL_TIMEOUT)
                data = await loop.sock_recv(src, f.limit(done))
                if not data:
                    _shutdown_wr(dst)
                    break
                if f.delay:
                    await asyncio.sleep(f.delay)
                if f.split:
                    for i in range(len(data)):
                        await loop.sock_sendall(dst, data[i : i + 1])
                    st.writes += len(data)
                else:
                    await loop.sock_sendall(dst, data)
                    st.writes += 1
                done += len(data)
                st.forwarded += len(data)
                wake()
                if f.reset_at is not None and done == f.reset_at:
                    st.resets += 1
                    wake()
                    await _flushed(dst)
                    self._abort(c)
                    return
                if f.half_close_at is not None and done == f.half_close_at:
                    st.half_closes += 1
                    await _flushed(dst)
                    _shutdown_wr(dst)
                    while True:  # drop the rest that way, until the sender closes
                        data = await loop.sock_recv(src, _CHUNK)
                        if not data:
                            break
                        st.dropped += len(data)
                    break
        except asyncio.CancelledError:
            raise
        except (TimeoutError, OSError) as e:
            # a reset or error on one side: pass it on to the other as a reset
            if not isinstance(e, ConnectionResetError | BrokenPipeError):
                self.errors.append(e)
            self._abort(c)
            return
        # this way is over; when both are, close both sockets
        if all(t.done() or t is asyncio.current_task() for t in c.tasks) and not c.done:
            c.done = True
            c.a.close()
            c.b.close()

    def _abort(self, c: _Conn) -> None:
        if c.done:
            return
        c.done = True
        me = asyncio.current_task()
        for t in c.tasks:
            if t is not me:
                t.cancel()
        # the other way's sock_recv is cancelled before its socket goes (one loop turn)
        self.loop.call_soon(_reset, c.a)
        self.loop.call_soon(_reset, c.b)


def _shutdown_wr(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_WR)


def _reset(s: socket.socket) -> None:
    """Close `s` with a TCP RST (a Unix socket just closes)."""
    if s.fileno() < 0:
        return
    if s.family != socket.AF_UNIX:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _outq(s: socket.socket) -> int:
    buf = fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


async def _flushed(s: socket.socket) -> None:
    """Wait (bounded) until the receiver's kernel took every byte written to `s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _FLUSH_TIMEOUT
    while loop.time() < deadline:
        try:
            if _outq(s) == 0:
                return
        except OSError:
            return
        await asyncio.sleep(0.002)


# --------------------------------------------------------------------------- datagram

Rule = Callable[[int, bytes], str]


@dataclass
class DatagramFaults:
    """The faults of one way of a datagram relay (see the module docstring)."""

    drop: frozenset[int] = frozenset()
    hold: frozenset[int] = frozenset()
    rule: Rule | None = None

    def action(self, index: int, data: bytes) -> str:
        if self.rule is not None:
            return self.rule(index, data)
        if index in self.drop:
            return "drop"
        if index in self.hold:
            return "hold"
        return "pass"


@dataclass
class DatagramWay:
    """What went one way: the indices forwarded (in the order they left), dropped, held."""

    seen: int = 0
    order: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    held: list[tuple[int, bytes, Any]] = field(default_factory=list)
    send_errors: int = 0


def dtls_content_type(data: bytes) -> int | None:
    """The content type of the first DTLS record in a datagram (22 handshake, 23
    application data, 21 alert, 20 change cipher spec), or None if it is no DTLS record.
    For rules such as "drop the first handshake flight"."""
    if len(data) >= 13 and data[1] == 0xFE and data[0] in (20, 21, 22, 23, 24):
        return data[0]
    return None


def drop_first(n: int, match: Callable[[bytes], bool]) -> Rule:
    """A rule that drops the first `n` datagrams `match` accepts and passes the rest."""
    left = [n]

    def rule(index: int, data: bytes) -> str:
        if left[0] > 0 and match(data):
            left[0] -= 1
            return "drop"
        return "pass"

    return rule


MAX_HELD = 64
MAX_CLIENTS = 64


class DatagramRelay:
    """A UDP relay between clients and `target` ("a.b.c.d:port" or "[v6]:port")."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: str,
        up: DatagramFaults | None = None,
        down: DatagramFaults | None = None,
    ) -> None:
        self.loop = loop
        self.family, self.target = parse_target(target)
        self.faults = {UP: up or DatagramFaults(), DOWN: down or DatagramFaults()}
        self.ways = {UP: DatagramWay(), DOWN: DatagramWay()}
        self._front = self._socket()
        self.address = format_target(self.family, self._front.getsockname())
        self._backs: dict[Any, socket.socket] = {}
        self._closed = False
        loop.add_reader(self._front.fileno(), self._on_front)

    def _socket(self) -> socket.socket:
        s = socket.socket(self.family, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind((_loopback(self.family), 0))
        return s

    def _on_front(self) -> None:
        for _ in range(64):
            try:
                data, client = self._front.recvfrom(_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from a client that went away
            back = self._backs.get(client)
            if back is None:
                if len(self._backs) >= MAX_CLIENTS:
                    continue
                back = self._backs[client] = self._socket()
                self.loop.add_reader(back.fileno(), self._on_back, back, client)
            self._way(UP, data, back, self.target)

    def _on_back(self, back: socket.socket, client: Any) -> None:
        for _ in range(64):
            try:
                data = back.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self._way(DOWN, data, self._front, client)

    def _way(self, way: str, data: bytes, out: socket.socket, dst: Any) -> None:
        w = self.ways[way]
        i = w.seen
        w.seen += 1
        wake()
        action = self.faults[way].action(i, data)
        if action == "drop":
            w.dropped.append(i)
            return
        if action == "hold" and len(w.held) < MAX_HELD:
            w.held.append((i, data, (out, dst)))
            return
        self._send(w, i, data, out, dst)
        self._release_held(w)

    def _send(self, w: DatagramWay, i: int, data: bytes, out: socket.socket, dst: Any) -> None:
        try:
            out.sendto(data, dst)
        except OSError:
            w.send_errors += 1
            return
        w.order.append(i)

    def _release_held(self, w: DatagramWay) -> None:
        held, w.held = w.held, []
        for i, data, (out, dst) in held:
            self._send(w, i, data, out, dst)

    def flush(self) -> None:
        """Send every held datagram now."""
        for w in self.ways.values():
            self._release_held(w)

    def close(self) -> None:
        """Stop: remove the readers and close every socket the relay made."""
        if self._closed:
            return
        self._closed = True
        for s in [self._front, *self._backs.values()]:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(s.fileno())
            s.close()
        self._backs.clear()
