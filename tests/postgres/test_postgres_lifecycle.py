"""Experiment lifecycle: draft -> running -> stopped -> concluded / archived, with clear refusals."""

from __future__ import annotations

import pytest

from mcp_servers.postgres import open_service
from schemas.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        yield svc


def definition(key: str = "checkout-1step", **overrides):
    spec = {
        "key": key,
        "name": "One-step checkout",
        "type": "feature",
        "hypothesis": "Fewer steps convert better",
        "primary_metric": "conversion",
        "variants": [
            {"key": "control", "is_control": True, "config": {"steps": 2}},
            {"key": "one-step", "config": {"steps": 1}},
        ],
    }
    spec.update(overrides)
    return spec


async def test_a_new_experiment_is_a_draft_with_equal_weights_by_default(service):
    experiment = await service.create_experiment(definition(), actor="user:alice")
    assert experiment.status == "draft"
    assert [(v.key, v.weight, v.is_control) for v in experiment.variants] == [("control", 0.5, True), ("one-step", 0.5, False)]
    assert experiment.primary_metric.name == "conversion" and experiment.primary_metric.direction == "higher"
    assert experiment.hash_seed == "checkout-1step" and experiment.hash_version == 2
    log = await service.get_change_log("checkout-1step")
    assert [(e.change_type, e.actor) for e in log] == [("created", "user:alice")]


async def test_experiment_keys_are_unique(service):
    await service.create_experiment(definition())
    with pytest.raises(Conflict, match="already exists"):
        await service.create_experiment(definition(name="Again"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": [{"key": "a", "is_control": True, "weight": 50}, {"key": "b", "weight": 50}]}, "less than or equal to 1"),
        ({"variants": [{"key": "a", "is_control": True, "weight": 0.6}, {"key": "b", "weight": 0.6}]}, "must sum to 1, got 1.2"),
        ({"variants": [{"key": "a", "is_control": True, "weight": 0.5}, {"key": "b"}]}, "give a weight to every variant or to none"),
        ({"variants": [{"key": "a", "is_control": True}, {"key": "a"}]}, "variant keys must be unique; repeated: a"),
        ({"variants": [{"key": "a", "is_control": True}, {"key": "b", "is_control": True}]}, "only one variant can be the control"),
        ({"targeting": {"country": {"$in": "US"}}}, "invalid targeting condition: targeting.country.$in: expected a list"),
        ({"forced_variations": {"qa-1": "nope"}}, "forced to unknown variant 'nope'"),
        ({"key": "1-starts-with-a-digit"}, "key"),
        ({"type": "banner"}, "type"),
        ({"coverage": 1.5}, "coverage"),
        ({"namespace": {"name": "pricing", "start": 0.6, "end": 0.2}}, "must be below end"),
    ],
)
async def test_invalid_definitions_are_refused_with_a_clear_reason(service, overrides, message):
    with pytest.raises(InvalidInput, match=message.replace("$", r"\$")):
        await service.create_experiment(definition(**overrides))
    assert (await service.list_experiments()).total == 0


async def test_start_needs_two_variants_and_one_control(service):
    await service.create_experiment(definition("lonely", variants=[{"key": "control", "is_control": True}]))
    with pytest.raises(Conflict, match="at least 2 variants"):
        await service.start_experiment("lonely")
    await service.create_experiment(definition("headless", variants=[{"key": "a"}, {"key": "b"}]))
    with pytest.raises(Conflict, match="exactly one control"):
        await service.start_experiment("headless")
    assert (await service.get_experiment("headless")).status == "draft"


async def test_start_moves_a_draft_to_running_once(service):
    await service.create_experiment(definition())
    running = await service.start_experiment("checkout-1step", actor="agent:ci", reason="ready")
    assert running.status == "running" and running.started_at is not None
    with pytest.raises(Conflict, match="only a draft can start"):
        await service.start_experiment("checkout-1step")
    log = await service.get_change_log("checkout-1step")
    assert (log[0].change_type, log[0].actor, log[0].reason) == ("started", "agent:ci", "ready")


async def test_a_draft_accepts_any_change_and_logs_the_diff(service):
    await service.create_experiment(definition())
    updated = await service.update_experiment("checkout-1step", {
        "coverage": 0.5,
        "targeting": {"device": "mobile"},
        "variants": [{"key": "control", "is_control": True, "weight": 0.4}, {"key": "one-step", "weight": 0.6}],
    }, actor="user:bob", reason="narrower test")
    assert updated.coverage == 0.5 and updated.targeting == {"device": "mobile"}
    assert [v.weight for v in updated.variants] == [0.4, 0.6]
    entry = (await service.get_change_log("checkout-1step"))[0]
    assert entry.change_type == "updated" and entry.reason == "narrower test"
    assert entry.changes["coverage"] == {"from": 1.0, "to": 0.5}
    assert set(entry.changes) == {"coverage", "targeting", "variants"}


async def test_an_update_that_changes_nothing_is_not_logged(service):
    await service.create_experiment(definition())
    await service.update_experiment("checkout-1step", {"name": "One-step checkout"})
    assert len(await service.get_change_log("checkout-1step")) == 1
    with pytest.raises(InvalidInput, match="no changes given"):
        await service.update_experiment("checkout-1step", {})


async def test_after_start_only_safe_fields_change(service):
    await service.create_experiment(definition())
    await service.start_experiment("checkout-1step")
    updated = await service.update_experiment("checkout-1step", {
        "description": "now with context", "tags": ["checkout", "q3"], "forced_variations": {"qa-user": "one-step"},
        "guardrail_metrics": [{"name": "refund_rate", "direction": "lower", "non_inferiority_margin": 0.02}],
    })
    assert updated.tags == ["checkout", "q3"] and updated.forced_variations == {"qa-user": "one-step"}
    assert updated.guardrail_metrics[0].non_inferiority_margin == 0.02
    with pytest.raises(Conflict, match="refused: coverage, targeting"):
        await service.update_experiment("checkout-1step", {"coverage": 0.2, "targeting": {"a": 1}})
    with pytest.raises(Conflict, match="use set_variant_weights"):
        await service.update_experiment("checkout-1step", {"variants": [{"key": "x", "is_control": True}, {"key": "y"}]})
    assert (await service.get_experiment("checkout-1step")).coverage == 1.0


async def test_stop_ends_assignment_and_can_declare_a_winner(service):
    await service.create_experiment(definition())
    with pytest.raises(Conflict, match="never started"):
        await service.stop_experiment("checkout-1step")
    await service.start_experiment("checkout-1step")
    stopped = await service.stop_experiment("checkout-1step", reason="budget")
    assert stopped.status == "stopped" and stopped.winner is None and stopped.stopped_at is not None
    with pytest.raises(Conflict, match="already stopped; pass a winner"):
        await service.stop_experiment("checkout-1step")
    with pytest.raises(InvalidInput, match="winner 'nope' is not a variant"):
        await service.stop_experiment("checkout-1step", winner="nope")
    concluded = await service.stop_experiment("checkout-1step", winner="one-step")
    assert concluded.status == "concluded" and concluded.winner == "one-step" and concluded.concluded_at is not None
    with pytest.raises(Conflict, match="already concluded"):
        await service.stop_experiment("checkout-1step", winner="control")
    types = [e.change_type for e in await service.get_change_log("checkout-1step")]
    assert types == ["concluded", "stopped", "started", "created"]


async def test_a_running_experiment_can_be_concluded_directly(service):
    await service.create_experiment(definition())
    await service.start_experiment("checkout-1step")
    concluded = await service.stop_experiment("checkout-1step", winner="control")
    assert concluded.status == "concluded" and concluded.stopped_at == concluded.concluded_at


async def test_archive_freezes_a_finished_experiment(service):
    await service.create_experiment(definition())
    await service.start_experiment("checkout-1step")
    with pytest.raises(Conflict, match="stop it before archiving"):
        await service.archive_experiment("checkout-1step")
    await service.stop_experiment("checkout-1step")
    archived = await service.archive_experiment("checkout-1step")
    assert archived.status == "archived" and archived.archived_at is not None
    again = await service.archive_experiment("checkout-1step")  # idempotent
    assert again.archived_at == archived.archived_at
    with pytest.raises(Conflict, match="archived and can no longer change"):
        await service.update_experiment("checkout-1step", {"name": "x"})
    assert (await service.list_experiments()).total == 0
    assert (await service.list_experiments(status=["archived"])).items[0].key == "checkout-1step"


async def test_a_draft_can_be_archived(service):
    await service.create_experiment(definition())
    assert (await service.archive_experiment("checkout-1step")).status == "archived"


async def test_weights_change_only_as_a_full_valid_set_and_are_audited(service):
    await service.create_experiment(definition())
    await service.start_experiment("checkout-1step")
    with pytest.raises(InvalidInput, match="missing: one-step"):
        await service.set_variant_weights("checkout-1step", {"control": 1.0})
    with pytest.raises(InvalidInput, match="unknown: other"):
        await service.set_variant_weights("checkout-1step", {"control": 0.5, "one-step": 0.25, "other": 0.25})
    with pytest.raises(InvalidInput, match="must sum to 1"):
        await service.set_variant_weights("checkout-1step", {"control": 0.5, "one-step": 0.6})
    updated = await service.set_variant_weights("checkout-1step", {"control": 0.1, "one-step": 0.9},
                                                actor="intelligence", reason="thompson sampling")
    assert [v.weight for v in updated.variants] == [0.1, 0.9]
    await service.set_variant_weights("checkout-1step", {"control": 0.1, "one-step": 0.9})  # unchanged: not logged
    log = await service.get_change_log("checkout-1step")
    assert log[0].change_type == "weights_changed" and log[0].actor == "intelligence"
    assert log[0].changes == {"weights": {"from": {"control": 0.5, "one-step": 0.5}, "to": {"control": 0.1, "one-step": 0.9}}}
    assert sum(e.change_type == "weights_changed" for e in log) == 1
    await service.stop_experiment("checkout-1step")
    with pytest.raises(Conflict, match="weights change only in draft or running"):
        await service.set_variant_weights("checkout-1step", {"control": 0.5, "one-step": 0.5})


async def test_experiments_are_found_by_key_or_numeric_id(service):
    created = await service.create_experiment(definition())
    assert (await service.get_experiment(str(created.id))).key == "checkout-1step"
    assert (await service.get_experiment(created.id)).key == "checkout-1step"
    with pytest.raises(NotFound, match="no experiment with key or id 'nope'"):
        await service.get_experiment("nope")
    with pytest.raises(NotFound):
        await service.get_experiment("999999")


async def test_list_filters_and_paginates(service):
    for i, (kind, owner, tags) in enumerate([("prompt", "ana", ["llm"]), ("prompt", "ana", ["llm", "support"]),
                                             ("model", "ben", ["llm"]), ("ui", "ben", []), ("feature", "cy", [])]):
        await service.create_experiment(definition(f"exp-{i}", type=kind, owner=owner, tags=tags,
                                                   description="about checkout" if i == 4 else ""))
    await service.start_experiment("exp-1")
    page = await service.list_experiments(limit=2)
    assert page.total == 5 and [i.key for i in page.items] == ["exp-4", "exp-3"] and page.next_offset == 2
    last = await service.list_experiments(limit=2, offset=4)
    assert [i.key for i in last.items] == ["exp-0"] and last.next_offset is None
    assert [i.key for i in (await service.list_experiments(type="prompt")).items] == ["exp-1", "exp-0"]
    assert [i.key for i in (await service.list_experiments(status="running")).items] == ["exp-1"]
    assert [i.key for i in (await service.list_experiments(tag="support")).items] == ["exp-1"]
    assert [i.key for i in (await service.list_experiments(owner="ben")).items] == ["exp-3", "exp-2"]
    assert [i.key for i in (await service.list_experiments(search="ABOUT CHECK")).items] == ["exp-4"]
    assert (await service.list_experiments(search="100%_")).total == 0  # LIKE wildcards are literal
    assert (await service.list_experiments(status="concluded")).total == 0
    with pytest.raises(InvalidInput, match="limit"):
        await service.list_experiments(limit=0)
