"""get_exposures_by_period: users per variant by the period of their first exposure, typed and parameterised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mcp import Client
from mcp_calls import call, refusal  # type: ignore[import-not-found]

from mcp_servers.clickhouse import build_server, open_service
from schemas.errors import InvalidInput
from schemas.events import Event
from schemas.settings import Settings

T0 = datetime(2025, 3, 3, tzinfo=UTC)
CUT = T0 + timedelta(days=2, hours=12)
END = T0 + timedelta(days=5)


def exposure(event_id: str, user: str, variant: str, at: datetime, experiment: str = "periods") -> Event:
    return Event(event_id=event_id, event_type="exposure", timestamp=at, user_id=user, experiment_id=experiment,
                 variant=variant)


EVENTS = [
    # before the cut: 2 control, 1 treatment
    exposure("a1", "a", "control", T0 + timedelta(hours=1)),
    exposure("a2", "a", "control", CUT + timedelta(hours=1)),  # a later exposure does not move user a
    exposure("b1", "b", "control", T0 + timedelta(days=1)),
    exposure("c1", "c", "treatment", CUT - timedelta(milliseconds=1)),
    # after the cut: 1 control, 2 treatment (the cut itself belongs to the later period)
    exposure("d1", "d", "treatment", CUT),
    exposure("e1", "e", "treatment", T0 + timedelta(days=4)),
    exposure("f1", "f", "control", T0 + timedelta(days=3)),
    # left out: seen in two variants, exposed outside the window, another experiment, a hostile key
    exposure("g1", "g", "control", T0 + timedelta(hours=2)),
    exposure("g2", "g", "treatment", T0 + timedelta(hours=3)),
    exposure("h1", "h", "control", T0 - timedelta(milliseconds=1)),
    exposure("i1", "i", "control", END),
    exposure("j1", "j", "control", T0 + timedelta(hours=5), experiment="other"),
    exposure("k1", "k", "control", T0 + timedelta(hours=5), experiment="periods' OR '1'='1"),
]


@pytest.fixture
async def service(chdb_path, ch_database):
    async with open_service(Settings(), chdb_path=chdb_path, database=ch_database, clickhouse_url="") as svc:
        await svc.ingest_events(EVENTS, "periods")
        yield svc


async def test_users_are_counted_in_the_period_of_their_first_exposure(service) -> None:
    result = await service.get_exposures_by_period("periods", [T0, CUT, END])
    assert [(p.start, p.end) for p in result.periods] == [(T0, CUT), (CUT, END)]
    assert [p.users for p in result.periods] == [{"control": 2, "treatment": 1}, {"control": 1, "treatment": 2}]


async def test_one_period_is_the_whole_window_and_naive_times_are_utc(service) -> None:
    whole = await service.get_exposures_by_period("periods", [T0.replace(tzinfo=None), END])
    assert [p.users for p in whole.periods] == [{"control": 3, "treatment": 3}]
    three = await service.get_exposures_by_period("periods", [T0, T0 + timedelta(days=1), CUT, END])
    assert [p.users for p in three.periods] == [{"control": 1}, {"control": 1, "treatment": 1},
                                                {"control": 1, "treatment": 2}]


async def test_the_key_is_a_bound_value_not_sql(service) -> None:
    hostile = await service.get_exposures_by_period("periods' OR '1'='1", [T0, END])
    assert [p.users for p in hostile.periods] == [{"control": 1}]  # only the events carrying that exact key


@pytest.mark.parametrize("boundaries", [[T0], [END, T0], [T0, T0, END]])
async def test_boundaries_must_increase(service, boundaries) -> None:
    with pytest.raises(InvalidInput, match="increasing"):
        await service.get_exposures_by_period("periods", boundaries)


async def test_the_tool_is_read_only_and_typed(service) -> None:
    async with Client(build_server(service)) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "get_exposures_by_period")
        result = await call(client, "get_exposures_by_period",
                            {"experiment": "periods", "boundaries": [T0.isoformat(), CUT.isoformat(), END.isoformat()]})
        refused = await refusal(client, "get_exposures_by_period",
                                {"experiment": "periods", "boundaries": [END.isoformat(), T0.isoformat()]})
    assert tool.annotations.read_only_hint is True and tool.annotations.destructive_hint is False
    assert tool.output_schema is not None and "Example" in (tool.description or "")
    assert [p["users"] for p in result["periods"]] == [{"control": 2, "treatment": 1}, {"control": 1, "treatment": 2}]
    assert "increasing" in refused
