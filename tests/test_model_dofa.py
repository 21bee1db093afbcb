"""DOFA backbone: parity with TorchGeo's reference (committed golden fixture), the generated-kernel cache,
deterministic random init, and input validation.

The fixture tests/data/dofa_golden.pt was produced by tests/data/make_dofa_golden.py with TorchGeo's
`torchgeo.models.dofa.DOFA`; these tests only read it and do not need TorchGeo.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from botaclip.errors import InvalidInputError
from botaclip.model import DOFA, RandomInitWarning, create_backbone
from botaclip.model.dofa import KERNEL_SCALE, sincos_embed_1d, validate_wavelengths

GOLDEN = Path(__file__).parent / "data" / "dofa_golden.pt"
RGB = [0.665, 0.56, 0.49]


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)


def golden_inputs(golden: dict, name: str) -> torch.Tensor:
    return (golden["inputs_uint8"][name].float() - golden["input_offset"]) / golden["input_scale"]


def golden_model(golden: dict) -> DOFA:
    return DOFA(**golden["config"], seed=123)


def quiet_tiny(**kwargs) -> DOFA:
    model = DOFA.tiny(**kwargs)
    model._random_warned = True  # these tests are not about the warning
    return model


# -- parity with the reference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["original", "torchgeo"])
@pytest.mark.parametrize("precision", ["as_stored", "float32"])
def test_matches_torchgeo_reference_for_both_checkpoint_formats(golden, tmp_path, fmt, precision):
    state = golden[f"state_dict_{fmt}"]
    if precision == "float32":
        state = {k: v.float() for k, v in state.items()}
    path = tmp_path / f"dofa_{fmt}.pth"
    torch.save(state, path)

    model = golden_model(golden).load_checkpoint(path)

    assert model.random_init is False
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.provenance()["weights"] == model.weights_sha256
    for name, waves in golden["wavelengths"].items():
        x = golden_inputs(golden, name)
        assert x.shape[-2:] == (224, 224)
        emb = model.embed(x, waves)
        assert emb.dtype == torch.float32 and emb.shape == golden["expected"][name].shape
        diff = (emb - golden["expected"][name]).abs().max().item()
        assert diff <= 1e-4, f"{fmt} {name}: max abs diff {diff}"


def test_fixture_catches_legacy_layout_and_missing_scale(golden, tmp_path):
    """The parity test has teeth: the two classic DOFA bugs change the output far beyond the tolerance."""
    path = tmp_path / "dofa.pth"
    torch.save(golden["state_dict_torchgeo"], path)
    model = golden_model(golden).load_checkpoint(path)
    x = golden_inputs(golden, "rgb")
    expected = golden["expected"]["rgb"]

    pe = model.patch_embed
    with torch.no_grad():
        codes = pe.fclayer(sincos_embed_1d(pe.wave_dim, torch.tensor(RGB) * 1000))
        raw_weight, raw_bias = pe.weight_generator(codes)
        d, k = model.embed_dim, model.config.patch_size
        legacy = (raw_weight.reshape(d, 3, k, k) * KERNEL_SCALE, raw_bias * KERNEL_SCALE)
        unscaled = (raw_weight.view(3, k, k, d).permute(3, 0, 1, 2), raw_bias)
        right = model.patch_kernel(RGB)
        for weight, bias in (legacy, unscaled):
            wrong = model.forward_head(model.forward_features_with_kernel(x, weight, bias), pre_logits=True)
            assert (wrong - expected).abs().max() > 0.05
        ok = model.forward_head(model.forward_features_with_kernel(x, *right), pre_logits=True)
    assert (ok - expected).abs().max() <= 1e-4


def test_forward_features_and_head_split(golden, tmp_path):
    path = tmp_path / "dofa.pth"
    torch.save(golden["state_dict_torchgeo"], path)
    model = golden_model(golden).load_checkpoint(path)
    x = golden_inputs(golden, "six")
    with torch.no_grad():
        tokens = model.forward_features(x, golden["wavelengths"]["six"])
        assert tokens.shape == (2, 1 + 14 * 14, 32)
        pooled = model.forward_head(tokens, pre_logits=True)
        # fc_norm is not in the checkpoint: LayerNorm with its default affine of the mean patch token.
        manual = torch.nn.functional.layer_norm(tokens[:, 1:].mean(1), (32,), eps=1e-6)
    torch.testing.assert_close(pooled, manual)
    torch.testing.assert_close(pooled, golden["expected"]["six"], atol=1e-4, rtol=0)


# -- the generated patch kernel --------------------------------------------------------------------------------


class CountingGenerator:
    def __init__(self, model: DOFA):
        self.calls = 0
        self._inner = model.patch_embed.generate_kernel
        model.patch_embed.generate_kernel = self

    def __call__(self, wavelengths):
        self.calls += 1
        return self._inner(wavelengths)


def test_kernel_generated_once_per_band_set_and_reused():
    model = quiet_tiny(img_size=32)
    spy = CountingGenerator(model)
    x3 = torch.randn(2, 3, 32, 32)
    x4 = torch.randn(2, 4, 32, 32)

    first = model.embed(x3, RGB)
    model.embed(x3, RGB)
    model.embed(x3[:1], RGB)
    assert spy.calls == 1
    with torch.no_grad():
        assert model.patch_kernel(RGB)[0] is model.patch_kernel(RGB)[0]

    model.embed(x4, RGB + [0.842])  # another band set: a new kernel
    assert spy.calls == 2
    again = model.embed(x3, RGB)  # back to RGB: still cached
    assert spy.calls == 2
    torch.testing.assert_close(first, again, rtol=0, atol=0)

    model.embed(x3, [0.49, 0.56, 0.665])  # same bands, other order: another kernel, another embedding
    assert spy.calls == 3

    with torch.no_grad():
        model.patch_kernel(RGB, dtype=torch.float64)  # other dtype: its own entry
    assert spy.calls == 4
    with torch.no_grad():
        model.patch_kernel(RGB, dtype=torch.float64)
    assert spy.calls == 4


def test_kernel_cache_invalidated_when_weights_change(tmp_path):
    model = quiet_tiny(img_size=32)
    spy = CountingGenerator(model)
    x = torch.randn(2, 3, 32, 32)
    before = model.embed(x, RGB)
    assert spy.calls == 1

    with torch.no_grad():  # an in-place update, as an optimiser step would do
        model.patch_embed.weight_generator.fc_weight.weight.mul_(2.0)
    changed = model.embed(x, RGB)
    assert spy.calls == 2
    assert (before - changed).abs().max() > 1e-3

    other = DOFA.tiny(img_size=32, seed=7)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    model.load_checkpoint(path)
    loaded = model.embed(x, RGB)
    assert spy.calls == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        torch.testing.assert_close(loaded, other.embed(x, RGB), rtol=0, atol=1e-6)


def test_kernel_not_cached_when_training_the_generator():
    model = quiet_tiny(img_size=32)
    x = torch.randn(2, 3, 32, 32)
    model(x, RGB).sum().backward()
    model(x, RGB).sum().backward()  # would fail on a cached kernel (graph freed)
    assert model.patch_embed.weight_generator.fc_weight.weight.grad is not None
    assert not model._kernel_cache


# -- random init -----------------------------------------------------------------------------------------------


def test_random_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(1)
    rng_before = torch.get_rng_state()
    a = DOFA.tiny(seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)
    torch.manual_seed(999)
    torch.rand(10)
    b = DOFA.tiny(seed=0)
    c = DOFA.tiny(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["patch_embed.weight_generator.fc_weight.weight"],
                           sc["patch_embed.weight_generator.fc_weight.weight"])
    # Fixed sin-cos positions, not random.
    assert torch.equal(sa["pos_embed"], sc["pos_embed"])
    assert torch.equal(sa["pos_embed"][0, 0], torch.zeros(64))


def test_random_init_says_so():
    model = DOFA.tiny(img_size=32, seed=0)
    assert model.random_init is True
    assert model.weights_sha256 is None
    prov = model.provenance()
    assert prov["weights"] == "random-init:seed=0"
    assert prov["weights_sha256"] is None
    assert (prov["name"], prov["embed_dim"], prov["depth"], prov["num_heads"], prov["img_size"]) == (
        "dofa-tiny", 64, 2, 4, 32)
    assert DOFA(embed_dim=96, depth=3, num_heads=4).name == "dofa-96d-3x4h-p16"
    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(RandomInitWarning, match="random weights"):
        model.embed(x, RGB)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomInitWarning)
        model.embed(x, RGB)  # once per model


def test_create_backbone_registry(tmp_path):
    with pytest.warns(RandomInitWarning):
        model = create_backbone("dofa-tiny", seed=3)
    assert model.name == "dofa-tiny" and model.random_init and model.seed == 3
    with pytest.raises(InvalidInputError, match="unknown backbone 'dofa-huge'.*dofa-small"):
        create_backbone("dofa-huge")

    path = tmp_path / "tiny.pth"
    torch.save(DOFA.tiny(seed=5).state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomInitWarning)
        loaded = create_backbone("dofa-tiny", weights=path)
    assert not loaded.random_init
    assert loaded.provenance()["weights_file"] == "tiny.pth"
    assert torch.equal(loaded.cls_token, DOFA.tiny(seed=5).cls_token)


def test_published_sizes():
    with torch.device("meta"):  # shapes only, no memory
        for build, dims in ((DOFA.small, (384, 12, 6)), (DOFA.base, (768, 12, 12)), (DOFA.large, (1024, 24, 16))):
            model = build()
            assert (model.embed_dim, model.config.depth, model.config.num_heads) == dims
            assert model.patch_embed.weight_generator.fc_weight.weight.shape == (16 * 16 * dims[0], 128)
            assert model.pos_embed.shape == (1, 197, dims[0])


# -- input validation ------------------------------------------------------------------------------------------


def test_wavelength_count_must_match_channels():
    model = quiet_tiny(img_size=32)
    with pytest.raises(InvalidInputError, match="4 bands but 3 wavelengths"):
        model.embed(torch.randn(1, 4, 32, 32), RGB)


@pytest.mark.parametrize(
    ("waves", "message"),
    [([], "empty"), ([665.0, 560.0, 490.0], "nanometres"), ([0.5, -1.0, 0.6], "positive"), (["red"], "numbers")],
)
def test_bad_wavelengths(waves, message):
    with pytest.raises(InvalidInputError, match=message):
        validate_wavelengths(waves)


def test_bad_image_shapes():
    model = quiet_tiny(img_size=32)
    with pytest.raises(InvalidInputError, match="32x32 px"):
        model.embed(torch.randn(1, 3, 64, 64), RGB)
    with pytest.raises(InvalidInputError, match=r"\[N, C, H, W\]"):
        model.embed(torch.randn(3, 32, 32), RGB)


def test_model_package_imports_no_storage_or_raster_libraries():
    """bench/inference.py must run on a GPU machine with only torch and timm: keep botaclip.model light."""
    import subprocess
    import sys

    code = (
        "import sys, botaclip.model, botaclip.model.dofa, botaclip.model.embedder, botaclip.model.checkpoint;"
        "print(','.join(m for m in ('duckdb', 'rasterio', 'h3', 'pyarrow', 'geopandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
