"""Experiment charts as PNG bytes (matplotlib, Agg backend: no display, thread-safe use per figure)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402  (after selecting the backend)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _dates(values: Sequence[str]) -> list[date]:
    return [date.fromisoformat(v) for v in values]


def _lift_panel(ax: Axes, series: Sequence[Mapping[str, Any]], *, control: str, ylabel: str, title: str,
                band_label: str, margin: float | None = None, lower_is_better: bool = False) -> None:
    """Cumulative relative lift per treatment with its band; `margin`: a guardrail's tolerated harm."""
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
    if margin is not None:
        harm = margin * 100 * (1 if lower_is_better else -1)
        ax.axhline(harm, color="#444444", linewidth=1, linestyle="--",
                   label=f"{'+' if harm > 0 else '−'}{abs(harm):.0f}% tolerated (margin)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8, title=band_label, title_fontsize=7)
    ax.grid(alpha=0.3)


def lift_chart(
    *,
    title: str,
    metric: str,
    control: str,
    series: Sequence[Mapping[str, Any]],
    daily: Mapping[str, Sequence[tuple[str, float, bool]]] | None,
    forecast: Mapping[str, Sequence[tuple[str, float, float, float]]] | None = None,
    band_label: str,
    headline: str | None = None,
    guardrail: Mapping[str, Any] | None = None,
) -> bytes:
    """Top: cumulative relative lift per treatment with its band; then, when a guardrail decided the verdict,
    that guardrail's cumulative lift with its margin; bottom: the daily metric per variant.

    `series`: [{variant, days, cumulative_lift, band_low, band_high}] (fractions; None = not computable).
    `daily`: {variant: [(day, value, partial)]}: partial days are drawn hollow and dotted, apart from the line;
    `forecast`: {variant: [(day, predicted, low, high)]} (fitted on complete days only).
    `guardrail`: {metric, series, margin, lower_is_better, title}. `headline`: the verdict, above everything.
    """
    rows = 1 + (guardrail is not None) + (daily is not None)
    heights = {1: 4.0, 2: 6.5, 3: 9.0}[rows]
    fig = Figure(figsize=(9, heights + (0.4 if headline else 0.0)), dpi=100)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    _lift_panel(axes[0], series, control=control, ylabel=f"cumulative lift of {metric} (%)", title=title,
                band_label=band_label)
    if guardrail is not None:
        _lift_panel(axes[1], guardrail["series"], control=control,
                    ylabel=f"cumulative lift of {guardrail['metric']} (%)", title=guardrail["title"],
                    band_label=band_label, margin=guardrail.get("margin"),
                    lower_is_better=bool(guardrail.get("lower_is_better")))
    if daily is not None:
        ax2 = axes[-1]
        any_partial = False
        # The scale follows the complete days and the forecast: a partial day's value (a few hours of
        # data) may lie far off; it is then drawn at the edge, pointing out, with its value written.
        steady = [p[1] for pts in daily.values() for p in pts if not p[2]]
        steady += [x for pts in (forecast or {}).values() for p in pts for x in (p[2], p[3])]
        low, high = (min(steady), max(steady)) if steady else (None, None)
        if low is not None and high is not None:
            pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
            low, high = low - pad, high + pad
        off_scale: dict[tuple[str, str, float], list[str]] = {}
        for i, (variant, points) in enumerate(sorted(daily.items(), key=lambda kv: kv[0] != control)):
            colour = PALETTE[i % len(PALETTE)]
            complete = [p for p in points if not p[2]]
            partial = [p for p in points if p[2]]
            if complete:
                ax2.plot(_dates([p[0] for p in complete]), [p[1] for p in complete], color=colour, label=variant)
            for p in partial:
                any_partial = True
                y, marker = p[1], "o"
                if high is not None and y > high:
                    y, marker = high, "^"
                elif low is not None and y < low:
                    y, marker = low, "v"
                near = min(complete, key=lambda c: abs((date.fromisoformat(c[0]) - date.fromisoformat(p[0])).days),
                           default=None)
                if near is not None:  # a dotted link to the nearest complete day, so the eye keeps the line
                    ax2.plot(_dates([near[0], p[0]]), [near[1], y], color=colour, linestyle=":", linewidth=1)
                ax2.plot(_dates([p[0]]), [y], color=colour, marker=marker, markersize=7, markerfacecolor="white",
                         linestyle="none", clip_on=False)
                if marker != "o":
                    off_scale.setdefault((p[0], marker, y), []).append(f"{variant} {p[1]:.3g}")
            ahead = (forecast or {}).get(variant) or []
            if ahead:
                xs = _dates([p[0] for p in ahead])
                ax2.plot(xs, [p[1] for p in ahead], color=colour, linestyle="--", linewidth=1)
                ax2.fill_between(xs, [p[2] for p in ahead], [p[3] for p in ahead], color=colour, alpha=0.1,
                                 linewidth=0)
        for (day, marker, y), values in off_scale.items():  # one note per off-scale partial day
            ax2.annotate("partial day, off the scale:\n" + "\n".join(values), (date.fromisoformat(day), y),
                         textcoords="offset points", xytext=(-8, 0), ha="right",
                         va="top" if marker == "^" else "bottom", fontsize=7, color="#333333",
                         bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
        if low is not None and high is not None:
            ax2.set_ylim(low, high)
        handles, labels = ax2.get_legend_handles_labels()
        if any_partial:
            handles.append(Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle=":"))
            labels.append("partial day, not in the forecast (▲▼: off the scale)")
        ax2.set_ylabel(f"daily {metric} per active user")
        ax2.legend(handles, labels, loc="best", fontsize=8, title="dashed: forecast from complete days",
                   title_fontsize=7)
        ax2.grid(alpha=0.3)
    if headline:
        fig.suptitle(headline, fontsize=11, fontweight="bold")
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
