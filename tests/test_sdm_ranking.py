"""The representation benchmark: feature sets ranked per species, paired tests against the best, Friedman test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from botaclip.sdm import compare
from botaclip.sdm.ranking import rank_sets


def test_ranks_tests_and_friedman_by_hand():
    # 5 species x 3 sets, AUC (higher is better). Ranks per species, worked by hand:
    #   s1: a .90 b .80 c .70 -> 1 2 3      s2: a .85 b .86 c .60 -> 2 1 3     s3: a .80 b .70 c .75 -> 1 3 2
    #   s4: a .95 b .90 c .50 -> 1 2 3      s5: a .70 b .65 c .60 -> 1 2 3
    # rank sums a 6, b 10, c 14 -> mean ranks 1.2, 2.0, 2.8; best a.
    # Friedman chi2 = 12 / (n k (k+1)) * sum(R_j^2) - 3 n (k+1) = 12/60 * (36+100+196) - 60 = 6.4, df 2,
    # p = exp(-6.4 / 2) = 0.040762 (chi2 with 2 df).
    # b vs a: differences b - a = -.10 +.01 -.10 -.05 -.05: b wins once, loses 4 times; Wilcoxon (exact, n 5):
    # |d| ranks .01->1, .05,.05->2.5,2.5, .10,.10->4.5,4.5; W+ = 1 -> two-sided p = 2 * P(W+ <= 1) = 2 * 2/32.
    # c vs a: c loses on all 5 -> W+ = 0 -> p = 2/32 = 0.0625. Holm over {0.125, 0.0625}: 0.125 and 0.125.
    scores = {"s1": {"a": .90, "b": .80, "c": .70}, "s2": {"a": .85, "b": .86, "c": .60},
              "s3": {"a": .80, "b": .70, "c": .75}, "s4": {"a": .95, "b": .90, "c": .50},
              "s5": {"a": .70, "b": .65, "c": .60}, "s6": {"a": .70, "b": np.nan, "c": .60}}
    r = rank_sets(scores, ["a", "b", "c"], "auc", "logistic")
    assert r.n_species == 5 and r.best == "a"  # s6 (no score for b) is left out
    assert [s.features for s in r.sets] == ["a", "b", "c"]
    assert [s.mean_rank for s in r.sets] == pytest.approx([1.2, 2.0, 2.8])
    assert r.friedman_statistic == pytest.approx(6.4) and r.friedman_p == pytest.approx(np.exp(-3.2))
    b, c = r.sets[1], r.sets[2]
    assert (b.wins, b.losses, b.ties) == (1, 4, 0) and (c.wins, c.losses, c.ties) == (0, 5, 0)
    assert c.p_vs_best == pytest.approx(0.0625)
    assert b.p_vs_best == pytest.approx(0.125, abs=0.02)  # scipy's normal approximation under the tie
    assert c.p_vs_best_holm == pytest.approx(2 * 0.0625) and b.p_vs_best_holm >= c.p_vs_best_holm
    assert r.ranks["s3"] == {"a": 1.0, "b": 3.0, "c": 2.0}


def test_lower_is_better_and_two_sets():
    scores = {f"s{i}": {"x": 1.0 + i, "y": 2.0 + i} for i in range(4)}  # MAE: x always lower -> x best
    r = rank_sets(scores, ["y", "x"], "mae")
    assert r.best == "x" and r.sets[1].losses == 4
    assert np.isnan(r.friedman_p) and "3 or more feature sets" in r.note


def test_compare_ranks_three_feature_sets_in_reports(landscape, tmp_path):
    res = compare(landscape["store"], landscape["root"] / "plots.csv", ["noise", "good", "emb"],
                  species=None, models=["logistic"], folds=3, out=tmp_path / "cmp", min_presences=20)
    auc = next(r for r in res.rankings() if r.metric == "auc")
    assert auc.n_species == len(res.species) >= 2
    assert auc.sets[-1].features == "noise"  # the set without the gradient ranks last
    assert auc.best in ("good", "emb") and np.isfinite(auc.friedman_p)
    doc = json.loads((tmp_path / "cmp" / "report.json").read_text())
    js = next(r for r in doc["ranking"] if r["metric"] == "auc" and r["model"] == "logistic")
    assert js["best"] == auc.best and js["friedman_p"] == pytest.approx(auc.friedman_p)
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Ranking of feature sets" in md and f"### logistic | auc: best {auc.best}" in md
    assert "Friedman chi2" in md


def test_cli_compare_prints_the_ranking(landscape, tmp_path, cli_runner):
    from botaclip.cli import cli

    args = ["sdm", "compare", "--store", str(landscape["store"]), "--occurrences",
            str(landscape["root"] / "plots.csv"), "--species", "Alpha prima", "--species", "Beta secunda",
            "--features", "noise", "--features", "good", "--features", "emb", "--models", "logistic",
            "--folds", "3", "--out", str(tmp_path / "cmp")]
    r = cli_runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("ranking logistic auc over 2 species"))
    assert line.index("noise (") > line.index("good (") and "Friedman p = " in line
