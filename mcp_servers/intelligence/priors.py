"""Empirical priors over lift from similar past experiments: pure functions, no I/O.

Each neighbour i has an observed relative lift l_i, a similarity s_i to the
new experiment and, when its p-value is known, a standard error
se_i = |l_i| / Φ⁻¹(1 − p_i/2) (the two-sided z-test the p-value came from).
Lifts are turned into improvements (positive = good for that experiment's
metric) so experiments on lower-is-better metrics pool correctly.

The prior is a random-effects summary weighted by similarity (w_i = s_i):

    μ  = Σ w_i·l_i / Σ w_i                                   (expected improvement)
    V  = Σ w_i (l_i − μ)² / Σ w_i · n_eff/(n_eff − 1)        (observed spread)
    S  = Σ w_i se_i² / Σ w_i over neighbours with se          (sampling noise in that spread)
    τ² = max(V − S, τ_min²)                                   (spread of TRUE effects: shrunk by the noise)
    predictive variance of a new true effect = τ² + V / n_eff (adds the uncertainty of μ)

with n_eff = (Σw)²/Σw² (Kish). The chance of a significant win of a planned
test with standard error se at level α (two-sided) averages its power over the
prior: P = Φ((μ − z·se) / √(σ² + se²)) (the "assurance" of the design).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mcp_servers.stats._numeric import norm_cdf, norm_ppf

MIN_NEIGHBOURS = 5
SIMILARITY_FLOOR = 0.45  # all-MiniLM-L6-v2 cosine: related experiment texts score ~0.55-0.8, unrelated ≤ 0.3
TAU_MIN = 0.002


@dataclass(frozen=True)
class PastResult:
    key: str
    similarity: float
    lift: float | None
    p_value: float | None
    direction: str = "higher"


@dataclass(frozen=True)
class WeightedResult:
    key: str
    similarity: float
    lift: float | None
    improvement: float | None
    se: float | None
    weight: float
    used: bool
    why_not: str | None


@dataclass(frozen=True)
class Prior:
    mean: float  # expected improvement (positive = good)
    sd: float  # predictive sd of a new true effect
    tau: float
    observed_sd: float
    mean_sampling_sd: float | None
    n_eff: float
    used: int


def standard_error(lift: float, p_value: float | None) -> float | None:
    """se implied by a two-sided z-test's p-value; None when it cannot be inferred."""
    if p_value is None or lift == 0 or not (0.0 < p_value < 1.0):
        return None
    z = norm_ppf(1.0 - p_value / 2.0)
    return abs(lift) / z if z > 0 else None


def weigh(results: Sequence[PastResult], floor: float = SIMILARITY_FLOOR) -> list[WeightedResult]:
    out = []
    for r in results:
        why = None
        if r.lift is None or not math.isfinite(r.lift):
            why = "no result (lift) recorded"
        elif r.similarity < floor:
            why = f"similarity {r.similarity:.2f} below the floor {floor:.2f}"
        sign = -1.0 if r.direction == "lower" else 1.0
        improvement = None if r.lift is None else sign * r.lift
        se = None if r.lift is None else standard_error(r.lift, r.p_value)
        out.append(WeightedResult(r.key, r.similarity, r.lift, improvement, se,
                                  r.similarity if why is None else 0.0, why is None, why))
    return out


def empirical_prior(weighted: Sequence[WeightedResult]) -> Prior | None:
    used = [w for w in weighted if w.used and w.improvement is not None]
    if not used:
        return None
    wsum = sum(w.weight for w in used)
    mu = sum(w.weight * w.improvement for w in used) / wsum  # type: ignore[operator]
    n_eff = wsum * wsum / sum(w.weight * w.weight for w in used)
    spread = sum(w.weight * (w.improvement - mu) ** 2 for w in used) / wsum  # type: ignore[operator]
    if n_eff > 1:
        spread *= n_eff / (n_eff - 1)
    with_se = [w for w in used if w.se is not None]
    noise = (sum(w.weight * w.se * w.se for w in with_se) / sum(w.weight for w in with_se)  # type: ignore[operator]
             if with_se else None)
    tau2 = max(spread - (noise or 0.0), TAU_MIN * TAU_MIN)
    sd = math.sqrt(tau2 + spread / max(n_eff, 1.0))
    return Prior(mean=mu, sd=sd, tau=math.sqrt(tau2), observed_sd=math.sqrt(spread),
                 mean_sampling_sd=None if noise is None else math.sqrt(noise), n_eff=n_eff, used=len(used))


def quantiles(mean: float, sd: float) -> dict[str, float]:
    return {name: mean + sd * norm_ppf(q) for name, q in
            (("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95))}


def assurance(prior_mean: float, prior_sd: float, se: float, alpha: float) -> float:
    """P(a two-sided test with standard error `se` ends significant in the good direction), averaged over the prior."""
    z = norm_ppf(1.0 - alpha / 2.0)
    return norm_cdf((prior_mean - z * se) / math.sqrt(prior_sd * prior_sd + se * se))


def relative_se(n_per_variant: float, mean: float, variance: float | None) -> float:
    """Standard error of the relative lift between two arms of n users under no effect."""
    v = mean * (1.0 - mean) if variance is None else variance
    return math.sqrt(2.0 * v / n_per_variant) / abs(mean)
