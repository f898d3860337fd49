"""The media benchmark's load generator: N paced SRTP streams over loopback, each echo
checked.

    python -m benchmarks.media_client [--cpu N] [--loop uvloop]

One process, one UDP socket on 127.0.0.1 for every stream (the server gives each stream
a port of its own; the generator tells its streams apart by the server's address), read
with the loop's `add_reader` and written with `sendto`. It keeps no library state on its
hot path: bytes made beforehand, a few struct calls, pylibsrtp for the sampled checks.

Toward an IMedia server each stream is an ice-lite peer (it answers the server's
connectivity and consent checks, sends none) and the DTLS server (the library's sans-IO
DTLS engine, `_dtls_core`, offering only the benchmark's SRTP profile and pinning the
server's certificate fingerprint); its SRTP keys come from that handshake. Toward the raw
server the keys come from the shared seed (`media_wire.raw_keys`).

A run sends the first `count` streams' packets, 50 a second each, the streams' phases
spread evenly over the 20 ms period, for a warm-up then the measured seconds. Every
packet of the run is made (numbered, tagged, SRTP-protected) before the first goes, so
during the run a send is one `sendto`, and the generator notes each packet's send time.
An echo is matched to its packet by its RTP timestamp (the servers echo it; SRTP leaves
the header in the clear), and timed by the kernel's arrival stamp (SO_TIMESTAMPNS), so
the generator's own delays in reading do not make it late; one echo in `check_every` of
each stream (at a phase drawn for each run; every one with 1), and each stream's first,
is also decrypted and checked (payload intact, the stream's own tag, the packet its
timestamp names). A measured packet
whose echo comes more than `late` seconds after it was sent is late, one whose echo has
not come `grace` seconds after the last send is lost, one echoed twice a duplicate. The
generator also reports its own CPU use, how far behind its schedule it fell, and the
echoes its socket dropped (the run then measured the generator, not the server).

Commands (one JSON line each on stdin; each answered with JSON lines on stdout):

- ``{"cmd": "expect", "impl": "imedia"|"raw", "streams": [...], "seed", "profile"}``:
  the server's new streams (id, port; imedia: ufrag, pwd, fingerprint). imedia: answers
  this side's fingerprint and each stream's ufrag and pwd (the answer to the offer).
- ``{"cmd": "keys", "ids": [...], "timeout": s}``: answers once those streams have their
  SRTP keys (or failed, or the time is up); with ``"probe": true`` each stream sends one
  packet as soon as it has its keys and the answer waits for its echo (the set-up time).
- ``{"cmd": "drop", "ids": [...]}``: forget those streams.
- ``{"cmd": "counters"}``: answers the counters (STUN requests answered, RTCP packets
  and bad, stale (echoes of a run that is over), foreign or other datagrams received).
- ``{"cmd": "quiet", "for": s, "timeout": s}``: answers once no echo has come for
  ``for`` seconds (or the timeout is up).
- ``{"cmd": "run", "count", "seconds", "warmup", "late", "grace"}``: answers
  ``{"phase": "measure"}`` when the measured part begins, ``{"phase": "end"}`` when the
  last packet is sent, then the result.
- ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import resource
import secrets
import socket
import struct
import sys
import time
from array import array
from typing import Any

from .media_wire import (
    AUTH_TAG,
    FILLER,
    FRAME,
    PAYLOAD,
    PERIOD,
    RTP,
    TAG,
    TS,
    Commands,
    pin,
    raw_keys,
    reply,
    runq_wait,
    srtp_session,
)

HOST = "127.0.0.1"
SOCKET_BUFFER = 4 << 20
"""SO_RCVBUF and SO_SNDBUF of the generator's socket (the kernel caps them at rmem_max)."""
HIST_STEP = 0.0001
"""Round-trip histogram bucket: 0.1 ms."""
HIST_SIZE = 20000
"""Buckets: up to 2 s (a longer one is counted in the last)."""
TICK = 0.001
"""The shortest sleep between two batches of sends (a shorter one spins on uvloop, whose
timers count whole milliseconds): packets due meanwhile go out together."""
BEHIND = 0.010
"""A send more than this late against its schedule counts as the generator falling behind."""
SO_TIMESTAMPNS = 35
"""Linux's socket option that stamps each datagram with its arrival (struct timespec)."""
TIMESPEC = struct.Struct("@qq")
ANC_SPACE = socket.CMSG_SPACE(TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
RECV_BATCH = 256
"""Datagrams read at most per readiness of the socket (then the sends get their turn)."""
DRAIN_ROUNDS = 16
"""`drain` reads at most this many batches at a tick (4,096 datagrams)."""
CHECK_EVERY_MAX = 64
"""The sparsest full check: at least one echo in this many of each stream is decrypted."""


class Stream:
    """One stream's state on the generator's side."""

    __slots__ = (
        "addr",
        "dtls",
        "error",
        "first_echo",
        "keyed_at",
        "mfirst",
        "n",
        "phase",
        "pkts",
        "probe",
        "pwd",
        "remote_fp",
        "rx",
        "seen",
        "sent_at",
        "sid",
        "ssrc",
        "ts0",
        "tsbase",
        "tx",
        "ufrag",
    )

    def __init__(self, sid: int, addr: tuple[str, int]) -> None:
        self.sid = sid
        self.addr = addr
        self.ssrc = random.getrandbits(32)
        self.ts0 = random.getrandbits(32)
        self.n = random.getrandbits(15)  # the first packet number (and sequence number)
        self.tx: Any = None
        self.rx: Any = None
        self.ufrag = ""
        self.pwd = ""
        self.remote_fp: bytes | None = None
        self.dtls: Any = None
        self.error: str | None = None
        self.keyed_at = 0.0
        self.first_echo = 0.0
        self.probe = False
        self.phase = 0  # which of its echoes are decrypted (drawn for each run)
        # a run's packets, made before it: protected datagrams, their send times, which
        # came back, the run's first packet number and its RTP timestamp, the first
        # measured packet's index
        self.pkts: list[bytes] = []
        self.sent_at = array("d")
        self.seen = bytearray()
        self.tsbase = 0
        self.mfirst = -1


class Run:
    """The counters of one run."""

    def __init__(self, count: int, slots: int, late: float, check_every: int) -> None:
        self.count = count
        self.slots = slots
        self.late_after = late
        self.check_every = check_every
        self.sent = 0
        self.received = 0
        self.late = 0
        self.duplicate = 0
        self.decrypted = 0
        self.hist = [0] * HIST_SIZE
        self.lag_max = 0.0
        self.behind = 0
        self.send_failed = 0


class Generator:
    """The streams, their one socket (read with `add_reader`, written with `sendto`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, profile: str) -> None:
        import pylibsrtp

        from usocket_asyncio._context import default_server_cert
        from usocket_asyncio._dtls_core import DtlsConfig

        self.loop = loop
        self.sock = sock
        self.srtp_error = pylibsrtp.Error
        self.by_addr: dict[tuple[str, int], Stream] = {}
        self.by_id: dict[int, Stream] = {}
        cert = default_server_cert()
        self.fingerprint = "sha-256 " + hashlib.sha256(cert.leaf_der).digest().hex(":").upper()
        self.profile = profile
        self.dtls_config = DtlsConfig(True, cert.pem, use_srtp=True, srtp_profiles=profile.encode())
        self.dtls_timer: asyncio.TimerHandle | None = None
        self.counters = {
            "stun_answered": 0,
            "rtcp": 0,
            "bad": 0,
            "stale": 0,
            "foreign": 0,
            "other": 0,
        }
        self.bad_why: dict[str, int] = {}
        self.last_echo = 0.0
        """When the last RTP echo came (monotonic): `quiet` waits for the echoes to stop."""
        self.run: Run | None = None
        self.echo_size = RTP.size + PAYLOAD + AUTH_TAG[profile]
        self.kernel_stamps = False
        if sys.platform.startswith("linux"):
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.kernel_stamps = True
            except OSError:
                pass
        loop.add_reader(sock.fileno(), self.readable)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    # ------------------------------------------------------------------ datagrams

    def sendto(self, data: bytes, addr: tuple[str, int]) -> bool:
        try:
            self.sock.sendto(data, addr)
        except OSError:  # the send buffer is full (or the kernel refused): the generator's
            return False
        return True

    def drain(self) -> None:
        """Read every datagram waiting (a run polls its socket at each tick instead of
        being woken for each echo: the kernel stamped each echo's arrival, so reading it
        up to a tick later changes no figure, and the wake-ups, one per echo, cost more
        than the reading)."""
        for _ in range(DRAIN_ROUNDS):
            if self.readable():
                return

    def readable(self) -> bool:
        """Every datagram waiting (up to a bound, so the sends get their turn). An echo
        during a run is told by its RTP timestamp, sent in the clear (the servers echo
        it unchanged): its stream by its source address, its packet by the timestamp;
        every `check_every`-th packet of a stream, and each stream's first echo, is also
        decrypted and checked in full (`check`). Its arrival time is the kernel's
        (SO_TIMESTAMPNS, where there is one): when the generator reads it late, the
        server is not blamed for that."""
        recvmsg = self.sock.recvmsg
        stamped = self.kernel_stamps
        by_addr = self.by_addr
        ts_of = TS.unpack_from
        stamp_of = TIMESPEC.unpack
        mono = time.monotonic
        # the kernel stamps arrivals on the real-time clock; the run's clock is monotonic
        offset = time.time() - mono()
        run = self.run
        for _ in range(RECV_BATCH):
            try:
                data, anc, _flags, addr = recvmsg(2048, ANC_SPACE)
            except BlockingIOError:
                return True
            except OSError:
                self.counters["other"] += 1
                return True
            st = by_addr.get(addr)
            if st is None:
                self.counters["foreign"] += 1
                continue
            b = data[0]
            if not 128 <= b <= 191:
                if b < 4:
                    self.stun(st, data, addr)
                elif 20 <= b <= 63:
                    self.dtls_in(st, data, addr)
                else:
                    self.counters["other"] += 1
                continue
            if 192 <= data[1] <= 223:
                self.counters["rtcp"] += 1  # the server's reports: not echoes
                continue
            if stamped and anc:
                sec, nsec = stamp_of(anc[0][2])
                now = sec + nsec * 1e-9 - offset
            else:
                now = mono()
            self.last_echo = now
            if run is None:
                if st.first_echo == 0.0:
                    self.check(st, data, now, -1)
                else:  # an echo of a run that is over (counted lost there)
                    self.counters["stale"] += 1
                continue
            d = (ts_of(data, 4)[0] - st.tsbase) & 0xFFFFFFFF
            if d >= 1 << 31:  # before this run's first packet: an echo of a run before
                self.counters["stale"] += 1
                continue
            j, r = divmod(d, FRAME)
            if r or j >= run.slots or len(data) != self.echo_size:
                self.bad("timestamp or size")
                continue
            mfirst = st.mfirst
            measured = 0 <= mfirst <= j
            seen = st.seen
            if measured and seen[j]:
                run.duplicate += 1  # (SRTP would refuse it as a replay)
                continue
            every = run.check_every
            if (st.first_echo == 0.0 or j % every == st.phase) and not self.check(st, data, now, j):
                continue
            if not measured:
                continue  # a warm-up packet's echo
            seen[j] = 1
            rtt = now - st.sent_at[j]
            run.received += 1
            if rtt > run.late_after:
                run.late += 1
            k = int(rtt / HIST_STEP)
            run.hist[k if k < HIST_SIZE else HIST_SIZE - 1] += 1
        return False

    def check(self, st: Stream, data: bytes, now: float, j: int) -> bool:
        """Decrypt one echo and check it in full: it authenticates under the server's
        key, its payload is the test payload, its tag names this stream, and (in a run,
        `j` >= 0) the packet its timestamp says it is. False (counted bad) if not."""
        run = self.run
        try:
            pkt = st.rx.unprotect(data)
        except (self.srtp_error, AttributeError) as e:
            return self.bad(f"SRTP: {e}")
        b0 = pkt[0]
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            start += 4 + 4 * int.from_bytes(pkt[start + 2 : start + 4], "big")
        if len(pkt) - start != PAYLOAD or pkt[start + TAG.size :] != FILLER:
            return self.bad("payload")
        sid, n = TAG.unpack_from(pkt, start)
        ts = TS.unpack_from(pkt, 4)[0]
        if sid != st.sid or ts != (st.ts0 + n * FRAME) & 0xFFFFFFFF:
            return self.bad("tag")
        if st.first_echo == 0.0:
            st.first_echo = now
        if run is not None:
            run.decrypted += 1
            if j >= 0 and n != st.n - len(st.pkts) + j:
                return self.bad("packet number")
        return True

    def bad(self, why: str) -> bool:
        """Count a bad echo (and why: `bad_why`); False."""
        self.counters["bad"] += 1
        self.bad_why[why] = self.bad_why.get(why, 0) + 1
        return False

    # ------------------------------------------------------------------ ice-lite

    def stun(self, st: Stream, data: bytes, addr: tuple[str, int]) -> None:
        from usocket_asyncio._stun import (
            BINDING,
            REQUEST,
            SUCCESS,
            StunError,
            StunMessage,
            check_integrity,
            encode,
            parse,
        )

        try:
            msg = parse(data)
        except StunError:
            self.counters["other"] += 1
            return
        key = st.pwd.encode()
        if msg.cls != REQUEST or not (msg.username or "").startswith(st.ufrag + ":"):
            return
        if not check_integrity(msg, key):
            return
        answer = StunMessage(BINDING, SUCCESS, msg.transaction_id, xor_mapped_address=addr)
        self.sendto(encode(answer, key), addr)
        self.counters["stun_answered"] += 1

    # ------------------------------------------------------------------ DTLS server

    def dtls_in(self, st: Stream, data: bytes, addr: tuple[str, int]) -> None:
        from usocket_asyncio._dtls_core import DtlsConnection

        now = time.monotonic()
        if st.dtls is None:
            if st.remote_fp is None:
                self.counters["other"] += 1
                return
            st.dtls = DtlsConnection(
                self.dtls_config, peer=addr, cookie=False, fingerprint=st.remote_fp
            )
            st.dtls.start(now)
        st.dtls.receive_datagram(data, now, addr)
        self.dtls_pump(st)

    def dtls_pump(self, st: Stream) -> None:
        from usocket_asyncio import SrtpKeys
        from usocket_asyncio._dtls_core import ConnectionFailed, HandshakeCompleted

        conn = st.dtls
        for d in conn.datagrams_to_send():
            self.sendto(d, st.addr)
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, HandshakeCompleted):
                if ev.srtp_keys is None or ev.srtp_profile != self.profile:
                    st.error = f"DTLS agreed {ev.srtp_profile}, not {self.profile}"
                    continue
                lk, ls, rk, rs = SrtpKeys(ev.srtp_keys, ev.srtp_profile, True)
                st.tx = srtp_session(lk + ls, self.profile, True)
                st.rx = srtp_session(rk + rs, self.profile, False)
                st.keyed_at = time.monotonic()
                if st.probe:
                    self.send_one(st)
            elif isinstance(ev, ConnectionFailed):
                st.error = f"DTLS failed: {ev}"
        if conn.get_timer() is not None and self.dtls_timer is None:
            self.dtls_timer = self.loop.call_later(0.05, self.dtls_tick)

    def dtls_tick(self) -> None:
        self.dtls_timer = None
        now = time.monotonic()
        for st in list(self.by_id.values()):
            conn = st.dtls
            if conn is None:
                continue
            at = conn.get_timer()
            if at is not None and at <= now:
                conn.handle_timer(now)
                self.dtls_pump(st)
            elif at is not None and self.dtls_timer is None:
                self.dtls_timer = self.loop.call_later(0.05, self.dtls_tick)

    # ------------------------------------------------------------------ sending

    def packet(self, st: Stream, m: int) -> bytes:
        """Packet number `m` of stream `st`, protected."""
        header = RTP.pack(0x80, 0, m & 0xFFFF, (st.ts0 + m * FRAME) & 0xFFFFFFFF, st.ssrc)
        return bytes(st.tx.protect(header + TAG.pack(st.sid, m) + FILLER))

    def send_one(self, st: Stream) -> None:
        m = st.n
        st.n = m + 1
        self.sendto(self.packet(st, m), st.addr)

    async def run_streams(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """One run (see the module docstring). Every packet of the run is made (numbered,
        tagged, SRTP-protected) before its first one goes: during the run, sending one
        is a `sendto` of bytes ready, so the generator's cost per packet is the least it
        can be and the server is what is measured."""
        count, seconds, warmup = cmd["count"], cmd["seconds"], cmd["warmup"]
        check_every = max(1, min(int(cmd.get("check_every", 1)), CHECK_EVERY_MAX))
        active = [self.by_id[i] for i in sorted(self.by_id)][:count]
        if len(active) < count or any(st.tx is None for st in active):
            return {"error": f"{count} keyed streams wanted, {len(active)} known"}
        slots = math.ceil((warmup + seconds) / PERIOD) + 2
        t_make = time.monotonic()
        for st in active:
            base = st.n
            st.pkts = [self.packet(st, m) for m in range(base, base + slots)]
            st.n = base + slots
            st.tsbase = (st.ts0 + base * FRAME) & 0xFFFFFFFF
            st.sent_at = array("d", bytes(8 * slots))
            st.seen = bytearray(slots)
            st.mfirst = -1
            st.phase = random.randrange(check_every)  # which of its echoes are decrypted
        make_s = time.monotonic() - t_make
        drops0 = socket_drops(self.sock)
        counters0 = dict(self.counters)
        run = Run(count, slots, cmd["late"], check_every)
        self.run = run
        self.loop.remove_reader(self.sock.fileno())  # polled at each tick (`drain`)
        t0 = time.monotonic() + 0.005
        t_measure = t0 + warmup
        t_end = t_measure + seconds
        step = PERIOD / count
        send = self.sock.sendto
        mono = time.monotonic
        k = 0
        cycle = 0
        due = t0
        measuring = False
        ru0: Any = None
        q0 = 0.0
        w0 = 0.0
        while due < t_end:
            now = mono()
            if not measuring and now >= t_measure:
                measuring = True
                reply({"phase": "measure"})
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                q0 = runq_wait()
                w0 = now
            while due <= now and due < t_end:
                st = active[k]
                t = mono()
                try:
                    send(st.pkts[cycle], st.addr)
                except OSError:
                    run.send_failed += 1
                st.sent_at[cycle] = t
                if due >= t_measure:
                    if st.mfirst < 0:
                        st.mfirst = cycle
                    run.sent += 1
                    lag = t - due
                    if lag > BEHIND:
                        run.behind += 1
                        if lag > run.lag_max:
                            run.lag_max = lag
                k += 1
                if k == count:
                    k = 0
                    cycle += 1
                    due = t0 + cycle * PERIOD
                else:
                    due = t0 + cycle * PERIOD + k * step
            self.drain()
            await asyncio.sleep(max(TICK, due - mono()))
        reply({"phase": "end"})
        t1 = time.monotonic()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        q1 = runq_wait()
        t_grace = mono() + cmd["grace"]
        while mono() < t_grace:
            self.drain()
            await asyncio.sleep(TICK)
        self.drain()
        self.loop.add_reader(self.sock.fileno(), self.readable)
        self.run = None
        for st in active:
            st.mfirst = -1
            st.pkts = []
        if ru0 is None:  # no measured part (seconds 0)
            ru0, q0 = ru1, q1
            w0 = t1
        cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        wall = max(t1 - w0, 1e-9)
        return {
            "count": count,
            "seconds": wall,
            "sent": run.sent,
            "received": run.received,
            "late": run.late,
            "lost": run.sent - run.received,
            "duplicate": run.duplicate,
            "decrypted": run.decrypted,
            "check_every": check_every,
            "rtt_ms": percentiles(run.hist),
            "behind": run.behind,
            "lag_max_ms": run.lag_max * 1000,
            "send_failed": run.send_failed,
            "client_cpu": cpu / wall,
            "client_user": (ru1.ru_utime - ru0.ru_utime) / wall,
            "client_runq_wait": (q1 - q0) / wall,
            "client_drops": socket_drops(self.sock) - drops0,
            "make_s": make_s,
            "counters": {k: v - counters0[k] for k, v in self.counters.items()},
            "bad_why": dict(self.bad_why),
        }

    # ------------------------------------------------------------------ commands

    def expect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from usocket_asyncio._media import _fingerprint

        impl = cmd["impl"]
        out = []
        for s in cmd["streams"]:
            st = Stream(s["id"], (HOST, s["port"]))
            self.by_addr[st.addr] = st
            self.by_id[st.sid] = st
            if impl == "raw":
                seed, profile = cmd["seed"], cmd["profile"]
                st.tx = srtp_session(raw_keys(seed, st.sid, "up", profile), profile, True)
                st.rx = srtp_session(raw_keys(seed, st.sid, "down", profile), profile, False)
                st.keyed_at = time.monotonic()
                continue
            fp = _fingerprint(s["fingerprint"])
            st.remote_fp = fp[1] if fp is not None else None
            st.ufrag = "g" + secrets.token_hex(4)
            st.pwd = secrets.token_hex(12)
            st.probe = bool(cmd.get("probe"))
            out.append({"id": st.sid, "ufrag": st.ufrag, "pwd": st.pwd})
        return {"fingerprint": self.fingerprint, "streams": out}

    async def quiet(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Wait until no echo has come for `for` seconds (a server still working off the
        backlog of a run it could not carry would weigh on the next), at most `timeout`."""
        t0 = time.monotonic()
        deadline = t0 + cmd.get("timeout", 30.0)
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_echo >= cmd["for"]:
                break
            await asyncio.sleep(0.05)
        return {"waited": time.monotonic() - t0, "stale": self.counters["stale"]}

    async def keys(self, cmd: dict[str, Any]) -> dict[str, Any]:
        ids = cmd["ids"]
        probe = bool(cmd.get("probe"))
        deadline = time.monotonic() + cmd.get("timeout", 60.0)

        def done(st: Stream) -> bool:
            if st.error is not None:
                return True
            return st.first_echo != 0.0 if probe else st.tx is not None

        while time.monotonic() < deadline:
            if all(done(self.by_id[i]) for i in ids):
                break
            await asyncio.sleep(0.01)
        sts = [self.by_id[i] for i in ids]
        return {
            "keyed": sum(1 for st in sts if st.tx is not None),
            "errors": [st.error for st in sts if st.error is not None][:5],
            "times": [[st.keyed_at, st.first_echo] for st in sts],
        }

    def drop(self, ids: list[int]) -> None:
        for i in ids:
            st = self.by_id.pop(i, None)
            if st is not None:
                self.by_addr.pop(st.addr, None)


def socket_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped because this UDP socket's receive buffer was full
    (the last column of its line in /proc/net/udp; -1 where that cannot be read)."""
    port = sock.getsockname()[1]
    inode = os.fstat(sock.fileno()).st_ino
    try:
        with open("/proc/net/udp") as f:
            for line in f:
                cols = line.split()
                if len(cols) >= 13 and cols[1].endswith(f":{port:04X}") and cols[9] == str(inode):
                    return int(cols[12])
    except OSError:
        pass
    return -1


def percentiles(hist: list[int]) -> dict[str, float]:
    """p50, p99 and max of a round-trip histogram, in ms (0 when empty)."""
    total = sum(hist)
    out = {"p50": 0.0, "p99": 0.0, "max": 0.0}
    if not total:
        return out
    marks = [("p50", 0.5), ("p99", 0.99)]
    acc = 0
    for k, c in enumerate(hist):
        if not c:
            continue
        acc += c
        while marks and acc >= marks[0][1] * total:
            out[marks.pop(0)[0]] = (k + 1) * HIST_STEP * 1000
        out["max"] = (k + 1) * HIST_STEP * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.media_client")
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--loop", default="uvloop", choices=("asyncio", "uvloop"))
    p.add_argument("--profile", default="SRTP_AES128_CM_SHA1_80")
    args = p.parse_args(argv)
    pin(args.cpu)
    from .servers import new_loop

    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    addr = sock.getsockname()
    gen = Generator(loop, sock, args.profile)

    tasks: set[asyncio.Task[None]] = set()

    async def serve(cmd: dict[str, Any]) -> None:
        op = cmd["cmd"]
        if op == "run":
            try:
                reply(await gen.run_streams(cmd))
            finally:  # woken by each datagram again (the set-ups' handshakes want it)
                loop.add_reader(sock.fileno(), gen.readable)
        elif op == "keys":
            reply(await gen.keys(cmd))
        elif op == "quiet":
            reply(await gen.quiet(cmd))

    def handle(cmd: dict[str, Any]) -> None:
        op = cmd["cmd"]
        if op == "expect":
            reply(gen.expect(cmd))
        elif op == "drop":
            gen.drop(cmd["ids"])
            reply({"dropped": len(cmd["ids"])})
        elif op == "counters":
            reply(dict(gen.counters))
        elif op in ("run", "keys", "quiet"):
            task = loop.create_task(serve(cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif op == "quit":
            commands.close()
            loop.call_soon(loop.stop)

    commands = Commands(loop, handle, loop.stop)
    reply({"ready": True, "addr": list(addr)})
    loop.run_forever()
    gen.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
