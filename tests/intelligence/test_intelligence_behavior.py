"""predict_user_behavior: k nearest stored journeys (real embeddings in real Chroma) predict the next
action and the outcome, measurably better than the majority guess on held-out journeys."""

from __future__ import annotations

import anyio
from mcp import Client

from mcp_servers.intelligence.behavior import synthetic_journeys


async def store_journeys(client: Client, kit, journeys: list[dict]) -> None:
    limiter = anyio.CapacityLimiter(4)

    async def one(journey: dict) -> None:
        async with limiter:
            await kit.call(client, "store_user_journey", {"journey": journey})

    async with anyio.create_task_group() as tg:
        for journey in journeys:
            tg.start_soon(one, journey)


async def test_next_action_and_outcome_beat_the_majority_guess_on_held_out_journeys(
        intel_settings, open_stack, kit) -> None:
    train = synthetic_journeys(160, seed=1)
    held_out = synthetic_journeys(40, seed=2)
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        await store_journeys(client, kit, train)
        service = router.services["intelligence"]
        evaluation = await service.evaluate_behavior_predictions(held_out)  # each cut before its last step
        # A stored user's latest journey is their current path; their own journeys never vote.
        own = await kit.call(client, "predict_user_behavior", {"user_id": train[0]["user_id"]})
        partial = await kit.call(client, "predict_user_behavior",
                                 {"steps": ["landing_page", "search", "product_detail", "add_to_cart", "checkout"]})
        missing = await client.call_tool("predict_user_behavior", {"user_id": "nobody"})

    assert evaluation.journeys == 40
    assert evaluation.next_action_accuracy >= evaluation.next_action_baseline + 0.2
    assert evaluation.outcome_accuracy >= evaluation.outcome_baseline + 0.2
    assert evaluation.outcome_accuracy >= 0.7
    assert own["journey_source"] == train[0]["journey_id"] and own["journey_complete"]
    assert own["current_steps"] == train[0]["steps"]
    assert own["measured_accuracy"]["outcome_accuracy"] == evaluation.outcome_accuracy
    # Mid-checkout: the next step is the payment page, and most such sessions end in a purchase.
    assert partial["next_action"] == "payment"
    assert partial["predicted_outcome"] == "purchased"
    assert partial["neighbours_used"] >= 3 and "exactly the same steps" in partial["method"]
    assert partial["outcome_probability"] > 0.5 and partial["next_action_probability"] > 0.5
    assert missing.is_error and "no stored journey for user 'nobody'" in missing.content[0].text
