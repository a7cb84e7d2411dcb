"""Who responds differently (issue 22): per-segment effects with heterogeneity flags, and interactions
between concurrent experiments that share users.

    analyze_segment_effects      per treatment arm: the primary (or named) metric's effect in every segment
                                 (device, country, source, plan) with Holm/BH across segments, the
                                 segment-vs-complement test (Bonferroni) gated by Cochran's Q per dimension
    find_experiment_interactions every running experiment against every other it shares users with: the 2×2
                                 interaction contrast on its primary metric, Holm at 1% per experiment
    analyze_experiment_performance  the analysis (performance.py) plus both, in its result and narrative

Data: the event store's get_segment_statistics and get_interaction_statistics (sufficient statistics per
cell); the registry for each experiment's arms and status. Numbers come from `mcp_servers.stats`
(`heterogeneity`, `interactions`); sentences are templates over them. The flagged pairs of the latest
analyses and scan are kept in this process (`interaction_flags`), which router_status shows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mcp_servers.stats import statistics as st
from mcp_servers.stats.heterogeneity import SegmentInput, difference, segment_effects
from mcp_servers.stats.interactions import INTERACTION_ALPHA, flag_interactions, interaction_contrast
from schemas.errors import Conflict, InvalidInput, NotFound, ServiceError

from .models import (
    AnalysisOptions,
    ArmSegmentEffects,
    DimensionQ,
    ExperimentAnalysis,
    InteractionPair,
    InteractionReport,
    InteractionScan,
    SegmentEffectRow,
    SegmentEffects,
)
from .narrative import pct
from .peers import gathering
from .performance import PerformanceAnalysis
from .readout import analysis_options, arms_of

DEFAULT_MIN_SEGMENT_USERS = 100  # per arm: below it a segment's effect is noise, not evidence
SCAN_LIMIT = 50  # running experiments scanned for interactions


def _num(x: float) -> str:
    return f"{x:+.4g}"


# ---------------------------------------------------------------- pure: statistics → reports


def segment_report(key: str, metric: str, control: str, treatments: Sequence[str], stats: Mapping[str, Any], *,
                   alpha: float = 0.05, correction: str = "holm",
                   min_users: int = DEFAULT_MIN_SEGMENT_USERS, elapsed_ms: float = 0.0) -> SegmentEffects:
    """Segment effects per treatment arm from get_segment_statistics' cells."""
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for c in stats["cells"]:
        cells.setdefault((c["dimension"], c["segment"]), {})[c["variant"]] = c
    arms: list[ArmSegmentEffects] = []
    narrative: list[str] = []
    for t in treatments:
        inputs: list[SegmentInput] = []
        rows: dict[tuple[str, str], tuple[int, int, float, float]] = {}
        for (dim, seg), by_variant in sorted(cells.items()):
            c_cell, t_cell = by_variant.get(control), by_variant.get(t)
            if not c_cell or not t_cell or min(c_cell["n"], t_cell["n"]) < min_users:
                continue
            cs = st.SampleMeanStatistic(c_cell["n"], c_cell["sum"], c_cell["sum_squares"])
            ts = st.SampleMeanStatistic(t_cell["n"], t_cell["sum"], t_cell["sum_squares"])
            diff = difference(ts, cs)
            if diff is None:
                continue
            inputs.append(SegmentInput(dim, seg, diff[0], diff[1], c_cell["n"] + t_cell["n"], cs.mean))
            rows[(dim, seg)] = (c_cell["n"], t_cell["n"], cs.mean, ts.mean)
        overall = _overall(cells, control, t)
        if not inputs:
            arms.append(ArmSegmentEffects(variant=t, overall_effect=overall[0], overall_relative_effect=overall[1],
                                          segments=[], dimensions=[], differing=[],
                                          error=f"no segment has {min_users} users in both {control} and {t}"))
            narrative.append(f"{t} on {metric}: no segment has {min_users} users in both arms yet, so no segment "
                             "effect is tested.")
            continue
        a = segment_effects(inputs, alpha=alpha, correction=correction)
        seg_rows = []
        for s in a.segments:
            n_c, n_t, m_c, m_t = rows[(s.dimension, s.segment)]
            seg_rows.append(SegmentEffectRow(
                dimension=s.dimension, segment=s.segment, control_users=n_c, treatment_users=n_t, control_mean=m_c,
                treatment_mean=m_t, effect=s.effect, relative_effect=s.relative_effect, ci=s.ci, p_value=s.p_value,
                p_adjusted=s.p_adjusted, significant=s.significant, complement_effect=s.complement_effect,
                heterogeneity_p=s.heterogeneity_p, heterogeneity_p_adjusted=s.heterogeneity_p_adjusted,
                differs=s.differs))
        dims = [DimensionQ(dimension=d.dimension, segments=d.segments, pooled_effect=d.pooled_effect, q=d.q, df=d.df,
                           p_value=d.p_value, p_adjusted=d.p_adjusted, i_squared=d.i_squared, flagged=d.flagged)
                for d in a.dimensions]
        differing = [f"{s.dimension}={s.segment}" for s in a.segments if s.differs]
        arms.append(ArmSegmentEffects(variant=t, overall_effect=overall[0], overall_relative_effect=overall[1],
                                      segments=seg_rows, dimensions=dims, differing=differing, error=a.error))
        narrative.extend(_segment_sentences(t, metric, a, overall[0]))
    return SegmentEffects(experiment_key=key, metric=metric, control=control, correction=correction,  # type: ignore[arg-type]
                          alpha=alpha, min_users=min_users, arms=arms, narrative=narrative, elapsed_ms=elapsed_ms)


def _overall(cells: Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]], control: str, t: str
             ) -> tuple[float | None, float | None]:
    """The overall effect from one dimension's cells (every user has a value of some dimension, or not:
    take the dimension covering the most users of both arms)."""
    best: tuple[int, float, float] | None = None
    dims = {d for d, _ in cells}
    for dim in sorted(dims):
        n = {control: 0, t: 0}
        s = {control: 0.0, t: 0.0}
        for (d, _), by_variant in cells.items():
            if d != dim:
                continue
            for v in (control, t):
                if v in by_variant:
                    n[v] += by_variant[v]["n"]
                    s[v] += by_variant[v]["sum"]
        if n[control] and n[t] and (best is None or n[control] + n[t] > best[0]):
            best = (n[control] + n[t], s[control] / n[control], s[t] / n[t])
    if best is None:
        return None, None
    effect = best[2] - best[1]
    return effect, effect / best[1] if best[1] else None


def _segment_sentences(t: str, metric: str, a: Any, overall: float | None) -> list[str]:
    out = []
    m = a.heterogeneity_family_size
    for s in a.segments:
        if s.differs:
            q = next(d for d in a.dimensions if d.dimension == s.dimension)
            out.append(
                f"{t} on {metric}: {s.dimension}={s.segment} responds differently: effect {_num(s.effect)} "
                f"({pct(s.relative_effect)}) vs {_num(s.complement_effect)} in the rest of {s.dimension} "
                f"(heterogeneity p = {s.heterogeneity_p_adjusted:.2g}, Bonferroni over {m} segments; "
                f"Cochran's Q = {q.q:.1f} on {q.df} df, p = {q.p_adjusted:.2g}, I² = {q.i_squared:.0%}).")
    if not any(s.differs for s in a.segments):
        top = max(a.segments, key=lambda s: abs(s.heterogeneity_z or 0.0))
        n_dims = len({s.dimension for s in a.segments})
        out.append(f"{t} on {metric}: no segment responds differently ({len(a.segments)} segment"
                   f"{'s' if len(a.segments) != 1 else ''} in {n_dims} dimension{'s' if n_dims != 1 else ''} "
                   "tested; the largest departure, "
                   f"{top.dimension}={top.segment} at {_num(top.effect)} vs {_num(overall or 0.0)} overall, "
                   f"has adjusted p = {top.heterogeneity_p_adjusted if top.heterogeneity_p_adjusted is not None else 1:.2g}).")
    significant = [s for s in a.segments if s.significant]
    if significant:
        names = ", ".join(f"{s.dimension}={s.segment} ({_num(s.effect)})" for s in significant[:5])
        out.append(f"{t} on {metric}: the effect is significant ({a.correction}) in {len(significant)} of "
                   f"{len(a.segments)} segments: {names}{'…' if len(significant) > 5 else ''}.")
    return out


def interaction_report(key: str, metric: str, control: str, treatments: Sequence[str], stats: Mapping[str, Any],
                       others: Mapping[str, tuple[str, list[str]] | str], *,
                       alpha: float = INTERACTION_ALPHA) -> InteractionReport:
    """2×2 contrasts of this experiment's arms × each other running experiment's arms (Holm across all).

    ``others`` maps an other experiment's key to (its control, its treatments), or to a string saying why
    it is left out (not running, unknown)."""
    by_other: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for c in stats["cells"]:
        by_other.setdefault(c["other_experiment_key"], {})[(c["variant"], c["other_variant"])] = c
    tests: list[tuple[str, str, str, int, Any]] = []
    skipped: list[str] = []
    for other in stats["shared_users"]:
        info = others.get(other, "not in the registry")
        if isinstance(info, str):
            skipped.append(f"{other}: {info}")
            continue
        o_control, o_treatments = info
        cells = by_other.get(other, {})
        for t in treatments:
            for ot in o_treatments:
                quad = [cells.get(k) for k in ((control, o_control), (control, ot), (t, o_control), (t, ot))]
                if any(q is None for q in quad):
                    skipped.append(f"{other}: too few shared users in some cell of {t} x {ot}")
                    continue
                table = [[st.SampleMeanStatistic(q["n"], q["sum"], q["sum_squares"]) for q in quad[:2]],  # type: ignore[index]
                         [st.SampleMeanStatistic(q["n"], q["sum"], q["sum_squares"]) for q in quad[2:]]]  # type: ignore[index]
                r = interaction_contrast(table)
                if r.error:
                    skipped.append(f"{other}: {t} x {ot}: {r.error.split(':')[0]}")
                    continue
                tests.append((other, t, ot, sum(q["n"] for q in quad), r))  # type: ignore[index]
    flags = flag_interactions([x[4] for x in tests], alpha) if tests else None
    pairs = []
    for i, (other, t, ot, shared, r) in enumerate(tests):
        pairs.append(InteractionPair(
            experiment_key=key, other_experiment_key=other, variant=t, other_variant=ot, metric=metric,
            shared_users=shared, contrast=r.contrast, relative_contrast=r.relative_contrast, effect_with=r.effect_with,
            effect_without=r.effect_without, ci=r.ci, p_value=r.p_value,
            p_adjusted=flags.adjusted_p_values[i] if flags else 1.0, flagged=bool(flags and flags.rejected[i])))
    flagged = [p for p in pairs if p.flagged]
    narrative = [interaction_sentence(p, control, others) for p in flagged]
    tested = len({p.other_experiment_key for p in pairs})
    if pairs and not flagged:
        narrative.append(f"No interaction on {metric} with the {tested} running experiment{'s' if tested != 1 else ''} "
                         f"sharing users ({len(pairs)} 2x2 contrasts, Holm at {alpha:.0%}; the smallest adjusted "
                         f"p is {min(p.p_adjusted for p in pairs):.2g}).")
    return InteractionReport(experiment_key=key, metric=metric, alpha=alpha, other_experiments=tested, pairs=pairs,
                             flagged=flagged, skipped=skipped, narrative=narrative)


def interaction_sentence(p: InteractionPair, control: str, others: Mapping[str, Any] | None = None) -> str:
    info = (others or {}).get(p.other_experiment_key)
    o_control = info[0] if isinstance(info, tuple) else "its control"
    return (f"Interaction with {p.other_experiment_key}: {p.variant}'s effect on {p.metric} is {_num(p.effect_with)} "
            f"for users also in {p.other_variant} and {_num(p.effect_without)} for users in {o_control} "
            f"(contrast {_num(p.contrast)}, {pct(p.relative_contrast)} of the both-control mean; Holm p = "
            f"{p.p_adjusted:.2g} over {p.shared_users} shared users): the two experiments' effects do not add up, "
            "so judge them together.")


# ---------------------------------------------------------------- the capability


class SegmentsAndInteractions(PerformanceAnalysis):
    @property
    def interaction_flags(self) -> dict[str, list[InteractionPair]]:
        """Flagged pairs per experiment from the latest analysis or scan in this process."""
        return self.__dict__.setdefault("_interaction_flags", {})

    async def analyze_segment_effects(self, experiment_id: str, metric: str | None = None, *,
                                      correction: str = "holm", alpha: float = 0.05,
                                      min_users: int = DEFAULT_MIN_SEGMENT_USERS) -> SegmentEffects:
        """Per-segment effects of one metric (default: the primary) with heterogeneity flags."""
        if correction not in ("holm", "benjamini-hochberg"):
            raise InvalidInput(f"correction must be 'holm' or 'benjamini-hochberg', got {correction!r}")
        experiment = await self.peers.postgres("get_experiment", experiment=str(experiment_id))
        arms = arms_of(experiment)
        name = metric or arms.specs[0].name
        return await self._segments(arms.key, name, arms.control, arms.treatments, alpha=alpha,
                                    correction=correction, min_users=min_users)

    async def _segments(self, key: str, metric: str, control: str, treatments: Sequence[str], *, alpha: float,
                        correction: str, min_users: int) -> SegmentEffects:
        started = time.perf_counter()
        try:
            stats = await self.peers.clickhouse("get_segment_statistics", experiment=key, metric=metric,
                                                min_users=min(min_users, 100_000))
        except NotFound:
            raise NotFound(f"no exposed users for experiment {key!r} yet: segment effects need data") from None
        return segment_report(key, metric, control, treatments, stats, alpha=alpha, correction=correction,
                              min_users=min_users, elapsed_ms=(time.perf_counter() - started) * 1000)

    async def _interactions(self, experiment: Mapping[str, Any], metric: str,
                            alpha: float = INTERACTION_ALPHA) -> InteractionReport:
        arms = arms_of(experiment)
        stats = await self.peers.clickhouse("get_interaction_statistics", experiment=arms.key, metric=metric)
        others: dict[str, tuple[str, list[str]] | str] = {}

        async def one(other: str) -> None:
            try:
                e = await self.peers.postgres("get_experiment", experiment=other)
            except NotFound:
                others[other] = "not in the registry"
                return
            if e["status"] != "running":
                others[other] = f"{e['status']}, not running"
                return
            o = arms_of(e)
            others[other] = (o.control, o.treatments)

        async with gathering() as tg:
            for other in stats["shared_users"]:
                tg.start_soon(one, other)
        report = interaction_report(arms.key, metric, arms.control, arms.treatments, stats, others, alpha=alpha)
        self.interaction_flags[arms.key] = report.flagged
        return report

    async def find_experiment_interactions(self, refresh: bool = True) -> InteractionScan:
        """Scan every running experiment for interactions with the others it shares users with."""
        if refresh:
            page = await self.peers.postgres("list_experiments", status=["running"], limit=SCAN_LIMIT)
            experiments = page.get("items") or []
            flags: dict[str, list[InteractionPair]] = {}

            async def one(summary: Mapping[str, Any]) -> None:
                try:
                    e = await self.peers.postgres("get_experiment", experiment=summary["key"])
                    report = await self._interactions(e, arms_of(e).specs[0].name)
                except (NotFound, Conflict, InvalidInput):
                    return  # no exposures yet, or no control: nothing to test
                flags[e["key"]] = report.flagged

            async with gathering() as tg:
                for summary in experiments:
                    tg.start_soon(one, summary)
            self.interaction_flags.clear()
            self.interaction_flags.update(flags)
            self.__dict__["_interaction_scan"] = (datetime.now(UTC), len(experiments))
        scanned_at, count = self.__dict__.get("_interaction_scan", (None, 0))
        seen: set[frozenset[tuple[str, str]]] = set()
        flagged: list[InteractionPair] = []
        for pairs in self.interaction_flags.values():
            for p in pairs:
                both = frozenset({(p.experiment_key, p.variant), (p.other_experiment_key, p.other_variant)})
                if both not in seen:  # A×B and B×A are one pair
                    seen.add(both)
                    flagged.append(p)
        narrative = [interaction_sentence(p, "") for p in flagged]
        if not flagged:
            narrative.append(f"No interacting pair among {count} running experiments (Holm at "
                             f"{INTERACTION_ALPHA:.0%} per experiment)." if scanned_at else
                             "No scan yet: call find_experiment_interactions with refresh=true.")
        return InteractionScan(scanned_at=scanned_at, experiments=count, flagged=flagged, narrative=narrative)

    async def analyze_experiment_performance(self, experiment_id: str,
                                             options: AnalysisOptions | Mapping[str, Any] | None = None
                                             ) -> ExperimentAnalysis:
        """The analysis (performance.py), plus segment effects and interactions in its result and narrative."""
        opts = analysis_options(options)
        result = await super().analyze_experiment_performance(experiment_id, opts)
        if not (opts.segment_effects or opts.interactions) or not any(v.users for v in result.variants):
            return result
        started = time.perf_counter()
        experiment = await self.peers.postgres("get_experiment", experiment=result.experiment_key)
        arms = arms_of(experiment)

        async def segments() -> None:
            try:
                result.segments = await self._segments(arms.key, arms.specs[0].name, arms.control, arms.treatments,
                                                       alpha=opts.alpha, correction="holm",
                                                       min_users=DEFAULT_MIN_SEGMENT_USERS)
            except ServiceError as exc:
                result.notes.append(f"Segment effects unavailable: {exc}")

        async def interactions() -> None:
            try:
                result.interactions = await self._interactions(experiment, arms.specs[0].name)
            except ServiceError as exc:
                result.notes.append(f"Interactions unavailable: {exc}")

        async with gathering() as tg:
            if opts.segment_effects:
                tg.start_soon(segments)
            if opts.interactions:
                tg.start_soon(interactions)
        if result.segments:
            result.narrative.extend(s for s in result.segments.narrative if "responds differently:" in s)
        if result.interactions:
            result.narrative.extend(result.interactions.narrative[:len(result.interactions.flagged)])
        result.timings_ms["segments_interactions_ms"] = round((time.perf_counter() - started) * 1000, 3)
        result.elapsed_ms += (time.perf_counter() - started) * 1000
        return result
