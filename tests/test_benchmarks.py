"""Smoke test of the benchmark runner: one tiny round of TCP on each loop, in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tiny_run(out: Path, timeout: float, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`python -m benchmarks` for one short round, its JSON written to `out`."""
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--rounds", "1", "--duration", "0.1"]
    argv += [*args, "--no-memory", "--no-chart", "--json", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc


def test_one_tiny_round_on_both_loops(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    summary = tmp_path / "summary.json"
    tiny_run(
        out,
        50,
        *("--kinds", "tcp", "--loops", "asyncio,uvloop", "--workloads", "pp1k-10,bulk"),
        *("--impls", "lib,protocol,streams", "--summary", str(summary)),
    )
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine", "args", "records", "summary", "memory"}
    records = doc["records"]
    # 2 loops x 2 workloads x 3 implementations x 1 round
    assert len(records) == 12
    seen = {(r["loop"], r["workload"], r["impl"]) for r in records}
    assert len(seen) == 12
    for r in records:
        assert r["kind"] == "tcp" and r["round"] == 0
        assert r["seconds"] > 0 and r["cpu"] >= 0 and r["throughput"] > 0
        assert r["bytes"] > 0
        if r["workload"] == "pp1k-10":
            assert r["requests"] > 0 and r["req_s"] > 0
        else:
            assert r["bytes"] == 64 * 1024 * 1024  # the whole quick transfer arrived
    rows = {(s["loop"], s["workload"]): s for s in doc["summary"]}
    assert set(rows) == {(lp, w) for lp in ("asyncio", "uvloop") for w in ("pp1k-10", "bulk")}
    for s in rows.values():
        assert s["ratio_protocol"] > 0 and s["cpu_ratio_protocol"] > 0 and s["ratio_streams"] > 0
    small = json.loads(summary.read_text())
    assert small["summary"] == doc["summary"]


@pytest.mark.timeout(400)
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler for mypyc"
)
def test_compiled_server_in_a_tiny_round(tmp_path: Path) -> None:
    """The compiled build is made (or reused) and its server runs beside the pure one; the
    run would drop it with a warning if it were not really compiled."""
    out = tmp_path / "run.json"
    proc = tiny_run(
        out,
        380,
        *("--kinds", "tcp,udp", "--loops", "uvloop", "--workloads", "pp1k-10,udp1k-1"),
        *("--impls", "lib,compiled,protocol"),
    )
    assert b"no compiled server" not in proc.stdout, proc.stdout.decode(errors="replace")
    doc = json.loads(out.read_text())
    assert not doc["failures"], doc["failures"]
    seen = {(r["kind"], r["impl"]) for r in doc["records"]}
    assert seen == {(k, i) for k in ("tcp", "udp") for i in ("lib", "compiled", "protocol")}
    for row in doc["summary"]:
        assert row["compiled_ratio_protocol"] > 0 and row["compiled_cpu_ratio_protocol"] > 0
