"""DOFA: a Vision Transformer whose patch embedding is generated from the wavelengths of the input bands.

Xiong et al. 2024, "Neural plasticity-inspired multimodal foundation model for Earth observation"
(arXiv 2403.15356). One set of weights takes RGB, RGB+NIR, Sentinel-2, ... : each band's wavelength (µm) is
encoded, and a small transformer turns the codes of all bands into the kernel of the patch-embedding
convolution. The rest is a plain ViT built on timm's `Block`.

Numerically this is the reference implementation (zhu-xlab/DOFA after the Aug 2024 fix, which TorchGeo's
`torchgeo.models.dofa.DOFA` follows): same parameter names, so both published checkpoint formats load, and the
pooled embedding is LayerNorm(mean of the patch tokens). What differs is how it runs: the generated kernel is
cached per (band set, dtype, device) instead of regenerated for every batch.

    model = DOFA.small(seed=0)                      # random weights, says so
    model.load_checkpoint("DOFA_ViT_base_e100.pth")  # or TorchGeo's dofa_base_patch16_224-*.pth (with DOFA.base())
    emb = model.embed(x, wavelengths=[0.665, 0.56, 0.49])  # x: [N, C, 224, 224], normalised -> [N, D]
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from botaclip.errors import InvalidInputError

__all__ = [
    "DOFA",
    "DOFAConfig",
    "DOFA_CONFIGS",
    "RandomInitWarning",
    "WavelengthPatchEmbed",
    "config_name",
    "sincos_embed_1d",
    "sincos_pos_embed_2d",
    "validate_wavelengths",
]

WAVE_DIM = 128  # width of the wavelength code and of the kernel-generating transformer
NUM_WEIGHT_TOKENS = 128  # learned query tokens the generator attends with (fixed by the checkpoints)
KERNEL_SCALE = 0.01  # the generator's outputs are scaled by this before use (weights and bias alike)
LAYER_NORM_EPS = 1e-6


class RandomInitWarning(UserWarning):
    """A DOFA model is used without pretrained weights: its embeddings carry no learned knowledge."""


@dataclass(frozen=True)
class DOFAConfig:
    """The shape of a DOFA model. Published checkpoints are 224 px, patch 16."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    img_size: int = 224
    mlp_ratio: float = 4.0


#: Named sizes. small/base/large are the published ones; tiny is for tests and demos only.
DOFA_CONFIGS: dict[str, DOFAConfig] = {
    "dofa-tiny": DOFAConfig(embed_dim=64, depth=2, num_heads=4),
    "dofa-small": DOFAConfig(embed_dim=384, depth=12, num_heads=6),
    "dofa-base": DOFAConfig(embed_dim=768, depth=12, num_heads=12),
    "dofa-large": DOFAConfig(embed_dim=1024, depth=24, num_heads=16),
}


def config_name(config: DOFAConfig) -> str:
    """`dofa-base` for a named size (at any chip size: the weights are the same), else a name that spells out
    the dimensions. The chip size is recorded separately (`img_size`)."""
    for name, known in DOFA_CONFIGS.items():
        if replace(known, img_size=config.img_size) == config:
            return name
    c = config
    return f"dofa-{c.embed_dim}d-{c.depth}x{c.num_heads}h-p{c.patch_size}"


def validate_wavelengths(wavelengths: Sequence[float] | Tensor) -> tuple[float, ...]:
    """Check band wavelengths (µm, one per band) and return them as a tuple of floats.

    Raises BotaclipError for an empty list, non-finite or non-positive values, and values that look like
    nanometres (DOFA covers optical to SAR, all below 100 µm).
    """
    if isinstance(wavelengths, Tensor):
        wavelengths = wavelengths.detach().cpu().reshape(-1).tolist()
    try:
        waves = tuple(float(w) for w in wavelengths)
    except (TypeError, ValueError):
        raise InvalidInputError(f"wavelengths must be numbers in µm, one per band; got {wavelengths!r}") from None
    if not waves:
        raise InvalidInputError("wavelengths is empty: give one wavelength (µm) per band, e.g. [0.665, 0.56, 0.49] for RGB")
    bad = [w for w in waves if not math.isfinite(w) or w <= 0]
    if bad:
        raise InvalidInputError(f"wavelengths must be positive and finite (µm); got {list(waves)}")
    if max(waves) > 100:
        raise InvalidInputError(
            f"wavelengths are in micrometres (µm), e.g. 0.665 for red; got {list(waves)}, which looks like nanometres"
        )
    return waves


def sincos_embed_1d(dim: int, positions: Tensor) -> Tensor:
    """Sine-cosine code of scalar positions: [M] -> [M, dim], sines in the first half, cosines in the second.

    Frequencies are 1 / 10000^(2i/dim), computed in the dtype of `positions`.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=positions.dtype, device=positions.device)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos position embedding of a square patch grid (MAE layout), float32 [1, (1+) grid², dim].

    Patches are in row-major order; the first half of each vector encodes the column, the second the row;
    the cls token, when present, gets zeros. Computed in float64 like the reference, then rounded.
    """
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    embed = torch.cat([sincos_embed_1d(dim // 2, cols), sincos_embed_1d(dim // 2, rows)], dim=1)
    if cls_token:
        embed = torch.cat([torch.zeros(1, dim, dtype=embed.dtype), embed], dim=0)
    return embed.float().unsqueeze(0)


class ResidualMLP(nn.Module):
    """x + relu(w2(relu(w1(x)))): refines the sin-cos wavelength code before kernel generation."""

    def __init__(self, dim: int = WAVE_DIM) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.w2(F.relu(self.w1(x))))


class KernelGenerator(nn.Module):
    """A one-layer transformer over [learned weight tokens, one token per band, a bias token].

    The output at each band's position (plus that band's code) gives the band's slice of the patch kernel,
    the output at the bias token gives the conv bias. Attribute names follow the checkpoints.
    """

    def __init__(
        self,
        wave_dim: int,
        kernel_numel: int,
        embed_dim: int,
        num_heads: int = 4,
        ffn_dim: int = 2048,
        num_weight_tokens: int = NUM_WEIGHT_TOKENS,
    ) -> None:
        super().__init__()
        self.num_weight_tokens = num_weight_tokens
        layer = nn.TransformerEncoderLayer(
            d_model=wave_dim,
            nhead=num_heads,
            dim_feedforward=ffn_dim,
            dropout=0.0,
            activation="gelu",
            batch_first=False,
            norm_first=False,
        )
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(wave_dim, kernel_numel)
        self.fc_bias = nn.Linear(wave_dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.empty(num_weight_tokens, wave_dim))
        self.bias_token = nn.Parameter(torch.empty(1, wave_dim))

    def forward(self, wave_codes: Tensor) -> tuple[Tensor, Tensor]:
        """[C, wave_dim] band codes -> (raw kernel rows [C, k*k*D], raw bias [D]), before scaling."""
        tokens = torch.cat([self.weight_tokens, wave_codes, self.bias_token], dim=0)
        out = self.transformer_encoder(tokens)  # unbatched: [sequence, wave_dim]
        weight = self.fc_weight(out[self.num_weight_tokens : -1] + wave_codes)
        bias = self.fc_bias(out[-1])
        return weight, bias


class WavelengthPatchEmbed(nn.Module):
    """Patch embedding whose conv kernel is generated from the band wavelengths.

    Kept split in two steps so the kernel can be generated once and reused: `generate_kernel(wavelengths)`
    then `forward(x, weight, bias)`.
    """

    def __init__(self, patch_size: int, embed_dim: int, wave_dim: int = WAVE_DIM) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.wave_dim = wave_dim
        self.weight_generator = KernelGenerator(wave_dim, patch_size * patch_size * embed_dim, embed_dim)
        self.fclayer = ResidualMLP(wave_dim)

    def generate_kernel(self, wavelengths: Tensor) -> tuple[Tensor, Tensor]:
        """Wavelengths [C] in µm (float32) -> conv weight [D, C, k, k] and bias [D]."""
        codes = sincos_embed_1d(self.wave_dim, wavelengths * 1000)  # the code works on nanometres
        codes = self.fclayer(codes)
        weight, bias = self.weight_generator(codes)
        bands, k = wavelengths.shape[0], self.patch_size
        # Corrected layout (Aug 2024): generator row c holds band c's kernel as (k, k, D). The original
        # `view(D, C, k, k)` scrambles bands and positions and does not fit the current weights.
        weight = weight.view(bands, k, k, self.embed_dim).permute(3, 0, 1, 2)
        return weight * KERNEL_SCALE, bias.view(self.embed_dim) * KERNEL_SCALE

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """[N, C, H, W] -> patch tokens [N, L, D]. Stride k with padding 1, as the checkpoints were trained."""
        x = F.conv2d(x, weight, bias, stride=self.patch_size, padding=1)
        return x.flatten(2).transpose(1, 2)


KernelCacheKey = tuple[tuple[float, ...], torch.dtype, torch.device]


class DOFA(nn.Module):
    """DOFA backbone: wavelength-conditioned patch embedding, fixed sin-cos positions, timm Blocks.

    Without a checkpoint the weights are drawn from `seed` (same seed -> same weights, whatever the global RNG
    state) and the model says so: `random_init` is True, `weights_sha256` is None, and the first embedding
    raises a `RandomInitWarning`. `load_checkpoint` takes the original release or the TorchGeo conversion.
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch_size: int = 16,
        img_size: int = 224,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        drop_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise InvalidInputError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if img_size % patch_size:
            raise InvalidInputError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.config = DOFAConfig(embed_dim, depth, num_heads, patch_size, img_size, mlp_ratio)
        self.embed_dim = self.num_features = embed_dim
        self.num_classes = num_classes
        self.grid_size = img_size // patch_size
        norm_layer = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)

        # Build and initialise under a private RNG stream: deterministic per seed, global RNG untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.patch_embed = WavelengthPatchEmbed(patch_size, embed_dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            # Fixed, but a checkpoint entry (both formats carry it), hence a parameter without gradient.
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2 + 1, embed_dim), requires_grad=False)
            self.blocks = nn.ModuleList(
                [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)]
            )
            self.fc_norm = norm_layer(embed_dim)  # not in the checkpoints: stays at its default (1, 0)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            self._init_weights()

        self.seed = seed
        self.random_init = True
        self.weights_sha256: str | None = None
        self.weights_file: str | None = None
        self._random_warned = False
        self._kernel_cache: dict[KernelCacheKey, tuple[Tensor, Tensor]] = {}
        self._kernel_signature: tuple | None = None

    # -- sizes ------------------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: DOFAConfig | str, **kwargs: Any) -> DOFA:
        """A model of a named size (`"dofa-base"`) or of a DOFAConfig; kwargs go to the constructor."""
        if isinstance(config, str):
            if config not in DOFA_CONFIGS:
                raise InvalidInputError(f"unknown DOFA size {config!r}; choose one of {', '.join(DOFA_CONFIGS)}")
            config = DOFA_CONFIGS[config]
        return cls(**{**asdict(config), **kwargs})

    @classmethod
    def tiny(cls, **kwargs: Any) -> DOFA:
        """64-d, 2 blocks, 4 heads: for tests and demos, not a published size."""
        return cls.from_config("dofa-tiny", **kwargs)

    @classmethod
    def small(cls, **kwargs: Any) -> DOFA:
        """384-d, 12 blocks, 6 heads."""
        return cls.from_config("dofa-small", **kwargs)

    @classmethod
    def base(cls, **kwargs: Any) -> DOFA:
        """768-d, 12 blocks, 12 heads (DOFA_ViT_base_e100.pth, dofa_base_patch16_224-*.pth)."""
        return cls.from_config("dofa-base", **kwargs)

    @classmethod
    def large(cls, **kwargs: Any) -> DOFA:
        """1024-d, 24 blocks, 16 heads (DOFA_ViT_large_e100.pth, dofa_large_patch16_224-*.pth)."""
        return cls.from_config("dofa-large", **kwargs)

    @property
    def name(self) -> str:
        return config_name(self.config)

    # -- weights ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _init_weights(self) -> None:
        # ViT part as in MAE: fixed 2-D sin-cos positions, N(0, .02) cls token, xavier-uniform linears.
        self.pos_embed.copy_(sincos_pos_embed_2d(self.embed_dim, self.grid_size))
        nn.init.normal_(self.cls_token, std=0.02)
        for module in [*self.blocks.modules(), self.fc_norm, self.head]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Kernel generator as in DOFA: xavier-uniform weights with bias 0.01, N(0, .02) tokens.
        for module in [*self.patch_embed.weight_generator.modules(), *self.patch_embed.fclayer.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.constant_(module.bias, 0.01)
        nn.init.normal_(self.patch_embed.weight_generator.weight_tokens, std=0.02)
        nn.init.normal_(self.patch_embed.weight_generator.bias_token, std=0.02)

    def load_checkpoint(self, path: str | os.PathLike) -> DOFA:
        """Load a DOFA checkpoint (original release or TorchGeo conversion) into this model; returns self.

        See `botaclip.model.checkpoint.load_dofa_checkpoint` for the rules. Records the file's sha256 in
        `weights_sha256` and clears `random_init`.
        """
        from botaclip.model.checkpoint import load_dofa_checkpoint

        load_dofa_checkpoint(self, path)
        return self

    def provenance(self) -> dict[str, Any]:
        """What produced this model's embeddings, for the store's provenance record."""
        weights = self.weights_sha256 if not self.random_init else f"random-init:seed={self.seed}"
        return {
            "model": "dofa",
            "name": self.name,
            **asdict(self.config),
            "weights": weights,
            "weights_sha256": self.weights_sha256,
            "weights_file": self.weights_file,
            "random_init": self.random_init,
        }

    def warn_if_random_init(self) -> None:
        """Warn once per model that its weights are random (no checkpoint was loaded)."""
        if self.random_init and not self._random_warned:
            self._random_warned = True
            warnings.warn(
                f"{self.name} has random weights (seed={self.seed}): no checkpoint was loaded, so its embeddings "
                "carry no pretrained knowledge; load one with load_checkpoint() or --weights",
                RandomInitWarning,
                stacklevel=3,
            )

    # -- the generated patch kernel, cached -------------------------------------------------------------------

    def _generator_signature(self) -> tuple:
        # Identity, storage and version counter of every generator parameter: any in-place update (optimiser
        # step, load_state_dict's copy_) or replacement changes it, so stale kernels are never served.
        return tuple((id(p), p.data_ptr(), p._version) for p in self.patch_embed.parameters())

    def clear_kernel_cache(self) -> None:
        """Forget all generated patch kernels (done automatically when weights load, change or move)."""
        self._kernel_cache.clear()
        self._kernel_signature = None

    def patch_kernel(
        self,
        wavelengths: Sequence[float] | Tensor,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The patch-embedding conv weight [D, C, k, k] and bias [D] for these band wavelengths (µm).

        Generated once per (wavelengths, dtype, device) and reused; regenerated after the generator's
        weights change. The kernel is generated in float32 with autocast off, then cast to `dtype`
        (default: the model's). When gradients are wanted for the generator it is generated fresh, uncached.
        """
        waves = validate_wavelengths(wavelengths)
        param = self.cls_token
        dtype = dtype or param.dtype
        device = torch.device(device) if device is not None else param.device
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.patch_embed.parameters()):
            weight, bias = self._generate_kernel(waves)
            return weight.to(device, dtype), bias.to(device, dtype)

        signature = self._generator_signature()
        if signature != self._kernel_signature:
            self._kernel_cache.clear()
            self._kernel_signature = signature
        key = (waves, dtype, device)
        cached = self._kernel_cache.get(key)
        if cached is None:
            # Outside inference mode so the cached tensors are ordinary ones, usable in any later mode.
            with torch.inference_mode(False), torch.no_grad():
                weight, bias = self._generate_kernel(waves)
                cached = (weight.to(device, dtype).contiguous(), bias.to(device, dtype).contiguous())
            self._kernel_cache[key] = cached
        return cached

    def _generate_kernel(self, waves: tuple[float, ...]) -> tuple[Tensor, Tensor]:
        param = self.cls_token
        with torch.autocast(param.device.type, enabled=False):
            wavelengths = torch.tensor(waves, dtype=torch.float32, device=param.device)
            return self.patch_embed.generate_kernel(wavelengths.to(param.dtype))

    def _apply(self, *args: Any, **kwargs: Any) -> DOFA:
        # .to(), .cuda(), .half() ... : cached kernels belong to the old placement.
        self.clear_kernel_cache()
        return super()._apply(*args, **kwargs)

    # -- forward ----------------------------------------------------------------------------------------------

    def check_input(self, x: Tensor, wavelengths: Sequence[float] | Tensor) -> tuple[float, ...]:
        """Validate a batch [N, C, H, W] against its band wavelengths; returns the wavelengths as a tuple."""
        waves = validate_wavelengths(wavelengths)
        if x.ndim != 4:
            raise InvalidInputError(f"expected images as [N, C, H, W]; got shape {tuple(x.shape)}")
        if x.shape[1] != len(waves):
            raise InvalidInputError(
                f"the images have {x.shape[1]} bands but {len(waves)} wavelengths were given ({list(waves)}); "
                "give one wavelength (µm) per band, in band order"
            )
        size = self.config.img_size
        if tuple(x.shape[2:]) != (size, size):
            raise InvalidInputError(
                f"{self.name} takes {size}x{size} px chips; got {x.shape[2]}x{x.shape[3]} px"
            )
        if not x.is_floating_point():
            raise InvalidInputError(f"images must be float (normalised); got {x.dtype}")
        return waves

    def forward_features_with_kernel(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Token sequence [N, 1 + L, D] (cls first) from images and an already generated patch kernel."""
        x = self.patch_embed(x, weight, bias)
        x = x + self.pos_embed[:, 1:, :]
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_features(self, x: Tensor, wavelengths: Sequence[float] | Tensor) -> Tensor:
        """Images [N, C, H, W] (normalised) with band wavelengths (µm) -> token sequence [N, 1 + L, D]."""
        waves = self.check_input(x, wavelengths)
        weight, bias = self.patch_kernel(waves, dtype=x.dtype, device=x.device)
        return self.forward_features_with_kernel(x, weight, bias)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens -> pooled embedding [N, D] (pre_logits) or head output.

        Pooling is LayerNorm(mean of the patch tokens, cls token left out), done in float32 whatever the
        compute dtype, because the mean over 196 tokens and the normalisation are where bf16 loses most.
        """
        pooled = x[:, 1:, :].float().mean(dim=1)
        norm = self.fc_norm
        pooled = F.layer_norm(pooled, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)
        pooled = self.head_drop(pooled)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: Tensor, wavelengths: Sequence[float] | Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x, wavelengths))

    def embed(self, x: Tensor, wavelengths: Sequence[float] | Tensor) -> Tensor:
        """The DOFA embedding: images [N, C, H, W] (normalised) and band wavelengths (µm) -> [N, D] float32.

        Inference only (no gradient; use `forward_features` + `forward_head` to train through the backbone).
        For batched inference on a device use `botaclip.model.Embedder`.
        """
        self.warn_if_random_init()
        with torch.no_grad():
            return self.forward_head(self.forward_features(x, wavelengths), pre_logits=True)
