"""DOFA checkpoint loading: formats, wrappers, refused pickles, and errors that name keys and sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError
from botaclip.model import DOFA, fit_state_dict, read_checkpoint
from botaclip.model.checkpoint import describe_checkpoint_size, load_dofa_checkpoint

GOLDEN = Path(__file__).parent / "data" / "dofa_golden.pt"

MARKER = Path("/tmp/botaclip-test-pickle-ran")


class CodeCarrier:
    """An object whose unpickling would run code: a weights-only load must refuse it without running it."""

    def __reduce__(self):
        return (MARKER.touch, ())


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)


@pytest.fixture
def model(golden) -> DOFA:
    return DOFA(**golden["config"], seed=0)


def test_original_release_extras_are_dropped_knowingly(golden, model, tmp_path):
    path = tmp_path / "DOFA_ViT_tiny_e100.pth"
    torch.save(golden["state_dict_original"], path)
    dropped = load_dofa_checkpoint(model, path)
    assert dropped == ["mask_token", "norm.bias", "norm.weight", "projector.bias", "projector.weight"]
    assert torch.equal(model.pos_embed, golden["state_dict_original"]["pos_embed"].float())
    # fc_norm is in neither format: default affine.
    assert torch.equal(model.fc_norm.weight, torch.ones(32)) and torch.equal(model.fc_norm.bias, torch.zeros(32))


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_state_dicts_load(golden, model, tmp_path, wrapper):
    raw = golden["state_dict_torchgeo"]
    path = tmp_path / "train.ckpt"
    torch.save({wrapper: raw, "epoch": 7, "optimizer": {"lr": 1e-3, "step": torch.tensor(10)}}, path)
    model.load_checkpoint(path)
    x = (golden["inputs_uint8"]["rgb"].float() - golden["input_offset"]) / golden["input_scale"]
    emb = model.embed(x, golden["wavelengths"]["rgb"])
    torch.testing.assert_close(emb, golden["expected"]["rgb"], atol=1e-4, rtol=0)


def test_pickle_carrying_code_is_refused_and_not_run(model, tmp_path):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "extra": CodeCarrier()}, path)
    with pytest.raises(InvalidInputError, match=r"refused to load .*evil\.pth.*weights_only"):
        model.load_checkpoint(path)
    assert not MARKER.exists()
    assert model.random_init and model.weights_sha256 is None


def test_unreadable_and_missing_files(model, tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BotaclipError, match=r"garbage\.pth is not a readable PyTorch checkpoint"):
        model.load_checkpoint(garbage)
    with pytest.raises(MissingFileError, match="checkpoint not found"):
        model.load_checkpoint(tmp_path / "nope.pth")
    no_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.1}, no_tensors)
    with pytest.raises(InvalidInputError, match="not tensors: lr"):
        model.load_checkpoint(no_tensors)


def test_missing_and_unexpected_keys_are_named(golden, model, tmp_path):
    state = dict(golden["state_dict_torchgeo"])
    del state["blocks.1.mlp.fc2.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(InvalidInputError, match=r"missing\.pth: keys missing .*blocks\.1\.mlp\.fc2\.weight"):
        model.load_checkpoint(path)

    state = dict(golden["state_dict_torchgeo"])
    state["decoder_pred.weight"] = torch.zeros(4, 4)
    path = tmp_path / "unexpected.pth"
    torch.save(state, path)
    with pytest.raises(InvalidInputError, match=r"unexpected keys .*decoder_pred\.weight"):
        model.load_checkpoint(path)
    assert model.random_init  # nothing was loaded


def test_shape_mismatch_names_key_shapes_and_size(golden, tmp_path):
    tiny = DOFA.tiny(seed=0)  # 64-d; the fixture is 32-d
    path = tmp_path / "dofa32.pth"
    torch.save(golden["state_dict_torchgeo"], path)
    with pytest.raises(InvalidInputError) as err:
        tiny.load_checkpoint(path)
    message = str(err.value)
    assert "dofa32.pth" in message
    assert "(1, 1, 32) in the file but (1, 1, 64) in the model" in message
    assert "embed_dim=32 and 2 blocks" in message


def test_shape_mismatch_recognises_published_sizes():
    with torch.device("meta"):
        large_state = DOFA.large().state_dict()
    assert describe_checkpoint_size(large_state) == ("DOFA-large", "dofa-large")
    small = DOFA.tiny(seed=0)
    with pytest.raises(InvalidInputError, match=r"in the file but .*this checkpoint is DOFA-large: use backbone dofa-large"
                       ) as mismatch:
        fit_state_dict(small, large_state, source="DOFA_ViT_large_e100.pth")
    assert mismatch.value.params == ["backbone"]  # the CLI says --backbone

    # Same width, other depth (a base file for a 768-d, 24-block model) is named too.
    with torch.device("meta"):
        base_state = DOFA.base().state_dict()
        deep = DOFA(embed_dim=768, depth=24, num_heads=12)
    with pytest.raises(InvalidInputError, match="12 transformer blocks, the model 24; this checkpoint is DOFA-base"):
        fit_state_dict(deep, base_state, source="dofa_base_patch16_224-a0275954.pth")


def test_read_checkpoint_returns_sha256(golden, tmp_path):
    path = tmp_path / "x.pth"
    torch.save(golden["state_dict_torchgeo"], path)
    state, sha = read_checkpoint(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(state) == set(golden["state_dict_torchgeo"])
