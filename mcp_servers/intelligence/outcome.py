"""predict_experiment_outcome: before an experiment runs, an empirical prior over its lift from similar past
experiments, the chance of a significant win, and the size and duration it needs."""

from __future__ import annotations

import statistics as pystats
from collections.abc import Mapping, Sequence
from typing import Any

from mcp_servers import stats
from mcp_servers.stats._numeric import norm_cdf
from schemas.errors import ServiceError

from . import planning, priors
from .base import IntelligenceBase
from .models import ExperimentConfig, LiftPrior, MetricInput, Neighbour, OutcomePrediction
from .narrative import pct, prob
from .readout import as_utc


class OutcomePredictor(IntelligenceBase):
    async def predict_experiment_outcome(self, config: ExperimentConfig | Mapping[str, Any]) -> OutcomePrediction:
        """Empirical prior over lift from similar past experiments, chance of a significant win, size, duration."""
        cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.model_validate(config)
        metric = cfg.primary_metric if isinstance(cfg.primary_metric, MetricInput) else MetricInput(name=cfg.primary_metric)
        sign = -1.0 if metric.direction == "lower" else 1.0
        hits = (await self.peers.chroma("semantic_experiment_search", query=_config_text(cfg, metric.name),
                                        limit=50))["hits"]
        past = [priors.PastResult(key=(h.get("metadata") or {}).get("experiment_key") or h["id"],
                                  similarity=float(h["similarity"]), lift=(h.get("metadata") or {}).get("lift"),
                                  p_value=(h.get("metadata") or {}).get("p_value"),
                                  direction=(h.get("metadata") or {}).get("metric_direction", "higher"))
                for h in hits]
        weighted = priors.weigh(past)
        used = [w for w in weighted if w.used]
        neighbours = [Neighbour(experiment_key=w.key, similarity=w.similarity, lift=w.lift, improvement=w.improvement,
                                standard_error=w.se, weight=w.weight, used=w.used, why_not=w.why_not)
                      for w in weighted[:20]]
        prior = priors.empirical_prior(weighted) if len(used) >= priors.MIN_NEIGHBOURS else None
        narrative: list[str] = []
        mde, mde_source = cfg.mde, ("stated" if cfg.mde else None)
        if mde is None and prior is not None:
            mde, mde_source = min(max(abs(prior.mean), 0.005), 1.0), "the prior's expected |improvement|"
        traffic, traffic_source = cfg.traffic_per_day, ("stated" if cfg.traffic_per_day else None)
        if traffic is None and used:
            traffic, traffic_source = await self._observed_traffic(used, metric.name)
        n_per_variant = total_n = None
        duration = p_win = None
        if cfg.baseline is not None and mde is not None:
            variance = None if cfg.baseline.sd is None else cfg.baseline.sd ** 2
            plan = stats.sample_size(mde, cfg.baseline.mean, variance, target_power=cfg.target_power, alpha=cfg.alpha,
                                     n_variants=cfg.variants, n_comparisons=cfg.variants - 1)
            if plan.ok:
                n_per_variant, total_n = plan.n_per_variant, plan.total_n
                if traffic:
                    duration = total_n / traffic
                    if duration > planning.MAX_PLAN_DAYS:  # not a duration anyone can run: say why instead
                        narrative.append("No duration: " + planning.too_long(
                            total_n, traffic, cfg.baseline.mean, variance, power=cfg.target_power, alpha=cfg.alpha,
                            arms=cfg.variants) + ".")
                        duration = None
                if prior is not None:
                    se = priors.relative_se(n_per_variant, cfg.baseline.mean, variance)
                    p_win = priors.assurance(prior.mean, prior.sd, se, cfg.alpha / (cfg.variants - 1))
            else:
                narrative.append(f"No sample size: {plan.error}")
        floor = priors.SIMILARITY_FLOOR
        if prior is None:
            status = "insufficient_history"
            message = (f"Insufficient history: found {len(used)} past experiment(s) with results above the "
                       f"similarity floor {floor:.2f}; at least {priors.MIN_NEIGHBOURS} are needed, so no lift is "
                       f"predicted.")
            lift_prior = None
        else:
            status = "ok"
            mean = sign * prior.mean
            qs = priors.quantiles(mean, prior.sd)
            p_good = 1.0 - norm_cdf(-prior.mean / prior.sd) if prior.sd > 0 else float(prior.mean > 0)
            lift_prior = LiftPrior(mean=mean, sd=prior.sd, between_experiment_sd=prior.tau,
                                   observed_sd=prior.observed_sd, mean_sampling_sd=prior.mean_sampling_sd,
                                   effective_neighbours=prior.n_eff, quantiles=qs, probability_positive_effect=p_good)
            message = (f"Prior from {prior.used} similar past experiments (effective {prior.n_eff:.1f}): expected "
                       f"lift {pct(mean)} (90% {pct(qs['p05'])} to {pct(qs['p95'])}); {prob(p_good)} chance the "
                       f"true effect is an improvement.")
        narrative.insert(0, message)
        if n_per_variant:
            narrative.append(f"Planned for a {mde:.1%} relative effect ({mde_source}): {n_per_variant} users per "
                             f"variant, {total_n} in total" + (f", ≈{duration:.1f} days at {traffic:.0f} users/day "
                                                              f"({traffic_source})." if duration else "."))
        if p_win is not None:
            narrative.append(f"Chance the test ends with a significant win: {prob(p_win)} (power averaged over the prior).")
        return OutcomePrediction(
            status=status, message=message, neighbours_found=len(used), neighbours_required=priors.MIN_NEIGHBOURS,
            similarity_floor=floor, neighbours=neighbours, prior=lift_prior, probability_significant_win=p_win,
            planned_mde=mde, mde_source=mde_source, recommended_sample_size_per_variant=n_per_variant,
            recommended_total_sample_size=total_n, traffic_per_day=traffic, traffic_source=traffic_source,
            estimated_duration_days=duration, narrative=narrative)

    async def _observed_traffic(self, used: Sequence[priors.WeightedResult], metric: str
                                ) -> tuple[float | None, str | None]:
        """Median exposures/day that ClickHouse saw for the most similar past experiments."""
        rates: dict[str, float] = {}
        for w in sorted(used, key=lambda x: -x.similarity)[:5]:
            try:
                st = await self.peers.clickhouse("get_variant_statistics", experiment=w.key, metrics=[metric])
            except ServiceError:
                continue
            span = (as_utc(st["window_end"]) - as_utc(st["window_start"])).total_seconds() / 86400.0
            users = sum(int(v["users"]) for v in st["variants"])
            if span > 0 and users:
                rates[w.key] = users / max(span, 1.0)
        if not rates:
            return None, None
        return float(pystats.median(rates.values())), (
            f"median exposures/day ClickHouse saw for {len(rates)} similar experiment(s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))


def _config_text(cfg: ExperimentConfig, metric: str) -> str:
    parts = [cfg.name, cfg.description, f"Hypothesis: {cfg.hypothesis}" if cfg.hypothesis else "",
             f"{cfg.type} experiment" if cfg.type else "", f"segment {cfg.segment}" if cfg.segment else "",
             f"platform {cfg.platform}" if cfg.platform else "", f"Primary metric: {metric}"]
    return ". ".join(p.strip().rstrip(".") for p in parts if p)[:2000]
