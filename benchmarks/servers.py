"""The servers under test, one per process: the library's and raw asyncio's.

Run as ``python -m benchmarks.servers --kind tcp --impl lib --loop uvloop``. Every server
listens on two addresses: an echo service (what comes in goes back) and a sink (what
comes in is counted and dropped; one byte ``K`` goes back per MiB received, so the
client knows when the server has it all). UDP has the echo service only.

The process prints one line ``READY {json}`` with its addresses, then obeys lines on its
stdin: ``START`` (begin a measuring window: answers ``OK``), ``STOP`` (answers one JSON
line with the CPU time, wall time and memory of the window) and ``QUIT``.

Implementations (``--impl``): the library's are ``BUILD-STYLE``, the build ``usocket``
(pure Python) or ``compiled`` (the optional mypyc build, setup.py), the style that of the
echo app, each written as an SDK app writes it with ``Recv(buf, recvPartial=True)``:

- ``plain``: no ``SocketSendResult``; ``SocketRecvResult`` sends what came and receives
  again (Recv -> Send -> Recv). UDP's echo is always this one.
- ``flow``: the SDK's flow control: ``SocketRecvResult`` sends what came, and the next
  ``Recv`` is issued from ``SocketSendResult`` (one send in flight).
- ``window``: ``SocketRecvResult`` sends and receives again at once unless `MAX_IN_FLIGHT`
  sends still wait for their ``SocketSendResult``; then it receives again in that callback.
  TLS, bulk and echo use this one (their figures stay comparable with earlier runs).

The plain and flow apps send the bytearray they received into (`Send(buf, len)`), a
256 KiB one. Apps written other ways, each in both styles (``plain-mv``, ``flow-mv``, ...):

- ``mv``: sends a memoryview slice of its 256 KiB buffer (`Send(view[:len])`).
- ``bytes``: sends a `bytes` it made of what came (`Send(bytes(view[:len]))`).
- ``small``: receives into a 1 KiB bytearray (`SMALL_SIZE`) and sends it (`Send(buf, len)`).

The raw asyncio ones:

- ``protocol``: `asyncio.Protocol` (``data_received`` -> ``write``), reading paused
  while the transport's write buffer is full. UDP: `asyncio.DatagramProtocol`.
- ``buffered``: `asyncio.BufferedProtocol` into one buffer, the same flow control.
- ``streams``: `asyncio.start_server` with ``read``/``write``/``drain``.
- ``floor-plain``, ``floor-flow`` (and ``floorc-...``, built by mypyc): the floor, an
  echo socket that keeps of the contract only the thread check (benchmarks/floor.py),
  with the plain and flow apps; for ``python -m benchmarks.callgrind``.
- ``usocket-slow``, ``protocol-slow``, ``protocol-slow-pause``: sinks whose app takes at
  most `SLOW_CHUNK` bytes per `SLOW_TICK` (the memory benchmark). ``protocol-slow`` queues
  whatever arrives; ``protocol-slow-pause`` pauses reading while `SLOW_CHUNK` is queued.

``--mark`` calls ``os.getppid()`` (a libc function nothing else here calls) on ``START``
and ``STOP``: under ``valgrind --tool=callgrind --dump-before=getppid`` the second dump
holds exactly the instructions of the window (benchmarks/callgrind.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

MIB = 1 << 20
RECV_SIZE = 256 * 1024
"""Bytes per read: asyncio's and uvloop's own read size."""
SMALL_SIZE = 1024
"""The buffer of the ``small`` echo apps."""
MAX_IN_FLIGHT = 4
"""Sends the library echo app lets wait for their result before it stops receiving."""
SLOW_CHUNK = 64 * 1024
SLOW_TICK = 0.001
ACK = b"K"

BUILDS = ("usocket", "compiled")
"""The library's builds: pure Python, and the optional compiled build (setup.py)."""
APPS = ("mv", "bytes", "small")
"""The echo apps written other ways (see the module docstring), each in both styles."""
STYLES = ("plain", "flow", "window", *(f"{s}-{a}" for a in APPS for s in ("plain", "flow")))
LIB_IMPLS = tuple(f"{b}-{s}" for b in BUILDS for s in STYLES)
RAW_IMPLS = ("protocol", "buffered", "streams")
STREAM_IMPLS = (*LIB_IMPLS, *RAW_IMPLS)
FLOOR_IMPLS = ("floor-plain", "floor-flow", "floorc-plain", "floorc-flow")
"""The floor's echo servers (benchmarks/floor.py), pure and compiled (``floorc``)."""
UDP_IMPLS = ("usocket-plain", "compiled-plain", "protocol")
SLOW_IMPLS = ("usocket-slow", "protocol-slow", "protocol-slow-pause")


def lib_build(impl: str) -> str | None:
    """The library build of a server implementation ("usocket", "compiled"), or None for
    a raw asyncio one."""
    build, _, style = impl.partition("-")
    return build if build in BUILDS and style in (*STYLES, "slow") else None


def lib_style(impl: str) -> str:
    """The echo app's style of a library implementation: "plain", "flow" or "window",
    or one of those written another way ("plain-mv", "flow-small", ...)."""
    return impl.partition("-")[2]


def base_style(impl: str) -> str:
    """The flow-control style of a library implementation, whatever way its app sends:
    "plain", "flow" or "window"."""
    return lib_style(impl).partition("-")[0]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of `kind` ("asyncio" or "uvloop")."""
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def pin(cpu: int | None) -> None:
    """Run this process on `cpu` only, where the OS allows it."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass


def settle_malloc() -> None:
    """Allocate and free one large block, as any server that has run a while has done.

    glibc serves a block above its mmap threshold (128 KiB at first) by a fresh `mmap`,
    and raises the threshold the first time such a block is freed. Until then each of
    asyncio's 256 KiB read buffers (`sock.recv(max_size)`, shrunk to what came) is a new
    mapping: about 20 µs of page faults per read in a raw asyncio server (the library
    reads into one buffer and does not pay it), for as long as the process happens not to
    free a large block, so whichever server met one first decided a ratio. Doing it at
    start puts every server in the same, long-running state.
    """
    block = bytearray(4 * MIB)
    del block


def rss_bytes() -> int:
    """The resident set size of this process now."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Sink:
    """Counts received bytes and says how many acks (one per MiB) are due."""

    __slots__ = ("acked", "total")

    def __init__(self) -> None:
        self.total = 0
        self.acked = 0

    def add(self, n: int) -> int:
        self.total += n
        due = self.total // MIB - self.acked
        self.acked += due
        return due


# ---------------------------------------------------------------------- the library


def echo_apps() -> dict[str, Any]:
    """The library's echo apps by style (``plain``, ``flow`` and the ways of writing them:
    see the module), made anew: `USocket` subclasses, as an SDK app writes them. The
    floor's servers (benchmarks/floor.py) run the same ones."""
    import usocket_asyncio as u

    class PlainEcho(u.USocket):
        """Receive, send what came, receive again; no `SocketSendResult`."""

        __slots__ = ("buf",)

        def __init__(self) -> None:
            self.buf = bytearray(RECV_SIZE)

        def SocketAcceptComplete(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            socket.Send(buf, len)  # Send copies: buf may be reused at once
            socket.Recv(buf, None, True)

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            socket.Delete()

    class FlowEcho(u.USocket):
        """Receive, send what came; receive again when the send's `SocketSendResult`
        comes (the SDK's flow control: one send in flight)."""

        __slots__ = ("buf",)

        def __init__(self) -> None:
            self.buf = bytearray(RECV_SIZE)

        def SocketAcceptComplete(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            socket.Send(buf, len)

        def SocketSendResult(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            socket.Delete()

    class PlainMvEcho(u.USocket):
        """The plain echo sending memoryview slices of its buffer."""

        __slots__ = ("buf", "mv")

        def __init__(self) -> None:
            self.buf = bytearray(RECV_SIZE)
            self.mv = memoryview(self.buf)

        def SocketAcceptComplete(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            socket.Send(self.mv[:len])
            socket.Recv(buf, None, True)

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            socket.Delete()

    class FlowMvEcho(PlainMvEcho):
        """The flow echo sending memoryview slices of its buffer."""

        __slots__ = ()

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            socket.Send(self.mv[:len])

        def SocketSendResult(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

    class PlainBytesEcho(PlainMvEcho):
        """The plain echo sending a `bytes` of what came."""

        __slots__ = ()

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            socket.Send(bytes(self.mv[:len]))
            socket.Recv(buf, None, True)

    class FlowBytesEcho(PlainMvEcho):
        """The flow echo sending a `bytes` of what came."""

        __slots__ = ()

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            socket.Send(bytes(self.mv[:len]))

        def SocketSendResult(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

    class PlainSmallEcho(PlainEcho):
        """The plain echo with a 1 KiB buffer."""

        __slots__ = ()

        def __init__(self) -> None:
            self.buf = bytearray(SMALL_SIZE)

    class FlowSmallEcho(FlowEcho):
        """The flow echo with a 1 KiB buffer."""

        __slots__ = ()

        def __init__(self) -> None:
            self.buf = bytearray(SMALL_SIZE)

    return {
        "plain": PlainEcho,
        "flow": FlowEcho,
        "plain-mv": PlainMvEcho,
        "flow-mv": FlowMvEcho,
        "plain-bytes": PlainBytesEcho,
        "flow-bytes": FlowBytesEcho,
        "plain-small": PlainSmallEcho,
        "flow-small": FlowSmallEcho,
    }


def lib_server(
    args: argparse.Namespace, loop_kind: str, ready: Callable[[dict[str, Any]], None]
) -> Any:
    """Start the library's servers on a new IIoMux; returns the mux."""
    import usocket_asyncio as u

    mux = u.IIoMux.Create(uvloop=loop_kind == "uvloop")
    log = u.IInstanceLog(0)
    kind = args.kind
    if kind == "tcp":
        provider = u.CreateTCPSocketProvider()
        ctx = None
    elif kind == "local":
        provider = u.CreateLocalSocketProvider()
        ctx = None
    elif kind == "tls":
        provider = u.CreateTLSSocketProvider(None)
        ctx = provider.CreateSocketContext(log)
        with open(args.cert, "rb") as f:
            ctx.SetServerCertificate(f.read())
    elif kind == "udp":
        provider = u.CreateUDPSocketProvider()
        ctx = None
    else:
        raise SystemExit(f"unknown kind {kind}")

    class WindowEcho(u.USocket):
        """Receive, send what came, receive again; stop receiving while `MAX_IN_FLIGHT`
        sends wait for their `SocketSendResult` (a peer that does not read)."""

        __slots__ = ("buf", "in_flight", "waiting")

        def __init__(self) -> None:
            self.buf = bytearray(RECV_SIZE)
            self.in_flight = 0
            self.waiting = False

        def SocketAcceptComplete(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            socket.Send(buf, len)  # Send copies: buf may be reused at once
            self.in_flight += 1
            if self.in_flight < MAX_IN_FLIGHT:
                socket.Recv(buf, None, True)
            else:
                self.waiting = True

        def SocketSendResult(self, socket: Any) -> None:
            self.in_flight -= 1
            if self.waiting:
                self.waiting = False
                socket.Recv(self.buf, None, True)

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            socket.Delete()

    class SinkUser(u.USocket):
        __slots__ = ("buf", "sink")

        def __init__(self) -> None:
            self.buf = bytearray(RECV_SIZE)
            self.sink = Sink()

        def SocketAcceptComplete(self, socket: Any) -> None:
            socket.Recv(self.buf, None, True)

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            due = self.sink.add(len)
            socket.Recv(buf, None, True)
            if due:
                socket.Send(ACK * due)

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            socket.Delete()

    class SlowSink(u.USocket, u.UTimer):
        """Takes one `SLOW_CHUNK` per `SLOW_TICK`: the app drains slowly."""

        __slots__ = ("buf", "sink", "sock", "timer")

        def __init__(self) -> None:
            self.buf = bytearray(SLOW_CHUNK)
            self.sink = Sink()
            self.sock: Any = None
            self.timer = u.ITimer(mux, self)

        def SocketAcceptComplete(self, socket: Any) -> None:
            self.sock = socket
            socket.Recv(self.buf, None, True)

        def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
            due = self.sink.add(len)
            if due:
                socket.Send(ACK * due)
            self.timer.Start(int(SLOW_TICK * 1000))

        def TimerOnTimeout(self, timer: Any) -> None:
            if self.sock is not None:
                self.sock.Recv(self.buf, None, True)

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            self.timer.Cancel()
            self.sock = None
            socket.Delete()

    class UdpEcho(u.USocket):
        __slots__ = ("buf",)

        def __init__(self) -> None:
            self.buf = bytearray(2048)

        def SocketBindResult(self, socket: Any, localAddr: str, localPort: int) -> None:
            addrs["echo"] = ["127.0.0.1", localPort]
            ready(addrs)
            socket.Recv(self.buf)

        def SocketRecvFromResult(
            self, socket: Any, buf: Any, len: int, srcAddr: Any, srcPort: int
        ) -> None:
            socket.SendTo(buf, len, srcAddr, srcPort)
            socket.Recv(buf)

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            socket.Delete()

    addrs: dict[str, Any] = {}
    echo = echo_apps().get(lib_style(args.impl), WindowEcho)
    services = {"echo": echo, "sink": SlowSink if args.impl == "usocket-slow" else SinkUser}

    class Listener(u.USocket):
        __slots__ = ("name",)

        def __init__(self, name: str) -> None:
            self.name = name

        def SocketBindResult(self, socket: Any, localAddr: str, localPort: int) -> None:
            addrs[self.name] = localAddr if kind == "local" else ["127.0.0.1", localPort]
            if len(addrs) == 2:
                ready(addrs)

        def SocketListenResult(self, socket: Any, remoteAddr: str, remotePort: int) -> None:
            socket.Accept(services[self.name]())

        def SocketShutdown(self, socket: Any, reason: Any) -> None:
            print(f"listener ended: {reason!r}", file=sys.stderr)
            socket.Delete()

    if kind == "udp":
        s = provider.CreateSocket(mux, UdpEcho(), log)
        s.Bind("127.0.0.1", 0)
        return mux
    for name in services:
        lst = provider.CreateSocket(mux, Listener(name), log, False, ctx)
        if kind == "local":
            lst.Bind(os.path.join(args.dir, f"{args.impl}-{name}.sock"))
        else:
            lst.Bind("127.0.0.1", 0)
        lst.Listen()
    return mux


# ---------------------------------------------------------------------- raw asyncio


class ProtoEcho(asyncio.Protocol):
    __slots__ = ("tr",)

    def connection_made(self, transport: Any) -> None:
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        self.tr.write(data)

    def pause_writing(self) -> None:
        self.tr.pause_reading()

    def resume_writing(self) -> None:
        self.tr.resume_reading()


class ProtoSink(asyncio.Protocol):
    __slots__ = ("sink", "tr")

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        self.sink = Sink()

    def data_received(self, data: bytes) -> None:
        due = self.sink.add(len(data))
        if due:
            self.tr.write(ACK * due)


class BufEcho(asyncio.BufferedProtocol):
    __slots__ = ("buf", "tr")

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        self.buf = memoryview(bytearray(RECV_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.tr.write(self.buf[:nbytes].tobytes())

    def pause_writing(self) -> None:
        self.tr.pause_reading()

    def resume_writing(self) -> None:
        self.tr.resume_reading()


class BufSink(asyncio.BufferedProtocol):
    __slots__ = ("buf", "sink", "tr")

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        self.buf = memoryview(bytearray(RECV_SIZE))
        self.sink = Sink()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        due = self.sink.add(nbytes)
        if due:
            self.tr.write(ACK * due)


class SlowProtoSink(asyncio.Protocol):
    """Queues what arrives; the app takes `SLOW_CHUNK` per `SLOW_TICK` from the queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pause: bool) -> None:
        self.loop = loop
        self.pause = pause
        self.paused = False
        self.q = bytearray()
        self.sink = Sink()
        self.tr: Any = None
        self.handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        self.handle = self.loop.call_later(SLOW_TICK, self.tick)

    def data_received(self, data: bytes) -> None:
        self.q += data
        if self.pause and not self.paused and len(self.q) >= SLOW_CHUNK:
            self.paused = True
            self.tr.pause_reading()

    def tick(self) -> None:
        n = min(SLOW_CHUNK, len(self.q))
        if n:
            del self.q[:n]
            due = self.sink.add(n)
            if due:
                self.tr.write(ACK * due)
        if self.paused and len(self.q) < SLOW_CHUNK:
            self.paused = False
            self.tr.resume_reading()
        self.handle = self.loop.call_later(SLOW_TICK, self.tick)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.q = bytearray()


class DgramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.tr = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.tr.sendto(data, addr)


def floor_factory(impl: str, loop: asyncio.AbstractEventLoop) -> Any:
    """The protocol factory of a floor echo server (`FLOOR_IMPLS`): the pure floor, or
    the compiled one (``floorc``: `bench_floor`, built beside the compiled library, whose
    directory is then the working directory)."""
    if impl.startswith("floorc-"):
        import bench_floor as floor  # type: ignore[import-not-found]

        if not floor.COMPILED:
            raise SystemExit(f"not the compiled floor: {floor.__file__}")
    else:
        from . import floor
    floor.own()
    return floor.factory(echo_apps()[impl.rpartition("-")[2]], loop)


async def stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(RECV_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()


async def stream_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sink = Sink()
    try:
        while True:
            data = await reader.read(RECV_SIZE)
            if not data:
                break
            due = sink.add(len(data))
            if due:
                writer.write(ACK * due)
                await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()


_KEEP: list[Any] = []


async def raw_servers(args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """Start raw asyncio servers of `args.impl`; returns their addresses."""
    kind, impl = args.kind, args.impl
    if kind == "udp":
        tr, _ = await loop.create_datagram_endpoint(DgramEcho, local_addr=("127.0.0.1", 0))
        _KEEP.append(tr)
        return {"echo": list(tr.get_extra_info("sockname")[:2])}
    sslctx = None
    if kind == "tls":
        sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sslctx.load_cert_chain(args.cert)
    factories: dict[str, Any]
    if impl == "protocol":
        factories = {"echo": ProtoEcho, "sink": ProtoSink}
    elif impl == "buffered":
        factories = {"echo": BufEcho, "sink": BufSink}
    elif impl in ("protocol-slow", "protocol-slow-pause"):
        pause = impl == "protocol-slow-pause"
        factories = {"echo": ProtoEcho, "sink": lambda: SlowProtoSink(loop, pause)}
    elif impl == "streams":
        factories = {}
    elif impl in FLOOR_IMPLS:
        factories = {"echo": floor_factory(impl, loop), "sink": ProtoSink}
    else:
        raise SystemExit(f"unknown impl {impl}")
    addrs: dict[str, Any] = {}
    for name in ("echo", "sink"):
        path = os.path.join(args.dir, f"{impl}-{name}.sock")
        server: asyncio.AbstractServer
        if impl == "streams":
            cb = stream_echo if name == "echo" else stream_sink
            if kind == "local":
                server = await asyncio.start_unix_server(cb, path)
            else:
                server = await asyncio.start_server(cb, "127.0.0.1", 0, ssl=sslctx)
        elif kind == "local":
            server = await loop.create_unix_server(factories[name], path)
        else:
            server = await loop.create_server(factories[name], "127.0.0.1", 0, ssl=sslctx)
        addrs[name] = path if kind == "local" else ["127.0.0.1", server.sockets[0].getsockname()[1]]
        _KEEP.append(server)  # uvloop closes a server object that is garbage-collected
    return addrs


# ---------------------------------------------------------------------- control


class Control:
    """Obeys START/STOP/QUIT on stdin; measures the window between START and STOP."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stop: Callable[[], None],
        sample: bool,
        mark: bool = False,
    ) -> None:
        self.loop = loop
        self.stop = stop
        self.sample = sample
        self.mark = mark
        self.pending = b""
        self.t0 = time.perf_counter()
        self.ru0: Any = resource.getrusage(resource.RUSAGE_SELF)
        self.rss0 = 0
        self.rss_peak = 0
        self.sampler: asyncio.TimerHandle | None = None
        loop.add_reader(0, self.readable)

    def readable(self) -> None:
        data = os.read(0, 4096)
        if not data:
            self.quit()
            return
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            self.command(line.decode().strip())

    def command(self, cmd: str) -> None:
        if cmd == "START":
            if self.mark:
                os.getppid()  # callgrind dumps what came before the window
            self.rss0 = self.rss_peak = rss_bytes()
            self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
            self.t0 = time.perf_counter()
            if self.sample:
                self.sampler = self.loop.call_later(0.005, self.sample_rss)
            reply("OK")
        elif cmd == "STOP":
            if self.mark:
                os.getppid()  # callgrind dumps the window
            t1 = time.perf_counter()
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            if self.sampler is not None:
                self.sampler.cancel()
                self.sampler = None
            self.rss_peak = max(self.rss_peak, rss_bytes())
            ru0 = self.ru0
            reply(
                json.dumps(
                    {
                        "wall": t1 - self.t0,
                        "utime": ru1.ru_utime - ru0.ru_utime,
                        "stime": ru1.ru_stime - ru0.ru_stime,
                        "cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                        "rss_start": self.rss0,
                        "rss_peak": self.rss_peak,
                        "maxrss": ru1.ru_maxrss * 1024,
                    }
                )
            )
        elif cmd == "QUIT":
            self.quit()

    def sample_rss(self) -> None:
        self.rss_peak = max(self.rss_peak, rss_bytes())
        self.sampler = self.loop.call_later(0.005, self.sample_rss)

    def quit(self) -> None:
        try:
            self.loop.remove_reader(0)
        except Exception:
            pass
        self.stop()


def reply(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    p.add_argument("--kind", required=True, choices=("tcp", "tls", "local", "udp"))
    p.add_argument("--impl", required=True)
    p.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    p.add_argument("--cert", help="PEM with key and certificate (tls)")
    p.add_argument("--dir", default="/tmp", help="directory for local socket files")
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--sample-rss", action="store_true")
    p.add_argument("--mark", action="store_true", help="call getppid() on START and STOP")
    args = p.parse_args(argv)
    pin(args.cpu)
    settle_malloc()

    def ready(addrs: dict[str, Any]) -> None:
        reply("READY " + json.dumps(addrs))

    if lib_build(args.impl) == "compiled":
        import usocket_asyncio

        if not usocket_asyncio.COMPILED:
            reply(f"ERROR not the compiled build: {usocket_asyncio.__file__}")
            return 1
    if lib_build(args.impl) is not None:
        mux = lib_server(args, args.loop, ready)
        loop = mux.loop
        Control(loop, mux.Terminate, args.sample_rss, args.mark)
        mux.Run()
        mux.Close()
        return 0
    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    ready(loop.run_until_complete(raw_servers(args, loop)))
    Control(loop, loop.stop, args.sample_rss, args.mark)
    loop.run_forever()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def comma_list(
    parser: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str
) -> list[str]:
    """`text` ("a,b,c") as a list, each item one of `allowed`; otherwise the parser's error."""
    items = [x for x in text.split(",") if x]
    for x in items:
        if x not in allowed:
            parser.error(f"unknown {what} {x!r}; pick from {', '.join(allowed)}")
    return items
