"""bertlab.lab.stats against values worked out by hand."""

import math

import numpy as np
import pytest

from bertlab.lab import stats


def test_median_mean_sample_std():
    assert stats.median([1, 2, 4]) == 2.0
    assert stats.mean([1, 2, 4]) == pytest.approx(7 / 3)
    # deviations -4/3, -1/3, 5/3: squares sum to 42/9, over n - 1 = 2 -> 7/3
    assert stats.std([1, 2, 4]) == pytest.approx(math.sqrt(7 / 3))
    assert stats.std([5.0]) is None
    assert stats.median([1, 2, 4, 10]) == 3.0
    with pytest.raises(ValueError, match="empty"):
        stats.mean([])


def test_sign_flip_p_enumerates_all_patterns():
    # +-1 +-2 +-3: sums 6 4 2 0 0 -2 -4 -6; |sum| >= 6 in 2 of 8 patterns
    assert stats.sign_flip_p([1, 2, 3]) == 0.25
    # 5 -1 2 (sum 6): |sums| 6 2 8 4 4 8 2 6 -> 4 of 8 reach 6
    assert stats.sign_flip_p([5, -1, 2]) == 0.5
    assert stats.sign_flip_p([3, 1]) == 0.5          # |sums| 4 2 2 4
    assert stats.sign_flip_p([1, -1]) == 1.0         # observed mean 0: every pattern reaches it
    assert stats.sign_flip_p([0.1, 0.2, 0.3]) == 0.25  # no pattern lost to rounding
    assert stats.sign_flip_p(np.arange(1, 7)) == 2 / 64
    assert stats.sign_flip_p([-1, -2, -3]) == 0.25   # two-sided
    assert stats.sign_flip_p([]) is None


def test_bootstrap_ci():
    assert stats.bootstrap_ci([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7))
    # two values: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the 2.5 % and
    # 97.5 % quantiles of 10,000 draws are 0 and 1
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_ci([3.0]) is None
    sample = [80.1, 81.5, 79.2, 83.0, 80.7]
    low, high = stats.bootstrap_ci(sample)
    assert min(sample) <= low < np.mean(sample) < high <= max(sample)
    assert stats.bootstrap_ci(sample) == (low, high)              # fixed generator
    assert stats.bootstrap_ci(sample, seed=1) != (low, high)


def test_paired_uses_common_seeds_only():
    pair = stats.paired({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.0, 1: 0.0, 3: 9.0})
    assert pair["seeds"] == [0, 1] and pair["differences"] == [1.0, 2.0]
    assert pair["mean"] == 1.5
    assert pair["p"] == 0.5                               # |sums| 3 1 1 3
    assert pair["ci"] == (1.0, 2.0)
    assert stats.paired({0: 1.0}, {1: 1.0}) is None


def test_summary():
    s = stats.summary([1, 2, 4])
    assert s["n"] == 3 and s["median"] == 2.0 and s["mean"] == pytest.approx(7 / 3)
    one = stats.summary([5.0])
    assert one["std"] is None and one["ci"] is None


def test_sign_flip_p_of_one_pair_is_one():
    # +d and -d: both patterns reach |d| (scipy's permutation_test refuses a sample of one)
    assert stats.sign_flip_p([2.0]) == 1.0
    assert stats.paired({0: 3.0}, {0: 1.0})["p"] == 1.0
