"""GrowthBook-compatible assignment hashing: pure functions, no I/O.

The same user in the same experiment gets the same variant in every process
and in every GrowthBook SDK, because the bucket is a pure function of
(hash seed, user id, hash version):

- `fnv1a32`: 32-bit FNV-1a over the characters of a string (code points,
  exactly as GrowthBook's Python SDK; identical to the JS SDK's UTF-16 code
  units for every character in the Basic Multilingual Plane).
- hash version 2 (default): `(fnv(str(fnv(seed + value))) % 10000) / 10000`;
  hash version 1 (legacy): `(fnv(value + seed) % 1000) / 1000`.
- bucket ranges come from cumulative weights; coverage shrinks each range's
  width but not its start, so raising coverage later never moves a user who
  was already in (GrowthBook's `getBucketRanges`).
- namespaces (mutually exclusive experiments) use hash version 1 on
  `"__" + namespace` and keep users whose value falls in `[start, end)`.

The `*_batch` functions are the vectorised path for high-volume callers (the
stream processor, back-fills): they hash a whole list of user ids at once with
numpy, by running the FNV byte loop over the columns of a padded code-point
matrix, and return exactly what the scalar functions return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FNV_OFFSET_BASIS = 0x811C9DC5
FNV_PRIME = 0x01000193
HASH_VERSIONS = (1, 2)
# Sums of weights within this distance of 1 are accepted by GrowthBook's SDKs;
# outside it they fall back to equal weights. The registry itself is stricter.
GROWTHBOOK_WEIGHT_SUM_TOLERANCE = 0.01

Range = tuple[float, float]
Namespace = tuple[str, float, float]


# --------------------------------------------------------------------------- scalar


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of `text`, one round per character (code point)."""
    hval = FNV_OFFSET_BASIS
    codes = text.encode() if text.isascii() else map(ord, text)
    for code in codes:
        hval = ((hval ^ code) * FNV_PRIME) & 0xFFFFFFFF
    return hval


def gb_hash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook's `hash(seed, value, version)`: a float in [0, 1), or None for an unknown version."""
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def equal_weights(num_variations: int) -> list[float]:
    if num_variations < 1:
        return []
    return [1 / num_variations] * num_variations


def bucket_ranges(num_variations: int, coverage: float = 1.0, weights: Sequence[float] | None = None) -> list[Range]:
    """GrowthBook's `getBucketRanges`: one [start, end) per variation.

    Coverage is clamped to [0, 1]. Weights of the wrong length, or whose sum is
    not within 0.01 of 1, are replaced by equal weights (the SDKs do the same).
    """
    coverage = min(max(coverage, 0.0), 1.0)
    if weights is None or len(weights) != num_variations:
        weights = equal_weights(num_variations)
    total = sum(weights)
    if total < 1 - GROWTHBOOK_WEIGHT_SUM_TOLERANCE or total > 1 + GROWTHBOOK_WEIGHT_SUM_TOLERANCE:
        weights = equal_weights(num_variations)
    ranges: list[Range] = []
    cumulative = 0.0
    for weight in weights:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def in_range(n: float, bucket: Range) -> bool:
    return bucket[0] <= n < bucket[1]


def choose_variation(n: float, ranges: Sequence[Range]) -> int:
    """Index of the first range containing `n`, or -1 when `n` falls in a coverage gap."""
    for index, bucket in enumerate(ranges):
        if in_range(n, bucket):
            return index
    return -1


def in_namespace(user_id: str, namespace: Namespace) -> bool:
    """True when the user falls in the namespace's [start, end) slice (hash version 1 on "__" + name)."""
    n = gb_hash("__" + namespace[0], user_id, 1)
    return n is not None and namespace[1] <= n < namespace[2]


@dataclass(frozen=True)
class AssignmentSpec:
    """What the hash needs to know about an experiment (no targeting, no status)."""

    seed: str
    weights: tuple[float, ...]
    coverage: float = 1.0
    hash_version: int = 2
    namespace: Namespace | None = None
    ranges: tuple[Range, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.hash_version not in HASH_VERSIONS:
            raise ValueError(f"hash_version must be one of {HASH_VERSIONS}, got {self.hash_version}")
        if len(self.weights) < 1:
            raise ValueError("an experiment needs at least one variation")
        object.__setattr__(self, "ranges", tuple(bucket_ranges(len(self.weights), self.coverage, self.weights)))


@dataclass(frozen=True)
class Assignment:
    """The hash's verdict for one user: `variation` is an index into the weights, -1 when not in."""

    variation: int
    bucket: float | None
    reason: str

    @property
    def in_experiment(self) -> bool:
        return self.variation >= 0


def assign(spec: AssignmentSpec, user_id: str) -> Assignment:
    """Which variation `user_id` gets under `spec`, GrowthBook's order: namespace, then hash and ranges."""
    if spec.namespace is not None and not in_namespace(user_id, spec.namespace):
        name, start, end = spec.namespace
        return Assignment(-1, None, f"not in namespace {name!r} slice [{start:g}, {end:g})")
    n = gb_hash(spec.seed, user_id, spec.hash_version)
    assert n is not None  # the spec validated the version
    variation = choose_variation(n, spec.ranges)
    if variation < 0:
        return Assignment(-1, n, f"bucket {n:.4f} is outside the covered ranges (coverage {spec.coverage:g})")
    start, end = spec.ranges[variation]
    return Assignment(variation, n, f"bucket {n:.4f} falls in variation {variation}'s range [{start:.4f}, {end:.4f})")


# --------------------------------------------------------------------------- batch (numpy)

_PRIME = np.uint32(FNV_PRIME)
_POW10 = [np.uint32(10**k) for k in range(10)]


def _fnv_state(prefix: str) -> int:
    """FNV-1a state after consuming `prefix` (so a shared seed prefix is hashed once)."""
    hval = FNV_OFFSET_BASIS
    for ch in prefix:
        hval = ((hval ^ ord(ch)) * FNV_PRIME) & 0xFFFFFFFF
    return hval


def _code_columns(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(columns, lengths): columns[j] holds the j-th code point of every value (0 past its end)."""
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    width = int(lengths.max()) if len(values) else 0
    if width == 0:
        return np.zeros((0, len(values)), dtype=np.uint32), lengths
    # A fixed-width unicode array is a UCS-4 matrix; transposed so each column is contiguous.
    matrix = np.array(values, dtype=f"<U{width}").view(np.uint32).reshape(len(values), width)
    return np.ascontiguousarray(matrix.T), lengths


def _fnv_columns(h: np.ndarray, columns: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Advance FNV states `h` (in place when possible) by each row's own characters."""
    shortest = int(lengths.min()) if len(lengths) else 0
    scratch = np.empty_like(h)
    for j, column in enumerate(columns):
        if j < shortest:  # every value is at least this long: no mask needed
            np.bitwise_xor(h, column, out=h)
            np.multiply(h, _PRIME, out=h)
        else:
            np.bitwise_xor(h, column, out=scratch)
            np.multiply(scratch, _PRIME, out=scratch)
            np.copyto(h, scratch, where=lengths > j)
    return h


def _fnv_suffix(h: np.ndarray, suffix: str) -> np.ndarray:
    for ch in suffix:
        np.bitwise_xor(h, np.uint32(ord(ch)), out=h)
        np.multiply(h, _PRIME, out=h)
    return h


def _fnv_of_decimal(h1: np.ndarray) -> np.ndarray:
    """fnv1a32(str(h1)) for every element, without building strings."""
    h2 = np.full(h1.shape, FNV_OFFSET_BASIS, dtype=np.uint32)
    scratch = np.empty_like(h2)
    for k in range(9, -1, -1):  # most significant digit first
        digit = (h1 // _POW10[k]) % np.uint32(10) + np.uint32(48)
        np.bitwise_xor(h2, digit, out=scratch)
        np.multiply(scratch, _PRIME, out=scratch)
        if k == 0:
            h2 = scratch
        else:  # skip leading zeros: only numbers with more than k digits have this digit
            np.copyto(h2, scratch, where=h1 >= _POW10[k])
    return h2


def fnv1a32_batch(values: Sequence[str], prefix: str = "", suffix: str = "") -> np.ndarray:
    """`fnv1a32(prefix + v + suffix)` for every v, as a uint32 array."""
    columns, lengths = _code_columns(values)
    h = np.full(len(values), _fnv_state(prefix), dtype=np.uint32)
    with np.errstate(over="ignore"):
        _fnv_columns(h, columns, lengths)
        _fnv_suffix(h, suffix)
    return h


def hash_batch(seed: str, values: Sequence[str], version: int = 2) -> np.ndarray:
    """`gb_hash(seed, v, version)` for every v, as a float64 array in [0, 1)."""
    if version == 2:
        h1 = fnv1a32_batch(values, prefix=seed)
        with np.errstate(over="ignore"):
            h2 = _fnv_of_decimal(h1)
        return (h2 % np.uint32(10000)).astype(np.float64) / 10000
    if version == 1:
        h = fnv1a32_batch(values, suffix=seed)
        return (h % np.uint32(1000)).astype(np.float64) / 1000
    raise ValueError(f"hash_version must be one of {HASH_VERSIONS}, got {version}")


def in_namespace_batch(values: Sequence[str], namespace: Namespace) -> np.ndarray:
    """`in_namespace(v, namespace)` for every v, as a bool array."""
    n = hash_batch("__" + namespace[0], values, 1)
    return (n >= namespace[1]) & (n < namespace[2])


def choose_variation_batch(buckets: np.ndarray, ranges: Sequence[Range]) -> np.ndarray:
    """`choose_variation(b, ranges)` for every bucket, as an int16 array (-1 = not covered)."""
    chosen = np.full(buckets.shape, -1, dtype=np.int16)
    for index in range(len(ranges) - 1, -1, -1):  # the first matching range wins
        start, end = ranges[index]
        chosen[(buckets >= start) & (buckets < end)] = index
    return chosen


def assign_batch(spec: AssignmentSpec, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(variations, buckets) for many users at once; variation -1 = not in the experiment.

    Equivalent to `[assign(spec, u) for u in user_ids]`; buckets are NaN for
    users excluded by the namespace.
    """
    buckets = hash_batch(spec.seed, user_ids, spec.hash_version)
    variations = choose_variation_batch(buckets, spec.ranges)
    if spec.namespace is not None:
        inside = in_namespace_batch(user_ids, spec.namespace)
        variations[~inside] = -1
        buckets[~inside] = np.nan
    return variations, buckets
