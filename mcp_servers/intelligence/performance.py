"""analyze_experiment_performance: fetch what one analysis needs from the peers, then read it out.

The fetching, concurrency and timings live here; the computation is `readout.read_out` (pure).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from schemas.errors import BackendUnavailable, ServiceError
from schemas.servers import CHROMADB

from .base import ACTOR, IntelligenceBase
from .models import AnalysisOptions, ExperimentAnalysis, SimilarExperiment
from .peers import gathering
from .readout import (
    Analysed,
    analysis_options,
    arms_of,
    as_utc,
    experiment_text,
    no_statistics,
    read_out,
    weight_history,
)

SIMILAR_CACHE_SECONDS = 300.0
# Every exposure an event store can hold lies between these (ClickHouse DateTime64(3) spans 1900-2299).
ALL_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


class PerformanceAnalysis(IntelligenceBase):
    async def analyze_experiment_performance(self, experiment_id: str,
                                             options: AnalysisOptions | Mapping[str, Any] | None = None
                                             ) -> ExperimentAnalysis:
        """Per metric and arm: lifts with intervals, fixed and sequential p, chance to win, CUPED, SRM,
        multiple testing, power, guardrails; a verdict with the rule that produced it; similar past experiments."""
        opts = analysis_options(options)
        analysed = await self._analyze(experiment_id, opts)
        if opts.record_decision:
            analysed.result.decision_id = await self._record_verdict(analysed)
        return analysed.result

    async def _analyze(self, experiment_id: str, opts: AnalysisOptions) -> Analysed:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        experiment = await self.peers.postgres("get_experiment", experiment=str(experiment_id), include_change_log=True)
        timings["registry_ms"] = (time.perf_counter() - started) * 1000
        arms = arms_of(experiment)
        stats_args = {"experiment": arms.key, "metrics": [s.name for s in arms.specs], "cuped": opts.cuped,
                      "cuped_lookback_days": opts.cuped_lookback_days,
                      "start_date": opts.start_date.isoformat() if opts.start_date else None,
                      "end_date": opts.end_date.isoformat() if opts.end_date else None}
        found: dict[str, Any] = {}
        notes: list[str] = []

        async def load_stats() -> None:
            t0 = time.perf_counter()
            try:
                found["stats"] = await self.peers.clickhouse("get_variant_statistics", **stats_args)
            except ServiceError as exc:
                # The event store refuses statistics for a key it has no exposure of; for an experiment the
                # registry knows, that is no data yet (the no_data verdict), whatever its message says.
                if isinstance(exc, BackendUnavailable) or not await self._never_exposed(arms.key):
                    raise
                found["stats"] = no_statistics(experiment)
            timings["statistics_ms"] = (time.perf_counter() - t0) * 1000

        async def load_similar() -> None:
            if opts.similar_experiments <= 0 or not self.peers.has(CHROMADB):
                return
            t0 = time.perf_counter()
            try:
                found["similar"] = await self._similar_experiments(experiment, opts.similar_experiments)
            except ServiceError as exc:
                notes.append(f"Similar experiments unavailable: {exc}")
            timings["memory_ms"] = (time.perf_counter() - t0) * 1000

        async with gathering() as tg:
            tg.start_soon(load_stats)
            tg.start_soon(load_similar)
        computing = time.perf_counter()
        st = found["stats"]
        per_period = await self._exposures_by_period(experiment, st)
        analysed = read_out(experiment, arms, st, opts, per_period=per_period, similar=found.get("similar", []),
                            notes=notes)
        result = analysed.result
        timings["compute_ms"] = (time.perf_counter() - computing) * 1000
        result.timings_ms = {k: round(v, 3) for k, v in timings.items()}
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return analysed

    async def _never_exposed(self, key: str) -> bool:
        """True when the event store holds no exposure of `key` at all (False when it cannot tell)."""
        try:
            answer = await self.peers.clickhouse("get_exposures_by_period", experiment=key,
                                                 boundaries=[t.isoformat() for t in ALL_TIME])
        except ServiceError:
            return False
        return not any(any(p["users"].values()) for p in answer["periods"])

    async def _exposures_by_period(self, experiment: dict[str, Any], st: Mapping[str, Any]
                                   ) -> list[dict[str, int]] | None:
        """Users per variant in each period between weight changes inside the window; None without such a change."""
        start, end = as_utc(st["window_start"]), as_utc(st["window_end"])
        cuts = weight_history(experiment).cuts(start, end)
        if not cuts:
            return None
        result = await self.peers.clickhouse("get_exposures_by_period", experiment=experiment["key"],
                                             boundaries=[b.isoformat() for b in [start, *cuts, end]])
        return [p["users"] for p in result["periods"]]

    async def _similar_experiments(self, experiment: Mapping[str, Any], n: int) -> list[SimilarExperiment]:
        text = experiment_text(experiment)
        cached = self._similar_cache.get((text, n))
        if cached and time.monotonic() - cached[0] < SIMILAR_CACHE_SECONDS:
            return cached[1]
        hits = (await self.peers.chroma("semantic_experiment_search", query=text, limit=min(n + 1, 100)))["hits"]
        out = []
        for hit in hits:
            meta = hit.get("metadata") or {}
            key = meta.get("experiment_key") or hit["id"]
            if key == experiment.get("key"):
                continue
            out.append(SimilarExperiment(experiment_key=key, similarity=hit["similarity"], name=meta.get("name"),
                                         outcome=meta.get("outcome"), lift=meta.get("lift"),
                                         p_value=meta.get("p_value"), winner=meta.get("winner")))
        if len(self._similar_cache) > 1000:
            self._similar_cache.clear()
        self._similar_cache[(text, n)] = (time.monotonic(), out[:n])
        return out[:n]

    async def _record_verdict(self, a: Analysed) -> int | None:
        r = a.result
        inputs = {
            "verdict": r.verdict.verdict, "rule_id": r.verdict.rule_id, "variant": r.verdict.variant,
            "days_left": r.verdict.days_left, "srm_p": r.srm.p_value,
            "users": {v.key: v.users for v in r.variants},
            "window": [r.window_start.isoformat(), r.window_end.isoformat()],
            "metrics": [{"metric": m.metric, "role": m.role, "variant": m.variant, "relative_lift": m.relative_lift,
                         "ci": list(m.relative_ci_sequential), "p": m.p_value, "p_sequential": m.p_value_sequential,
                         "p_adjusted": m.p_value_adjusted, "chance_to_win": m.chance_to_win, "power": m.power,
                         "guardrail": m.guardrail.status if m.guardrail else None} for m in r.metrics],
            "options": r.options.model_dump(mode="json", exclude={"record_decision", "similar_experiments"}),
        }
        reasoning = " ".join(r.narrative[:1] + [f"Rule: {r.verdict.rule}"])
        return await self._record(a.key, f"verdict_{r.verdict.verdict}", reasoning, inputs, r.verdict.confidence,
                                  ACTOR, False)
