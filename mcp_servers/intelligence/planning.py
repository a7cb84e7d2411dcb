"""Experiment plans from a stated goal: metric templates and sizing, pure functions, no I/O.

Sizing is the statistics engine's (`sample_size`, `mde`): a two-sided test at
α / (arms − 1) per comparison (Bonferroni across treatment arms), equal split,
normal approximation; the always-valid variant sizes for the confidence
sequence read at the planned sample. Metric templates are chosen by keywords
in the goal and say why each metric is there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mcp_servers import stats

from .models import MAX_MDE, MAX_PLAN_DAYS, MAX_TRAFFIC_PER_DAY, MIN_MDE, MIN_TRAFFIC_PER_DAY


@dataclass(frozen=True)
class MetricTemplate:
    name: str
    direction: str
    why: str
    margin: float | None = None


@dataclass(frozen=True)
class GoalTemplate:
    keywords: tuple[str, ...]
    experiment_type: str
    primary: MetricTemplate
    secondary: tuple[MetricTemplate, ...]
    guardrails: tuple[MetricTemplate, ...]


_LATENCY = MetricTemplate("latency_ms", "lower", "a slower experience loses users even when the goal metric rises", 0.10)
_ERRORS = MetricTemplate("error_rate", "lower", "a change that breaks something must be caught early", 0.05)
_REVENUE = MetricTemplate("revenue", "higher", "more conversions must not come from cheaper or refunded orders", 0.02)

TEMPLATES: tuple[GoalTemplate, ...] = (
    GoalTemplate(("prompt", "llm", "model", "answer", "assistant", "support", "chatbot", "agent", "resolution"),
                 "prompt",
                 MetricTemplate("resolution_rate", "higher", "the share of conversations resolved is the outcome users want"),
                 (MetricTemplate("user_rating", "higher", "perceived quality, beyond resolution"),),
                 (_LATENCY, MetricTemplate("output_tokens", "lower", "cost per answer must not run away", 0.15),
                  MetricTemplate("escalation_rate", "lower", "answers must not push more users to humans", 0.05))),
    GoalTemplate(("checkout", "purchase", "cart", "conversion", "buy", "order"), "ui",
                 MetricTemplate("conversion", "higher", "the share of exposed users who purchase"),
                 (MetricTemplate("revenue", "higher", "value per exposed user, including order size"),),
                 (_REVENUE, _ERRORS, _LATENCY)),
    GoalTemplate(("onboarding", "signup", "sign up", "activation", "register", "trial"), "feature",
                 MetricTemplate("activation_rate", "higher", "the share of new users reaching the first key action"),
                 (MetricTemplate("signup_rate", "higher", "top of the funnel"),),
                 (MetricTemplate("retention_d7", "higher", "activation bought with friction later shows up as churn", 0.02),
                  _ERRORS)),
    GoalTemplate(("retention", "churn", "engagement", "return", "habit"), "feature",
                 MetricTemplate("retention_d7", "higher", "the share of users active again within 7 days"),
                 (MetricTemplate("sessions_per_user", "higher", "depth of engagement"),),
                 (MetricTemplate("unsubscribe_rate", "lower", "engagement pushes must not drive users away", 0.05),
                  _ERRORS)),
    GoalTemplate(("price", "pricing", "revenue", "monetiz", "upsell", "plan"), "feature",
                 MetricTemplate("revenue", "higher", "revenue per exposed user captures both rate and price"),
                 (MetricTemplate("conversion", "higher", "how many pay at all"),),
                 (MetricTemplate("refund_rate", "lower", "revenue that comes back is not revenue", 0.05),
                  MetricTemplate("conversion", "higher", "a higher price must not cost too many customers", 0.05))),
    GoalTemplate(("email", "subject", "newsletter", "notification", "push"), "feature",
                 MetricTemplate("click_rate", "higher", "the share of recipients who click through"),
                 (MetricTemplate("open_rate", "higher", "the first step to a click"),),
                 (MetricTemplate("unsubscribe_rate", "lower", "more clicks must not cost the audience", 0.05),)),
)

DEFAULT_TEMPLATE = GoalTemplate(
    (), "feature",
    MetricTemplate("conversion", "higher", "the share of exposed users reaching the goal"),
    (), (_ERRORS, _LATENCY))

_METRIC_TOKEN = re.compile(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b")


def choose_template(goal: str) -> GoalTemplate:
    text = goal.lower()
    scored = [(sum(k in text for k in t.keywords), -i, t) for i, t in enumerate(TEMPLATES)]
    best = max(scored)
    return best[2] if best[0] > 0 else DEFAULT_TEMPLATE


def metric_named_in(goal: str) -> str | None:
    """A snake_case metric name written in the goal (e.g. 'raise checkout_conversion'), if any."""
    match = _METRIC_TOKEN.search(goal.lower())
    return match.group(1) if match else None


def slugify(text: str, limit: int = 60) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = "-".join(words)[:limit].strip("-")
    return slug if slug and slug[0].isalpha() else f"exp-{slug}".strip("-")


@dataclass(frozen=True)
class Sizing:
    n_per_variant: int
    n_per_variant_sequential: int
    error: str | None = None


def size(mde: float, mean: float, variance: float | None, *, power: float, alpha: float, arms: int) -> Sizing:
    comparisons = max(arms - 1, 1)
    fixed = stats.sample_size(mde, mean, variance, target_power=power, alpha=alpha, n_variants=arms,
                              n_comparisons=comparisons)
    if not fixed.ok:
        return Sizing(0, 0, fixed.error)
    # The confidence sequence is tuned (N*) to the fixed-horizon total, where the decision is due.
    seq = stats.sample_size(mde, mean, variance, target_power=power, alpha=alpha, n_variants=arms,
                            n_comparisons=comparisons, sequential=True, n_star=2.0 * fixed.n_per_variant)
    return Sizing(fixed.n_per_variant, seq.n_per_variant if seq.ok else fixed.n_per_variant, None)


def mde_after(days: int, traffic: float, mean: float, variance: float | None, *, power: float, alpha: float,
              arms: int) -> float | None:
    n = days * traffic / arms
    if n < 2:
        return None
    result = stats.mde(n, mean, variance, target_power=power, alpha=alpha, n_comparisons=max(arms - 1, 1))
    return result.mde if result.ok else None


def whole_days(units: int, traffic: float) -> int:
    return max(1, math.ceil(units / traffic))


def input_error(mde: float, traffic: float) -> str | None:
    """Why a plan's effect or traffic cannot be real (NaN and ±inf included), or None."""
    if not MIN_TRAFFIC_PER_DAY <= traffic <= MAX_TRAFFIC_PER_DAY:
        return (f"traffic must be {MIN_TRAFFIC_PER_DAY:g} to {MAX_TRAFFIC_PER_DAY:g} users per day entering the "
                f"experiment, not {traffic:g}")
    if not MIN_MDE <= mde <= MAX_MDE:
        return f"mde must be a relative effect from {MIN_MDE:g} (0.01%) to {MAX_MDE:g} (+1000%), not {mde:g}"
    return None


def too_long(units: int, traffic: float, mean: float, variance: float | None, *, power: float, alpha: float,
             arms: int) -> str:
    """The reason a plan longer than MAX_PLAN_DAYS is infeasible, with what this traffic can detect instead."""
    years = units / traffic / 365.25
    reachable = mde_after(42, traffic, mean, variance, power=power, alpha=alpha, arms=arms)
    return (f"infeasible: {units} users at {traffic:g} users/day take about {years:,.0f} years, more than the "
            f"{MAX_PLAN_DAYS // 365}-year ceiling; "
            + (f"in 6 weeks this traffic can detect a {reachable:.1%} relative effect; " if reachable else "")
            + "plan for a larger effect, more traffic or fewer variants")
