"""Training BotaCLIP on cached backbone features: no imagery, no backbone forward, only the adapter and encoder.

``fit_botaclip(features, cover, train_idx, val_idx, config)`` runs AdamW on mini-batches of (image, relevé) pairs,
picking one of the K cached augmented views of each chip per step, evaluates on the validation plots after each
epoch (SigLIP, R, image -> relevé recall@k), keeps the best weights by validation loss and stops early. The whole
loop state fits in plain tensors and lists so a checkpoint can resume it exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from botaclip.errors import BotaclipError
from botaclip.model.botaclip import BotaCLIP
from botaclip.model.device import resolve_device

RECALL_KS = (1, 5, 10)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored in the checkpoint)."""

    embed_dim: int | None = None  # None: the backbone's dimension (identity-initialised adapter)
    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lambda_reg: float = 1.0
    k_neighbors: int | None = None
    adapter: str = "linear"
    cover_transform: str = "log1p"
    releve_hidden_dim: int = 512
    releve_depth: int = 2
    patience: int = 10
    seed: int = 0
    device: str = "auto"
    # False keeps the adapter at the identity and trains only the relevé encoder (and t, b): the raw-backbone
    # baseline of the benchmarks, i.e. what the relevé encoder can find in the unadapted space.
    train_adapter: bool = True
    # Intra-op CPU threads while training (restored afterwards). The adapter's matrices are small: one thread is
    # as fast as several on an idle machine and up to 10x faster on a busy one (no OpenMP spin-waiting).
    cpu_threads: int | None = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class TrainResult:
    """The trained model (best weights), the per-epoch log and the resumable loop state."""

    model: BotaCLIP
    history: list[dict]
    best_epoch: int
    baseline: dict
    best: dict
    stopped_early: bool
    state: dict = field(repr=False)


def build_model(backbone_dim: int, vocab_size: int, config: TrainConfig) -> BotaCLIP:
    """A fresh BotaCLIP whose initialisation depends only on ``config.seed``."""
    torch.manual_seed(config.seed)
    return BotaCLIP(
        backbone_dim=backbone_dim,
        vocab_size=vocab_size,
        embed_dim=config.embed_dim,
        adapter=config.adapter,
        releve_hidden_dim=config.releve_hidden_dim,
        releve_depth=config.releve_depth,
        cover_transform=config.cover_transform,
        lambda_reg=config.lambda_reg,
        k_neighbors=config.k_neighbors,
    )


def recall_at_k(image: torch.Tensor, releve: torch.Tensor, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """Image -> relevé retrieval: the fraction of images whose own relevé ranks in the top k among all relevés."""
    sims = image @ releve.T
    own = sims.diagonal().unsqueeze(1)
    rank = (sims > own).sum(dim=1)  # 0 = best
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


@torch.no_grad()
def evaluate(model: BotaCLIP, features: torch.Tensor, cover: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Validation metrics on view 0 (the un-augmented chip): losses averaged over fixed chunks of ``batch_size``
    (so they compare with the training batches), recall@k over the whole set."""
    model.eval()
    n = features.shape[0]
    siglip, reg, loss, weights = 0.0, 0.0, 0.0, 0
    for start in range(0, n, batch_size):
        out = model(features[start : start + batch_size], cover[start : start + batch_size])
        m = min(batch_size, n - start)
        siglip += float(out["siglip"]) * m
        reg += float(out["reg"]) * m
        loss += float(out["loss"]) * m
        weights += m
    image = model.encode_image(features)
    releve = model.encode_releve(cover)
    metrics = {"loss": loss / weights, "siglip": siglip / weights, "reg": reg / weights}
    metrics.update(recall_at_k(image, releve))
    return metrics


def _check_inputs(features: np.ndarray, cover: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                  config: TrainConfig) -> None:
    if features.ndim != 3:
        raise ValueError(f"features must be [N, views, D], got shape {features.shape}")
    if cover.shape[0] != features.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {cover.shape[0]} composition rows")
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise BotaclipError(
            f"need relevés in both sets: {len(train_idx)} for training, {len(val_idx)} for validation; "
            "add relevés or change --val-fraction / --block-res"
        )
    if config.batch_size > len(train_idx):
        raise BotaclipError(
            f"--batch-size {config.batch_size} is larger than the training set ({len(train_idx)} relevés); "
            f"use --batch-size {len(train_idx)} or less"
        )
    if config.batch_size < 2:
        raise BotaclipError(f"--batch-size must be at least 2 (contrastive pairs), got {config.batch_size}")


def fit_botaclip(
    features: np.ndarray,
    cover: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: TrainConfig,
    resume: dict | None = None,
    on_epoch: Callable[[dict, TrainResult], None] | None = None,
) -> TrainResult:
    """Trains BotaCLIP on cached features.

    Args:
        features: frozen backbone embeddings [N, K, D] float32, K augmented views per relevé (view 0 = the chip as
            read); unit-normalised.
        cover: plot compositions [N, V] (cover in percent per vocabulary species).
        train_idx, val_idx: row indices of the training and validation relevés (a spatial split).
        config: hyper-parameters; ``config.seed`` fixes initialisation, shuffling and view choice.
        resume: the ``state`` of an earlier result (from a checkpoint) to continue from.
        on_epoch: called after each epoch with that epoch's log record and the result so far (for logging and
            checkpointing).
    """
    _check_inputs(features, cover, train_idx, val_idx, config)
    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _fit(features, cover, train_idx, val_idx, config, device, resume, on_epoch)
    finally:
        torch.set_num_threads(threads)


def _fit(features, cover, train_idx, val_idx, config, device, resume, on_epoch) -> TrainResult:
    n_views, dim = features.shape[1], features.shape[2]
    feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    covers = torch.from_numpy(np.ascontiguousarray(cover, dtype=np.float32)).to(device)
    train_t = torch.as_tensor(np.asarray(train_idx), dtype=torch.long, device=device)
    val_t = torch.as_tensor(np.asarray(val_idx), dtype=torch.long, device=device)
    val_feats, val_cover = feats[val_t, 0], covers[val_t]

    model = build_model(dim, cover.shape[1], config).to(device)
    if not config.train_adapter:
        model.image_adapter.requires_grad_(False)
    # As open_clip: no weight decay on biases, the temperature and the SigLIP bias (0-d and 1-d parameters).
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
         {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}],
        lr=config.lr,
    )
    generator = torch.Generator().manual_seed(config.seed)

    if resume is None:
        baseline = evaluate(model, val_feats, val_cover, config.batch_size)
        history = [{"epoch": 0, **_loss_params(model), **{f"val_{k}": v for k, v in baseline.items()}}]
        epoch, best_val, best_epoch, bad_epochs, stopped = 0, baseline["loss"], 0, 0, False
        best_state = copy.deepcopy(model.state_dict())
    else:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        history = [dict(h) for h in resume["history"]]
        baseline = {k[4:]: v for k, v in history[0].items() if k.startswith("val_")}
        epoch, best_val, best_epoch = int(resume["epoch"]), float(resume["best_val"]), int(resume["best_epoch"])
        bad_epochs, stopped = int(resume["bad_epochs"]), bool(resume["stopped_early"])
        best_state = resume["best_model"]

    result = TrainResult(model, history, best_epoch, baseline, {}, stopped, {})
    while epoch < config.epochs and not stopped:
        epoch += 1
        train_metrics = _train_one_epoch(model, optimizer, feats, covers, train_t, n_views, config, generator)
        val_metrics = evaluate(model, val_feats, val_cover, config.batch_size)
        if not math.isfinite(val_metrics["loss"]):
            raise BotaclipError(f"training diverged at epoch {epoch} (validation loss {val_metrics['loss']}); "
                                "lower --lr")
        if val_metrics["loss"] < best_val:
            best_val, best_epoch, bad_epochs = val_metrics["loss"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            stopped = bad_epochs >= config.patience
        record = {
            "epoch": epoch,
            **_loss_params(model),
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"val_{k}": v for k, v in val_metrics.items()},
            "best_epoch": best_epoch,
        }
        history.append(record)
        result.state = _loop_state(model, optimizer, generator, epoch, best_val, best_epoch, bad_epochs, stopped,
                                   history, best_state)
        result.best_epoch, result.stopped_early = best_epoch, stopped
        if on_epoch is not None:
            on_epoch(record, result)

    if not result.state:
        result.state = _loop_state(model, optimizer, generator, epoch, best_val, best_epoch, bad_epochs, stopped,
                                   history, best_state)
    model.load_state_dict(best_state)
    result.best = {k[4:]: v for k, v in history[best_epoch].items() if k.startswith("val_")}
    result.best_epoch, result.stopped_early = best_epoch, stopped
    return result


def _train_one_epoch(model, optimizer, feats, covers, train_t, n_views, config, generator) -> dict[str, float]:
    model.train()
    n = train_t.shape[0]
    order = train_t[torch.randperm(n, generator=generator).to(train_t.device)]
    views = torch.randint(n_views, (n,), generator=generator).to(train_t.device)
    sums = {"loss": 0.0, "siglip": 0.0, "reg": 0.0}
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


def _loss_params(model: BotaCLIP) -> dict[str, float]:
    return {"temperature": model.siglip.temperature, "bias": model.siglip.bias}


def _loop_state(model, optimizer, generator, epoch, best_val, best_epoch, bad_epochs, stopped, history,
                best_state) -> dict:
    """Everything needed to continue the loop, as tensors, numbers, lists and dicts only."""
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "generator": generator.get_state(),
        "epoch": int(epoch),
        "best_val": float(best_val),
        "best_epoch": int(best_epoch),
        "bad_epochs": int(bad_epochs),
        "stopped_early": bool(stopped),
        "history": [dict(h) for h in history],
        "best_model": {k: v.detach().cpu().clone() for k, v in best_state.items()},
    }
