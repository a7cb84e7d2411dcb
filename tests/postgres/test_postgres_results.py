"""Per-user results, the per-variant analysis computed in PostgreSQL, the summary, and the decision audit trail."""

from __future__ import annotations

import math
import statistics

import pytest

from mcp_servers import stats as engine
from mcp_servers.postgres import open_service
from schemas.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        await svc.create_experiment({
            "key": "support-prompt", "name": "Support prompt", "type": "prompt",
            "primary_metric": {"name": "resolution_rate", "direction": "higher"},
            "secondary_metrics": ["tokens"],
            "guardrail_metrics": [{"name": "escalation_rate", "direction": "lower"}],
            "min_sample_size": 10,
            "variants": [{"key": "control", "is_control": True, "config": {"system_prompt": "A"}},
                         {"key": "examples", "config": {"system_prompt": "B"}}],
        })
        await svc.start_experiment("support-prompt")
        yield svc


async def test_a_result_is_attributed_to_the_users_variant(service):
    variant = (await service.get_variant("support-prompt", "u1")).variant_key
    recorded = await service.record_result("support-prompt", "u1", "resolution_rate", 1.0, metadata={"ticket": 7})
    assert (recorded.variant_key, recorded.metric, recorded.value, recorded.duplicate) == (variant, "resolution_rate", 1.0, False)


async def test_results_are_refused_for_undeclared_metrics_and_bad_values(service):
    await service.get_variant("support-prompt", "u1")
    with pytest.raises(InvalidInput, match="metric 'resolution_rat' is not declared.*resolution_rate, tokens, escalation_rate"):
        await service.record_result("support-prompt", "u1", "resolution_rat", 1.0)
    with pytest.raises(InvalidInput, match="finite number"):
        await service.record_result("support-prompt", "u1", "tokens", math.nan)


async def test_a_repeated_event_id_records_nothing(service):
    await service.get_variant("support-prompt", "u1")
    first = await service.record_result("support-prompt", "u1", "tokens", 120, event_id="evt-1")
    again = await service.record_result("support-prompt", "u1", "tokens", 999, event_id="evt-1")
    assert again.duplicate and again.id == first.id and again.value == 120
    analysis = await service.analyze_experiment_data("support-prompt", metrics=["tokens"])
    assert sum(v.metrics["tokens"].records for v in analysis.variants) == 1


async def test_late_results_are_accepted_after_stop_but_not_after_archive(service):
    await service.get_variant("support-prompt", "u1")
    await service.stop_experiment("support-prompt")
    assert not (await service.record_result("support-prompt", "u1", "tokens", 5)).duplicate
    await service.archive_experiment("support-prompt")
    with pytest.raises(Conflict, match="archived"):
        await service.record_result("support-prompt", "u1", "tokens", 5)


async def test_analysis_matches_the_data_recorded(service):
    by_variant: dict[str, dict[str, list[float]]] = {"control": {}, "examples": {}}
    for i in range(60):
        user = f"user-{i}"
        variant = (await service.get_variant("support-prompt", user)).variant_key
        if i % 5 == 4:
            continue  # assigned but never measured
        values = [1.0 if (i % 3 or variant == "examples") else 0.0, float(i % 2)]  # two records per user
        for value in values:
            await service.record_result("support-prompt", user, "resolution_rate", value)
        by_variant[variant][user] = values
    analysis = await service.analyze_experiment_data("support-prompt")
    assert analysis.metrics == ["resolution_rate", "tokens", "escalation_rate"]
    assert analysis.total_assigned == 60 and analysis.sample_size_reached
    stats = {v.variant_key: v for v in analysis.variants}
    for key, users in by_variant.items():
        per_user = [statistics.fmean(v) for v in users.values()]
        got = stats[key].metrics["resolution_rate"]
        assert got.users == len(users) and got.records == 2 * len(users)
        assert got.mean == pytest.approx(statistics.fmean(per_user))
        assert got.std == pytest.approx(statistics.stdev(per_user))
        assert got.sum_squares == pytest.approx(sum(x * x for x in per_user))
        assert got.conversion_rate == pytest.approx(sum(x > 0 for x in per_user) / stats[key].assigned_users)
        assert stats[key].observed_share == pytest.approx(stats[key].assigned_users / 60)
        assert stats[key].metrics["tokens"].users == 0 and stats[key].metrics["tokens"].mean is None
    control_mean = stats["control"].metrics["resolution_rate"].mean
    lift = stats["examples"].metrics["resolution_rate"].relative_lift_vs_control
    assert lift == pytest.approx((stats["examples"].metrics["resolution_rate"].mean - control_mean) / control_mean)
    summed = await service.analyze_experiment_data("support-prompt", metrics=["resolution_rate"], aggregation="sum")
    for vs in summed.variants:
        assert vs.metrics["resolution_rate"].sum == pytest.approx(sum(sum(v) for v in by_variant[vs.variant_key].values()))


async def test_analysis_reports_an_unreached_sample_size_and_refuses_unknown_metrics(service):
    await service.get_variant("support-prompt", "u1")
    analysis = await service.analyze_experiment_data("support-prompt")
    assert not analysis.sample_size_reached
    assert any("sample size not reached" in n for n in analysis.notes)
    with pytest.raises(InvalidInput, match="metrics not declared"):
        await service.analyze_experiment_data("support-prompt", metrics=["revenue"])
    with pytest.raises(InvalidInput, match="aggregation"):
        await service.analyze_experiment_data("support-prompt", aggregation="median")


async def test_the_summary_reads_like_a_report(service):
    for i in range(30):
        user = f"user-{i}"
        variant = (await service.get_variant("support-prompt", user)).variant_key
        await service.record_result("support-prompt", user, "resolution_rate", 0.9 if variant == "examples" else 0.6)
    summary = await service.get_experiment_summary("support-prompt")
    assert summary.leader == "examples" and summary.sample_size_reached
    assert "# Support prompt (`support-prompt`)" in summary.summary
    assert "| examples | 50% |" in summary.summary and "+50.0%" in summary.summary
    assert "Leading so far on `resolution_rate`: examples" in summary.summary
    await service.stop_experiment("support-prompt", winner="examples")
    assert "Declared winner: **examples**" in (await service.get_experiment_summary("support-prompt")).summary


async def test_the_leader_respects_lower_is_better(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        await svc.create_experiment({"key": "latency", "name": "Latency", "type": "model",
                                     "primary_metric": {"name": "latency_ms", "direction": "lower"},
                                     "variants": [{"key": "big", "is_control": True}, {"key": "small"}]})
        await svc.start_experiment("latency")
        for i in range(20):
            variant = (await svc.get_variant("latency", f"u{i}")).variant_key
            await svc.record_result("latency", f"u{i}", "latency_ms", 900 if variant == "big" else 300)
        assert (await svc.get_experiment_summary("latency")).leader == "small"


async def test_decisions_form_an_audit_trail(service):
    first = await service.record_decision({
        "experiment": "support-prompt", "action": "keep_running", "reasoning": "not enough data",
        "inputs": {"n": 12}, "confidence": 0.4, "actor": "intelligence",
    })
    assert first.experiment_key == "support-prompt" and first.inputs == {"n": 12} and not first.applied
    await service.record_decision({"experiment": "support-prompt", "action": "reallocate_weights",
                                   "reasoning": "thompson", "actor": "intelligence", "applied": True})
    portfolio = await service.record_decision({"action": "pause_all", "reasoning": "incident", "actor": "user:ops"})
    assert portfolio.experiment_key is None
    page = await service.list_decisions(experiment="support-prompt")
    assert page.total == 2 and [d.action for d in page.items] == ["reallocate_weights", "keep_running"]
    assert [d.action for d in (await service.list_decisions(applied=True)).items] == ["reallocate_weights"]
    assert (await service.list_decisions(actor="user:ops")).items[0].id == portfolio.id
    paged = await service.list_decisions(limit=1, offset=1)
    assert paged.total == 3 and paged.next_offset == 2
    with pytest.raises(NotFound):
        await service.record_decision({"experiment": "nope", "action": "x", "reasoning": "r", "actor": "a"})
    with pytest.raises(InvalidInput, match="confidence"):
        await service.record_decision({"action": "x", "reasoning": "r", "actor": "a", "confidence": 1.5})
    with pytest.raises(InvalidInput, match="action"):
        await service.record_decision({"action": "Ship It!", "reasoning": "r", "actor": "a"})


async def test_sample_size_is_reached_only_against_a_plan_and_says_its_numbers(pg_dsn):
    """Issue 18: one user and no min_sample_size used to read "Sample size reached."."""
    async with open_service(dsn=pg_dsn) as svc:
        await svc.create_experiment({"key": "unplanned", "name": "Unplanned", "type": "ui",
                                     "primary_metric": "conversion",
                                     "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]})
        await svc.start_experiment("unplanned")
        await svc.get_variant("unplanned", "only-user")
        lonely = await svc.get_experiment_summary("unplanned")
        assert not lonely.sample_size_reached and "Sample size reached" not in lonely.summary
        assert ("No sample size to judge by yet: min_sample_size is 0 and the control has no conversion results "
                "to plan from yet; the smallest arm has 0 users.") in lonely.summary
        assert "No `conversion` results recorded yet." in lonely.summary and lonely.leader is None

        # 400 users, conversions recorded for converters only (value 1): 20% in both arms.
        for i in range(400):
            await svc.get_variant("unplanned", f"u{i}")
            if i % 5 == 0:
                await svc.record_result("unplanned", f"u{i}", "conversion", 1.0)
        analysis = await svc.analyze_experiment_data("unplanned")
        control = next(v for v in analysis.variants if v.is_control)
        rate = control.metrics["conversion"].sum / control.assigned_users
        planned = engine.sample_size(0.05, rate, None, target_power=0.8, alpha=0.05).n_per_variant
        assert analysis.sample_size_per_arm == planned and planned > 10_000 and not analysis.sample_size_reached
        assert "planned to detect a 5% relative change from the control's conversion" in analysis.sample_size_basis
        summary = (await svc.get_experiment_summary("unplanned")).summary
        smallest = min(v.assigned_users for v in analysis.variants)
        assert f"Sample size not reached: the smallest arm has {smallest:,} of the {planned:,} users per arm" in summary
        # Per assigned user: the non-converters count as 0, so the table shows the conversion rate, not 1.0.
        assert f"| {rate:.4g} | (control) |" in summary

        await svc.update_experiment("unplanned", {"min_sample_size": smallest})
        reached = await svc.get_experiment_summary("unplanned")
        assert reached.sample_size_reached
        assert (f"Sample size reached: the smallest arm has {smallest:,} users, at least the {smallest:,} per arm "
                "(the experiment's min_sample_size).") in reached.summary
