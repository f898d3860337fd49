"""Library sockets inside an asyncio application: `IIoMux.FromLoop()` on the running
loop, beside ordinary tasks and `asyncio.start_server` / `open_connection` streams.

Each test is an `async def` run by pytest-asyncio, once on the default loop and once on
uvloop (see kit/asyncio_loops.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from kit.loop import Recorder

from examples.echo_client import EchoClient
from examples.echo_server import EchoServer
from usocket_asyncio import (
    CreateTCPSocketProvider,
    IInstanceLog,
    IIoMux,
    ISocket,
    ITimer,
    ShutdownReason,
    UTimer,
)
from usocket_asyncio._base import LIVE

pytest_plugins = ["kit.asyncio_loops"]
TIMEOUT = 10.0


@pytest.fixture
def errors() -> Iterator[list[dict[str, Any]]]:
    """What reaches the running loop's exception handler; must stay empty."""
    errs: list[dict[str, Any]] = []
    yield errs
    assert not errs, errs


def watch(errs: list[dict[str, Any]]) -> asyncio.AbstractEventLoop:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda lp, ctx: errs.append(ctx))
    return loop


def live(loop: asyncio.AbstractEventLoop) -> list[Any]:
    return [s for s in LIVE if getattr(s, "_loop", None) is loop]


async def until(cond: Any, what: str) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.002)

    try:
        await asyncio.wait_for(poll(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.mark.asyncio
async def test_library_server_asyncio_stream_clients(
    log: IInstanceLog, errors: list[dict[str, Any]]
) -> None:
    loop = watch(errors)
    mux = IIoMux.FromLoop()
    assert mux.loop is loop
    ready: asyncio.Future[int] = loop.create_future()
    server = EchoServer(mux, log, 0, bind="127.0.0.1", on_ready=ready.set_result)
    port = await asyncio.wait_for(ready, TIMEOUT)

    async def one(n: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        greeting = await reader.readline()
        lines = [f"client {n} line {i}\n".encode() for i in range(20)]
        writer.write(b"".join(lines))
        await writer.drain()
        got = [await reader.readline() for _ in lines]
        writer.close()
        await writer.wait_closed()
        assert got == lines
        return [greeting]

    results = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(8))), TIMEOUT)
    assert all(r == [b"hello 127.0.0.1\n"] for r in results)
    await until(lambda: not server.connections, "the connections to end")
    server.Close()
    await until(lambda: server.reason is not None, "the listener to close")
    assert server.reason is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
    assert live(loop) == []
    mux.Close()  # not ours: the loop stays open
    assert not loop.is_closed()


@pytest.mark.asyncio
async def test_asyncio_server_library_client(
    log: IInstanceLog, errors: list[dict[str, Any]]
) -> None:
    watch(errors)
    mux = IIoMux.FromLoop()
    data = random.Random(5).randbytes(2_000_000)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    rec = Recorder("client")
    got = bytearray()
    buf = bytearray(100_000)

    def on_recv(sock: ISocket, b: Any, n: int) -> None:
        got.extend(memoryview(b)[:n])
        if len(got) < len(data):
            sock.Recv(buf, None, True)
        else:
            sock.Shutdown()

    rec.hooks["recv"] = on_recv
    sock = CreateTCPSocketProvider().CreateSocket(mux, rec, log)
    sock.Connect(f"127.0.0.1:{port}")
    for off in range(0, len(data), 300_000):
        sock.Send(data[off : off + 300_000])
    sock.Recv(buf, None, True)
    await until(lambda: rec.shutdown is not None, "the echo and the end")
    assert rec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert rec.names()[0] == "connect" and rec.names().count("send") == 7
    assert not rec.violations
    sock.Delete()
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_library_sockets_beside_busy_tasks(
    log: IInstanceLog, errors: list[dict[str, Any]]
) -> None:
    """Tasks that yield every iteration, sleepers and a library echo run together."""
    loop = watch(errors)
    mux = IIoMux.FromLoop()
    ticks = [0]
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks[0] += 1
            await asyncio.sleep(0)

    async def sleeper() -> int:
        n = 0
        while not stop.is_set():
            await asyncio.sleep(0.001)
            n += 1
        return n

    tasks = [loop.create_task(ticker()), loop.create_task(sleeper())]
    ready: asyncio.Future[int] = loop.create_future()
    server = EchoServer(mux, log, 0, bind="127.0.0.1", on_ready=ready.set_result)
    port = await asyncio.wait_for(ready, TIMEOUT)
    done: list[EchoClient] = []
    for n in range(5):
        lines = [f"{n}-{i}" * (i + 1) for i in range(30)]
        EchoClient(mux, log, f"127.0.0.1:{port}", lines, on_done=done.append)
    await until(lambda: len(done) == 5, "five clients")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert all(c.ok for c in done)
    assert ticks[0] > 0
    await until(lambda: not server.connections, "the connections to end")
    server.Close()
    await until(lambda: server.reason is not None, "the listener to close")
    assert live(loop) == []


@pytest.mark.asyncio
async def test_await_a_library_result(log: IInstanceLog, errors: list[dict[str, Any]]) -> None:
    """An app can turn callbacks into awaitables: a future per expected callback."""
    loop = watch(errors)
    mux = IIoMux.FromLoop()

    class Awaiting(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.connected: asyncio.Future[None] = loop.create_future()
            self.ended: asyncio.Future[ShutdownReason] = loop.create_future()

        def SocketConnectComplete(self, socket: ISocket) -> None:
            super().SocketConnectComplete(socket)
            self.connected.set_result(None)

        def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
            super().SocketShutdown(socket, reason)
            if self.connected.done():
                self.ended.set_result(reason)
            else:
                self.connected.set_exception(ConnectionError(reason.name))

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.readexactly(4))
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    user = Awaiting()
    sock = CreateTCPSocketProvider().CreateSocket(mux, user, log)
    sock.Connect(f"127.0.0.1:{port}")
    await asyncio.wait_for(user.connected, TIMEOUT)
    sock.Send(b"ping")
    sock.Recv(bytearray(4))
    assert await asyncio.wait_for(user.ended, TIMEOUT) is ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
    assert user.received == b"ping"
    sock.Delete()
    srv.close()
    await srv.wait_closed()
    # and a refused connection becomes an exception for the awaiting app
    refused = Awaiting()
    sock = CreateTCPSocketProvider().CreateSocket(mux, refused, log)
    sock.Connect(f"127.0.0.1:{port}")  # the server is closed now
    with pytest.raises(ConnectionError, match="SOCKET_CONNECT_REJECTED"):
        await asyncio.wait_for(refused.connected, TIMEOUT)
    sock.Delete()


@pytest.mark.asyncio
async def test_cancelled_task_deletes_its_socket(
    log: IInstanceLog, errors: list[dict[str, Any]]
) -> None:
    """A task that owns a library socket and is cancelled deletes it in `finally`:
    nothing is called back afterwards and nothing reaches the exception handler."""
    loop = watch(errors)
    mux = IIoMux.FromLoop()
    blocker = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await blocker.wait()
        w.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    rec = Recorder()

    async def owner() -> None:
        sock = CreateTCPSocketProvider().CreateSocket(mux, rec, log)
        try:
            sock.Connect(f"127.0.0.1:{port}")
            sock.Recv(bytearray(10))
            await asyncio.sleep(3600)
        finally:
            sock.Delete()

    task = loop.create_task(owner())
    await until(lambda: "connect" in rec.names(), "the connection")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    blocker.set()
    await asyncio.sleep(0.02)
    assert rec.names() == ["connect"] and not rec.violations
    assert live(loop) == []
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_itimer_beside_asyncio_sleep(errors: list[dict[str, Any]]) -> None:
    loop = watch(errors)
    mux = IIoMux.FromLoop()
    fired: asyncio.Future[ITimer] = loop.create_future()

    class User(UTimer):
        def TimerOnTimeout(self, timer: ITimer) -> None:
            fired.set_result(timer)

    t = ITimer(mux, User())
    t.Start(5)
    await asyncio.sleep(0)
    assert t.IsRunning()
    assert await asyncio.wait_for(fired, TIMEOUT) is t
    assert not t.IsRunning()


@pytest.mark.asyncio
async def test_runs_on_the_loop_named_in_its_id(request: pytest.FixtureRequest) -> None:
    loop_module = type(asyncio.get_running_loop()).__module__
    if request.node.name.endswith("[uvloop]"):
        assert loop_module.startswith("uvloop")
    else:
        assert request.node.name.endswith("[asyncio]")
        assert loop_module.startswith("asyncio")
