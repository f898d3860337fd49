"""Smoke tests of the benchmark runner (tiny runs in subprocesses) and unit tests of its
statistics and report. No figure is asserted: speed is for the benchmarks to measure."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.run import runs_on
from benchmarks.stats import fmt, paired, percent_more, spread

ROOT = Path(__file__).resolve().parent.parent
CALLGRIND_REQUESTS = 100
"""Requests of the callgrind smoke run (valgrind's start takes most of its time)."""


def tiny_run(out: Path, timeout: float, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks` for two short windows (50 ms of ping-pong each), its JSON
    written to `out`."""
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--windows", "2", "--duration", "0.05"]
    argv += [*args, "--no-memory", "--no-chart", "--no-callgrind", "--json", str(out)]
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_both_app_styles_in_a_tiny_run_on_both_loops(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    summary = tmp_path / "summary.json"
    impls = "usocket-plain,usocket-flow,usocket-window,protocol,streams"
    proc = tiny_run(
        out,
        80,
        *("--kinds", "tcp", "--loops", "asyncio,uvloop", "--workloads", "pp1k-10,bulk"),
        *("--impls", impls, "--summary", str(summary)),
    )
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine", "args", "records", "summary", "memory", "callgrind"}
    seen = [(r["loop"], r["workload"], r["impl"], r["window"]) for r in doc["records"]]
    # ping-pong: both app styles and the raw servers; bulk: the windowed app and the raw ones
    want = {
        (lp, wl, impl, w)
        for lp in ("asyncio", "uvloop")
        for w in (0, 1)
        for wl, cell in (
            ("pp1k-10", ("usocket-plain", "usocket-flow", "protocol", "streams")),
            ("bulk", ("usocket-window", "protocol", "streams")),
        )
        for impl in cell
    }
    assert sorted(seen) == sorted(want)
    for r in doc["records"]:
        assert r["kind"] == "tcp" and r["seconds"] > 0 and r["cpu"] >= 0 and r["bytes"] > 0
        if r["workload"] == "pp1k-10":
            assert r["requests"] > 0 and r["req_s"] > 0
        else:
            assert r["bytes"] == 64 * 1024 * 1024  # the whole quick transfer arrived
    rows = {(s["loop"], s["workload"]): s for s in doc["summary"]}
    assert set(rows) == {(lp, w) for lp in ("asyncio", "uvloop") for w in ("pp1k-10", "bulk")}
    for (_, wl), row in rows.items():
        libs = {"usocket-plain", "usocket-flow"} if wl == "pp1k-10" else {"usocket-window"}
        assert set(row["ratios"]) == libs and row["windows"] == 2
        for lib in libs:
            for ref in ("protocol", "streams"):
                for what in ("throughput", "cpu"):
                    s = row["ratios"][lib][ref][what]
                    assert s["n"] == 2 and s["q1"] <= s["median"] <= s["q3"]
                    assert s["noisy"]  # two windows cannot tell the spread
    assert json.loads(summary.read_text())["summary"] == doc["summary"]
    # the headline sentence and the noise verdict close the output
    assert "The library (plain style) costs" in proc.stdout
    assert "on uvloop (tcp, 1 KiB x10 connections)" in proc.stdout
    assert "noisy: 6 of 6 cells" in proc.stdout.replace("\n", " ")
    # the report reads the run back, and draws the chart
    png = tmp_path / "ratios.png"
    for extra in ([], ["--compact", "--chart", str(png)]):
        rep = subprocess.run(
            [sys.executable, "-m", "benchmarks.report", *extra, str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert rep.returncode == 0, rep.stderr[-3000:]
        assert "noisy: 6 of 6 cells" in rep.stdout
    assert "| tcp 1 KiB x10 | flow |" in rep.stdout and "| tcp bulk | window |" in rep.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spread_of_fixed_numbers() -> None:
    s = spread([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s["median"], s["q1"], s["q3"], s["iqr"], s["n"]) == (3.0, 2.0, 4.0, 2.0, 5)
    assert s["rel"] == pytest.approx(2 / 3) and s["noisy"]
    tight = spread([1.00, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97])
    assert tight["median"] == 1.0 and tight["iqr"] == pytest.approx(0.03)
    assert not tight["noisy"]
    assert spread([1.0, 1.0, 1.0, 1.0])["noisy"]  # too few windows, however tight
    assert spread([2.0])["q1"] == spread([2.0])["q3"] == 2.0
    # even count: the median between the middle two; quartiles inclusive
    even = spread([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert (even["median"], even["q1"], even["q3"]) == (3.5, 2.25, 4.75)
    with pytest.raises(ValueError):
        spread([])


def test_paired_ratios_and_their_text() -> None:
    windows = [
        {"lib": {"x": 8.0}, "ref": {"x": 10.0}},
        {"lib": {"x": 9.0}, "ref": {"x": 0.0}},  # no ratio against nothing
        {"lib": {"x": 6.0}},  # the raw server's window failed
        {"lib": {"x": 12.0}, "ref": {"x": 10.0}},
    ]
    assert paired(windows, "lib", "ref", "x") == [0.8, 1.2]
    assert fmt(spread([0.86, 0.88, 0.9, 0.92, 0.94])) == "0.90 ±0.02"
    assert fmt(spread([0.5, 1.0, 1.5, 2.0, 2.5])) == "1.50 ±0.50~"
    assert fmt(None) == "-"
    assert percent_more(spread([1.25, 1.27, 1.29, 1.31, 1.33])) == "29 % more (±2)"
    assert percent_more({"median": 0.9}) == "10 % less"  # an older summary: no spread


def test_which_servers_run_which_workload() -> None:
    assert runs_on("usocket-plain", "tcp", "pp1k-10") and runs_on(
        "compiled-flow", "local", "pp1k-1"
    )
    assert not runs_on("usocket-window", "tcp", "pp1k-10")
    assert runs_on("usocket-window", "tcp", "echo") and not runs_on("usocket-flow", "tcp", "echo")
    assert runs_on("usocket-window", "tls", "pp1k-10") and not runs_on(
        "usocket-plain", "tls", "bulk"
    )
    assert runs_on("usocket-plain", "udp", "udp1k-10") and not runs_on(
        "usocket-flow", "udp", "udp1k-1"
    )
    assert runs_on("protocol", "udp", "udp1k-1") and not runs_on("streams", "udp", "udp1k-1")
    assert runs_on("buffered", "local", "bulk")
    # the apps written other ways: ping-pong on tcp and local, in both styles
    for app in ("usocket-plain-mv", "compiled-flow-bytes", "usocket-flow-small"):
        assert runs_on(app, "tcp", "pp1k-10") and runs_on(app, "local", "pp64k-1")
        assert not runs_on(app, "tcp", "bulk") and not runs_on(app, "tls", "pp1k-1")
        assert not runs_on(app, "udp", "udp1k-1")


def test_a_summary_from_before_the_styles_still_reads() -> None:
    legacy = {
        "summary": [
            {
                "kind": "tcp",
                "loop": "uvloop",
                "workload": "pp1k-10",
                "rounds": 5,
                "unit": "req/s",
                "lib": {"throughput": 100.0, "cpu_us_per_unit": 8.0},
                "protocol": {"throughput": 125.0, "cpu_us_per_unit": 6.0},
                "ratio_protocol": 0.8,
                "cpu_ratio_protocol": 1.33,
                "compiled_ratio_protocol": 0.86,
            }
        ]
    }
    doc = report.load(legacy)
    row = doc["summary"][0]
    assert report.ratio(row, "usocket-window")["median"] == 0.8
    assert report.ratio(row, "usocket-window", what="cpu")["median"] == 1.33
    assert report.ratio(row, "compiled-window")["median"] == 0.86
    assert "| tcp 1 KiB x10 | window | - | - | 0.80 / 1.33 | 0.86 / - |" in report.compact(legacy)


def test_report_help_is_argparse() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: python -m benchmarks.report")
    assert "--compact" in proc.stdout and "--chart" in proc.stdout


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_callgrind_counts_instructions_per_request(tmp_path: Path) -> None:
    out = tmp_path / "cg.json"
    argv = [sys.executable, "-m", "benchmarks.callgrind", "--kind", "tcp", "--loop", "asyncio"]
    argv += ["--impls", "protocol,usocket-plain", "--requests", str(CALLGRIND_REQUESTS)]
    argv += ["--json", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "user-space instructions only" in proc.stdout
    results = json.loads(out.read_text())
    assert [(r["kind"], r["loop"], r["impl"]) for r in results] == [
        ("tcp", "asyncio", "protocol"),
        ("tcp", "asyncio", "usocket-plain"),
    ]
    for r in results:
        assert r["requests"] == CALLGRIND_REQUESTS and r["ir_window"] > r["ir_empty"] > 0
        assert r["ir_per_request"] == (r["ir_window"] - r["ir_empty"]) / CALLGRIND_REQUESTS
    assert "usocket-plain" in report.callgrind_markdown(results)


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_callgrind_has_udp_and_tls_cells(tmp_path: Path) -> None:
    out = tmp_path / "cg.json"
    argv = [sys.executable, "-m", "benchmarks.callgrind", "--kind", "udp,tls", "--loop", "uvloop"]
    argv += ["--impls", "protocol,usocket-plain,usocket-flow", "--size", "1024,4096"]
    argv += ["--requests", "50", "--json", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    # UDP: 1 KiB datagrams, one echo app (no flow style); TLS: each size, each style
    assert [(r["kind"], r["size"], r["impl"]) for r in results] == [
        ("udp", 1024, "protocol"),
        ("udp", 1024, "usocket-plain"),
        *(
            ("tls", size, impl)
            for size in (1024, 4096)
            for impl in ("protocol", "usocket-plain", "usocket-flow")
        ),
    ]
    for r in results:
        assert r["ir_window"] > r["ir_empty"] > 0
    assert "| tls | 4096 | uvloop | usocket-flow |" in report.callgrind_markdown(results)


@pytest.mark.timeout(400)
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler for mypyc"
)
def test_compiled_server_in_a_tiny_run(tmp_path: Path) -> None:
    """The compiled build is made (or reused) and its server runs beside the pure one; the
    run would drop it with a warning if it were not really compiled."""
    out = tmp_path / "run.json"
    proc = tiny_run(
        out,
        380,
        *("--kinds", "tcp,udp", "--loops", "uvloop", "--workloads", "pp1k-10,udp1k-1"),
        *("--impls", "usocket-plain,compiled-plain,protocol"),
    )
    assert "no compiled server" not in proc.stdout, proc.stdout
    doc = json.loads(out.read_text())
    assert not doc["failures"], doc["failures"]
    seen = {(r["kind"], r["impl"]) for r in doc["records"]}
    impls = ("usocket-plain", "compiled-plain", "protocol")
    assert seen == {(k, i) for k in ("tcp", "udp") for i in impls}
    for row in doc["summary"]:
        assert row["ratios"]["compiled-plain"]["protocol"]["throughput"]["median"] > 0
        assert row["ratios"]["compiled-plain"]["protocol"]["cpu"]["median"] > 0


@pytest.mark.timeout(150)
def test_media_benchmark_in_its_smallest_form(tmp_path: Path) -> None:
    """Both servers on both loops, 3 streams: every window, step and set-up is recorded,
    each echo came back intact (no bad packet), and the summary pairs the windows."""
    out = tmp_path / "media.json"
    argv = [sys.executable, "-m", "benchmarks.media", "--loops", "asyncio,uvloop"]
    argv += ["--streams", "3", "--windows", "2", "--seconds", "0.3", "--warmup", "0.1"]
    argv += ["--start", "3", "--cap", "6", "--step-seconds", "0.3", "--grace", "0.2"]
    argv += ["--setups", "1", "--json", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=140, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    seen = sorted((r["loop"], r["impl"], r["window"]) for r in doc["windows"])
    assert seen == sorted(
        (lp, impl, w) for lp in ("asyncio", "uvloop") for impl in ("imedia", "raw") for w in (0, 1)
    )
    for r in doc["windows"]:
        assert r["count"] == 3 and r["sent"] > 0 and r["received"] > 0
        assert r["late"] <= r["received"] <= r["sent"] and r["duplicate"] == 0
        assert r["counters"]["bad"] == 0 and r["counters"]["foreign"] == 0
        assert r["server"]["echoed"] > 0 and r["server"]["cpu"] > 0
        assert r["pkt_per_cpu_s"] == pytest.approx(r["server"]["echoed"] / r["server"]["cpu"])
    for lp in ("asyncio", "uvloop"):
        row = doc["summary"][lp]
        ratio = row["ratio"]
        assert ratio["n"] == 2 and ratio["min"] <= ratio["median"] <= ratio["max"]
        for impl in ("imedia", "raw"):
            cap = doc["capacity"][lp][impl]
            assert [s["n"] for s in cap["steps"]][:1] == [3]
            # the answer agrees with its steps (which pass is the machine's business)
            for step in cap["steps"]:
                assert (step["n"] <= cap["max_streams"]) == step["passed"]
            assert 0 <= cap["max_streams"] <= 6
            assert all(s["counters"]["bad"] == 0 for s in cap["steps"])
        (setup,) = doc["setup"][lp]
        assert 0 < setup["connect_ms"] <= setup["first_echo_ms"]
        assert setup["total_ms"] == pytest.approx(setup["initialize_ms"] + setup["first_echo_ms"])
    assert "| loop | IMedia packets/CPU s | raw packets/CPU s |" in proc.stdout
    assert "asyncio: IMedia / raw" in proc.stdout and "uvloop: IMedia / raw" in proc.stdout


def test_media_benchmark_help_is_argparse() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.media", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: python -m benchmarks.media")
    assert "--quick" in proc.stdout and "--callgrind" in proc.stdout


def test_the_targets_lines_say_met_or_missed_per_cell() -> None:
    def s(median: float) -> dict[str, object]:
        return {"median": median, "iqr": 0.02, "n": 30, "noisy": False}

    row = {
        "kind": "tcp",
        "loop": "uvloop",
        "workload": "pp1k-10",
        "ratios": {
            "usocket-plain": {"protocol": {"throughput": s(0.96), "cpu": s(1.07)}},
            "compiled-flow": {"protocol": {"throughput": s(0.97), "cpu": s(1.01)}},
            "usocket-window": {"protocol": {"throughput": s(0.5), "cpu": s(2.0)}},
        },
    }
    cg = [
        {"kind": "tcp", "loop": "uvloop", "impl": "protocol", "ir_per_request": 4000.0},
        {"kind": "tcp", "loop": "uvloop", "impl": "compiled-plain", "ir_per_request": 5000.0},
        {"kind": "tcp", "loop": "uvloop", "impl": "usocket-plain", "ir_per_request": 9000.0},
        {"kind": "udp", "loop": "uvloop", "impl": "usocket-plain", "ir_per_request": 9000.0},
    ]
    lines = report.targets([row], cg)
    text = "\n".join(lines)
    assert lines[0].startswith("Against the speed targets")
    assert len(lines) == 5  # window style and udp (no reference counted) left out
    pure, compiled = lines[1], lines[2]
    assert "usocket-plain" in pure and "req/s 0.96 ±0.01 met (>= 0.95)" in pure
    assert "CPU 1.07 ±0.01 MISSED (<= 1.06)" in pure
    assert "req/s 0.97 ±0.01 MISSED (>= 0.98)" in compiled and "CPU 1.01 ±0.01 met" in compiled
    assert "5,000 = 1.25x raw met (<= 1.3)" in text
    assert "9,000 = 2.25x raw MISSED (<= 2.1)" in text
    assert report.targets([], []) == []


@pytest.mark.parametrize("kind", ["tcp", "local"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("style", ["plain", "flow"])
def test_the_floor_servers_echo_every_byte(
    tmp_path: Path, kind: str, loop: str, style: str
) -> None:
    """The floor (benchmarks/floor.py) is a working echo in both styles on both loops,
    reads through the loop's area on pure uvloop included: its instruction counts are
    those of a server that does the work."""
    import hashlib
    import os
    import socket

    from benchmarks.proc import Child

    argv = [sys.executable, "-m", "benchmarks.servers", "--kind", kind, "--loop", loop]
    argv += ["--impl", f"floor-{style}", "--dir", str(tmp_path)]
    server = Child(argv, f"floor {kind}/{style}/{loop}")
    try:
        addr = json.loads(server.expect("READY", 30))["echo"]
        if kind == "local":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(addr)
        else:
            s = socket.create_connection(tuple(addr))
        s.settimeout(10)
        sent, got = hashlib.sha256(), hashlib.sha256()
        with s:
            for size in (1024, 1024, 3000, 1, 1024, 4096):
                msg = os.urandom(size)
                sent.update(msg)
                s.sendall(msg)
                n = 0
                while n < size:
                    chunk = s.recv(size - n)
                    assert chunk, "the floor closed the connection"
                    got.update(chunk)
                    n += len(chunk)
        assert got.hexdigest() == sent.hexdigest()
    finally:
        server.close()
