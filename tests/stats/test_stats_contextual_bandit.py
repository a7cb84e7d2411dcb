"""The contextual bandit against planted context effects (seeded offline replays, about two seconds).

World 1, context matters: arm B converts best on mobile (14% vs 10%, 8%), arm C on desktop (13% vs 10%,
8%), arm A on tablet. The plain bandit must settle on one arm for everyone; the contextual one must learn
the arm per device, so its regret is clearly below the plain bandit's (less than half, and more than 5
paired standard errors apart). World 2, no context effect: the contextual policy's pooling makes it the
plain bandit, so it must not lose to it by more than noise (2 paired standard errors).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcp_servers.stats import messages
from mcp_servers.stats.contextual_bandit import context_posterior, contextual_decision, replay

SHARES = {"mobile": 0.5, "desktop": 0.4, "tablet": 0.1}
CONTEXT_EFFECT = {"mobile": [0.10, 0.14, 0.08], "desktop": [0.10, 0.08, 0.13], "tablet": [0.11, 0.10, 0.10]}
NO_CONTEXT_EFFECT = {c: [0.10, 0.12, 0.11] for c in SHARES}


def _paired(result, a: str, b: str) -> tuple[float, float]:
    i, j = result.policies.index(a), result.policies.index(b)
    d = np.array(result.regret_per_replication[i]) - np.array(result.regret_per_replication[j])
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def test_contextual_regret_is_clearly_below_the_plain_bandit_where_context_matters():
    r = replay(CONTEXT_EFFECT, SHARES, users=20_000, replications=20, exploration_rate=0.05, seed=22)
    assert r.ok
    regret = dict(zip(r.policies, r.regret, strict=True))
    reward = dict(zip(r.policies, r.reward_rate, strict=True))
    diff, se = _paired(r, "contextual", "thompson")
    assert regret["optimum"] == 0.0
    assert regret["contextual"] < 0.5 * regret["thompson"] and diff < -5 * se, (regret, diff, se)
    assert regret["thompson"] < regret["uniform"]
    assert reward["optimum"] > reward["contextual"] > reward["thompson"] > reward["uniform"]
    assert dict(zip(r.policies, r.optimal_share, strict=True))["contextual"] > 0.75
    # the curves end at the reported regret and never decrease
    curve = np.array(r.regret_curves[r.policies.index("contextual")])
    assert curve[-1] == pytest.approx(regret["contextual"]) and np.all(np.diff(curve) >= 0)


def test_without_context_effect_contextual_does_not_lose_to_the_plain_bandit_beyond_noise():
    r = replay(NO_CONTEXT_EFFECT, SHARES, users=20_000, replications=20, exploration_rate=0.05, seed=22)
    regret = dict(zip(r.policies, r.regret, strict=True))
    diff, se = _paired(r, "contextual", "thompson")
    assert diff <= 2 * se, (regret, diff, se)
    assert regret["contextual"] < 0.5 * regret["uniform"]


def test_the_floor_keeps_every_arm_explored():
    r = replay(CONTEXT_EFFECT, SHARES, users=5_000, replications=4, exploration_rate=0.30, seed=3)
    low = replay(CONTEXT_EFFECT, SHARES, users=5_000, replications=4, exploration_rate=0.05, seed=3)
    i = r.policies.index("contextual")
    # a 30% floor sends about 20% of users (2/3 of the floor) to a worse arm: regret grows with the floor
    assert r.optimal_share[i] < 0.81 and r.optimal_share[i] < low.optimal_share[i]
    assert r.regret[i] > low.regret[i]


def test_posterior_pools_small_contexts_toward_the_global_arm():
    big = {"mobile": [(1000, 10_000), (1400, 10_000)], "desktop": [(1300, 10_000), (800, 10_000)],
           "tablet": [(1, 10), (1, 10)]}
    post = context_posterior(big, "mobile")
    assert post.ok and post.means[0] == pytest.approx(0.10, abs=0.002) and post.means[1] == pytest.approx(0.14, abs=0.002)
    tablet = context_posterior(big, "tablet")
    # ten users say 10% for both arms; the pooled posterior stays near the global rates (11.5%, 11%)
    assert abs(tablet.means[0] - tablet.global_means[0]) < 0.01 and tablet.context_units == (10, 10)
    unseen = context_posterior(big, "smart-tv")
    assert unseen.context_units == (0, 0) and unseen.alpha[0] == 1 + 2301
    # contexts that do not differ pool fully (strength capped at the arm's users)
    flat = {"a": [(100, 1000), (120, 1000)], "b": [(101, 1000), (119, 1000)]}
    assert context_posterior(flat, "a").strength == (2000.0, 2000.0)


def test_decisions_are_seeded_and_explained():
    data = {"mobile": [(100, 1000), (200, 1000), (90, 1000)], "desktop": [(100, 1000), (80, 1000), (190, 1000)]}
    d = contextual_decision(data, "mobile", exploration_rate=0.0, seed=5)
    assert d.ok and d.arm == 1 and not d.explored and d.best_arm_probabilities[1] > 0.99
    assert contextual_decision(data, "desktop", exploration_rate=0.0, seed=5).arm == 2
    assert contextual_decision(data, "mobile", exploration_rate=0.0, seed=5) == d
    assert math.isclose(sum(d.best_arm_probabilities), 1.0)
    explored = contextual_decision(data, "mobile", exploration_rate=1.0, seed=5)
    assert explored.explored
    assert contextual_decision(data, "mobile", exploration_rate=1.5, seed=5).error == messages.INVALID_FLOOR
    assert contextual_decision({"x": [(5, 3), (1, 2)]}, "x", exploration_rate=0.1, seed=1).error == messages.INVALID_ARMS
    assert replay({"x": [0.1]}, {"x": 1.0}).error == messages.INVALID_ARMS
