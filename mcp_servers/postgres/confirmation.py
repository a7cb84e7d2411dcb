"""What a registry write would destroy, in one sentence for the user, or None when it destroys nothing.

Pure functions of the experiment as stored now and the call's arguments (`mcp_servers.confirmation`
asks the question). A call the service will refuse anyway (an unknown variant, archiving a running
experiment) is not asked about: the service's refusal says what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

from mcp_servers.confirmation import weights_change

from .models import ExperimentDetail


def _assigned(experiment: ExperimentDetail) -> str:
    users = sum(experiment.assignments_by_variant.values())
    return f"{users:,} user{'s' if users != 1 else ''} assigned so far"


def stop_action(experiment: ExperimentDetail, winner: str | None) -> str | None:
    """Stopping with a winner concludes the experiment and serves the winner to everyone."""
    if winner is None or winner not in {v.key for v in experiment.variants}:
        return None
    if experiment.status == "concluded" and experiment.winner == winner:
        return None  # a repeat: nothing changes
    if experiment.status not in ("running", "stopped"):
        return None
    verb = "Stop" if experiment.status == "running" else "Conclude"
    return (f"{verb} '{experiment.key}' and ship variant '{winner}' to everyone ({_assigned(experiment)}): "
            f"the experiment is concluded for good and get_variant serves '{winner}' to every user from now on.")


def archive_action(experiment: ExperimentDetail) -> str | None:
    """Archiving freezes an experiment for good."""
    if experiment.status in ("archived", "running"):
        return None  # a repeat changes nothing; a running experiment is refused by the service
    return (f"Archive '{experiment.key}' (now {experiment.status}, {_assigned(experiment)}): it is hidden from "
            "lists and frozen for good; it can no longer be changed, started or concluded.")


def weights_action(experiment: ExperimentDetail, weights: Mapping[str, float]) -> str | None:
    """Moving the traffic of a running experiment changes who sees what from now on (a draft's weights are
    only a plan)."""
    if experiment.status != "running" or set(weights) != {v.key for v in experiment.variants}:
        return None
    if abs(sum(weights.values()) - 1.0) > 1e-6:
        return None  # refused by the service: weights sum to 1
    change = weights_change({v.key: v.weight for v in experiment.variants}, dict(weights))
    if not change:
        return None
    return (f"Move the traffic of running experiment '{experiment.key}': {change}. Users already assigned "
            "keep their variant; new users are bucketed with the new weights.")
