"""Which variant a user gets: get_variant (recorded once), predict_user_assignment (explained, nothing
recorded), assign_many (vectorised), and exposures reported by SDKs.

get_variant, in order: the experiment must be running (a concluded one serves its declared winner
without recording); a QA-forced user gets the forced variant; a user with a recorded assignment
keeps it forever (the first assignment wins, even if weights changed later); then targeting,
namespace, and the GrowthBook-compatible hash (`assignment`) decide, and the assignment is
recorded once.

An assignment served is an exposure (as GrowthBook's tracking callback fires when a user is put in an
experiment), unless the caller says the user was not shown it (`exposed=False`). The first exposure
of a user is written to the event outbox in the statement that records the assignment (or first marks
it exposed), and the relay carries it to the event store, where every analysis reads; a user exposed
before costs no write. QA-forced users are never exposures (excluded from analysis), and exposures
reported by SDKs (`record_exposures`) are events already, so they are not written to the outbox.

What get_variant keeps in memory (per service): each experiment's definition and, with it, the recorded
assignments of the users it served. While the store LISTENs for experiment changes (migration 0005),
a returning user exposed before, or any user of a stopped or concluded experiment, costs no round trip;
any change drops the cache (at commit in this process, on notification in others). By default
(`assignment_writes_behind`, settings.assignment_writes = "behind") a new user costs none either while
the experiment is not `hash_divergent` (migration 0006): the assignment is recorded just after the
answer (PostgresStore.queue_assignment says what that changes and what a crash loses).

Exposures streamed from SDKs (`record_exposure_rows(keep_agreeing=True)`) whose variant is what this
module would answer anyway cost no assignment row: they are kept in bulk (migration 0007) and become rows
when the experiment becomes hash_divergent.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSet, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import compress
from typing import Any

import numpy as np
import orjson

from schemas.errors import InvalidInput, NotFound

from . import targeting
from .assignment import AssignmentSpec, assign, assign_batch
from .base import RegistryBase, parse_input
from .models import (
    AssignmentPrediction,
    BatchAssignment,
    BucketRange,
    Experiment,
    ExposureOutcome,
    ExposureRecord,
    VariantAssignment,
)

MAX_ATTRIBUTES_BYTES = 16_384


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
_RECORDED_CACHE_SIZE = 50_000  # returning users remembered per experiment definition (~12 MB with UUID ids)
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
    divergent: bool  # a recorded assignment may differ from the hash (migration 0006): read before recording
    # user id -> (variant id, bucket, settled) of recorded assignments seen at this definition; settled:
    # exposed before or QA-forced, so no call will write for this user again. A recorded assignment never
    # changes (the first wins) except by a QA override, which changes the definition (forced_variations).
    recorded: dict[str, tuple[int, float | None, bool]] = field(default_factory=dict, compare=False, repr=False)

    def remember(self, user_id: str, variant_id: int, bucket: float | None, settled: bool) -> None:
        if len(self.recorded) >= _RECORDED_CACHE_SIZE:
            self.recorded.pop(next(iter(self.recorded)))
        self.recorded[user_id] = (variant_id, bucket, settled)

    @classmethod
    def from_row(cls, row: Any) -> _Definition:
        variants = tuple(row["variants"])
        return cls(
            id=row["id"], key=row["key"], status=row["status"], revision=row["revision"], winner=row["winner"],
            targeting=row["targeting"], forced=row["forced_variations"], variants=variants,
            by_key={v["key"]: v for v in variants}, by_id={v["id"]: v for v in variants},
            spec=assignment_spec(row) if variants else None, divergent=row["hash_divergent"],
        )


def _answer(definition: _Definition, user_id: str, variant: dict[str, Any] | None, source: str, reason: str, *,
            in_experiment: bool, bucket: float | None = None, new: bool = False,
            exposure: bool = False) -> VariantAssignment:
    return VariantAssignment(
        experiment_key=definition.key, user_id=user_id, in_experiment=in_experiment,
        variant_key=variant["key"] if variant else None, variant_name=variant["name"] if variant else None,
        is_control=variant["is_control"] if variant else None, config=variant["config"] if variant else None,
        source=source, bucket=bucket, newly_recorded=new, newly_exposed=exposure, reason=reason,
    )


def _not_running(definition: _Definition, user_id: str) -> VariantAssignment:
    if definition.status == "concluded" and definition.winner in definition.by_key:
        return _answer(definition, user_id, definition.by_key[definition.winner], "winner",
                       f"experiment concluded; serving the declared winner {definition.winner!r} to everyone "
                       "(not recorded)", in_experiment=False)
    return _answer(definition, user_id, None, "none", f"experiment is {definition.status}: nobody is assigned",
                   in_experiment=False)



class UserAssignment(RegistryBase):
    _definitions: dict[str, _Definition]  # per experiment reference; checked against the row version on use

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

    async def get_variant(self, ref: str | int, user_id: str, attributes: Mapping[str, Any] | None = None,
                          exposed: bool = True) -> VariantAssignment:
        """Assign `user_id` (or return their recorded variant) and record the assignment once.

        With `exposed` (the default) the user is counted as exposed: their first exposure goes to
        the event outbox in the same statement (`newly_exposed` says when this call wrote it).
        `exposed=False` when the variant is fetched but not shown yet (prefetching, server-side
        rendering that may be discarded); a later exposed call records the exposure then.

        The experiment's definition is cached per reference, with the recorded assignments of the
        users seen. While the store LISTENs for experiment changes (migration 0005), a call that
        needs no write (a returning user exposed before, a stopped or concluded experiment) is
        answered from memory with no round trip: a change made in this process drops the cache
        when its transaction ends, one made by another process when its notification arrives
        (PostgreSQL sends it at commit). Every other call checks the definition's row version in
        the same round trip that reads or records the assignment, and without LISTEN every call does.
        """
        if not user_id or len(user_id) > 256:
            raise InvalidInput("user_id must be 1-256 characters")
        attributes = self._check_attributes(attributes)
        cache_key = str(ref)
        cached = self._definitions.get(cache_key)
        if cached is not None and user_id not in cached.forced:
            if self.store.listening:
                answer = self._get_variant_remembered(cached, user_id, exposed)
                if answer is None and self.store.writes_behind:
                    answer = self._get_variant_written_behind(cached, user_id, attributes, exposed)
                if answer is not None:
                    return answer
            answer = await self._get_variant_cached(cached, user_id, attributes, exposed)
            if answer is not None:
                return answer
        generation = self._generation
        row = await self.store.fetch_for_assignment(ref, user_id)
        if row is None:
            self._definitions.pop(cache_key, None)
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        definition = _Definition.from_row(row)
        if generation == self._generation:  # else a change was announced meanwhile: the row may predate it
            if len(self._definitions) >= _DEFINITION_CACHE_SIZE:
                self._definitions.pop(next(iter(self._definitions)))
            self._definitions[cache_key] = definition
        return await self._get_variant_fresh(definition, row, user_id, attributes, exposed)

    def _get_variant_written_behind(self, definition: _Definition, user_id: str, attributes: dict[str, Any] | None,
                                    exposed: bool) -> VariantAssignment | None:
        """A user this process has not seen, while every recorded assignment agrees with the hash (not
        `divergent`): the user either has no assignment or has the one the hash gives, so the hash answers
        and the assignment is recorded after the answer (`store.queue_assignment`). None otherwise (a user
        the hash leaves out may hold an assignment made under other attributes: the database decides)."""
        if definition.status != "running" or definition.divergent or user_id in definition.recorded:
            return None
        variant, bucket, reason = self._decide(definition, user_id, attributes)
        if variant is None:
            return None
        definition.remember(user_id, variant["id"], bucket, exposed)
        self.store.queue_assignment(definition.id, user_id, variant["id"], bucket, attributes, exposed)
        return _answer(definition, user_id, variant, "hash", reason, in_experiment=True, bucket=bucket, new=True,
                       exposure=exposed)

    @staticmethod
    def _get_variant_remembered(definition: _Definition, user_id: str, exposed: bool) -> VariantAssignment | None:
        """The answer when nothing needs writing and the cached definition is current; else None."""
        if definition.status != "running":
            return _not_running(definition, user_id)
        recorded = definition.recorded.get(user_id)
        if recorded is None or not (recorded[2] or not exposed):
            return None
        return _answer(definition, user_id, definition.by_id[recorded[0]], "recorded", _RECORDED, in_experiment=True,
                       bucket=recorded[1])

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

    async def _get_variant_cached(self, definition: _Definition, user_id: str, attributes: dict[str, Any] | None,
                                  exposed: bool) -> VariantAssignment | None:
        """One round trip; None when the cache is stale or a race needs the full path."""
        variant, bucket, reason = (None, None, "")
        if definition.status == "running":
            variant, bucket, reason = self._decide(definition, user_id, attributes)
        row = await self.store.assign_if_current(definition.id, user_id, definition.revision,
                                                 variant["id"] if variant else None, bucket, attributes, exposed)
        if row is None or row["revision"] != definition.revision:
            return None
        status = definition.status
        if status != "running":
            return _not_running(definition, user_id)
        if row["prior_variant"] is not None:
            prior = definition.by_id.get(row["prior_variant"])
            if prior is None:
                return None
            definition.remember(user_id, prior["id"], row["prior_bucket"],
                                row["prior_settled"] or row["exposure_written"])
            return _answer(definition, user_id, prior, "recorded", _RECORDED, in_experiment=True,
                           bucket=row["prior_bucket"], exposure=row["exposure_written"])
        if row["inserted"]:
            definition.remember(user_id, variant["id"], bucket, exposed)
            return _answer(definition, user_id, variant, "hash", reason, in_experiment=True, bucket=bucket, new=True,
                           exposure=row["exposure_written"])
        if variant is None:
            return _answer(definition, user_id, None, "none", reason, in_experiment=False, bucket=bucket)
        return None  # a concurrent first call recorded this user meanwhile

    async def _get_variant_fresh(self, definition: _Definition, row: Any, user_id: str,
                                 attributes: dict[str, Any] | None, exposed: bool) -> VariantAssignment:
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
            settled = row["assigned_exposed_at"] is not None or row["assigned_source"] == "forced"
            shown = (exposed and not settled and bool(await self.store.mark_exposed(definition.id, [user_id])))
            definition.remember(user_id, row["assigned_variant_id"], row["assigned_bucket"], settled or shown)
            return _answer(definition, user_id, definition.by_id[row["assigned_variant_id"]], "recorded", _RECORDED,
                           in_experiment=True, bucket=row["assigned_bucket"], exposure=shown)
        variant, bucket, reason = self._decide(definition, user_id, attributes)
        if variant is None:
            return _answer(definition, user_id, None, "none", reason, in_experiment=False, bucket=bucket)
        if await self.store.insert_assignment(definition.id, user_id, variant["id"], "hash", bucket, attributes,
                                              exposed):
            definition.remember(user_id, variant["id"], bucket, exposed)
            return _answer(definition, user_id, variant, "hash", reason, in_experiment=True, bucket=bucket, new=True,
                           exposure=exposed)
        # Lost a race with a concurrent first call, or the experiment stopped meanwhile: re-read.
        again = await self.store.fetch_for_assignment(definition.id, user_id)
        if again is not None and again["status"] == "running" and again["assigned_variant_id"] is not None:
            shown = (exposed and again["assigned_exposed_at"] is None and again["assigned_source"] != "forced"
                     and bool(await self.store.mark_exposed(definition.id, [user_id])))
            return _answer(definition, user_id, definition.by_id[again["assigned_variant_id"]], "recorded", _RECORDED,
                           in_experiment=True, bucket=again["assigned_bucket"], exposure=shown)
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
                          record: bool = True, exposed: bool = True) -> BatchAssignment:
        """Vectorised get_variant for many users (stream processors, back-fills).

        Same rules as get_variant: recorded assignments win, forced users get their
        override, targeting uses `attributes[user_id]` (missing = no attributes).
        `exposed` as in get_variant: the users assigned are counted as exposed (first
        exposures go to the event outbox, in the statement that records them); pass
        False to record assignments of users not shown their variant yet.
        With record=False nothing is written (a batch predict), so no exposure either.
        """
        experiment = await self._experiment(ref)
        unique_ids = list(dict.fromkeys(user_ids))
        if any(not u or len(u) > 256 for u in unique_ids):
            raise InvalidInput("user ids must be 1-256 characters")
        result: dict[str, str | None] = dict.fromkeys(unique_ids)
        if experiment.status != "running" or not unique_ids:
            return BatchAssignment(experiment_key=experiment.key, assigned=result, newly_recorded=0,
                                   already_recorded=0, not_in_experiment=len(unique_ids), newly_exposed=0)
        by_id = {v.id: v for v in experiment.variants}
        by_key = {v.key: v for v in experiment.variants}
        recorded = await self.store.recorded_assignments(experiment.id, unique_ids)
        pending: list[str] = []
        unexposed: list[str] = []  # recorded, not QA-forced, never exposed: exposed now when `exposed`
        newly = already = exposures = 0
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
                variant_id, source, was_exposed = recorded[user_id]
                result[user_id] = by_id[variant_id].key
                already += 1
                if not was_exposed and source != "forced":
                    unexposed.append(user_id)
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
                    [c[2] for c in chosen], exposed=exposed,
                )
                newly += len(inserted)
                exposures += len(inserted) if exposed else 0
                lost = [c[0] for c in chosen if c[0] not in inserted]
                if lost:  # concurrent writers or a stop: report what is actually recorded
                    again = await self.store.recorded_assignments(experiment.id, lost)
                    for user_id in lost:
                        result[user_id] = by_id[again[user_id][0]].key if user_id in again else None
                        already += user_id in again
                        if user_id in again and not again[user_id][2] and again[user_id][1] != "forced":
                            unexposed.append(user_id)
        if record and exposed and unexposed:
            exposures += len(await self.store.mark_exposed(experiment.id, unexposed))
        not_in = sum(1 for v in result.values() if v is None)
        if record:  # get_variant answers these users from their records, not from the hash
            self._forget_definitions(experiment.id)
        return BatchAssignment(experiment_key=experiment.key, assigned=result, newly_recorded=newly,
                               already_recorded=already, not_in_experiment=not_in, newly_exposed=exposures)

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
                exposure = parse_input(ExposureRecord, item)
            except InvalidInput as exc:
                rejected.append((index, str(exc)))
                continue
            rows.append((exposure.experiment_key, exposure.user_id, exposure.variant_key, exposure.assigned_at))
            good_index.append(index)
        outcome = await self.record_exposure_rows(rows)
        rejected.extend((good_index[i], reason) for i, reason in outcome.rejected)
        rejected.sort()
        return ExposureOutcome(recorded=outcome.recorded, duplicates=outcome.duplicates, rejected=rejected)

    async def record_exposure_rows(self, rows: Sequence[tuple[str, str, str, datetime | None]],
                                   recorded: MutableSet[tuple[int, str]] | None = None, *,
                                   keep_agreeing: bool = False) -> ExposureOutcome:
        """`record_exposures` for rows already validated upstream (the stream processor's exposure events):
        (experiment_key, user_id, variant_key, assigned_at) tuples, no model per row.

        Refused per row like `record_exposures` (returned, never raised): a user id that is not 1..256
        characters or holds a NUL, an unknown experiment or variant, an experiment in draft or archived.

        `recorded`: (experiment id, user id) pairs the caller knows to be in the registry already (the
        stream processor's memory of what it stored). Such rows are checked and refused like any other,
        but cost no write (they count as duplicates); the pairs this call stores are added to it.

        `keep_agreeing` (the stream processor): an exposure whose variant is what get_variant would give
        a user without a record (the forced variant, else the hash), in a running experiment without
        targeting that is not hash_divergent, costs no assignment row: the batch's such exposures are
        kept as one streamed_exposures row per experiment (migration 0007), which become rows the moment
        the hash may stop being the truth. They count as `kept` (and in `recorded`), whether or not the
        user had a row already: telling would cost the lookup this path exists to save.
        """
        rejected: list[tuple[int, str]] = []
        # A NUL cannot be stored (nor looked up) in PostgreSQL text: such rows are refused below, one by one.
        experiments = await self.store.experiments_by_key(
            sorted({row[0] for row in rows if isinstance(row[0], str) and "\x00" not in row[0]}))
        index_by_key = {key: (row["id"], row["status"], {v["key"]: v["id"] for v in row["variants"]})
                        for key, row in experiments.items()}
        out: list[tuple[int, str, int, datetime | None]] = []
        seen: set[tuple[int, str]] = set()
        known = recorded if recorded is not None else frozenset()
        duplicates = 0
        # (experiment key, variant key) -> (experiment id, variant id) of the exposures that can be accepted:
        # one lookup for the common case; a miss is explained by _refusal.
        accepted = {(key, variant_key): (experiment_id, variant_id)
                    for key, (experiment_id, status, variant_ids) in index_by_key.items()
                    if status not in ("draft", "archived") for variant_key, variant_id in variant_ids.items()}
        for index, (experiment_key, user_id, variant_key, assigned_at) in enumerate(rows):
            hit = None
            if (type(user_id) is str and 0 < len(user_id) <= 256 and "\x00" not in user_id
                    and (assigned_at is None or isinstance(assigned_at, datetime))
                    and isinstance(experiment_key, str) and isinstance(variant_key, str)):
                hit = accepted.get((experiment_key, variant_key))
            if hit is None:
                rejected.append((index, _refusal(index_by_key, experiment_key, user_id, variant_key, assigned_at)))
                continue
            pair = (hit[0], user_id)
            if pair in seen or pair in known:
                duplicates += 1
                continue
            seen.add(pair)
            out.append((hit[0], user_id, hit[1], assigned_at))
        kept = 0
        if keep_agreeing and out:
            out, kept = await self._keep_agreeing(out, experiments)
        inserted = await self.store.insert_exposures(out)
        for experiment_id in {row[0] for row in out}:  # now divergent (the store flagged them): read records first
            self._forget_definitions(experiment_id)
        if recorded is not None:
            recorded.update(seen)  # inserted or kept now, or there before (the first assignment won)
        return ExposureOutcome(recorded=inserted + kept, kept=kept,
                               duplicates=duplicates + len(out) - inserted, rejected=rejected)

    async def _keep_agreeing(self, rows: list[tuple[int, str, int, datetime | None]], experiments: Mapping[str, Any]
                             ) -> tuple[list[tuple[int, str, int, datetime | None]], int]:
        """Keep the exposures the hash agrees with (migration 0007); returns the rows still to record as
        assignments, and how many were kept. An experiment changed between its read and the write (any
        change moves its revision, a description edit too) is read and split again, once; changed again,
        its exposures are recorded as rows."""
        by_id = {row["id"]: row for row in experiments.values()}
        kept, left, pending = 0, [], rows
        for attempt in (1, 2):
            batches, others = _split_agreeing(pending, by_id)
            left.extend(others)
            kept_ids = await self.store.keep_streamed_exposures(
                {i: (by_id[i]["revision"], *batch) for i, batch in batches.items()})
            kept += sum(len(batches[i][0]) for i in kept_ids)
            missed = batches.keys() - kept_ids
            retry = [(i, user, variant, when) for i in sorted(missed) for user, variant, when in zip(*batches[i], strict=True)]
            if not retry or attempt == 2:
                left.extend(retry)
                break
            fresh = await self.store.experiments_by_key(sorted(by_id[i]["key"] for i in missed))
            by_id = {row["id"]: row for row in fresh.values()}
            left.extend(row for row in retry if row[0] not in by_id)
            pending = [row for row in retry if row[0] in by_id]
        return left, kept


def _refusal(index_by_key: Mapping[str, tuple[int, str, dict[str, int]]], experiment_key: Any, user_id: Any,
             variant_key: Any, assigned_at: Any) -> str:
    """Why an exposure row is refused (the first rule it breaks)."""
    if type(user_id) is not str or not 0 < len(user_id) <= 256:
        return f"invalid ExposureRecord: user_id: must be 1..256 characters, got {user_id!r:.80}"
    if "\x00" in user_id:
        return "invalid ExposureRecord: user_id: contains a NUL character (\\u0000)"
    if assigned_at is not None and not isinstance(assigned_at, datetime):
        return f"invalid ExposureRecord: assigned_at: not a datetime: {assigned_at!r:.80}"
    found = index_by_key.get(experiment_key) if isinstance(experiment_key, str) else None
    if found is None:
        return f"unknown experiment {experiment_key!r}"
    _, status, variant_ids = found
    if status in ("draft", "archived"):
        return f"experiment {experiment_key!r} is {status}"
    return f"unknown variant {variant_key!r} of {experiment_key!r}"


def _split_agreeing(rows: list[tuple[int, str, int, datetime | None]], experiments: Mapping[int, Any]
                    ) -> tuple[dict[int, tuple[list[str], list[int], list[datetime]]],
                               list[tuple[int, str, int, datetime | None]]]:
    """Exposures get_variant would answer the same without a record (per experiment: user ids, variant
    ids, times), and the others (to record as rows). Only running experiments without targeting that
    are not hash_divergent qualify; a QA-forced user agrees when shown the forced variant."""
    now = datetime.now(UTC)
    grouped: dict[int, list[tuple[int, str, int, datetime | None]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    agreeing: dict[int, tuple[list[str], list[int], list[datetime]]] = {}
    others: list[tuple[int, str, int, datetime | None]] = []
    for experiment_id, group in grouped.items():
        experiment = experiments[experiment_id]
        variants = experiment["variants"]
        if (experiment["status"] != "running" or experiment["hash_divergent"] or experiment["targeting"]
                or not variants):
            others.extend(group)
            continue
        users = [row[1] for row in group]
        variations, _ = assign_batch(assignment_spec(experiment), users)
        # variation -1 (not in the experiment) indexes the sentinel -1, which no variant id equals
        expected = np.array([v["id"] for v in variants] + [-1], dtype=np.int64)[variations]
        forced = experiment["forced_variations"]
        if forced:
            by_key = {v["key"]: v["id"] for v in variants}
            for position, user in enumerate(users):
                if user in forced:
                    expected[position] = by_key.get(forced[user], -1)
        agree = (expected == np.fromiter((row[2] for row in group), np.int64, len(group))).tolist()
        kept = list(compress(group, agree))
        if kept:
            agreeing[experiment_id] = ([row[1] for row in kept], [row[2] for row in kept],
                                       [row[3] or now for row in kept])
        if len(kept) < len(group):
            others.extend(compress(group, [not a for a in agree]))
    return agreeing, others
