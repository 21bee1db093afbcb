"""`botaclip demo` end to end at a tiny scale: 1 km region, dofa-tiny, 32 px chips, a few epochs."""

from __future__ import annotations

import json

import pytest

from botaclip.cli import cli
from botaclip.pipeline.demo import DemoOptions, run_demo


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    options = DemoOptions(out=out, backbone="dofa-tiny", size_km=1.0, plots=300, size_px=32, views=1, epochs=4,
                          batch_size=64, plant_species=3, workers=1)
    lines: list[str] = []
    report = run_demo(options, echo=lines.append)
    return out, report, lines


def test_report_json_has_the_three_tasks_and_both_feature_sets(tiny_demo):
    out, report, _ = tiny_demo
    data = json.loads((out / "report.json").read_text())
    assert set(data["tasks"]) == {"plants", "butterflies", "soil"}
    assert {t: data["tasks"][t]["metric"] for t in data["tasks"]} == {
        "plants": "tss", "butterflies": "boyce", "soil": "spearman"}
    for task in data["tasks"].values():
        sets = task["feature_sets"]
        assert set(sets) == {"dofa", "botaclip"}
        for entry in sets.values():
            assert entry["per_species"], "every task scores some species"
            scores = [v for v in entry["per_species"].values() if v is not None]
            assert entry["mean"] == pytest.approx(sum(scores) / len(scores))
            assert -1.0 <= entry["truth_spearman"]["mean"] <= 1.0
        # Identical species on both sides: the comparison is paired.
        assert set(sets["dofa"]["per_species"]) == set(sets["botaclip"]["per_species"])
    assert data["backbone"]["random_init"] is True
    assert data["tasks"]["plants"]["n_species"] == 3


def test_report_md_table_maps_and_progress(tiny_demo):
    out, report, lines = tiny_demo
    text = (out / "report.md").read_text()
    assert "| plants | TSS |" in text and "| butterflies | Boyce index |" in text and "| soil | Spearman rho |" in text
    assert "random initialisation" in text
    assert "Embedding-space diagnostics" in text and "(diagnostics/embedding_pca.png)" in text
    for name in ("imagery.png", "habitats.png", "plant_prediction_vs_truth.png"):
        png = out / "maps" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "diagnostics" / "diagnostics.json").is_file()
    assert any(line.lstrip("[ ").split("s]")[-1].strip().startswith("6/6") for line in lines)
    table = report.format_table()
    assert len(table.splitlines()) == 2 + 6  # header, rule, two rows per task


def test_rerun_reuses_sample_and_backbone_set(tiny_demo):
    out, first, _ = tiny_demo
    lines: list[str] = []
    again = run_demo(DemoOptions(out=out, backbone="dofa-tiny", size_km=1.0, plots=300, size_px=32, views=1,
                                 epochs=4, batch_size=64, plant_species=3, workers=1), echo=lines.append)
    assert again.seconds["sample"] < first.seconds["sample"] + 5
    # Same region, same stored backbone embeddings, same folds: the raw-backbone scores repeat exactly.
    assert again.to_dict()["tasks"]["plants"]["feature_sets"]["dofa"] == first.to_dict()["tasks"]["plants"][
        "feature_sets"]["dofa"]


def test_out_that_is_a_file_is_one_line_error(tmp_path, cli_runner):
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = cli_runner.invoke(cli, ["demo", "--out", str(target), "--backbone", "dofa-tiny"])
    assert result.exit_code != 0
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
