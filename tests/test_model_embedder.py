"""The batched DOFA embedder: CPU path always; the CUDA/bf16 path where a CUDA device exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from botaclip.errors import InvalidInputError
from botaclip.model import DOFA, Embedder, RandomInitWarning

RGB = [0.665, 0.56, 0.49]
SIZE = 32  # a 2x2 patch grid keeps these tests fast; the 224 px path is covered by the parity tests


@pytest.fixture
def model() -> DOFA:
    m = DOFA.tiny(img_size=SIZE, seed=0)
    m._random_warned = True
    return m


@pytest.fixture
def chips() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(7, 3, SIZE, SIZE)).astype(np.float32)


def test_batched_equals_unbatched(model, chips):
    reference = model.embed(torch.from_numpy(chips), RGB).numpy()
    embedder = Embedder(model, RGB, device="cpu", batch_size=3)
    out = embedder.embed(chips)
    assert out.dtype == np.float32 and out.shape == (7, 64)
    np.testing.assert_allclose(out, reference, atol=1e-5, rtol=0)
    one_by_one = np.concatenate([Embedder(model, RGB, device="cpu", batch_size=1).embed(c[None]) for c in chips])
    np.testing.assert_allclose(one_by_one, reference, atol=1e-5, rtol=0)


def test_normalize_gives_unit_vectors(model, chips):
    raw = Embedder(model, RGB, device="cpu").embed(chips)
    unit = Embedder(model, RGB, device="cpu", normalize=True).embed(chips)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_stream_yields_one_array_per_input_batch(model, chips):
    embedder = Embedder(model, RGB, device="cpu", batch_size=2)
    batches = [chips[:5], chips[5:5], chips[5:], torch.from_numpy(chips[:1])]
    outs = list(embedder.embed_stream(iter(batches)))
    assert [o.shape[0] for o in outs] == [5, 0, 2, 1]
    whole = embedder.embed(chips)
    np.testing.assert_allclose(np.concatenate(outs[:3]), whole, atol=1e-6, rtol=0)
    np.testing.assert_allclose(outs[3], whole[:1], atol=1e-6, rtol=0)


def test_kernel_generated_once_for_a_stream(model, chips):
    calls = []
    inner = model.patch_embed.generate_kernel
    model.patch_embed.generate_kernel = lambda w: calls.append(1) or inner(w)
    embedder = Embedder(model, RGB, device="cpu", batch_size=2)
    list(embedder.embed_stream([chips, chips]))
    assert len(calls) == 1


def test_bad_input_is_refused(model, chips):
    embedder = Embedder(model, RGB, device="cpu")
    with pytest.raises(InvalidInputError, match="4 bands but 3 wavelengths"):
        embedder.embed(np.zeros((1, 4, SIZE, SIZE), np.float32))
    with pytest.raises(InvalidInputError, match="must be float"):
        embedder.embed((chips * 50).astype(np.uint8))
    with pytest.raises(InvalidInputError, match="batch_size"):
        Embedder(model, RGB, device="cpu", batch_size=0)
    with pytest.raises(InvalidInputError, match="unknown dtype"):
        Embedder(model, RGB, device="cpu", dtype="fp8")
    with pytest.raises(InvalidInputError, match="unknown device"):
        Embedder(model, RGB, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when CUDA is absent")
def test_cuda_requested_without_cuda(model):
    with pytest.raises(InvalidInputError, match="no CUDA device"):
        Embedder(model, RGB, device="cuda")


def test_auto_picks_cpu_fp32_without_cuda(model):
    embedder = Embedder(model, RGB, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert embedder.device.type == expected
    if expected == "cpu":
        assert embedder.dtype == torch.float32
    prov = embedder.provenance()
    assert prov["wavelengths"] == RGB and prov["weights"] == "random-init:seed=0"


def test_random_init_warns_through_embedder():
    model = DOFA.tiny(img_size=SIZE)
    with pytest.warns(RandomInitWarning):
        Embedder(model, RGB, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_matches_fp32(model, chips):
    reference = Embedder(model, RGB, device="cpu", normalize=True).embed(chips)
    fp32 = Embedder(model, RGB, device="cuda", dtype="fp32", batch_size=3, normalize=True)
    bf16 = Embedder(model, RGB, device="cuda", dtype="bf16", batch_size=3, normalize=True)
    np.testing.assert_allclose(fp32.embed(chips), reference, atol=1e-4)
    streamed = list(bf16.embed_stream([chips[:4], chips[4:4], chips[4:]]))
    assert [s.shape[0] for s in streamed] == [4, 0, 3]
    low = np.concatenate(streamed)
    cosine = (low * reference).sum(axis=1)
    assert cosine.min() >= 0.999
