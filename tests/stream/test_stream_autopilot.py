"""The stream's optimization loop and the autopilot: nobody watches the loop, so an action that changes
traffic or stops an experiment waits for a person unless the operator gave a standing confirmation
(NEONBLUE_AUTOPILOT_UNATTENDED). Real broker, chDB, PostgreSQL and router."""

from __future__ import annotations

from dataclasses import replace

from conftest import plan_for, prefixed  # type: ignore[import-not-found]
from test_stream_processor import run_until  # type: ignore[import-not-found]

from mcp_router.runtime.serving import open_router
from schemas.settings import Settings
from stream_processor.generator import ArmTruth, MetricTruth, generate_events, produce
from stream_processor.runner import build_processor


async def _harmful_experiment_on_the_stream(settings: Settings, actor: str) -> tuple[list, str, list[dict]]:
    """A prompt experiment whose variant is much slower (a latency guardrail breach: the autopilot wants to
    roll back), streamed until the loop audited a decision by `actor`; the decisions, the status after,
    and what the loop kept."""
    async with open_router(settings) as router:
        postgres = router.services["postgres"]
        experiment = await postgres.create_experiment({
            "key": "stream-autopilot", "name": "Support bot prompt", "type": "prompt",
            "primary_metric": {"name": "resolved", "direction": "higher"},
            "guardrail_metrics": [{"name": "latency_ms", "direction": "lower"}],
            "variants": [{"key": "control", "is_control": True, "weight": 0.5},
                         {"key": "verbose", "weight": 0.5}]})
        experiment = await postgres.start_experiment(experiment.key)
        plan = replace(plan_for(experiment, users=4_000, seed=5), truths={
            "control": ArmTruth(0.1, metrics={"resolved": MetricTruth(0.6), "latency_ms": MetricTruth(800, 100)}),
            "verbose": ArmTruth(0.1, metrics={"resolved": MetricTruth(0.6), "latency_ms": MetricTruth(1400, 100)})})
        to = prefixed(settings)
        sent = await produce(settings.effective_kafka_bootstrap,
                             ((to(t), k, v) for t, k, v in generate_events(plan)), progress=False)
        processor = build_processor(settings, router.services, intelligence=router.backends["intelligence"])

        async def audited() -> bool:
            decisions = await postgres.list_decisions(experiment="stream-autopilot")
            return processor.stats.consumed >= sent and any(d.actor == actor for d in decisions.items)

        await run_until(processor, audited)
        decisions = (await postgres.list_decisions(experiment="stream-autopilot")).items
        status = (await postgres.get_experiment("stream-autopilot")).status
        return decisions, status, processor.on_batch.__self__.decisions


async def test_with_a_standing_confirmation_the_loop_acts_and_the_audit_says_who_confirmed(
        stream_settings: Settings) -> None:
    settings = stream_settings.model_copy(update={"autopilot_interval": 0.5, "chroma_url": None,
                                                  "autopilot_unattended": True})
    decisions, status, _ = await _harmful_experiment_on_the_stream(settings, "autopilot")
    auto = [d for d in decisions if d.actor == "autopilot"]
    assert auto and auto[0].reasoning and auto[0].inputs  # explainable from the audit trail
    assert auto[0].applied and auto[0].action == "roll_back" and status != "running"
    assert "NEONBLUE_AUTOPILOT_UNATTENDED" in auto[0].reasoning


async def test_by_default_the_loop_recommends_and_waits_for_a_person(stream_settings: Settings) -> None:
    settings = stream_settings.model_copy(update={"autopilot_interval": 0.5, "chroma_url": None})
    decisions, status, kept = await _harmful_experiment_on_the_stream(settings, "intelligence")
    assert status == "running"  # nothing changed without a person
    assert not any(d.applied for d in decisions)
    assert any(d.action == "recommend_roll_back" for d in decisions)
    assert kept and kept[0]["awaiting_confirmation"] is True and kept[0]["action"] == "roll_back"
