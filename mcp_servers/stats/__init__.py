"""NeonBlue statistics engine: trustworthy experiment inference on sufficient statistics.

A pure library (no I/O): inputs are per-variant sufficient statistics
(n, Σx, Σx², cross-products for ratio and CUPED metrics) computed in SQL, so an
analysis costs the same for a thousand units or a billion. Every function
returns a frozen result object; impossible input gives a result whose
``error`` says why (see :mod:`.messages`), never an exception or a NaN.

Anchored on GrowthBook's gbstats (its conventions and published test
vectors). Public API:

==========================  =====================================================
``compare``                 Welch t-test, absolute or relative (delta method), 1/2-sided
``sequential_compare``      always-valid asymptotic confidence sequence (N*-tuned)
``bayesian_compare``        Gaussian posterior: chance to win, risk, credible interval
``cuped_adjust``            pooled-θ CUPED for mean and ratio metrics
``srm_check``               χ² sample-ratio-mismatch check, flagged at p < 0.001
``holm`` / ``benjamini_hochberg``  multiple-testing adjustment with adjusted CIs
``power`` / ``mde`` / ``sample_size`` / ``days_left``  planning and duration
``conditional_power``       futility: P(significant at the end | the current trend)
``thompson_weights``        bandit traffic weights (floor, burn-in, seeded)
``non_inferiority``         guardrail test with a margin
``segment_effects``         per-segment effects (Holm/BH), segment-vs-complement tests, Cochran's Q
``interaction_contrast``    2×2 interaction of two experiments sharing users (``flag_interactions``: Holm)
==========================  =====================================================
"""

from .bandits import BanditResult, thompson_weights
from .bayesian import BayesianConfig, BayesianResult, GaussianPrior, bayesian_compare
from .cuped import CupedResult, cuped_adjust
from .frequentist import FrequentistConfig, TestResult, compare
from .guardrails import NonInferiorityResult, non_inferiority
from .heterogeneity import SegmentAnalysis, SegmentInput, segment_effects
from .interactions import InteractionResult, flag_interactions, interaction_contrast
from .multiple_testing import MultipleTestingResult, benjamini_hochberg, holm
from .power_analysis import (
    ConditionalPowerResult,
    DaysLeftResult,
    PowerResult,
    SampleSizeResult,
    conditional_power,
    days_left,
    mde,
    power,
    sample_size,
)
from .sequential import SequentialConfig, sequential_compare
from .srm import SRM_THRESHOLD, SrmResult, srm_check
from .statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedRatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

__all__ = [
    # statistics
    "SampleMeanStatistic",
    "ProportionStatistic",
    "RatioStatistic",
    "RegressionAdjustedStatistic",
    "RegressionAdjustedRatioStatistic",
    "Statistic",
    # comparisons
    "compare",
    "FrequentistConfig",
    "TestResult",
    "sequential_compare",
    "SequentialConfig",
    "bayesian_compare",
    "BayesianConfig",
    "BayesianResult",
    "GaussianPrior",
    "cuped_adjust",
    "CupedResult",
    "non_inferiority",
    "NonInferiorityResult",
    # experiment-level checks
    "srm_check",
    "SrmResult",
    "SRM_THRESHOLD",
    "holm",
    "benjamini_hochberg",
    "MultipleTestingResult",
    # planning
    "power",
    "mde",
    "sample_size",
    "days_left",
    "conditional_power",
    "ConditionalPowerResult",
    "PowerResult",
    "SampleSizeResult",
    "DaysLeftResult",
    # bandits
    "thompson_weights",
    "BanditResult",
    # segments and interactions
    "segment_effects",
    "SegmentInput",
    "SegmentAnalysis",
    "interaction_contrast",
    "flag_interactions",
    "InteractionResult",
]
