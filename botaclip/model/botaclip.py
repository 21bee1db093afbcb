"""BotaCLIP's trainable parts: the image adapter, the relevé encoder, and the module that joins them with the loss.

Cerna et al. 2025 ("BotaCLIP: Contrastive Learning for Botany-Aware Representation of Earth Observation Data",
arXiv 2511.21194): the backbone stays frozen; an adapter maps its pooled embedding into a space shared with an
encoder of the plot's species composition, trained with a sigmoid contrastive loss plus a geometry regulariser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from botaclip.model.loss import GeometryRegularizer, SigLIPLoss

ADAPTER_KINDS = ("linear", "mlp")
COVER_TRANSFORMS = ("log1p", "presence")


class ImageAdapter(nn.Module):
    """Maps unit-normalised pooled backbone embeddings [N, D] to unit-normalised adapted embeddings [N, E].

    ``kind="linear"``: one linear layer D -> E, initialised to the identity when D == E (weight = I, bias = 0), so
    training starts from the raw backbone; when D != E the weight starts as a (semi-)orthogonal projection.
    ``kind="mlp"`` (for ablations): the same linear skip plus a residual MLP D -> hidden -> E whose last layer
    starts at zero, so it also starts as the identity.
    """

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden_dim: int | None = None) -> None:
        super().__init__()
        if kind not in ADAPTER_KINDS:
            raise ValueError(f"adapter kind must be one of {ADAPTER_KINDS}, got {kind!r}")
        self.in_dim, self.out_dim, self.kind = int(in_dim), int(out_dim), kind
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

    def forward(self, backbone_embedding: torch.Tensor) -> torch.Tensor:
        x = F.normalize(backbone_embedding, dim=-1)
        y = self.linear(x)
        if self.mlp is not None:
            y = y + self.mlp(x)
        return F.normalize(y, dim=-1)


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


class BotaCLIP(nn.Module):
    """Image adapter + relevé encoder + loss ``L = SigLIP(u, v) + lambda_reg * R(u, d)``.

    ``forward(backbone, cover)`` takes frozen backbone embeddings d [N, D] and plot compositions [N, V] of N
    matching (image, relevé) pairs and returns a dict with ``loss``, ``siglip`` and ``reg``.
    """

    def __init__(
        self,
        backbone_dim: int,
        vocab_size: int,
        embed_dim: int | None = None,
        adapter: str = "linear",
        releve_hidden_dim: int = 512,
        releve_depth: int = 2,
        cover_transform: str = "log1p",
        lambda_reg: float = 1.0,
        k_neighbors: int | None = None,
    ) -> None:
        super().__init__()
        embed_dim = int(embed_dim or backbone_dim)
        self.image_adapter = ImageAdapter(backbone_dim, embed_dim, kind=adapter)
        self.releve_encoder = ReleveEncoder(
            vocab_size, embed_dim, hidden_dim=releve_hidden_dim, depth=releve_depth, transform=cover_transform
        )
        self.siglip = SigLIPLoss()
        self.regularizer = GeometryRegularizer(k_neighbors)
        self.lambda_reg = float(lambda_reg)

    def encode_image(self, backbone_embedding: torch.Tensor) -> torch.Tensor:
        """Frozen backbone embeddings [N, D] -> adapted unit-normalised embeddings [N, E]."""
        return self.image_adapter(backbone_embedding)

    def encode_releve(self, cover: torch.Tensor) -> torch.Tensor:
        """Plot compositions (cover %, [N, V]) -> unit-normalised relevé embeddings [N, E]."""
        return self.releve_encoder(cover)

    def forward(self, backbone_embedding: torch.Tensor, cover: torch.Tensor) -> dict[str, torch.Tensor]:
        image = self.encode_image(backbone_embedding)
        releve = self.encode_releve(cover)
        siglip = self.siglip(image, releve)
        if self.lambda_reg > 0:
            reg = self.regularizer(image, backbone_embedding)
        else:  # still reported in the logs, but without a graph
            with torch.no_grad():
                reg = self.regularizer(image, backbone_embedding)
        return {"loss": siglip + self.lambda_reg * reg, "siglip": siglip, "reg": reg}
