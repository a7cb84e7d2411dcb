"""Personalization (issue 22): the contextual bandit's offline regret table.

Replays synthetic traffic with planted per-device conversion rates through four policies (uniform
assignment, the plain Thompson bandit, the contextual bandit pooled toward the global arm, the planted
optimum) and prints cumulative expected regret (conversions lost to the optimum, mean ± SE over the
replications), the conversion rate and the share of users given their device's best arm. Two worlds:
arm B best on mobile and C on desktop, and no context effect at all.

    python bench/bench_personalization.py [--users 20000] [--replications 20] [--floor 0.05]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from mcp_servers.stats.contextual_bandit import replay

SHARES = {"mobile": 0.5, "desktop": 0.4, "tablet": 0.1}
WORLDS = {
    "context effect (B best on mobile, C on desktop, A on tablet)":
        {"mobile": [0.10, 0.14, 0.08], "desktop": [0.10, 0.08, 0.13], "tablet": [0.11, 0.10, 0.10]},
    "no context effect (B best everywhere)": {c: [0.10, 0.12, 0.11] for c in SHARES},
}


def regret_table(users: int, replications: int, floor: float, seed: int = 22) -> list[str]:
    lines = []
    for title, rates in WORLDS.items():
        r = replay(rates, SHARES, users=users, replications=replications, exploration_rate=floor, seed=seed)
        lines.append(f"{title}: {users} users x {replications} replications, exploration floor {floor:.0%}")
        lines.append(f"  {'policy':<11} {'cum. regret':>18} {'conv. rate':>11} {'best-arm share':>15}")
        for name, g, se, rate, share in zip(r.policies, r.regret, r.regret_se, r.reward_rate, r.optimal_share,
                                            strict=True):
            lines.append(f"  {name:<11} {g:>10.1f} ± {se:>5.1f} {rate:>11.4f} {share:>15.3f}")
        i, j = r.policies.index("contextual"), r.policies.index("thompson")
        d = np.array(r.regret_per_replication[i]) - np.array(r.regret_per_replication[j])
        lines.append(f"  contextual − thompson regret: {d.mean():+.1f} ± {d.std(ddof=1) / math.sqrt(len(d)):.1f} "
                     "(paired SE)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--floor", type=float, default=0.05, help="exploration floor (production policy: 0.05)")
    args = parser.parse_args()
    print("\n".join(regret_table(args.users, args.replications, args.floor)))


if __name__ == "__main__":
    main()
