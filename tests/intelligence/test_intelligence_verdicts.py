"""End to end on the real stores: generated experiments with KNOWN true effects get the verdict
those effects imply, through the router's MCP tools, and every verdict and action is audited."""

from __future__ import annotations

from mcp import Client

ERROR_GUARDRAIL = {"name": "error_rate", "direction": "lower", "non_inferiority_margin": 0.05}


async def test_a_clear_winner_ships_and_the_verdict_is_audited(intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings(environment="production")) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("winner", guardrails=[ERROR_GUARDRAIL])
        # +20% conversion (10% -> 12%), error rate unchanged: 30k users.
        await seed.traffic("winner", kit.arms(0.10, 0.12, error_rate=(0.05, 0.05)), users=30_000)
        result = await kit.call(client, "analyze_experiment_performance", {"experiment": "winner"})
        again = await kit.call(client, "analyze_experiment_performance", {"experiment": "winner"})
        autopilot = await kit.call(client, "run_autopilot", {"experiment": "winner"})
        decisions = await kit.call(client, "list_decisions", {"experiment": "winner"})

    assert result["verdict"]["verdict"] == "ship"
    assert result["verdict"]["rule_id"] == "primary_win"
    assert result["verdict"]["variant"] == "treatment"
    assert result["verdict"]["confidence"] >= 0.95
    primary = next(m for m in result["metrics"] if m["role"] == "primary")
    assert primary["better"] is True and primary["significant"]
    lo, hi = primary["relative_ci_sequential"]
    assert lo < 0.20 < hi and lo > 0  # the interval covers the true +20% and excludes 0
    assert primary["cuped"]["applied"] and primary["cuped"]["variance_reduction"] > 0.1
    assert primary["p_value_sequential"] >= primary["p_value"]  # peeking-safe costs evidence
    guardrail = next(m for m in result["metrics"] if m["role"] == "guardrail")
    assert guardrail["guardrail"]["status"] != "fail"
    assert not result["srm"]["flagged"]
    assert result["narrative"][0].startswith("Ship")
    # The verdict is in the audit trail once: an identical re-analysis does not add a row.
    assert result["decision_id"] is not None and again["decision_id"] == result["decision_id"]
    verdicts = [d for d in decisions["items"] if d["action"] == "verdict_ship"]
    assert len(verdicts) == 1 and verdicts[0]["inputs"]["rule_id"] == "primary_win"
    # Production may not ship automatically: the autopilot asks a human and changes nothing.
    assert autopilot["action"] == "needs_human_review" and not autopilot["applied"]
    assert "requires a human to ship" in autopilot["rule"]
    assert any(d["action"] == "needs_human_review" and d["actor"] == "autopilot" and not d["applied"]
               for d in decisions["items"])


async def test_a_harmful_treatment_breaching_a_guardrail_is_rolled_back_by_the_autopilot(
        intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings(environment="development")) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("harmful", guardrails=[ERROR_GUARDRAIL])
        # Conversion unchanged, error rate 5% -> 8% (+60%, far beyond the 5% margin).
        await seed.traffic("harmful", kit.arms(0.10, 0.10, error_rate=(0.05, 0.08)), users=30_000)
        result = await kit.call(client, "analyze_experiment_performance", {"experiment": "harmful"})
        checked = await kit.call(client, "evaluate_guardrails", {"experiment": "harmful"})
        acted = await kit.call(client, "run_autopilot", {"experiment": "harmful", "confirm": True,
                                                         "reason": "error rate up"})
        experiment = await kit.call(client, "get_experiment", {"experiment": "harmful"})
        decisions = await kit.call(client, "list_decisions", {"experiment": "harmful", "actor": "autopilot"})

    assert result["verdict"]["verdict"] == "roll_back"
    assert result["verdict"]["rule_id"] == "guardrail_failure"
    guardrail = next(m for m in result["metrics"] if m["metric"] == "error_rate")
    assert guardrail["guardrail"]["status"] == "fail" and guardrail["guardrail"]["harm_significant"]
    assert guardrail["relative_lift"] > 0.3
    # evaluate_guardrails: the error rate breaches the development tolerance (25%); nothing applied.
    breach = next(g for g in checked["guardrails"] if g["metric"] == "error_rate")
    assert breach["breaches_policy"] and breach["degradation"] > 0.25
    assert checked["action"] == "roll_back" and not checked["applied"]
    # run_autopilot: rolled back through the registry (concluded with control serving everyone) and audited.
    assert acted["action"] == "roll_back" and acted["allowed"] and acted["applied"]
    assert experiment["status"] == "concluded" and experiment["winner"] == "control"
    applied = [d for d in decisions["items"] if d["applied"]]
    assert len(applied) == 1 and applied[0]["action"] == "roll_back"
    audit = applied[0]
    assert audit["inputs"]["policy"]["environment"] == "development"
    assert any(h["metric"] == "error_rate" and h["breaches_policy"] for h in audit["inputs"]["harms"])
    assert "error_rate" in audit["reasoning"] and audit["confidence"] > 0.95


async def test_an_a_a_test_keeps_running_with_no_effect(intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("a-a", guardrails=[ERROR_GUARDRAIL])
        # No effect anywhere; 40k users are not yet enough for 80% power at a 5% MDE (always-valid test).
        await seed.traffic("a-a", kit.arms(0.10, 0.10, error_rate=(0.05, 0.05)), users=40_000, seed=1)
        result = await kit.call(client, "analyze_experiment_performance", {"experiment": "a-a"})
        autopilot = await kit.call(client, "run_autopilot", {"experiment": "a-a", "dry_run": True})

    assert result["verdict"]["verdict"] == "keep_running"
    assert result["verdict"]["rule_id"] == "underpowered"
    assert 0 < result["verdict"]["days_left"] < 40
    assert not any(m["significant"] for m in result["metrics"])
    assert all(m["guardrail"]["status"] != "fail" for m in result["metrics"] if m["guardrail"])
    assert not result["srm"]["flagged"]
    assert autopilot["action"] in ("none", "reallocate") and not autopilot["applied"]


async def test_a_45_55_split_configured_as_50_50_is_flagged_and_blocks_the_verdict(
        intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("srm")
        # Both arms convert the same, but 18% of control users are lost: 45/55 instead of 50/50.
        await seed.traffic("srm", kit.arms(0.10, 0.13), users=30_000, exposure_keep={"control": 0.45 / 0.55})
        result = await kit.call(client, "analyze_experiment_performance", {"experiment": "srm"})
        advice = await kit.call(client, "recommend_experiment_optimization", {"experiment": "srm"})
        autopilot = await kit.call(client, "run_autopilot", {"experiment": "srm"})

    assert result["srm"]["flagged"] and result["srm"]["p_value"] < 0.001
    control = next(v for v in result["variants"] if v["key"] == "control")
    assert 0.43 < control["observed_share"] < 0.47
    # Blocked even though the treatment "wins" by 30%: the numbers cannot be trusted.
    assert result["verdict"]["verdict"] == "needs_review" and result["verdict"]["rule_id"] == "srm_mismatch"
    assert advice["actions"][0]["action"] == "investigate_srm" and advice["actions"][0]["rank"] == 1
    assert advice["actions"][0]["decision_id"] is not None
    assert not any(a["action"] == "ship" for a in advice["actions"])
    assert autopilot["action"] == "needs_human_review" and not autopilot["applied"]


async def test_too_little_data_needs_review_with_the_days_left(intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("tiny", min_sample_size=5000)
        await seed.traffic("tiny", kit.arms(0.10, 0.12), users=1_200, days=7)
        result = await kit.call(client, "analyze_experiment_performance", {"experiment": "tiny"})
        advice = await kit.call(client, "recommend_experiment_optimization", {"experiment": "tiny"})

    verdict = result["verdict"]
    assert verdict["verdict"] == "needs_review" and verdict["rule_id"] == "insufficient_data"
    # ~600 users per arm at ~170/day: at least (5000 - 600) / 85 ≈ 52 more days.
    assert verdict["days_left"] > 40
    assert "5000 needed per arm" in verdict["rule"]
    extend = next(a for a in advice["actions"] if a["action"] == "extend_duration")
    assert extend["evidence"]["additional_users"] > 8000
