"""Narrative text generated from computed numbers by templates (no model writes numbers).

Every sentence here is a fixed template filled with values the caller
computed; an LLM may rephrase the result in the agent chat, never invent it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

VERDICT_WORDS = {
    "ship": "Ship",
    "roll_back": "Roll back",
    "keep_running": "Keep running",
    "needs_review": "Needs review",
}


def pct(x: float | None, digits: int = 1) -> str:
    """A signed percentage: 0.052 -> '+5.2%'; None/inf -> 'n/a'."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 100:+.{digits}f}%"


def pct_interval(ci: Sequence[float | None] | None, digits: int = 1) -> str:
    if not ci:
        return "n/a"
    lo, hi = ci[0], ci[1]
    lo_s = "-∞" if lo is None or not math.isfinite(lo) else pct(lo, digits)
    hi_s = "+∞" if hi is None or not math.isfinite(hi) else pct(hi, digits)
    return f"{lo_s} to {hi_s}"


def prob(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 100:.1f}%"


def days(x: float | None) -> str:
    if x is None:
        return "an unknown number of days (no traffic observed)"
    if not math.isfinite(x):
        return "an unbounded number of days"
    if x <= 0:
        return "0 days"
    return f"≈{math.ceil(x)} day{'s' if math.ceil(x) != 1 else ''}"


def analysis_narrative(a: Any) -> list[str]:
    """Sentences for an ExperimentAnalysis (the model object, before narrative is set)."""
    out = [
        f"{VERDICT_WORDS[a.verdict.verdict]} ({a.verdict.rule_id}, confidence {prob(a.verdict.confidence)} = "
        f"{a.verdict.confidence_basis}): {a.verdict.rule}",
        f"{a.experiment_id}: {sum(v.users for v in a.variants)} exposed users over {a.days_observed:.1f} days "
        f"({a.units_per_day:.0f}/day) in {len(a.variants)} arms; SRM p = {a.srm.p_value:.3g}"
        + (" (flagged)." if a.srm.flagged else "."),
    ]
    for m in a.metrics:
        if m.error:
            out.append(f"{m.variant} vs {m.control} on {m.metric}: not computed ({m.error}).")
            continue
        line = (f"{m.variant} vs {m.control} on {m.metric} ({m.role}, {m.direction} is better): "
                f"{m.mean:.4g} vs {m.control_mean:.4g} per user, {pct(m.relative_lift)} "
                f"(95% interval {pct_interval(m.relative_ci)}, always-valid {pct_interval(m.relative_ci_sequential)}), "
                f"p = {m.p_value:.3g}, sequential p = {m.p_value_sequential:.3g}")
        if m.p_value_adjusted is not None:
            line += f", corrected p = {m.p_value_adjusted:.3g}"
        line += f", chance to win {prob(m.chance_to_win)}"
        if m.cuped.applied and m.cuped.variance_reduction is not None:
            line += f", CUPED cut the variance by {m.cuped.variance_reduction:.0%}"
        if m.guardrail is not None:
            line += f"; guardrail {m.guardrail.status} (margin {m.guardrail.margin:.0%})"
        if m.power is not None:
            line += f"; power now {prob(m.power)} for a {a.options.mde:.0%} effect"
        out.append(line + ".")
    if a.similar_experiments:
        sims = ", ".join(
            f"{s.experiment_key} ({s.outcome or 'no result'}"
            + (f", {pct(s.lift)}" if s.lift is not None else "") + f", similarity {s.similarity:.2f})"
            for s in a.similar_experiments[:3])
        out.append(f"Most similar past experiments: {sims}.")
    return out
