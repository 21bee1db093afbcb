"""BotaCLIP training end to end: relevés + a real GeoTIFF -> chips -> tiny DOFA -> feature cache -> adapter, via
the CLI; plus relevé reading (long/wide, CSV/GeoPackage, any CRS) and the augmentations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from botaclip.cli import cli
from botaclip.model.adapter import load_adapter
from botaclip.pipeline import train as train_job
from botaclip.pipeline.feature_cache import augment_views
from botaclip.pipeline.releves import read_releves
from botaclip.pipeline.spatial_split import block_ids


@pytest.fixture(scope="module")
def landscape(releve_landscape):
    """The shared 600 m orthophoto with habitat-driven relevés (tests/conftest.py)."""
    return releve_landscape


TINY = ["--backbone", "dofa-tiny", "--chip-m", "40", "--size-px", "32", "--views", "2", "--batch-size", "32",
        "--block-res", "9", "--min-plots", "3", "--device", "cpu", "--lr", "3e-3", "--patience", "50"]


def _train(cli_runner, landscape, out, *extra):
    args = ["train", "--releves", str(landscape["releves"]), "--imagery", str(landscape["tif"]), "--out", str(out),
            *TINY, *extra]
    return cli_runner.invoke(cli, args)


@pytest.fixture
def counted_forwards(monkeypatch):
    """Counts backbone forward passes (hook on the first transformer block of every backbone built)."""
    calls = {"n": 0}
    real = train_job.make_backbone

    def counting(*args, **kwargs):
        model = real(*args, **kwargs)
        model.blocks[0].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
        return model

    monkeypatch.setattr(train_job, "make_backbone", counting)
    return calls


def test_train_writes_checkpoint_log_and_summary_then_caches(cli_runner, landscape, tmp_path, counted_forwards):
    out = tmp_path / "adapter.pt"
    result = _train(cli_runner, landscape, out, "--epochs", "4")
    assert result.exit_code == 0, result.stderr
    assert "3 outside the imagery" in result.stderr
    assert "untrained" in result.stdout and "recall@5" in result.stdout
    first_forwards = counted_forwards["n"]
    assert first_forwards > 0

    ckpt = torch.load(out, weights_only=True)
    assert ckpt["backbone"]["name"] == "dofa-tiny" and ckpt["backbone"]["dim"] == 64
    assert ckpt["backbone"]["sha256"] == "random-init:seed=0"
    assert len(ckpt["split"]["train"]) + len(ckpt["split"]["val"]) == 157
    log = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    for key in ("train_siglip", "train_reg", "val_siglip", "val_reg", "temperature", "bias", "val_recall@1",
                "val_recall@5", "val_recall@10"):
        assert key in log[-1]

    # No block in both sets.
    coords = landscape["plots_df"].set_index("releve_id")
    blocks = lambda ids: set(block_ids(coords.loc[ids, "decimalLatitude"], coords.loc[ids, "decimalLongitude"], 9))  # noqa: E731
    assert not blocks(ckpt["split"]["train"]) & blocks(ckpt["split"]["val"])

    # The adapter loads for `index --adapter` and refuses another backbone.
    bundle = load_adapter(out)
    emb = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    assert bundle.transform(emb).shape == (5, 64)
    bundle.check_backbone("dofa-tiny", None, dim=64, seed=0)
    bundle.check_backbone(train_job.make_backbone("dofa-tiny", None, 0, 32).name, None, dim=64, seed=0)
    with pytest.raises(Exception, match="trained on backbone dofa-tiny"):
        bundle.check_backbone("dofa-base", "0" * 64)

    # Second run on the same data: every feature comes from the cache, no backbone forward.
    again = _train(cli_runner, landscape, tmp_path / "again.pt", "--epochs", "1", "--cache-dir", str(tmp_path))
    assert again.exit_code == 0, again.stderr
    assert counted_forwards["n"] == first_forwards
    assert "0 embedded now" in again.stderr


def test_training_raises_recall_and_is_deterministic(cli_runner, landscape, tmp_path):
    a = _train(cli_runner, landscape, tmp_path / "a.pt", "--epochs", "15")
    b = _train(cli_runner, landscape, tmp_path / "b.pt", "--epochs", "15")
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    ca, cb = (torch.load(tmp_path / p, weights_only=True) for p in ("a.pt", "b.pt"))
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k])
    summary = ca["summary"]
    assert summary["best"]["recall@5"] > summary["baseline"]["recall@5"] + 0.1


def test_resume_continues_exactly(cli_runner, landscape, tmp_path):
    straight = _train(cli_runner, landscape, tmp_path / "straight.pt", "--epochs", "6")
    part = _train(cli_runner, landscape, tmp_path / "part.pt", "--epochs", "3")
    assert straight.exit_code == 0 and part.exit_code == 0
    resumed = _train(cli_runner, landscape, tmp_path / "resumed.pt", "--epochs", "6", "--resume",
                     str(tmp_path / "part.pt"))
    assert resumed.exit_code == 0, resumed.stderr
    s = torch.load(tmp_path / "straight.pt", weights_only=True)
    r = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert [h["val_loss"] for h in r["history"]] == pytest.approx([h["val_loss"] for h in s["history"]], rel=1e-5)
    for k in s["model"]:
        assert torch.allclose(s["model"][k], r["model"][k], atol=1e-5)
    log = (tmp_path / "resumed.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- bad input: one line, non-zero exit


def _bad(cli_runner, landscape, tmp_path, table: pd.DataFrame | None, *extra, releves=None):
    path = releves or tmp_path / "bad.csv"
    if table is not None:
        table.to_csv(path, index=False)
    args = ["train", "--releves", str(path), "--imagery", str(landscape["tif"]), "--out", str(tmp_path / "x.pt"),
            *TINY, "--epochs", "1", *extra]
    result = cli_runner.invoke(cli, args)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    # Progress lines may come first; the error is one line, last, and no traceback follows.
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "x.pt").exists()
    return errors[0]


def test_bad_missing_coordinate_column(cli_runner, landscape, tmp_path):
    msg = _bad(cli_runner, landscape, tmp_path, landscape["long"].drop(columns=["decimalLongitude"]))
    assert "longitude" in msg


def test_bad_missing_coordinates_entirely(cli_runner, landscape, tmp_path):
    msg = _bad(cli_runner, landscape, tmp_path, landscape["long"].drop(columns=["decimalLongitude",
                                                                                "decimalLatitude"]))
    assert "missing coordinate columns" in msg and "decimalLatitude" in msg


def test_bad_missing_species_column(cli_runner, landscape, tmp_path):
    msg = _bad(cli_runner, landscape, tmp_path, landscape["long"].drop(columns=["species"]))
    assert "missing species column" in msg


def test_bad_empty_vocabulary(cli_runner, landscape, tmp_path):
    msg = _bad(cli_runner, landscape, tmp_path, None, "--min-plots", "100000", releves=landscape["releves"])
    assert "empty species vocabulary" in msg


def test_bad_no_releve_inside_imagery(cli_runner, landscape, tmp_path):
    far = landscape["long"].assign(decimalLatitude=48.85, decimalLongitude=2.35)
    msg = _bad(cli_runner, landscape, tmp_path, far)
    assert "no relevé inside the imagery" in msg


def test_bad_batch_larger_than_training_set(cli_runner, landscape, tmp_path):
    msg = _bad(cli_runner, landscape, tmp_path, None, "--batch-size", "5000", releves=landscape["releves"])
    assert "larger than the training set" in msg


def test_bad_non_numeric_cover(cli_runner, landscape, tmp_path):
    table = landscape["long"].astype({"cover": object})
    table.loc[7, "cover"] = "+"
    msg = _bad(cli_runner, landscape, tmp_path, table)
    assert "non-numeric value '+'" in msg and "cover" in msg


# ---------------------------------------------------------------- reading relevés


def test_read_long_with_plots_table_and_wide_gpkg(landscape, tmp_path):
    long = landscape["long"].drop(columns=["decimalLatitude", "decimalLongitude"])
    long = long.rename(columns={"releve_id": "eventID", "species": "scientificName"})
    long.to_parquet(tmp_path / "long.parquet")
    plots = landscape["plots_df"][["releve_id", "x_l93", "y_l93"]].rename(columns={"x_l93": "x", "y_l93": "y"})
    plots.to_csv(tmp_path / "plots.csv", index=False)
    r = read_releves(tmp_path / "long.parquet", tmp_path / "plots.csv", crs="EPSG:2154")
    expected = landscape["plots_df"].set_index("releve_id")
    got = r.plots.set_index("releve_id")
    assert len(got) == 160
    np.testing.assert_allclose(got["lat"], expected.loc[got.index, "decimalLatitude"], atol=1e-7)

    # Wide GeoPackage, geometry in Lambert-93.
    import geopandas as gpd

    wide = landscape["long"].pivot_table(index="releve_id", columns="species", values="cover", fill_value=0)
    pts = landscape["plots_df"].set_index("releve_id").loc[wide.index]
    gdf = gpd.GeoDataFrame(wide.reset_index(), geometry=gpd.points_from_xy(pts["x_l93"], pts["y_l93"]),
                           crs="EPSG:2154")
    gdf.to_file(tmp_path / "wide.gpkg")
    w = read_releves(tmp_path / "wide.gpkg")
    assert sorted(w.long["species"].unique()) == sorted(landscape["long"]["species"].unique())
    assert len(w.long) == len(landscape["long"])
    np.testing.assert_allclose(w.plots.set_index("releve_id").loc[got.index, "lng"], got["lng"], atol=1e-7)


def test_augment_views_are_dihedral_transforms_of_the_chip():
    chip = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    views = augment_views(chip, 8, np.random.default_rng(1), max_crop=0.0)
    assert views.shape == (8, 3, 8, 8)
    np.testing.assert_array_equal(views[0], chip)
    dihedral = [np.rot90(chip, k, axes=(1, 2)) for k in range(4)]
    dihedral += [d[:, :, ::-1] for d in dihedral]
    matched = {next(i for i, d in enumerate(dihedral) if np.array_equal(v, d)) for v in views}
    assert matched == set(range(8))  # all eight distinct transforms, identity only as view 0
    jittered = augment_views(chip, 3, np.random.default_rng(1), max_crop=0.3)
    assert jittered.shape == (3, 3, 8, 8) and np.isfinite(jittered).all()


def test_load_training_data_reads_back_the_split_and_centring(cli_runner, landscape, tmp_path):
    from botaclip.pipeline.train import load_training_data

    out = tmp_path / "a.pt"
    assert _train(cli_runner, landscape, out, "--epochs", "1").exit_code == 0
    feats, cover, train_idx, val_idx, config, center = load_training_data(out)
    ckpt = torch.load(out, weights_only=True)
    assert feats.shape == (157, 2, 64) and cover.shape == (157, len(ckpt["vocabulary"]))
    assert len(train_idx) == len(ckpt["split"]["train"]) and len(val_idx) == len(ckpt["split"]["val"])
    assert config["objective"] == "contrastive"
    np.testing.assert_allclose(center, feats[:, 0].mean(axis=0), atol=1e-6)  # centred on the relevés' chips
