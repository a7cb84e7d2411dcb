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


# Why two intervals of the same lift can disagree, in one line (the analysis, the recommendations and
# the demo say it whenever the fixed-horizon interval excludes 0 while the always-valid decision waits).
WHY_THE_DECISION_WAITS = (
    "a fixed-horizon interval is valid only if the data are read once, at a sample size planned in advance; "
    "the always-valid interval stays valid however often the results are read, so it is wider early on, and "
    "the decision waits until it excludes 0 too")


def statistic_kind(sequential: bool) -> str:
    return "always-valid" if sequential else "fixed-horizon"


def p_label(sequential: bool, correction: str = "none") -> str:
    """The decision p's name: 'always-valid p', 'always-valid p (Holm)', 'fixed-horizon p (BH)'."""
    return f"{statistic_kind(sequential)} p" + {"holm": " (Holm)", "benjamini-hochberg": " (BH)"}.get(correction, "")


def interval_label(sequential: bool, alpha: float = 0.05) -> str:
    """The decision interval's name: 'always-valid 95% interval' (never corrected for several arms)."""
    return f"{statistic_kind(sequential)} {1 - alpha:.0%} interval"


def excludes_zero(ci: Sequence[float | None] | None) -> bool:
    if not ci or ci[0] is None or ci[1] is None:
        return False
    return ci[0] > 0 or ci[1] < 0


def analysis_narrative(a: Any) -> list[str]:
    """Sentences for an ExperimentAnalysis (the model object, before narrative is set)."""
    out = [
        f"{VERDICT_WORDS[a.verdict.verdict]} ({a.verdict.rule_id}, confidence {prob(a.verdict.confidence)} = "
        f"{a.verdict.confidence_basis}): {a.verdict.rule}",
        f"{a.experiment_key}: {sum(v.users for v in a.variants)} exposed users over {a.days_observed:.1f} days "
        f"({a.units_per_day:.0f}/day) in {len(a.variants)} arms; SRM p = {a.srm.p_value:.3g}"
        + (" (flagged)." if a.srm.flagged else "."),
    ]
    seq, alpha = a.options.sequential, a.options.alpha
    waits = False
    for m in a.metrics:
        if m.error:
            out.append(f"{m.variant} vs {m.control} on {m.metric}: not computed ({m.error}).")
            continue
        # The decision reads one interval and one p; the other kind is shown for reference, labelled.
        decision_ci, other_ci = ((m.relative_ci_sequential, m.relative_ci) if seq
                                 else (m.relative_ci, m.relative_ci_sequential))
        decision_p = m.p_value_sequential if seq else m.p_value
        line = (f"{m.variant} vs {m.control} on {m.metric} ({m.role}, {m.direction} is better): "
                f"{m.mean:.4g} vs {m.control_mean:.4g} per user, {pct(m.relative_lift)} "
                f"({interval_label(seq, alpha)} {pct_interval(decision_ci)}, the one the verdict reads; "
                f"{interval_label(not seq, alpha)} {pct_interval(other_ci)}), "
                f"{p_label(seq)} = {decision_p:.3g}")
        family = [x for x in a.metrics if x.role == m.role and not x.error]  # corrected together (not guardrails)
        correction = a.options.multiple_testing if m.role != "guardrail" and len(family) > 1 else "none"
        if m.p_value_adjusted is not None and correction != "none":
            line += f", {p_label(seq, correction)} = {m.p_value_adjusted:.3g}"
        line += f" ({p_label(not seq)} = {(m.p_value if seq else m.p_value_sequential):.3g})"
        line += f", chance to win {prob(m.chance_to_win)}"
        if m.cuped.applied and m.cuped.variance_reduction is not None:
            line += f", CUPED cut the variance by {m.cuped.variance_reduction:.0%}"
        if m.guardrail is not None:
            line += f"; guardrail {m.guardrail.status} (margin {m.guardrail.margin:.0%})"
        if m.power is not None:
            line += (f"; {statistic_kind(seq)} power now {prob(m.power)} for a {a.options.mde:.0%} relative effect "
                     "(the MDE)")
        if seq and not m.significant and excludes_zero(m.relative_ci) and not excludes_zero(decision_ci):
            line += "; the fixed-horizon interval excludes 0 but the always-valid one does not"
            waits = True
        out.append(line + ".")
    if waits:
        out.append(f"Why the decision waits: {WHY_THE_DECISION_WAITS}.")
    if a.similar_experiments:
        sims = ", ".join(
            f"{s.experiment_key} ({s.outcome or 'no result'}"
            + (f", {pct(s.lift)}" if s.lift is not None else "") + f", similarity {s.similarity:.2f})"
            for s in a.similar_experiments[:3])
        out.append(f"Most similar past experiments: {sims}.")
    return out
