"""The asymptotic confidence sequence's boundary and always-valid p-value, in closed form.

Shared by the fixed-horizon result (``TestResult.interval`` recomputes a
sequential interval at another alpha) and the sequential test (which
re-exports these names for the power analysis). It depends on nothing else in
the engine, so ``frequentist`` and ``sequential`` no longer import each other.
Reference: Waudby-Smith, Arnold, Wu, McAuliffe & Ramdas (2023,
arXiv:2103.06476v7); gbstats ``SequentialTwoSidedTTest``.

Tuning: N* is the total sample size (both arms) at which the interval is
tightest; set it near the planned sample size. The mixing parameter is
ρ = sqrt((−2 ln α + ln(1 − 2 ln α)) / N*) (eq. 161; α → 2α one-sided).

Two-sided half-width (eq. 9), with s² = n·se² the per-unit variance:
    s · sqrt( 2(nρ² + 1) / (n²ρ²) · ln( sqrt(nρ² + 1) / α ) )
One-sided half-width (eq. 134):
    s · sqrt( 2(nρ² + 1) / (n²ρ²) · ln( 1 + sqrt(nρ² + 1) / (2α) ) )
The one-sided always-valid p-value is the α at which the bound touches the
null, which has a closed form for a fixed ρ (gbstats finds it by bisection).
"""

from __future__ import annotations

import math


def sequential_rho(alpha: float, n_star: float, one_sided: bool = False) -> float:
    """Mixing parameter ρ tuned for N* (eq. 161 of Waudby-Smith et al.)."""
    a = 2.0 * alpha if one_sided else alpha
    log_a = math.log(a)
    return math.sqrt((-2.0 * log_a + math.log(1.0 - 2.0 * log_a)) / n_star)


def sequential_halfwidth(se: float, n: int, rho: float, alpha: float, one_sided: bool = False) -> float:
    """Half-width of the confidence sequence at total sample size ``n``."""
    nr2 = n * rho * rho
    s2 = se * se * n
    scale = 2.0 * (nr2 + 1.0) / (nr2 * n)
    if one_sided:
        return math.sqrt(s2 * scale * math.log1p(math.sqrt(nr2 + 1.0) / (2.0 * alpha)))
    return math.sqrt(s2 * scale * math.log(math.sqrt(nr2 + 1.0) / alpha))


def sequential_p_value(
    estimate: float, se: float, n: int, rho: float, test_value: float = 0.0, alternative: str = "two-sided"
) -> float:
    """Always-valid p-value: the smallest α whose confidence sequence excludes ``test_value``."""
    nr2 = n * rho * rho
    # z² = (estimate − test_value)² / se²; the e-value is exp(ρ² n z² / (2(nρ²+1))) / sqrt(nρ²+1)
    z = (estimate - test_value) / se
    exponent = nr2 * z * z / (2.0 * (nr2 + 1.0))
    if alternative == "two-sided":
        return min(1.0, math.exp(min(0.0, 0.5 * math.log(nr2 + 1.0) - exponent)))
    if (alternative == "greater" and z <= 0) or (alternative == "less" and z >= 0):
        return 1.0
    if exponent > 700.0:
        return 0.0
    return min(1.0, math.sqrt(nr2 + 1.0) / (2.0 * math.expm1(exponent)))
