"""SDM metrics against hand-computed values and scikit-learn."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, roc_auc_score

from botaclip.sdm import metrics as M


def test_roc_auc_hand_computed_with_ties():
    y = [1, 1, 0, 0, 0]
    s = [0.9, 0.4, 0.4, 0.2, 0.1]
    # Pairs (pres, abs): (0.9 beats all 3) + (0.4: beats 0.2, 0.1, ties 0.4 -> 2.5) = 5.5 of 6
    assert M.roc_auc(y, s) == pytest.approx(5.5 / 6)


def test_roc_auc_matches_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 2)  # rounding makes many ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_one_class_is_nan():
    assert np.isnan(M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert np.isnan(M.roc_auc([0, 0], [0.1, 0.2]))


def test_threshold_metrics_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.05])
    m = M.threshold_metrics(y, s, 0.5)
    # predicted present: 0.9, 0.8, 0.7 -> TP=2, FP=1, FN=1, TN=3
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["tss"] == pytest.approx(2 / 3 + 3 / 4 - 1)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["f1"] == pytest.approx(f1_score(y, s >= 0.5))


def test_best_threshold_maximises_tss_by_brute_force():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.5 * y
    t = M.best_tss_threshold(y, s)
    best = max(M.threshold_metrics(y, s, c)["tss"] for c in np.unique(s))
    assert M.tss(y, s, t) == pytest.approx(best)
    assert M.tss(y, s) == pytest.approx(best)


def test_best_threshold_separable_data_gives_tss_one():
    y = [0, 0, 0, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.7]
    t = M.best_tss_threshold(y, s)
    assert 0.3 < t <= 0.6
    assert M.tss(y, s, t) == 1.0


def test_tss_threshold_from_training_applied_to_test():
    # The training threshold (0.6) applied to a test fold gives sens 1/2, spec 1 -> TSS 0.5, not the test optimum 1.
    t = M.best_tss_threshold([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9])
    assert t == 0.6
    assert M.tss([0, 0, 1, 1], [0.1, 0.3, 0.5, 0.7], t) == pytest.approx(0.5)


def test_boyce_perfect_ranking_is_one_and_reversed_is_minus_one():
    cells = np.linspace(0, 1, 1001)
    # Presences at every cell, cell i repeated i times: density increasing with suitability.
    presences = np.repeat(cells, np.arange(1001))
    assert M.boyce_index(presences, cells) == pytest.approx(1.0)
    assert M.boyce_index(1 - presences, cells) == pytest.approx(-1.0)


def test_boyce_hand_computed_small_case():
    evals = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    pres = np.array([0.25, 0.25, 1.0])
    curve = M.boyce_curve(pres, evals, n_windows=3, window_fraction=0.5)
    # windows [0, .5], [.25, .75], [.5, 1]
    np.testing.assert_allclose(curve.starts, [0, 0.25, 0.5])
    np.testing.assert_allclose(curve.ends, [0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.predicted, [2 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(curve.expected, [3 / 5, 3 / 5, 3 / 5])
    np.testing.assert_allclose(curve.ratio, [10 / 9, 10 / 9, 5 / 9])
    expected = stats.spearmanr([0.25, 0.5, 0.75], [10 / 9, 10 / 9, 5 / 9])[0]
    assert M.boyce_index(pres, evals, n_windows=3, window_fraction=0.5) == pytest.approx(expected)


def test_boyce_keeps_highest_window_unlike_ecospat():
    # The only windows that differ are at the top: presences sit on the single highest cell.
    evals = np.concatenate([np.linspace(0, 0.8, 81), [1.0]])
    pres = np.array([0.5, 1.0, 1.0, 1.0])
    curve = M.boyce_curve(pres, evals)
    assert curve.kept[-1] and curve.ends[-1] == 1.0
    assert curve.ratio[-1] == pytest.approx((3 / 4) / (1 / 82))
    # Without the top window the ratios would be flat-then-zero; with it the index is clearly positive.
    assert M.boyce_index(pres, evals) > 0


def test_boyce_drops_windows_without_evaluation_cells():
    evals = np.array([0.0, 0.05, 0.95, 1.0])  # a gap in the middle: those windows are dropped, not zero
    pres = np.array([0.95, 1.0])
    curve = M.boyce_curve(pres, evals)
    assert (~curve.kept).sum() > 0
    assert np.isnan(curve.ratio[~curve.kept]).all()
    assert M.boyce_index(pres, evals) == pytest.approx(
        stats.spearmanr(curve.centres[curve.kept], curve.ratio[curve.kept])[0])


def test_boyce_degenerate_is_nan():
    assert np.isnan(M.boyce_index([], [0.1, 0.2]))
    assert np.isnan(M.boyce_index([0.5], [0.5, 0.5]))  # no range


def test_spearman_and_mae():
    y = [0, 1, 2, 5]
    p = [0.5, 1.5, 1.0, 6.0]
    assert M.spearman(y, p) == pytest.approx(stats.spearmanr(y, p)[0])
    assert M.mae(y, p) == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    assert np.isnan(M.spearman([1, 1, 1], [1, 2, 3]))
