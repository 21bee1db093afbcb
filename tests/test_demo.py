"""`botaclip demo` end to end at a tiny scale: 1 km region, dofa-tiny, 32 px chips, a few epochs, two seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from botaclip.cli import cli
from botaclip.pipeline.demo import COMPARED, DemoOptions, run_demo, summarise_seeds

# One xdist worker runs this module, so the demo (its module fixture, minutes on 2 cores) is built once.
pytestmark = pytest.mark.xdist_group("demo")

TINY = dict(backbone="dofa-tiny", size_km=1.0, plots=300, size_px=32, views=1, epochs=4, batch_size=64,
            plant_species=3, workers=1, seeds=2, folds=3, sdm_jobs=1)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    report = run_demo(DemoOptions(out=out, **TINY), echo=lines.append)
    return out, report, lines


def test_report_json_has_three_tasks_three_sets_and_seeds(tiny_demo):
    out, report, _ = tiny_demo
    data = json.loads((out / "report.json").read_text())
    assert set(data["tasks"]) == {"plants", "butterflies", "soil"}
    assert {t: data["tasks"][t]["metric"] for t in data["tasks"]} == {
        "plants": "tss", "butterflies": "boyce", "soil": "spearman"}
    for task in data["tasks"].values():
        for key in (task["metric"], "truth"):
            block = task["scores"][key]
            assert set(block["feature_sets"]) == set(COMPARED)
            for name, entry in block["feature_sets"].items():
                assert len(entry["per_seed"]) == 2
                per_species = [block["per_species"][s][name] for s in ("0", "1")]
                assert all(per_species), "every seed scores some species"
                seed_means = [sum(v for v in p.values() if v is not None) / len([v for v in p.values()
                                                                                   if v is not None])
                              for p in per_species]
                assert entry["mean"] == pytest.approx(sum(seed_means) / 2)
            # Identical species on every side: the comparison is paired over species x seeds.
            pairs = {(p["a"], p["b"]): p for p in block["paired"]}
            assert set(pairs) == {("botaclip", "dofa"), ("botasp", "dofa"), ("botaclip", "botasp"),
                                  ("botaclip", "geoclip")}
            assert pairs[("botaclip", "dofa")]["n_species"] == 2 * len(block["per_species"]["0"]["dofa"])
    # The plant relevés trained the adapters: the plant SDMs used the cross-fitted sets.
    assert set(data["tasks"]["plants"]["cross_fitted"]) == {"botasp", "botaclip"}
    assert data["backbone"]["random_init"] is True and data["tasks"]["plants"]["n_species"] == 3
    assert set(data["training"]) == {"botasp_s0", "botaclip_s0", "botasp_s1", "botaclip_s1"}
    assert all(len(t["folds"]) == 3 for t in data["training"].values())


def test_store_holds_cross_fitted_sets_per_seed(tiny_demo):
    from botaclip.store import Store

    out, _, _ = tiny_demo
    store = Store.open(out / "store", read_only=True)
    for base in ("botasp", "botaclip"):
        for seed in (0, 1):
            cf = store.cross_fit(f"{base}_s{seed}")
            assert cf["fold_sets"] == [f"{base}_s{seed}_fold{k}" for k in range(3)]
    # Same seed, same relevé blocks and folds for both objectives (a paired comparison needs it).
    a, b = store.cross_fit("botasp_s0"), store.cross_fit("botaclip_s0")
    assert (a["blocks"] == b["blocks"]).all() and (a["folds"] == b["folds"]).all()
    assert store.geometry("botaclip_s0")["effective_dim"] >= 1.0


def test_baselines_cover_the_backbone_cells(tiny_demo):
    """The location embeddings and the elevation are on exactly the backbone set's cells, and compared."""
    from botaclip.store import Store

    out, report, _ = tiny_demo
    store = Store.open(out / "store", read_only=True)
    cells = store.existing_cells("dofa")
    assert store.spec("geoclip").kind == "location" and store.spec("terrain").kind == "covariates"
    assert np.array_equal(store.existing_cells("geoclip"), cells)
    assert set(store.existing_cells("terrain")) <= set(cells.tolist())
    assert report.compared == list(COMPARED) == ["dofa", "botasp", "botaclip", "geoclip", "terrain"]
    assert "geoclip" in report.diagnostics["feature_sets"]


def test_without_the_geoclip_extra_the_location_column_is_left_out(tiny_demo, monkeypatch):
    import sys

    from botaclip.pipeline.demo import add_baselines
    from botaclip.sample import SampleRegion

    out, _, _ = tiny_demo
    monkeypatch.setitem(sys.modules, "geoclip", None)  # as if botaclip[geoclip] were not installed
    lines: list[str] = []
    compared = add_baselines(out / "store", SampleRegion.open(out / "sample"), lines.append)
    assert compared == ["dofa", "botasp", "botaclip", "terrain"]
    assert any("note: no GeoCLIP location column" in line and "botaclip[geoclip]" in line for line in lines)


def test_report_md_table_maps_and_progress(tiny_demo):
    out, report, lines = tiny_demo
    text = (out / "report.md").read_text()
    assert "| plants | TSS |" in text and "| butterflies | Boyce index |" in text and "| soil | Spearman rho |" in text
    assert "| raw DOFA | BotaSP | BotaCLIP | GeoCLIP location | elevation |" in text and " ± " in text
    assert "| BotaCLIP - GeoCLIP location (p) |" in text
    assert "random initialisation" in text and "No leakage" in text
    assert "Embedding-space diagnostics" in text and "(diagnostics/embedding_pca.png)" in text
    for name in ("imagery.png", "habitats.png", "plant_prediction_vs_truth.png"):
        png = out / "maps" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "diagnostics" / "diagnostics.json").is_file()
    assert any(line.lstrip("[ ").split("s]")[-1].strip().startswith("5/6") for line in lines)
    table = report.format_table()
    assert len(table.splitlines()) == 3 + 6  # note, header, rule, two rows per task
    assert "±" in table


def test_rerun_reuses_sample_and_backbone_set(tiny_demo):
    out, first, _ = tiny_demo
    again = run_demo(DemoOptions(out=out, **{**TINY, "seeds": 1}), echo=lambda line: None)
    assert again.seconds["sample"] < first.seconds["sample"] + 5
    # Same region, same stored backbone embeddings, same seed-0 adapters and folds: seed 0 repeats exactly.
    key = "tss"
    assert again.to_dict()["tasks"]["plants"]["scores"][key]["per_species"]["0"] == first.to_dict()["tasks"][
        "plants"]["scores"][key]["per_species"]["0"]


def test_summarise_seeds_means_sds_and_pairs():
    per_seed = {
        0: {"dofa": {"a": 0.1, "b": 0.3}, "botasp": {"a": 0.2, "b": 0.3}, "botaclip": {"a": 0.3, "b": 0.5}},
        1: {"dofa": {"a": 0.2, "b": 0.4}, "botasp": {"a": 0.2, "b": 0.2}, "botaclip": {"a": 0.4, "b": float("nan")}},
    }
    s = summarise_seeds(per_seed, "tss")
    assert s["feature_sets"]["dofa"]["per_seed"] == pytest.approx([0.2, 0.3])
    assert s["feature_sets"]["dofa"]["mean"] == pytest.approx(0.25)
    assert s["feature_sets"]["dofa"]["sd"] == pytest.approx(0.0707107, rel=1e-5)
    assert s["feature_sets"]["botaclip"]["per_seed"] == pytest.approx([0.4, 0.4])  # nan left out
    pair = next(p for p in s["paired"] if (p["a"], p["b"]) == ("botaclip", "dofa"))
    assert pair["n_species"] == 3 and pair["wins_a"] == 3  # (seed, species) pairs with both scores


@pytest.mark.parametrize("args,fragment", [
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--folds", "1"], "--folds must be at least 2"),
])
def test_bad_demo_options_are_one_line(tmp_path, cli_runner, args, fragment):
    result = cli_runner.invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--backbone", "dofa-tiny", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {fragment}") and len(result.stderr.strip().splitlines()) == 1


def test_out_that_is_a_file_is_one_line_error(tmp_path, cli_runner):
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = cli_runner.invoke(cli, ["demo", "--out", str(target), "--backbone", "dofa-tiny"])
    assert result.exit_code != 0
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
