"""Statistics for a handful of seeds: location, spread, bootstrap intervals, paired tests.

Studies here have 2-5 seeds per arm, so nothing assumes normality: the interval of a mean is a
percentile bootstrap with a fixed generator (the same data always gives the same interval, so a
regenerated results.md only changes when the data does), and the paired comparison uses the exact
sign-flip permutation test, which enumerates all 2^n sign patterns instead of sampling them.
With n paired seeds the smallest two-sided p it can give is 2 / 2^n (0.25 for 3 seeds), so with
few seeds p describes the data rather than deciding anything.

Both come from scipy.stats (bootstrap, permutation_test); what this module adds is the choice of
method, the fixed seed and None where a statistic does not exist. scipy's bootstrap draws its
resamples as one rng.integers(0, n, (resamples, n)) call and takes linear-interpolation
quantiles, so the intervals are the same numbers our earlier hand-written bootstrap gave for the
same seed. scipy is imported inside the functions: importing scipy.stats costs ~0.5 s, and
`bertlab report --help` should not pay it.
"""

from __future__ import annotations

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
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap): `resamples` draws of n
    values with replacement from a fixed-seed generator; None for a single value (one value has
    no spread to resample)."""
    array = _array(values)
    if array.size < 2:
        return None
    from scipy import stats as scipy_stats

    result = scipy_stats.bootstrap((array,), np.mean, n_resamples=resamples,
                                   confidence_level=confidence, method="percentile",
                                   rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
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
    if diffs.size == 1:
        return 1.0  # +d and -d have the same |mean| (scipy refuses a sample of one)
    from scipy import stats as scipy_stats

    # One sample with permutation_type="samples" flips signs; n_resamples=inf enumerates all
    # 2^n patterns. scipy's two-sided p is 2 min(P(T <= t), P(T >= t)); the sign-flip null is
    # symmetric, so that is P(|T| >= |t|), the share of patterns with |mean| >= |observed mean|.
    # scipy compares with a relative tolerance, so patterns equal to the observed one are not
    # lost to rounding.
    result = scipy_stats.permutation_test((diffs,), np.mean, permutation_type="samples",
                                          n_resamples=np.inf, alternative="two-sided",
                                          vectorized=True)
    return float(result.pvalue)


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
