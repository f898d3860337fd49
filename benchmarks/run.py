"""The benchmark run: library servers against raw asyncio servers, paired and interleaved.

For each socket kind and loop, one server process per implementation is started (pinned
to one CPU), and one load-client process (pinned to another CPU) drives them in turn:
every round measures each workload on each implementation back to back (the order
alternates between rounds), so each library figure has a raw `asyncio.Protocol` partner
measured moments apart on the same loop. The figures that count are the per-round
ratios against that partner, and their median over the rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .report import has_compiled, ratio_key
from .servers import LIB_IMPLS, MIB, SLOW_IMPLS, STREAM_IMPLS, UDP_IMPLS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
KINDS = ("tcp", "tls", "local", "udp")
LOOPS = ("asyncio", "uvloop")
REFERENCE = "protocol"

# name -> job template (size in bytes; totals are cut by --quick)
WORKLOADS: dict[str, dict[str, Any]] = {
    "pp1k-1": {"op": "pingpong", "size": 1024, "conns": 1},
    "pp1k-10": {"op": "pingpong", "size": 1024, "conns": 10},
    "pp64k-1": {"op": "pingpong", "size": 65536, "conns": 1},
    "pp64k-10": {"op": "pingpong", "size": 65536, "conns": 10},
    "bulk": {"op": "bulk", "total": 1024 * MIB},
    "echo": {"op": "echo", "total": 512 * MIB},
    "udp1k-1": {"op": "pingpong", "size": 1024, "conns": 1},
    "udp1k-10": {"op": "pingpong", "size": 1024, "conns": 10},
}
STREAM_WORKLOADS = ("pp1k-1", "pp1k-10", "pp64k-1", "pp64k-10", "bulk", "echo")
UDP_WORKLOADS = ("udp1k-1", "udp1k-10")
QUICK_WORKLOADS = ("pp1k-10", "pp64k-10", "bulk", "echo", "udp1k-10")
QUICK_TOTALS = {"bulk": 64 * MIB, "echo": 32 * MIB}
MEMORY_TOTAL = 512 * MIB
QUICK_MEMORY_TOTAL = 64 * MIB

# The directory of the compiled build (benchmarks/compiled.py), once `main` made it.
COMPILED_DIR: Path | None = None


class ChildError(RuntimeError):
    """A server or client process misbehaved."""


class Child:
    """A child process spoken to in lines over its stdin and stdout."""

    def __init__(self, argv: list[str], name: str, cwd: Path = ROOT) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buf = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise ChildError(f"{self.name} exited ({self.proc.poll()})") from e

    def recv(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{self.name}: no answer within {timeout:.0f} s")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                data = os.read(self.fd, 65536)
                if not data:
                    raise ChildError(f"{self.name} exited ({self.proc.wait()})")
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def expect(self, prefix: str, timeout: float) -> str:
        line = self.recv(timeout)
        if not line.startswith(prefix):
            raise ChildError(f"{self.name}: expected {prefix!r}, got {line!r}")
        return line[len(prefix) :].strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("QUIT")
                self.proc.wait(timeout=5)
            except (ChildError, subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def cpus() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): two different CPUs where the OS lets us pin."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def make_cert(directory: str) -> str:
    """A certificate (with key) for the TLS servers, from a throwaway CA."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "bench")
    path = os.path.join(directory, "server.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(path)
    return path


def start_server(
    kind: str, impl: str, loop: str, cert: str, directory: str, cpu: int | None, sample: bool
) -> tuple[Child, dict[str, Any]]:
    argv = [sys.executable, "-m", "benchmarks.servers", "--kind", kind, "--impl", impl]
    argv += ["--loop", loop, "--cert", cert, "--dir", directory]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    if sample:
        argv.append("--sample-rss")
    cwd = ROOT
    if impl == "compiled":  # `python -m` there imports the compiled package first
        if COMPILED_DIR is None:
            raise ChildError("the compiled build was not made")
        cwd = COMPILED_DIR
    child = Child(argv, f"server {kind}/{impl}/{loop}", cwd)
    addrs = json.loads(child.expect("READY", 30))
    return child, addrs


def measure(client: Child, server: Child, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One measuring window: the client's figures and the server's rusage over it."""
    client.send(json.dumps(job))
    line = client.recv(timeout)
    if line != "READY":
        raise ChildError(f"client: {line}")
    server.send("START")
    server.expect("OK", 10)
    client.send("GO")
    result: dict[str, Any] = json.loads(client.expect("RESULT", timeout))
    server.send("STOP")
    usage = json.loads(server.recv(10))
    if "error" in result:
        raise ChildError(f"client: {result['error']}")
    result.update(usage)
    return result


def attempt(
    servers: dict[str, tuple[Child, dict[str, Any]]],
    impl: str,
    client: Child,
    timeout: float,
    failures: list[dict[str, Any]],
    console: Any,
    spec: tuple[str, str, str, str, str, int | None],
    args: argparse.Namespace,
) -> dict[str, Any] | None:
    """`measure`, tried twice; a server that died is restarted. None when both failed
    (the failure is recorded and the run goes on)."""
    for _ in range(2):
        server, addrs = servers[impl]
        if server.proc.poll() is not None:
            server.close()
            _, kind, loop, cert, tmp, scpu = spec
            servers[impl] = start_server(kind, impl, loop, cert, tmp, scpu, False)
            server, addrs = servers[impl]
        job = job_for(spec[0], spec[1], addrs, args)
        try:
            return measure(client, server, job, timeout)
        except ChildError as e:
            failures.append({"job": job, "impl": impl, "error": str(e)})
            console.print(f"[yellow]{impl} {job['kind']} {job['op']}: {e}; trying again[/]")
            if server.proc.poll() is None:  # resync: drop the server's half-done window
                try:
                    server.send("STOP")
                    server.recv(5)
                except ChildError:
                    pass
    return None


def metrics(rec: dict[str, Any]) -> None:
    """Add throughput and CPU cost per unit (request, or MB for bulk) to a record."""
    secs = max(rec["seconds"], 1e-9)
    mb = rec["bytes"] / 1e6
    rec["mb_s"] = mb / secs
    if rec["requests"]:
        rec["req_s"] = rec["requests"] / secs
        rec["throughput"] = rec["req_s"]
        rec["cpu_us_per_unit"] = rec["cpu"] / rec["requests"] * 1e6
    else:
        rec["req_s"] = None
        rec["throughput"] = rec["mb_s"]
        rec["cpu_us_per_unit"] = rec["cpu"] / max(mb, 1e-9) * 1e6


def job_for(
    name: str, kind: str, addrs: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    job = dict(WORKLOADS[name])
    job["kind"] = kind
    if job["op"] == "pingpong":
        job["addr"] = addrs["echo"]
        job["duration"] = args.duration
        if args.quick:
            job["warmup"] = 0.1
    else:
        job["addr"] = addrs["sink" if job["op"] == "bulk" else "echo"]
        if args.quick:
            job["total"] = QUICK_TOTALS[name]
        job["max_time"] = args.max_time
    return job


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median paired ratios per (kind, loop, workload)."""
    groups: dict[tuple[str, str, str], dict[int, dict[str, dict[str, Any]]]] = {}
    for rec in records:
        key = (rec["kind"], rec["loop"], rec["workload"])
        groups.setdefault(key, {}).setdefault(rec["round"], {})[rec["impl"]] = rec
    out = []
    for (kind, loop, wl), rounds in groups.items():
        row: dict[str, Any] = {"kind": kind, "loop": loop, "workload": wl, "rounds": len(rounds)}
        unit = "req/s" if WORKLOADS[wl]["op"] == "pingpong" else "MB/s"
        row["unit"] = unit
        impls = sorted({i for r in rounds.values() for i in r})
        for impl in impls:
            vals = [r[impl]["throughput"] for r in rounds.values() if impl in r]
            cpu = [r[impl]["cpu_us_per_unit"] for r in rounds.values() if impl in r]
            row[impl] = {
                "throughput": statistics.median(vals),
                "cpu_us_per_unit": statistics.median(cpu),
            }
        for lib in LIB_IMPLS:
            for ref in impls:
                if ref in LIB_IMPLS:
                    continue
                tp = [
                    r[lib]["throughput"] / r[ref]["throughput"]
                    for r in rounds.values()
                    if lib in r and ref in r and r[ref]["throughput"] > 0
                ]
                cpu = [
                    r[lib]["cpu_us_per_unit"] / r[ref]["cpu_us_per_unit"]
                    for r in rounds.values()
                    if lib in r and ref in r and r[ref]["cpu_us_per_unit"] > 0
                ]
                if tp:
                    row[ratio_key(lib, f"ratio_{ref}")] = statistics.median(tp)
                    row[ratio_key(lib, f"ratio_{ref}_min")] = min(tp)
                    row[ratio_key(lib, f"ratio_{ref}_max")] = max(tp)
                if cpu:
                    row[ratio_key(lib, f"cpu_ratio_{ref}")] = statistics.median(cpu)
        out.append(row)
    return out


def run_memory(
    args: argparse.Namespace,
    client: Child,
    cert: str,
    tmp: str,
    scpu: int | None,
    progress: Any,
    task: Any,
) -> list[dict[str, Any]]:
    """Peak RSS growth of slowly draining servers while the client pushes a flood."""
    total = QUICK_MEMORY_TOTAL if args.quick else MEMORY_TOTAL
    out = []
    for loop in args.loops:
        for impl in SLOW_IMPLS:
            progress.update(task, description=f"memory {loop} {impl}")
            server, addrs = start_server("tcp", impl, loop, cert, tmp, scpu, True)
            try:
                job = {
                    "op": "bulk",
                    "kind": "tcp",
                    "addr": addrs["sink"],
                    "total": total,
                    "max_time": args.memory_max_time,
                }
                rec = measure(client, server, job, args.memory_max_time + 30)
            finally:
                server.close()
            rec.update({"loop": loop, "impl": impl, "pushed": total})
            rec["rss_growth"] = rec["rss_peak"] - rec["rss_start"]
            out.append(rec)
            progress.advance(task)
    return out


def print_table(console: Any, summary: list[dict[str, Any]], memory: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title="library vs raw asyncio (median of paired per-round ratios)")
    compiled = has_compiled(summary)
    cols = ["kind", "loop", "workload", "lib", "protocol", "x protocol", "cpu/unit x"]
    if compiled:
        cols += ["compiled x protocol", "compiled cpu/unit x"]
    cols += ["x buffered", "x streams"]
    for col in cols:
        t.add_column(col, justify="right" if col not in ("kind", "loop", "workload") else "left")
    for row in summary:
        lib = row.get("lib", {}).get("throughput")
        ref = row.get(REFERENCE, {}).get("throughput")

        def fmt(v: float | None, unit: str = "") -> str:
            return "-" if v is None else f"{v:,.0f}{unit}"

        def rat(key: str, row: dict[str, Any] = row) -> str:
            v = row.get(key)
            return "-" if v is None else f"{v:.2f}"

        cells = [
            row["kind"],
            row["loop"],
            row["workload"],
            fmt(lib, " " + row["unit"]),
            fmt(ref),
            rat("ratio_protocol"),
            rat("cpu_ratio_protocol"),
        ]
        if compiled:
            cells += [rat("compiled_ratio_protocol"), rat("compiled_cpu_ratio_protocol")]
        cells += [rat("ratio_buffered"), rat("ratio_streams")]
        t.add_row(*cells)
    console.print(t)
    if memory:
        m = Table(title="memory: peak RSS growth while a client floods a slowly draining server")
        for col in ("loop", "server", "pushed MiB", "drained MiB", "RSS growth MiB"):
            m.add_column(col)
        for rec in memory:
            m.add_row(
                rec["loop"],
                rec["impl"],
                f"{rec['pushed'] / MIB:.0f}",
                f"{rec['bytes'] / MIB:.0f}",
                f"{rec['rss_growth'] / MIB:.1f}",
            )
        console.print(m)


def chart(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    """Bar charts of the throughput and CPU-per-unit ratios against raw `Protocol`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted(
        {(r["kind"], r["workload"]) for r in summary},
        key=lambda kw: (KINDS.index(kw[0]), list(WORKLOADS).index(kw[1])),
    )
    loops = [lp for lp in LOOPS if any(r["loop"] == lp for r in summary)]
    builds = ["lib", "compiled"] if has_compiled(summary) else ["lib"]
    series = [(lp, b) for lp in loops for b in builds]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(labels) + 2), 8), sharex=True)
    width = 0.8 / max(1, len(series))
    for ax, key, target, ylabel in (
        (axes[0], "ratio_protocol", 0.9, "throughput: library / raw Protocol"),
        (axes[1], "cpu_ratio_protocol", 1.1, "server CPU per unit: library / raw Protocol"),
    ):
        for i, (lp, build) in enumerate(series):
            vals = []
            for kind, wl in labels:
                row = next(
                    (
                        r
                        for r in summary
                        if r["kind"] == kind and r["workload"] == wl and r["loop"] == lp
                    ),
                    None,
                )
                vals.append(row.get(ratio_key(build, key), 0.0) if row else 0.0)
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            bars = ax.bar(xs, vals, width, label=lp if build == "lib" else f"{lp}, {build}")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(target, color="red", linestyle="--", linewidth=0.8, label=f"target {target}")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[1].set_xticks(range(len(labels)))
    axes[1].set_xticklabels([f"{k}\n{w}" for k, w in labels], fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a pass of about a minute")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: tcp,tls,local,udp")
    p.add_argument("--loops", default=",".join(LOOPS), help="comma-separated: asyncio,uvloop")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 2)")
    p.add_argument(
        "--workloads", default=None, help="comma-separated subset of: " + ",".join(WORKLOADS)
    )
    p.add_argument(
        "--impls", default=None, help="comma-separated subset of: " + ",".join(STREAM_IMPLS)
    )
    p.add_argument("--duration", type=float, default=None, help="seconds per ping-pong window")
    p.add_argument("--max-time", type=float, default=8.0, help="cap on a bulk transfer, seconds")
    p.add_argument("--memory", dest="memory", action="store_true", default=True)
    p.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the memory benchmark"
    )
    p.add_argument("--memory-max-time", type=float, default=30.0)
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON of every round")
    p.add_argument("--summary", type=Path, default=None, help="also write the summary JSON here")
    p.add_argument("--chart", type=Path, default=None, help="where to write the PNG chart")
    p.add_argument("--no-chart", action="store_true")
    args = p.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.loops = [lp for lp in args.loops.split(",") if lp]
    for k in args.kinds:
        if k not in KINDS:
            p.error(f"unknown kind {k!r}; pick from {', '.join(KINDS)}")
    for lp in args.loops:
        if lp not in LOOPS:
            p.error(f"unknown loop {lp!r}; pick from {', '.join(LOOPS)}")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.duration is None:
        args.duration = 0.25 if args.quick else 1.5
    if args.workloads is not None:
        args.workloads = [w for w in args.workloads.split(",") if w]
        for w in args.workloads:
            if w not in WORKLOADS:
                p.error(f"unknown workload {w!r}")
    elif args.quick:
        args.workloads = list(QUICK_WORKLOADS)
    else:
        args.workloads = list(WORKLOADS)
    if args.impls is not None:
        args.impls = [i for i in args.impls.split(",") if i]
        if "lib" not in args.impls or REFERENCE not in args.impls:
            p.error("--impls must include lib and protocol (the ratios pair them)")
    elif args.quick:
        args.impls = ["lib", "compiled", "protocol", "streams"]
    else:
        args.impls = list(STREAM_IMPLS)
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    if "compiled" in args.impls:
        global COMPILED_DIR
        from .compiled import BuildError, build

        console.print("building the compiled engine (mypyc; reused while the code is unchanged)")
        try:
            COMPILED_DIR = build()
        except BuildError as e:
            console.print(f"[yellow]no compiled server in this run: {e}[/]")
            args.impls = [i for i in args.impls if i != "compiled"]
    scpu, ccpu = cpus()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    plan: list[tuple[str, str, list[str], list[str]]] = []
    for kind in args.kinds:
        wls = [
            w for w in args.workloads if w in (UDP_WORKLOADS if kind == "udp" else STREAM_WORKLOADS)
        ]
        impls = [i for i in args.impls if i in (UDP_IMPLS if kind == "udp" else STREAM_IMPLS)]
        if wls:
            plan += [(kind, loop, wls, impls) for loop in args.loops]
    steps = sum(len(w) * len(i) * args.rounds for _, _, w, i in plan)
    if args.memory:
        steps += len(args.loops) * len(SLOW_IMPLS)
    records: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    machine = {
        "cpus": os.cpu_count(),
        "server_cpu": scpu,
        "client_cpu": ccpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="ub-") as tmp:
        cert = make_cert(tmp)
        client = Child(
            [sys.executable, "-m", "benchmarks.client", str(ccpu) if ccpu is not None else "-"],
            "client",
        )
        timeout = max(args.duration, args.max_time) + 30
        try:
            with Progress(
                TextColumn("{task.description:<40}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task("starting", total=steps)
                for kind, loop, wls, impls in plan:
                    servers: dict[str, tuple[Child, dict[str, Any]]] = {}
                    try:
                        for impl in impls:
                            try:
                                servers[impl] = start_server(
                                    kind, impl, loop, cert, tmp, scpu, False
                                )
                            except ChildError as e:  # recorded; the run goes on without it
                                failures.append({"kind": kind, "impl": impl, "error": str(e)})
                                console.print(f"[yellow]{kind} {loop} {impl}: {e}; skipped[/]")
                        impls = [i for i in impls if i in servers]
                        if "lib" not in servers or REFERENCE not in servers:
                            progress.advance(task, len(wls) * args.rounds * len(impls))
                            continue
                        # one unrecorded window per server first: a fresh raw asyncio
                        # server runs its first second or so at a third of its speed
                        pp = [w for w in wls if WORKLOADS[w]["op"] == "pingpong"]
                        for impl in impls if pp and not args.quick else []:
                            progress.update(task, description=f"{kind} {loop} warm-up {impl}")
                            spec = (pp[0], kind, loop, cert, tmp, scpu)
                            attempt(servers, impl, client, timeout, [], console, spec, args)
                        for rnd in range(args.rounds):
                            for wl in wls:
                                order = impls if rnd % 2 == 0 else impls[::-1]
                                for impl in order:
                                    progress.update(
                                        task, description=f"{kind} {loop} {wl} {impl} r{rnd + 1}"
                                    )
                                    rec = attempt(
                                        servers,
                                        impl,
                                        client,
                                        timeout,
                                        failures,
                                        console,
                                        (wl, kind, loop, cert, tmp, scpu),
                                        args,
                                    )
                                    progress.advance(task)
                                    if rec is None:
                                        continue
                                    rec.update(
                                        {
                                            "kind": kind,
                                            "loop": loop,
                                            "workload": wl,
                                            "impl": impl,
                                            "round": rnd,
                                        }
                                    )
                                    metrics(rec)
                                    records.append(rec)
                    finally:
                        for child, _ in servers.values():
                            child.close()
                if args.memory:
                    memory = run_memory(args, client, cert, tmp, scpu, progress, task)
        finally:
            client.close()
    machine["loadavg_end"] = os.getloadavg()
    summary = summarize(records)
    print_table(console, summary, memory)
    RESULTS.mkdir(exist_ok=True)
    out = args.json or RESULTS / f"run-{stamp}.json"
    doc = {
        "when": stamp,
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "records": records,
        "summary": summary,
        "memory": memory,
        "failures": failures,
    }
    out.write_text(json.dumps(doc, indent=1))
    console.print(f"every round: {out}")
    if args.summary is not None:
        small = {k: doc[k] for k in ("when", "machine", "args", "summary")}
        small["memory"] = [
            {k: m[k] for k in ("loop", "impl", "pushed", "bytes", "rss_growth")} for m in memory
        ]
        args.summary.write_text(json.dumps(small, indent=1))
        console.print(f"summary: {args.summary}")
    if not args.no_chart and summary:
        png = args.chart or RESULTS / f"ratios-{stamp}.png"
        title = (
            f"usocket_asyncio vs raw asyncio Protocol, median of {args.rounds} paired rounds "
            f"({os.cpu_count()} CPUs, shared)"
        )
        chart(summary, png, title)
        console.print(f"chart: {png}")
    return 0
