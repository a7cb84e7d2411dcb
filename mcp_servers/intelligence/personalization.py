"""personalize_experiment_experience (issue 22): choose a variant per user context with a contextual bandit.

How an experiment is marked personalised: the registry tag ``personalized`` (create_experiment or
update_experiment ``tags``), and optionally ``personalize:<dimension>`` naming the context it
personalises on, one of device, country, source, plan (default: device). Only running experiments
are served.

What a decision does:
1. learns, from the event store, each variant's conversion count and users per value of the context
   dimension (ClickHouse get_segment_statistics on the primary metric; a user's value is their first
   exposure's). The primary metric must be a higher-is-better 0/1 metric per user (a rate: conversions /
   users); others are refused. The
   table is re-read at most every POSTERIOR_TTL_SECONDS per experiment (with the registry definition),
   so a burst of decisions costs one read;
2. chooses with `mcp_servers.stats.contextual_bandit.contextual_decision`: Thompson sampling over Beta
   posteriors of the context's rate, pooled toward each variant's global rate with an empirical-Bayes
   strength, inside the environment policy's exploration floor (`decisions.POLICIES`: with probability
   exploration_rate a uniform variant);
3. records the decision as the user's exposure in the event store (ClickHouse ingest_events, the path
   an SDK's exposure events take): event id ``<experiment>:<user>:personalized``, so a retry or a second
   decision for the same user stores nothing new and the analysis reads the user's first variant; the
   user's context goes in the event's segment, so the next decisions and the segment analysis learn from
   it. A user served before by this process gets the same variant again (source ``recorded``);
   without the context attribute, a user_id's latest stored journey (chromadb find_similar_user_journeys)
   supplies it (its device_type and traffic_source);
4. says why: the posterior means, P(best) and users per variant in the user's context, the pooling
   strength, and whether the floor or the posterior decided.

Every personalised exposure is an ordinary exposure, so analyze_experiment_performance and
analyze_segment_effects read a personalised experiment like any other (per-variant effects; segment
effects show the context effect the bandit exploits).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mcp_servers.stats.contextual_bandit import contextual_decision
from schemas.errors import Conflict, InvalidInput, NotFound, ServiceError
from schemas.servers import CHROMADB

from .base import IntelligenceBase
from .models import PersonalizedDecision
from .readout import arms_of

PERSONALIZED_TAG = "personalized"
CONTEXT_TAG = "personalize:"
CONTEXT_DIMENSIONS = ("device", "country", "source", "plan")
DEFAULT_CONTEXT = "device"
POSTERIOR_TTL_SECONDS = 5.0
SERVED_MEMORY = 100_000  # users remembered per process for sticky answers
# What a stored journey (chromadb) says about a user, as context attributes.
JOURNEY_CONTEXT = {"device_type": "device", "traffic_source": "source"}


def context_dimension(experiment: Mapping[str, Any]) -> str | None:
    """The dimension an experiment personalises on, or None when it is not marked personalised."""
    tags = [str(t) for t in experiment.get("tags") or []]
    if PERSONALIZED_TAG not in tags:
        return None
    for t in tags:
        if t.startswith(CONTEXT_TAG) and t[len(CONTEXT_TAG):] in CONTEXT_DIMENSIONS:
            return t[len(CONTEXT_TAG):]
    return DEFAULT_CONTEXT


def context_table(stats: Mapping[str, Any] | None, dimension: str, variants: list[str]
                  ) -> dict[str, list[tuple[float, float]]]:
    """(conversions, users) per variant for every value of `dimension` (conversions at most one per user)."""
    table: dict[str, list[tuple[float, float]]] = {}
    for c in (stats or {}).get("cells", []):
        if c["dimension"] != dimension or c["variant"] not in variants:
            continue
        row = table.setdefault(c["segment"], [(0.0, 0.0)] * len(variants))
        n = float(c["n"])
        row[variants.index(c["variant"])] = (min(max(float(c["sum"]), 0.0), n), n)
    return table or {"": [(0.0, 0.0)] * len(variants)}


class Personalization(IntelligenceBase):
    @property
    def _personal_cache(self) -> dict[str, tuple[float, dict[str, Any], dict[str, Any] | None]]:
        return self.__dict__.setdefault("_personalization_cache", {})

    @property
    def _served(self) -> OrderedDict[tuple[str, str], str]:
        return self.__dict__.setdefault("_personalization_served", OrderedDict())

    async def _learned(self, experiment: str) -> tuple[float, dict[str, Any], dict[str, Any] | None]:
        """(read at, registry definition, segment statistics or None without exposures), cached briefly."""
        cached = self._personal_cache.get(str(experiment))
        if cached and time.monotonic() - cached[0] < POSTERIOR_TTL_SECONDS:
            return cached
        definition = await self.peers.postgres("get_experiment", experiment=str(experiment))
        stats: dict[str, Any] | None = None
        if definition["status"] == "running" and context_dimension(definition):
            try:
                stats = await self.peers.clickhouse("get_segment_statistics", experiment=definition["key"],
                                                    metric=arms_of(definition).specs[0].name)
            except NotFound:
                stats = None  # no exposure yet: every posterior is the prior
        entry = (time.monotonic(), definition, stats)
        if len(self._personal_cache) > 1000:
            self._personal_cache.clear()
        self._personal_cache[str(experiment)] = entry
        self._personal_cache[definition["key"]] = entry
        return entry

    async def personalize_experiment_experience(self, experiment: str, user_id: str | None = None,
                                                context: Mapping[str, str] | None = None) -> PersonalizedDecision:
        """Choose a variant for a user context by the contextual bandit, record it as an exposure, say why."""
        started = time.perf_counter()
        context = dict(context or {})
        unknown = sorted(set(context) - set(CONTEXT_DIMENSIONS))
        if unknown:
            raise InvalidInput(f"context: unknown attribute(s) {unknown}; expected some of {list(CONTEXT_DIMENSIONS)}")
        if user_id is not None and not 0 < len(user_id) <= 256:
            raise InvalidInput("user_id must be 1-256 characters")
        read_at, definition, stats = await self._learned(experiment)
        key = definition["key"]
        dimension = context_dimension(definition)
        context_source = "given" if context else "none"
        if dimension and dimension not in context and user_id and self.peers.has(CHROMADB):
            known_context = await self._journey_context(user_id)
            if dimension in known_context:
                context = {**known_context, **context}
                context_source = "journey"
        if dimension is None:
            raise Conflict(f"experiment {key!r} is not marked personalised: add the tag '{PERSONALIZED_TAG}' "
                           f"(and optionally 'personalize:<device|country|source|plan>') with update_experiment")
        if definition["status"] != "running":
            raise Conflict(f"experiment {key!r} is {definition['status']}: only a running experiment is personalised")
        primary = arms_of(definition).specs[0]
        if primary.direction != "higher":
            raise Conflict(f"experiment {key!r}: personalisation maximises a rate, but its primary metric "
                           f"{primary.name!r} is lower-is-better")
        if stats and any(float(c["sum"]) > float(c["n"]) for c in stats["cells"]):
            raise Conflict(f"experiment {key!r}: personalisation needs a 0/1 primary metric per user (a rate), but "
                           f"{primary.name!r} sums to more than one per user in some segment")
        variants = [v["key"] for v in definition["variants"]]
        table = context_table(stats, dimension, variants)
        value = context.get(dimension)
        known = value if value in table else None
        total = int(sum(n for row in table.values() for _, n in row))
        seed = int(hashlib.sha256(f"{key}:{user_id or started}:{total}".encode()).hexdigest()[:12], 16)
        rate = self.policy.exploration_rate
        d = contextual_decision(table, known, exploration_rate=rate, seed=seed)
        if d.error:
            raise ServiceError(f"the contextual bandit could not decide: {d.error}")
        p = d.posterior
        chosen = variants[d.arm]
        source = "exploration" if d.explored else "contextual_bandit"
        prior = self._served.get((key, user_id)) if user_id else None
        if prior is not None:
            chosen, source = prior, "recorded"
        recorded, event_id = False, None
        if user_id:
            event_id = f"{key}:{user_id}:personalized"
            if prior is None:
                await self._record_exposure(key, user_id, chosen, context, event_id, source)
                recorded = True
                self._served[(key, user_id)] = chosen
                if len(self._served) > SERVED_MEMORY:
                    self._served.popitem(last=False)
        means = dict(zip(variants, p.means, strict=True))
        best = dict(zip(variants, d.best_arm_probabilities, strict=True))
        where = f"{dimension}={known}" if known is not None else (
            f"{dimension}={value} (not seen yet: the global posterior)" if value else
            f"no {dimension} given (the global posterior)")
        ranked = ", ".join(f"{v} {means[v]:.2%}" for v in sorted(variants, key=lambda v: -means[v]))
        if source == "recorded":
            why = f"{user_id} was served {chosen} before; a user keeps the variant of their first exposure."
        elif source == "exploration":
            why = (f"Exploration floor ({rate:.0%} of decisions go to a uniformly drawn variant under the "
                   f"{self.policy.environment} policy) chose {chosen}; posterior means in {where}: {ranked}.")
        else:
            why = (f"Thompson draw in {where} chose {chosen}: posterior means {ranked}; P(best) "
                   f"{best[chosen]:.0%} for {chosen} from {sum(p.context_units)} users in this context, pooled "
                   f"toward the global rates with a weight of {min(p.strength):.0f}-{max(p.strength):.0f} users.")
        if user_id is None:
            why += " No user_id: nothing was recorded (serve it as a preview only)."
        return PersonalizedDecision(
            experiment_key=key, user_id=user_id, variant=chosen, source=source, context=context,  # type: ignore[arg-type]
            context_dimension=dimension, context_value=known, context_source=context_source,  # type: ignore[arg-type]
            posterior_means=means,
            global_means=dict(zip(variants, p.global_means, strict=True)), best_arm_probabilities=best,
            context_users=dict(zip(variants, p.context_units, strict=True)),
            pooling_strength=dict(zip(variants, p.strength, strict=True)), exploration_rate=rate,
            recorded=recorded, event_id=event_id, why=why, data_age_seconds=round(time.monotonic() - read_at, 3),
            elapsed_ms=(time.perf_counter() - started) * 1000)

    async def _journey_context(self, user_id: str) -> dict[str, str]:
        """The context attributes of the user's latest stored journey ({} when none or memory is unavailable)."""
        try:
            hits = (await self.peers.chroma("find_similar_user_journeys", query="user journey",
                                            where={"user_id": user_id}, limit=20))["hits"]
        except ServiceError:
            return {}
        if not hits:
            return {}
        latest = max(hits, key=lambda h: ((h.get("metadata") or {}).get("started_at") or 0, h["id"]))
        meta = latest.get("metadata") or {}
        return {attr: str(meta[k])[:64] for k, attr in JOURNEY_CONTEXT.items() if meta.get(k)}

    async def _record_exposure(self, key: str, user_id: str, variant: str, context: Mapping[str, str],
                               event_id: str, source: str) -> None:
        event = {"event_id": event_id, "event_type": "exposure",
                 "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "user_id": user_id,
                 "experiment_id": key, "variant": variant, "segment": dict(context),
                 "properties": {"assigned_by": "personalize_experiment_experience", "source": source}}
        await self.peers.clickhouse("ingest_events", events=[event], idempotency_token=event_id)
