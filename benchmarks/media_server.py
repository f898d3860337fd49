"""The media servers under test, one per process: IMedia echo endpoints, or raw asyncio
`DatagramProtocol` endpoints that do the same per-packet work with pylibsrtp.

    python -m benchmarks.media_server --impl imedia|raw --loop asyncio|uvloop [--cpu N]

Each stream has a UDP port of its own on 127.0.0.1, as a call has:

- ``imedia``: one `IMedia` per stream, written as an SDK echo app writes it (as
  examples/media_echo.py does): `MediaRtpRecvResult` sends the payload back with `RtpSend`
  (same timestamp) and posts the buffer again with `Recv`. ICE (this side controls, the
  load generator is an ice-lite peer), DTLS-SRTP (this side is the DTLS client), RTCP
  reports and consent checks are the library's, as in a real call.
- ``raw``: one `asyncio.DatagramProtocol` per stream, keyed directly (no DTLS: the keys
  come from a seed both sides know): each datagram from the peer is SRTP-unprotected,
  its RTP header parsed, a new header (this stream's SSRC and sequence number, the
  packet's payload type and timestamp) put on its payload, SRTP-protected and sent back.
  No RTCP, no consent checks.

The process prints ``{"ready": true}``, then obeys one JSON command a line on stdin and
answers each with one JSON line:

- ``{"cmd": "open", "count": m, "peer": [host, port], ...}``: m more streams. imedia:
  CreateMedia and Initialize each; the answer lists each stream's id, port, ICE ufrag and
  password and certificate fingerprint once every one has its config. raw (also "seed"
  and "profile"): bind m endpoints, keyed by `media_wire.raw_keys`; the answer lists ids
  and ports.
- ``{"cmd": "connect", "peer": [host, port], "fingerprint": f, "streams": [{"id",
  "ufrag", "pwd"}]}`` (imedia): Connect each to the peer (one host candidate, ice-lite,
  DTLS passive); the answer, once every stream has its `MediaConnectResult`, counts the
  connected ones, lists the errors, and gives each stream's times (monotonic clock):
  Initialize called, its config ready, Connect called, connected.
- ``{"cmd": "close", "ids": [...]}``: close those streams (imedia: `Close` and its
  `MediaCloseComplete`).
- ``{"cmd": "start"}`` begins a measuring window; ``{"cmd": "stop"}`` ends it and answers
  the window's CPU time (user + system, `getrusage`), wall time and packets echoed.
- ``{"cmd": "quit"}``.

``--mark`` calls ``os.getppid()`` at the start and the end of each window: under
``valgrind --tool=callgrind --dump-before=getppid`` each window's instructions are a dump of
their own (``python -m benchmarks.media --callgrind``). ``--cprofile PATH`` writes a cProfile
of the windows to PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import resource
import socket
import sys
import time
from typing import Any

from .media_wire import RTP, Commands, pin, raw_keys, reply, runq_wait, srtp_session

HOST = "127.0.0.1"


class Window:
    """CPU and wall time between `start` and `stop`, and the packets echoed; with
    `profile_to`, a cProfile of every window, written there at each `stop`."""

    def __init__(self, profile_to: str | None = None, mark: bool = False) -> None:
        self.profile_to = profile_to
        self.mark = mark
        self.profiler: Any = None
        self.echoed = 0
        self.t0 = time.perf_counter()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.q0 = runq_wait()
        self.e0 = 0

    def start(self) -> dict[str, Any]:
        if self.mark:
            os.getppid()  # callgrind dumps what came before the window
        self.t0 = time.perf_counter()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.q0 = runq_wait()
        self.e0 = self.echoed
        if self.profile_to is not None:
            import cProfile

            if self.profiler is None:
                self.profiler = cProfile.Profile()
            self.profiler.enable()
        return {"ok": True}

    def stop(self) -> dict[str, Any]:
        if self.mark:
            os.getppid()  # callgrind dumps the window
        t1 = time.perf_counter()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(self.profile_to)
        ru0 = self.ru0
        return {
            "wall": t1 - self.t0,
            "utime": ru1.ru_utime - ru0.ru_utime,
            "stime": ru1.ru_stime - ru0.ru_stime,
            "cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "echoed": self.echoed - self.e0,
            "maxrss_mb": ru1.ru_maxrss / 1024,
            "runq_wait": runq_wait() - self.q0,
        }


# --------------------------------------------------------------------------- IMedia


def imedia_server(args: argparse.Namespace) -> int:
    import usocket_asyncio as u

    mux = u.IIoMux.Create(uvloop=args.loop == "uvloop")
    loop = mux.loop
    log = u.IInstanceLog(0)
    provider = u.CreateMediaProvider()
    window = Window(args.cprofile, args.mark)
    streams: dict[int, Echo] = {}
    waiting: dict[str, Any] = {}  # the command under way: what it waits for

    class Echo(u.UMedia):
        """One echo call: what it hears, it sends back."""

        def __init__(self, sid: int) -> None:
            self.sid = sid
            self.buf = bytearray(2048)
            self.config: Any = None
            self.error: str | None = None
            self.times = [time.monotonic(), 0.0, 0.0, 0.0]
            self.media = provider.CreateMedia(mux, self, log)
            self.media.Initialize(None, None, None, 0, 0, localAddresses=[HOST])

        def MediaInitializeComplete(self, media: Any, localMediaConfig: Any) -> None:
            self.times[1] = time.monotonic()
            self.config = localMediaConfig
            if localMediaConfig is None:
                self.error = "Initialize failed"
            progress("open")

        def MediaConnectResult(self, media: Any, error: str | None) -> None:
            self.times[3] = time.monotonic()
            self.error = error
            if error is None:
                media.Recv(self.buf)
            progress("connect")

        def MediaRtpRecvResult(
            self,
            media: Any,
            buf: Any,
            len: int,
            timestamp: int,
            sequenceNumberDiff: int,
            marker: bool,
        ) -> None:
            media.RtpSend(buf, len, timestamp)  # copied: the buffer is free again
            window.echoed += 1
            media.Recv(buf)

        def MediaCloseComplete(self, media: Any) -> None:
            streams.pop(self.sid, None)
            progress("close")

    def progress(what: str) -> None:
        if waiting.get("what") != what:
            return
        ids: list[int] = waiting["ids"]
        if what == "open":
            if any(streams[i].config is None and streams[i].error is None for i in ids):
                return
            out = []
            for i in ids:
                cfg = streams[i].config
                if cfg is None:
                    out.append({"id": i, "error": streams[i].error})
                    continue
                out.append(
                    {
                        "id": i,
                        "port": cfg.defPort,
                        "ufrag": cfg.ice.iceUfrag,
                        "pwd": cfg.ice.icePwd,
                        "fingerprint": cfg.ice.fingerprint,
                    }
                )
            waiting.clear()
            reply({"streams": out})
        elif what == "connect":
            if any(streams[i].times[3] == 0.0 for i in ids):
                return
            errors = [streams[i].error for i in ids if streams[i].error is not None]
            times = [streams[i].times for i in ids]
            waiting.clear()
            reply({"connected": len(ids) - len(errors), "errors": errors[:5], "times": times})
        elif what == "close":
            if any(i in streams for i in ids):
                return
            waiting.clear()
            reply({"closed": len(ids)})

    next_id = [0]

    def handle(cmd: dict[str, Any]) -> None:
        op = cmd["cmd"]
        if op == "open":
            ids = list(range(next_id[0], next_id[0] + cmd["count"]))
            next_id[0] += cmd["count"]
            waiting.update(what="open", ids=ids)
            for i in ids:
                streams[i] = Echo(i)
            loop.call_soon(progress, "open")
        elif op == "connect":
            host, port = cmd["peer"]
            ids = [s["id"] for s in cmd["streams"]]
            waiting.update(what="connect", ids=ids)
            for s in cmd["streams"]:
                cand = u.IceCandidate(
                    host, port, port, 2130706431, 0, u.CHANNEL_CANDIDATE_HOST, "1"
                )
                cfg = u.MediaConfig(
                    type=u.MediaType.AUDIO,
                    defAddr=host,
                    defPort=port,
                    ice=u.IceCandidates(cmd["fingerprint"], s["ufrag"], s["pwd"], True, [cand]),
                    codecList=[u.Codec(u.AudioCoder.G711_U, 0, 0, 8000)],
                )
                st = streams[s["id"]]
                st.times[2] = time.monotonic()
                # the peer is ice-lite (this side controls) and DTLS passive (this side
                # is the DTLS client)
                st.media.Connect(cfg, False, u.SETUP_ROLE_PASSIVE)
        elif op == "close":
            ids = [i for i in cmd["ids"] if i in streams]
            waiting.update(what="close", ids=ids)
            for i in ids:
                streams[i].media.Close()
            loop.call_soon(progress, "close")
        elif op == "start":
            reply(window.start())
        elif op == "stop":
            reply(window.stop())
        elif op == "quit":
            quit_()

    def quit_() -> None:
        commands.close()
        for st in list(streams.values()):
            st.media.Close()
        loop.call_later(0.2, mux.Terminate)

    commands = Commands(loop, handle, quit_)
    reply({"ready": True})
    mux.Run()
    mux.Close()
    return 0


# --------------------------------------------------------------------------- raw asyncio


class RawEcho(asyncio.DatagramProtocol):
    """One raw stream: unprotect, parse, protect, send back."""

    def __init__(self, window: Window, rx: Any, tx: Any, peer: tuple[str, int]) -> None:
        import pylibsrtp

        self.window = window
        self.rx = rx
        self.tx = tx
        self.peer = peer
        self.error = pylibsrtp.Error
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.transport: Any = None
        self.dropped = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr != self.peer or not 128 <= data[0] <= 191 or 192 <= data[1] <= 223:
            self.dropped += 1  # not from the peer, or not RTP
            return
        try:
            pkt = self.rx.unprotect(data)
        except self.error:
            self.dropped += 1
            return
        b0 = pkt[0]
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # a header extension
            start += 4 + 4 * int.from_bytes(pkt[start + 2 : start + 4], "big")
        _, b1, _, ts, _ = RTP.unpack_from(pkt)
        seq = self.seq = (self.seq + 1) & 0xFFFF
        header = RTP.pack(0x80, b1 & 0x7F, seq, ts, self.ssrc)
        self.transport.sendto(self.tx.protect(header + pkt[start:]), addr)
        self.window.echoed += 1


def raw_server(args: argparse.Namespace) -> int:
    from .servers import new_loop

    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    window = Window(args.cprofile, args.mark)
    streams: dict[int, Any] = {}
    next_id = [0]
    tasks: set[asyncio.Task[None]] = set()

    async def open_(cmd: dict[str, Any]) -> None:
        peer = (cmd["peer"][0], cmd["peer"][1])
        seed, profile = cmd["seed"], cmd["profile"]
        out = []
        for _ in range(cmd["count"]):
            i = next_id[0]
            next_id[0] += 1
            rx = srtp_session(raw_keys(seed, i, "up", profile), profile, False)
            tx = srtp_session(raw_keys(seed, i, "down", profile), profile, True)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(RawEcho, window, rx, tx, peer), sock=sock
            )
            streams[i] = transport
            out.append({"id": i, "port": sock.getsockname()[1]})
        reply({"streams": out})

    def handle(cmd: dict[str, Any]) -> None:
        op = cmd["cmd"]
        if op == "open":
            task = loop.create_task(open_(cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif op == "close":
            for i in cmd["ids"]:
                t = streams.pop(i, None)
                if t is not None:
                    t.close()
            reply({"closed": len(cmd["ids"])})
        elif op == "start":
            reply(window.start())
        elif op == "stop":
            reply(window.stop())
        elif op == "quit":
            quit_()

    def quit_() -> None:
        commands.close()
        for t in streams.values():
            t.close()
        loop.call_later(0.05, loop.stop)

    commands = Commands(loop, handle, quit_)
    reply({"ready": True})
    loop.run_forever()
    loop.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.media_server")
    p.add_argument("--impl", required=True, choices=("imedia", "raw"))
    p.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--cprofile", default=None, help="write a cProfile of the windows here")
    p.add_argument("--mark", action="store_true", help="call getppid() on start and stop")
    args = p.parse_args(argv)
    pin(args.cpu)
    from .servers import settle_malloc

    settle_malloc()
    return imedia_server(args) if args.impl == "imedia" else raw_server(args)


if __name__ == "__main__":
    sys.exit(main())
