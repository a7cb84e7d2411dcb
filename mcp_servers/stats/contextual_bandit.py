"""A contextual bandit for conversion metrics: Thompson sampling over per-context Beta posteriors pooled
toward the global arm (hierarchical shrinkage), within an exploration floor.

Model. For arm a, each context c (e.g. device = mobile) has its own conversion rate p_ca drawn from
Beta(m_a·μ_a, m_a·(1 − μ_a)) around the arm's global rate μ_a; m_a (the pooling strength, in
pseudo-users) says how alike the contexts are. Given s_ca conversions of n_ca users, the posterior of
p_ca is Beta(s_ca + m_a·μ_a, n_ca − s_ca + m_a·(1 − μ_a)): a context with little data borrows the
global arm's rate, one with much data speaks for itself.

m_a is estimated from the data (empirical Bayes, method of moments): μ_a is the arm's pooled rate, the
between-context variance τ²_a is the users-weighted spread of the context rates minus the binomial
noise expected of it (DerSimonian–Laird), and m_a = μ_a(1 − μ_a)/τ²_a − 1, clipped to
[min_strength, max(min_strength, n_a)] (no prior may weigh more than the data it came from). When the
contexts do not differ, τ² ≈ 0 and every context gets the global posterior: the policy degrades to the
plain bandit instead of paying for context it does not need.

Decision. With probability ``exploration_rate`` the arm is drawn uniformly (every arm keeps
exploration_rate / k of the traffic: the environment policy's exploration floor, as in
``thompson_weights``); otherwise one draw from each arm's context posterior and the largest wins.

Offline evaluation (:func:`replay`): synthetic users with contexts and planted per-context rates are
served in batches by uniform assignment, the plain (non-contextual) Thompson bandit, this contextual
policy and the planted optimum; each learning policy updates on its own outcomes after every batch.
Regret is the expected conversions lost to the planted optimum, Σ (p*_c − p_c,chosen).

References: Russo et al. (2018) "A tutorial on Thompson sampling" §7 (contextual and hierarchical
models); DerSimonian & Laird (1986); Statsig Autotune / GrowthBook contextual bandits (floors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import messages
from ._numeric import Result, is_finite, is_whole

DEFAULT_MIN_STRENGTH = 10.0
DEFAULT_N_SAMPLES = 4000


@dataclass(frozen=True, slots=True)
class ContextPosterior(Result):
    """Per arm: the Beta posterior of the context's rate (alpha, beta, mean), the global rate and the pooling
    strength m (pseudo-users); ``context_units`` the context's users per arm."""

    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    means: tuple[float, ...]
    global_means: tuple[float, ...]
    strength: tuple[float, ...]
    context_units: tuple[int, ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ContextualDecision(Result):
    """One served decision: ``arm`` (index), ``explored`` (drawn uniformly by the floor), the context
    posterior, P(arm is best | context) from ``n_samples`` joint draws, and the seed."""

    arm: int
    explored: bool
    posterior: ContextPosterior
    best_arm_probabilities: tuple[float, ...]
    exploration_rate: float
    seed: int
    error: str | None = None


def _valid_counts(counts: Sequence[tuple[float, float]], k: int) -> bool:
    return len(counts) == k and all(
        is_finite(s, n) and 0 <= s <= n for s, n in counts)


def _strengths(table: np.ndarray, min_strength: float) -> np.ndarray:
    """Method-of-moments pooling strength per arm from a (contexts, arms, 2) table of (successes, trials)."""
    s, n = table[..., 0], table[..., 1]
    total_n = n.sum(0)
    mu = (s.sum(0) + 1.0) / (total_n + 2.0)
    seen = n > 0
    rates = np.divide(s, n, out=np.zeros_like(s), where=seen)
    c = seen.sum(0)
    spread = (n * (rates - mu) ** 2).sum(0)
    denom = total_n - (n**2).sum(0) / np.maximum(total_n, 1.0)
    tau2 = np.where((c >= 2) & (denom > 0),
                    (spread - (c - 1) * mu * (1 - mu)) / np.where(denom > 0, denom, 1.0), 0.0)
    cap = np.maximum(min_strength, total_n)
    m = np.where(tau2 > 0, mu * (1 - mu) / np.where(tau2 > 0, tau2, 1.0) - 1.0, cap)
    return np.clip(m, min_strength, cap), mu


def context_posterior(contexts: Mapping[str, Sequence[tuple[float, float]]], context: str | None, *,
                      min_strength: float = DEFAULT_MIN_STRENGTH) -> ContextPosterior:
    """The pooled Beta posterior of each arm's rate in ``context``.

    What: ``contexts`` maps every context value to per-arm (conversions, users); the global arm is
    their sum. ``context`` None (or unseen) gives the global arm's posterior Beta(1 + s, 1 + n − s).
    When: to serve or explain a personalised decision.
    Returns: :class:`ContextPosterior`; ``error`` when the arms disagree or counts are impossible.
    """
    def failed(error: str) -> ContextPosterior:
        return ContextPosterior((), (), (), (), (), (), error)

    if not (is_finite(min_strength) and min_strength > 0):
        return failed(messages.INVALID_PRIOR_STRENGTH)
    if not contexts:
        return failed(messages.INVALID_ARMS)
    k = len(next(iter(contexts.values())))
    if k < 2 or not all(_valid_counts(v, k) for v in contexts.values()):
        return failed(messages.INVALID_ARMS if k >= 2 else messages.TOO_FEW_VARIANTS)
    names = list(contexts)
    table = np.array([[list(map(float, arm)) for arm in contexts[c]] for c in names])
    m, mu = _strengths(table, min_strength)
    g_s, g_n = table[..., 0].sum(0), table[..., 1].sum(0)
    if context is None or context not in contexts:
        alpha, beta = 1.0 + g_s, 1.0 + g_n - g_s
        units = np.zeros(k)
    else:
        row = table[names.index(context)]
        alpha = row[:, 0] + m * mu
        beta = row[:, 1] - row[:, 0] + m * (1 - mu)
        units = row[:, 1]
    return ContextPosterior(
        alpha=tuple(float(x) for x in alpha), beta=tuple(float(x) for x in beta),
        means=tuple(float(x) for x in alpha / (alpha + beta)), global_means=tuple(float(x) for x in mu),
        strength=tuple(float(x) for x in m), context_units=tuple(int(x) for x in units))


def contextual_decision(contexts: Mapping[str, Sequence[tuple[float, float]]], context: str | None, *,
                        exploration_rate: float, seed: int, min_strength: float = DEFAULT_MIN_STRENGTH,
                        n_samples: int = DEFAULT_N_SAMPLES) -> ContextualDecision:
    """Choose an arm for one user in ``context`` by Thompson sampling within the exploration floor.

    What: with probability ``exploration_rate`` a uniform arm, else the argmax of one draw per arm from
    :func:`context_posterior`; also P(best) per arm from ``n_samples`` draws (the explanation).
    When: serving a personalised experiment. The same seed and data give the same decision.
    Returns: :class:`ContextualDecision` (``error`` from the posterior, a bad rate, seed or n_samples).
    """
    posterior = context_posterior(contexts, context, min_strength=min_strength)

    def failed(error: str) -> ContextualDecision:
        return ContextualDecision(-1, False, posterior, (), exploration_rate, 0, error)

    if posterior.error:
        return failed(posterior.error)
    k = len(posterior.alpha)
    if not (is_finite(exploration_rate) and 0.0 <= exploration_rate <= 1.0):
        return failed(messages.INVALID_FLOOR)
    if not is_whole(seed):
        return failed(messages.INVALID_SEED)
    if not (is_whole(n_samples) and n_samples >= 100):
        return failed(messages.INVALID_N_SAMPLES)
    rng = np.random.default_rng(int(seed))
    alpha, beta = np.array(posterior.alpha), np.array(posterior.beta)
    explored = bool(rng.random() < exploration_rate)
    arm = int(rng.integers(k)) if explored else int(np.argmax(rng.beta(alpha, beta)))
    draws = rng.beta(alpha, beta, size=(int(n_samples), k))
    p_best = np.bincount(np.argmax(draws, axis=1), minlength=k) / float(n_samples)
    return ContextualDecision(arm, explored, posterior, tuple(float(p) for p in p_best), float(exploration_rate),
                              int(seed))


# ---------------------------------------------------------------- offline replay

POLICIES = ("uniform", "thompson", "contextual", "optimum")


@dataclass(frozen=True, slots=True)
class ReplayResult(Result):
    """Per policy (``POLICIES`` order) over ``replications`` seeded replays of ``users`` users:
    mean cumulative expected regret and its standard error, mean conversion rate, the share of users
    given their context's best arm, and the regret curve (mean over replications, at each batch end)."""

    policies: tuple[str, ...]
    regret: tuple[float, ...]
    regret_se: tuple[float, ...]
    reward_rate: tuple[float, ...]
    optimal_share: tuple[float, ...]
    regret_curves: tuple[tuple[float, ...], ...]
    curve_users: tuple[int, ...]
    regret_per_replication: tuple[tuple[float, ...], ...]
    users: int
    replications: int
    exploration_rate: float
    error: str | None = None


def replay(rates: Mapping[str, Sequence[float]], shares: Mapping[str, float], *, users: int = 20_000,
           batch: int = 250, replications: int = 20, exploration_rate: float = 0.05, seed: int = 0,
           min_strength: float = DEFAULT_MIN_STRENGTH) -> ReplayResult:
    """Replay synthetic traffic with planted per-context conversion rates through the four policies.

    What: ``rates`` maps each context to its arms' true rates, ``shares`` its share of users. Each
    replication draws the users' contexts once and serves the same users to every policy; the learning
    policies see only their own outcomes, updated after every ``batch`` users.
    When: offline evaluation of the contextual policy against uniform and plain Thompson sampling.
    Returns: :class:`ReplayResult` (``error`` on inconsistent arms, shares or sizes).
    """
    names = list(rates)
    k = len(rates[names[0]]) if names else 0

    def failed(error: str) -> ReplayResult:
        return ReplayResult(POLICIES, (), (), (), (), (), (), (), users, replications, exploration_rate, error)

    if k < 2 or any(len(rates[c]) != k or not all(is_finite(p) and 0 <= p <= 1 for p in rates[c]) for c in names):
        return failed(messages.INVALID_ARMS)
    weights = np.array([float(shares.get(c, 0.0)) for c in names])
    if not (np.all(weights >= 0) and math.isclose(weights.sum(), 1.0, abs_tol=1e-6)):
        return failed(messages.WEIGHTS_NOT_NORMALISED)
    if not all(is_whole(x) and x >= 1 for x in (users, batch, replications)) or not (0 <= exploration_rate <= 1):
        return failed(messages.INVALID_SAMPLE_SIZE)
    p = np.array([list(rates[c]) for c in names], dtype=float)  # context, arm
    best = p.max(1)
    n_ctx = len(names)
    n_batches = math.ceil(users / batch)
    curves = np.zeros((len(POLICIES), n_batches))
    finals = np.zeros((len(POLICIES), replications))
    rewards = np.zeros((len(POLICIES), replications))
    optimal = np.zeros((len(POLICIES), replications))
    for r in range(replications):
        rng = np.random.default_rng([seed, r])
        ctx = rng.choice(n_ctx, size=users, p=weights)
        coin = rng.random(users)  # the same outcome coin for a user whichever arm they get (common numbers)
        explore_coin = rng.random(users)
        explore_arm = rng.integers(k, size=users)
        for j, policy in enumerate(POLICIES):
            data = np.zeros((n_ctx, k, 2))  # successes, trials per context and arm
            regret = 0.0
            for b in range(n_batches):
                lo, hi = b * batch, min(users, (b + 1) * batch)
                c = ctx[lo:hi]
                if policy == "uniform":
                    arm = explore_arm[lo:hi]
                elif policy == "optimum":
                    arm = p[c].argmax(1)
                else:
                    if policy == "thompson":
                        g = data.sum(0)
                        a, bb = 1.0 + g[:, 0], 1.0 + g[:, 1] - g[:, 0]
                        draws = rng.beta(a, bb, size=(hi - lo, k))
                    else:
                        m, mu = _strengths(data, min_strength)
                        a = data[..., 0] + m * mu  # context, arm
                        bb = data[..., 1] - data[..., 0] + m * (1 - mu)
                        draws = rng.beta(a[c], bb[c])
                    arm = np.where(explore_coin[lo:hi] < exploration_rate, explore_arm[lo:hi], draws.argmax(1))
                chosen = p[c, arm]
                converted = coin[lo:hi] < chosen
                np.add.at(data, (c, arm, 0), converted)
                np.add.at(data, (c, arm, 1), 1.0)
                regret += float((best[c] - chosen).sum())
                curves[j, b] += regret
                rewards[j, r] += float(converted.sum())
                optimal[j, r] += float((chosen == best[c]).sum())
            finals[j, r] = regret
    se = finals.std(1, ddof=1) / math.sqrt(replications) if replications > 1 else np.zeros(len(POLICIES))
    return ReplayResult(
        policies=POLICIES, regret=tuple(float(x) for x in finals.mean(1)), regret_se=tuple(float(x) for x in se),
        reward_rate=tuple(float(x) for x in rewards.mean(1) / users),
        optimal_share=tuple(float(x) for x in optimal.mean(1) / users),
        regret_curves=tuple(tuple(float(v) for v in row / replications) for row in curves),
        curve_users=tuple(min(users, (b + 1) * batch) for b in range(n_batches)),
        regret_per_replication=tuple(tuple(float(v) for v in row) for row in finals),
        users=int(users), replications=int(replications), exploration_rate=float(exploration_rate))
