"""The document builders are deterministic and say what an experiment, a journey and a
pattern are about; registry-shaped records are accepted as they are."""

from __future__ import annotations

from datetime import UTC, datetime

from mcp_servers.chroma.documents import (
    build_experiment_document,
    build_journey_document,
    build_pattern_document,
    derive_outcome,
)
from mcp_servers.chroma.models import ExperimentAnalysis, ExperimentRecord, JourneyRecord, PatternRecord

REGISTRY_ROW = {  # the shape of mcp_servers.postgres Experiment.model_dump()
    "id": 7, "key": "support-prompt-v2", "name": "Support prompt with examples", "type": "prompt",
    "status": "concluded", "description": "Adds worked examples to the support bot's system prompt.",
    "hypothesis": "Examples raise the resolution rate.",
    "primary_metric": {"name": "resolution_rate", "direction": "higher"},
    "secondary_metrics": [{"name": "tokens", "direction": "lower"}], "guardrail_metrics": [],
    "variants": [
        {"id": 1, "key": "control", "name": "control", "is_control": True, "weight": 0.5,
         "config": {"system_prompt": "Answer the customer."}},
        {"id": 2, "key": "examples", "name": "examples", "is_control": False, "weight": 0.5,
         "config": {"system_prompt": "Answer the customer. Examples: ..."}},
    ],
    "targeting": None, "coverage": 1.0, "namespace": None, "hash_seed": "support-prompt-v2", "hash_version": 2,
    "min_sample_size": 200, "winner": "examples", "forced_variations": {}, "owner": None, "tags": ["support"],
    "created_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC), "updated_at": datetime(2025, 3, 9, tzinfo=UTC),
    "started_at": None, "stopped_at": None, "concluded_at": datetime(2025, 3, 9, tzinfo=UTC), "archived_at": None,
}


def test_an_experiment_becomes_descriptive_text_with_result_and_filterable_metadata():
    record = ExperimentRecord.model_validate(REGISTRY_ROW)
    built = build_experiment_document(record, ExperimentAnalysis(lift=0.07, p_value=0.012, sample_size=3000,
                                                                 lift_ci_low=0.02, lift_ci_high=0.12,
                                                                 summary="Examples helped on billing questions."))
    text = built.document
    assert text.startswith("Support prompt with examples. Adds worked examples")
    for fragment in ["Hypothesis: Examples raise the resolution rate.", "Variants: control (system_prompt=Answer the customer); variant examples (system_prompt=Answer the customer. Examples",
                     "Primary metric: resolution_rate (higher is better); secondary: tokens",
                     "winner examples", "lift +7.0% (interval +2.0% to +12.0%)", "p-value 0.012", "confidence 98.8%",
                     "sample size 3000", "Outcome: success.", "Analysis: Examples helped on billing questions.",
                     "Prompt experiment"]:
        assert fragment in text, fragment
    assert built.id == "support-prompt-v2"
    meta = built.metadata
    assert meta["experiment_key"] == "support-prompt-v2" and meta["experiment_type"] == "prompt"
    assert meta["outcome"] == "success" and meta["lift"] == 0.07 and meta["statistical_significance"] == 0.988
    assert meta["created_at"] == int(datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp())
    assert all(value is not None for value in meta.values())


def test_builders_are_deterministic():
    record = ExperimentRecord.model_validate(REGISTRY_ROW)
    assert build_experiment_document(record) == build_experiment_document(ExperimentRecord.model_validate(REGISTRY_ROW))
    journey = JourneyRecord(steps=["home", "search", "product"], device_type="desktop", session_duration_s=2700)
    assert build_journey_document(journey) == build_journey_document(journey.model_copy())
    pattern = PatternRecord(optimization_type="pricing", description="Show annual savings", outcome="neutral")
    assert build_pattern_document(pattern).id == build_pattern_document(pattern.model_copy()).id


def test_outcome_is_derived_from_lift_significance_and_metric_direction():
    assert derive_outcome(0.1, 0.01, None, None, set()) == "success"
    assert derive_outcome(-0.1, 0.01, None, None, set()) == "failure"
    assert derive_outcome(-0.1, 0.01, None, None, set(), direction="lower") == "success"  # e.g. latency fell
    assert derive_outcome(0.1, 0.2, None, None, set()) == "neutral"
    assert derive_outcome(0.1, None, 0.97, None, set()) == "success"
    assert derive_outcome(None, None, None, "control", {"control"}) == "neutral"
    assert derive_outcome(None, None, None, "treatment", {"control"}) == "success"
    assert derive_outcome(None, None, None, None, set()) is None


def test_a_journey_reads_like_a_session():
    built = build_journey_document(JourneyRecord(
        steps=["landing_page", "product_detail", "add_to_cart", "purchase"], device_type="mobile",
        session_duration_s=900, user_segment="premium", traffic_source="organic",
        conversion_outcome="purchased", value=99.99))
    assert built.document == ("User journey: landing page → product detail → add to cart → purchase. "
                              "Mobile, 15-minute session, premium segment, organic traffic. "
                              "Outcome: purchased (value 99.99).")
    assert built.id.startswith("journey-")
    assert built.metadata["journey_length"] == 4 and built.metadata["steps"][2] == "add_to_cart"
    assert built.metadata["first_step"] == "landing_page" and built.metadata["last_step"] == "purchase"


def test_a_pattern_reads_like_a_lesson():
    built = build_pattern_document(PatternRecord(
        optimization_type="checkout_flow", outcome="failure", improvement=-0.08,
        description="Added social proof notifications during checkout", metric="conversion",
        applied_to_segments=["mobile", "desktop"], industry="ecommerce", implementation_effort="low"))
    assert built.document == ("Failed optimization (checkout flow): Added social proof notifications during checkout. "
                              "Result: -8.0% conversion across mobile, desktop. Industry: ecommerce. "
                              "Implementation effort: low.")
    assert built.metadata["applied_to_segments"] == ["desktop", "mobile"]
    assert built.metadata["improvement"] == -0.08


def test_a_journey_from_the_stream_processor_keeps_its_fields():
    # the shape stream_processor.sinks.journey_from_event builds from a journey_completed event
    journey = JourneyRecord.model_validate({
        "journey_id": "evt-1", "user_id": "u-1", "steps": ["home", "cart", "purchase"], "device_type": "mobile",
        "session_minutes": 15, "conversion_outcome": "purchased", "experiment_key": "checkout-1step", "variant": "one_step"})
    assert (journey.device_type, journey.session_duration_s, journey.conversion_outcome, journey.experiment_key) == (
        "mobile", 900.0, "purchased", "checkout-1step")
    assert "Mobile, 15-minute session." in build_journey_document(journey).document
