"""No data yet is a verdict, not an error: an experiment nobody has been exposed to answers the
`no_data` verdict (R0) with a one-line reason; and a peer's refusal inside the analysis' task
group reaches the MCP client with its message (not "Error executing tool ...")."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client
from mcp_calls import refusal  # type: ignore[import-not-found]

from mcp_router.runtime.embedded import free_port
from mcp_router.runtime.serving import open_router
from mcp_servers.intelligence.peers import gathering, service_error_in
from schemas.errors import BackendUnavailable, NotFound


async def test_an_experiment_without_exposures_answers_the_no_data_verdict(intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("quiet")
        await seed.experiment("drafted", start=False)
        first = await kit.call(client, "analyze_experiment_performance", {"experiment": "quiet"})
        again = await kit.call(client, "analyze_experiment_performance", {"experiment": "quiet"})
        draft = await kit.call(client, "analyze_experiment_performance", {"experiment": "drafted"})
        advice = await kit.call(client, "recommend_experiment_optimization", {"experiment": "quiet"})
        traffic = await kit.call(client, "allocate_traffic", {"experiment": "quiet", "dry_run": True})
        chart = await refusal(client, "plot_experiment", {"experiment": "quiet"})
        unknown = await client.call_tool("analyze_experiment_performance", {"experiment": "never-created"})

    verdict = first["verdict"]
    assert verdict["verdict"] == "needs_review" and verdict["rule_id"] == "no_data"
    assert verdict["rule"] == ("Nothing to analyse yet: no exposure events for 'quiet' in the event store yet; "
                               "each user get_variant assigns records one.")
    assert "\n" not in verdict["rule"] and verdict["confidence"] == 0.0
    assert first["metrics"] == [] and first["variant_verdicts"] == []
    assert [v["users"] for v in first["variants"]] == [0, 0] and first["srm"]["flagged"] is False
    assert first["narrative"][0].startswith("Needs review (no_data")
    # The same empty window each time: the audit trail keeps one row for a repeated no-data verdict.
    assert first["decision_id"] and again["decision_id"] == first["decision_id"]
    assert draft["verdict"]["rule_id"] == "no_data" and "'drafted' is a draft" in draft["verdict"]["rule"]
    # The other readers of the analysis say the same, or refuse with the reason.
    assert advice["verdict"]["rule_id"] == "no_data" and advice["actions"] == []
    assert traffic["updated"] is False and traffic["applied"] is False
    assert "nothing to plot for quiet: Nothing to analyse yet" in chart
    # An experiment the registry does not know stays an error, with its reason.
    assert unknown.is_error and "never-created" in unknown.content[0].text


async def test_a_peer_refusal_inside_the_analysis_task_group_keeps_its_message(intel_settings, kit) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens: the clickhouse backend is down
    async with open_router(intel_settings(), targets={"clickhouse": dead}) as router, \
            Client(router.server) as client:
        await kit.Seeder(router, client).experiment("down")
        text = await refusal(client, "analyze_experiment_performance", {"experiment": "down"})
    # Before, an exception group left only the SDK's "Error executing tool ..." prefix; now the one line
    # is the peer's own reason (schemas.refusals), without the SDK's wrapper.
    assert text.startswith("backend 'clickhouse' is unavailable: "), text


async def test_gathering_unwraps_service_errors_only() -> None:
    async def refuse(message: str) -> None:
        raise NotFound(message)

    async def crash() -> None:
        raise ValueError("a bug")

    with pytest.raises(NotFound, match="^no such thing$"):
        async with gathering() as tg:
            tg.start_soon(refuse, "no such thing")
            tg.start_soon(anyio.sleep, 5)  # cancelled when the other task fails
    with pytest.raises(ExceptionGroup):
        async with gathering() as tg:
            tg.start_soon(refuse, "no such thing")
            tg.start_soon(crash)
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [BackendUnavailable("down")]), NotFound("gone")])
    assert str(service_error_in(nested)) == "down"
    assert service_error_in(ExceptionGroup("mixed", [NotFound("gone"), ValueError("bug")])) is None
