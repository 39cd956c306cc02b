"""Statistics for a handful of seeds: location, spread, bootstrap intervals, paired tests.

Studies here have 2-5 seeds per arm, so nothing assumes normality: the interval of a mean is a
percentile bootstrap with a fixed generator (the same data always gives the same interval, so a
regenerated results.md only changes when the data does), and the paired comparison uses the exact
sign-flip permutation test, which enumerates all 2^n sign patterns instead of sampling them.
With n paired seeds the smallest two-sided p it can give is 2 / 2^n (0.25 for 3 seeds), so with
few seeds p describes the data rather than deciding anything.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def _array(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError("statistics of an empty sample")
    return array


def median(values: Sequence[float]) -> float:
    return float(np.median(_array(values)))


def mean(values: Sequence[float]) -> float:
    return float(np.mean(_array(values)))


def std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None for a single value."""
    array = _array(values)
    return float(np.std(array, ddof=1)) if array.size > 1 else None


def bootstrap_ci(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
                 ) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean: `resamples` draws of n values with replacement
    from a fixed-seed generator; None for a single value (one value has no spread to resample)."""
    array = _array(values)
    if array.size < 2:
        return None
    rng = np.random.default_rng(seed)
    index = rng.integers(0, array.size, size=(resamples, array.size))  # (resamples, n)
    means = array[index].mean(axis=1)                                   # (resamples,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def sign_flip_p(differences: Sequence[float]) -> float | None:
    """Exact two-sided p of the paired sign-flip permutation test: the share of the 2^n sign
    patterns whose |mean| is at least the observed |mean| (under no effect each paired
    difference is as likely positive as negative). None for no pairs."""
    diffs = np.asarray(differences, dtype=np.float64).reshape(-1)
    if diffs.size == 0:
        return None
    if diffs.size > 20:
        raise ValueError(f"sign_flip_p enumerates 2^n patterns; n={diffs.size} is too many")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=diffs.size)))  # (2^n, n)
    means = np.abs(signs @ diffs) / diffs.size                                   # (2^n,)
    observed = abs(diffs.mean())
    # a tolerance so that patterns equal to the observed one are not lost to rounding
    tolerance = 1e-12 * max(1.0, float(np.abs(diffs).max()))
    return float(np.mean(means >= observed - tolerance))


def paired(values: dict, baseline: dict) -> dict | None:
    """Paired comparison of two {seed: value} maps over the seeds both have: mean difference
    (values - baseline), its bootstrap interval and the sign-flip p; None without common seeds."""
    common = sorted(set(values) & set(baseline))
    if not common:
        return None
    diffs = np.array([values[s] - baseline[s] for s in common], dtype=np.float64)
    return {"seeds": common, "n": len(common), "differences": diffs.tolist(),
            "mean": float(diffs.mean()), "ci": bootstrap_ci(diffs), "p": sign_flip_p(diffs)}


def summary(values: Sequence[float]) -> dict:
    """n, median, mean, std and bootstrap interval of one arm's per-seed values."""
    array = _array(values)
    return {"n": int(array.size), "median": median(array), "mean": mean(array),
            "std": std(array), "ci": bootstrap_ci(array)}
