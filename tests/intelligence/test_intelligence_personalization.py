"""Issue 22 end to end on the real stores, through the router's MCP tools: segment effects find the planted
segment, interactions find the planted pair (and not the independent one), router_status lists the flagged
pair, and a personalised experiment serves each device its planted best arm and records every decision as an
exposure the analysis reads.

Traffic is built here with KNOWN truths per user (the generator has no context-dependent effects): users get a
device (mobile 50%, desktop 40%, tablet 10%) and a country, an arm in each experiment they are in (uniform,
seeded), and convert with the planted probability of their device and arms.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from mcp import Client
from mcp_calls import refusal  # type: ignore[import-not-found]

DEVICES = ("mobile", "desktop", "tablet")
COUNTRIES = ("US", "DE", "BR")
START = (datetime.now(UTC) - timedelta(days=10)).replace(hour=0, minute=0, second=0, microsecond=0)


def planted(experiments: dict[str, list[str]], rate, *, users: int, seed: int, prefix: str) -> tuple[list[bytes], Any]:
    """Exposure + conversion events for `users` users in every experiment of `experiments` (key -> variants).
    `rate(key, device, arms)` is the planted conversion probability in experiment `key` given the user's device
    and arms (dict key -> arm index). Returns the JSON lines and the per-user (device, arms) arrays."""
    rng = np.random.default_rng(seed)
    device = rng.choice(3, users, p=[0.5, 0.4, 0.1])
    country = rng.choice(3, users)
    arms = {k: rng.integers(len(v), size=users) for k, v in experiments.items()}
    at = START.timestamp() + rng.uniform(0, 8 * 86400, users)
    lines = []
    for i in range(users):
        uid = f"{prefix}{i:06d}"
        seg = {"device": DEVICES[device[i]], "country": COUNTRIES[country[i]]}
        ts = datetime.fromtimestamp(at[i], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        mine = {k: int(a[i]) for k, a in arms.items()}
        for key, variants in experiments.items():
            base = {"user_id": uid, "experiment_id": key, "variant": variants[mine[key]], "segment": seg,
                    "timestamp": ts}
            lines.append(orjson.dumps({"event_id": f"{key}:{uid}:exp", "event_type": "exposure", **base}))
            if rng.uniform() < rate(key, DEVICES[device[i]], mine):
                lines.append(orjson.dumps({"event_id": f"{key}:{uid}:conv", "event_type": "conversion", **base}))
    return lines, (device, arms)


async def ingest(router, lines: list[bytes], token: str) -> None:
    await router.services["clickhouse"].ingest_json(b"\n".join(lines), token)


async def create(client: Client, kit, key: str, variants: list[str], tags: list[str] | None = None,
                 primary: Any = "conversion") -> None:
    await kit.call(client, "create_experiment", {"experiment": {
        "key": key, "name": key.replace("-", " "), "type": "ui", "primary_metric": primary, "tags": tags or [],
        "variants": [{"key": v, "is_control": i == 0, "weight": 1 / len(variants)} for i, v in enumerate(variants)]}})
    await kit.call(client, "start_experiment", {"experiment": key})


async def test_segment_effects_and_interactions_find_what_was_planted(intel_settings, open_stack, kit) -> None:
    def rate(key: str, device: str, arms: dict[str, int]) -> float:
        if key == "seg-checkout":  # +6 points on mobile only
            return 0.10 + (0.06 if arms[key] == 1 and device == "mobile" else 0.0)
        if key == "promo-a":  # +2 points for A's treatment, +2 for B's, +6 more when both
            a, b = arms["promo-a"], arms["promo-b"]
            return 0.10 + 0.02 * a + 0.02 * b + 0.06 * a * b
        return 0.10

    async with open_stack(intel_settings(environment="production")) as router, Client(router.server) as client:
        for key in ("seg-checkout", "promo-a", "promo-b", "promo-c"):
            await create(client, kit, key, ["control", "treatment"])
        lines, _ = planted({"seg-checkout": ["control", "treatment"]}, rate, users=8000, seed=1, prefix="s")
        await ingest(router, lines, "seg")
        lines, _ = planted({k: ["control", "treatment"] for k in ("promo-a", "promo-b", "promo-c")}, rate,
                           users=8000, seed=2, prefix="p")
        await ingest(router, lines, "promo")

        segments = await kit.call(client, "analyze_segment_effects", {"experiment": "seg-checkout"})
        bh = await kit.call(client, "analyze_segment_effects", {"experiment": "seg-checkout",
                                                                "correction": "benjamini-hochberg"})
        analysis = await kit.call(client, "analyze_experiment_performance", {"experiment": "promo-a"})
        seg_analysis = await kit.call(client, "analyze_experiment_performance", {"experiment": "seg-checkout"})
        before = await kit.call(client, "find_experiment_interactions", {"refresh": False})
        scan = await kit.call(client, "find_experiment_interactions", {})
        status = await kit.call(client, "router_status", {})
        bad = await refusal(client, "analyze_segment_effects", {"experiment": "no-such-experiment"})

    arm = segments["arms"][0]
    # mobile responds differently; desktop (and maybe tablet) too, since their complement holds mobile;
    # no country does
    assert "device=mobile" in arm["differing"] and all(d.startswith("device=") for d in arm["differing"])
    mobile = next(s for s in arm["segments"] if s["dimension"] == "device" and s["segment"] == "mobile")
    assert mobile["ci"][0] < 0.06 < mobile["ci"][1] and mobile["significant"]
    desktop = next(s for s in arm["segments"] if s["segment"] == "desktop")
    assert abs(desktop["effect"]) < 0.03 and desktop["effect"] < desktop["complement_effect"]
    device_q = next(d for d in arm["dimensions"] if d["dimension"] == "device")
    assert device_q["flagged"] and not any(d["flagged"] for d in arm["dimensions"] if d["dimension"] == "country")
    assert any("device=mobile responds differently" in s for s in segments["narrative"])
    assert bh["correction"] == "benjamini-hochberg" and bh["arms"][0]["differing"] == arm["differing"]
    assert [s["significant"] for s in bh["arms"][0]["segments"]].count(True) >= 1
    # the analysis carries the segments and says it in its narrative
    assert seg_analysis["segments"]["arms"][0]["differing"] == arm["differing"]
    assert any("device=mobile responds differently" in s for s in seg_analysis["narrative"])

    report = analysis["interactions"]
    assert report["other_experiments"] == 2
    assert [(p["other_experiment_key"], p["flagged"]) for p in sorted(report["pairs"], key=lambda p: p["other_experiment_key"])] \
        == [("promo-b", True), ("promo-c", False)]
    flagged = report["flagged"][0]
    assert flagged["ci"][0] < 0.06 < flagged["ci"][1]
    assert flagged["effect_with"] > flagged["effect_without"]
    assert any(s.startswith("Interaction with promo-b") for s in analysis["narrative"])
    assert before["scanned_at"] is None and len(before["flagged"]) == 1  # the analysis already flagged it
    pairs = {frozenset({p["experiment_key"], p["other_experiment_key"]}) for p in scan["flagged"]}
    assert pairs == {frozenset({"promo-a", "promo-b"})} and scan["experiments"] == 4
    assert [frozenset({p["experiment_key"], p["other_experiment_key"]}) for p in status["interactions"]] \
        == [frozenset({"promo-a", "promo-b"})]
    assert "no-such-experiment" in bad


async def test_personalised_experiment_serves_each_device_its_best_arm(intel_settings, open_stack, kit) -> None:
    truth = {"mobile": [0.10, 0.17, 0.08], "desktop": [0.10, 0.08, 0.16], "tablet": [0.10, 0.10, 0.10]}
    variants = ["a", "b", "c"]

    def rate(key: str, device: str, arms: dict[str, int]) -> float:
        return truth[device][arms[key]]

    async with open_stack(intel_settings(environment="production")) as router, Client(router.server) as client:
        await create(client, kit, "onboarding-pers", variants, ["personalized", "personalize:device"])
        await create(client, kit, "plain-exp", ["control", "treatment"])
        await create(client, kit, "churn-pers", ["control", "treatment"], ["personalized"],
                     primary={"name": "churn", "direction": "lower"})
        lines, _ = planted({"onboarding-pers": variants}, rate, users=6000, seed=3, prefix="h")
        await ingest(router, lines, "pers")
        served: dict[str, Counter] = {"mobile": Counter(), "desktop": Counter()}
        first = None
        for i in range(40):
            for device in served:
                d = await kit.call(client, "personalize_experiment_experience", {
                    "experiment": "onboarding-pers", "user_id": f"new-{device}-{i}", "context": {"device": device}})
                served[device][d["variant"]] += 1
                first = first or d
        again = await kit.call(client, "personalize_experiment_experience", {
            "experiment": "onboarding-pers", "user_id": first["user_id"], "context": {"device": "mobile"}})
        preview = await kit.call(client, "personalize_experiment_experience", {"experiment": "onboarding-pers"})
        await kit.call(client, "store_user_journey", {"journey": {
            "user_id": "known-user", "steps": ["landing_page", "pricing"], "device_type": "desktop"}})
        from_journey = await kit.call(client, "personalize_experiment_experience", {
            "experiment": "onboarding-pers", "user_id": "known-user"})
        stats = await kit.call(client, "get_variant_statistics", {"experiment": "onboarding-pers",
                                                                  "metrics": ["conversion"]})
        mobile_stats = await kit.call(client, "get_segment_statistics", {"experiment": "onboarding-pers",
                                                                         "metric": "conversion"})
        not_marked = await refusal(client, "personalize_experiment_experience", {"experiment": "plain-exp"})
        lower = await refusal(client, "personalize_experiment_experience", {"experiment": "churn-pers"})
        bad_context = await refusal(client, "personalize_experiment_experience", {
            "experiment": "onboarding-pers", "context": {"browser": "firefox"}})

    # production floor 5%: nearly every mobile user gets b and every desktop user c
    assert served["mobile"]["b"] >= 32, served
    assert served["desktop"]["c"] >= 32, served
    assert first["context_value"] == "mobile" and first["recorded"] and first["event_id"]
    assert first["posterior_means"]["b"] > max(first["posterior_means"]["a"], first["posterior_means"]["c"]) + 0.04
    assert abs(first["posterior_means"]["b"] - 0.17) < 0.03
    assert first["context_users"]["b"] > 900 and first["exploration_rate"] == 0.05
    assert "mobile" in first["why"] and "b" in first["why"]
    assert again["variant"] == first["variant"] and again["source"] == "recorded" and not again["recorded"]
    assert preview["context_value"] is None and not preview["recorded"] and "global posterior" in preview["why"]
    # a known user's latest stored journey supplies the device
    assert from_journey["context_source"] == "journey" and from_journey["context_value"] == "desktop"
    assert from_journey["context"] == {"device": "desktop"} and from_journey["recorded"]
    # every recorded decision is an exposure the analysis reads: 6,000 planted users + 81 served
    assert sum(v["users"] for v in stats["variants"]) == 6081
    served_mobile = sum(c["n"] for c in mobile_stats["cells"] if c["dimension"] == "device" and c["segment"] == "mobile")
    assert served_mobile >= 40 + 2800
    assert "not marked personalised" in not_marked and "personalized" in not_marked
    assert "browser" in bad_context
    assert "lower-is-better" in lower
