"""BotaCLIP model parts, losses and the training loop on in-memory features (no imagery, no backbone)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from botaclip.errors import BotaclipError, InvalidInputError
from botaclip.model.adapter import load_adapter, save_checkpoint
from botaclip.model.botaclip import BotaCLIP, ImageAdapter, ReleveEncoder
from botaclip.model.loss import GeometryRegularizer, SigLIPLoss
from botaclip.model.train import TrainConfig, fit_botaclip, recall_at_k
from botaclip.model.vocabulary import SpeciesVocabulary
from botaclip.pipeline.spatial_split import block_ids, spatial_block_split


def _unit(x):
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


# ---------------------------------------------------------------- losses against hand computation


def test_siglip_loss_matches_hand_computation():
    u = _unit([[1.0, 0.0], [0.0, 1.0]])
    v = _unit([[1.0, 1.0], [0.0, 1.0]])
    loss = SigLIPLoss()
    t, b = 10.0, -10.0
    s = 1 / math.sqrt(2)
    # <u_i, v_j>: [[s, 0], [s, 1]]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    hand = -(
        math.log(sig(t * s + b)) + math.log(sig(-(t * 0 + b)))
        + math.log(sig(-(t * s + b))) + math.log(sig(t * 1 + b))
    ) / 2
    assert float(loss(u, v).detach()) == pytest.approx(hand, rel=1e-6)
    assert loss.temperature == pytest.approx(10.0)
    assert loss.bias == pytest.approx(-10.0)


def test_siglip_gradients_reach_temperature_and_bias():
    torch.manual_seed(0)
    loss = SigLIPLoss()
    u = _unit(torch.randn(6, 4))
    v = _unit(torch.randn(6, 4)).requires_grad_()
    loss(u, v).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0
    assert loss.logit_bias.grad is not None and loss.logit_bias.grad.abs() > 0
    assert v.grad.abs().sum() > 0


def test_geometry_regularizer_matches_hand_computation():
    a = _unit([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    d = _unit([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = 1 / math.sqrt(2)
    # cos_a off-diagonal: (0,1)=0, (0,2)=s, (1,2)=s ; cos_d: (0,1)=1, (0,2)=0, (1,2)=0
    hand = 2 * ((0 - 1) ** 2 + (s - 0) ** 2 + (s - 0) ** 2) / 6
    assert float(GeometryRegularizer()(a, d)) == pytest.approx(hand, rel=1e-6)
    # k = 1: backbone nearest neighbours: 0 -> 1 (cos 1), 1 -> 0 (cos 1), 2 -> 0 (cos 0 tie with 1: first index)
    knn = float(GeometryRegularizer(k_neighbors=1)(a, d))
    hand_knn = ((0 - 1) ** 2 + (0 - 1) ** 2 + (s - 0) ** 2) / 3
    assert knn == pytest.approx(hand_knn, rel=1e-6)
    assert float(GeometryRegularizer()(d, d)) == pytest.approx(0.0, abs=1e-7)


def test_knn_regularizer_only_counts_neighbour_pairs():
    torch.manual_seed(1)
    d = _unit(torch.randn(8, 5))
    a = d.clone()
    # Move sample 7's adapted embedding; pairs (i, 7) only count when 7 is among i's k nearest.
    a[7] = _unit(torch.randn(1, 5))[0]
    k = 2
    cos_d = d @ d.T
    cos_d.fill_diagonal_(-2)
    neighbours = cos_d.topk(k, dim=1).indices
    sq = ((a @ a.T) - (d @ d.T)) ** 2
    hand = torch.stack([sq[i, j] for i in range(8) for j in neighbours[i]]).mean()
    assert float(GeometryRegularizer(k_neighbors=k)(a, d)) == pytest.approx(float(hand), rel=1e-6)
    assert float(GeometryRegularizer(k_neighbors=k)(a, d)) != pytest.approx(float(GeometryRegularizer()(a, d)))


# ---------------------------------------------------------------- model parts


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_adapter_starts_as_identity_and_r_is_zero(kind):
    torch.manual_seed(0)
    d = torch.randn(16, 64) * 3
    adapter = ImageAdapter(64, 64, kind=kind)
    assert torch.allclose(adapter(d), F.normalize(d, dim=-1), atol=1e-6)
    model = BotaCLIP(64, vocab_size=10, adapter=kind)
    out = model(d, torch.rand(16, 10) * 50)
    assert float(out["reg"]) == pytest.approx(0.0, abs=1e-10)
    assert float(out["loss"]) == pytest.approx(float(out["siglip"]), rel=1e-6)


def test_adapter_projects_to_other_dimension_and_normalises():
    out = ImageAdapter(64, 16)(torch.randn(5, 64))
    assert out.shape == (5, 16)
    assert torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-6)


def test_releve_encoder_transforms():
    enc = ReleveEncoder(3, 4, transform="presence")
    x = torch.tensor([[0.0, 5.0, 80.0]])
    assert torch.equal(enc.transform_cover(x), torch.tensor([[0.0, 1.0, 1.0]]))
    enc = ReleveEncoder(3, 4, transform="log1p")
    assert torch.allclose(enc.transform_cover(x), torch.log1p(x))
    assert enc(x).shape == (1, 4)


def test_vocabulary_min_plots_and_unknown_species():
    ids = ["a", "a", "b", "b", "c", "c", "c"]
    sp = ["Poa annua", "Carex  flacca", "Poa annua", "Rare one", "Poa annua", "Carex flacca", "Poa annua"]
    vocab = SpeciesVocabulary.build(ids, sp, min_plots=2)
    assert vocab.species == ["Poa annua", "Carex flacca"]
    matrix, order, unknown = vocab.encode(ids, sp, [10, 20, 30, 40, 50, 60, 5])
    assert order == ["a", "b", "c"]
    assert unknown == 1
    np.testing.assert_allclose(matrix, [[10, 20], [30, 0], [55, 60]])
    with pytest.raises(BotaclipError, match="empty species vocabulary"):
        SpeciesVocabulary.build(ids, sp, min_plots=4)


# ---------------------------------------------------------------- spatial split


def test_spatial_split_keeps_blocks_whole():
    rng = np.random.default_rng(0)
    lat = 45.0 + rng.uniform(0, 0.05, 500)
    lng = 6.0 + rng.uniform(0, 0.07, 500)
    train, val = spatial_block_split(lat, lng, val_fraction=0.2, block_res=8, seed=3)
    assert len(train) + len(val) == 500 and len(np.intersect1d(train, val)) == 0
    blocks = block_ids(lat, lng, 8)
    assert not set(blocks[train]) & set(blocks[val])
    assert 0.15 <= len(val) / 500 <= 0.45
    again = spatial_block_split(lat, lng, val_fraction=0.2, block_res=8, seed=3)
    assert np.array_equal(again[1], val)
    with pytest.raises(BotaclipError, match="one H3 block"):
        spatial_block_split(lat, lng, block_res=2)


# ---------------------------------------------------------------- training loop


def _synthetic(n=240, d=32, v=20, views=2, seed=0):
    """Images whose backbone embeddings carry a (noisy, rotated) copy of a latent that also drives species."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    mix = rng.normal(size=(6, d))
    base = latent @ mix + 0.5 * rng.normal(size=(n, d))
    feats = np.stack([base + 0.1 * rng.normal(size=(n, d)) for _ in range(views)], axis=1)
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    cover = np.maximum(latent @ rng.normal(size=(6, v)), 0) * 20
    return feats.astype(np.float32), cover.astype(np.float32)


CFG = dict(epochs=12, batch_size=64, lr=3e-3, releve_hidden_dim=32, patience=50, device="cpu")


def test_training_improves_validation_recall():
    feats, cover = _synthetic()
    train, val = np.arange(180), np.arange(180, 240)
    result = fit_botaclip(feats, cover, train, val, TrainConfig(**CFG))
    assert result.best["recall@5"] > result.baseline["recall@5"] + 0.15
    assert result.history[0]["val_reg"] == pytest.approx(0.0, abs=1e-8)
    keys = {"train_siglip", "train_reg", "val_siglip", "val_reg", "temperature", "bias", "val_recall@1",
            "val_recall@5", "val_recall@10"}
    assert keys <= set(result.history[-1])
    assert result.history[-1]["temperature"] != pytest.approx(10.0)


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    feats, cover = _synthetic(n=160)
    train, val = np.arange(120), np.arange(120, 160)
    cfg = dict(CFG, epochs=6)
    full = fit_botaclip(feats, cover, train, val, TrainConfig(**cfg))
    again = fit_botaclip(feats, cover, train, val, TrainConfig(**cfg))
    assert [h["val_loss"] for h in full.history] == [h["val_loss"] for h in again.history]

    first = fit_botaclip(feats, cover, train, val, TrainConfig(**dict(cfg, epochs=3)))
    path = save_checkpoint(tmp_path / "a.pt", {"state": first.state})
    state = torch.load(path, weights_only=True)["state"]
    resumed = fit_botaclip(feats, cover, train, val, TrainConfig(**cfg), resume=state)
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in full.history],
                                                                     rel=1e-6)
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6)


def test_early_stopping_keeps_best_weights():
    feats, cover = _synthetic(n=160)
    train, val = np.arange(120), np.arange(120, 160)
    result = fit_botaclip(feats, cover, train, val, TrainConfig(**dict(CFG, epochs=60, lr=3e-2, patience=2)))
    assert result.stopped_early
    assert len(result.history) - 1 == result.best_epoch + 2
    best_val = min(h["val_loss"] for h in result.history)
    assert result.history[result.best_epoch]["val_loss"] == best_val


def test_batch_larger_than_training_set_is_refused():
    feats, cover = _synthetic(n=100)
    with pytest.raises(BotaclipError, match="larger than the training set"):
        fit_botaclip(feats, cover, np.arange(80), np.arange(80, 100), TrainConfig(**dict(CFG, batch_size=512)))


def test_divergence_and_empty_split_are_typed_and_name_parameters(monkeypatch):
    import botaclip.model.train as train_mod

    feats, cover = _synthetic(n=100)
    with pytest.raises(InvalidInputError, match="need relevés in both sets") as err:
        fit_botaclip(feats, cover, np.arange(100), np.arange(0), TrainConfig(**CFG))
    assert err.value.params == ["val_fraction", "block_res"]
    real = train_mod.evaluate
    calls = []

    def nan_after_baseline(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return out if len(calls) == 1 else {**out, "loss": float("nan")}

    monkeypatch.setattr(train_mod, "evaluate", nan_after_baseline)
    with pytest.raises(InvalidInputError, match="training diverged at epoch 1") as err:
        fit_botaclip(feats, cover, np.arange(80), np.arange(80, 100), TrainConfig(**dict(CFG, epochs=3)))
    assert err.value.params == ["lr"] and str(err.value).endswith("lower lr")


def test_recall_at_k_counts_rank_of_own_pair():
    image = torch.eye(3)
    releve = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    r = recall_at_k(image, releve, ks=(1, 2))
    assert r["recall@1"] == pytest.approx(1 / 3)
    assert r["recall@2"] == pytest.approx(1.0)


def test_adapter_bundle_round_trip_and_backbone_check(tmp_path):
    feats, cover = _synthetic(n=120)
    cfg = TrainConfig(**dict(CFG, epochs=2))
    result = fit_botaclip(feats, cover, np.arange(90), np.arange(90, 120), cfg)
    vocab = [f"sp{i}" for i in range(cover.shape[1])]
    backbone = {"name": "dofa-test", "dim": 32, "sha256": "random-init:seed=0", "wavelengths": [0.665],
                "bands": "rgbn", "chip_m": 100.0, "size_px": 32}
    save_checkpoint(tmp_path / "ad.pt", {"backbone": backbone, "config": cfg.to_dict(), "vocabulary": vocab,
                                         "model": result.model.state_dict(), "state": result.state})
    bundle = load_adapter(tmp_path / "ad.pt")
    out = bundle.transform(feats[:, 0])
    expected = result.model.encode_image(torch.from_numpy(feats[:, 0])).detach().numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    bundle.check_backbone("dofa-test", None, dim=32, seed=0)
    with pytest.raises(BotaclipError, match="trained on backbone dofa-test"):
        bundle.check_backbone("dofa-base", "ab" * 32)
    with pytest.raises(BotaclipError, match="trained on backbone"):
        bundle.check_backbone("dofa-test", None, seed=1)


def test_frozen_adapter_baseline_trains_only_the_encoder():
    feats, cover = _synthetic(n=120)
    cfg = TrainConfig(**dict(CFG, epochs=3, train_adapter=False))
    result = fit_botaclip(feats, cover, np.arange(90), np.arange(90, 120), cfg)
    assert torch.equal(result.model.image_adapter.linear.weight, torch.eye(32))
    assert all(h["val_reg"] == pytest.approx(0.0, abs=1e-10) for h in result.history)
    assert result.history[-1]["temperature"] != pytest.approx(10.0)


# ---------------------------------------------------------------- centring and BotaSP


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_centred_adapter_starts_as_the_centred_backbone(kind):
    torch.manual_seed(1)
    d = F.normalize(torch.randn(32, 64) + 4.0, dim=-1)  # nearly collinear, like random-init embeddings
    center = d.mean(dim=0)
    adapter = ImageAdapter(64, 64, kind=kind, center=center)
    expected = F.normalize(d - center, dim=-1)
    assert torch.allclose(adapter(d), expected, atol=1e-6)
    assert torch.allclose(adapter(d * 7.0), expected, atol=1e-6)  # input renormalised first
    assert torch.equal(adapter.state_dict()["center"], center)
    # R compares with the centred input, so it is zero at the start; against raw cosines it would not be.
    model = BotaCLIP(64, vocab_size=5, adapter=kind, center=center)
    assert float(model(d, torch.rand(32, 5) * 40)["reg"].detach()) == pytest.approx(0.0, abs=1e-10)
    raw = BotaCLIP(64, vocab_size=5, adapter=kind, center=center, reg_target="raw")
    assert float(raw(d, torch.rand(32, 5) * 40)["reg"].detach()) > 0.1
    # The collinear raw cosines are all near 1; centred ones spread out.
    assert float((d @ d.T).min()) > 0.9 and float((expected @ expected.T).min()) < 0.0


def test_uncentred_checkpoint_state_loads_as_no_centring():
    from botaclip.model.train import build_model, loadable_state

    model = build_model(16, 4, TrainConfig())
    old = {k: v for k, v in model.state_dict().items() if k != "image_adapter.center"}
    model.load_state_dict(loadable_state(old, model))
    assert torch.equal(model.image_adapter.center, torch.zeros(16))


def test_species_bce_loss_matches_hand_computation():
    from botaclip.model.loss import SpeciesBCELoss

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    hand = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(1 - sig(0.5)) + math.log(sig(0.0))) / 4
    assert float(SpeciesBCELoss()(logits, targets)) == pytest.approx(hand, rel=1e-6)


def test_botasp_forward_uses_presence_and_regulariser():
    from botaclip.model.botaclip import BotaSP

    torch.manual_seed(0)
    d = torch.randn(8, 16)
    cover = torch.tensor([[0.0, 30.0, 0.0]] * 8)
    model = BotaSP(16, vocab_size=3, lambda_reg=1.0)
    out = model(d, cover)
    assert set(out) == {"loss", "bce", "reg"}
    logits = model.species_logits(d)
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0, 1.0, 0.0]] * 8))
    assert float(out["bce"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(out["reg"]) == pytest.approx(0.0, abs=1e-10)  # identity start


def test_botasp_training_lowers_its_loss_and_raises_species_auc():
    feats, cover = _synthetic()
    train, val = np.arange(180), np.arange(180, 240)
    result = fit_botaclip(feats, cover, train, val, TrainConfig(**dict(CFG, objective="supervised", epochs=20)),
                          center=feats[:, 0].mean(axis=0))
    assert result.best["bce"] < result.baseline["bce"] - 0.02
    assert result.best["species_auc"] > result.baseline["species_auc"] + 0.05
    assert {"train_bce", "val_bce", "val_reg", "val_species_auc"} <= set(result.history[-1])
    assert "temperature" not in result.history[-1]
    # The head's bias starts at the training prevalence's log-odds.
    from botaclip.model.botaclip import BotaSP

    model = BotaSP(32, vocab_size=2)
    model.init_head_bias(torch.tensor([0.1, 0.5]))
    assert model.species_head.bias.tolist() == pytest.approx([math.log(0.1 / 0.9), 0.0], abs=1e-6)


def test_unknown_objective_is_refused():
    from botaclip.errors import InvalidInputError

    feats, cover = _synthetic(n=100)
    with pytest.raises(InvalidInputError) as info:
        fit_botaclip(feats, cover, np.arange(80), np.arange(80, 100), TrainConfig(**dict(CFG, objective="sp")))
    assert info.value.params == ["objective"]


def test_mean_species_auc_against_sklearn():
    from sklearn.metrics import roc_auc_score

    from botaclip.model.train import mean_species_auc

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4))
    present = rng.random((50, 4)) < 0.3
    present[:, 3] = False  # one class only: left out
    expected = np.mean([roc_auc_score(present[:, j], logits[:, j]) for j in range(3)])
    assert mean_species_auc(torch.from_numpy(logits), torch.from_numpy(present)) == pytest.approx(expected)


def test_spatial_block_folds_keep_blocks_whole_balance_and_follow_the_seed():
    from botaclip.pipeline.spatial_split import spatial_block_folds

    rng = np.random.default_rng(0)
    lat, lng = 45.1 + rng.uniform(0, 0.05, 600), 5.8 + rng.uniform(0, 0.07, 600)
    blocks, fold_of_block, fold = spatial_block_folds(lat, lng, 4, 8, seed=0)
    point_blocks = block_ids(lat, lng, 8)
    assert np.array_equal(blocks, np.unique(point_blocks))
    for b, f in zip(blocks, fold_of_block, strict=True):
        assert set(fold[point_blocks == b]) == {f}  # whole blocks
    sizes = np.bincount(fold, minlength=4)
    assert sizes.min() > 0.5 * sizes.max()
    _, other, _ = spatial_block_folds(lat, lng, 4, 8, seed=1)
    assert not np.array_equal(fold_of_block, other)  # another seed, other folds
    with pytest.raises(BotaclipError, match="cannot cross-fit 4 folds"):
        spatial_block_folds(lat, lng, 4, 5)
