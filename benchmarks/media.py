"""Media: N concurrent SRTP audio streams echoed by IMedia endpoints, against a raw asyncio
`DatagramProtocol` that does the same per-packet work with pylibsrtp.

    python -m benchmarks.media [--quick] [--loops asyncio,uvloop] [--json PATH]

For each loop kind, two server processes run side by side, pinned to the same CPU
(benchmarks/media_server.py): IMedia echo endpoints (one per stream, each its own UDP
port; ICE, DTLS-SRTP, RTP/RTCP and consent are the library's, as in a real call), and the
raw reference (one `DatagramProtocol` per stream and port, keyed directly from a shared
seed: unprotect, parse the header, a new header on the payload, protect, send back).
Each has its own load generator process, pinned to the other CPU
(benchmarks/media_client.py): N streams of 50 packets/s, SRTP both ways, 160-byte
payloads; every echo is matched to its packet by its RTP timestamp (in the clear) and
timed by the kernel's arrival stamp, and every echo in the paired windows (one in
`--check-every` of each stream in the capacity search) is also decrypted and checked in
full; echoes more than `--late-ms` after their packet count as late, missing ones as lost.

Three measurements, per loop:

1. Packets per server CPU second, paired: at `--streams` streams, `--windows` windows,
   each measuring both servers back to back (the order shuffled with a fixed seed); a
   window's figure is the packets the server echoed over the CPU time (user + system)
   it used meanwhile, and its ratio IMedia / raw the figure that counts: the median of
   the windows' ratios and its spread (IQR, min-max).
2. Capacity: the largest N whose echoes come back with under 1 % late or lost, for each
   server: N doubles from `--start` up to `--cap`, then bisects between the last N that
   passed and the first that failed (to within `--resolution`), each step `--step-seconds`
   of traffic after a warm-up. The streams are opened (IMedia: ICE and DTLS-SRTP each) or
   closed between steps so that exactly N exist, and each step waits until the server
   has worked off the step before. A failed step that the generator may have failed
   (the echoes its own socket dropped would make it pass, or it used nearly all of its
   CPU) and a passed step that carried less than N (the generator fell behind its
   schedule or its sends failed) are marked, and so is a capacity they decided. The
   generator makes every packet of a step before it, so sending costs it a `sendto`;
   during a run it reads its socket at each tick (the kernel stamps each echo's
   arrival), not woken for each echo. On the 2-core machine of the figures a packet out
   and back costs it about three quarters of what an echo costs the raw server. Each
   step also reports how long the server and the generator waited for their CPUs
   (other work had them); more than `RUNQ_BUSY` of the step is marked too.
3. Set-up: `--setups` IMedia calls made one at a time: Initialize to the config (the
   offer), then Connect (with the generator's answer) to the first echo decrypted by the
   generator (ICE, the DTLS-SRTP handshake, one packet each way). The signalling hop
   between the processes is left out.

The JSON of every window and step goes to benchmarks/results/media-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .proc import Child, ChildError, cpus
from .servers import comma_list
from .stats import spread

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOOPS = ("asyncio", "uvloop")
IMPLS = ("imedia", "raw")
OPEN_CHUNK = 200
"""Streams opened at once (IMedia: that many ICE and DTLS handshakes under way)."""
LOSS_LIMIT = 0.01
"""A step passes with fewer late or lost packets than this share."""
RUNQ_BUSY = 0.05
"""A server or generator that waited this share of a step for its CPU (other work had
it) shared its core: the step measured the machine's load too."""
QUIET = 0.3
"""Seconds without an echo before a run starts."""
CLIENT_BUSY = 0.9
"""A load generator using this share of its CPU or more may be what limits a step."""
TARGET_RATIO = 0.8
TARGET_STREAMS = 2000

FULL = {
    "streams": 100,
    "windows": 10,
    "seconds": 3.0,
    "warmup": 0.5,
    "start": 100,
    "cap": 3000,
    "step_seconds": 3.0,
    "resolution": 0.1,
    "setups": 10,
    "search_budget": 150.0,
}
QUICK = {
    "streams": 50,
    "windows": 5,
    "seconds": 1.0,
    "warmup": 0.3,
    "start": 50,
    "cap": 400,
    "step_seconds": 1.5,
    "resolution": 0.25,
    "setups": 3,
    "search_budget": 60.0,
}


class Pair:
    """One server process and its load generator."""

    def __init__(
        self,
        impl: str,
        loop: str,
        scpu: int | None,
        ccpu: int | None,
        profile: str,
        cprofile: Path | None = None,
        wrap: list[str] | None = None,
    ) -> None:
        self.impl = impl
        self.loop = loop
        self.profile = profile
        argv = [*(wrap or []), sys.executable, "-m", "benchmarks.media_server"]
        argv += ["--impl", impl, "--loop", loop]
        if wrap:
            argv.append("--mark")
        if scpu is not None:
            argv += ["--cpu", str(scpu)]
        if cprofile is not None:
            argv += ["--cprofile", str(cprofile / f"{impl}-{loop}.prof")]
        self.server = Child(argv, f"{impl} server ({loop})")
        argv = [sys.executable, "-m", "benchmarks.media_client", "--profile", profile]
        if ccpu is not None:
            argv += ["--cpu", str(ccpu)]
        self.client = Child(argv, f"{impl} load generator ({loop})")
        self.ids: list[int] = []
        self.seed = random.getrandbits(32)
        try:
            ask(self.server, None, 30)
            self.addr = ask(self.client, None, 30)["addr"]
        except ChildError:
            self.close()
            raise

    def close(self) -> None:
        for child in (self.client, self.server):
            if child.proc.poll() is None:
                try:
                    child.send(json.dumps({"cmd": "quit"}))
                    child.proc.wait(timeout=10)
                except (ChildError, OSError, Exception):
                    child.proc.kill()
                    child.proc.wait()
            for f in (child.proc.stdin, child.proc.stdout):
                if f is not None:
                    f.close()

    # ------------------------------------------------------------------ streams

    def open(self, count: int, probe: bool = False) -> dict[str, Any]:
        """`count` more streams, connected and keyed on both sides; the server's and the
        generator's times of the last chunk (for the set-up figures)."""
        last: dict[str, Any] = {}
        while count > 0:
            m = min(count, OPEN_CHUNK)
            count -= m
            timeout = 60 + m * 0.2
            if self.impl == "raw":
                got = ask(
                    self.server,
                    {
                        "cmd": "open",
                        "count": m,
                        "peer": self.addr,
                        "seed": self.seed,
                        "profile": self.profile,
                    },
                    timeout,
                )
                streams = got["streams"]
                ask(
                    self.client,
                    {
                        "cmd": "expect",
                        "impl": "raw",
                        "streams": streams,
                        "seed": self.seed,
                        "profile": self.profile,
                    },
                    timeout,
                )
                self.ids += [s["id"] for s in streams]
                continue
            got = ask(self.server, {"cmd": "open", "count": m}, timeout)
            streams = got["streams"]
            bad = [s for s in streams if "error" in s]
            if bad:
                raise ChildError(f"IMedia Initialize failed for {len(bad)} of {m} streams")
            answer = ask(
                self.client,
                {"cmd": "expect", "impl": "imedia", "streams": streams, "probe": probe},
                timeout,
            )
            ids = [s["id"] for s in streams]
            self.ids += ids
            conn = ask(
                self.server,
                {
                    "cmd": "connect",
                    "peer": self.addr,
                    "fingerprint": answer["fingerprint"],
                    "streams": answer["streams"],
                },
                timeout,
            )
            if conn["connected"] != m:
                raise ChildError(f"{m - conn['connected']} IMedia streams failed: {conn['errors']}")
            keys = ask(self.client, {"cmd": "keys", "ids": ids, "probe": probe, "timeout": 30}, 40)
            if keys["keyed"] != m or keys["errors"]:
                raise ChildError(f"the generator keyed {keys['keyed']} of {m}: {keys['errors']}")
            last = {"server": conn["times"], "client": keys["times"]}
        return last

    def resize(self, n: int) -> float:
        """Exactly `n` streams open; the seconds it took."""
        t = time.monotonic()
        if n > len(self.ids):
            self.open(n - len(self.ids))
        elif n < len(self.ids):
            gone, self.ids = self.ids[n:], self.ids[:n]
            ask(self.server, {"cmd": "close", "ids": gone}, 60)
            ask(self.client, {"cmd": "drop", "ids": gone}, 30)
        return time.monotonic() - t

    # ------------------------------------------------------------------ traffic

    def window(
        self,
        n: int,
        seconds: float,
        warmup: float,
        late: float,
        grace: float,
        check_every: int = 1,
    ) -> dict[str, Any]:
        """One measured run of the first `n` streams: the generator's figures and the
        server's CPU over the measured part."""
        resize_s = self.resize(n)
        # the server has worked off what a run before left it (after one it could not
        # carry, seconds of packets wait in its sockets)
        settle = ask(self.client, {"cmd": "quiet", "for": QUIET, "timeout": 60}, 70)
        cmd = {
            "cmd": "run",
            "count": n,
            "seconds": seconds,
            "warmup": warmup,
            "late": late,
            "grace": grace,
            "check_every": check_every,
        }
        self.client.send(json.dumps(cmd))
        # the generator makes every packet of the run first (about 5 us each)
        timeout = warmup + seconds + grace + 30 + n * (warmup + seconds) * 50 * 20e-6
        first = json.loads(self.client.recv(timeout))
        if "error" in first:
            raise ChildError(f"{self.client.name}: {first['error']}")
        if first.get("phase") != "measure":
            raise ChildError(f"{self.client.name}: expected the measured phase, got {first}")
        ask(self.server, {"cmd": "start"}, 10)
        end = json.loads(self.client.recv(timeout))
        if end.get("phase") != "end":
            raise ChildError(f"{self.client.name}: expected the end, got {end}")
        usage = ask(self.server, {"cmd": "stop"}, 10)
        result: dict[str, Any] = json.loads(self.client.recv(timeout))
        result["server"] = usage
        cpu = max(usage["cpu"], 1e-9)
        result["pkt_per_cpu_s"] = usage["echoed"] / cpu
        result["us_per_pkt"] = cpu / max(usage["echoed"], 1) * 1e6
        result["server_cpu_share"] = usage["cpu"] / max(usage["wall"], 1e-9)
        # the share of the window the server was runnable but another task had its CPU
        result["server_runq_wait"] = usage["runq_wait"] / max(usage["wall"], 1e-9)
        result["machine_busy"] = max(result["server_runq_wait"], result["client_runq_wait"]) > (
            RUNQ_BUSY
        )
        sent = max(result["sent"], 1)
        result["bad_share"] = (result["late"] + result["lost"]) / sent
        result["resize_s"] = resize_s
        result["settle_s"] = settle["waited"]
        # What the generator may have done to the step. An echo's lateness is the
        # kernel's arrival against the packet's actual send: neither a send the
        # generator made late nor an echo it read late makes an echo late. What it can
        # do: offer less than the load (it fell behind its schedule, a send failed, it
        # ran out of CPU): a pass is then at less than N; or lose echoes in its own
        # receive buffer: a failure may then be its own. `client_limited`: whichever
        # of these applies to the step's outcome.
        faults = result["client_drops"] + result["send_failed"]
        busy = result["client_cpu"] >= CLIENT_BUSY
        result["underloaded"] = busy or result["behind"] > 0.001 * sent or faults > 0.001 * sent
        result["own_failure"] = (
            busy or (result["late"] + result["lost"] - faults) / sent < LOSS_LIMIT
        )
        result["client_limited"] = (
            result["own_failure"] if result["bad_share"] >= LOSS_LIMIT else result["underloaded"]
        )
        return result


def ask(child: Child, obj: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    """Send one command (None: only read) and read its JSON answer."""
    if obj is not None:
        child.send(json.dumps(obj))
    line = child.recv(timeout)
    try:
        out: dict[str, Any] = json.loads(line)
    except json.JSONDecodeError as e:
        raise ChildError(f"{child.name}: {line!r}") from e
    if "error" in out and obj is not None and obj.get("cmd") != "open":
        raise ChildError(f"{child.name}: {out['error']}")
    return out


# --------------------------------------------------------------------------- the phases


def setups(pair: Pair, count: int) -> list[dict[str, float]]:
    """`count` IMedia calls set up one at a time (see the module docstring), after one
    that is not kept (the first call of a process also imports and makes what the others
    reuse)."""
    out = []
    for i in range(count + 1):
        got = pair.open(1, probe=True)
        t_init, t_ready, t_connect, t_connected = got["server"][0]
        _keyed, first_echo = got["client"][0]
        if i == 0:
            pair.resize(len(pair.ids) - 1)
            continue
        out.append(
            {
                "initialize_ms": (t_ready - t_init) * 1000,
                "connect_ms": (t_connected - t_connect) * 1000,
                "first_echo_ms": (first_echo - t_connect) * 1000,
                "total_ms": (t_ready - t_init + first_echo - t_connect) * 1000,
            }
        )
        pair.resize(len(pair.ids) - 1)
    return out


def idle(pair: Pair, n: int, seconds: float) -> dict[str, Any]:
    """The server's CPU with `n` connected streams and no media for `seconds`: what the
    streams cost by themselves (IMedia: consent checks, RTCP reports, statistics and
    the timers behind them)."""
    resize_s = pair.resize(n)
    time.sleep(1.0)  # the last streams' set-up over
    c0 = ask(pair.client, {"cmd": "counters"}, 10)
    ask(pair.server, {"cmd": "start"}, 10)
    time.sleep(seconds)
    usage = ask(pair.server, {"cmd": "stop"}, 10)
    c1 = ask(pair.client, {"cmd": "counters"}, 10)
    wall = max(usage["wall"], 1e-9)
    return {
        "streams": n,
        "open_s": resize_s,
        "server": usage,
        "server_cpu_share": usage["cpu"] / wall,
        "us_per_stream_s": usage["cpu"] / wall / max(n, 1) * 1e6,
        "consent_per_s": (c1["stun_answered"] - c0["stun_answered"]) / wall,
        "rtcp_per_s": (c1["rtcp"] - c0["rtcp"]) / wall,
    }


def paired_windows(
    pairs: dict[str, Pair], args: argparse.Namespace, rng: random.Random, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """`args.windows` windows, each measuring both servers at `args.streams` streams."""
    for p in pairs.values():
        p.resize(args.streams)
    records = []
    for w in range(-1, args.windows):  # window -1 warms both up and is not kept
        order = list(IMPLS)
        rng.shuffle(order)
        for impl in order:
            rec = pairs[impl].window(args.streams, args.seconds, args.warmup, args.late, args.grace)
            rec.update({"impl": impl, "window": w})
            if w >= 0:
                records.append(rec)
                say(
                    f"  window {w + 1}/{args.windows} {impl:6}: "
                    f"{rec['pkt_per_cpu_s']:9,.0f} packets/CPU s ({rec['us_per_pkt']:.1f} us), "
                    f"server CPU {rec['server_cpu_share']:.0%}, late+lost "
                    f"{rec['bad_share']:.2%}"
                )
    return records


def capacity(pair: Pair, args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    """The largest N that passes (see the module docstring)."""
    steps: list[dict[str, Any]] = []
    t_stop = time.monotonic() + args.search_budget

    def step(n: int) -> bool:
        rec = pair.window(
            n, args.step_seconds, args.warmup, args.late, args.grace, args.check_every
        )
        rec["n"] = n
        rec["passed"] = rec["bad_share"] < LOSS_LIMIT and rec["counters"]["bad"] == 0
        steps.append(rec)
        say(
            f"  N={n:5}: late {rec['late']} lost {rec['lost']} of {rec['sent']} "
            f"({rec['bad_share']:.2%}), rtt p99 {rec['rtt_ms']['p99']:.1f} ms, server CPU "
            f"{rec['server_cpu_share']:.0%} (waited for it {rec['server_runq_wait']:.0%}), "
            f"generator CPU {rec['client_cpu']:.0%} (waited {rec['client_runq_wait']:.0%})"
            f"{' (generator behind)' if rec['behind'] else ''}"
            f"{' (generator dropped echoes)' if rec['client_drops'] > 0 else ''}"
            f" -> {'pass' if rec['passed'] else 'FAIL'}{' ~' if rec['client_limited'] else ''}"
            f"{' ‡' if rec['machine_busy'] else ''}"
            f" (streams opened or closed in {rec['resize_s']:.1f} s, the server quiet after "
            f"{rec['settle_s']:.1f} s; its peak RSS {rec['server']['maxrss_mb']:.0f} MB)"
        )
        return bool(rec["passed"])

    good, bad = 0, 0
    n = min(args.start, args.cap)
    while True:
        if step(n):
            good = n
            if n >= args.cap or time.monotonic() > t_stop:
                break
            n = min(n * 2, args.cap)
        else:
            bad = n
            break
    while bad and bad - good > max(1, int(args.resolution * bad)) and time.monotonic() < t_stop:
        mid = (good + bad) // 2
        if step(mid):
            good = mid
        else:
            bad = mid
    limiting = [s for s in steps if s["n"] == bad]
    best = [s for s in steps if s["n"] == good and s["passed"]]
    # the answer is the generator's if the step that failed may have failed by it, or
    # the step that passed carried less than its N
    # the N at which the server's CPU per packet at its largest passing step would fill
    # one core: what the core could carry were it the server's alone
    estimate = int(1e6 / (best[-1]["us_per_pkt"] * 50)) if best else None
    return {
        "max_streams": good,
        "first_failed": bad or None,
        "capped": bad == 0 and good >= args.cap,
        "budget_out": time.monotonic() > t_stop,
        "client_limited": bool(
            (limiting and limiting[0]["client_limited"]) or (best and best[-1]["client_limited"])
        ),
        "machine_busy": bool(limiting and limiting[0]["machine_busy"]),
        "cpu_estimate": estimate,
        "steps": steps,
    }


def core_share(cpu: int | None, seconds: float = 0.5) -> float:
    """The share of CPU `cpu` a busy process pinned there gets now (1.0: the core is ours;
    on a machine shared with other work, less)."""
    code = (
        "import os, resource, time\n"
        f"cpu = {cpu!r}\n"
        "if cpu is not None and hasattr(os, 'sched_setaffinity'):\n"
        "    os.sched_setaffinity(0, {cpu})\n"
        "t = time.monotonic(); r = resource.getrusage(resource.RUSAGE_SELF)\n"
        f"while time.monotonic() - t < {seconds}: pass\n"
        "q = resource.getrusage(resource.RUSAGE_SELF)\n"
        "w = time.monotonic() - t\n"
        "print((q.ru_utime + q.ru_stime - r.ru_utime - r.ru_stime) / w)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return float(proc.stdout.strip())


def run_callgrind(
    loop: str,
    impl: str,
    args: argparse.Namespace,
    scpu: int | None,
    ccpu: int | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Instructions per echoed packet of one server under callgrind: `args.cg_streams`
    streams, a warm-up window, then a measured one of `args.cg_seconds`; `kept_up` says
    whether the server echoed (nearly) all the window's packets within it."""
    from . import callgrind

    with tempfile.TemporaryDirectory(prefix="ub-media-cg-") as tmp:
        out = Path(tmp) / "cg.out"
        wrap = callgrind.valgrind_argv(out)
        pair = Pair(impl, loop, scpu, ccpu, args.profile, wrap=wrap)
        try:
            pair.resize(args.cg_streams)
            if not callgrind._instrument(pair.server.proc.pid):
                raise ChildError("callgrind_control could not turn the instrumentation on")
            pair.window(args.cg_streams, 1.0, 0.3, 10.0, args.grace)
            rec = pair.window(args.cg_streams, args.cg_seconds, 0.3, 10.0, args.grace)
        finally:
            pair.close()
        ir = callgrind.dump_total(Path(f"{out}.4"))
        if args.cg_keep is not None:  # the measured window's dump, for callgrind_annotate
            args.cg_keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(f"{out}.4", args.cg_keep / f"callgrind.out.{impl}-{loop}")
    echoed = rec["server"]["echoed"]
    result = {
        "loop": loop,
        "impl": impl,
        "streams": args.cg_streams,
        "echoed": echoed,
        "ir_window": ir,
        "ir_per_packet": ir / max(echoed, 1),
        "late_or_lost": rec["bad_share"],
        # the packets the generator sent meanwhile were echoed within the window
        "kept_up": echoed >= 0.95 * rec["sent"],
    }
    say(
        f"  {loop} {impl}: {result['ir_per_packet']:,.0f} instructions per echoed packet"
        + ("" if result["kept_up"] else " (the server fell behind: fewer streams, please)")
    )
    return result


def idle_callgrind(
    loop: str,
    n: int,
    args: argparse.Namespace,
    scpu: int | None,
    ccpu: int | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Instructions per stream-second of `n` connected IMedia streams with no media,
    counted by callgrind over `args.idle_seconds`."""
    from . import callgrind

    with tempfile.TemporaryDirectory(prefix="ub-media-cg-") as tmp:
        out = Path(tmp) / "cg.out"
        wrap = callgrind.valgrind_argv(out)
        pair = Pair("imedia", loop, scpu, ccpu, args.profile, wrap=wrap)
        try:
            pair.resize(n)
            time.sleep(2.0)  # the last set-ups' retransmission timers over
            if not callgrind._instrument(pair.server.proc.pid):
                raise ChildError("callgrind_control could not turn the instrumentation on")
            c0 = ask(pair.client, {"cmd": "counters"}, 10)
            ask(pair.server, {"cmd": "start"}, 30)
            time.sleep(args.idle_seconds)
            usage = ask(pair.server, {"cmd": "stop"}, 30)
            c1 = ask(pair.client, {"cmd": "counters"}, 10)
        finally:
            pair.close()
        ir = callgrind.dump_total(Path(f"{out}.2"))
        if args.cg_keep is not None:
            args.cg_keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(f"{out}.2", args.cg_keep / f"callgrind.out.idle{n}-{loop}")
    wall = max(usage["wall"], 1e-9)
    result = {
        "loop": loop,
        "streams": n,
        "seconds": wall,
        "ir_window": ir,
        "ir_per_stream_s": ir / wall / n,
        "consent_per_s": (c1["stun_answered"] - c0["stun_answered"]) / wall,
        "rtcp_per_s": (c1["rtcp"] - c0["rtcp"]) / wall,
    }
    say(
        f"  {loop}: {n} idle IMedia streams: {result['ir_per_stream_s']:,.0f} instructions "
        f"per stream per second ({result['consent_per_s']:.1f} consent checks/s, "
        f"{result['rtcp_per_s']:.1f} RTCP packets/s)"
    )
    return result


# --------------------------------------------------------------------------- report


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Per loop: the paired ratio's spread, each server's median figures, capacities and
    set-up times."""
    out: dict[str, Any] = {}
    for loop in doc["args"]["loops"]:
        row: dict[str, Any] = {}
        recs = [r for r in doc["windows"] if r["loop"] == loop]
        by_w: dict[int, dict[str, Any]] = {}
        for r in recs:
            by_w.setdefault(r["window"], {})[r["impl"]] = r
        ratios = [
            w["imedia"]["pkt_per_cpu_s"] / w["raw"]["pkt_per_cpu_s"]
            for w in by_w.values()
            if "imedia" in w and "raw" in w and w["raw"]["pkt_per_cpu_s"] > 0
        ]
        if ratios:
            s = spread(ratios)
            s["min"], s["max"] = min(ratios), max(ratios)
            row["ratio"] = s
        for impl in IMPLS:
            mine = [r for r in recs if r["impl"] == impl]
            if mine:
                row[impl] = {
                    "pkt_per_cpu_s": statistics.median(r["pkt_per_cpu_s"] for r in mine),
                    "us_per_pkt": statistics.median(r["us_per_pkt"] for r in mine),
                    "late_or_lost": sum(r["late"] + r["lost"] for r in mine)
                    / max(sum(r["sent"] for r in mine), 1),
                }
        caps = doc["capacity"].get(loop, {})
        if caps:
            row["capacity"] = {
                impl: {
                    k: c.get(k)
                    for k in (
                        "max_streams",
                        "first_failed",
                        "capped",
                        "client_limited",
                        "machine_busy",
                        "cpu_estimate",
                        "core_share",
                        "generator_core_share",
                    )
                }
                for impl, c in caps.items()
            }
        st = doc["setup"].get(loop)
        if st:
            row["setup"] = {
                k: spread([x[k] for x in st])
                for k in ("initialize_ms", "connect_ms", "first_echo_ms", "total_ms")
            }
        cg = {r["impl"]: r["ir_per_packet"] for r in doc["callgrind"] if r["loop"] == loop}
        if cg:
            row["callgrind"] = cg
        out[loop] = row
    return out


def markdown(doc: dict[str, Any]) -> str:
    """The summary as Markdown tables (what docs/performance-media.md shows)."""
    summ = doc["summary"]
    a = doc["args"]
    lines: list[str] = []
    if any("ratio" in row for row in summ.values()):
        lines += paired_markdown(summ, a)
    return "\n".join(lines + rest_markdown(summ, a))


def paired_markdown(summ: dict[str, Any], a: dict[str, Any]) -> list[str]:
    """The paired windows' table."""
    lines = [
        f"Paired windows: {a['windows']} per loop, {a['streams']} streams "
        f"({a['streams'] * 50:,} packets/s each way), {a['seconds']:g} s each; "
        f"SRTP {a['profile']}.",
        "",
        "| loop | IMedia packets/CPU s | raw packets/CPU s | IMedia / raw: median "
        "(IQR; min-max) | IMedia us/packet | raw us/packet |",
        "|---|---|---|---|---|---|",
    ]
    for loop, row in summ.items():
        r = row.get("ratio")
        im, raw = row.get("imedia"), row.get("raw")
        if not (r and im and raw):
            continue
        lines.append(
            f"| {loop} | {im['pkt_per_cpu_s']:,.0f} | {raw['pkt_per_cpu_s']:,.0f} | "
            f"**{r['median']:.2f}** ({r['q1']:.2f}-{r['q3']:.2f}; {r['min']:.2f}-{r['max']:.2f}) "
            f"| {im['us_per_pkt']:.1f} | {raw['us_per_pkt']:.1f} |"
        )
    return lines


def rest_markdown(summ: dict[str, Any], a: dict[str, Any]) -> list[str]:
    """The capacity, callgrind and set-up tables (those the run made)."""
    lines: list[str] = []
    if any("capacity" in row for row in summ.values()):
        lines += [
            "",
            f"Capacity: the largest N with under {LOSS_LIMIT:.0%} late (> {a['late_ms']:g} ms) "
            f"or lost, N up to {a['cap']} (~: the load generator may have decided it; "
            "‡: at the step that failed, the server or the generator waited more than "
            f"{RUNQ_BUSY:.0%} of the time for its CPU (other work had it); "
            "≥: the cap or the time budget stopped the search).",
            "",
            "| loop | IMedia streams | raw streams | share of the server's / generator's "
            "core a busy loop got (IMedia; raw) | IMedia, CPU estimate | raw, CPU estimate |",
            "|---|---|---|---|---|---|",
        ]
        for loop, row in summ.items():
            c = row.get("capacity")
            if c:
                im, raw = c.get("imedia") or {}, c.get("raw") or {}
                shares = "; ".join(
                    f"{x['core_share']:.0%}"
                    + (
                        f" / {x['generator_core_share']:.0%}"
                        if x.get("generator_core_share") is not None
                        else ""
                    )
                    for x in (im, raw)
                    if x.get("core_share") is not None
                )
                lines.append(
                    f"| {loop} | {cap_text(im)} | {cap_text(raw)} | {shares} "
                    f"| {est_text(im)} | {est_text(raw)} |"
                )
        lines += [
            "",
            "(CPU estimate: 1 / (50 x the server's CPU per packet at its largest passing "
            "step): the streams one core would carry were it the server's alone.)",
        ]
    if any("callgrind" in row for row in summ.values()):
        lines += [
            "",
            f"Instructions per echoed packet (callgrind, user space only, {a['cg_streams']} "
            "streams):",
            "",
            "| loop | IMedia | raw | raw / IMedia |",
            "|---|---|---|---|",
        ]
        for loop, row in summ.items():
            cg = row.get("callgrind")
            if cg and "imedia" in cg and "raw" in cg:
                lines.append(
                    f"| {loop} | {cg['imedia']:,.0f} | {cg['raw']:,.0f} | "
                    f"{cg['raw'] / cg['imedia']:.2f} |"
                )
    if any("setup" in row for row in summ.values()):
        lines += [
            "",
            "Set-up of one IMedia call (ms, median (IQR) of "
            f"{a['setups']}): Initialize to the offer; Connect to the first echo decrypted "
            "by the peer.",
            "",
            "| loop | Initialize | Connect to MediaConnectResult | Connect to first echo | total |",
            "|---|---|---|---|---|",
        ]
        for loop, row in summ.items():
            s = row.get("setup")
            if s:
                cells = [
                    f"{s[k]['median']:.1f} ({s[k]['q1']:.1f}-{s[k]['q3']:.1f})"
                    for k in ("initialize_ms", "connect_ms", "first_echo_ms", "total_ms")
                ]
                lines.append(f"| {loop} | " + " | ".join(cells) + " |")
    return lines


def cap_text(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    text = f"{c['max_streams']:,}"
    if c["capped"]:
        text = "≥ " + text
    if c["client_limited"]:
        text += "~"
    if c.get("machine_busy"):
        text += "‡"
    return text


def est_text(c: dict[str, Any]) -> str:
    return "-" if c.get("cpu_estimate") is None else f"{c['cpu_estimate']:,}"


def verdict(doc: dict[str, Any]) -> str:
    """The targets of the media work, met or not."""
    parts = []
    for loop, row in doc["summary"].items():
        r = row.get("ratio")
        if r:
            ok = "met" if r["median"] >= TARGET_RATIO else "missed"
            parts.append(f"{loop}: IMedia / raw {r['median']:.2f} (target {TARGET_RATIO}: {ok})")
    c = doc["summary"].get("uvloop", {}).get("capacity", {}).get("imedia")
    if c:
        ok = "met" if c["max_streams"] >= TARGET_STREAMS else "missed"
        parts.append(
            f"uvloop IMedia streams on one core: {cap_text(c)} (target {TARGET_STREAMS}: {ok})"
        )
    return "; ".join(parts)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.media", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller: 50 streams in the paired windows, capacity up to 400 (about 2 minutes)",
    )
    p.add_argument("--loops", default=",".join(LOOPS), help="comma-separated: asyncio,uvloop")
    p.add_argument("--streams", type=int, help="streams in the paired windows (200; quick 50)")
    p.add_argument("--windows", type=int, help="paired windows per loop (10; quick 5; 0: none)")
    p.add_argument("--seconds", type=float, help="measured seconds per window (3; quick 1)")
    p.add_argument("--warmup", type=float, help="seconds of traffic before each measurement")
    p.add_argument("--start", type=int, help="first N of the capacity search (100; quick 50)")
    p.add_argument("--cap", type=int, help="largest N the search tries (3000; quick 400)")
    p.add_argument("--step-seconds", type=float, help="measured seconds per search step")
    p.add_argument("--resolution", type=float, help="bisect until the gap is this share of N (0.1)")
    p.add_argument(
        "--search-budget", type=float, help="seconds a capacity search may take (240; quick 60)"
    )
    p.add_argument("--setups", type=int, help="IMedia set-ups timed per loop (10; quick 3)")
    p.add_argument("--no-search", action="store_true", help="skip the capacity search")
    p.add_argument(
        "--idle",
        type=comma_ints,
        default=[],
        help="comma-separated stream counts: the IMedia server's CPU with that many "
        "connected streams and no media (consent, RTCP, statistics), per stream",
    )
    p.add_argument("--idle-seconds", type=float, default=10.0, help="seconds per --idle count")
    p.add_argument(
        "--impls",
        default=",".join(IMPLS),
        help="comma-separated servers whose capacity is searched: imedia,raw",
    )
    p.add_argument(
        "--check-every",
        type=int,
        default=8,
        help="in the capacity search, decrypt and check in full one echo in this many of "
        "each stream (1: all); every echo is still matched to its packet by its RTP "
        "timestamp, so none late or lost goes uncounted (8)",
    )
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="also count each server's instructions per packet under callgrind (valgrind): "
        "a figure a busy machine does not change",
    )
    p.add_argument(
        "--cg-streams",
        type=int,
        default=2,
        help="streams under callgrind (2: a server slowed by valgrind must keep up, or it "
        "handles its packets in batches and each costs less; 0: no packet count, only "
        "the --idle ones)",
    )
    p.add_argument("--cg-seconds", type=float, default=6.0, help="measured seconds (6)")
    p.add_argument(
        "--cg-keep",
        type=Path,
        default=None,
        help="a directory to keep each measured callgrind dump in (for callgrind_annotate)",
    )
    p.add_argument("--late-ms", type=float, default=60.0, help="an echo later than this is late")
    p.add_argument("--grace", type=float, default=0.5, help="seconds to wait for the last echoes")
    p.add_argument(
        "--profile",
        default="SRTP_AES128_CM_SHA1_80",
        choices=("SRTP_AES128_CM_SHA1_80", "SRTP_AEAD_AES_128_GCM"),
        help="the SRTP profile of both servers",
    )
    p.add_argument("--seed", type=int, default=13, help="seed of the window order shuffle")
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    p.add_argument(
        "--cprofile",
        type=Path,
        default=None,
        help="a directory: each server writes a cProfile of its windows there "
        "(IMPL-LOOP.prof; the profiler slows the servers: no figure of such a run counts)",
    )
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.loops = comma_list(p, args.loops, LOOPS, "loop")
    args.impls = comma_list(p, args.impls, IMPLS, "server")
    if not 1 <= args.check_every <= 64:
        p.error("--check-every must be 1 to 64")
    if args.streams < 1 or args.windows < 0 or args.start < 1 or args.cap < args.start:
        p.error(
            "--streams and --start must be at least 1, --windows 0 or more, --cap at least --start"
        )
    args.late = args.late_ms / 1000
    return args


def comma_ints(text: str) -> list[int]:
    """ "10,100" as [10, 100] (argparse's type for --idle)."""
    try:
        out = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: stream counts, comma-separated") from None
    if any(x < 1 for x in out):
        raise argparse.ArgumentTypeError("each stream count must be at least 1")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    scpu, ccpu = cpus()
    rng = random.Random(args.seed)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")

    def say(line: str) -> None:
        print(line, flush=True)

    doc: dict[str, Any] = {
        "when": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "server_cpu": scpu,
            "client_cpu": ccpu,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "windows": [],
        "capacity": {},
        "setup": {},
        "callgrind": [],
        "idle": [],
        "idle_callgrind": [],
    }
    for loop in args.loops:
        say(f"{loop}: starting the servers (CPU {scpu}) and load generators (CPU {ccpu})")
        pairs: dict[str, Pair] = {}
        try:
            for impl in IMPLS:
                pairs[impl] = Pair(impl, loop, scpu, ccpu, args.profile, args.cprofile)
            if args.setups:
                say(f"{loop}: {args.setups} IMedia set-ups, one at a time")
                doc["setup"][loop] = setups(pairs["imedia"], args.setups)
            for n in args.idle:
                rec = idle(pairs["imedia"], n, args.idle_seconds)
                rec["loop"] = loop
                doc["idle"].append(rec)
                say(
                    f"{loop}: {n} idle IMedia streams (opened in {rec['open_s']:.1f} s): "
                    f"server CPU {rec['server_cpu_share']:.1%}, "
                    f"{rec['us_per_stream_s']:.1f} us per stream per second; "
                    f"{rec['consent_per_s']:.0f} consent checks/s, "
                    f"{rec['rtcp_per_s']:.0f} RTCP packets/s"
                )
            if args.windows:
                say(f"{loop}: paired windows at {args.streams} streams")
                for rec in paired_windows(pairs, args, rng, say):
                    rec["loop"] = loop
                    doc["windows"].append(rec)
            if not args.no_search:
                doc["capacity"][loop] = {}
                for impl in args.impls:
                    share, gshare = core_share(scpu), core_share(ccpu)
                    say(
                        f"{loop}: capacity of {impl} (a busy loop gets {share:.0%} of the "
                        f"server's CPU now, {gshare:.0%} of the generator's)"
                    )
                    cap = capacity(pairs[impl], args, say)
                    cap["core_share"] = share
                    cap["generator_core_share"] = gshare
                    doc["capacity"][loop][impl] = cap
                    pairs[impl].resize(0)
            if args.callgrind and args.idle:
                say(f"{loop}: instructions of idle IMedia streams (callgrind)")
                doc["idle_callgrind"] += [
                    idle_callgrind(loop, n, args, scpu, ccpu, say) for n in args.idle
                ]
            if args.callgrind and args.cg_streams:
                say(f"{loop}: instructions per packet (callgrind, {args.cg_streams} streams)")
                doc["callgrind"] += [
                    run_callgrind(loop, impl, args, scpu, ccpu, say) for impl in IMPLS
                ]
        finally:
            for p in pairs.values():
                p.close()
    doc["machine"]["loadavg_end"] = os.getloadavg()
    doc["summary"] = summarize(doc)
    RESULTS.mkdir(exist_ok=True)
    out = args.json or RESULTS / f"media-{stamp}.json"
    out.write_text(json.dumps(doc, indent=1))
    say("")
    say(markdown(doc))
    say("")
    say(verdict(doc))
    load0, load1 = doc["machine"]["loadavg_start"][0], doc["machine"]["loadavg_end"][0]
    say(
        f"({time.monotonic() - t_start:.0f} s; load average {load0:.1f} at the start, "
        f"{load1:.1f} at the end; every window: {out})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
