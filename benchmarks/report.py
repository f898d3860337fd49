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


def markdown(doc: dict[str, Any]) -> str:
    compiled = any("compiled_ratio_protocol" in row for row in doc["summary"])
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.report RUN_OR_SUMMARY.json", file=sys.stderr)
        return 2
    print(markdown(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
