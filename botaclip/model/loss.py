"""The terms of the BotaCLIP and BotaSP training losses, each a small ``nn.Module`` (open_clip ``loss.py`` style).

Total losses (Cerna et al. 2025, "BotaCLIP", arXiv 2511.21194)::

    BotaCLIP:  L = L_SigLIP(u, v) + lambda * R(a, d)
    BotaSP:    L = L_BCE(W a + c, y) + lambda * R(a, d)

with u = adapted image embeddings, v = relevé embeddings, a = adapted and d = the adapter's input (the centred
backbone embedding; a is u: the adapted image embedding is both the contrastive anchor and what R constrains),
y = the plots' species presences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SigLIPLoss(nn.Module):
    """Sigmoid pairwise contrastive loss of SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image
    Pre-Training", ICCV), with its learnable temperature and bias.

    For a batch of N unit-normalised pairs (u_i, v_i)::

        L = -(1 / N) * sum_{i=1..N} sum_{j=1..N} log sigmoid( z_ij * (t * <u_i, v_j> + b) )

    z_ij = +1 for the matching pair (i == j) and -1 otherwise; t = exp(t') with t' a learnable scalar
    initialised to log 10 and b a learnable bias initialised to -10 (the paper's values: the strong negative
    bias offsets the N - 1 negatives per row at the start of training).

    Args:
        init_logit_scale: initial value of t' (so t = exp(t')).
        init_logit_bias: initial value of b.
    """

    def __init__(self, init_logit_scale: float = math.log(10.0), init_logit_bias: float = -10.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))

    @property
    def temperature(self) -> float:
        """The current t = exp(t')."""
        return float(self.logit_scale.detach().exp())

    @property
    def bias(self) -> float:
        """The current bias b."""
        return float(self.logit_bias.detach())

    def logits(self, image_features: torch.Tensor, releve_features: torch.Tensor) -> torch.Tensor:
        """``t * u @ v.T + b``: [N, M] pair logits of unit-normalised image [N, E] and relevé [M, E] features."""
        return self.logit_scale.exp() * image_features @ releve_features.T + self.logit_bias

    def forward(self, image_features: torch.Tensor, releve_features: torch.Tensor) -> torch.Tensor:
        logits = self.logits(image_features, releve_features)
        n = logits.shape[0]
        labels = 2.0 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1.0
        return -F.logsigmoid(labels * logits).sum() / n


class GeometryRegularizer(nn.Module):
    """Geometry-preserving regulariser of BotaCLIP (Cerna et al. 2025): keeps the adapted embedding space's
    pairwise cosine similarities close to the frozen backbone's, against catastrophic forgetting::

        R = mean_{(i, j) in P} ( cos(a_i, a_j) - cos(d_i, d_j) )^2

    a = adapted and d = frozen backbone embeddings of the same batch. P is every ordered pair i != j of the batch
    (the diagonal, always 0, is left out so it does not dilute the mean), or, with ``k_neighbors=k``, the pairs
    (i, j) where j is one of the k nearest neighbours of i by backbone cosine similarity (i excluded): this
    preserves only local neighbourhoods and lets distant points move.

    Args:
        k_neighbors: restrict P to each sample's k nearest backbone neighbours (None: all pairs).
    """

    def __init__(self, k_neighbors: int | None = None) -> None:
        super().__init__()
        if k_neighbors is not None and k_neighbors < 1:
            raise ValueError(f"k_neighbors must be >= 1 or None, got {k_neighbors}")
        self.k_neighbors = k_neighbors

    def forward(self, adapted: torch.Tensor, backbone: torch.Tensor) -> torch.Tensor:
        n = adapted.shape[0]
        if n < 2:
            return adapted.new_zeros(())
        a = F.normalize(adapted, dim=-1)
        d = F.normalize(backbone, dim=-1)
        cos_a = a @ a.T
        cos_d = d @ d.T
        sq = (cos_a - cos_d) ** 2
        eye = torch.eye(n, dtype=torch.bool, device=sq.device)
        if self.k_neighbors is None:
            # A masked sum, not boolean indexing: same value, a much cheaper backward.
            return sq.masked_fill(eye, 0.0).sum() / (n * (n - 1))
        k = min(self.k_neighbors, n - 1)
        # Neighbours from the frozen space: a fixed target, no gradient through the choice.
        ranked = cos_d.detach().masked_fill(eye, float("-inf"))
        neighbours = ranked.topk(k, dim=1).indices
        return sq.gather(1, neighbours).mean()


class SpeciesBCELoss(nn.Module):
    """Multi-label binary cross-entropy over the species vocabulary: the objective of BotaSP, the supervised
    baseline of BotaCLIP (Cerna et al. 2025, arXiv 2511.21194), where the same frozen backbone and adapter feed a
    linear head that predicts each plot's species directly.

    For N plots, V species, logits l_is = w_s . a_i + c_s of the adapted embedding a_i and targets y_is in {0, 1}
    (species s present in plot i)::

        L = -(1 / (N V)) * sum_{i=1..N} sum_{s=1..V} [ y_is log sigmoid(l_is) + (1 - y_is) log(1 - sigmoid(l_is)) ]

    computed in the numerically stable form of ``binary_cross_entropy_with_logits``
    (log(1 - sigmoid(l)) = log sigmoid(-l)).
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits [N, V], targets [N, V] (0/1 as floats) -> the mean loss (a 0-d tensor)."""
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="mean")
