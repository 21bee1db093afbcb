"""The paired Wilcoxon signed-rank p-value of comparisons and rankings: SciPy's, bit for bit, without its slow path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from botaclip.sdm.signed_rank import wilcoxon_p


def test_tied_differences_give_the_exact_permutation_p_value():
    """|d| = 1, 1, 2, 3 (a tie): the 16 sign patterns, enumerated here by hand, put 6 of 16 sums of positive
    mid-ranks at or below the observed 6 and 12 of 16 at or above it."""
    a, b = np.array([0.6, 0.5, 0.7, 0.2]), np.array([0.5, 0.4, 0.5, 0.5])
    ranks = np.array([1.5, 1.5, 3.0, 4.0])
    observed = 6.0  # the three positive differences
    null = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=4)]
    expected = 2 * min(np.mean([v <= observed for v in null]), np.mean([v >= observed for v in null]))
    assert wilcoxon_p(a, b) == pytest.approx(expected) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(2))
def test_equals_scipy_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(2, 9))
        levels = rng.choice([0.1, 0.2, 0.25, 0.5, 1 / 3], size=3)
        a = rng.choice(levels, n) + rng.choice([0.0, 0.05], n)
        b = rng.choice(levels, n) + (rng.normal(0, 0.01, n) if seed % 2 else 0.0)
        keep = np.abs(a - b) > 1e-12
        if keep.sum() < 2:
            continue
        x, y = a[keep], b[keep]
        assert wilcoxon_p(x, y) == float(stats.wilcoxon(x, y, zero_method="wilcox").pvalue)


@pytest.mark.parametrize("n", [13, 14])
def test_largest_enumerated_sample_and_the_first_approximated(n):
    """13 tied pairs: SciPy's last exact enumeration (8,192 sign patterns); 14: its normal approximation."""
    a = np.r_[np.full(7, 0.4), np.full(n - 7, 0.1)]
    b = np.r_[np.full(7, 0.3), np.full(n - 7, 0.2)] + np.r_[np.zeros(n - 1), 0.05]
    assert wilcoxon_p(a, b) == float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)


def test_tied_small_samples_never_reach_scipys_permutation_test(monkeypatch):
    import botaclip.sdm.signed_rank as signed_rank

    def refuse(*args, **kwargs):
        raise AssertionError("scipy.stats.wilcoxon called for tied differences")

    monkeypatch.setattr(signed_rank.stats, "wilcoxon", refuse)
    assert 0.0 < wilcoxon_p([0.6, 0.5, 0.7, 0.2, 0.9], [0.5, 0.4, 0.5, 0.5, 0.1]) <= 1.0
