"""predict_experiment_outcome on a seeded history of past experiments (real Chroma memory, real embeddings):
the prior follows the neighbours' results, both across topics and when the history changes, and the tool
refuses to guess when too few similar experiments exist."""

from __future__ import annotations

import random
from typing import Any

from mcp import Client

CHECKOUT_CHANGES = [
    "one-step checkout instead of three steps", "guest checkout without an account", "express wallet payment button",
    "address autofill on the shipping step", "progress bar across checkout steps", "saved cards pre-selected at payment",
    "shipping cost shown before the payment step", "fewer form fields on the checkout page",
    "trust badges next to the pay button", "single-page checkout on mobile", "sticky order summary during checkout",
    "inline card validation at checkout", "postcode lookup in the checkout address form",
    "removing the coupon field from checkout", "buy-now button skipping the cart",
]
EMAIL_CHANGES = [
    "personalised first-name subject line", "emoji in the newsletter subject line", "question-style email subject",
    "shorter preview text in the weekly newsletter", "urgency wording in the promotional email subject",
    "sending the newsletter at 7am instead of noon", "numbered list subject line for the digest email",
    "brand name first in the email subject", "curiosity-gap subject line for the onboarding email",
    "lowercase subject line in the product update email", "sender name as a person instead of the brand",
    "discount amount in the email subject line", "plain-text newsletter instead of HTML",
    "subject line under 30 characters", "recipient's city in the email subject",
]


def past_experiments(rng: random.Random, topic: str, lift_mean: float) -> list[dict[str, Any]]:
    """15 changes x 2 markets per topic = 30 experiments; results drawn around `lift_mean` with noise."""
    out = []
    changes = CHECKOUT_CHANGES if topic == "checkout" else EMAIL_CHANGES
    for i, change in enumerate(changes):
        for market in ("US", "EU"):
            lower = topic == "checkout" and i % 5 == 4  # some measured abandonment (lower is better)
            metric = ("checkout_abandonment_rate" if lower else "checkout_conversion") if topic == "checkout" \
                else "email_click_rate"
            improvement = lift_mean + rng.gauss(0, 0.02)
            lift = -improvement if lower else improvement
            out.append({
                "experiment": {
                    "key": f"{topic}-{i:02d}-{market.lower()}",
                    "name": f"{change.capitalize()} ({market})",
                    "description": f"Tested {change} for {market} customers.",
                    "hypothesis": (f"{change.capitalize()} makes purchasing easier and raises checkout conversion"
                                   if topic == "checkout" else
                                   f"{change.capitalize()} makes more subscribers open and click the email"),
                    "type": "ui" if topic == "checkout" else "feature",
                    "primary_metric": {"name": metric, "direction": "lower" if lower else "higher"},
                    "status": "concluded",
                },
                "analysis": {"lift": round(lift, 4), "p_value": round(rng.uniform(0.001, 0.2), 4),
                             "sample_size": rng.randint(8000, 40000)},
            })
    return out


CHECKOUT_CONFIG = {
    "name": "Apple Pay express button on the checkout page",
    "hypothesis": "A one-tap express payment button makes checkout easier and raises checkout conversion",
    "type": "ui", "primary_metric": {"name": "checkout_conversion", "direction": "higher"},
    "baseline": {"mean": 0.1}, "traffic_per_day": 4000,
}
EMAIL_CONFIG = {
    "name": "Personalised subject line for the weekly newsletter",
    "hypothesis": "Using the subscriber's first name in the email subject raises email clicks",
    "type": "feature", "primary_metric": {"name": "email_click_rate", "direction": "higher"},
    "baseline": {"mean": 0.1}, "traffic_per_day": 4000,
}
UNRELATED_CONFIG = {
    "name": "Kubernetes node autoscaler cooldown for nightly batch jobs",
    "hypothesis": "A shorter scale-down cooldown lowers the queue wait of batch jobs",
    "type": "workflow", "primary_metric": {"name": "queue_wait_seconds", "direction": "lower"},
    "baseline": {"mean": 120, "sd": 60}, "traffic_per_day": 500,
}


async def store(client: Client, kit: Any, records: list[dict[str, Any]]) -> None:
    """Upsert the records into memory in one batch (sync_from_registry embeds them together)."""
    flat = [{**r["experiment"], **r["analysis"]} for r in records]
    report = await kit.call(client, "sync_from_registry", {"experiments": flat})
    assert not report["failed"], report["failed"]


async def predict(client: Client, kit: Any, config: dict[str, Any]) -> dict[str, Any]:
    return await kit.call(client, "predict_experiment_outcome", {"experiment_config": config})


async def test_the_prior_follows_the_neighbours_both_ways_and_refuses_without_history(
        intel_settings, open_stack, kit) -> None:
    rng = random.Random(8)
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        # 60 past experiments: checkout changes won (+8%), email subject lines lost (-3%).
        await store(client, kit, past_experiments(rng, "checkout", 0.08) + past_experiments(rng, "email", -0.03))
        checkout = await predict(client, kit, CHECKOUT_CONFIG)
        email = await predict(client, kit, EMAIL_CONFIG)
        unrelated = await predict(client, kit, UNRELATED_CONFIG)
        # The checkout history is rewritten: the same changes now failed (-6%).
        await store(client, kit, past_experiments(random.Random(9), "checkout", -0.06))
        checkout_after = await predict(client, kit, CHECKOUT_CONFIG)

    for result in (checkout, email, checkout_after):
        assert result["status"] == "ok"
        assert result["neighbours_found"] >= 5
    # Across topics: each prior sits with its own neighbours.
    assert 0.05 < checkout["prior"]["mean"] < 0.11
    assert -0.06 < email["prior"]["mean"] < 0.0
    used = [n for n in checkout["neighbours"] if n["used"]]
    assert all(n["experiment_key"].startswith("checkout") for n in used[:10])
    # Lower-is-better neighbours count by their improvement (a fall in abandonment is a win).
    lowered = [n for n in used if n["lift"] is not None and n["lift"] < 0]
    assert lowered and all(n["improvement"] > 0 for n in lowered)
    # The spread of true effects is the observed spread minus the neighbours' sampling noise.
    assert checkout["prior"]["between_experiment_sd"] <= checkout["prior"]["observed_sd"]
    assert checkout["probability_significant_win"] > email["probability_significant_win"]
    assert checkout["recommended_sample_size_per_variant"] > 0
    assert checkout["estimated_duration_days"] == checkout["recommended_total_sample_size"] / 4000
    # Within a topic, over time: the same config's prior follows the rewritten history down.
    assert checkout_after["prior"]["mean"] < 0 < checkout["prior"]["mean"]
    assert checkout_after["probability_significant_win"] < checkout["probability_significant_win"]
    # Too few similar experiments: it says so instead of guessing.
    assert unrelated["status"] == "insufficient_history"
    assert unrelated["neighbours_found"] < 5 and unrelated["prior"] is None
    assert unrelated["probability_significant_win"] is None
    assert f"found {unrelated['neighbours_found']}" in unrelated["message"]


async def test_duration_uses_the_traffic_clickhouse_saw_for_similar_experiments(
        intel_settings, open_stack, kit) -> None:
    rng = random.Random(3)
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        history = past_experiments(rng, "checkout", 0.08)
        await store(client, kit, history)
        seed = kit.Seeder(router, client)
        # Two of the past checkout experiments left events in ClickHouse: 2800 users over 14 days each.
        for i, key in enumerate(("checkout-01-us", "checkout-02-us")):
            await seed.traffic(key, kit.arms(0.10, 0.11), users=2800, seed=20 + i)
        config = {k: v for k, v in CHECKOUT_CONFIG.items() if k != "traffic_per_day"}
        result = await predict(client, kit, config)

    assert result["status"] == "ok"
    assert "ClickHouse" in result["traffic_source"]
    assert 150 < result["traffic_per_day"] < 210  # 2800 users over ~14-15 days
    assert result["estimated_duration_days"] == result["recommended_total_sample_size"] / result["traffic_per_day"]
