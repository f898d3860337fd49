"""Print a run's (or a summary's) JSON as markdown tables: ``python -m benchmarks.report FILE``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MIB = 1 << 20


def ratio(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    return "-" if v is None else f"{v:.2f}"


def ratio_key(build: str, key: str) -> str:
    """A summary key for one library build: `ratio_protocol` is the pure build's,
    `compiled_ratio_protocol` the compiled build's."""
    return key if build == "lib" else f"{build}_{key}"


def has_compiled(summary: list[dict[str, Any]]) -> bool:
    """Did the run measure the compiled build?"""
    return any(ratio_key("compiled", "ratio_protocol") in row for row in summary)


def markdown(doc: dict[str, Any]) -> str:
    compiled = has_compiled(doc["summary"])
    head = "| kind | loop | workload | library | raw Protocol | x Protocol | CPU/unit x Protocol "
    rule = "|---|---|---|--:|--:|--:|--:|"
    if compiled:
        head += "| compiled x Protocol | compiled CPU/unit x Protocol "
        rule += "--:|--:|"
    lines = [head + "| x Buffered | x Streams |", rule + "--:|--:|"]
    for row in doc["summary"]:
        lib = row.get("lib", {}).get("throughput")
        ref = row.get("protocol", {}).get("throughput")
        unit = row["unit"]
        cells = (
            f"| {row['kind']} | {row['loop']} | {row['workload']} "
            f"| {lib:,.0f} {unit} | {ref:,.0f} | {ratio(row, 'ratio_protocol')} "
            f"| {ratio(row, 'cpu_ratio_protocol')} "
        )
        if compiled:
            cells += (
                f"| {ratio(row, 'compiled_ratio_protocol')} "
                f"| {ratio(row, 'compiled_cpu_ratio_protocol')} "
            )
        lines.append(cells + f"| {ratio(row, 'ratio_buffered')} | {ratio(row, 'ratio_streams')} |")
    if doc.get("memory"):
        lines += [
            "",
            "| loop | server (slow drain) | pushed MiB | peak RSS growth MiB |",
            "|---|---|--:|--:|",
        ]
        for m in doc["memory"]:
            lines.append(
                f"| {m['loop']} | {m['impl']} | {m['pushed'] / MIB:.0f} "
                f"| {m['rss_growth'] / MIB:.1f} |"
            )
    return "\n".join(lines)


PAIRS = [
    ("1 KiB x1 / x10", ("pp1k-1", "pp1k-10")),
    ("64 KiB x1 / x10", ("pp64k-1", "pp64k-10")),
    ("bulk 1 GiB / echo 512 MiB", ("bulk", "echo")),
    ("1 KiB x1 / x10", ("udp1k-1", "udp1k-10")),
]


def compact(doc: dict[str, Any]) -> str:
    """The README's table: per kind and pair of workloads, "throughput/CPU" ratios
    against raw `Protocol` for each loop and build, and the ratio against Streams."""
    rows = {(r["kind"], r["loop"], r["workload"]): r for r in doc["summary"]}
    kinds = [k for k in ("tcp", "tls", "local", "udp") if any(r[0] == k for r in rows)]
    builds = [("lib", "")]
    if has_compiled(doc["summary"]):
        builds.append(("compiled", ", compiled"))
    loops = ("asyncio", "uvloop")
    head = "| kind, workload |" + "".join(f" {lp}{name} |" for lp in loops for _, name in builds)
    lines = [
        head + " x Streams req/s (asyncio / uvloop) |",
        "|---|" + "--:|" * (len(loops) * len(builds) + 1),
    ]
    for kind in kinds:
        for label, (a, b) in PAIRS:
            if (kind, "asyncio", a) not in rows and (kind, "uvloop", a) not in rows:
                continue
            cells = []
            for lp in loops:
                for build, _ in builds:
                    pair = []
                    for wl in (a, b):
                        row = rows.get((kind, lp, wl), {})
                        pair.append(
                            f"{ratio(row, ratio_key(build, 'ratio_protocol'))}/"
                            f"{ratio(row, ratio_key(build, 'cpu_ratio_protocol'))}"
                        )
                    cells.append(", ".join(pair))
            streams = [
                ", ".join(ratio(rows.get((kind, lp, wl), {}), "ratio_streams") for wl in (a, b))
                for lp in loops
            ]
            streams_cell = "-" if kind == "udp" else " / ".join(streams)
            lines.append(f"| {kind} {label} | " + " | ".join(cells) + f" | {streams_cell} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    form = markdown
    if args and args[0] == "--compact":
        form, args = compact, args[1:]
    if len(args) != 1:
        print("usage: python -m benchmarks.report [--compact] RUN_OR_SUMMARY.json", file=sys.stderr)
        return 2
    print(form(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
