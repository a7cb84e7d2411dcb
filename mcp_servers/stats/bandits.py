"""Multi-armed bandit weights by Thompson sampling on Gaussian posteriors.

Each arm's mean gets a Gaussian posterior N(x̄, v/n) (combined with an
optional proper prior on the mean); the traffic weight of an arm is the
posterior probability that it is the best arm, estimated from ``n_samples``
joint draws with a seeded generator, so the same inputs and seed always give
the same weights. Two safeguards used by production bandits (GrowthBook,
Statsig):

* a floor: every arm keeps at least ``min_weight`` of the traffic, applied as
  w_i = f + (1 − k·f)·p_i so weights stay on the simplex and keep their order;
* a burn-in: weights are not updated until every arm has ``min_n`` units.

Reference: Thompson (1933); Russo et al. (2018) "A tutorial on Thompson
sampling"; gbstats ``bayesian/bandits.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import messages
from ._numeric import Result, is_finite, is_whole
from .bayesian import GaussianPrior
from .statistics import (
    RegressionAdjustedRatioStatistic,
    RegressionAdjustedStatistic,
    Statistic,
    check_statistic,
)

DEFAULT_MIN_WEIGHT = 0.01
DEFAULT_MIN_N = 100
DEFAULT_N_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class BanditResult(Result):
    """Traffic weights for the next period.

    weights: one per arm, summing to 1; the input ``current_weights`` (or an
        equal split) when not updated.
    best_arm_probabilities: posterior P(arm is best), None if not updated.
    updated: whether ``weights`` came from this posterior.
    reason: why not updated (e.g. the burn-in), None when updated.
    seed: the seed used, to reproduce the draw.
    """

    weights: tuple[float, ...]
    best_arm_probabilities: tuple[float, ...] | None
    posterior_means: tuple[float, ...]
    posterior_sds: tuple[float, ...]
    updated: bool
    reason: str | None
    seed: int
    error: str | None = None


def thompson_weights(
    stats: Sequence[Statistic],
    *,
    seed: int,
    min_weight: float = DEFAULT_MIN_WEIGHT,
    min_n: int = DEFAULT_MIN_N,
    lower_is_better: bool = False,
    n_samples: int = DEFAULT_N_SAMPLES,
    prior: GaussianPrior | None = None,
    current_weights: Sequence[float] | None = None,
) -> BanditResult:
    """Thompson-sampling traffic weights for a multi-armed bandit.

    What: P(arm is best) under independent Gaussian posteriors of each arm's
    mean, floored at ``min_weight`` and renormalised. CUPED statistics need
    their θ set (the same θ for every arm); ``prior`` is on the arm mean's
    absolute scale (its ``relative`` flag is ignored).
    When: an optimisation experiment re-allocating traffic each period.
    Returns: :class:`BanditResult`; not updated (``reason`` set) before every
    arm has ``min_n`` units; ``error`` for impossible input.
    Reference: gbstats ``Bandits.compute_result`` (floor as an additive
    mixture with the uniform split).
    """
    k = len(stats)
    current_ok = current_weights is None or (
        len(current_weights) == k
        and all(is_finite(w) and w >= 0 for w in current_weights)
        and abs(math.fsum(current_weights) - 1.0) <= 1e-6
    )
    # when nothing can be computed, traffic stays where it was (or is split equally)
    keep = tuple(float(w) for w in current_weights) if current_weights and current_ok else tuple([1.0 / k] * k) if k else ()

    def failed(error: str) -> BanditResult:
        return BanditResult(keep, None, (), (), False, None, seed if is_whole(seed) else 0, error)

    if k < 2:
        return failed(messages.TOO_FEW_VARIANTS)
    if not (is_finite(min_weight) and min_weight >= 0 and min_weight * k < 1.0):
        return failed(messages.INVALID_FLOOR)
    if not (is_whole(n_samples) and n_samples >= 100):
        return failed(messages.INVALID_N_SAMPLES)
    if not (is_whole(min_n) and min_n >= 2):
        return failed(messages.INVALID_MIN_N)
    if not is_whole(seed):
        return failed(messages.INVALID_SEED)
    if not current_ok:
        return failed(messages.INVALID_CURRENT_WEIGHTS)
    if prior is not None and not (is_finite(prior.mean, prior.variance) and prior.variance > 0):
        return failed(messages.INVALID_PRIOR)

    means: list[float] = []
    variances: list[float] = []
    counts: list[int] = []
    for stat in stats:
        if isinstance(stat, (RegressionAdjustedStatistic, RegressionAdjustedRatioStatistic)) and stat.theta is None:
            return failed(messages.MIXED_STATISTIC_TYPES)
        n = int(stat.n) if is_whole(stat.n) else -1
        counts.append(n)
        if n < 2:
            continue  # burn-in handles arms with too few units
        err = check_statistic(stat)
        if err:
            return failed(err)
        means.append(stat.mean)
        variances.append(max(stat.variance, 0.0) / n)

    if min(counts) < min_n:
        return BanditResult(keep, None, (), (), False, messages.BANDIT_MIN_N_NOT_REACHED, int(seed))

    mu = np.array(means)
    var = np.array(variances)
    if prior is not None:
        # a zero-variance arm keeps its observed mean (infinite data precision)
        precision = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), np.inf)
        post_var = np.where(var > 0, 1.0 / (precision + 1.0 / prior.variance), 0.0)
        post_mu = np.where(var > 0, post_var * (mu * precision + prior.mean / prior.variance), mu)
        mu, var = post_mu, post_var
    sd = np.sqrt(var)

    rng = np.random.default_rng(int(seed))
    draws = mu + sd * rng.standard_normal((int(n_samples), k))
    best = np.argmin(draws, axis=1) if lower_is_better else np.argmax(draws, axis=1)
    p_best = np.bincount(best, minlength=k) / float(n_samples)
    weights = min_weight + (1.0 - k * min_weight) * p_best
    weights = weights / weights.sum()
    return BanditResult(
        weights=tuple(float(w) for w in weights),
        best_arm_probabilities=tuple(float(p) for p in p_best),
        posterior_means=tuple(float(x) for x in mu),
        posterior_sds=tuple(float(x) for x in sd),
        updated=True,
        reason=None,
        seed=int(seed),
    )
