"""PNG plots of a ``desq bench`` result: one bar chart per benchmark beside its anchor, one summary.

A benchmark that has a ``plot`` entry ({"unit", "bars": [{"label", "min", "median", "max"}, ...]})
gets a chart of medians with min-max whiskers; every benchmark with a ``progress`` (its figure
over its goal, 1.0 = goal met exactly, higher is better) appears in the summary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

DESQ = "#2b6cb0"
ANCHOR = "#a0aec0"


def slug(name: str) -> str:
    """A file name for a benchmark's title."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def bar_chart(name: str, plot: dict[str, Any], path: Path) -> None:
    """Medians with min-max whiskers, desq first and the anchors after it."""
    bars = plot["bars"]
    labels = [b["label"] for b in bars]
    medians = [b["median"] for b in bars]
    low = [b["median"] - b["min"] for b in bars]
    high = [b["max"] - b["median"] for b in bars]
    colours = [DESQ if i == 0 else ANCHOR for i in range(len(bars))]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.6 * len(bars)))
    ax.barh(labels, medians, xerr=[low, high], color=colours, capsize=4)
    ax.invert_yaxis()
    ax.set_xlabel(plot["unit"] + ("  (lower is better)" if plot.get("lower_is_better") else ""))
    ax.set_title(name, fontsize=10)
    for y, bar in enumerate(bars):
        value = bar["median"]
        ax.annotate(f"{value:,.3g}" if value < 100 else f"{value:,.0f}", (max(value, bar["max"]), y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Each goal's figure over the goal on a log axis: right of the line is met."""
    rows = [(name, r["progress"]) for name, r in results.items() if isinstance(r.get("progress"), (int, float)) and r["progress"] > 0]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.45 * len(rows)))
    names = [name for name, _ in rows]
    values = [value for _, value in rows]
    ax.barh(names, values, color=[DESQ if v >= 1 else "#c53030" for v in values])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ticks = [t for t in (0.01, 0.03, 0.1, 0.25, 0.5, 1, 2, 4, 10, 30, 100) if min(values) / 2 <= t <= max(values) * 2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_yaxis()
    ax.set_xlabel("figure / goal (1 = goal; right of the line is met)")
    ax.tick_params(axis="y", labelsize=8)
    for y, value in enumerate(values):
        ax.annotate(f"{value:.3g}", (value, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(results: dict[str, dict[str, Any]], folder: Path) -> list[Path]:
    """All the PNGs of one run into ``folder`` (old ones removed first); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    written = []
    for name, result in results.items():
        if "plot" in result:
            path = folder / f"{slug(name)}.png"
            bar_chart(name, result["plot"], path)
            written.append(path)
    summary = folder / "summary.png"
    summary_chart(results, summary)
    if summary.exists():
        written.insert(0, summary)
    return written
