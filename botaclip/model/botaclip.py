"""BotaCLIP's trainable parts: the image adapter, the relevé encoder, and the modules that join them with a loss:
``BotaCLIP`` (contrastive, the method) and ``BotaSP`` (supervised multi-label species head, the paper's baseline).

Cerna et al. 2025 ("BotaCLIP: Contrastive Learning for Botany-Aware Representation of Earth Observation Data",
arXiv 2511.21194): the backbone stays frozen; an adapter maps its pooled embedding into a space shared with an
encoder of the plot's species composition, trained with a sigmoid contrastive loss plus a geometry regulariser.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from botaclip.model.loss import GeometryRegularizer, SigLIPLoss, SpeciesBCELoss
from botaclip.model.train_config import ADAPTER_KINDS, COVER_TRANSFORMS, REG_TARGETS

__all__ = ["ADAPTER_KINDS", "COVER_TRANSFORMS", "REG_TARGETS", "BotaCLIP", "BotaSP", "ImageAdapter", "ReleveEncoder"]


class ImageAdapter(nn.Module):
    """Maps unit-normalised pooled backbone embeddings [N, D] to unit-normalised adapted embeddings [N, E].

    The input is centred first: x = normalize(normalize(d) - c), with c [D] the mean vector of the backbone feature
    set (a buffer, saved with the weights; zeros = no centring). Why: the unit embeddings of a random-init backbone
    are nearly collinear (mean cosine 0.9987 on the sample region), so without centring every cosine the loss and
    the regulariser see is about 1. ``kind="linear"``: one linear layer D -> E, initialised to the identity when
    D == E (weight = I, bias = 0), so training starts from "the backbone, centred"; when D != E the weight starts
    as a (semi-)orthogonal projection. ``kind="mlp"`` (for ablations): the same linear skip plus a residual MLP
    D -> hidden -> E whose last layer starts at zero, so it also starts as the identity.
    """

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden_dim: int | None = None,
                 center: torch.Tensor | None = None) -> None:
        super().__init__()
        if kind not in ADAPTER_KINDS:
            raise ValueError(f"adapter kind must be one of {ADAPTER_KINDS}, got {kind!r}")
        self.in_dim, self.out_dim, self.kind = int(in_dim), int(out_dim), kind
        center = torch.zeros(in_dim) if center is None else torch.as_tensor(center, dtype=torch.float32)
        if center.shape != (self.in_dim,):
            raise ValueError(f"center must have shape [{in_dim}], got {list(center.shape)}")
        self.register_buffer("center", center.clone())
        self.linear = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            if in_dim == out_dim:
                self.linear.weight.copy_(torch.eye(out_dim))
            else:
                nn.init.orthogonal_(self.linear.weight)
            self.linear.bias.zero_()
        self.mlp: nn.Sequential | None = None
        if kind == "mlp":
            hidden = int(hidden_dim or max(in_dim, out_dim))
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
            with torch.no_grad():
                self.mlp[-1].weight.zero_()
                self.mlp[-1].bias.zero_()

    def prepare(self, backbone_embedding: torch.Tensor) -> torch.Tensor:
        """The adapter's input: the unit backbone embedding, centred by ``center`` and renormalised [N, D]."""
        return F.normalize(F.normalize(backbone_embedding, dim=-1) - self.center, dim=-1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The trainable map on a prepared input [N, D] -> unit-normalised [N, E]."""
        y = self.linear(x)
        if self.mlp is not None:
            y = y + self.mlp(x)
        return F.normalize(y, dim=-1)

    def forward(self, backbone_embedding: torch.Tensor) -> torch.Tensor:
        return self.project(self.prepare(backbone_embedding))


class ReleveEncoder(nn.Module):
    """Encodes a plot's species composition [N, V] (cover in percent, or presence, per vocabulary species) into
    unit-normalised embeddings [N, E].

    The input is transformed first: ``log1p`` (log(1 + cover %), damping dominant species) or ``presence``
    (1 where cover > 0). Then an MLP: V -> hidden (-> hidden ...) -> E with GELU, ``depth`` linear layers in all.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int = 512,
        depth: int = 2,
        transform: str = "log1p",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if transform not in COVER_TRANSFORMS:
            raise ValueError(f"cover transform must be one of {COVER_TRANSFORMS}, got {transform!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.vocab_size, self.embed_dim, self.transform = int(vocab_size), int(embed_dim), transform
        layers: list[nn.Module] = []
        width = vocab_size
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden_dim), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_dim
        layers.append(nn.Linear(width, embed_dim))
        self.mlp = nn.Sequential(*layers)

    def transform_cover(self, cover: torch.Tensor) -> torch.Tensor:
        """Cover in percent [N, V] -> the encoder's input."""
        cover = cover.clamp_min(0)
        if self.transform == "presence":
            return (cover > 0).to(cover.dtype)
        return torch.log1p(cover)

    def forward(self, cover: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.transform_cover(cover)), dim=-1)


class _AdaptedModel(nn.Module):
    """What BotaCLIP and BotaSP share: the image adapter and the geometry regulariser R, weighted by lambda_reg.

    Args (the ``adapter_options`` of both models):
        backbone_dim: D, the backbone embedding's dimension.
        embed_dim: E (default D: an identity-initialised adapter).
        adapter: "linear" or "mlp" (see :class:`ImageAdapter`).
        lambda_reg: weight of R in the loss (0: R is only reported).
        k_neighbors: restrict R to each sample's k nearest backbone neighbours in the batch (None: all pairs).
        reg_target: R compares the adapted embeddings' cosines with those of the adapter's input ("input": the
            centred backbone embedding, so R = 0 at the identity start) or, for the ablation of the first demo's
            setting, with those of the raw unit backbone embedding ("raw").
        center: [D] the adapter's input centring (None: none).
    """

    #: Names of the loss terms ``forward`` returns, "loss" (the total) first.
    terms: tuple[str, ...] = ("loss", "reg")

    def __init__(self, backbone_dim: int, embed_dim: int | None = None, adapter: str = "linear",
                 lambda_reg: float = 1.0, k_neighbors: int | None = None, reg_target: str = "input",
                 center: torch.Tensor | None = None) -> None:
        super().__init__()
        if reg_target not in REG_TARGETS:
            raise ValueError(f"reg_target must be one of {REG_TARGETS}, got {reg_target!r}")
        self.image_adapter = ImageAdapter(backbone_dim, int(embed_dim or backbone_dim), kind=adapter, center=center)
        self.regularizer = GeometryRegularizer(k_neighbors)
        self.lambda_reg = float(lambda_reg)
        self.reg_target = reg_target

    def encode_image(self, backbone_embedding: torch.Tensor) -> torch.Tensor:
        """Frozen backbone embeddings [N, D] -> adapted unit-normalised embeddings [N, E]."""
        return self.image_adapter(backbone_embedding)

    def _adapt(self, backbone_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adapted embeddings, the regulariser's value)."""
        x = self.image_adapter.prepare(backbone_embedding)
        image = self.image_adapter.project(x)
        target = x if self.reg_target == "input" else F.normalize(backbone_embedding, dim=-1)
        if self.lambda_reg > 0:
            return image, self.regularizer(image, target)
        with torch.no_grad():  # still reported in the logs, but without a graph
            return image, self.regularizer(image, target)


class BotaCLIP(_AdaptedModel):
    """Image adapter + relevé encoder + loss ``L = SigLIP(u, v) + lambda_reg * R``.

    ``forward(backbone, cover)`` takes frozen backbone embeddings d [N, D] and plot compositions [N, V] of N
    matching (image, relevé) pairs and returns a dict with ``loss``, ``siglip`` and ``reg``.
    """

    terms = ("loss", "siglip", "reg")
    objective = "contrastive"

    def __init__(self, backbone_dim: int, vocab_size: int, releve_hidden_dim: int = 512, releve_depth: int = 2,
                 cover_transform: str = "log1p", init_temperature: float = 10.0, init_bias: float = -10.0,
                 **adapter_options) -> None:
        """``vocab_size``: V; ``releve_*``, ``cover_transform``: the relevé encoder (:class:`ReleveEncoder`);
        ``init_temperature``/``init_bias``: SigLIP's t and b at the start; ``adapter_options``: as
        :class:`_AdaptedModel` (embed_dim, adapter, lambda_reg, k_neighbors, reg_target, center)."""
        super().__init__(backbone_dim, **adapter_options)
        self.releve_encoder = ReleveEncoder(
            vocab_size, self.image_adapter.out_dim, hidden_dim=releve_hidden_dim, depth=releve_depth,
            transform=cover_transform,
        )
        self.siglip = SigLIPLoss(init_logit_scale=math.log(init_temperature), init_logit_bias=init_bias)

    def encode_releve(self, cover: torch.Tensor) -> torch.Tensor:
        """Plot compositions (cover %, [N, V]) -> unit-normalised relevé embeddings [N, E]."""
        return self.releve_encoder(cover)

    def forward(self, backbone_embedding: torch.Tensor, cover: torch.Tensor) -> dict[str, torch.Tensor]:
        image, reg = self._adapt(backbone_embedding)
        siglip = self.siglip(image, self.encode_releve(cover))
        return {"loss": siglip + self.lambda_reg * reg, "siglip": siglip, "reg": reg}


class BotaSP(_AdaptedModel):
    """The paper's supervised baseline: the same image adapter plus a linear multi-label species head, trained
    with binary cross-entropy on the plots' species (present = cover > 0), plus lambda_reg * R as for BotaCLIP so
    that the two differ only in their objective.

    ``forward(backbone, cover)`` returns a dict with ``loss``, ``bce`` and ``reg``.
    """

    terms = ("loss", "bce", "reg")
    objective = "supervised"

    def __init__(self, backbone_dim: int, vocab_size: int, **adapter_options) -> None:
        """``vocab_size``: V, the species the head predicts; ``adapter_options``: as :class:`_AdaptedModel`."""
        super().__init__(backbone_dim, **adapter_options)
        self.species_head = nn.Linear(self.image_adapter.out_dim, int(vocab_size))
        self.bce = SpeciesBCELoss()

    @torch.no_grad()
    def init_head_bias(self, prevalence: torch.Tensor) -> None:
        """Start each species' logit at the log-odds of its training prevalence (the best constant guess), so
        the first steps train the features instead of the biases."""
        p = prevalence.clamp(1e-4, 1 - 1e-4).to(self.species_head.bias)
        self.species_head.bias.copy_(torch.log(p / (1 - p)))

    def species_logits(self, backbone_embedding: torch.Tensor) -> torch.Tensor:
        """Backbone embeddings [N, D] -> species logits [N, V]."""
        return self.species_head(self.encode_image(backbone_embedding))

    def forward(self, backbone_embedding: torch.Tensor, cover: torch.Tensor) -> dict[str, torch.Tensor]:
        image, reg = self._adapt(backbone_embedding)
        bce = self.bce(self.species_head(image), (cover > 0).to(image.dtype))
        return {"loss": bce + self.lambda_reg * reg, "bce": bce, "reg": reg}
