"""A run's (or a summary's) JSON as Markdown tables, the headline and the chart.

``python -m benchmarks.report [--compact] [--chart PNG] RUN_OR_SUMMARY.json``

A summary row is one cell (kind, loop, workload); ``row["ratios"][lib][ref]`` holds the
spread (benchmarks/stats.py) of the per-window paired ratios of library server ``lib``
against raw server ``ref``: ``"throughput"`` (higher is better for the library) and
``"cpu"`` (server CPU per request or per MB; lower is better).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .stats import NOISY_IQR, fmt, percent_more

MIB = 1 << 20
REFERENCE = "protocol"
KINDS = ("tcp", "tls", "local", "udp")
LOOPS = ("asyncio", "uvloop")
WORKLOAD_ORDER = ("pp1k-1", "pp1k-10", "pp64k-1", "pp64k-10", "bulk", "echo", "udp1k-1", "udp1k-10")
WORKLOAD_NAMES = {
    "pp1k-1": "1 KiB x1",
    "pp1k-10": "1 KiB x10",
    "pp64k-1": "64 KiB x1",
    "pp64k-10": "64 KiB x10",
    "bulk": "bulk",
    "echo": "bulk echo",
    "udp1k-1": "1 KiB x1",
    "udp1k-10": "1 KiB x10",
}
HEADLINE = ("tcp", "uvloop", "pp1k-10", "usocket-plain")
"""The headline's cell: TCP, 1 KiB x 10 connections on uvloop, the plain-style app."""
LEGACY = {"lib": "usocket-window", "compiled": "compiled-window"}
"""Summaries written before the app styles were named: their library server was this one
(UDP's: `LEGACY_UDP`). They have a median per cell and no spread ("noisy" is None)."""
LEGACY_UDP = {"lib": "usocket-plain", "compiled": "compiled-plain"}


def ratio(row: dict[str, Any], lib: str, ref: str = REFERENCE, what: str = "throughput") -> Any:
    """The spread of one paired ratio of a row, or None."""
    return row.get("ratios", {}).get(lib, {}).get(ref, {}).get(what)


def lib_impls(summary: list[dict[str, Any]]) -> list[str]:
    """The library servers of a summary, in a fixed order (pure before compiled)."""
    from .servers import LIB_IMPLS

    seen = {lib for row in summary for lib in row.get("ratios", {})}
    return [i for i in LIB_IMPLS if i in seen]


def load(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with its summary in the current form (older summaries had one median per
    build, no spread, under keys such as ``ratio_protocol``)."""
    rows = []
    for row in doc.get("summary", []):
        if "ratios" not in row:
            row = dict(row)
            ratios: dict[str, Any] = {}
            legacy = LEGACY_UDP if row["kind"] == "udp" else LEGACY
            for build, lib in legacy.items():
                pre = "" if build == "lib" else f"{build}_"
                for ref in ("protocol", "buffered", "streams"):
                    for what, key in (("throughput", "ratio_"), ("cpu", "cpu_ratio_")):
                        v = row.get(f"{pre}{key}{ref}")
                        if v is not None:
                            s = {"median": v, "n": row.get("rounds", 0), "noisy": None}
                            ratios.setdefault(lib, {}).setdefault(ref, {})[what] = s
            row["ratios"] = ratios
            row["impls"] = {
                legacy.get(k, k): row[k] for k in ("lib", "compiled", REFERENCE) if k in row
            }
            row["windows"] = row.get("rounds", 0)
        rows.append(row)
    rows.sort(
        key=lambda r: (
            KINDS.index(r["kind"]),
            WORKLOAD_ORDER.index(r["workload"]),
            LOOPS.index(r["loop"]),
        )
    )
    return {**doc, "summary": rows}


def cells(summary: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Every (row, library server) pair of a summary that has a ratio against `Protocol`."""
    return [
        (row, lib)
        for row in summary
        for lib in lib_impls([row])
        if ratio(row, lib) is not None or ratio(row, lib, what="cpu") is not None
    ]


def noisy(row: dict[str, Any], lib: str) -> bool:
    """Is either ratio of `lib` against `Protocol` in this row too spread to trust?"""
    return any(bool((ratio(row, lib, what=w) or {}).get("noisy")) for w in ("throughput", "cpu"))


def verdict(summary: list[dict[str, Any]]) -> str:
    """One line: how many cells are too spread to trust, and which."""
    all_cells = cells(summary)
    bad = [(row, lib) for row, lib in all_cells if noisy(row, lib)]
    if not all_cells:
        return "no paired cells: nothing measured against raw Protocol"
    if all((ratio(row, lib) or {}).get("noisy") is None for row, lib in all_cells):
        return "no spread recorded (a summary from before the paired windows): noise unknown"
    if not bad:
        return (
            f"steady: in every one of the {len(all_cells)} cells the spread (IQR) of the "
            f"paired ratios is within {NOISY_IQR:.0%} of the median"
        )
    names = ", ".join(f"{r['kind']} {r['loop']} {r['workload']} {lib}" for r, lib in bad[:4]) + (
        ", ..." if len(bad) > 4 else ""
    )
    return (
        f"noisy: {len(bad)} of {len(all_cells)} cells (marked ~) have a spread (IQR) wider "
        f"than {NOISY_IQR:.0%} of the median or too few windows ({names}); do not read a "
        "figure from them: rerun with more --windows, or on a quieter machine"
    )


def headline(summary: list[dict[str, Any]]) -> str | None:
    """The one-sentence result: the plain-style library's server CPU per request against
    raw `Protocol` at TCP 1 KiB x 10 on uvloop (or the first ping-pong cell there is)."""
    kind, loop, wl, lib = HEADLINE
    rows = [r for r in summary if r["kind"] == kind and r["loop"] == loop and r["workload"] == wl]
    rows += [r for r in summary if r["workload"].startswith(("pp", "udp"))]
    for row in rows:
        libs = [lib] if ratio(row, lib, what="cpu") else []
        libs += [x for x in lib_impls([row]) if x != lib]
        for name in libs:
            cpu, tp = ratio(row, name, what="cpu"), ratio(row, name)
            if cpu is None or tp is None:
                continue
            style = name.partition("-")[2]
            build = "compiled library" if name.startswith("compiled") else "library"
            return (
                f"The {build} ({style} style) costs {percent_more(cpu)} server CPU per "
                f"request than raw asyncio Protocol on {row['loop']} "
                f"({row['kind']}, {WORKLOAD_NAMES[row['workload']]} connections), and serves "
                f"{fmt({**tp, 'noisy': False})} of its requests/s; "
                + (
                    f"median ± half the IQR of {cpu['n']} paired windows"
                    if "iqr" in cpu
                    else f"median of {cpu['n']} paired rounds, no spread recorded"
                )
                + (", too spread to trust" if noisy(row, name) else "")
                + "."
            )
    return None


def markdown(doc: dict[str, Any]) -> str:
    """Every cell: throughput and CPU ratios (median ± half IQR, ~ when noisy)."""
    doc = load(doc)
    lines = [
        "| kind | loop | workload | library server | library | raw Protocol | x Protocol "
        "| CPU/unit x Protocol | x Buffered | x Streams | windows |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row, lib in cells(doc["summary"]):
        unit = row.get("unit", "")
        ours = row.get("impls", {}).get(lib, {}).get("throughput")
        ref = row.get("impls", {}).get(REFERENCE, {}).get("throughput")
        lines.append(
            f"| {row['kind']} | {row['loop']} | {row['workload']} | {lib} "
            f"| {'-' if ours is None else f'{ours:,.0f} {unit}'} "
            f"| {'-' if ref is None else f'{ref:,.0f}'} "
            f"| {fmt(ratio(row, lib))} | {fmt(ratio(row, lib, what='cpu'))} "
            f"| {fmt(ratio(row, lib, 'buffered'))} | {fmt(ratio(row, lib, 'streams'))} "
            f"| {row.get('windows', '-')} |"
        )
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
    if doc.get("callgrind"):
        lines += ["", callgrind_markdown(doc["callgrind"])]
    return "\n".join(lines)


def callgrind_markdown(results: list[dict[str, Any]]) -> str:
    """Instructions per request, and the ratio to raw `Protocol` on the same loop."""
    ref = {
        (r["kind"], r["loop"], r.get("size", 1024)): r["ir_per_request"]
        for r in results
        if r["impl"] == REFERENCE
    }
    lines = [
        "| kind | bytes | loop | server | instructions per request | x Protocol |",
        "|---|--:|---|---|--:|--:|",
    ]
    for r in results:
        size = r.get("size", 1024)
        base = ref.get((r["kind"], r["loop"], size))
        x = f"{r['ir_per_request'] / base:.2f}" if base else "-"
        lines.append(
            f"| {r['kind']} | {size} | {r['loop']} | {r['impl']} "
            f"| {r['ir_per_request']:,.0f} | {x} |"
        )
    return "\n".join(lines)


def compact(doc: dict[str, Any]) -> str:
    """The README's table: a row per kind, workload and app style; a column per loop and
    build; each cell "throughput / CPU per unit" against raw `Protocol`, each as median ±
    half the IQR of the paired windows (~: noisy)."""
    doc = load(doc)
    summary = doc["summary"]
    libs = lib_impls(summary)
    builds = [b for b in ("usocket", "compiled") if any(x.startswith(b + "-") for x in libs)]
    from .servers import STYLES, lib_style

    styles = [s for s in STYLES if any(lib_style(x) == s for x in libs)]
    cols = [(lp, b) for lp in LOOPS for b in builds]
    head = "| kind, workload | app style |" + "".join(
        f" {lp}{'' if b == 'usocket' else ', compiled'} |" for lp, b in cols
    )
    lines = [
        head + " x Streams req/s (asyncio / uvloop) |",
        "|---|---|" + "--:|" * (len(cols) + 1),
    ]
    rows = {(r["kind"], r["loop"], r["workload"]): r for r in summary}
    for kind in KINDS:
        for wl in WORKLOAD_ORDER:
            for style in styles:
                out = []
                for lp, b in cols:
                    row = rows.get((kind, lp, wl), {})
                    tp = ratio(row, f"{b}-{style}")
                    cpu = ratio(row, f"{b}-{style}", what="cpu")
                    out.append("-" if tp is None and cpu is None else f"{fmt(tp)} / {fmt(cpu)}")
                if all(c == "-" for c in out):
                    continue
                streams = " / ".join(
                    fmt(ratio(rows.get((kind, lp, wl), {}), f"usocket-{style}", "streams"))
                    for lp in LOOPS
                )
                lines.append(
                    f"| {kind} {WORKLOAD_NAMES[wl]} | {style} | "
                    + " | ".join(out)
                    + f" | {'-' if kind == 'udp' else streams} |"
                )
    return "\n".join(lines)


def chart(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    """Horizontal bars of the throughput and CPU-per-unit ratios against raw `Protocol`,
    one bar per cell, its interquartile range as an error bar and its value written past
    the bar's end (each bar its own row, so no two labels meet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = load({"summary": summary})["summary"]
    bars = cells(summary)
    if not bars:
        return
    names = [f"{r['kind']} {WORKLOAD_NAMES[r['workload']]}, {r['loop']}, {lib}" for r, lib in bars]
    colours = {"asyncio": "#4c72b0", "uvloop": "#dd8452"}
    height = 0.22 * len(bars) + 1.6
    fig, axes = plt.subplots(1, 2, figsize=(13, height), sharey=True, layout="constrained")
    ys = list(range(len(bars)))[::-1]
    for ax, what, target, xlabel in (
        (axes[0], "throughput", 0.9, "throughput: library / raw Protocol (higher is better)"),
        (axes[1], "cpu", 1.1, "server CPU per unit: library / raw Protocol (lower is better)"),
    ):
        top = 0.0
        for y, (row, lib) in zip(ys, bars, strict=True):
            s = ratio(row, lib, what=what)
            if s is None:
                continue
            med = s["median"]
            lo, hi = s.get("q1", med), s.get("q3", med)
            colour = colours[row["loop"]]
            hatch = "//" if lib.startswith("compiled") else None
            ax.barh(y, med, 0.7, color=colour, hatch=hatch, edgecolor="white", linewidth=0)
            ax.errorbar(med, y, xerr=[[med - lo], [hi - med]], fmt="none", ecolor="black", lw=0.8)
            text = f"{med:.2f}" + (f" ±{(hi - lo) / 2:.2f}" if "iqr" in s else "")
            text += " ~" if s.get("noisy") else ""
            ax.text(
                hi + 0.02,
                y,
                text,
                va="center",
                fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.85},
            )
            top = max(top, hi)
        ax.set_xlim(0, max(1.3, top + 0.35))
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.axvline(target, color="red", linestyle="--", linewidth=0.8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(names, fontsize=7)
    axes[0].set_ylim(-0.7, len(bars) - 0.3)
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=lp) for lp, c in colours.items()]
    handles.append(Patch(facecolor="grey", hatch="//", edgecolor="white", label="compiled"))
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=3)
    fig.suptitle(title + "\nbars: median; whiskers: interquartile range; ~: noisy", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Print a benchmark run's JSON (benchmarks/results/run-*.json) or a summary "
        "(benchmarks/summary.json) as Markdown tables, with its headline and noise verdict.",
    )
    p.add_argument("file", type=Path, help="a run's or a summary's JSON")
    p.add_argument(
        "--compact",
        action="store_true",
        help="the README's table: a row per kind, workload and app style",
    )
    p.add_argument("--chart", type=Path, default=None, help="also draw the chart into this PNG")
    args = p.parse_args(argv)
    try:
        doc = load(json.loads(args.file.read_text()))
    except (OSError, ValueError, KeyError) as e:
        p.error(f"cannot read {args.file}: {e}")
    print(compact(doc) if args.compact else markdown(doc))
    line = headline(doc["summary"])
    if line:
        print("\n" + line)
    print(verdict(doc["summary"]))
    if args.chart is not None:
        chart(
            doc["summary"],
            args.chart,
            f"usocket_asyncio vs raw asyncio Protocol ({doc.get('when', '')})",
        )
        print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


TARGETS = {
    "compiled": {"throughput": 0.98, "cpu": 1.03},
    "pure": {"throughput": 0.95, "cpu": 1.06},
}
"""The speed targets of the 1 KiB ping-pong cells (tcp and local, x1 and x10, plain and
flow styles, both loops), paired against raw `Protocol`: requests/s at least, server CPU
per request at most."""
IR_TARGETS = {("compiled", "uvloop"): 1.3, ("compiled", "asyncio"): 1.0, ("pure", "uvloop"): 2.1}
"""Instructions per 1 KiB request against raw `Protocol` (callgrind), at most."""
TARGET_STYLES = ("plain", "flow")


def _met(value: float, bound: float, at_least: bool) -> str:
    ok = value >= bound if at_least else value <= bound
    return f"{'met' if ok else 'MISSED'} ({'>=' if at_least else '<='} {bound:g})"


def targets(summary: list[dict[str, Any]], callgrind: list[dict[str, Any]]) -> list[str]:
    """The run's figures against the speed targets, one line a cell: the 1 KiB ping-pong
    cells' paired ratios (median ± half the IQR; "~" marks a spread too wide to trust)
    and the instructions per request. Cells the run did not measure are left out."""
    lines = []
    for row in summary:
        if row["kind"] not in ("tcp", "local") or row["workload"] not in ("pp1k-1", "pp1k-10"):
            continue
        for lib in lib_impls([row]):
            build, _, style = lib.partition("-")
            if style not in TARGET_STYLES:
                continue
            goal = TARGETS["compiled" if build == "compiled" else "pure"]
            parts = []
            for what, word, at_least in (("throughput", "req/s", True), ("cpu", "CPU", False)):
                s = ratio(row, lib, what=what)
                if s is not None:
                    parts.append(f"{word} {fmt(s)} {_met(s['median'], goal[what], at_least)}")
            if parts:
                name = f"{row['kind']} {WORKLOAD_NAMES[row['workload']]} {row['loop']} {lib}"
                lines.append(f"  {name:<42} " + "; ".join(parts))
    ref = {
        (r["kind"], r["loop"]): r["ir_per_request"]
        for r in callgrind
        if r["impl"] == REFERENCE and r.get("size", 1024) == 1024
    }
    for r in callgrind:
        build = "compiled" if r["impl"].startswith("compiled") else "pure"
        bound = IR_TARGETS.get((build, r["loop"]))
        base = ref.get((r["kind"], r["loop"]))
        if r["impl"] == REFERENCE or bound is None or base is None or r.get("size", 1024) != 1024:
            continue
        x = r["ir_per_request"] / base
        name = f"{r['kind']} 1 KiB {r['loop']} {r['impl']}"
        lines.append(
            f"  {name:<42} instructions {r['ir_per_request']:,.0f} = {x:.2f}x raw "
            + _met(x, bound, False)
        )
    if lines:
        lines.insert(
            0, "Against the speed targets (paired ratios ÷ raw asyncio Protocol, same loop):"
        )
    return lines
