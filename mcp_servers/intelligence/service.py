"""Experiment Intelligence: analysis, decisions, predictions, planning, bandits, autopilot, charts.

Plain async methods, no MCP types. Data comes from the other servers through
their MCP tools (`peers.Peers`): the registry (postgres: get_experiment,
set_variant_weights, stop_experiment, record_decision, list_decisions), the
event store (clickhouse: get_variant_statistics, generate_analytics_insights,
predict_experiment_trends, get_exposures_by_period) and memory (chromadb:
semantic_experiment_search, search_optimization_patterns,
find_similar_user_journeys). Every number is computed by the statistics engine
(`stats`) from sufficient statistics; every sentence is a template over those
numbers (`narrative`, `decisions`). Every verdict, recommendation and automated
action is written to the registry's decisions table with its inputs.

One capability per module, each a class over `base.IntelligenceBase` (peers, settings,
policy, audit trail):

    performance.py      analyze_experiment_performance (the computation: readout.py, pure)
    recommendations.py  recommend_experiment_optimization
    traffic.py          allocate_traffic (Thompson sampling)
    autopilot.py        evaluate_guardrails, run_autopilot
    outcome.py          predict_experiment_outcome
    planner.py          plan_experiment
    journeys.py         predict_user_behavior, evaluate_behavior_predictions
    plotting.py         plot_experiment
    segments.py         analyze_segment_effects, find_experiment_interactions (and both in the analysis)
    personalization.py  personalize_experiment_experience (contextual bandit)
"""

from __future__ import annotations

from .autopilot import GuardrailsAndAutopilot
from .journeys import BehaviorPredictor
from .outcome import OutcomePredictor
from .personalization import Personalization
from .planner import ExperimentPlanner
from .plotting import ExperimentPlots
from .readout import Analysed
from .recommendations import Recommendations
from .segments import SegmentsAndInteractions


class IntelligenceService(SegmentsAndInteractions, Personalization, Recommendations, GuardrailsAndAutopilot,
                          ExperimentPlots, OutcomePredictor, ExperimentPlanner, BehaviorPredictor):
    """Experiment intelligence over the other servers' tools and the statistics engine.

    IntelligenceService(backends, settings=None, *, policy=None): `backends` maps a server name
    (postgres, clickhouse, chromadb) to an object with `async call(tool, arguments)`.
    """


__all__ = ["Analysed", "IntelligenceService"]
