"""Small numeric helpers shared by the families.

scipy's ``scipy.stats`` distribution objects cost ~60 µs per scalar call; the
``scipy.special`` ufuncs below compute the same functions (``t.cdf`` is
``stdtr``, ``t.ppf`` is ``stdtrit``) in ~1 µs, which is what keeps a full
experiment analysis well under a millisecond.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from typing import Any

from scipy import special

SQRT_2PI = math.sqrt(2.0 * math.pi)
SQRT_HALF = math.sqrt(0.5)


def norm_cdf(x: float) -> float:
    """Standard normal CDF Φ(x) (via math.erfc: accurate in both tails, 20× faster than a ufunc call)."""
    return 0.5 * math.erfc(-x * SQRT_HALF)


@lru_cache(maxsize=256)
def norm_ppf(p: float) -> float:
    """Standard normal quantile Φ⁻¹(p); cached, since it is called with a handful of alphas."""
    return float(special.ndtri(p))


def t_cdf(x: float, df: float) -> float:
    """Student-t CDF with ``df`` degrees of freedom."""
    return float(special.stdtr(df, x))


def t_ppf(p: float, df: float) -> float:
    """Student-t quantile with ``df`` degrees of freedom."""
    return float(special.stdtrit(df, p))


def chi2_sf(x: float, df: float) -> float:
    """Upper tail of the χ² distribution."""
    return float(special.chdtrc(df, x))


def positive_part_mean(mu: float, sigma: float) -> float:
    """E[max(X, 0)] for X ~ N(mu, sigma²), accurate in both tails.

    Equals σ·g(μ/σ) with g(z) = φ(z) + zΦ(z). For z < 0 the two terms cancel,
    so g is evaluated through the scaled complementary error function
    (erfcx), and for z ≥ 0 through the identity g(z) = z + g(−z).
    """
    if sigma <= 0.0:
        return max(mu, 0.0)
    z = mu / sigma
    if z >= 0.0:
        return sigma * (z + _g_negative(-z))
    return sigma * _g_negative(z)


def _g_negative(z: float) -> float:
    # g(z) = φ(z) + zΦ(z) for z <= 0. The two terms cancel as z → −∞ (relative error ~ z²·ε),
    # so beyond z = −8 use the scaled form exp(−z²/2)·(1/√(2π) + z/2·erfcx(−z/√2)).
    if z > -8.0:
        return math.exp(-0.5 * z * z) / SQRT_2PI + z * 0.5 * math.erfc(-z * SQRT_HALF)
    if z < -38.0:
        return 0.0
    return math.exp(-0.5 * z * z) * (1.0 / SQRT_2PI + 0.5 * z * float(special.erfcx(-z * SQRT_HALF)))


def is_finite(*values: float) -> bool:
    """True when every value is a finite real number."""
    try:
        return all(math.isfinite(v) for v in values)
    except TypeError:
        return False


def is_whole(n: Any) -> bool:
    """True for a finite, integral number (numpy integers and 12.0 included)."""
    try:
        f = float(n)
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f.is_integer()


class Result:
    """What every result of the engine offers: ``ok`` (no ``error``) and a JSON-safe ``as_dict``.

    A base for the frozen, slotted result dataclasses, each of which has an ``error`` field.
    """

    __slots__ = ()
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return jsonable(self)


def jsonable(value: Any) -> Any:
    """Convert a result (nested dataclasses, tuples) to JSON-safe builtins.

    Infinite bounds of one-sided intervals become ``None`` ("unbounded"),
    so the output never contains NaN or Infinity tokens.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
