"""Charts for issue 22 as PNG bytes, in the style of `charts.py`: cumulative regret of the bandit policies
(an offline replay) and per-segment treatment effects with their intervals and heterogeneity flags."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from .charts import PALETTE  # imported first: it selects the Agg backend

POLICY_LABELS = {"uniform": "uniform assignment", "thompson": "Thompson (no context)",
                 "contextual": "contextual Thompson (pooled)", "optimum": "planted optimum"}


def regret_chart(replays: Mapping[str, Any]) -> bytes:
    """One panel per world: mean cumulative regret (conversions lost to the planted optimum) per policy.

    `replays` maps a world's title to a `stats.contextual_bandit.ReplayResult`."""
    fig = Figure(figsize=(9, 3.6 * len(replays) + 0.4), dpi=100)
    for row, (title, r) in enumerate(replays.items()):
        ax = fig.add_subplot(len(replays), 1, row + 1)
        for i, (name, curve) in enumerate(zip(r.policies, r.regret_curves, strict=True)):
            ax.plot(r.curve_users, curve, color=PALETTE[i % len(PALETTE)], linewidth=2 if name == "contextual" else 1.4,
                    linestyle="--" if name == "optimum" else "-",
                    label=f"{POLICY_LABELS.get(name, name)}: {r.regret[i]:.0f} ± {r.regret_se[i]:.0f}")
        ax.set_title(f"{title} — {r.replications} replays, exploration floor {r.exploration_rate:.0%}", fontsize=10)
        ax.set_xlabel("users served")
        ax.set_ylabel("cumulative regret (conversions)")
        ax.legend(loc="upper left", fontsize=8, title="final regret, mean ± SE", title_fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Contextual bandit: offline replay against planted per-device conversion rates",
                 fontsize=11, fontweight="bold")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def segment_chart(effects: Mapping[str, Any]) -> bytes:
    """Per treatment arm and segment: the effect (points) with its interval (bars), the arm's overall effect
    (dashed), segments flagged as responding differently in red. `effects`: an analyze_segment_effects result."""
    arms = [a for a in effects["arms"] if a["segments"]]
    fig = Figure(figsize=(9, max(3.0, 0.32 * max((len(a["segments"]) for a in arms), default=4) + 1.6) * max(len(arms), 1)),
                 dpi=100)
    for row, arm in enumerate(arms):
        ax = fig.add_subplot(len(arms), 1, row + 1)
        segs = arm["segments"]
        ys = list(range(len(segs)))[::-1]
        for y, s in zip(ys, segs, strict=True):
            colour = "#d62728" if s["differs"] else PALETTE[0]
            ax.errorbar([s["effect"] * 100], [y], xerr=[[(s["effect"] - s["ci"][0]) * 100], [(s["ci"][1] - s["effect"]) * 100]],
                        fmt="o", color=colour, capsize=3, markersize=5)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{s['dimension']}={s['segment']} (n={s['control_users'] + s['treatment_users']:,})"
                            + ("  ◀ differs" if s["differs"] else "") for s in segs], fontsize=8)
        ax.margins(y=0.25)
        ax.axvline(0, color="#333333", linewidth=0.8)
        if arm["overall_effect"] is not None:
            ax.axvline(arm["overall_effect"] * 100, color="#555555", linestyle="--", linewidth=1,
                       label=f"overall {arm['overall_effect'] * 100:+.2f} points")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel(f"effect on {effects['metric']} ({arm['variant']} − {effects['control']}), percentage points, "
                      f"{1 - effects['alpha']:.0%} interval")
        ax.set_title(f"{effects['experiment_key']}: {arm['variant']} vs {effects['control']} by segment\n"
                     "red: responds differently (Bonferroni across segments, gated by Cochran's Q)", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
