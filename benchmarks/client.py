"""The load client: a separate process on uvloop (raw protocols), driven over stdin.

Each stdin line is a JSON job, e.g. ``{"op": "pingpong", "kind": "tcp", "addr":
["127.0.0.1", 4000], "size": 1024, "conns": 10, "duration": 2.0}``. The client opens its
connections and warms up, prints ``READY``, waits for a ``GO`` line, measures, and
prints one ``RESULT {json}`` line; then it closes its connections and takes the next job.

Jobs:

- ``pingpong``: each of ``conns`` connections sends ``size`` bytes and waits for them to
  come back, again and again, for ``duration`` seconds (UDP: datagrams, resent when lost).
  With ``"keep": true`` the connections stay open (idle) after the window and the next
  ping-pong job to the same address and shape reuses them, so that many short windows
  measure the server, not connection setup; ``{"op": "close"}`` closes them all.
- ``bulk``: one connection pushes ``total`` bytes to the sink and waits for its acks
  (one per MiB): one-way throughput.
- ``echo``: one connection pushes ``total`` bytes to the echo service and reads them all
  back.

Bulk jobs stop after ``max_time`` seconds with what has been done by then.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from typing import Any

from .servers import MIB, new_loop, pin

CHUNK = 256 * 1024
WARMUP = 0.2
UDP_RESEND = 0.05


class PingPong(asyncio.Protocol):
    def __init__(self, msg: bytes, counter: list[int]) -> None:
        self.msg = msg
        self.size = len(msg)
        self.got = 0
        self.counter = counter
        self.running = True
        self.waiting = False  # a message is out and not all of it back yet
        self.lost = False
        self.tr: Any = None

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        self.send()

    def send(self) -> None:
        self.waiting = True
        self.tr.write(self.msg)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.size:
            self.got -= self.size
            self.waiting = False
            self.counter[0] += 1
            if self.running:
                self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.running = False
        self.lost = True


class Pusher(asyncio.Protocol):
    """Pushes `total` bytes with flow control; counts what comes back."""

    def __init__(self, total: int, done: asyncio.Future[None], expect: int) -> None:
        self.total = total
        self.sent = 0
        self.received = 0
        self.expect = expect
        self.done = done
        self.paused = False
        self.tr: Any = None
        self.chunk = os.urandom(CHUNK)

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        transport.set_write_buffer_limits(high=4 * CHUNK)

    def start(self) -> None:
        self.push()

    def push(self) -> None:
        while not self.paused and self.sent < self.total:
            n = min(CHUNK, self.total - self.sent)
            self.tr.write(self.chunk if n == CHUNK else self.chunk[:n])
            self.sent += n

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.push()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.expect and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class UdpPing(asyncio.DatagramProtocol):
    def __init__(self, size: int, counter: list[int], loop: asyncio.AbstractEventLoop) -> None:
        self.payload = bytearray(os.urandom(size))
        self.seq = 0
        self.counter = counter
        self.loop = loop
        self.sent_at = 0.0
        self.running = True
        self.tr: Any = None

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        self.send()

    def send(self) -> None:
        self.payload[:8] = self.seq.to_bytes(8, "little")
        self.sent_at = self.loop.time()
        self.tr.sendto(self.payload)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if int.from_bytes(data[:8], "little") != self.seq:
            return
        self.counter[0] += 1
        self.seq += 1
        if self.running:
            self.send()

    def error_received(self, exc: Exception) -> None:
        pass


class Client:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.pending = b""
        self.sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.sslctx.check_hostname = False
        self.sslctx.verify_mode = ssl.CERT_NONE
        self.kept: dict[str, tuple[list[int], list[Any]]] = {}
        loop.add_reader(0, self.readable)

    def readable(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.lines.put_nowait("")
            self.loop.remove_reader(0)
            return
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            self.lines.put_nowait(line.decode())

    async def connect(self, job: dict[str, Any], factory: Any) -> tuple[Any, Any]:
        kind, addr = job["kind"], job["addr"]
        if kind == "local":
            return await self.loop.create_unix_connection(factory, addr)
        if kind == "tls":
            return await self.loop.create_connection(
                factory, addr[0], addr[1], ssl=self.sslctx, server_hostname="bench"
            )
        return await self.loop.create_connection(factory, addr[0], addr[1])

    async def go(self) -> None:
        say("READY")
        line = await self.lines.get()
        if line != "GO":
            raise SystemExit(f"expected GO, got {line!r}")

    async def pingpong(self, job: dict[str, Any]) -> dict[str, Any]:
        counter = [0]
        size, conns = int(job["size"]), int(job["conns"])
        msg = os.urandom(size)
        protos: list[Any] = []
        resend: asyncio.TimerHandle | None = None
        if job["kind"] == "udp":
            addr = tuple(job["addr"])
            for _ in range(conns):
                _, pr = await self.loop.create_datagram_endpoint(
                    lambda: UdpPing(size, counter, self.loop), remote_addr=addr
                )
                protos.append(pr)

            def check() -> None:
                nonlocal resend
                now = self.loop.time()
                for p in protos:
                    if p.running and now - p.sent_at > UDP_RESEND:
                        p.send()
                resend = self.loop.call_later(UDP_RESEND, check)

            resend = self.loop.call_later(UDP_RESEND, check)
        else:
            key = json.dumps([job["kind"], job["addr"], size, conns])
            keep = bool(job.get("keep"))
            if keep and key in self.kept:
                counter, protos = self.kept[key]
                if any(p.lost for p in protos):
                    await self.close_kept(key)
            if keep and key in self.kept:
                for _ in range(200):  # the last window's replies: at most one per connection
                    if not any(p.waiting for p in protos):
                        break
                    await asyncio.sleep(0.005)
                for p in protos:
                    p.running = True
                    if not p.waiting:
                        p.send()
            else:
                for _ in range(conns):
                    _, pr = await self.connect(job, lambda: PingPong(msg, counter))
                    protos.append(pr)
                if keep:
                    self.kept[key] = (counter, protos)
        await asyncio.sleep(float(job.get("warmup", WARMUP)))
        await self.go()
        c0, t0 = counter[0], time.perf_counter()
        await asyncio.sleep(float(job["duration"]))
        c1, t1 = counter[0], time.perf_counter()
        for p in protos:
            p.running = False
        if resend is not None:
            resend.cancel()
        result = {"requests": c1 - c0, "seconds": t1 - t0, "bytes": (c1 - c0) * size * 2}
        say("RESULT " + json.dumps(result))
        if job["kind"] == "udp" or not job.get("keep"):
            for p in protos:
                if p.tr is not None:
                    p.tr.close()
        return result

    async def close_kept(self, key: str | None = None) -> None:
        """Close the kept connections (of one job shape, or all)."""
        for k in [key] if key is not None else list(self.kept):
            _, protos = self.kept.pop(k)
            for p in protos:
                p.running = False
                if p.tr is not None:
                    p.tr.close()
        await asyncio.sleep(0)

    async def bulk(self, job: dict[str, Any], echo: bool) -> dict[str, Any]:
        total = int(job["total"])
        expect = total if echo else total // MIB
        done: asyncio.Future[None] = self.loop.create_future()
        _, pr = await self.connect(job, lambda: Pusher(total, done, expect))
        await self.go()
        t0 = time.perf_counter()
        pr.start()
        try:
            await asyncio.wait_for(asyncio.shield(done), float(job["max_time"]))
        except TimeoutError:
            pass
        t1 = time.perf_counter()
        moved = pr.received if echo else pr.received * MIB
        result = {"requests": 0, "seconds": t1 - t0, "bytes": min(moved, total)}
        say("RESULT " + json.dumps(result))
        if done.done():
            pr.tr.close()  # everything arrived: a clean close
        else:
            pr.tr.abort()  # the time cap struck: do not wait for the rest
        return result

    async def run(self) -> None:
        while True:
            line = await self.lines.get()
            if not line or line == "QUIT":
                return
            job = json.loads(line)
            op = job["op"]
            try:
                if op == "pingpong":
                    await self.pingpong(job)
                elif op == "close":
                    await self.close_kept()
                    say("CLOSED")
                    continue
                elif op in ("bulk", "echo"):
                    await self.bulk(job, op == "echo")
                else:
                    raise SystemExit(f"unknown op {op}")
            except OSError as e:
                say("RESULT " + json.dumps({"error": repr(e)}))
            if not job.get("keep"):
                await asyncio.sleep(0.05)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    cpu = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "-" else None
    pin(cpu)
    loop = new_loop("uvloop")
    asyncio.set_event_loop(loop)
    loop.run_until_complete(Client(loop).run())
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
