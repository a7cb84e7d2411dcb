"""Experiment charts as PNG bytes (matplotlib, Agg backend: no display, thread-safe use per figure)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (after selecting the backend)

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _dates(values: Sequence[str]) -> list[date]:
    return [date.fromisoformat(v) for v in values]


def lift_chart(
    *,
    title: str,
    metric: str,
    control: str,
    series: Sequence[Mapping[str, Any]],
    daily: Mapping[str, Sequence[tuple[str, float]]] | None,
    forecast: Mapping[str, Sequence[tuple[str, float, float, float]]] | None = None,
    band_label: str,
) -> bytes:
    """Top: cumulative relative lift per treatment with its band; bottom: the daily metric per variant.

    `series`: [{variant, days, cumulative_lift, band_low, band_high}] (fractions; None = not computable).
    `daily`: {variant: [(day, value)]}; `forecast`: {variant: [(day, predicted, low, high)]}.
    """
    fig = Figure(figsize=(9, 6.5 if daily else 4.0), dpi=100)
    rows = 2 if daily else 1
    ax = fig.add_subplot(rows, 1, 1)
    for i, s in enumerate(series):
        colour = PALETTE[(i + 1) % len(PALETTE)]
        points = [(d, y, lo, hi) for d, y, lo, hi in zip(_dates(s["days"]), s["cumulative_lift"], s["band_low"],
                                                         s["band_high"], strict=True) if y is not None]
        if not points:
            continue
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] * 100 for p in points], color=colour, marker="o", markersize=3,
                label=f"{s['variant']} vs {control}")
        banded = [p for p in points if p[2] is not None and p[3] is not None]
        if banded:
            ax.fill_between([p[0] for p in banded], [p[2] * 100 for p in banded], [p[3] * 100 for p in banded],
                            color=colour, alpha=0.18, linewidth=0)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"cumulative lift of {metric} (%)")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="best", fontsize=8, title=band_label, title_fontsize=7)
    ax.grid(alpha=0.3)
    if daily:
        ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
        for i, (variant, points) in enumerate(sorted(daily.items(), key=lambda kv: kv[0] != control)):
            colour = PALETTE[i % len(PALETTE)]
            if points:
                ax2.plot(_dates([p[0] for p in points]), [p[1] for p in points], color=colour, label=variant)
            ahead = (forecast or {}).get(variant) or []
            if ahead:
                xs = _dates([p[0] for p in ahead])
                ax2.plot(xs, [p[1] for p in ahead], color=colour, linestyle="--", linewidth=1)
                ax2.fill_between(xs, [p[2] for p in ahead], [p[3] for p in ahead], color=colour, alpha=0.1,
                                 linewidth=0)
        ax2.set_ylabel(f"daily {metric} per active user")
        ax2.legend(loc="best", fontsize=8, title="dashed: forecast", title_fontsize=7)
        ax2.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
