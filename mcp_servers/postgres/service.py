"""The experiment registry's logic: lifecycle rules, assignment, results, analysis, audit.

Plain async methods over the store; no MCP types. Every refusal is one of
schemas.errors (InvalidInput, NotFound, Conflict, QueryRefused) with a
message that says what to do instead.

Lifecycle: draft -> running -> stopped -> concluded, and archived from any
state but running. A draft can change freely; after start only the
SAFE_UPDATE_FIELDS change (and weights, through set_variant_weights, audited).

Assignment (get_variant), in order: the experiment must be running (a
concluded one serves its declared winner without recording); a QA-forced
user gets the forced variant; a user with a recorded assignment keeps it
forever (the first assignment wins, even if weights changed later); then
targeting, namespace, and the GrowthBook-compatible hash decide, and the
assignment is recorded once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, TypeVar

import asyncpg
import orjson
from pydantic import BaseModel, ValidationError

from schemas.errors import Conflict, InvalidInput, NotFound

from . import targeting
from .assignment import AssignmentSpec, assign, assign_batch
from .models import (
    SAFE_UPDATE_FIELDS,
    AssignmentPrediction,
    BatchAssignment,
    BucketRange,
    ChangeLogEntry,
    Decision,
    DecisionCreate,
    DecisionPage,
    Experiment,
    ExperimentAnalysis,
    ExperimentCreate,
    ExperimentDetail,
    ExperimentPage,
    ExperimentSummary,
    ExperimentUpdate,
    ExposureOutcome,
    ExposureRecord,
    MetricStats,
    QueryResult,
    ResultRecorded,
    SchemaDescription,
    VariantAssignment,
    VariantSpec,
    VariantStats,
)
from .sql_guard import check_read_only
from .store import SCHEMA, PostgresStore, experiment_from_row

log = logging.getLogger(__name__)

WEIGHT_TOLERANCE = 1e-6
MAX_ATTRIBUTES_BYTES = 16_384
_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], data: _M | Mapping[str, Any]) -> _M:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid {model.__name__}: {problems}") from None


def _jsonish(value: Any) -> Any:
    """Model values as plain JSON for the change log."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonish(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    return value


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


def _hash_reason(bucket: float | None, key: str, bucket_range: tuple[float, float]) -> str:
    return f"hash bucket {bucket:.4f} is in {key!r}'s range [{bucket_range[0]:.4f}, {bucket_range[1]:.4f})"


@lru_cache(maxsize=4096)
def _spec(seed: str, weights: tuple[float, ...], coverage: float, version: int,
          namespace: tuple[str, float, float] | None) -> AssignmentSpec:
    return AssignmentSpec(seed=seed, weights=weights, coverage=coverage, hash_version=version, namespace=namespace)


def assignment_spec(experiment: Experiment | Mapping[str, Any]) -> AssignmentSpec:
    """The pure hashing spec of an experiment (for `assign` / `assign_batch` without a database)."""
    if isinstance(experiment, Experiment):
        ns = experiment.namespace
        namespace = (ns.name, ns.start, ns.end) if ns else None
        weights = tuple(v.weight for v in experiment.variants)
        return _spec(experiment.hash_seed, weights, experiment.coverage, experiment.hash_version, namespace)
    namespace = None
    if experiment["namespace"] is not None:
        namespace = (experiment["namespace"], experiment["namespace_start"], experiment["namespace_end"])
    weights = tuple(v["weight"] for v in experiment["variants"])
    return _spec(experiment["hash_seed"], weights, experiment["coverage"], experiment["hash_version"], namespace)


_DEFINITION_CACHE_SIZE = 1024
_RECORDED = "returning the user's recorded assignment (the first assignment wins)"


@dataclass(frozen=True)
class _Definition:
    """What get_variant needs to know about an experiment, at one row version (`revision`)."""

    id: int
    key: str
    status: str
    revision: int
    winner: str | None
    targeting: dict[str, Any] | None
    forced: dict[str, str]
    variants: tuple[dict[str, Any], ...]
    by_key: dict[str, dict[str, Any]]
    by_id: dict[int, dict[str, Any]]
    spec: AssignmentSpec | None

    @classmethod
    def from_row(cls, row: Any) -> _Definition:
        variants = tuple(row["variants"])
        return cls(
            id=row["id"], key=row["key"], status=row["status"], revision=row["revision"], winner=row["winner"],
            targeting=row["targeting"], forced=row["forced_variations"], variants=variants,
            by_key={v["key"]: v for v in variants}, by_id={v["id"]: v for v in variants},
            spec=assignment_spec(row) if variants else None,
        )


def _answer(definition: _Definition, user_id: str, variant: dict[str, Any] | None, source: str, reason: str, *,
            in_experiment: bool, bucket: float | None = None, new: bool = False) -> VariantAssignment:
    return VariantAssignment(
        experiment_key=definition.key, user_id=user_id, in_experiment=in_experiment,
        variant_key=variant["key"] if variant else None, variant_name=variant["name"] if variant else None,
        is_control=variant["is_control"] if variant else None, config=variant["config"] if variant else None,
        source=source, bucket=bucket, newly_recorded=new, reason=reason,
    )


def _not_running(definition: _Definition, user_id: str) -> VariantAssignment:
    if definition.status == "concluded" and definition.winner in definition.by_key:
        return _answer(definition, user_id, definition.by_key[definition.winner], "winner",
                       f"experiment concluded; serving the declared winner {definition.winner!r} to everyone "
                       "(not recorded)", in_experiment=False)
    return _answer(definition, user_id, None, "none", f"experiment is {definition.status}: nobody is assigned",
                   in_experiment=False)


MAX_RESULT_VALUE = 1e15  # far beyond any metric (revenue, latency, tokens); keeps Σx² finite


def _refused_by_postgres(exc: asyncpg.DataError) -> InvalidInput:
    """A value PostgreSQL cannot store (SQLSTATE class 22, data exception) -> the caller's error, named."""
    text = str(exc)
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError) or "0x00" in text:
        return InvalidInput("text cannot contain NUL characters (\\u0000): PostgreSQL text and JSON refuse them")
    if "64-bit range" in text:
        return InvalidInput("integers inside JSON values (config, metadata, targeting) must fit in 64 bits")
    return InvalidInput(f"value refused by PostgreSQL: {text.splitlines()[0] if text else type(exc).__name__}")


def _data_errors_are_invalid_input(cls: type) -> type:
    """Every public method: a value PostgreSQL refuses is InvalidInput (422), not a server error.

    Inputs reach SQL from many places (refs, user ids, names, free-form JSON), and what the
    database cannot store is the database's to say; this turns its verdict into a clear error.
    """
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not inspect.iscoroutinefunction(method):
            continue

        @functools.wraps(method)
        async def guarded(self: Any, *args: Any, __method: Any = method, **kwargs: Any) -> Any:
            try:
                return await __method(self, *args, **kwargs)
            except asyncpg.DataError as exc:
                raise _refused_by_postgres(exc) from exc

        setattr(cls, name, guarded)
    return cls


@_data_errors_are_invalid_input
class ExperimentService:
    """The PostgreSQL server's capabilities as plain async methods."""

    def __init__(self, store: PostgresStore, *, query_timeout_ms: int = 5000, max_query_rows: int = 1000,
                 max_result_bytes: int = 1_000_000) -> None:
        self.store = store
        self.query_timeout_ms = query_timeout_ms
        self.max_query_rows = max_query_rows
        self.max_result_bytes = max_result_bytes
        self._definitions: dict[str, _Definition] = {}

    # ------------------------------------------------------------ lookup

    async def _experiment(self, ref: str | int, conn: Any = None) -> Experiment:
        experiment = await self.store.fetch_experiment(ref, conn)
        if experiment is None:
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        return experiment

    async def _locked(self, conn: Any, ref: str | int) -> Experiment:
        if await self.store.lock_experiment(conn, ref) is None:
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        return await self._experiment(ref, conn)

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
        spec = _parse(ExperimentCreate, spec)
        variants = _normalise_variants(spec.variants)
        _check_forced(spec.forced_variations, (v["key"] for v in variants))
        fields = {
            "key": spec.key, "name": spec.name, "description": spec.description, "hypothesis": spec.hypothesis,
            "type": spec.type, "primary_metric": spec.primary_metric.name,
            "primary_metric_direction": spec.primary_metric.direction,
            "secondary_metrics": _jsonish(spec.secondary_metrics), "guardrail_metrics": _jsonish(spec.guardrail_metrics),
            "targeting": _check_targeting(spec.targeting), "coverage": spec.coverage,
            "namespace": spec.namespace.name if spec.namespace else None,
            "namespace_start": spec.namespace.start if spec.namespace else None,
            "namespace_end": spec.namespace.end if spec.namespace else None,
            "hash_seed": spec.hash_seed or spec.key, "hash_version": spec.hash_version,
            "min_sample_size": spec.min_sample_size, "forced_variations": spec.forced_variations,
            "owner": spec.owner, "tags": _check_tags(spec.tags),
        }
        async with self.store.transaction() as conn:
            if await self.store.lock_experiment(conn, spec.key) is not None:
                raise Conflict(f"an experiment with key {spec.key!r} already exists (keys are permanent; pick another)")
            experiment_id = await self.store.insert_experiment(conn, fields)
            if experiment_id is None:  # a concurrent create of the same key won
                raise Conflict(f"an experiment with key {spec.key!r} already exists")
            await self.store.replace_variants(conn, experiment_id, variants)
            await self.store.log_change(conn, experiment_id, "created", actor, {"definition": _jsonish(spec) | {"variants": variants}}, None)
            return await self._experiment(experiment_id, conn)

    async def update_experiment(self, ref: str | int, changes: ExperimentUpdate | Mapping[str, Any],
                                actor: str = "system", reason: str | None = None) -> Experiment:
        patch = _parse(ExperimentUpdate, changes)
        given = patch.given()
        if not given:
            raise InvalidInput("no changes given: pass at least one field to update")
        async with self.store.transaction() as conn:
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
                if _jsonish(old) != _jsonish(new):
                    diff[name] = {"from": _jsonish(old), "to": _jsonish(new)}
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
                    change(name, getattr(current, name), value, {name: _jsonish(value)})
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
                if _jsonish(old) != _jsonish(new_variants):
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
        async with self.store.transaction() as conn:
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
        async with self.store.transaction() as conn:
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
        async with self.store.transaction() as conn:
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
        async with self.store.transaction() as conn:
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

    # ------------------------------------------------------------ assignment

    def _check_attributes(self, attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if attributes is None:
            return None
        if not isinstance(attributes, Mapping):
            raise InvalidInput("attributes must be an object of user attributes")
        try:
            size = len(orjson.dumps(attributes))
        except TypeError as exc:
            raise InvalidInput(f"attributes must be JSON values: {exc}") from None
        if size > MAX_ATTRIBUTES_BYTES:
            raise InvalidInput(f"attributes are {size} bytes; the limit is {MAX_ATTRIBUTES_BYTES}")
        return dict(attributes)

    async def get_variant(self, ref: str | int, user_id: str, attributes: Mapping[str, Any] | None = None) -> VariantAssignment:
        """Assign `user_id` (or return their recorded variant) and record the assignment once.

        The experiment's definition is cached per reference; every call checks its
        row version in the same round trip that reads or records the assignment, so
        a change made by any process is seen by the next call.
        """
        if not user_id or len(user_id) > 256:
            raise InvalidInput("user_id must be 1-256 characters")
        attributes = self._check_attributes(attributes)
        cache_key = str(ref)
        cached = self._definitions.get(cache_key)
        if cached is not None and user_id not in cached.forced:
            answer = await self._get_variant_cached(cached, user_id, attributes)
            if answer is not None:
                return answer
        row = await self.store.fetch_for_assignment(ref, user_id)
        if row is None:
            self._definitions.pop(cache_key, None)
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        definition = _Definition.from_row(row)
        if len(self._definitions) >= _DEFINITION_CACHE_SIZE:
            self._definitions.pop(next(iter(self._definitions)))
        self._definitions[cache_key] = definition
        return await self._get_variant_fresh(definition, row, user_id, attributes)

    @staticmethod
    def _decide(definition: _Definition, user_id: str, attributes: dict[str, Any] | None
                ) -> tuple[dict[str, Any] | None, float | None, str]:
        """Targeting, namespace, coverage and hash: (variant or None, bucket, reason)."""
        if not targeting.evaluate(definition.targeting, attributes):
            failed = "; ".join(targeting.explain(definition.targeting, attributes))
            return None, None, f"user does not match the targeting: {failed}"
        verdict = assign(definition.spec, user_id)
        if not verdict.in_experiment:
            return None, verdict.bucket, verdict.reason
        variant = definition.variants[verdict.variation]
        return variant, verdict.bucket, _hash_reason(verdict.bucket, variant["key"], definition.spec.ranges[verdict.variation])

    async def _get_variant_cached(self, definition: _Definition, user_id: str,
                                  attributes: dict[str, Any] | None) -> VariantAssignment | None:
        """One round trip; None when the cache is stale or a race needs the full path."""
        variant, bucket, reason = (None, None, "")
        if definition.status == "running":
            variant, bucket, reason = self._decide(definition, user_id, attributes)
        row = await self.store.assign_if_current(definition.id, user_id, definition.revision,
                                                 variant["id"] if variant else None, bucket, attributes)
        if row is None or row["revision"] != definition.revision:
            return None
        status = definition.status
        if status != "running":
            return _not_running(definition, user_id)
        if row["prior_variant"] is not None:
            prior = definition.by_id.get(row["prior_variant"])
            return None if prior is None else _answer(
                definition, user_id, prior, "recorded", _RECORDED, in_experiment=True, bucket=row["prior_bucket"])
        if row["inserted"]:
            return _answer(definition, user_id, variant, "hash", reason, in_experiment=True, bucket=bucket, new=True)
        if variant is None:
            return _answer(definition, user_id, None, "none", reason, in_experiment=False, bucket=bucket)
        return None  # a concurrent first call recorded this user meanwhile

    async def _get_variant_fresh(self, definition: _Definition, row: Any, user_id: str,
                                 attributes: dict[str, Any] | None) -> VariantAssignment:
        if definition.status != "running":
            return _not_running(definition, user_id)
        forced_key = definition.forced.get(user_id)
        if forced_key in definition.by_key:
            variant = definition.by_key[forced_key]
            changed = await self.store.force_assignment(definition.id, user_id, variant["id"], attributes)
            return _answer(definition, user_id, variant, "forced",
                           f"user is forced to {forced_key!r} (QA override; excluded from analysis)",
                           in_experiment=True, new=changed)
        if row["assigned_variant_id"] is not None:
            return _answer(definition, user_id, definition.by_id[row["assigned_variant_id"]], "recorded", _RECORDED,
                           in_experiment=True, bucket=row["assigned_bucket"])
        variant, bucket, reason = self._decide(definition, user_id, attributes)
        if variant is None:
            return _answer(definition, user_id, None, "none", reason, in_experiment=False, bucket=bucket)
        if await self.store.insert_assignment(definition.id, user_id, variant["id"], "hash", bucket, attributes):
            return _answer(definition, user_id, variant, "hash", reason, in_experiment=True, bucket=bucket, new=True)
        # Lost a race with a concurrent first call, or the experiment stopped meanwhile: re-read.
        again = await self.store.fetch_for_assignment(definition.id, user_id)
        if again is not None and again["status"] == "running" and again["assigned_variant_id"] is not None:
            return _answer(definition, user_id, definition.by_id[again["assigned_variant_id"]], "recorded", _RECORDED,
                           in_experiment=True, bucket=again["assigned_bucket"])
        status = again["status"] if again is not None else "gone"
        return _answer(definition, user_id, None, "none", f"experiment is {status}: nobody is assigned", in_experiment=False)

    async def predict_user_assignment(self, ref: str | int, user_id: str,
                                      attributes: Mapping[str, Any] | None = None) -> AssignmentPrediction:
        """What get_variant would answer now, step by step, without recording anything."""
        if not user_id or len(user_id) > 256:
            raise InvalidInput("user_id must be 1-256 characters")
        attributes = self._check_attributes(attributes)
        row = await self.store.fetch_for_assignment(ref, user_id)
        if row is None:
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        variants = row["variants"]
        by_id = {v["id"]: v for v in variants}
        keys = [v["key"] for v in variants]
        spec = assignment_spec(row) if variants else None
        ranges = [BucketRange(variant_key=k, start=s, end=e) for k, (s, e) in zip(keys, spec.ranges if spec else [], strict=True)]
        recorded = by_id[row["assigned_variant_id"]]["key"] if row["assigned_variant_id"] is not None else None
        steps: list[str] = []

        def result(in_exp: bool, key: str | None, decided_by: str, bucket: float | None = None) -> AssignmentPrediction:
            return AssignmentPrediction(
                experiment_key=row["key"], user_id=user_id, status=row["status"], would_be_in_experiment=in_exp,
                variant_key=key, decided_by=decided_by, bucket=bucket, bucket_ranges=ranges,
                recorded_variant=recorded, steps=steps,
            )

        status = row["status"]
        if status == "concluded" and row["winner"] in keys:
            steps.append(f"status is concluded: everyone is served the declared winner {row['winner']!r}; nothing recorded")
            return result(False, row["winner"], "winner")
        if status != "running":
            steps.append(f"status is {status}: get_variant assigns nobody")
            return result(False, None, "status")
        steps.append("status is running")
        forced_key = row["forced_variations"].get(user_id)
        if forced_key in keys:
            steps.append(f"user is in forced_variations -> {forced_key!r} (QA override, wins over everything else)")
            return result(True, forced_key, "forced")
        steps.append("user is not forced")
        if recorded is not None:
            steps.append(f"user already has a recorded assignment -> {recorded!r} (the first assignment wins)")
            return result(True, recorded, "recorded", row["assigned_bucket"])
        steps.append("no recorded assignment yet")
        if row["targeting"]:
            if not targeting.evaluate(row["targeting"], attributes):
                steps.append("targeting fails: " + "; ".join(targeting.explain(row["targeting"], attributes)))
                return result(False, None, "targeting")
            steps.append("targeting passes")
        else:
            steps.append("no targeting: everyone is eligible")
        verdict = assign(spec, user_id)
        if spec.namespace is not None:
            if verdict.bucket is None and not verdict.in_experiment:
                steps.append(verdict.reason)
                return result(False, None, "namespace")
            steps.append(f"user is inside namespace {spec.namespace[0]!r} slice [{spec.namespace[1]:g}, {spec.namespace[2]:g})")
        steps.append(f"hash v{spec.hash_version} of seed {spec.seed!r} and the user id gives bucket {verdict.bucket:.4f}")
        if not verdict.in_experiment:
            steps.append(verdict.reason)
            return result(False, None, "coverage", verdict.bucket)
        key = keys[verdict.variation]
        steps.append(f"{_hash_reason(verdict.bucket, key, spec.ranges[verdict.variation])}; get_variant would record this")
        return result(True, key, "hash", verdict.bucket)

    async def assign_many(self, ref: str | int, user_ids: Sequence[str],
                          attributes: Mapping[str, Mapping[str, Any]] | None = None,
                          record: bool = True) -> BatchAssignment:
        """Vectorised get_variant for many users (stream processors, back-fills).

        Same rules as get_variant: recorded assignments win, forced users get their
        override, targeting uses `attributes[user_id]` (missing = no attributes).
        With record=False nothing is written (a batch predict).
        """
        experiment = await self._experiment(ref)
        unique_ids = list(dict.fromkeys(user_ids))
        if any(not u or len(u) > 256 for u in unique_ids):
            raise InvalidInput("user ids must be 1-256 characters")
        result: dict[str, str | None] = dict.fromkeys(unique_ids)
        if experiment.status != "running" or not unique_ids:
            return BatchAssignment(experiment_key=experiment.key, assigned=result, newly_recorded=0,
                                   already_recorded=0, not_in_experiment=len(unique_ids))
        by_id = {v.id: v for v in experiment.variants}
        by_key = {v.key: v for v in experiment.variants}
        recorded = await self.store.recorded_assignments(experiment.id, unique_ids)
        pending: list[str] = []
        newly = already = 0
        for user_id in unique_ids:
            forced_key = experiment.forced_variations.get(user_id)
            if forced_key in by_key:
                result[user_id] = forced_key
                if record:
                    if await self.store.force_assignment(experiment.id, user_id, by_key[forced_key].id, None):
                        newly += 1
                    else:
                        already += 1
            elif user_id in recorded:
                result[user_id] = by_id[recorded[user_id][0]].key
                already += 1
            elif not experiment.targeting or targeting.evaluate(experiment.targeting, (attributes or {}).get(user_id)):
                pending.append(user_id)
        if pending:
            variations, buckets = assign_batch(assignment_spec(experiment), pending)
            chosen = [(u, int(i), float(b)) for u, i, b in zip(pending, variations, buckets, strict=True) if i >= 0]
            for user_id, index, _ in chosen:
                result[user_id] = experiment.variants[index].key
            if record and chosen:
                inserted = await self.store.insert_assignments(
                    experiment.id, [c[0] for c in chosen], [experiment.variants[c[1]].id for c in chosen],
                    [c[2] for c in chosen],
                )
                newly += len(inserted)
                lost = [c[0] for c in chosen if c[0] not in inserted]
                if lost:  # concurrent writers or a stop: report what is actually recorded
                    again = await self.store.recorded_assignments(experiment.id, lost)
                    for user_id in lost:
                        result[user_id] = by_id[again[user_id][0]].key if user_id in again else None
                        already += user_id in again
        not_in = sum(1 for v in result.values() if v is None)
        return BatchAssignment(experiment_key=experiment.key, assigned=result, newly_recorded=newly,
                               already_recorded=already, not_in_experiment=not_in)

    async def record_exposures(self, exposures: Sequence[ExposureRecord | Mapping[str, Any]]) -> ExposureOutcome:
        """Record assignments reported by SDKs (Kafka exposure events); the first assignment wins.

        Refused per record (returned, never raised): unknown experiment or
        variant, or an experiment in draft or archived.
        """
        rows: list[tuple[str, str, str, datetime | None]] = []
        rejected: list[tuple[int, str]] = []
        good_index: list[int] = []
        for index, item in enumerate(exposures):
            try:
                exposure = _parse(ExposureRecord, item)
            except InvalidInput as exc:
                rejected.append((index, str(exc)))
                continue
            rows.append((exposure.experiment_key, exposure.user_id, exposure.variant_key, exposure.assigned_at))
            good_index.append(index)
        outcome = await self.record_exposure_rows(rows)
        rejected.extend((good_index[i], reason) for i, reason in outcome.rejected)
        rejected.sort()
        return ExposureOutcome(recorded=outcome.recorded, duplicates=outcome.duplicates, rejected=rejected)

    async def record_exposure_rows(self, rows: Sequence[tuple[str, str, str, datetime | None]]) -> ExposureOutcome:
        """`record_exposures` for rows already validated upstream (the stream processor's exposure events):
        (experiment_key, user_id, variant_key, assigned_at) tuples, no model per row.

        Refused per row like `record_exposures` (returned, never raised): a user id that is not 1..256
        characters or holds a NUL, an unknown experiment or variant, an experiment in draft or archived.
        """
        rejected: list[tuple[int, str]] = []
        # A NUL cannot be stored (nor looked up) in PostgreSQL text: such rows are refused below, one by one.
        index_by_key = await self.store.variant_index(
            sorted({row[0] for row in rows if isinstance(row[0], str) and "\x00" not in row[0]}))
        out: list[tuple[int, str, int, datetime | None]] = []
        seen: set[tuple[int, str]] = set()
        duplicates = 0
        for index, (experiment_key, user_id, variant_key, assigned_at) in enumerate(rows):
            if type(user_id) is not str or not 0 < len(user_id) <= 256:
                rejected.append((index, f"invalid ExposureRecord: user_id: must be 1..256 characters, got {user_id!r:.80}"))
                continue
            if "\x00" in user_id:
                rejected.append((index, "invalid ExposureRecord: user_id: contains a NUL character (\\u0000)"))
                continue
            if assigned_at is not None and not isinstance(assigned_at, datetime):
                rejected.append((index, f"invalid ExposureRecord: assigned_at: not a datetime: {assigned_at!r:.80}"))
                continue
            found = index_by_key.get(experiment_key) if isinstance(experiment_key, str) else None
            if found is None:
                rejected.append((index, f"unknown experiment {experiment_key!r}"))
                continue
            experiment_id, status, variant_ids = found
            if status in ("draft", "archived"):
                rejected.append((index, f"experiment {experiment_key!r} is {status}"))
                continue
            variant_id = variant_ids.get(variant_key) if isinstance(variant_key, str) else None
            if variant_id is None:
                rejected.append((index, f"unknown variant {variant_key!r} of {experiment_key!r}"))
                continue
            if (experiment_id, user_id) in seen:
                duplicates += 1
                continue
            seen.add((experiment_id, user_id))
            out.append((experiment_id, user_id, variant_id, assigned_at))
        recorded = await self.store.insert_exposures(out)
        return ExposureOutcome(recorded=recorded, duplicates=duplicates + len(out) - recorded, rejected=rejected)

    # ------------------------------------------------------------ results

    async def record_result(self, ref: str | int, user_id: str, metric: str, value: float, *,
                            event_id: str | None = None, metadata: Mapping[str, Any] | None = None,
                            recorded_at: datetime | None = None) -> ResultRecorded:
        """Record one metric value for an assigned user; attributed to the user's recorded variant."""
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidInput(f"value must be a finite number, got {value!r}")
        if abs(value) > MAX_RESULT_VALUE:
            # Sums of squares over many users must stay finite in double precision.
            raise InvalidInput(f"value must be within ±{MAX_RESULT_VALUE:g}, got {value!r}")
        if not user_id or len(user_id) > 256:
            raise InvalidInput("user_id must be 1-256 characters")
        row = await self.store.fetch_for_assignment(ref, user_id)
        if row is None:
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        key = row["key"]
        if row["status"] == "draft":
            raise Conflict(f"experiment {key!r} is a draft: start it before recording results")
        if row["status"] == "archived":
            raise Conflict(f"experiment {key!r} is archived: results are no longer accepted")
        declared = [row["primary_metric"], *(m["name"] for m in row["secondary_metrics"]),
                    *(m["name"] for m in row["guardrail_metrics"])]
        if metric not in declared:
            raise InvalidInput(
                f"metric {metric!r} is not declared on {key!r} (declared: {', '.join(dict.fromkeys(declared))}); "
                "add it to secondary_metrics with update_experiment first"
            )
        if row["assigned_variant_id"] is None:
            raise Conflict(f"user {user_id!r} has no assignment in {key!r}: call get_variant for them first")
        variant = {v["id"]: v for v in row["variants"]}[row["assigned_variant_id"]]
        inserted = await self.store.insert_result(row["id"], variant["id"], user_id, metric, float(value), event_id,
                                                  dict(metadata or {}), recorded_at)
        if inserted is None:  # event_id seen before: at-least-once delivery, keep the first
            existing = await self.store.result_by_event(row["id"], event_id or "")
            if existing is None:  # pragma: no cover - only a concurrent delete could cause this
                raise Conflict(f"result with event_id {event_id!r} could not be recorded")
            return ResultRecorded(id=existing["id"], experiment_key=key, user_id=existing["user_id"],
                                  variant_key=existing["variant_key"], metric=existing["metric_name"],
                                  value=existing["metric_value"], recorded_at=existing["recorded_at"], duplicate=True)
        return ResultRecorded(id=inserted["id"], experiment_key=key, user_id=user_id, variant_key=variant["key"],
                              metric=metric, value=float(value), recorded_at=inserted["recorded_at"], duplicate=False)

    async def analyze_experiment_data(self, ref: str | int, metrics: Sequence[str] | None = None,
                                      aggregation: Literal["mean", "sum"] = "mean") -> ExperimentAnalysis:
        """Per-variant assignment counts and per-metric sufficient statistics from PostgreSQL."""
        if aggregation not in ("mean", "sum"):
            raise InvalidInput(f"aggregation must be 'mean' or 'sum', got {aggregation!r}")
        experiment = await self._experiment(ref)
        declared = list(dict.fromkeys([experiment.primary_metric.name, *(m.name for m in experiment.secondary_metrics),
                                       *(m.name for m in experiment.guardrail_metrics)]))
        chosen = list(dict.fromkeys(metrics)) if metrics else declared
        unknown = [m for m in chosen if m not in declared]
        if unknown:
            raise InvalidInput(f"metrics not declared on {experiment.key!r}: {', '.join(unknown)} (declared: {', '.join(declared)})")
        totals = {r["variant_id"]: r for r in await self.store.assignment_totals(experiment.id)}
        aggregates = await self.store.metric_aggregates(experiment.id, chosen, aggregation)
        stats: dict[tuple[int, str], Any] = {(r["variant_id"], r["metric_name"]): r for r in aggregates}
        total_assigned = sum(r["users"] for r in totals.values())
        forced = sum(r["forced"] for r in totals.values())
        control = next((v for v in experiment.variants if v.is_control), None)

        def metric_stats(variant_id: int, metric: str, assigned: int) -> MetricStats:
            r = stats.get((variant_id, metric))
            n = r["users"] if r else 0
            s = float(r["s"]) if r else 0.0
            ss = float(r["ss"]) if r else 0.0
            mean = s / n if n else None
            std = math.sqrt(max(ss - s * s / n, 0.0) / (n - 1)) if n > 1 else None
            return MetricStats(metric=metric, users=n, records=r["records"] if r else 0, sum=s, sum_squares=ss,
                               mean=mean, std=std, conversion_rate=(r["positive"] if r else 0) / assigned if assigned else None,
                               relative_lift_vs_control=None)

        variants = []
        for v in experiment.variants:
            assigned = totals[v.id]["users"] if v.id in totals else 0
            variants.append(VariantStats(
                variant_key=v.key, name=v.name, is_control=v.is_control, weight=v.weight, assigned_users=assigned,
                observed_share=assigned / total_assigned if total_assigned else None,
                metrics={m: metric_stats(v.id, m, assigned) for m in chosen},
            ))
        control_stats = next((vs for vs in variants if control and vs.variant_key == control.key), None)
        if control_stats is not None:
            for vs in variants:
                if vs is control_stats:
                    continue
                for m, ms in vs.metrics.items():
                    base = control_stats.metrics[m].mean
                    if ms.mean is not None and base not in (None, 0):
                        ms.relative_lift_vs_control = (ms.mean - base) / abs(base)
        notes = []
        if experiment.status == "draft":
            notes.append("experiment is a draft: no data yet")
        smallest = min((vs.assigned_users for vs in variants), default=0)
        reached = bool(variants) and smallest >= experiment.min_sample_size
        if not reached and variants:
            notes.append(f"sample size not reached: smallest variant has {smallest} of {experiment.min_sample_size} users")
        if forced:
            notes.append(f"{forced} QA-forced users are excluded")
        notes.append("descriptive statistics only; use the intelligence server for significance and decisions")
        return ExperimentAnalysis(
            experiment_key=experiment.key, status=experiment.status, primary_metric=experiment.primary_metric,
            metrics=chosen, aggregation=aggregation, total_assigned=total_assigned, forced_excluded=forced,
            min_sample_size=experiment.min_sample_size, sample_size_reached=reached, variants=variants, notes=notes,
        )

    async def get_experiment_summary(self, ref: str | int) -> ExperimentSummary:
        """A human-readable report of the experiment and its data so far."""
        experiment = await self._experiment(ref)
        analysis = await self.analyze_experiment_data(experiment.id)
        primary = experiment.primary_metric
        better = "higher" if primary.direction == "higher" else "lower"
        lines = [
            f"# {experiment.name} (`{experiment.key}`)",
            f"Status: **{experiment.status}** · type: {experiment.type}"
            + (f" · owner: {experiment.owner}" if experiment.owner else ""),
        ]
        if experiment.hypothesis:
            lines.append(f"Hypothesis: {experiment.hypothesis}")
        lines.append(f"Primary metric: `{primary.name}` ({better} is better) · min sample size {experiment.min_sample_size} per variant")
        lines += ["", f"| variant | weight | users | {primary.name} mean | users with data | lift vs control |",
                  "|---|---|---|---|---|---|"]
        leader = None
        best = None
        for vs in analysis.variants:
            ms = vs.metrics[primary.name]
            mean = f"{ms.mean:.4g}" if ms.mean is not None else "–"
            lift = f"{ms.relative_lift_vs_control:+.1%}" if ms.relative_lift_vs_control is not None else ("(control)" if vs.is_control else "–")
            lines.append(f"| {vs.variant_key}{' (control)' if vs.is_control else ''} | {vs.weight:.0%} | {vs.assigned_users} | {mean} | {ms.users} | {lift} |")
            if ms.mean is not None:
                score = ms.mean if primary.direction == "higher" else -ms.mean
                if best is None or score > best:
                    best, leader = score, vs.variant_key
        lines.append("")
        if experiment.winner:
            lines.append(f"Declared winner: **{experiment.winner}**.")
        elif leader is not None:
            lines.append(f"Leading so far on `{primary.name}`: {leader} (descriptive only, not a significance test).")
        else:
            lines.append(f"No `{primary.name}` results recorded yet.")
        lines.append("Sample size reached." if analysis.sample_size_reached else
                     f"Sample size not reached yet ({experiment.min_sample_size} users per variant needed).")
        if analysis.forced_excluded:
            lines.append(f"{analysis.forced_excluded} QA-forced users are excluded from the figures.")
        return ExperimentSummary(experiment_key=experiment.key, status=experiment.status, summary="\n".join(lines),
                                 leader=leader, sample_size_reached=analysis.sample_size_reached)

    # ------------------------------------------------------------ decisions (audit trail)

    async def record_decision(self, decision: DecisionCreate | Mapping[str, Any]) -> Decision:
        decision = _parse(DecisionCreate, decision)
        experiment_id = None
        if decision.experiment is not None:
            experiment_id = (await self._experiment(decision.experiment)).id
        return await self.store.insert_decision(experiment_id, decision.action, decision.reasoning,
                                                _jsonish(decision.inputs), decision.confidence, decision.actor,
                                                decision.applied)

    async def list_decisions(self, *, experiment: str | int | None = None, action: str | None = None,
                             actor: str | None = None, applied: bool | None = None, limit: int = 50,
                             offset: int = 0) -> DecisionPage:
        if not 1 <= limit <= 200:
            raise InvalidInput(f"limit must be between 1 and 200, got {limit}")
        if offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        experiment_id = (await self._experiment(experiment)).id if experiment is not None else None
        items, total = await self.store.list_decisions(experiment_id=experiment_id, action=action, actor=actor,
                                                       applied=applied, limit=limit, offset=offset)
        next_offset = offset + len(items) if offset + len(items) < total else None
        return DecisionPage(items=items, total=total, limit=limit, offset=offset, next_offset=next_offset)

    # ------------------------------------------------------------ SQL

    async def postgres_query(self, sql: str, max_rows: int | None = None) -> QueryResult:
        """Run one read-only SELECT / EXPLAIN / SHOW; anything else is refused before it reaches the server."""
        guarded = check_read_only(sql)
        limit = self.max_query_rows if max_rows is None else max_rows
        if not 1 <= limit <= self.max_query_rows:
            raise InvalidInput(f"max_rows must be between 1 and {self.max_query_rows}, got {limit}")
        raw = await self.store.run_read_only(guarded, self.query_timeout_ms, limit, self.max_result_bytes)
        return QueryResult(**raw)

    async def describe_schema(self) -> SchemaDescription:
        tables = await self.store.describe_tables()
        return SchemaDescription(
            schema_name=SCHEMA, tables=tables,
            notes=(f"Tables live in schema {SCHEMA!r}, which postgres_query puts on the search_path, so "
                   "`SELECT key, status FROM experiments` works. Join variants, assignments and results on "
                   "experiment_id and variant_id; experiments.key is the public experiment id used in events."),
        )


__all__ = ["ExperimentService", "assignment_spec", "experiment_from_row"]
