"""Error messages returned (never raised) by the statistics engine.

Every failed computation returns its normal result type with ``error`` set to
one of these constants, so callers can branch on identity (``r.error ==
ZERO_VARIANCE``) and an LLM reading the result gets a sentence it can act on.
Each message starts with a stable upper-case code.
"""

# Input statistics
N_TOO_SMALL = "N_TOO_SMALL: every variant needs at least 2 units (n >= 2) before it can be compared"
NON_FINITE_INPUT = "NON_FINITE_INPUT: a sufficient statistic is NaN or infinite"
NON_INTEGER_N = "NON_INTEGER_N: n must be a whole number of units"
INVALID_PROPORTION = "INVALID_PROPORTION: a proportion needs 0 <= sum <= n"
ZERO_VARIANCE = "ZERO_VARIANCE: a variant has zero (or negative) variance, so its uncertainty cannot be estimated"
ZERO_BASELINE = "ZERO_BASELINE: the control mean is zero, so a relative lift is undefined; use an absolute effect"
ZERO_DENOMINATOR = "ZERO_DENOMINATOR: a ratio metric's denominator mean is zero"
INCONSISTENT_N = "INCONSISTENT_N: the parts of a ratio or CUPED statistic have different n"
MIXED_STATISTIC_TYPES = (
    "MIXED_STATISTIC_TYPES: control and treatment must be the same kind of statistic "
    "(mean/proportion, ratio, CUPED mean or CUPED ratio)"
)
NUMERICAL_RANGE = "NUMERICAL_RANGE: the inputs are too extreme to compute in double precision"
UNSUPPORTED_STATISTIC = "UNSUPPORTED_STATISTIC: not a statistic this engine knows"

# Configuration
INVALID_ALPHA = "INVALID_ALPHA: alpha must be strictly between 0 and 1"
INVALID_ALTERNATIVE = "INVALID_ALTERNATIVE: alternative must be 'two-sided', 'greater' or 'less'"
INVALID_TEST_VALUE = "INVALID_TEST_VALUE: the null effect (test_value) must be a finite number"
INVALID_TUNING = "INVALID_TUNING: the sequential tuning parameter N* must be a positive number of units"
ONE_SIDED_ALPHA_TOO_BIG = "ONE_SIDED_ALPHA_TOO_BIG: one-sided sequential tests need alpha < 0.5"
INVALID_PRIOR = "INVALID_PRIOR: a proper prior needs a finite mean and a positive, finite variance"
INVALID_MARGIN = "INVALID_MARGIN: the non-inferiority margin must be a positive, finite number"

# Traffic split / SRM
TOO_FEW_VARIANTS = "TOO_FEW_VARIANTS: at least two variants are needed"
LENGTH_MISMATCH = "LENGTH_MISMATCH: counts and weights must have the same length"
NEGATIVE_COUNT = "NEGATIVE_COUNT: unit counts must be non-negative whole numbers"
INVALID_WEIGHT = "INVALID_WEIGHT: weights must be finite and non-negative"
WEIGHTS_NOT_NORMALISED = "WEIGHTS_NOT_NORMALISED: weights must sum to 1"
NO_UNITS = "NO_UNITS: no units have been observed yet"
INVALID_THRESHOLD = "INVALID_THRESHOLD: the SRM threshold must be strictly between 0 and 1"

# Multiple testing
EMPTY_FAMILY = "EMPTY_FAMILY: there are no valid p-values to adjust"
INVALID_P_VALUE = "INVALID_P_VALUE: p-values must lie in [0, 1]"
MIXED_FAMILY = "MIXED_FAMILY: pass either only p-values or only test results"
INVALID_CORRECTION = "INVALID_CORRECTION: correction must be 'holm' or 'benjamini-hochberg'"

# Interactions (2x2 contrast of two experiments)
INTERACTION_CELLS = "INTERACTION_CELLS: the interaction contrast needs a 2x2 table of statistics, each with n >= 2"

# Contextual bandit
INVALID_ARMS = "INVALID_ARMS: every context needs the same arms as the global table, with 0 <= successes <= trials"
INVALID_PRIOR_STRENGTH = "INVALID_PRIOR_STRENGTH: the pooling strength bounds need 0 < min <= max (finite)"

# Power and duration
INVALID_POWER = "INVALID_POWER: target power must be strictly between alpha and 1"
INVALID_MDE = "INVALID_MDE: the minimum detectable effect must be a positive, finite number"
MDE_OUT_OF_RANGE = (
    "MDE_OUT_OF_RANGE: the effect would move the rate out of (0, 1): baseline x (1 +/- mde) must stay "
    "strictly between 0 and 1; plan for a smaller effect"
)
INVALID_SAMPLE_SIZE = "INVALID_SAMPLE_SIZE: n per variant must be at least 2"
INVALID_BASELINE = (
    "INVALID_BASELINE: the baseline needs a finite mean (non-zero for relative effects; "
    "in (0, 1) for a proportion) and a positive variance"
)
INVALID_TRAFFIC = "INVALID_TRAFFIC: units per day must be a positive, finite number"
INVALID_VARIANT_COUNT = "INVALID_VARIANT_COUNT: n_variants must be an integer >= 2"
INVALID_COMPARISONS = "INVALID_COMPARISONS: n_comparisons must be an integer >= 1"
MDE_NOT_ATTAINABLE = "MDE_NOT_ATTAINABLE: no effect size reaches the target power with this sample"
SAMPLE_SIZE_NOT_ATTAINABLE = (
    "SAMPLE_SIZE_NOT_ATTAINABLE: the target power needs more than 10^12 units per variant"
)

# Bandits
INVALID_FLOOR = "INVALID_FLOOR: min_weight must be >= 0 and min_weight * arms must be < 1"
INVALID_N_SAMPLES = "INVALID_N_SAMPLES: n_samples must be an integer >= 100"
INVALID_SEED = "INVALID_SEED: the seed must be a whole number"
INVALID_MIN_N = "INVALID_MIN_N: min_n must be an integer >= 2"
INVALID_CURRENT_WEIGHTS = (
    "INVALID_CURRENT_WEIGHTS: current weights need one non-negative entry per arm, summing to 1"
)

# Reasons (not errors): why bandit weights were not updated
BANDIT_MIN_N_NOT_REACHED = "MIN_N_NOT_REACHED: every arm needs min_n units before the weights are updated"
