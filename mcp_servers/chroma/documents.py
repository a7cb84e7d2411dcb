"""Deterministic builders: a record becomes (id, text to embed, filterable metadata).

The same record always gives the same text and metadata (no clock, no
randomness, stable ordering), so storing it twice is a no-op and a re-sync only
re-embeds what changed. The text puts meaning first (name, description,
hypothesis, variants) and figures after, because the model reads at most 256
word pieces. Metadata keeps only scalars and lists Chroma can filter on;
timestamps are stored as Unix seconds (UTC) so `$gte`/`$lt` work on them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .models import ExperimentAnalysis, ExperimentRecord, JourneyRecord, Outcome, PatternRecord

CONTENT_HASH_KEY = "content_hash"
SIGNIFICANCE_LEVEL = 0.05  # two-sided alpha used to call a result significant when only p is known


@dataclass(frozen=True)
class BuiltDocument:
    id: str
    document: str
    metadata: dict[str, Any]


# ---------------------------------------------------------------- helpers


def humanize(label: str) -> str:
    """'landing_page' -> 'landing page', 'add-to-cart' -> 'add to cart'."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", label)).strip()


def _sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if not text or text[-1] in ".!?" else text + "."


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _percent(fraction: float) -> str:
    return f"{fraction * 100:+.1f}%"


def epoch_seconds(value: datetime) -> int:
    """Unix seconds; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _date(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{round(seconds)}-second session"
    if seconds < 3600:
        return f"{round(seconds / 60)}-minute session"
    return f"{seconds / 3600:.1f}-hour session"


def _short_config(config: dict[str, Any], limit: int = 200) -> str:
    parts = []
    for key in sorted(config):
        value = config[key]
        if isinstance(value, (str, int, float, bool)):
            text = str(value)
            parts.append(f"{key}={text[:80] + '…' if len(text) > 80 else text}")
    summary = ", ".join(parts)
    return summary[:limit] + "…" if len(summary) > limit else summary


def _clean(metadata: dict[str, Any]) -> dict[str, Any]:
    """Drop None and empty lists (Chroma rejects both) and add the content hash."""
    return {k: v for k, v in metadata.items() if v is not None and v != [] and v != ""}


def with_content_hash(document: str, metadata: dict[str, Any]) -> dict[str, Any]:
    payload = json.dumps([document, metadata], sort_keys=True, ensure_ascii=False, default=str)
    return {**metadata, CONTENT_HASH_KEY: hashlib.sha256(payload.encode()).hexdigest()[:24]}


def _stable_id(prefix: str, payload: Any) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
    return f"{prefix}-{digest[:20]}"


# ---------------------------------------------------------------- experiments


def derive_outcome(lift: float | None, p_value: float | None, significance: float | None,
                   winner: str | None, control_keys: set[str], direction: str = "higher") -> Outcome | None:
    """success / failure / neutral from the figures, or None when nothing is known.

    Significant means p < 0.05 (or a confidence level ≥ 0.95). A significant lift in
    the good direction is a success, in the bad direction a failure; anything
    else that has a result is neutral. Without figures, a non-control winner is a
    success and a control winner neutral.
    """
    significant = None
    if p_value is not None:
        significant = p_value < SIGNIFICANCE_LEVEL
    elif significance is not None:
        significant = significance >= 1 - SIGNIFICANCE_LEVEL
    if lift is not None and significant is not None:
        if not significant or lift == 0:
            return "neutral"
        good = lift > 0 if direction == "higher" else lift < 0
        return "success" if good else "failure"
    if winner:
        return "neutral" if winner in control_keys else "success"
    if significant is False:
        return "neutral"
    return None


def merge_analysis(record: ExperimentRecord, analysis: ExperimentAnalysis | None) -> tuple[ExperimentRecord, ExperimentAnalysis]:
    """The record with the analysis' result fields applied over it."""
    analysis = analysis or ExperimentAnalysis()
    updates = {
        name: getattr(analysis, name)
        for name in ("winner", "lift", "p_value", "significance", "conversion_rate", "sample_size", "outcome")
        if getattr(analysis, name) is not None
    }
    return record.model_copy(update=updates), analysis


def build_experiment_document(record: ExperimentRecord, analysis: ExperimentAnalysis | None = None) -> BuiltDocument:
    """Experiment (+ its analysis) -> descriptive text and metadata.

    Text: name, description, hypothesis, variants, context (type, industry,
    segment, platform), metrics, result (winner, lift, interval, p-value,
    confidence, conversion rate, sample size), outcome, analysis summary, tags.
    """
    record, analysis = merge_analysis(record, analysis)
    control_keys = {v.key for v in record.variants if v.is_control}
    significance = record.significance
    if significance is None and record.p_value is not None:
        significance = round(1 - record.p_value, 6)
    outcome = record.outcome or derive_outcome(
        record.lift, record.p_value, record.significance, record.winner, control_keys, record.metric_direction
    )

    parts: list[str] = [_sentence(record.name or humanize(record.key))]
    if record.description:
        parts.append(_sentence(record.description))
    if record.hypothesis:
        parts.append("Hypothesis: " + _sentence(record.hypothesis))
    if record.variants:
        arms = []
        for variant in record.variants:
            label = variant.name or humanize(variant.key)
            role = "control" if variant.is_control else "variant"
            arm = role if label.lower() == role else f"{role} {label}"
            detail = variant.description or (_short_config(variant.config) if variant.config else "")
            arms.append(arm + (f" ({detail.rstrip('.')})" if detail else ""))
        parts.append("Variants: " + "; ".join(arms) + ".")
    context = []
    if record.type:
        context.append(f"{humanize(record.type)} experiment")
    if record.industry:
        context.append(f"industry {record.industry}")
    if record.segment:
        context.append(f"segment {record.segment}")
    if record.platform:
        context.append(f"platform {record.platform}")
    if context:
        parts.append(_sentence(_capitalize(", ".join(context))))
    if record.primary_metric:
        metric = f"Primary metric: {record.primary_metric} ({record.metric_direction} is better)"
        if record.secondary_metrics:
            metric += "; secondary: " + ", ".join(record.secondary_metrics)
        parts.append(metric + ".")

    result = []
    if record.winner:
        result.append(f"winner {record.winner}")
    if record.lift is not None:
        lift = f"lift {_percent(record.lift)}"
        if analysis.lift_ci_low is not None and analysis.lift_ci_high is not None:
            lift += f" (interval {_percent(analysis.lift_ci_low)} to {_percent(analysis.lift_ci_high)})"
        result.append(lift)
    if record.p_value is not None:
        result.append(f"p-value {record.p_value:.4g}")
    if significance is not None:
        result.append(f"confidence {significance * 100:.1f}%")
    if record.conversion_rate is not None:
        result.append(f"conversion rate {record.conversion_rate * 100:.2f}%")
    if record.sample_size is not None:
        result.append(f"sample size {record.sample_size}")
    if result:
        parts.append("Result: " + ", ".join(result) + ".")
    if outcome:
        parts.append(f"Outcome: {outcome}.")
    if analysis.summary:
        parts.append("Analysis: " + _sentence(analysis.summary))
    if record.tags:
        parts.append("Tags: " + ", ".join(record.tags) + ".")
    if record.status:
        parts.append(f"Status: {record.status}.")
    document = " ".join(parts)

    metadata = _clean({
        "experiment_key": record.key,
        "name": record.name or None,
        "experiment_type": record.type,
        "status": record.status,
        "industry": record.industry,
        "user_segment": record.segment,
        "platform": record.platform,
        "primary_metric": record.primary_metric,
        "metric_direction": record.metric_direction,
        "winner": record.winner,
        "outcome": outcome,
        "lift": None if record.lift is None else float(record.lift),
        "p_value": None if record.p_value is None else float(record.p_value),
        "statistical_significance": None if significance is None else float(significance),
        "conversion_rate": None if record.conversion_rate is None else float(record.conversion_rate),
        "sample_size": record.sample_size,
        "variant_count": len(record.variants),
        "tags": sorted(set(record.tags)),
        "created_at": epoch_seconds(record.created_at) if record.created_at else None,
        "concluded_at": epoch_seconds(record.concluded_at) if record.concluded_at else None,
    })
    return BuiltDocument(record.key, document, with_content_hash(document, metadata))


# ---------------------------------------------------------------- user journeys


def journey_text(steps: list[str]) -> str:
    return " → ".join(humanize(step) for step in steps)


def build_journey_document(journey: JourneyRecord) -> BuiltDocument:
    """Journey -> "User journey: landing page → product detail → cart → purchase. Mobile, 15-minute session, …"."""
    parts = [f"User journey: {journey_text(journey.steps)}."]
    context = []
    if journey.device_type:
        context.append(journey.device_type)
    if journey.session_duration_s is not None:
        context.append(_duration(journey.session_duration_s))
    if journey.user_segment:
        context.append(f"{journey.user_segment} segment")
    if journey.traffic_source:
        context.append(f"{journey.traffic_source} traffic")
    if context:
        parts.append(_sentence(_capitalize(", ".join(context))))
    if journey.conversion_outcome:
        outcome = f"Outcome: {humanize(journey.conversion_outcome)}"
        if journey.value is not None:
            outcome += f" (value {journey.value:.2f})"
        parts.append(outcome + ".")
    if journey.experiment_key:
        parts.append(f"Experiment {journey.experiment_key}" + (f", variant {journey.variant}." if journey.variant else "."))
    if journey.notes:
        parts.append("Notes: " + _sentence(journey.notes))
    document = " ".join(parts)

    metadata = _clean({
        "user_id": journey.user_id,
        "user_segment": journey.user_segment,
        "device_type": journey.device_type,
        "traffic_source": journey.traffic_source,
        "conversion_outcome": journey.conversion_outcome,
        "journey_length": len(journey.steps),
        "session_duration": None if journey.session_duration_s is None else float(journey.session_duration_s),
        "value": None if journey.value is None else float(journey.value),
        "experiment_key": journey.experiment_key,
        "variant": journey.variant,
        "first_step": journey.steps[0],
        "last_step": journey.steps[-1],
        "steps": list(journey.steps),
        "started_at": epoch_seconds(journey.started_at) if journey.started_at else None,
    })
    journey_id = journey.journey_id or _stable_id("journey", [document, metadata])
    metadata["journey_id"] = journey_id
    return BuiltDocument(journey_id, document, with_content_hash(document, metadata))


# ---------------------------------------------------------------- optimization patterns

_OUTCOME_WORD = {"success": "Successful", "failure": "Failed", "neutral": "Inconclusive"}


def build_pattern_document(pattern: PatternRecord) -> BuiltDocument:
    """Pattern -> "Successful optimization (checkout flow): Reduced checkout steps… Result: +35% conversion…"."""
    parts = [f"{_OUTCOME_WORD[pattern.outcome]} optimization ({humanize(pattern.optimization_type)}): "
             + _sentence(pattern.description)]
    result = []
    if pattern.improvement is not None:
        result.append(f"{pattern.improvement * 100:+.1f}%" + (f" {pattern.metric}" if pattern.metric else ""))
    elif pattern.metric:
        result.append(f"metric {pattern.metric}")
    if pattern.applied_to_segments:
        result.append("across " + ", ".join(pattern.applied_to_segments))
    if result:
        parts.append("Result: " + " ".join(result) + ".")
    if pattern.industry:
        parts.append(f"Industry: {pattern.industry}.")
    if pattern.implementation_effort:
        parts.append(f"Implementation effort: {pattern.implementation_effort}.")
    if pattern.source_experiments:
        parts.append("Learned from: " + ", ".join(pattern.source_experiments) + ".")
    document = " ".join(parts)

    metadata = _clean({
        "optimization_type": pattern.optimization_type,
        "outcome": pattern.outcome,
        "improvement": None if pattern.improvement is None else float(pattern.improvement),
        "metric": pattern.metric,
        "applied_to_segments": sorted(set(pattern.applied_to_segments)),
        "industry": pattern.industry,
        "implementation_effort": pattern.implementation_effort,
        "source_experiments": sorted(set(pattern.source_experiments)),
        "created_at": epoch_seconds(pattern.created_at) if pattern.created_at else None,
    })
    pattern_id = pattern.pattern_id or _stable_id("pattern", [pattern.optimization_type, document])
    metadata["pattern_id"] = pattern_id
    return BuiltDocument(pattern_id, document, with_content_hash(document, metadata))
