"""Training BotaCLIP (or BotaSP) on cached backbone features: no imagery, no backbone forward, only the adapter and
the relevé encoder (or species head).

``fit_botaclip(features, cover, train_idx, val_idx, config, center=...)`` runs AdamW on mini-batches of
(image, relevé) pairs, picking one of the K cached augmented views of each chip per step, evaluates on the
validation plots after each epoch (the loss terms, R, and image -> relevé recall@k for BotaCLIP or the mean
per-species ROC AUC for BotaSP), keeps the best weights by validation loss and stops early. The whole loop state
fits in plain tensors and lists so a checkpoint can resume it exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from botaclip.errors import InvalidInputError, param
from botaclip.model.botaclip import BotaCLIP, BotaSP
from botaclip.model.device import resolve_device
from botaclip.model.train_config import OBJECTIVES, TrainConfig

__all__ = ["OBJECTIVES", "RECALL_KS", "TrainConfig", "TrainResult", "build_model", "check_config", "fit_botaclip"]

RECALL_KS = (1, 5, 10)


@dataclass
class TrainResult:
    """The trained model (best weights), the per-epoch log and the resumable loop state."""

    model: BotaCLIP | BotaSP
    history: list[dict]
    best_epoch: int
    baseline: dict
    best: dict
    stopped_early: bool
    state: dict = field(repr=False)


def check_config(config: TrainConfig) -> None:
    """Raise InvalidInputError for settings no model can take (a TrainConfig is also checked when built)."""
    config.validate()


def build_model(backbone_dim: int, vocab_size: int, config: TrainConfig,
                center: np.ndarray | torch.Tensor | None = None) -> BotaCLIP | BotaSP:
    """A fresh BotaCLIP (or BotaSP for ``objective="supervised"``) whose initialisation depends only on
    ``config.seed``; ``center`` [D] is the adapter's input centring (None: no centring)."""
    check_config(config)
    torch.manual_seed(config.seed)
    center_t = None if center is None else torch.as_tensor(np.asarray(center, dtype=np.float32))
    common = dict(backbone_dim=backbone_dim, vocab_size=vocab_size, embed_dim=config.embed_dim,
                  adapter=config.adapter, lambda_reg=config.lambda_reg, k_neighbors=config.k_neighbors,
                  reg_target=config.reg_target, center=center_t)
    if config.objective == "supervised":
        return BotaSP(**common)
    return BotaCLIP(
        **common, releve_hidden_dim=config.releve_hidden_dim, releve_depth=config.releve_depth,
        cover_transform=config.cover_transform, init_temperature=config.init_temperature,
        init_bias=config.init_bias,
    )


def loadable_state(state: dict, model: torch.nn.Module) -> dict:
    """A saved state dict made loadable into ``model``: checkpoints written before the adapter's input centring
    existed lack its buffer, which then means "not centred" (zeros)."""
    state = dict(state)
    key = "image_adapter.center"
    if key not in state and key in model.state_dict():
        state[key] = torch.zeros_like(model.state_dict()[key])
    return state


def recall_at_k(image: torch.Tensor, releve: torch.Tensor, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """Image -> relevé retrieval: the fraction of images whose own relevé ranks in the top k among all relevés."""
    sims = image @ releve.T
    own = sims.diagonal().unsqueeze(1)
    rank = (sims > own).sum(dim=1)  # 0 = best
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


def mean_species_auc(logits: torch.Tensor, present: torch.Tensor) -> float:
    """Mean over species (columns with both presences and absences) of the ROC AUC of ``logits`` [N, V] for
    ``present`` [N, V] (bool), by the rank-sum (Mann-Whitney) formula; nan when no column qualifies."""
    ranks = logits.argsort(dim=0).argsort(dim=0).to(torch.float64) + 1.0  # ties are broken arbitrarily
    pos = present.sum(dim=0).to(torch.float64)
    neg = present.shape[0] - pos
    ok = (pos > 0) & (neg > 0)
    if not bool(ok.any()):
        return float("nan")
    rank_sum = (ranks * present.to(torch.float64)).sum(dim=0)
    auc = (rank_sum - pos * (pos + 1) / 2) / (pos * neg)
    return float(auc[ok].mean())


@torch.no_grad()
def evaluate(model: BotaCLIP | BotaSP, features: torch.Tensor, cover: torch.Tensor,
             batch_size: int) -> dict[str, float]:
    """Validation metrics on view 0 (the un-augmented chip): loss terms averaged over fixed chunks of
    ``batch_size`` (so they compare with the training batches), then over the whole set image -> relevé recall@k
    (BotaCLIP) or the mean per-species ROC AUC (BotaSP)."""
    model.eval()
    n = features.shape[0]
    sums, weights = dict.fromkeys(model.terms, 0.0), 0
    for start in range(0, n, batch_size):
        out = model(features[start : start + batch_size], cover[start : start + batch_size])
        m = min(batch_size, n - start)
        for k in sums:
            sums[k] += float(out[k]) * m
        weights += m
    metrics = {k: v / weights for k, v in sums.items()}
    if isinstance(model, BotaSP):
        metrics["species_auc"] = mean_species_auc(model.species_logits(features), cover > 0)
    else:
        metrics.update(recall_at_k(model.encode_image(features), model.encode_releve(cover)))
    return metrics


def _check_inputs(features: np.ndarray, cover: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                  config: TrainConfig) -> None:
    if features.ndim != 3:
        raise ValueError(f"features must be [N, views, D], got shape {features.shape}")
    if cover.shape[0] != features.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {cover.shape[0]} composition rows")
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise InvalidInputError(
            f"need relevés in both sets: {len(train_idx)} for training, {len(val_idx)} for validation; "
            f"add relevés or change {param('val_fraction')} / {param('block_res')}"
        )
    if config.batch_size > len(train_idx):
        raise InvalidInputError(
            f"{param('batch_size')} {config.batch_size} is larger than the training set ({len(train_idx)} relevés); "
            f"use {param('batch_size')} {len(train_idx)} or less"
        )


def fit_botaclip(
    features: np.ndarray,
    cover: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: TrainConfig,
    resume: dict | None = None,
    on_epoch: Callable[[dict, TrainResult], None] | None = None,
    center: np.ndarray | None = None,
) -> TrainResult:
    """Trains BotaCLIP (or BotaSP, ``config.objective="supervised"``) on cached features.

    Args:
        features: frozen backbone embeddings [N, K, D] float32, K augmented views per relevé (view 0 = the chip as
            read); unit-normalised.
        cover: plot compositions [N, V] (cover in percent per vocabulary species).
        train_idx, val_idx: row indices of the training and validation relevés (a spatial split).
        config: hyper-parameters; ``config.seed`` fixes initialisation, shuffling and view choice.
        resume: the ``state`` of an earlier result (from a checkpoint) to continue from.
        on_epoch: called after each epoch with that epoch's log record and the result so far (for logging and
            checkpointing).
        center: [D] mean vector of the backbone feature set, subtracted from the unit backbone embedding before
            the adapter (kept in the weights); None: no centring. On resume the checkpoint's centring is used.
    """
    check_config(config)
    _check_inputs(features, cover, train_idx, val_idx, config)
    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _fit(features, cover, (train_idx, val_idx), config, device, resume, on_epoch, center)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Loop:
    """Where the training loop stands (what a resume continues from)."""

    history: list[dict]
    best_state: dict
    epoch: int
    best_val: float
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False


def _make_optimizer(model: BotaCLIP | BotaSP, config: TrainConfig) -> torch.optim.Optimizer:
    # As open_clip: no weight decay on biases, the temperature and the SigLIP bias (0-d and 1-d parameters).
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
         {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}],
        lr=config.lr,
    )


def _start_loop(model, optimizer, generator, resume: dict | None, evaluate_val: Callable[[], dict]
                ) -> tuple[_Loop, dict]:
    """The loop's starting point, fresh (after evaluating the untrained model) or from ``resume``; and the
    untrained model's validation metrics."""
    if resume is None:
        baseline = evaluate_val()
        history = [{"epoch": 0, **_loss_params(model), **{f"val_{k}": v for k, v in baseline.items()}}]
        return _Loop(history, copy.deepcopy(model.state_dict()), epoch=0, best_val=baseline["loss"]), baseline
    model.load_state_dict(loadable_state(resume["model"], model))
    optimizer.load_state_dict(resume["optimizer"])
    generator.set_state(resume["generator"])
    history = [dict(h) for h in resume["history"]]
    baseline = {k[4:]: v for k, v in history[0].items() if k.startswith("val_")}
    loop = _Loop(history, loadable_state(resume["best_model"], model), epoch=int(resume["epoch"]),
                 best_val=float(resume["best_val"]), best_epoch=int(resume["best_epoch"]),
                 bad_epochs=int(resume["bad_epochs"]), stopped=bool(resume["stopped_early"]))
    return loop, baseline


def _end_epoch(loop: _Loop, model, train_metrics: dict, val_metrics: dict, patience: int) -> dict:
    """Track the best epoch and early stopping; returns (and logs in the history) the epoch's record."""
    if not math.isfinite(val_metrics["loss"]):
        raise InvalidInputError(f"training diverged at epoch {loop.epoch} (validation loss {val_metrics['loss']}); "
                                f"lower {param('lr')}")
    if val_metrics["loss"] < loop.best_val:
        loop.best_val, loop.best_epoch, loop.bad_epochs = val_metrics["loss"], loop.epoch, 0
        loop.best_state = copy.deepcopy(model.state_dict())
    else:
        loop.bad_epochs += 1
        loop.stopped = loop.bad_epochs >= patience
    record = {
        "epoch": loop.epoch,
        **_loss_params(model),
        **{f"train_{k}": v for k, v in train_metrics.items()},
        **{f"val_{k}": v for k, v in val_metrics.items()},
        "best_epoch": loop.best_epoch,
    }
    loop.history.append(record)
    return record


def _fit(features, cover, split, config, device, resume, on_epoch, center) -> TrainResult:
    train_idx, val_idx = split
    n_views, dim = features.shape[1], features.shape[2]
    feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    covers = torch.from_numpy(np.ascontiguousarray(cover, dtype=np.float32)).to(device)
    train_t = torch.as_tensor(np.asarray(train_idx), dtype=torch.long, device=device)
    val_t = torch.as_tensor(np.asarray(val_idx), dtype=torch.long, device=device)
    val_feats, val_cover = feats[val_t, 0], covers[val_t]

    model = build_model(dim, cover.shape[1], config, center).to(device)
    if isinstance(model, BotaSP) and resume is None:
        model.init_head_bias((covers[train_t] > 0).float().mean(dim=0))
    if not config.train_adapter:
        model.image_adapter.requires_grad_(False)
    optimizer = _make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    loop, baseline = _start_loop(model, optimizer, generator, resume,
                                 lambda: evaluate(model, val_feats, val_cover, config.batch_size))

    result = TrainResult(model, loop.history, loop.best_epoch, baseline, {}, loop.stopped, {})
    while loop.epoch < config.epochs and not loop.stopped:
        loop.epoch += 1
        train_metrics = _train_one_epoch(model, optimizer, feats, covers, train_t, n_views, config, generator)
        val_metrics = evaluate(model, val_feats, val_cover, config.batch_size)
        record = _end_epoch(loop, model, train_metrics, val_metrics, config.patience)
        result.state = _loop_state(model, optimizer, generator, loop)
        result.best_epoch, result.stopped_early = loop.best_epoch, loop.stopped
        if on_epoch is not None:
            on_epoch(record, result)

    if not result.state:
        result.state = _loop_state(model, optimizer, generator, loop)
    model.load_state_dict(loop.best_state)
    result.best = {k[4:]: v for k, v in loop.history[loop.best_epoch].items() if k.startswith("val_")}
    result.best_epoch, result.stopped_early = loop.best_epoch, loop.stopped
    return result


def _train_one_epoch(model, optimizer, feats, covers, train_t, n_views, config, generator) -> dict[str, float]:
    model.train()
    n = train_t.shape[0]
    order = train_t[torch.randperm(n, generator=generator).to(train_t.device)]
    views = torch.randint(n_views, (n,), generator=generator).to(train_t.device)
    sums = dict.fromkeys(model.terms, 0.0)
    for start in range(0, n, config.batch_size):
        idx = order[start : start + config.batch_size]
        if idx.shape[0] < 2:  # a lone leftover pair has no negatives
            continue
        out = model(feats[idx, views[start : start + config.batch_size]], covers[idx])
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        for k in sums:
            sums[k] += float(out[k].detach()) * idx.shape[0]
    return {k: v / n for k, v in sums.items()}


def _loss_params(model: BotaCLIP | BotaSP) -> dict[str, float]:
    if isinstance(model, BotaSP):
        return {}
    return {"temperature": model.siglip.temperature, "bias": model.siglip.bias}


def _loop_state(model, optimizer, generator, loop: _Loop) -> dict:
    """Everything needed to continue the loop, as tensors, numbers, lists and dicts only."""
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "generator": generator.get_state(),
        "epoch": int(loop.epoch),
        "best_val": float(loop.best_val),
        "best_epoch": int(loop.best_epoch),
        "bad_epochs": int(loop.bad_epochs),
        "stopped_early": bool(loop.stopped),
        "history": [dict(h) for h in loop.history],
        "best_model": {k: v.detach().cpu().clone() for k, v in loop.best_state.items()},
    }
