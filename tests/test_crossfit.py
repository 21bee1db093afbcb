"""Cross-fitted adapters end to end: `botaclip train --folds K` holds each fold out of its adapter, and `botaclip
index --adapter` writes the full set plus K companion sets derived from the stored backbone set and records the
cross-fit in the catalog; plus BotaSP (`--objective supervised`) and the bad inputs of both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyproj import Transformer

from botaclip.cli import cli
from botaclip.model.adapter import load_adapter
from botaclip.pipeline.index import run_index
from botaclip.pipeline.spatial_split import block_ids
from botaclip.store import Store
from botaclip.store.h3vec import latlng_to_cell

TINY = ["--backbone", "dofa-tiny", "--chip-m", "40", "--size-px", "32", "--views", "1", "--batch-size", "32",
        "--block-res", "10", "--min-plots", "3", "--device", "cpu", "--lr", "3e-3", "--patience", "50"]
INDEX = dict(backbone="dofa-tiny", chip_m=40.0, size_px=32, bands="rgbn", device="cpu", workers=0, batch_size=16,
             progress=False, echo=lambda msg: None)


def _bbox(landscape) -> str:
    """The orthophoto's extent less a 50 m margin, as minlon,minlat,maxlon,maxlat (WGS84)."""
    from tests.conftest import SIDE, X0, Y0

    to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)
    lng0, lat0 = to_wgs.transform(X0 + 50, Y0 - SIDE + 50)
    lng1, lat1 = to_wgs.transform(X0 + SIDE - 50, Y0 - 50)
    return f"{lng0},{lat0},{lng1},{lat1}"


def _train(cli_runner, landscape, out, *extra):
    args = ["train", "--releves", str(landscape["releves"]), "--imagery", str(landscape["tif"]), "--out", str(out),
            "--cache-dir", str(out.parent / "cache"), *TINY, *extra]
    return cli_runner.invoke(cli, args)


@pytest.fixture(scope="module")
def cross_fitted(releve_landscape, tmp_path_factory):
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("cf") / "cf.pt"
    result = _train(CliRunner(), releve_landscape, out, "--folds", "3", "--epochs", "4")
    assert result.exit_code == 0, result.output
    return out


def test_each_fold_adapter_never_saw_its_fold(cross_fitted, releve_landscape):
    ckpt = torch.load(cross_fitted, weights_only=True)
    cf = ckpt["cross_fit"]
    assert cf["k"] == 3 and cf["block_res"] == 10 and len(cf["adapters"]) == 3
    coords = releve_landscape["plots_df"].set_index("releve_id")
    ids = cf["releves"]["ids"]
    # The recorded block of each relevé is the H3 cell at block_res of its location, and each block has one fold.
    blocks = block_ids(coords.loc[ids, "decimalLatitude"], coords.loc[ids, "decimalLongitude"], 10)
    fold_of_block = dict(zip(cf["blocks"].tolist(), cf["folds"].tolist(), strict=True))
    assert set(blocks.astype(np.int64).tolist()) == set(fold_of_block)
    fold_of = {r: fold_of_block[int(b)] for r, b in zip(ids, blocks.astype(np.int64), strict=True)}
    assert sorted(set(fold_of.values())) == [0, 1, 2]
    for part in cf["adapters"]:
        k = part["fold"]
        held = {r for r, f in fold_of.items() if f == k}
        seen = set(part["split"]["train"]) | set(part["split"]["val"])
        assert held and not seen & held, f"fold {k} adapter saw relevés of its own fold"
        assert set(part["split"]["held_out"]) == held
        assert seen | held == set(ids)
    # The full adapter trained (and validated) on every relevé.
    assert set(ckpt["split"]["train"]) | set(ckpt["split"]["val"]) == set(ids)
    bundle = load_adapter(cross_fitted)
    assert bundle.cross_fit.k == 3 and bundle.centering["source"] == "releves"
    x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    outs = [bundle.transform(x)] + [a.transform(x) for a in bundle.cross_fit.adapters]
    assert all(not np.allclose(outs[0], o) for o in outs[1:])  # distinct models


def test_index_writes_companion_sets_and_records_the_cross_fit(cross_fitted, releve_landscape, tmp_path):
    store_dir = tmp_path / "store"
    summary = run_index(_bbox(releve_landscape), [str(releve_landscape["tif"])], store_dir,
                        adapter=str(cross_fitted), name="bc", **INDEX)
    st = Store.open(store_dir, read_only=True)
    assert set(st.feature_sets()) == {"dofa_tiny_rgbn", "bc", "bc_fold0", "bc_fold1", "bc_fold2"}
    assert summary.feature_set == "bc" and summary.written == summary.derived > 0
    cf = st.cross_fit("bc")
    assert cf["fold_sets"] == ["bc_fold0", "bc_fold1", "bc_fold2"] and cf["block_res"] == 10
    assert cf["blocks"].dtype == np.uint64 and cf["folds"].dtype == np.int64
    assert cf["releve_cells"].dtype == np.uint64 and len(cf["blocks"]) == len(cf["folds"])
    bundle = load_adapter(cross_fitted)
    np.testing.assert_array_equal(cf["blocks"], bundle.cross_fit.blocks)
    expected_cells, _ = latlng_to_cell(bundle.cross_fit.releve_lat, bundle.cross_fit.releve_lng, st.resolution)
    np.testing.assert_array_equal(cf["releve_cells"], np.unique(expected_cells))
    assert st.cross_fit("dofa_tiny_rgbn") is None
    # Every set is the exact transform of the stored backbone set by its own adapter.
    h3, X, _ = st.features_numpy("dofa_tiny_rgbn")
    for name, adapter in [("bc", bundle)] + [(f"bc_fold{k}", a) for k, a in enumerate(bundle.cross_fit.adapters)]:
        got = st.features_numpy(name, cells=h3)
        assert got.found.all()
        np.testing.assert_allclose(got.X, adapter.transform(X), atol=1e-6)
        prov = st.info(name)["provenance"]
        assert prov["derived_from"] == "dofa_tiny_rgbn" and prov["adapter"]["centering"]["source"] == "releves"
        assert st.geometry(name)["rows"] == len(h3)
    assert st.info("bc_fold1")["provenance"]["cross_fit"] == {"role": "fold", "fold": 1, "of": "bc"}
    # The SDMs find the record through the store: plant relevés overlap, so the cross-fitted folds are used.
    from botaclip.sdm import compare

    res = compare(st, releve_landscape["releves"], ["dofa_tiny_rgbn", "bc"], species=["Festuca rubra"],
                  kind="presence-absence", models=["logistic"], folds=3, min_presences=5)
    assert res.species[0].cross_fitted == ["bc"] and "cross-fit" in res.species[0].folds
    # Run again: everything is there, nothing is rewritten.
    again = run_index(_bbox(releve_landscape), [str(releve_landscape["tif"])], store_dir,
                      adapter=str(cross_fitted), name="bc", **INDEX)
    assert again.written == 0


def test_centred_adapter_derived_equals_computed_from_imagery(cross_fitted, releve_landscape, tmp_path):
    """Centring keeps adapted sets exact: the full adapter applied to stored or fresh backbone embeddings."""
    import shutil

    plain = tmp_path / "full.pt"
    ckpt = torch.load(cross_fitted, weights_only=True)
    del ckpt["cross_fit"]
    torch.save(ckpt, plain)
    assert float(load_adapter(plain).adapter.center.norm()) > 0.1
    bbox, tif = _bbox(releve_landscape), [str(releve_landscape["tif"])]
    run_index(bbox, tif, tmp_path / "a", **INDEX)
    derived = run_index(bbox, tif, tmp_path / "a", adapter=str(plain), name="ad", **INDEX)
    direct = run_index(bbox, tif, tmp_path / "b", adapter=str(plain), name="ad", **INDEX)
    assert derived.derived == derived.written > 0 and direct.derived == 0
    h3 = Store.open(tmp_path / "a").existing_cells("ad")
    a = Store.open(tmp_path / "a").features_numpy("ad", cells=h3).X
    b = Store.open(tmp_path / "b").features_numpy("ad", cells=h3).X
    np.testing.assert_allclose(a, b, atol=1e-5)
    shutil.rmtree(tmp_path / "b")


def test_botasp_checkpoint_is_applied_like_an_adapter(releve_landscape, tmp_path, cli_runner):
    out = tmp_path / "sp.pt"
    result = _train(cli_runner, releve_landscape, out, "--objective", "supervised", "--epochs", "6")
    assert result.exit_code == 0, result.stderr
    assert "species AUC" in result.stdout and "objective supervised" in result.stdout
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["objective"] == "supervised" and ckpt["config"]["objective"] == "supervised"
    assert "species_head.weight" in ckpt["model"] and not any(k.startswith("releve_encoder") for k in ckpt["model"])
    assert ckpt["summary"]["best"]["bce"] < ckpt["summary"]["baseline"]["bce"]
    bundle = load_adapter(out)
    assert bundle.objective == "supervised" and bundle.releve_encoder is None
    with pytest.raises(Exception, match="no relevé encoder"):
        bundle.encode_releves(["r"], ["Poa alpina"], [10.0])
    summary = run_index(_bbox(releve_landscape), [str(releve_landscape["tif"])], tmp_path / "s", adapter=str(out),
                        name="botasp", **INDEX)
    assert summary.kind == "botaclip" and summary.written > 0
    prov = Store.open(tmp_path / "s").info("botasp")["provenance"]
    assert prov["adapter"]["objective"] == "supervised"


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert lines[-1].startswith("error:") and sum(line.startswith("error:") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


@pytest.mark.parametrize("extra,fragment", [
    (["--folds", "1"], "--folds must be at least 2"),
    (["--objective", "unknown"], "'unknown' is not one of"),
    (["--folds", "2", "--block-res", "5"], "cannot cross-fit 2 folds: the 160 relevés fall in only 1 H3 blocks"),
    (["--center-set", "dofa"], "--center-set needs --center-store"),
])
def test_bad_training_input_is_one_line(releve_landscape, tmp_path, cli_runner, extra, fragment):
    msg = _one_line_error(_train(cli_runner, releve_landscape, tmp_path / "x.pt", "--epochs", "1", *extra))
    assert fragment in msg
    assert not (tmp_path / "x.pt").exists()


def test_center_store_without_matching_backbone_set_is_one_line(releve_landscape, tmp_path, cli_runner):
    store = Store.create(tmp_path / "st", resolution=10)
    with store.writer("other", kind="backbone", dim=64, provenance={"model": "dofa-base"}) as w:
        w.write(np.array([0x8a1f9e5153affff], dtype=np.uint64), np.ones((1, 64)))
    msg = _one_line_error(_train(cli_runner, releve_landscape, tmp_path / "x.pt", "--epochs", "1",
                                 "--center-store", str(tmp_path / "st")))
    assert "no backbone feature set" in msg and "dofa-tiny" in msg
