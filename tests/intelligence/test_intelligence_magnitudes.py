"""No intelligence tool answers a number that cannot be real (issue 16, item 8).

`plan_experiment` with traffic 1e-300 answered duration_days ≈ 1.2e305; a tiny
baseline crashed the power analysis (ZeroDivisionError); a huge one overflowed.
Magnitudes that cannot be real are refused with the reason, a plan longer than ten
years is infeasible with the reason, and for ANY input (finite or not) each tool
either refuses or answers only finite, bounded numbers: hypothesis draws the inputs,
extremes (±1e-300, ±1e300, the float limits) included.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mcp_servers import stats
from mcp_servers.intelligence import IntelligenceService
from mcp_servers.intelligence.models import MAX_PLAN_DAYS, AnalysisOptions, ExperimentConfig
from schemas.errors import InvalidInput
from schemas.settings import Settings

GOAL = "raise checkout conversion with a one-step checkout"
EXTREMES = [0.0, -0.0, 1e-300, -1e-300, 5e-324, 1e300, -1e300, 1.7976931348623157e308, 1e-12, 1e12, 0.5, 1.0, 2.0]
NON_FINITE = [math.nan, math.inf, -math.inf]
# What a tool may answer at most: ten years at 10^10 users a day (or 10^12 units per arm times 10 arms).
LARGEST_REAL_NUMBER = 1e14


def any_float(*, finite: bool = True) -> st.SearchStrategy[float]:
    strategies = [st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(EXTREMES),
                  st.floats(1e-3, 1e6), st.floats(0.001, 0.999)]
    if not finite:
        strategies.append(st.sampled_from(NON_FINITE))
    return st.one_of(*strategies)


def leaves(value: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [leaf for i, v in enumerate(value) for leaf in leaves(v, f"{path}[{i}]")]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [(path, float(value))]
    return []


def assert_real_numbers(answer: BaseModel) -> None:
    for path, x in leaves(answer):
        assert math.isfinite(x), f"{path} = {x}"
        assert abs(x) <= LARGEST_REAL_NUMBER, f"{path} = {x:g}"


def plan(**arguments: Any) -> Any:
    service = IntelligenceService({}, Settings(_env_file=None))  # no peers: planning needs none
    return anyio.run(lambda: service.plan_experiment(GOAL, **arguments))


# ---------------------------------------------------------------- plan_experiment


@pytest.mark.parametrize("traffic", [1e-300, 0.5, 1e300, *NON_FINITE])
def test_traffic_that_cannot_be_real_is_refused(traffic):
    with pytest.raises(InvalidInput, match="traffic must be 1 to 1e\\+10 users per day"):
        plan(baseline={"mean": 0.1}, mde=0.05, traffic=traffic)


@pytest.mark.parametrize("mde", [1e-300, 1e-5, 11.0, *NON_FINITE])
def test_an_effect_that_cannot_be_real_is_refused(mde):
    with pytest.raises(InvalidInput, match="mde must be a relative effect"):
        plan(baseline={"mean": 0.1}, mde=mde, traffic=1000)


def test_a_plan_longer_than_ten_years_is_infeasible_with_the_reason():
    with pytest.raises(InvalidInput) as refused:
        plan(baseline={"mean": 0.1}, mde=0.05, traffic=20)  # 121 312 users at 20 a day: 17 years
    message = str(refused.value)
    assert message.startswith("infeasible: 121312 users at 20 users/day take about 17 years")
    assert "10-year ceiling" in message and "in 6 weeks this traffic can detect a" in message


def test_the_always_valid_duration_is_null_beyond_ten_years():
    answer = plan(baseline={"mean": 0.1}, mde=0.05, traffic=40)  # fixed: 3033 days, always-valid: longer
    assert answer.duration_days == 3033
    assert answer.duration_days_sequential is None
    assert any("more than ten years" in note for note in answer.notes)


@pytest.mark.parametrize(
    ("baseline", "reason"),
    [
        ({"mean": 1e-300}, "SAMPLE_SIZE_NOT_ATTAINABLE"),  # was ZeroDivisionError
        ({"mean": 0.99}, "MDE_OUT_OF_RANGE"),  # 0.99 x 1.05 is no rate
        ({"mean": 1e300, "sd": 1e300}, "less than or equal to 1000000000000"),  # was OverflowError
        ({"mean": 1e-300, "sd": 1.0}, "is not a per-user metric"),  # was ZeroDivisionError
        ({"mean": 1.0, "sd": 1e-300}, "is not a per-user metric"),
        ({"mean": 0.0, "sd": 1.0}, "non-zero baseline mean"),
        ({"mean": 1.5}, "strictly between 0 and 1"),
        ({"mean": math.nan}, "finite number"),
        ({"mean": 1.0, "sd": math.inf}, "finite number"),
    ],
)
def test_baselines_that_cannot_be_real_are_refused_with_the_reason(baseline, reason):
    with pytest.raises((InvalidInput, ValidationError), match=reason):
        plan(baseline=baseline, mde=0.05, traffic=1000)


def test_the_power_analysis_never_crashes_on_extreme_baselines():
    for mean, variance in [(1e-300, None), (1e-300, 1.0), (1e300, 1.0), (1.0, 1e-300), (1e-150, 1e300)]:
        for result in (stats.sample_size(0.05, mean, variance), stats.mde(1000, mean, variance),
                       stats.power(0.05, 1000, mean, variance)):
            assert result.ok or result.error, result
            assert_real_numbers_of(result)


def assert_real_numbers_of(result: Any) -> None:
    for name, x in result.as_dict().items():
        if isinstance(x, int | float) and not isinstance(x, bool):
            assert math.isfinite(x), f"{name} = {x}"


@settings(max_examples=400, deadline=None)
@given(mean=any_float(finite=False), sd=st.none() | any_float(finite=False), mde=any_float(finite=False),
       traffic=any_float(finite=False), alpha=any_float(), power=any_float(), variants=st.integers(2, 10))
def test_plan_experiment_refuses_or_answers_real_numbers(mean, sd, mde, traffic, alpha, power, variants):
    baseline = {"mean": mean} if sd is None else {"mean": mean, "sd": sd}
    try:
        answer = plan(baseline=baseline, mde=mde, traffic=traffic, variants=variants, alpha=alpha,
                      target_power=power)
    except (InvalidInput, ValidationError):
        return
    assert_real_numbers(answer)
    assert 1 <= answer.duration_days <= MAX_PLAN_DAYS
    assert answer.duration_days_sequential is None or 1 <= answer.duration_days_sequential <= MAX_PLAN_DAYS
    assert 2 <= answer.sample_size_per_variant <= 1e12
    assert all(o.mde is None or 0 < o.mde for o in answer.duration_options)


# ---------------------------------------------------------------- the other tools' numeric inputs


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["alpha", "mde", "target_power", "chance_to_win_threshold", "default_guardrail_margin",
                              "max_duration_days"]),
       value=any_float(finite=False))
def test_analysis_options_accept_only_real_magnitudes(field, value):
    try:
        options = AnalysisOptions(**{field: value})
    except ValidationError:
        return
    assert math.isfinite(getattr(options, field))
    assert options.alpha >= 1e-6 and options.mde >= 1e-4 and options.default_guardrail_margin >= 1e-4
    assert options.max_duration_days >= 1


def test_predict_experiment_outcome_refuses_or_answers_real_numbers(intel_settings, open_stack):
    """On the real stack (empty memory: the sizing and duration are what the inputs decide)."""
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_stack(intel_settings())) as router:
        service = router.services["intelligence"]

        @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(mean=any_float(finite=False), sd=st.none() | any_float(), mde=st.none() | any_float(finite=False),
               traffic=st.none() | any_float(finite=False), alpha=any_float(), variants=st.integers(2, 10))
        def check(mean, sd, mde, traffic, alpha, variants):
            config = {"name": "one-step checkout", "primary_metric": "conversion", "variants": variants,
                      "alpha": alpha, "baseline": {"mean": mean} if sd is None else {"mean": mean, "sd": sd},
                      "mde": mde, "traffic_per_day": traffic}
            try:
                answer = portal.call(service.predict_experiment_outcome, ExperimentConfig.model_validate(config))
            except ValidationError:
                return
            assert_real_numbers(answer)
            assert answer.estimated_duration_days is None or 0 < answer.estimated_duration_days <= MAX_PLAN_DAYS

        check()
        with pytest.raises(ValidationError, match="greater than or equal to 1"):
            ExperimentConfig.model_validate({"name": "x", "primary_metric": "conversion", "traffic_per_day": 1e-300})
