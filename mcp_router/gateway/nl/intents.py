"""The things a question can ask for, each answered by one tool (the labelled examples are in examples.yaml).

`experiment` says what the tool needs: none, one experiment, or one-or-several (a question about
"pricing experiments" runs the tool once per pricing experiment). `writes` intents are planned
but never run from a question: `neonblue ask` prints the exact call to make instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Needs = Literal["none", "one", "many", "optional"]


@dataclass(frozen=True)
class IntentSpec:
    name: str
    tools: tuple[str, ...]  # the first one present in the catalogue answers
    summary: str  # what it does, offered when a question is declined
    experiment: Needs = "none"
    writes: bool = False


INTENTS: dict[str, IntentSpec] = {spec.name: spec for spec in (
    IntentSpec("list_experiments", ("list_experiments",),
               "list experiments by status, tag or words (\"which experiments are running?\")"),
    IntentSpec("describe_experiment", ("get_experiment",),
               "show one experiment's definition: variants, metrics, hypothesis (\"what variants does the "
               "checkout test have?\")", "one"),
    IntentSpec("analyze", ("analyze_experiment_performance", "analyze_experiment_data"),
               "analyse an experiment: verdict, lift, significance (\"is the checkout experiment significant?\")",
               "many"),
    IntentSpec("variant_stats", ("get_variant_statistics",),
               "count users and metric totals per variant, optionally for a segment or period (\"how many users "
               "saw the premium price?\")", "one"),
    IntentSpec("segments", ("generate_analytics_insights",),
               "find the segments that responded differently (\"which segments responded best to pricing?\")",
               "many"),
    IntentSpec("trends", ("predict_experiment_trends",),
               "forecast a metric's daily trend per variant (\"where is checkout conversion heading?\")", "one"),
    IntentSpec("predict_outcome", ("predict_experiment_outcome",),
               "predict the lift of an idea from similar past experiments (\"what lift can a shorter signup "
               "form expect?\")"),
    IntentSpec("plan", ("plan_experiment",),
               "plan a test: sample size and duration (\"plan a test to detect a 2% lift on a 10% rate\")"),
    IntentSpec("search_similar", ("semantic_experiment_search",),
               "search past experiments by meaning (\"find past experiments about onboarding emails\")"),
    IntentSpec("recommend", ("recommend_experiment_optimization", "search_optimization_patterns"),
               "recommend next steps for an experiment (\"recommend optimization strategies for onboarding\")",
               "one"),
    IntentSpec("patterns", ("search_optimization_patterns",),
               "search optimization patterns that worked before (\"what worked for onboarding?\")"),
    IntentSpec("guardrails", ("evaluate_guardrails",),
               "check an experiment's guardrails (\"is the premium price hurting revenue?\")", "many"),
    IntentSpec("allocate", ("allocate_traffic",),
               "propose bandit traffic weights, without applying them (\"how should onboarding traffic be "
               "split?\")", "one"),
    IntentSpec("autopilot", ("run_autopilot",),
               "say what the autopilot would do now, without doing it (\"what would autopilot do with "
               "checkout?\")", "one"),
    IntentSpec("interactions", ("find_experiment_interactions",),
               "check whether running experiments interact (\"do the checkout and pricing tests interfere?\")"),
    IntentSpec("plot", ("plot_experiment",), "chart an experiment (\"plot the checkout experiment\")", "one"),
    IntentSpec("decisions", ("list_decisions",),
               "show the decision log (\"what was decided about pricing?\")", "optional"),
    IntentSpec("assignment", ("predict_user_assignment",),
               "say which variant a user gets, without exposing them (\"which variant does user u42 get in "
               "checkout?\")", "one"),
    IntentSpec("user_behavior", ("predict_user_behavior",),
               "predict what a user will do next from similar journeys (\"what will user u42 do next?\")"),
    IntentSpec("journeys", ("find_similar_user_journeys",),
               "find user journeys by meaning (\"journeys that abandon at payment\")"),
    IntentSpec("event_counts", ("clickhouse_query",),
               "count events and users by type, per period (\"how many events came in yesterday?\")"),
    IntentSpec("status", ("router_status",), "check the servers' health (\"is everything up?\")"),
    IntentSpec("schema", ("describe_schema",), "describe the stored data (\"what data do you store?\")"),
    IntentSpec("start", ("start_experiment",), "start an experiment (a write: not run from a question)", "one",
               writes=True),
    IntentSpec("stop", ("stop_experiment",), "stop an experiment, optionally with a winner (a write: not run "
               "from a question)", "one", writes=True),
    IntentSpec("archive", ("archive_experiment",), "archive an experiment (a write: not run from a question)",
               "one", writes=True),
    IntentSpec("create", ("create_experiment",), "create an experiment (a write: not run from a question; "
               "plan_experiment drafts one)", writes=True),
    IntentSpec("decline", (), "questions NeonBlue cannot answer"),
)}
