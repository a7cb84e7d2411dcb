"""The trend model behind `predict_experiment_trends`: pure functions, no I/O.

Model (stated in every answer): ordinary least squares on the daily values,
    y(d) = a + b·t(d) + Σ_k c_k·[weekday(d) = k] + ε,  ε ~ N(0, σ²)
with t in days since the first observed day and weekday dummies (Monday is the
baseline) when at least 14 days are observed, otherwise the linear trend alone.
Prediction intervals are the OLS ones: ŷ ± t_{n-p, (1+level)/2} · s · √(1 + x₀ᵀ(XᵀX)⁻¹x₀),
with s² the residual variance. Days without data are simply not observed (the
trend keeps calendar time), and neither are partial days, which the caller leaves out
(`ClickHouseService.predict_experiment_trends`: the window's first or last day when it
covers only part of it). The backtest refits the same model at rolling
origins over the last days and scores the forecasts of the following days
(MAE, MAPE) next to a naive "repeat the last value" forecast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from scipy import stats

MIN_DAYS = 3
WEEKLY_MIN_DAYS = 14
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def describe_model(weekly: bool) -> str:
    base = "OLS linear trend"
    if weekly:
        base += " + day-of-week effects"
    return (
        f"{base} on the complete days' values (a partial first or last day is not fitted), per variant; "
        "prediction intervals from the residual variance (t distribution, OLS prediction variance); "
        "rolling-origin backtest vs a naive last-value forecast"
    )


@dataclass(frozen=True)
class Fit:
    first_day: date
    weekly: bool
    beta: np.ndarray
    xtx_inv: np.ndarray
    residual_std: float
    dof: int

    def design(self, days: list[date]) -> np.ndarray:
        return design_matrix(days, self.first_day, self.weekly)

    def predict(self, days: list[date], level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = self.design(days)
        mean = x @ self.beta
        se = self.residual_std * np.sqrt(1.0 + np.einsum("ij,jk,ik->i", x, self.xtx_inv, x))
        q = stats.t.ppf(0.5 + level / 2.0, self.dof) if self.dof > 0 else np.inf
        return mean, mean - q * se, mean + q * se

    @property
    def slope(self) -> float:
        return float(self.beta[1])

    def weekday_effects(self) -> dict[str, float] | None:
        if not self.weekly:
            return None
        return {"Mon": 0.0, **{WEEKDAYS[k]: float(self.beta[1 + k]) for k in range(1, 7)}}


def design_matrix(days: list[date], first_day: date, weekly: bool) -> np.ndarray:
    t = np.array([(d - first_day).days for d in days], dtype=float)
    columns = [np.ones_like(t), t]
    if weekly:
        weekday = np.array([d.weekday() for d in days])
        columns += [(weekday == k).astype(float) for k in range(1, 7)]
    return np.column_stack(columns)


def fit(days: list[date], values: list[float] | np.ndarray, weekly: bool | None = None) -> Fit:
    """Fit the model on observed (day, value) pairs; `weekly=None` picks by history length."""
    if len(days) < MIN_DAYS:
        raise ValueError(f"need at least {MIN_DAYS} observed days, have {len(days)}")
    if weekly is None:
        weekly = (days[-1] - days[0]).days + 1 >= WEEKLY_MIN_DAYS and len(days) >= WEEKLY_MIN_DAYS
    y = np.asarray(values, dtype=float)
    x = design_matrix(days, days[0], weekly)
    xtx_inv = np.linalg.pinv(x.T @ x)
    beta = xtx_inv @ x.T @ y
    residuals = y - x @ beta
    dof = len(y) - np.linalg.matrix_rank(x)
    residual_std = float(np.sqrt(residuals @ residuals / dof)) if dof > 0 else 0.0
    return Fit(days[0], weekly, beta, xtx_inv, residual_std, int(dof))


@dataclass(frozen=True)
class BacktestScore:
    origins: int
    horizon: int
    mae: float
    mape: float | None
    naive_mae: float


def backtest(days: list[date], values: list[float] | np.ndarray, horizon: int, max_origins: int = 14,
             weekly: bool | None = None) -> BacktestScore | None:
    """Rolling-origin evaluation: refit on days[:k], forecast the next `horizon` observed days."""
    y = np.asarray(values, dtype=float)
    n = len(y)
    min_train = max(MIN_DAYS + 2, WEEKLY_MIN_DAYS if weekly else MIN_DAYS + 2)
    first_origin = max(min_train, n - max_origins)
    errors: list[float] = []
    pct: list[float] = []
    naive: list[float] = []
    origins = 0
    for k in range(first_origin, n):
        train_days, test_days = days[:k], days[k : k + horizon]
        use_weekly = weekly if weekly is not None else None
        model = fit(train_days, y[:k], use_weekly)
        predicted, _, _ = model.predict(test_days)
        actual = y[k : k + horizon]
        errors.extend(np.abs(predicted - actual))
        naive.extend(np.abs(y[k - 1] - actual))
        pct.extend(np.abs(predicted - actual)[actual != 0] / np.abs(actual[actual != 0]))
        origins += 1
    if not origins:
        return None
    return BacktestScore(
        origins=origins,
        horizon=horizon,
        mae=float(np.mean(errors)),
        mape=float(np.mean(pct)) if pct else None,
        naive_mae=float(np.mean(naive)),
    )


def future_days(last_day: date, days_ahead: int) -> list[date]:
    return [last_day + timedelta(days=i) for i in range(1, days_ahead + 1)]
