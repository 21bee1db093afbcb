"""Regenerate tests/data/dofa_golden.pt: DOFA outputs computed by TorchGeo's reference implementation.

Run by hand; the tests only read the committed file and never need TorchGeo. TorchGeo is not a dependency
of botaclip: install it into a scratch folder and put it on the path for this script only:

    .venv/bin/pip install --target /tmp/tg --no-deps torchgeo
    PYTHONPATH=/tmp/tg .venv/bin/python tests/data/make_dofa_golden.py

Only `torchgeo/models/dofa.py` is imported (by file path, so TorchGeo's package __init__ and its other
dependencies are not needed); it needs torch, timm and torchvision, which botaclip has.

What the fixture holds (loads with torch.load(weights_only=True)):
- a tiny DOFA (32-d, 2 blocks, 4 heads, patch 16, 224 px) whose EVERY weight is random, the kernel
  generator included (weight/bias tokens, fclayer, the generator transformer, fc_weight, fc_bias), at
  scales where a wrong kernel layout or a missing 0.01 kernel scale changes the output (checked below);
  weights are rounded to float16 to keep the file small and stored as float16: both implementations compute
  in float32 from exactly those values;
- the same weights under the key names of both checkpoint formats: the original release
  (`DOFA_ViT_base_e100.pth`: encoder keys plus `mask_token`, `norm.*`, `projector.*`) and the TorchGeo
  conversion (`dofa_base_patch16_224-*.pth`: encoder keys only); neither has `fc_norm.*` or `head.*`;
- 3-band and 6-band 224 px inputs as uint8 (x = (u8 - offset) / scale in float32) and their wavelengths;
- TorchGeo's `DOFA.forward_features` (global_pool=True) outputs for them, float32.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import timm
import torch

OUT = Path(__file__).with_name("dofa_golden.pt")
CONFIG = {"embed_dim": 32, "depth": 2, "num_heads": 4, "patch_size": 16, "img_size": 224}
WAVELENGTHS = {
    "rgb": [0.665, 0.56, 0.49],
    "six": [0.49, 0.56, 0.665, 0.842, 1.61, 2.19],  # Sentinel-2 B2 B3 B4 B8 B11 B12
}
BATCH = 2
INPUT_OFFSET, INPUT_SCALE = 127.5, 64.0


def load_torchgeo_dofa():
    spec = importlib.util.find_spec("torchgeo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchgeo not found: pip install --target /tmp/tg --no-deps torchgeo; PYTHONPATH=/tmp/tg")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "dofa.py"
    module_spec = importlib.util.spec_from_file_location("torchgeo_models_dofa", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    version = "unknown"
    for dist in path.parents[2].glob("torchgeo-*.dist-info"):
        version = dist.name[len("torchgeo-") : -len(".dist-info")]
    return module, version


def random_value(key: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """A random tensor for one parameter, at a scale that keeps activations O(1) (then rounded to fp16)."""

    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std + mean

    is_norm = ".norm" in key or key.startswith("norm.")
    if is_norm and key.endswith("weight"):
        return normal(0.1, 1.0)
    if key.endswith("bias") and len(shape) == 1:
        return normal(0.1)
    if key.endswith(("weight_tokens", "bias_token", "cls_token", "mask_token")):
        return normal(1.0)
    if key == "pos_embed":
        return normal(0.5)
    if len(shape) == 2:  # linear weights, in_proj_weight
        return normal(1.0 / math.sqrt(shape[1]))
    raise ValueError(f"no rule for {key} {tuple(shape)}")


def main() -> None:
    tg, tg_version = load_torchgeo_dofa()
    reference = tg.DOFA(num_classes=0, **CONFIG).eval()
    gen = torch.Generator().manual_seed(20240827)

    torchgeo_format: dict[str, torch.Tensor] = {}
    for key, value in reference.state_dict().items():
        if key.startswith("fc_norm."):
            continue  # not in either published format; stays at its default (1, 0)
        torchgeo_format[key] = random_value(key, value.shape, gen).half()
    missing, unexpected = reference.load_state_dict({k: v.float() for k, v in torchgeo_format.items()}, strict=False)
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias"} and not unexpected, (missing, unexpected)

    dim = CONFIG["embed_dim"]
    original_format = dict(torchgeo_format)
    for key, shape in {
        "mask_token": (1, 1, dim),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
        "projector.weight": (dim, dim),
        "projector.bias": (dim,),
    }.items():
        original_format[key] = random_value(key, torch.Size(shape), gen).half()

    inputs, expected = {}, {}
    with torch.no_grad():
        for name, waves in WAVELENGTHS.items():
            u8 = torch.randint(0, 256, (BATCH, len(waves), 224, 224), dtype=torch.uint8, generator=gen)
            x = (u8.float() - INPUT_OFFSET) / INPUT_SCALE
            inputs[name] = u8
            expected[name] = reference.forward_features(x, waves).float()

        # The fixture must be able to catch the classic mistakes: check that they change the output.
        x = (inputs["rgb"].float() - INPUT_OFFSET) / INPUT_SCALE
        pe = reference.patch_embed
        waves = torch.tensor(WAVELENGTHS["rgb"])
        codes = pe.fclayer(tg.position_embedding(pe.dynamic_embed_dim, waves * 1000))
        weight, bias = pe.weight_generator(codes)
        k, d = pe.kernel_size, pe.embed_dim
        variants = {
            "legacy view(D, C, k, k) layout": (weight.reshape(d, 3, k, k) * 0.01, bias * 0.01),
            "missing 0.01 scale": (weight.view(3, k, k, d).permute(3, 0, 1, 2), bias),
        }
        for label, (w, b) in variants.items():
            tokens = torch.nn.functional.conv2d(x, w, b, stride=k, padding=1).flatten(2).transpose(1, 2)
            tokens = tokens + reference.pos_embed[:, 1:]
            cls = (reference.cls_token + reference.pos_embed[:, :1]).expand(BATCH, -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
            for block in reference.blocks:
                tokens = block(tokens)
            wrong = reference.fc_norm(tokens[:, 1:].mean(1))
            diff = (wrong - expected["rgb"]).abs().max().item()
            print(f"{label}: max abs diff from the reference {diff:.3f}")
            assert diff > 0.05, f"fixture too weak: {label} changes the output by only {diff}"

    fixture = {
        "format_version": 1,
        "config": CONFIG,
        "state_dict_torchgeo": torchgeo_format,
        "state_dict_original": original_format,  # shares tensors with the above: stored once
        "inputs_uint8": inputs,
        "input_offset": INPUT_OFFSET,
        "input_scale": INPUT_SCALE,
        "wavelengths": WAVELENGTHS,
        "expected": expected,
        "generated_with": f"torchgeo {tg_version}, torch {torch.__version__}, timm {timm.__version__}",
    }
    torch.save(fixture, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
