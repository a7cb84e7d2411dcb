"""The experiment lifecycle: look experiments up, create and update them, start, stop, archive, reweight.

draft -> running -> stopped -> concluded, and archived from any state but running. A draft can
change freely; after start only the SAFE_UPDATE_FIELDS change (and weights, through
set_variant_weights, audited). Every change is written to the change log in the same transaction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schemas.errors import Conflict, InvalidInput

from . import targeting
from .base import RegistryBase, as_json, parse_input
from .models import (
    SAFE_UPDATE_FIELDS,
    ChangeLogEntry,
    Experiment,
    ExperimentCreate,
    ExperimentDetail,
    ExperimentPage,
    ExperimentUpdate,
    VariantSpec,
)

WEIGHT_TOLERANCE = 1e-6


def _normalise_variants(variants: Sequence[VariantSpec]) -> list[dict[str, Any]]:
    """Variants as rows: unique keys, at most one control, weights given on all or none, summing to 1."""
    keys = [v.key for v in variants]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise InvalidInput(f"variant keys must be unique; repeated: {', '.join(duplicates)}")
    controls = [v.key for v in variants if v.is_control]
    if len(controls) > 1:
        raise InvalidInput(f"only one variant can be the control; marked: {', '.join(controls)}")
    given = [v.weight is not None for v in variants]
    if variants and any(given) and not all(given):
        missing = [v.key for v in variants if v.weight is None]
        raise InvalidInput(f"give a weight to every variant or to none (equal split); missing: {', '.join(missing)}")
    weights = [v.weight for v in variants] if all(given) else [1 / len(variants)] * len(variants) if variants else []
    if variants:
        _check_weight_sum(dict(zip(keys, weights, strict=True)))
    return [
        {"key": v.key, "name": v.name or v.key, "is_control": v.is_control, "weight": w, "config": v.config}
        for v, w in zip(variants, weights, strict=True)
    ]


def _check_weight_sum(weights: Mapping[str, float]) -> None:
    total = sum(weights.values())
    if abs(total - 1) > WEIGHT_TOLERANCE:
        hint = " (weights are fractions: 0.5 means half the traffic)" if total > 1.5 else ""
        shown = ", ".join(f"{k}={w:g}" for k, w in weights.items())
        raise InvalidInput(f"variant weights must sum to 1, got {total:g} ({shown}){hint}")


def _check_targeting(condition: dict[str, Any] | None) -> dict[str, Any] | None:
    if not condition:
        return None
    try:
        targeting.validate_condition(condition)
    except targeting.ConditionError as exc:
        raise InvalidInput(f"invalid targeting condition: {exc}") from None
    return condition


def _check_forced(forced: Mapping[str, str], variant_keys: Iterable[str]) -> None:
    keys = set(variant_keys)
    for user_id, key in forced.items():
        if not user_id or len(user_id) > 256:
            raise InvalidInput("forced_variations: user ids must be 1-256 characters")
        if key not in keys:
            raise InvalidInput(
                f"forced_variations: user {user_id!r} is forced to unknown variant {key!r} "
                f"(variants: {', '.join(sorted(keys)) or 'none yet'})"
            )


def _check_tags(tags: Sequence[str]) -> list[str]:
    for tag in tags:
        if not 1 <= len(tag) <= 64:
            raise InvalidInput(f"tags must be 1-64 characters, got {tag!r}")
    return list(dict.fromkeys(tags))


def _check_start_ready(experiment: Experiment) -> None:
    """The rules an experiment must meet to start (or keep serving after a weight change)."""
    variants = experiment.variants
    if len(variants) < 2:
        raise Conflict(f"experiment {experiment.key!r} needs at least 2 variants to start, has {len(variants)}")
    if sum(v.is_control for v in variants) != 1:
        raise Conflict(f"experiment {experiment.key!r} needs exactly one control variant (is_control=true) to start")
    _check_weight_sum({v.key: v.weight for v in variants})



class Lifecycle(RegistryBase):
    async def get_experiment(self, ref: str | int, include_change_log: bool = False,
                             change_log_limit: int = 50) -> ExperimentDetail:
        experiment = await self._experiment(ref)
        counts = await self.store.assignment_counts(experiment.id)
        log_entries = await self.store.change_log(experiment.id, change_log_limit) if include_change_log else []
        return ExperimentDetail(
            **experiment.model_dump(),
            assignments_by_variant={r["key"]: r["hashed"] + r["forced"] for r in counts},
            change_log=log_entries,
        )

    async def get_change_log(self, ref: str | int, limit: int = 50) -> list[ChangeLogEntry]:
        experiment = await self._experiment(ref)
        return await self.store.change_log(experiment.id, limit)

    async def list_experiments(self, *, status: Sequence[str] | str | None = None, type: str | None = None,
                               owner: str | None = None, tag: str | None = None, search: str | None = None,
                               limit: int = 50, offset: int = 0) -> ExperimentPage:
        if not 1 <= limit <= 200:
            raise InvalidInput(f"limit must be between 1 and 200, got {limit}")
        if offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        statuses = [status] if isinstance(status, str) else list(status or [])
        items, total = await self.store.list_experiments(
            statuses=statuses, type_=type, owner=owner, tag=tag, search=search, limit=limit, offset=offset
        )
        next_offset = offset + len(items) if offset + len(items) < total else None
        return ExperimentPage(items=items, total=total, limit=limit, offset=offset, next_offset=next_offset)

    # ------------------------------------------------------------ lifecycle

    async def create_experiment(self, spec: ExperimentCreate | Mapping[str, Any], actor: str = "system") -> Experiment:
        spec = parse_input(ExperimentCreate, spec)
        variants = _normalise_variants(spec.variants)
        _check_forced(spec.forced_variations, (v["key"] for v in variants))
        fields = {
            "key": spec.key, "name": spec.name, "description": spec.description, "hypothesis": spec.hypothesis,
            "type": spec.type, "primary_metric": spec.primary_metric.name,
            "primary_metric_direction": spec.primary_metric.direction,
            "secondary_metrics": as_json(spec.secondary_metrics), "guardrail_metrics": as_json(spec.guardrail_metrics),
            "targeting": _check_targeting(spec.targeting), "coverage": spec.coverage,
            "namespace": spec.namespace.name if spec.namespace else None,
            "namespace_start": spec.namespace.start if spec.namespace else None,
            "namespace_end": spec.namespace.end if spec.namespace else None,
            "hash_seed": spec.hash_seed or spec.key, "hash_version": spec.hash_version,
            "min_sample_size": spec.min_sample_size, "forced_variations": spec.forced_variations,
            "owner": spec.owner, "tags": _check_tags(spec.tags),
        }
        async with self._changing() as conn:
            if await self.store.lock_experiment(conn, spec.key) is not None:
                raise Conflict(f"an experiment with key {spec.key!r} already exists (keys are permanent; pick another)")
            experiment_id = await self.store.insert_experiment(conn, fields)
            if experiment_id is None:  # a concurrent create of the same key won
                raise Conflict(f"an experiment with key {spec.key!r} already exists")
            await self.store.replace_variants(conn, experiment_id, variants)
            await self.store.log_change(conn, experiment_id, "created", actor, {"definition": as_json(spec) | {"variants": variants}}, None)
            return await self._experiment(experiment_id, conn)

    async def update_experiment(self, ref: str | int, changes: ExperimentUpdate | Mapping[str, Any],
                                actor: str = "system", reason: str | None = None) -> Experiment:
        patch = parse_input(ExperimentUpdate, changes)
        given = patch.given()
        if not given:
            raise InvalidInput("no changes given: pass at least one field to update")
        async with self._changing() as conn:
            current = await self._locked(conn, ref)
            if current.status == "archived":
                raise Conflict(f"experiment {current.key!r} is archived and can no longer change")
            if current.status != "draft":
                refused = sorted(given - SAFE_UPDATE_FIELDS)
                if refused:
                    raise Conflict(
                        f"experiment {current.key!r} is {current.status}: after start only "
                        f"{', '.join(sorted(SAFE_UPDATE_FIELDS))} can change; refused: {', '.join(refused)}"
                        + (" (use set_variant_weights for traffic)" if "variants" in refused else "")
                    )
            fields: dict[str, Any] = {}
            diff: dict[str, Any] = {}

            def change(name: str, old: Any, new: Any, columns: dict[str, Any]) -> None:
                if as_json(old) != as_json(new):
                    diff[name] = {"from": as_json(old), "to": as_json(new)}
                    fields.update(columns)

            for name in ("name", "description", "hypothesis", "type", "coverage", "hash_seed", "hash_version",
                         "min_sample_size", "owner"):
                if name in given:
                    change(name, getattr(current, name), getattr(patch, name), {name: getattr(patch, name)})
            if "tags" in given:
                tags = _check_tags(patch.tags or [])
                change("tags", current.tags, tags, {"tags": tags})
            if "primary_metric" in given:
                metric = patch.primary_metric
                change("primary_metric", current.primary_metric, metric,
                       {"primary_metric": metric.name, "primary_metric_direction": metric.direction})
            for name in ("secondary_metrics", "guardrail_metrics"):
                if name in given:
                    value = getattr(patch, name)
                    change(name, getattr(current, name), value, {name: as_json(value)})
            if "targeting" in given:
                condition = _check_targeting(patch.targeting)
                change("targeting", current.targeting, condition, {"targeting": condition})
            if "namespace" in given:
                ns = None if patch.clear_namespace else patch.namespace
                change("namespace", current.namespace, ns, {
                    "namespace": ns.name if ns else None, "namespace_start": ns.start if ns else None,
                    "namespace_end": ns.end if ns else None,
                })
            variant_keys = [v.key for v in current.variants]
            new_variants = None
            if "variants" in given:
                new_variants = _normalise_variants(patch.variants or [])
                old = [{"key": v.key, "name": v.name, "is_control": v.is_control, "weight": v.weight, "config": v.config}
                       for v in current.variants]
                if as_json(old) != as_json(new_variants):
                    diff["variants"] = {"from": old, "to": new_variants}
                variant_keys = [v["key"] for v in new_variants]
            forced = patch.forced_variations if "forced_variations" in given else current.forced_variations
            _check_forced(forced, variant_keys)
            if "forced_variations" in given:
                change("forced_variations", current.forced_variations, forced, {"forced_variations": forced})
            if not diff:
                return current
            if current.winner is not None and current.winner not in variant_keys:
                raise Conflict(f"the declared winner {current.winner!r} would no longer exist")
            await self.store.update_experiment(conn, current.id, fields)
            if new_variants is not None and "variants" in diff:
                await self.store.replace_variants(conn, current.id, new_variants)
            await self.store.log_change(conn, current.id, "updated", actor, diff, reason)
            return await self._experiment(current.id, conn)

    async def start_experiment(self, ref: str | int, actor: str = "system", reason: str | None = None) -> Experiment:
        async with self._changing() as conn:
            current = await self._locked(conn, ref)
            if current.status != "draft":
                raise Conflict(f"experiment {current.key!r} is {current.status}; only a draft can start")
            _check_start_ready(current)
            await self.store.set_status(conn, current.id, "running")
            await self.store.log_change(conn, current.id, "started", actor, {"status": {"from": "draft", "to": "running"}}, reason)
            return await self._experiment(current.id, conn)

    async def stop_experiment(self, ref: str | int, winner: str | None = None, actor: str = "system",
                              reason: str | None = None) -> Experiment:
        """running -> stopped, or -> concluded when a winner is declared (also stopped -> concluded)."""
        async with self._changing() as conn:
            current = await self._locked(conn, ref)
            if current.status in ("draft", "archived", "concluded"):
                detail = {"draft": "it never started (archive it instead)", "archived": "it is archived",
                          "concluded": f"it is already concluded (winner: {current.winner})"}[current.status]
                raise Conflict(f"cannot stop experiment {current.key!r}: {detail}")
            if current.status == "stopped" and winner is None:
                raise Conflict(f"experiment {current.key!r} is already stopped; pass a winner to conclude it")
            if winner is not None and winner not in {v.key for v in current.variants}:
                raise InvalidInput(
                    f"winner {winner!r} is not a variant of {current.key!r} "
                    f"(variants: {', '.join(v.key for v in current.variants)})"
                )
            new_status = "concluded" if winner is not None else "stopped"
            await self.store.set_status(conn, current.id, new_status, winner)
            diff: dict[str, Any] = {"status": {"from": current.status, "to": new_status}}
            if winner is not None:
                diff["winner"] = {"from": None, "to": winner}
            await self.store.log_change(conn, current.id, new_status, actor, diff, reason)
            return await self._experiment(current.id, conn)

    async def archive_experiment(self, ref: str | int, actor: str = "system", reason: str | None = None) -> Experiment:
        async with self._changing() as conn:
            current = await self._locked(conn, ref)
            if current.status == "archived":
                return current
            if current.status == "running":
                raise Conflict(f"experiment {current.key!r} is running; stop it before archiving")
            await self.store.set_status(conn, current.id, "archived")
            await self.store.log_change(conn, current.id, "archived", actor,
                                        {"status": {"from": current.status, "to": "archived"}}, reason)
            return await self._experiment(current.id, conn)

    async def set_variant_weights(self, ref: str | int, weights: Mapping[str, float], actor: str = "system",
                                  reason: str | None = None) -> Experiment:
        """Reallocate traffic (bandits, rollbacks). Audited; users already assigned keep their variant."""
        async with self._changing() as conn:
            current = await self._locked(conn, ref)
            if current.status not in ("draft", "running"):
                raise Conflict(f"experiment {current.key!r} is {current.status}; weights change only in draft or running")
            keys = [v.key for v in current.variants]
            if set(weights) != set(keys):
                missing, unknown = sorted(set(keys) - set(weights)), sorted(set(weights) - set(keys))
                raise InvalidInput(
                    "give a weight for every variant and nothing else"
                    + (f"; missing: {', '.join(missing)}" if missing else "")
                    + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                )
            for key, weight in weights.items():
                if not (isinstance(weight, int | float) and math.isfinite(weight) and 0 <= weight <= 1):
                    raise InvalidInput(f"weight of {key!r} must be a number between 0 and 1, got {weight!r}")
            _check_weight_sum(weights)
            old = {v.key: v.weight for v in current.variants}
            new = {k: float(weights[k]) for k in keys}
            if all(abs(old[k] - new[k]) <= 1e-12 for k in keys):
                return current
            await self.store.set_weights(conn, current.id, new)
            await self.store.log_change(conn, current.id, "weights_changed", actor, {"weights": {"from": old, "to": new}}, reason)
            return await self._experiment(current.id, conn)
