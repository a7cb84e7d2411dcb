"""get_variant: deterministic, sticky, recorded once, and it honours status, forced
overrides, targeting, namespaces, coverage and weights exactly like GrowthBook's SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from growthbook import Experiment as GBExperiment
from growthbook import GrowthBook
from polling import eventually

from mcp_servers.postgres import open_service
from schemas.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        yield svc


async def running(service, key="prompt-test", **overrides):
    spec = {
        "key": key, "name": "Support prompt", "type": "prompt", "primary_metric": "resolution_rate",
        "variants": [
            {"key": "control", "is_control": True, "weight": 0.5, "config": {"system_prompt": "Be brief."}},
            {"key": "examples", "weight": 0.5, "config": {"system_prompt": "Be brief. Examples: ..."}},
        ],
    }
    spec.update(overrides)
    await service.create_experiment(spec)
    return await service.start_experiment(key)


async def assignment_rows(dsn: str, key: str, settle: Any = None) -> int:
    """Assignment rows of `key`, read on a connection of its own, once `settle`'s queued writes landed
    (the default service records new users just after answering)."""
    if settle is not None:
        await settle.store.settle()
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM neonblue.assignments a JOIN neonblue.experiments e ON e.id = a.experiment_id WHERE e.key = $1",
            key,
        )
    finally:
        await conn.close()


async def test_the_seed_usage_works_and_the_variant_is_sticky(service, pg_dsn):
    await running(service)
    first = await service.get_variant("prompt-test", "user-42")
    assert first.in_experiment and first.source == "hash" and first.newly_recorded
    assert first.config["system_prompt"].startswith("Be brief.")  # the seed's variant['config']['system_prompt']
    for _ in range(3):
        again = await service.get_variant("prompt-test", "user-42")
        assert (again.variant_key, again.source, again.newly_recorded) == (first.variant_key, "recorded", False)
        assert again.bucket == first.bucket
    assert await assignment_rows(pg_dsn, "prompt-test", service) == 1


async def test_assignments_match_the_growthbook_sdk(service):
    experiment = await running(
        service, variants=[{"key": "a", "is_control": True, "weight": 0.2}, {"key": "b", "weight": 0.3}, {"key": "c", "weight": 0.5}],
        coverage=0.8, namespace={"name": "pricing", "start": 0.1, "end": 0.95}, targeting={"plan": {"$in": ["pro", "team"]}},
    )
    gb_experiment = GBExperiment(key="prompt-test", variations=["a", "b", "c"], weights=[0.2, 0.3, 0.5], coverage=0.8,
                                 hashVersion=2, seed=experiment.hash_seed, namespace=("pricing", 0.1, 0.95),
                                 condition={"plan": {"$in": ["pro", "team"]}})
    enrolled = 0
    for i in range(150):
        attributes = {"plan": ["pro", "team", "free"][i % 3]}
        ours = await service.get_variant("prompt-test", f"user-{i}", attributes)
        sdk = GrowthBook(attributes={"id": f"user-{i}", **attributes})
        theirs = sdk.run(gb_experiment)
        sdk.destroy()
        assert ours.in_experiment == theirs.inExperiment, i
        if ours.in_experiment:
            enrolled += 1
            assert ours.variant_key == theirs.value and ours.bucket == theirs.bucket, i
    assert 40 < enrolled < 100


async def test_the_first_assignment_wins_even_after_weights_change(service):
    await running(service)
    before = {u: (await service.get_variant("prompt-test", u)).variant_key for u in (f"u{i}" for i in range(40))}
    await service.set_variant_weights("prompt-test", {"control": 0.0, "examples": 1.0})
    after = {u: (await service.get_variant("prompt-test", u)).variant_key for u in before}
    assert after == before
    assert "control" in before.values()
    newcomers = {(await service.get_variant("prompt-test", f"new-{i}")).variant_key for i in range(30)}
    assert newcomers == {"examples"}


async def test_targeting_decides_who_is_eligible_and_ineligible_users_are_not_recorded(service, pg_dsn):
    await running(service, targeting={"country": {"$in": ["US", "CA"]}, "device": "mobile"})
    out = await service.get_variant("prompt-test", "fr-user", {"country": "FR", "device": "mobile"})
    assert not out.in_experiment and out.variant_key is None and out.source == "none"
    assert "country" in out.reason and "'FR'" in out.reason
    assert not (await service.get_variant("prompt-test", "anon")).in_experiment
    inside = await service.get_variant("prompt-test", "us-user", {"country": "US", "device": "mobile"})
    assert inside.in_experiment
    assert await assignment_rows(pg_dsn, "prompt-test", service) == 1


async def test_coverage_enrolls_a_fraction_and_records_only_them(service, pg_dsn):
    await running(service, coverage=0.3)
    results = [await service.get_variant("prompt-test", f"user-{i}") for i in range(300)]
    enrolled = [r for r in results if r.in_experiment]
    assert 60 <= len(enrolled) <= 120
    assert all("outside the covered ranges" in r.reason for r in results if not r.in_experiment)
    assert await assignment_rows(pg_dsn, "prompt-test", service) == len(enrolled)


async def test_experiments_in_disjoint_namespace_slices_never_share_a_user(service):
    await running(service, "left", namespace={"name": "checkout", "start": 0.0, "end": 0.5})
    await running(service, "right", namespace={"name": "checkout", "start": 0.5, "end": 1.0})
    users = [f"user-{i}" for i in range(200)]
    left = {u for u in users if (await service.get_variant("left", u)).in_experiment}
    right = {u for u in users if (await service.get_variant("right", u)).in_experiment}
    assert left and right and not left & right
    assert left | right == set(users)


async def test_forced_users_get_their_override_and_it_replaces_a_hashed_assignment(service):
    await running(service)
    hashed = await service.get_variant("prompt-test", "qa-1")
    other = "control" if hashed.variant_key == "examples" else "examples"
    await service.update_experiment("prompt-test", {"forced_variations": {"qa-1": other, "qa-2": "control"}})
    forced = await service.get_variant("prompt-test", "qa-1")
    assert (forced.variant_key, forced.source, forced.newly_recorded) == (other, "forced", True)
    again = await service.get_variant("prompt-test", "qa-1")
    assert (again.variant_key, again.newly_recorded) == (other, False)
    assert (await service.get_variant("prompt-test", "qa-2")).variant_key == "control"
    analysis = await service.analyze_experiment_data("prompt-test")
    assert analysis.forced_excluded == 2 and analysis.total_assigned == 0


async def test_a_stopped_or_draft_experiment_assigns_nobody(service, pg_dsn):
    await service.create_experiment({"key": "draft-only", "name": "d", "type": "ui", "primary_metric": "clicks",
                                     "variants": [{"key": "a", "is_control": True}, {"key": "b"}]})
    draft = await service.get_variant("draft-only", "u1")
    assert not draft.in_experiment and "draft" in draft.reason
    await running(service)
    assert (await service.get_variant("prompt-test", "u1")).in_experiment
    await service.stop_experiment("prompt-test")
    for user in ("u1", "u2"):
        out = await service.get_variant("prompt-test", user)
        assert not out.in_experiment and out.variant_key is None and "stopped" in out.reason
    assert await assignment_rows(pg_dsn, "prompt-test", service) == 1


async def test_a_concluded_experiment_serves_its_winner_without_recording(service, pg_dsn):
    await running(service)
    await service.stop_experiment("prompt-test", winner="examples")
    out = await service.get_variant("prompt-test", "late-user")
    assert (out.in_experiment, out.variant_key, out.source) == (False, "examples", "winner")
    assert out.config == {"system_prompt": "Be brief. Examples: ..."}
    assert await assignment_rows(pg_dsn, "prompt-test", service) == 0


async def test_changes_made_by_another_process_are_seen_once_notified(service, pg_dsn):
    await running(service)
    await service.get_variant("prompt-test", "warm-up")  # this service now caches the definition

    async def all_examples(attempt: int) -> bool:
        answers = [await service.get_variant("prompt-test", f"a{attempt}-{i}") for i in range(20)]
        return {a.variant_key for a in answers} == {"examples"}

    async def forced(attempt: int) -> bool:
        return (await service.get_variant("prompt-test", f"qa{attempt}")).source == "forced"

    async def stopped(attempt: int) -> bool:
        out = await service.get_variant("prompt-test", "a0-0")
        return not out.in_experiment and "stopped" in out.reason

    async with open_service(dsn=pg_dsn) as other:
        await other.set_variant_weights("prompt-test", {"control": 0.0, "examples": 1.0})
        await eventually(all_examples)
        await other.update_experiment("prompt-test", {"forced_variations": {f"qa{n}": "control" for n in range(400)}})
        await eventually(forced)
        await other.stop_experiment("prompt-test")
    await eventually(stopped)


async def test_a_direct_sql_change_to_variants_is_seen_too(service, pg_dsn):
    await running(service)
    await service.get_variant("prompt-test", "warm-up")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE neonblue.variants SET weight = CASE WHEN key = 'control' THEN 1 ELSE 0 END")
    finally:
        await conn.close()

    async def all_control(attempt: int) -> bool:
        answers = [await service.get_variant("prompt-test", f"b{attempt}-{i}") for i in range(20)]
        return {a.variant_key for a in answers} == {"control"}

    await eventually(all_control)


async def test_concurrent_first_calls_record_one_assignment(service, pg_dsn):
    await running(service)
    answers = await asyncio.gather(*(service.get_variant("prompt-test", "racer") for _ in range(20)))
    assert len({a.variant_key for a in answers}) == 1
    assert sum(a.newly_recorded for a in answers) == 1
    assert await assignment_rows(pg_dsn, "prompt-test", service) == 1


async def test_unknown_experiments_and_bad_input_are_refused(service):
    with pytest.raises(NotFound):
        await service.get_variant("nope", "u1")
    await running(service)
    with pytest.raises(InvalidInput, match="user_id"):
        await service.get_variant("prompt-test", "")
    with pytest.raises(InvalidInput, match="attributes are"):
        await service.get_variant("prompt-test", "u1", {"blob": "x" * 20_000})


async def test_predict_explains_without_recording(service, pg_dsn):
    await running(service, targeting={"country": "US"}, coverage=0.9)
    prediction = await service.predict_user_assignment("prompt-test", "user-7", {"country": "US"})
    assert prediction.recorded_variant is None
    assert [r.variant_key for r in prediction.bucket_ranges] == ["control", "examples"]
    assert await assignment_rows(pg_dsn, "prompt-test", service) == 0
    actual = await service.get_variant("prompt-test", "user-7", {"country": "US"})
    assert (prediction.would_be_in_experiment, prediction.variant_key, prediction.bucket) == (
        actual.in_experiment, actual.variant_key, actual.bucket)
    assert prediction.decided_by in ("hash", "coverage")
    assert any("targeting passes" in s for s in prediction.steps)
    recorded = await service.predict_user_assignment("prompt-test", "user-7", {"country": "FR"})
    if actual.in_experiment:
        assert (recorded.decided_by, recorded.recorded_variant) == ("recorded", actual.variant_key)
    blocked = await service.predict_user_assignment("prompt-test", "someone-else", {"country": "FR"})
    assert blocked.decided_by == "targeting" and not blocked.would_be_in_experiment
    assert any("targeting fails" in s for s in blocked.steps)


async def test_batch_assignment_agrees_with_get_variant_and_records_once(service, pg_dsn):
    await running(service, coverage=0.7, forced_variations={"qa": "control"})
    users = [f"user-{i}" for i in range(400)] + ["qa"]
    preview = await service.assign_many("prompt-test", users, record=False)
    assert await assignment_rows(pg_dsn, "prompt-test", service) == 0
    batch = await service.assign_many("prompt-test", users)
    assert batch.assigned == preview.assigned
    in_count = sum(v is not None for v in batch.assigned.values())
    assert batch.newly_recorded == in_count and batch.not_in_experiment == len(users) - in_count
    assert await assignment_rows(pg_dsn, "prompt-test", service) == in_count
    for user in users[:60] + ["qa"]:
        single = await service.get_variant("prompt-test", user)
        assert single.variant_key == batch.assigned[user]
    again = await service.assign_many("prompt-test", users)
    assert again.assigned == batch.assigned and again.newly_recorded == 0 and again.already_recorded == in_count


async def test_exposures_from_sdks_are_recorded_first_one_wins(service):
    await running(service)
    outcome = await service.record_exposures([
        {"experiment_key": "prompt-test", "user_id": "sdk-1", "variant_key": "examples"},
        {"experiment_key": "prompt-test", "user_id": "sdk-1", "variant_key": "control"},
        {"experiment_key": "prompt-test", "user_id": "sdk-2", "variant_key": "control"},
        {"experiment_key": "nope", "user_id": "sdk-3", "variant_key": "control"},
        {"experiment_key": "prompt-test", "user_id": "sdk-4", "variant_key": "purple"},
        {"experiment_key": "prompt-test", "user_id": ""},
    ])
    assert (outcome.recorded, outcome.duplicates) == (2, 1)
    assert [i for i, _ in outcome.rejected] == [3, 4, 5]
    assert "unknown experiment 'nope'" in outcome.rejected[0][1]
    assert (await service.get_variant("prompt-test", "sdk-1")).variant_key == "examples"
    repeat = await service.record_exposures([{"experiment_key": "prompt-test", "user_id": "sdk-2", "variant_key": "control"}])
    assert (repeat.recorded, repeat.duplicates) == (0, 1)


async def test_nul_characters_are_refused_per_exposure_and_as_invalid_input_elsewhere(service):
    # PostgreSQL text cannot hold U+0000: such exposures are refused one by one, the rest recorded.
    await running(service)
    outcome = await service.record_exposures([
        {"experiment_key": "prompt-test", "user_id": "nul\x00user", "variant_key": "control"},
        {"experiment_key": "prompt\x00test", "user_id": "sdk-9", "variant_key": "control"},
        {"experiment_key": "prompt-test", "user_id": "sdk-10", "variant_key": "control"},
    ])
    assert outcome.recorded == 1
    assert [i for i, _ in outcome.rejected] == [0, 1]
    assert "NUL" in outcome.rejected[0][1] and "unknown experiment" in outcome.rejected[1][1]
    with pytest.raises(InvalidInput, match="NUL characters"):
        await service.get_variant("prompt-test", "u\x001")
    with pytest.raises(InvalidInput, match="NUL characters"):
        await service.list_experiments(search="a\x00")
    with pytest.raises(InvalidInput, match="64 bits"):
        await service.create_experiment({"key": "big", "name": "big", "type": "ui", "primary_metric": "conversion",
                                         "variants": [{"key": "c", "is_control": True, "config": {"n": 2**64}},
                                                      {"key": "t"}]})


async def test_results_need_an_assignment_and_a_started_experiment(service):
    await service.create_experiment({"key": "later", "name": "l", "type": "model", "primary_metric": "accuracy",
                                     "variants": [{"key": "a", "is_control": True}, {"key": "b"}]})
    with pytest.raises(Conflict, match="is a draft: start it before recording results"):
        await service.record_result("later", "u1", "accuracy", 1.0)
    await service.start_experiment("later")
    with pytest.raises(Conflict, match="has no assignment"):
        await service.record_result("later", "u1", "accuracy", 1.0)


async def test_assignment_rows_skip_the_wal_flush_unless_asked_to_be_durable(service, pg_dsn):
    # Assignments are re-derivable from the hash, so they commit asynchronously;
    # definitions, results and decisions always commit durably.
    assert await service.store.assignment_pool.fetchval("SHOW synchronous_commit") == "off"
    assert await service.store.pool.fetchval("SHOW synchronous_commit") == "on"
    async with open_service(dsn=pg_dsn, durable_assignments=True) as durable:
        assert durable.store.assignment_pool is durable.store.pool
