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
from .models import AnalysisOptions, LiftSeries, PlotSummary
from .performance import PerformanceAnalysis

log = logging.getLogger(__name__)

MAX_PLOT_DAYS = 60


class ExperimentPlots(PerformanceAnalysis):
    async def plot_experiment(self, experiment_id: str, metric: str | None = None) -> tuple[bytes, PlotSummary]:
        """PNG of the cumulative lift (always-valid band) per treatment over time and the daily metric per variant."""
        opts = AnalysisOptions(record_decision=False, similar_experiments=0, cuped=False)
        a = await self._analyze(experiment_id, opts)
        if a.verdict.rule_id == "no_data":
            raise NotFound(f"nothing to plot for {a.key}: {a.verdict.rule}")
        spec = next((s for s in a.specs if s.name == (metric or a.specs[0].name)), None)
        if spec is None:
            raise InvalidInput(f"{metric!r} is not a metric of {a.key}; its metrics: {[s.name for s in a.specs]}")
        first = a.result.window_start.date()
        last = (a.result.window_end - timedelta(milliseconds=1)).date()
        span = (last - first).days + 1
        step = max(1, math.ceil(span / MAX_PLOT_DAYS))
        days_list = [first + timedelta(days=k) for k in range(0, span, step)]
        if days_list[-1] != last:
            days_list.append(last)
        math_opts = calc.Settings(alpha=opts.alpha, cuped=False, sequential=True)
        series: dict[str, dict[str, list]] = {t: {"days": [], "lift": [], "lo": [], "hi": [], "users": []}
                                              for t in a.treatments}
        for day in days_list:
            st = await self.peers.clickhouse("get_variant_statistics", experiment_id=a.key, metrics=[spec.name],
                                             start_date=first.isoformat(), end_date=day.isoformat())
            rows = {s["variant"]: s for s in st["statistics"]}
            for t in a.treatments:
                s = series[t]
                s["days"].append(day.isoformat())
                c_row, t_row = rows.get(a.control), rows.get(t)
                lift = lo = hi = None
                users = int(t_row["n"]) if t_row else 0
                if c_row and t_row and min(int(c_row["n"]), int(t_row["n"])) >= 2:
                    pair = calc.compare_pair(spec.name, spec.role, spec.direction, t, a.control, c_row, t_row,
                                             math_opts, n_star=a.n_star)
                    users = pair.n + pair.control_n
                    if not pair.error:
                        lift = pair.sequential.effect
                        lo, hi = calc.interval(pair.sequential.ci)
                for name, value in (("lift", lift), ("lo", lo), ("hi", hi), ("users", users)):
                    s[name].append(value)
        daily = forecast = None
        daily_source = None
        try:
            trend = await self.peers.clickhouse("predict_experiment_trends", experiment_id=a.key, metric=spec.name,
                                                days_ahead=3)
            daily = {v["variant"]: [(p["date"], p["value"]) for p in v["history"]] for v in trend["variants"]}
            forecast = {v["variant"]: [(p["date"], p["predicted"], p["lower"], p["upper"]) for p in v["forecast"]]
                        for v in trend["variants"]}
            daily_source = f"ClickHouse daily rollup ({trend['statistic']}); forecast: {trend['model']}"
        except ServiceError as exc:
            log.info("daily panel skipped for %s: %s", a.key, exc)
        band = "shaded: 95% always-valid confidence sequence"
        lift_series = [LiftSeries(variant=t, days=s["days"], cumulative_lift=s["lift"], band_low=s["lo"],
                                  band_high=s["hi"], users=s["users"]) for t, s in series.items()]
        png = await anyio.to_thread.run_sync(lambda: charts.lift_chart(
            title=f"{a.result.name}: {spec.name} ({spec.direction} is better)", metric=spec.name, control=a.control,
            series=[{"variant": s.variant, "days": s.days, "cumulative_lift": s.cumulative_lift,
                     "band_low": s.band_low, "band_high": s.band_high} for s in lift_series],
            daily=daily, forecast=forecast, band_label=band))
        summary = PlotSummary(
            experiment_id=a.key, metric=spec.name, direction=spec.direction, control=a.control,  # type: ignore[arg-type]
            band=band, series=lift_series, daily_source=daily_source,
            final_lift={s.variant: next((x for x in reversed(s.cumulative_lift) if x is not None), None)
                        for s in lift_series},
            png_bytes=len(png))
        return png, summary
