"""plot_experiment: a PNG of the cumulative lift per treatment with its always-valid band, and the daily metric
per variant with a short forecast (the drawing is `charts`)."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

import anyio

from schemas.errors import InvalidInput, NotFound, ServiceError

from . import analysis as calc
from . import charts
from .models import AnalysisOptions, DailySeries, LiftSeries, MetricResult, PlotSummary
from .narrative import VERDICT_WORDS, pct
from .performance import PerformanceAnalysis
from .readout import Analysed, MetricSpec

log = logging.getLogger(__name__)

MAX_PLOT_DAYS = 60


class ExperimentPlots(PerformanceAnalysis):
    async def plot_experiment(self, experiment_id: str, metric: str | None = None) -> tuple[bytes, PlotSummary]:
        """PNG of the cumulative lift (always-valid band) per treatment over time and the daily metric per variant;
        when a guardrail decided the verdict, a panel of that guardrail with its margin."""
        opts = AnalysisOptions(record_decision=False, similar_experiments=0, cuped=False)
        a = await self._analyze(experiment_id, opts)
        if a.verdict.rule_id == "no_data":
            raise NotFound(f"nothing to plot for {a.key}: {a.verdict.rule}")
        spec = next((s for s in a.specs if s.name == (metric or a.specs[0].name)), None)
        if spec is None:
            raise InvalidInput(f"{metric!r} is not a metric of {a.key}; its metrics: {[s.name for s in a.specs]}")
        decided_by, guard = decision_metric(a)
        guard_spec = next((s for s in a.specs if guard and s.name == guard.metric and s.name != spec.name), None)
        plotted = [s for s in (spec, guard_spec) if s is not None]
        first = a.result.window_start.date()
        last = (a.result.window_end - timedelta(milliseconds=1)).date()
        span = (last - first).days + 1
        step = max(1, math.ceil(span / MAX_PLOT_DAYS))
        days_list = [first + timedelta(days=k) for k in range(0, span, step)]
        if days_list[-1] != last:
            days_list.append(last)
        math_opts = calc.Settings(alpha=opts.alpha, cuped=False, sequential=True)
        series: dict[tuple[str, str], dict[str, list]] = {
            (m.name, t): {"days": [], "lift": [], "lo": [], "hi": [], "users": []} for m in plotted for t in a.treatments}
        for day in days_list:
            st = await self.peers.clickhouse("get_variant_statistics", experiment=a.key,
                                             metrics=[m.name for m in plotted], start_date=first.isoformat(),
                                             end_date=day.isoformat())
            rows = {(s["variant"], s["metric"]): s for s in st["statistics"]}
            for m in plotted:
                for t in a.treatments:
                    s = series[(m.name, t)]
                    s["days"].append(day.isoformat())
                    c_row, t_row = rows.get((a.control, m.name)), rows.get((t, m.name))
                    lift = lo = hi = None
                    users = int(t_row["n"]) if t_row else 0
                    if c_row and t_row and min(int(c_row["n"]), int(t_row["n"])) >= 2:
                        pair = calc.compare_pair(m.name, m.role, m.direction, t, a.control, c_row, t_row, math_opts,
                                                 n_star=a.n_star, margin=m.margin)
                        users = pair.n + pair.control_n
                        if not pair.error:
                            lift = pair.sequential.effect
                            lo, hi = calc.interval(pair.sequential.ci)
                    for name, value in (("lift", lift), ("lo", lo), ("hi", hi), ("users", users)):
                        s[name].append(value)

        def lifts(m: MetricSpec) -> list[LiftSeries]:
            return [LiftSeries(variant=t, days=s["days"], cumulative_lift=s["lift"], band_low=s["lo"],
                               band_high=s["hi"], users=s["users"])
                    for (name, t), s in series.items() if name == m.name]

        daily_series: list[DailySeries] = []
        partial_days: list[str] = []
        daily_source = None
        try:
            trend = await self.peers.clickhouse("predict_experiment_trends", experiment=a.key, metric=spec.name,
                                                days_ahead=3)
            partial_days = [str(d) for d in trend.get("partial_days", [])]
            daily_series = [DailySeries(
                variant=v["variant"], days=[p["date"] for p in v["history"]], values=[p["value"] for p in v["history"]],
                partial=[bool(p.get("partial")) for p in v["history"]],
                forecast_days=[p["date"] for p in v["forecast"]], forecast=[p["predicted"] for p in v["forecast"]],
                forecast_low=[p["lower"] for p in v["forecast"]], forecast_high=[p["upper"] for p in v["forecast"]])
                for v in trend["variants"]]
            daily_source = (f"ClickHouse daily rollup ({trend['statistic']}); forecast: {trend['model']}"
                            + (f"; partial days (drawn hollow, not fitted): {', '.join(partial_days)}"
                               if partial_days else ""))
        except ServiceError as exc:
            log.info("daily panel skipped for %s: %s", a.key, exc)
        band = "shaded: 95% always-valid confidence sequence"
        lift_series = lifts(spec)
        guard_series = lifts(guard_spec) if guard_spec else []
        margins = {m.metric: m.guardrail.margin for m in a.result.metrics if m.guardrail is not None}
        headline = verdict_headline(a, decided_by)
        guard_panel = None
        if guard_spec is not None:
            guard_panel = {
                "metric": guard_spec.name, "margin": margins.get(guard_spec.name),
                "lower_is_better": guard_spec.direction == "lower",
                "title": f"guardrail {guard_spec.name} ({guard_spec.direction} is better): it decided the verdict",
                "series": [s.model_dump() for s in guard_series]}
        top_title = f"{a.result.name}: {spec.name} ({spec.direction} is better)"
        if spec.role == "guardrail":
            top_title += f", guardrail (margin {margins.get(spec.name, 0):.0%})"
        panels = [f"lift:{spec.name}"] + ([f"guardrail:{guard_spec.name}"] if guard_spec else []) \
            + ([f"daily:{spec.name}"] if daily_series else [])
        png = await anyio.to_thread.run_sync(lambda: charts.lift_chart(
            title=top_title, metric=spec.name, control=a.control,
            series=[s.model_dump() for s in lift_series],
            daily={d.variant: list(zip(d.days, d.values, d.partial, strict=True)) for d in daily_series} or None,
            forecast={d.variant: list(zip(d.forecast_days, d.forecast, d.forecast_low, d.forecast_high, strict=True))
                      for d in daily_series},
            band_label=band, headline=headline, guardrail=guard_panel))
        summary = PlotSummary(
            experiment_key=a.key, metric=spec.name, direction=spec.direction, control=a.control,  # type: ignore[arg-type]
            band=band, series=lift_series, daily_source=daily_source,
            final_lift={s.variant: next((x for x in reversed(s.cumulative_lift) if x is not None), None)
                        for s in lift_series},
            verdict=a.verdict.verdict, rule_id=a.verdict.rule_id, headline=headline, decided_by=decided_by,
            panels=panels, guardrail_metric=guard_spec.name if guard_spec else None,
            guardrail_margin=margins.get(guard_spec.name) if guard_spec else None, guardrail_series=guard_series,
            daily=daily_series, partial_days=partial_days,
            png_bytes=0)
        summary.png_bytes = len(png)
        return png, summary


def decision_metric(a: Analysed) -> tuple[str | None, MetricResult | None]:
    """The metric that decided the verdict, and the failing guardrail when a guardrail did (roll back or remove)."""
    v = a.verdict
    if v.rule_id == "guardrail_failure":
        failing = [m for m in a.result.metrics if m.role == "guardrail" and m.variant == v.variant
                   and m.guardrail is not None and m.guardrail.status == "fail"]
        if failing:
            worst = min(failing, key=lambda m: m.guardrail.p_harm if m.guardrail else 1.0)
            return worst.metric, worst
    if v.rule_id in ("srm_mismatch", "analysis_error"):
        return None, None
    return a.specs[0].name, None


def verdict_headline(a: Analysed, decided_by: str | None) -> str:
    """One line above the chart: the verdict, for which arm, and the metric that decided it."""
    v = a.verdict
    words = VERDICT_WORDS[v.verdict] + (f" {v.variant}" if v.variant and v.verdict in ("ship", "roll_back") else "")
    if decided_by is None:
        return f"Verdict: {words} ({v.rule_id})"
    m = next((m for m in a.result.metrics if m.metric == decided_by and m.variant == v.variant), None)
    role = "guardrail " if m is not None and m.role == "guardrail" else ""
    lift = f" {pct(m.relative_lift)}" if m is not None and not m.error else ""
    return f"Verdict: {words} ({v.rule_id}), decided by {role}{decided_by}{lift}"
