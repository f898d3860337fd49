"""The statistics of a run: per-window paired ratios, their median and spread.

A cell (kind, loop, workload) is measured in many short windows; in each window every
server runs once, back to back, in a shuffled order. A library server's figure in one
window divided by the raw server's in the same window is one paired ratio; a cell's
figure is the median of its paired ratios, and its spread the interquartile range (IQR)
of them. A cell whose IQR is wider than `NOISY_IQR` of its median, or that has fewer
than `MIN_WINDOWS` windows, is marked noisy: its median is not to be trusted.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

NOISY_IQR = 0.10
"""A spread (IQR / median) above this marks a cell noisy."""
MIN_WINDOWS = 5
"""Fewer paired windows than this cannot say how wide the spread is: noisy."""


def spread(values: Sequence[float]) -> dict[str, Any]:
    """The median of `values`, its quartiles and whether the spread is too wide.

    Returns {"median", "q1", "q3", "iqr", "rel" (iqr / median), "n", "noisy"}; the
    quartiles are the inclusive ones (of the values themselves, like a box plot's).

    Raises:
        ValueError: `values` is empty.
    """
    vals = sorted(float(v) for v in values)
    if not vals:
        raise ValueError("spread() needs at least one value")
    med = statistics.median(vals)
    if len(vals) >= 2:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1 = q3 = med
    iqr = q3 - q1
    rel = iqr / abs(med) if med else float("inf")
    return {
        "median": med,
        "q1": q1,
        "q3": q3,
        "iqr": iqr,
        "rel": rel,
        "n": len(vals),
        "noisy": len(vals) < MIN_WINDOWS or rel > NOISY_IQR,
    }


def paired(
    windows: Sequence[dict[str, dict[str, Any]]], lib: str, ref: str, key: str
) -> list[float]:
    """The per-window ratios lib[key] / ref[key] over the windows that measured both."""
    return [
        w[lib][key] / w[ref][key]
        for w in windows
        if lib in w and ref in w and w[ref][key] and w[ref][key] > 0
    ]


def fmt(s: dict[str, Any] | None, digits: int = 2) -> str:
    """A spread as "0.85 ±0.03" (± half the IQR), "~" after it when noisy; "-" for none."""
    if s is None:
        return "-"
    text = f"{s['median']:.{digits}f}"
    if "iqr" in s:
        text += f" ±{s['iqr'] / 2:.{digits}f}"
    return text + ("~" if s.get("noisy") else "")


def percent_more(s: dict[str, Any]) -> str:
    """A ratio's median as "27 % more" / "5 % less", and its ± half-IQR in points."""
    pct = (s["median"] - 1) * 100
    word = "more" if pct >= 0 else "less"
    if "iqr" not in s:  # a summary from before the spread was recorded
        return f"{abs(pct):.0f} % {word}"
    return f"{abs(pct):.0f} % {word} (±{s['iqr'] / 2 * 100:.0f})"
