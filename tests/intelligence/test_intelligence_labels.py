"""What the analysis says matches what it decided on: every statistic in the verdict, the narrative and
the recommendations is named (always-valid or fixed-horizon, Holm-adjusted or not), and when the
fixed-horizon interval excludes 0 while the always-valid decision still waits, the text says why.

Pure: `read_out` on hand-made sufficient statistics (the shape get_variant_statistics answers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mcp_servers.intelligence.models import AnalysisOptions
from mcp_servers.intelligence.narrative import WHY_THE_DECISION_WAITS
from mcp_servers.intelligence.readout import arms_of, read_out

START = datetime(2026, 3, 2, tzinfo=UTC)
# Three onboarding flows, 5,000 users each: `personalised` clearly better; `short` +17%, which a
# fixed-horizon 95% interval calls significant but the always-valid, Holm-adjusted decision does not yet.
CONVERTED = {"classic": 500, "short": 585, "personalised": 900}


def experiment() -> dict:
    return {"key": "onboarding", "name": "Onboarding", "status": "running", "created_at": START,
            "primary_metric": {"name": "conversion", "direction": "higher"},
            "variants": [{"key": k, "is_control": k == "classic", "weight": 1 / 3} for k in CONVERTED]}


def statistics() -> dict:
    rows = [{"variant": v, "metric": "conversion", "n": 5000, "sum": float(c), "sum_squares": float(c),
             "users_with_metric": c} for v, c in CONVERTED.items()]
    return {"window_start": START, "window_end": START + timedelta(days=14),
            "variants": [{"variant": v, "users": 5000} for v in CONVERTED], "statistics": rows}


def test_the_verdict_and_the_narrative_name_the_statistics_they_read() -> None:
    exp = experiment()
    a = read_out(exp, arms_of(exp), statistics(), AnalysisOptions(), per_period=None, similar=[], notes=[])
    short = next(m for m in a.result.metrics if m.variant == "short")
    lo, hi = short.relative_ci  # fixed-horizon: excludes 0
    assert lo > 0 and short.relative_ci_sequential[0] < 0 < short.relative_ci_sequential[1]
    assert not short.significant

    assert a.verdict.rule_id == "primary_win" and a.verdict.variant == "personalised"
    assert "always-valid 95% interval" in a.verdict.rule and "always-valid p (Holm) = " in a.verdict.rule
    short_rule = next(o for o in a.per_arm if o.variant == "short").rule
    assert f"always-valid p (Holm) = {short.p_value_adjusted:.2g}" in short_rule
    assert "always-valid power now" in short_rule and "relative effect (the MDE)" in short_rule

    line = next(s for s in a.result.narrative if s.startswith("short vs classic"))
    assert f"always-valid 95% interval {short.relative_ci_sequential[0] * 100:+.1f}%" in line
    assert f"fixed-horizon 95% interval {lo * 100:+.1f}% to {hi * 100:+.1f}%" in line
    assert f"always-valid p (Holm) = {short.p_value_adjusted:.3g}" in line
    assert "the fixed-horizon interval excludes 0 but the always-valid one does not" in line
    assert a.result.narrative[-1] == f"Why the decision waits: {WHY_THE_DECISION_WAITS}."
    # personalised is significant either way: no such note on its line.
    assert "excludes 0 but" not in next(s for s in a.result.narrative if s.startswith("personalised vs"))


def test_fixed_horizon_decisions_are_named_so() -> None:
    exp = experiment()
    opts = AnalysisOptions(sequential=False, multiple_testing="none")
    a = read_out(exp, arms_of(exp), statistics(), opts, per_period=None, similar=[], notes=[])
    assert "fixed-horizon 95% interval" in a.verdict.rule and "fixed-horizon p = " in a.verdict.rule
    assert "(Holm)" not in a.verdict.rule and not any("Why the decision waits" in s for s in a.result.narrative)
