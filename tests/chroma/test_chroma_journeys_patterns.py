"""User journeys and optimization patterns: stored once, found by meaning and filters."""

from __future__ import annotations

import pytest

from schemas.errors import InvalidInput

JOURNEYS = [
    {"journey_id": "j-mobile-buy-1", "steps": ["landing_page", "product_detail", "add_to_cart", "checkout", "purchase"],
     "device_type": "mobile", "session_duration_s": 900, "user_segment": "premium", "conversion_outcome": "purchased",
     "value": 99.99},
    {"journey_id": "j-mobile-buy-2", "steps": ["home", "category", "product_detail", "cart", "payment", "order_confirmation"],
     "device_type": "mobile", "session_duration_s": 600, "conversion_outcome": "purchased", "value": 45.0},
    {"journey_id": "j-desktop-research", "steps": ["homepage", "search", "category_browse", "product_comparison", "exit"],
     "device_type": "desktop", "session_duration_s": 2700, "conversion_outcome": "no_purchase"},
    {"journey_id": "j-cart-abandon", "steps": ["landing_page", "product_detail", "add_to_cart", "shipping_costs", "exit"],
     "device_type": "mobile", "session_duration_s": 300, "conversion_outcome": "abandoned_cart"},
    {"journey_id": "j-support", "steps": ["help_center", "search_articles", "contact_form", "chat_with_agent"],
     "device_type": "desktop", "session_duration_s": 1200, "conversion_outcome": "ticket_resolved"},
    {"journey_id": "j-signup", "steps": ["pricing_page", "signup_form", "email_verification", "onboarding_tour"],
     "device_type": "desktop", "session_duration_s": 480, "conversion_outcome": "signed_up"},
]

PATTERNS = [
    {"optimization_type": "checkout_flow", "outcome": "success", "improvement": 0.35, "metric": "conversion",
     "description": "Reduced checkout steps from 4 to 2, added a progress indicator and address autofill",
     "applied_to_segments": ["mobile", "desktop", "tablet"], "industry": "ecommerce", "implementation_effort": "medium"},
    {"optimization_type": "checkout_flow", "outcome": "failure", "improvement": -0.08, "metric": "conversion",
     "description": "Added social proof notifications during the checkout process, which distracted buyers",
     "applied_to_segments": ["desktop"], "industry": "ecommerce", "implementation_effort": "low"},
    {"optimization_type": "pricing", "outcome": "success", "improvement": 0.12, "metric": "pro_plan_share",
     "description": "Introduced a high-priced enterprise tier as an anchor next to the Pro plan",
     "applied_to_segments": ["small business"], "industry": "saas"},
    {"optimization_type": "onboarding", "outcome": "neutral", "improvement": 0.01, "metric": "activation",
     "description": "Replaced the welcome video with a skippable questionnaire", "applied_to_segments": ["new users"]},
    {"optimization_type": "prompt", "outcome": "success", "improvement": 0.07, "metric": "resolution_rate",
     "description": "Gave the support assistant three example conversations in its system prompt",
     "applied_to_segments": ["support"], "industry": "saas", "implementation_effort": "low"},
]


@pytest.fixture
async def memory(service):
    for journey in JOURNEYS:
        await service.store_user_journey(journey)
    for pattern in PATTERNS:
        await service.store_optimization_pattern(pattern)
    return service


async def test_a_journey_finds_journeys_with_the_same_shape(memory):
    result = await memory.find_similar_user_journeys(journey={
        "steps": ["landing", "product", "cart", "purchase"], "device_type": "mobile", "session_duration_s": 840})
    ids = [hit.id for hit in result.hits]
    assert ids[0] == "j-mobile-buy-1"
    assert ids.index("j-mobile-buy-2") < ids.index("j-support") and ids.index("j-mobile-buy-2") < ids.index("j-signup")


async def test_a_description_finds_journeys_and_filters_narrow_them(memory):
    result = await memory.find_similar_user_journeys("shopper leaves after seeing delivery fees", n_results=1)
    assert result.hits[0].id == "j-cart-abandon"
    bought = await memory.find_similar_user_journeys("mobile shopping session", where={"conversion_outcome": "purchased"})
    assert {hit.id for hit in bought.hits} == {"j-mobile-buy-1", "j-mobile-buy-2"}
    with_cart = await memory.find_similar_user_journeys("shopping", where={"steps": {"$contains": "add_to_cart"}})
    assert {hit.id for hit in with_cart.hits} == {"j-mobile-buy-1", "j-cart-abandon"}
    long_sessions = await memory.find_similar_user_journeys("browsing", where={"session_duration": {"$gte": 1200}})
    assert {hit.id for hit in long_sessions.hits} == {"j-desktop-research", "j-support"}


async def test_journey_search_needs_exactly_one_of_query_or_journey(memory):
    with pytest.raises(InvalidInput, match="either query"):
        await memory.find_similar_user_journeys()
    with pytest.raises(InvalidInput, match="either query"):
        await memory.find_similar_user_journeys("x", journey={"steps": ["home"]})
    with pytest.raises(InvalidInput, match="invalid journey: steps"):
        await memory.find_similar_user_journeys(journey={"steps": []})


async def test_storing_a_journey_without_an_id_twice_keeps_one_copy(service):
    journey = {"steps": ["home", "search", "product"], "device_type": "tablet"}
    first = await service.store_user_journey(journey)
    second = await service.store_user_journey(journey)
    assert first.id == second.id and second.status == "unchanged"
    stats = await service.collection_stats()
    assert next(c.count for c in stats.collections if c.name == "user_journeys") == 1


async def test_patterns_are_found_by_meaning_and_filtered_by_outcome_and_segment(memory):
    result = await memory.search_optimization_patterns("simplify the purchase flow", n_results=5)
    assert "Reduced checkout steps" in result.hits[0].document
    worked = await memory.search_optimization_patterns(
        "checkout changes", where={"outcome": "success", "applied_to_segments": {"$contains": "mobile"}})
    assert [hit.metadata["optimization_type"] for hit in worked.hits] == ["checkout_flow"]
    failed = await memory.search_optimization_patterns("checkout changes", where={"outcome": "failure"})
    assert [hit.metadata["improvement"] for hit in failed.hits] == [-0.08]
    big = await memory.search_optimization_patterns("anything that helped", where={"improvement": {"$gt": 0.1}})
    assert {hit.metadata["optimization_type"] for hit in big.hits} == {"checkout_flow", "pricing"}
    prompts = await memory.search_optimization_patterns("language model instructions", n_results=1)
    assert prompts.hits[0].metadata["optimization_type"] == "prompt"
