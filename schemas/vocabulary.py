"""One vocabulary for agents: the argument and result types every tool and REST route uses.

An LLM agent reads the tool list as its whole manual, so one thing has one name and one rule
everywhere (docs/CONVENTIONS.md, "Vocabulary"):

- `experiment` is the experiment argument of every tool: its key (e.g. 'checkout-1step') or, where
  the server keeps the registry, its numeric id (`ExperimentRef`). Results name the key
  `experiment_key`; `experiment_id` in a result is only ever the numeric id.
- keys and metric names follow one pattern each (`ExperimentKey`, `VariantKey`, `MetricName`).
- a share, lift, effect or rate is a `Fraction` (0.05 = 5%), never a percent.
- "at most N results" is `limit` (each tool keeps its own upper bound); lists page with `limit` + `offset`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Field

EXPERIMENT_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"
VARIANT_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
METRIC_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]{0,99}$"
METRIC_NAME_MAX_LENGTH = 100

ExperimentKey = Annotated[
    str,
    Field(pattern=EXPERIMENT_KEY_PATTERN, description="Experiment key, e.g. 'checkout-1step' (starts with a letter)."),
]
ExperimentRef = Annotated[
    str,
    Field(min_length=1, max_length=100, description="The experiment: its key (e.g. 'checkout-1step') or its numeric id."),
]
VariantKey = Annotated[str, Field(pattern=VARIANT_KEY_PATTERN, description="Variant key, e.g. 'control' or 'treatment'.")]
MetricName = Annotated[
    str,
    Field(pattern=METRIC_NAME_PATTERN, max_length=METRIC_NAME_MAX_LENGTH,
          description="Metric name, e.g. 'conversion' or 'revenue' (starts with a letter)."),
]
Direction = Literal["higher", "lower"]

Fraction = Annotated[float, Field(ge=0.0, le=1.0, description="A fraction between 0 and 1 (0.05 = 5%).")]
SignedFraction = Annotated[float, Field(description="A relative change as a fraction (0.05 = +5%, -0.1 = -10%).")]

StartDate = Annotated[date | None, Field(default=None, description="First day (UTC) of the window, YYYY-MM-DD.")]
EndDate = Annotated[date | None, Field(default=None, description="Last day (UTC, inclusive) of the window, YYYY-MM-DD.")]

Offset = Annotated[int, Field(ge=0, le=1_000_000, description="Results to skip (paging with limit).")]


def limit(maximum: int, description: str = "At most this many results.") -> object:
    """The `limit` Field of a tool: at most N results, with the tool's own upper bound."""
    return Field(ge=1, le=maximum, description=description)
