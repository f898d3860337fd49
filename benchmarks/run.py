"""The benchmark run: library servers against raw asyncio servers, in many paired windows.

For each socket kind and loop, one server process per implementation is started (pinned
to one CPU), and one load-client process (pinned to another CPU) drives them in turn:
each short window measures a workload on every implementation back to back (in an order
shuffled from window to window, with a fixed seed), so each library figure has a raw
`asyncio.Protocol` partner measured moments apart on the same loop. The figures that
count are the per-window ratios against that partner: their median, and their spread
(the interquartile range); a cell whose spread is wider than 10 % of its median is
marked noisy. Then, where valgrind is installed, a short callgrind run counts the
servers' instructions per request (benchmarks/callgrind.py), a figure that does not
depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report
from .proc import ROOT, Child, ChildError, cpus, make_cert
from .servers import (
    LIB_IMPLS,
    MIB,
    RAW_IMPLS,
    SLOW_IMPLS,
    STREAM_IMPLS,
    base_style,
    comma_list,
    lib_build,
    lib_style,
)
from .stats import paired, spread

HERE = Path(__file__).resolve().parent
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
QUICK_KINDS = ("tcp", "local")
QUICK_WORKLOADS = ("pp1k-10", "udp1k-10")
QUICK_IMPLS = (
    "usocket-plain",
    "usocket-flow",
    "compiled-plain",
    "compiled-flow",
    "protocol",
    "streams",
)
QUICK_TOTALS = {"bulk": 64 * MIB, "echo": 32 * MIB}
MEMORY_TOTAL = 512 * MIB
QUICK_MEMORY_TOTAL = 64 * MIB

# The directory of the compiled build (benchmarks/compiled.py), once `main` made it.
COMPILED_DIR: Path | None = None


def runs_on(impl: str, kind: str, workload: str) -> bool:
    """Does server `impl` take part in `workload` on `kind`? The library's echo app
    styles (benchmarks/servers.py): plain and flow (each also written the other ways:
    memoryview, bytes, small buffer) for TCP and local ping-pong, plain for UDP, and the
    windowed one for TLS and for bulk and echo (as in earlier runs)."""
    if lib_build(impl) is None:
        return impl == REFERENCE if kind == "udp" else impl in RAW_IMPLS
    style = lib_style(impl)
    if kind == "udp":
        return style == "plain"
    if kind == "tls" or WORKLOADS[workload]["op"] != "pingpong":
        return style == "window"
    return base_style(impl) in ("plain", "flow")


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
    if lib_build(impl) == "compiled":  # `python -m` there imports the compiled package first
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
        job["keep"] = True  # the next window reuses the connections, warm
        job["warmup"] = 0.05
    else:
        job["addr"] = addrs["sink" if job["op"] == "bulk" else "echo"]
        if args.quick:
            job["total"] = QUICK_TOTALS[name]
        job["max_time"] = args.max_time
    return job


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (kind, loop, workload): each server's median figures, and the spread
    (median, IQR, noisy) of every library server's per-window ratios against every raw
    server measured in the same windows."""
    groups: dict[tuple[str, str, str], dict[int, dict[str, dict[str, Any]]]] = {}
    for rec in records:
        key = (rec["kind"], rec["loop"], rec["workload"])
        groups.setdefault(key, {}).setdefault(rec["window"], {})[rec["impl"]] = rec
    out = []
    for (kind, loop, wl), by_window in groups.items():
        windows = list(by_window.values())
        row: dict[str, Any] = {"kind": kind, "loop": loop, "workload": wl}
        row["unit"] = "req/s" if WORKLOADS[wl]["op"] == "pingpong" else "MB/s"
        row["windows"] = len(windows)
        impls = sorted({i for w in windows for i in w})
        row["impls"] = {
            impl: {
                key: statistics.median([w[impl][key] for w in windows if impl in w])
                for key in ("throughput", "cpu_us_per_unit")
            }
            for impl in impls
        }
        ratios: dict[str, Any] = {}
        for lib in (i for i in impls if i in LIB_IMPLS):
            for ref in (i for i in impls if i not in LIB_IMPLS):
                pair = {}
                for what, field in (("throughput", "throughput"), ("cpu", "cpu_us_per_unit")):
                    vals = paired(windows, lib, ref, field)
                    if vals:
                        pair[what] = spread(vals)
                if pair:
                    ratios.setdefault(lib, {})[ref] = pair
        row["ratios"] = ratios
        out.append(row)
    rows: list[dict[str, Any]] = report.load({"summary": out})["summary"]
    return rows


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
    from rich.text import Text

    from .stats import fmt

    t = Table(
        title="library ÷ raw asyncio: median ± half the interquartile range of the paired "
        "windows (~: noisy)"
    )
    cols = ["kind", "loop", "workload", "server", "library", "protocol"]
    cols += ["x protocol", "cpu/unit x protocol", "x buffered", "x streams", "windows"]
    for col in cols:
        left = col in ("kind", "loop", "workload", "server")
        t.add_column(col, justify="left" if left else "right")
    for row, lib in report.cells(summary):
        ours = row["impls"].get(lib, {}).get("throughput")
        ref = row["impls"].get(REFERENCE, {}).get("throughput")
        tp, cpu = report.ratio(row, lib), report.ratio(row, lib, what="cpu")
        t.add_row(
            row["kind"],
            row["loop"],
            row["workload"],
            lib,
            "-" if ours is None else f"{ours:,.0f} {row['unit']}",
            "-" if ref is None else f"{ref:,.0f}",
            Text(fmt(tp), style="yellow" if tp and tp["noisy"] else ""),
            Text(fmt(cpu), style="yellow" if cpu and cpu["noisy"] else ""),
            fmt(report.ratio(row, lib, "buffered")),
            fmt(report.ratio(row, lib, "streams")),
            str(row["windows"]),
        )
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


def run_callgrind(args: argparse.Namespace, console: Any) -> list[dict[str, Any]]:
    """Instructions per request of the raw and the library servers (benchmarks/callgrind.py),
    on TCP with every loop of the run; [] (and a line saying why) where it cannot run."""
    from . import callgrind

    if not callgrind.available():
        console.print("no instruction counts: valgrind is not installed (apt-get install valgrind)")
        return []
    impls = [REFERENCE] + [
        i for i in args.impls if lib_build(i) is not None and base_style(i) in ("plain", "flow")
    ]
    if len(impls) == 1:
        return []
    console.print(
        f"callgrind: {args.callgrind_requests} requests on each of {', '.join(impls)} "
        f"(tcp; {', '.join(args.loops)})"
    )
    try:
        results = callgrind.run(
            ["tcp"],
            args.loops,
            impls,
            args.callgrind_requests,
            compiled_dir=COMPILED_DIR,
            say=lambda line: console.print(line, highlight=False),
        )
    except RuntimeError as e:
        console.print(f"[yellow]no instruction counts: {e}[/]")
        return []
    console.print(callgrind.table(results), highlight=False)
    console.print(callgrind.USER_SPACE_NOTE)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="tcp and local 1 KiB x 10, many short windows, and the instruction counts "
        "(about 3 minutes)",
    )
    p.add_argument("--kinds", default=None, help="comma-separated: tcp,tls,local,udp")
    p.add_argument("--loops", default=",".join(LOOPS), help="comma-separated: asyncio,uvloop")
    p.add_argument(
        "--windows",
        "--rounds",
        dest="windows",
        type=int,
        default=None,
        help="paired windows per cell (default 10, quick 15)",
    )
    p.add_argument("--seed", type=int, default=13, help="seed of the window order shuffle")
    p.add_argument(
        "--workloads", default=None, help="comma-separated subset of: " + ",".join(WORKLOADS)
    )
    p.add_argument(
        "--impls", default=None, help="comma-separated subset of: " + ",".join(STREAM_IMPLS)
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per ping-pong window (1.0, quick 0.25)",
    )
    p.add_argument("--max-time", type=float, default=8.0, help="cap on a bulk transfer, seconds")
    p.add_argument("--memory", dest="memory", action="store_true", default=True)
    p.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the memory benchmark"
    )
    p.add_argument("--memory-max-time", type=float, default=30.0)
    p.add_argument(
        "--no-callgrind",
        dest="callgrind",
        action="store_false",
        help="skip the instruction counts (valgrind)",
    )
    p.add_argument("--callgrind-requests", type=int, default=2000, help=argparse.SUPPRESS)
    p.add_argument(
        "--json", type=Path, default=None, help="where to write the JSON of every window"
    )
    p.add_argument("--summary", type=Path, default=None, help="also write the summary JSON here")
    p.add_argument("--chart", type=Path, default=None, help="where to write the PNG chart")
    p.add_argument("--no-chart", action="store_true")
    args = p.parse_args(argv)
    if args.kinds is None:
        args.kinds = ",".join(QUICK_KINDS if args.quick else KINDS)
    args.kinds = comma_list(p, args.kinds, KINDS, "kind")
    args.loops = comma_list(p, args.loops, LOOPS, "loop")
    if args.windows is None:
        args.windows = 15 if args.quick else 10
    if args.windows < 1:
        p.error("--windows must be at least 1")
    if args.duration is None:
        args.duration = 0.25 if args.quick else 1.0
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
        for i in args.impls:
            if i not in STREAM_IMPLS:
                p.error(f"unknown server {i!r}; pick from {', '.join(STREAM_IMPLS)}")
        if REFERENCE not in args.impls or not any(i in LIB_IMPLS for i in args.impls):
            p.error("--impls must include protocol and a library server (the ratios pair them)")
    elif args.quick:
        args.impls = list(QUICK_IMPLS)
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
    t_start = time.monotonic()
    if any(lib_build(i) == "compiled" for i in args.impls):
        global COMPILED_DIR
        from .compiled import BuildError, build

        console.print("building the compiled engine (mypyc; reused while the code is unchanged)")
        try:
            COMPILED_DIR = build()
        except BuildError as e:
            console.print(f"[yellow]no compiled server in this run: {e}[/]")
            args.impls = [i for i in args.impls if lib_build(i) != "compiled"]
    scpu, ccpu = cpus()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    rng = random.Random(args.seed)
    # (kind, loop, [(workload, servers in it)], servers to start)
    plan: list[tuple[str, str, list[tuple[str, list[str]]], list[str]]] = []
    for kind in args.kinds:
        cells = []
        for wl in args.workloads:
            if wl not in (UDP_WORKLOADS if kind == "udp" else STREAM_WORKLOADS):
                continue
            impls = [i for i in args.impls if runs_on(i, kind, wl)]
            if REFERENCE in impls and any(i in LIB_IMPLS for i in impls):
                cells.append((wl, impls))
        needed = [i for i in args.impls if any(i in c for _, c in cells)]
        if cells:
            plan += [(kind, loop, cells, needed) for loop in args.loops]
    steps = sum(len(c) * (args.windows + 1) for _, _, cells, _ in plan for _, c in cells)
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
                TextColumn("{task.description:<44}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task("starting", total=steps)
                for kind, loop, cells, needed in plan:
                    servers: dict[str, tuple[Child, dict[str, Any]]] = {}
                    try:
                        for impl in needed:
                            try:
                                servers[impl] = start_server(
                                    kind, impl, loop, cert, tmp, scpu, False
                                )
                            except ChildError as e:  # recorded; the run goes on without it
                                failures.append({"kind": kind, "impl": impl, "error": str(e)})
                                console.print(f"[yellow]{kind} {loop} {impl}: {e}; skipped[/]")
                        for wl, cell in cells:
                            cell = [i for i in cell if i in servers]
                            if REFERENCE not in cell or not any(i in LIB_IMPLS for i in cell):
                                progress.advance(task, len(cell) * (args.windows + 1))
                                continue
                            spec = (wl, kind, loop, cert, tmp, scpu)
                            # window -1 is not recorded: a fresh server (or connection)
                            # runs its first moments slower
                            for w in range(-1, args.windows):
                                order = list(cell)
                                rng.shuffle(order)
                                for impl in order:
                                    progress.update(
                                        task, description=f"{kind} {loop} {wl} {impl} w{w + 1}"
                                    )
                                    rec = attempt(
                                        servers,
                                        impl,
                                        client,
                                        timeout,
                                        failures if w >= 0 else [],
                                        console,
                                        spec,
                                        args,
                                    )
                                    progress.advance(task)
                                    if rec is None or w < 0:
                                        continue
                                    rec.update(
                                        {
                                            "kind": kind,
                                            "loop": loop,
                                            "workload": wl,
                                            "impl": impl,
                                            "window": w,
                                        }
                                    )
                                    metrics(rec)
                                    records.append(rec)
                            if WORKLOADS[wl]["op"] == "pingpong" and kind != "udp":
                                client.send(json.dumps({"op": "close"}))
                                client.expect("CLOSED", 30)
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
    cg = run_callgrind(args, console) if args.callgrind else []
    RESULTS.mkdir(exist_ok=True)
    out = args.json or RESULTS / f"run-{stamp}.json"
    doc = {
        "when": stamp,
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "records": records,
        "summary": summary,
        "memory": memory,
        "callgrind": cg,
        "failures": failures,
    }
    out.write_text(json.dumps(doc, indent=1))
    console.print(f"every window: {out}")
    if args.summary is not None:
        small = {k: doc[k] for k in ("when", "machine", "args", "summary", "callgrind")}
        small["memory"] = [
            {k: m[k] for k in ("loop", "impl", "pushed", "bytes", "rss_growth")} for m in memory
        ]
        args.summary.write_text(json.dumps(small, indent=1))
        console.print(f"summary: {args.summary}")
    if not args.no_chart and summary:
        png = args.chart or RESULTS / f"ratios-{stamp}.png"
        title = (
            f"usocket_asyncio ÷ raw asyncio Protocol, {args.windows} paired windows per cell "
            f"({os.cpu_count()} CPUs, shared)"
        )
        report.chart(summary, png, title)
        console.print(f"chart: {png}")
    console.print(f"({time.monotonic() - t_start:.0f} s)")
    line = report.headline(summary)
    if line:
        console.print(line, highlight=False)
    if cg:
        console.print(callgrind_line(cg), highlight=False)
    for text in report.targets(summary, cg):
        console.print(text, highlight=False)
    console.print(report.verdict(summary), highlight=False)
    return 0


def callgrind_line(results: list[dict[str, Any]]) -> str:
    """One line: the library's instructions per request against raw `Protocol`'s."""
    ref = {r["loop"]: r["ir_per_request"] for r in results if r["impl"] == REFERENCE}
    parts = [
        f"{r['impl']} {r['ir_per_request'] / ref[r['loop']]:.2f}x on {r['loop']}"
        for r in results
        if r["impl"] != REFERENCE and r["loop"] in ref
    ]
    return (
        "instructions per request (callgrind, user space only, deterministic) ÷ raw Protocol: "
        + ", ".join(parts)
    )
