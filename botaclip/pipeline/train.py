"""The BotaCLIP training job: relevés -> chips at plot locations -> cached frozen-backbone embeddings -> adapter.

``train_botaclip(TrainOptions(...))`` is what ``botaclip train`` runs:

1. read the relevés (long or wide table, coordinates in it or in a plots table, any CRS);
2. cut each relevé's chip at the plot location and embed it with the frozen backbone, once, through the feature
   cache (K augmented views per chip; relevés outside the imagery or mostly nodata are skipped and counted);
3. split the relevés into training and validation sets by whole H3 blocks;
4. build the species vocabulary on the training relevés (species in >= ``min_plots`` plots);
5. train the adapter and relevé encoder (SigLIP + lambda * R) with early stopping on the validation loss,
   writing the checkpoint and one JSON line per epoch next to it; the checkpoint resumes with ``resume=``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from botaclip.errors import BotaclipError
from botaclip.model.adapter import backbone_identity, load_checkpoint, save_checkpoint
from botaclip.model.dofa import RandomInitWarning
from botaclip.model.train import RECALL_KS, TrainConfig, TrainResult, fit_botaclip
from botaclip.model.vocabulary import SpeciesVocabulary
from botaclip.pipeline.feature_cache import cache_features
from botaclip.pipeline.releves import read_releves
from botaclip.pipeline.spatial_split import spatial_block_split
from botaclip.store.outputs import check_output_path


@dataclass
class TrainOptions:
    """Everything ``botaclip train`` takes. Lengths in metres, chip size in pixels."""

    releves: str
    imagery: list[str]
    out: str
    plots: str | None = None
    backbone: str = "dofa-base"
    weights: str | None = None
    backbone_seed: int = 0
    embed_dim: int | None = None
    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lambda_reg: float = 1.0
    k_neighbors: int | None = None
    views: int = 4
    adapter: str = "linear"
    cover_transform: str = "log1p"
    val_fraction: float = 0.2
    block_res: int = 8
    min_plots: int = 5
    seed: int = 0
    device: str = "auto"
    chip_m: float = 100.0
    size_px: int = 224
    bands: str = "rgbn"
    min_valid: float = 0.8
    patience: int = 10
    cache_dir: str | None = None
    resume: str | None = None
    crs: str | None = None
    embed_batch_size: int = 64


@dataclass
class TrainReport:
    """What a training run did, for the command's summary and for benchmarks."""

    out: Path
    log_path: Path
    cache_path: Path
    n_releves: int
    n_train: int
    n_val: int
    skipped: dict[str, int]
    vocabulary_size: int
    unknown_species_rows: int
    trainable_parameters: int
    baseline: dict
    best: dict
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    cached_now: int
    seconds_cache: float
    seconds_train: float
    history: list[dict] = field(repr=False, default_factory=list)


def make_backbone(name: str, weights: str | None, seed: int, size_px: int):
    """The frozen DOFA backbone for chips of ``size_px`` pixels (random init with ``seed`` when no weights).

    At 224 px this is ``create_backbone``. At other sizes the model is built for that grid: DOFA's position
    embedding is the fixed 2-D sin-cos table (not learned), so a checkpoint's table is replaced by the one for the
    new grid and every learned weight loads unchanged.
    """
    from botaclip.model.backbones import BACKBONES, create_backbone
    from botaclip.model.checkpoint import fit_state_dict, read_checkpoint
    from botaclip.model.dofa import DOFA, DOFA_CONFIGS

    if size_px == 224 or str(name).strip().lower() not in BACKBONES:
        return create_backbone(name, weights=weights, seed=seed)
    config = DOFA_CONFIGS[str(name).strip().lower()]
    if size_px % config.patch_size:
        raise BotaclipError(f"--size-px {size_px} is not a multiple of the patch size {config.patch_size}")
    model = DOFA.from_config(config, seed=seed, img_size=int(size_px))
    if weights is not None:
        state, sha = read_checkpoint(weights)
        if "pos_embed" in state:
            state = {**state, "pos_embed": model.pos_embed.detach().clone()}
        fit_state_dict(model, state, source=str(weights))
        model.weights_sha256, model.weights_file, model.random_init = sha, Path(weights).name, False
    return model


def backbone_info(name: str, model, bands: str, wavelengths, chip_m: float, size_px: int) -> dict:
    """The backbone identity stored in the checkpoint and the cache key (``name``: the registry name, e.g.
    dofa-base, whatever the chip size)."""
    return {
        "name": str(name).strip().lower(),
        "model_name": str(model.name),
        "dim": int(model.embed_dim),
        "sha256": backbone_identity(model.weights_sha256, getattr(model, "seed", 0)),
        "wavelengths": [float(w) for w in wavelengths],
        "bands": bands,
        "chip_m": float(chip_m),
        "size_px": int(size_px),
    }


def format_epoch(record: dict, epochs: int) -> str:
    """One progress line per epoch."""
    recall = "/".join(f"{record.get(f'val_recall@{k}', float('nan')):.3f}" for k in RECALL_KS)
    return (
        f"epoch {record['epoch']:3d}/{epochs}  train SigLIP {record.get('train_siglip', float('nan')):.4f} "
        f"R {record.get('train_reg', float('nan')):.5f} | val SigLIP {record['val_siglip']:.4f} "
        f"R {record['val_reg']:.5f} | t {record['temperature']:.2f} b {record['bias']:.2f} | "
        f"val recall@1/5/10 {recall}"
    )


def _check_options(o: TrainOptions) -> None:
    from botaclip.imagery.chips import MAX_SIZE_PX

    checks = [
        (o.epochs >= 1, f"--epochs must be at least 1, got {o.epochs}"),
        (o.batch_size >= 2, f"--batch-size must be at least 2, got {o.batch_size}"),
        (o.lr > 0, f"--lr must be positive, got {o.lr}"),
        (o.weight_decay >= 0, f"--weight-decay must be >= 0, got {o.weight_decay}"),
        (o.lambda_reg >= 0, f"--lambda-reg must be >= 0, got {o.lambda_reg}"),
        (o.views >= 1, f"--views must be at least 1, got {o.views}"),
        (o.min_plots >= 1, f"--min-plots must be at least 1, got {o.min_plots}"),
        (o.embed_dim is None or o.embed_dim >= 1, f"--embed-dim must be positive, got {o.embed_dim}"),
        (o.patience >= 1, f"--patience must be at least 1, got {o.patience}"),
        (0 < o.val_fraction < 1, f"--val-fraction must be between 0 and 1 (exclusive), got {o.val_fraction}"),
        (0 <= o.block_res <= 15, f"--block-res must be an H3 resolution 0..15, got {o.block_res}"),
        (o.k_neighbors is None or o.k_neighbors >= 1, f"--k-neighbors must be at least 1, got {o.k_neighbors}"),
        (o.seed >= 0 and o.backbone_seed >= 0, f"--seed must be 0 or more, got {min(o.seed, o.backbone_seed)}"),
        (1 <= o.size_px <= MAX_SIZE_PX, f"--size-px must be between 1 and {MAX_SIZE_PX}, got {o.size_px}"),
    ]
    for ok, message in checks:
        if not ok:
            raise BotaclipError(message)


def train_botaclip(options: TrainOptions, echo: Callable[[str], None] = print) -> TrainReport:
    """Runs the whole training job; writes ``options.out`` (checkpoint) and ``<out>.jsonl`` (per-epoch log)."""
    from botaclip.imagery.chips import ChipReader
    from botaclip.model.embedder import Embedder

    o = options
    _check_options(o)
    out = Path(o.out)
    if out.suffix == "":
        raise BotaclipError(f"--out {out} needs a file name such as adapter.pt")
    check_output_path(out, what="--out")
    if o.cache_dir:
        check_output_path(o.cache_dir, what="--cache-dir", is_dir=True)
    log_path = out.with_suffix(".jsonl")
    resume_ckpt = load_checkpoint(o.resume) if o.resume else None

    releves = read_releves(o.releves, o.plots, crs=o.crs)
    # Fail before the expensive part when no species could ever reach --min-plots.
    SpeciesVocabulary.build(releves.long["releve_id"], releves.long["species"], o.min_plots)
    skipped = dict(releves.skipped)

    with warnings.catch_warnings():
        # Said once, as one line, below; not as a Python warning with a source line.
        warnings.simplefilter("ignore", RandomInitWarning)
        backbone_model = make_backbone(o.backbone, o.weights, o.backbone_seed, o.size_px)
        reader = ChipReader(list(o.imagery), bands=o.bands, chip_m=o.chip_m, size_px=o.size_px)
        embedder = Embedder(backbone_model, list(reader.wavelengths), device=o.device,
                            batch_size=o.embed_batch_size, normalize=True)
    if backbone_model.random_init:
        echo(f"warning: {o.backbone} has random weights (seed={o.backbone_seed}): no --weights given, so the "
             "backbone embeddings carry no pretrained knowledge")
    backbone = backbone_info(o.backbone, backbone_model, reader.spec.name, reader.wavelengths, o.chip_m, o.size_px)
    if resume_ckpt is not None:
        stored = {k: resume_ckpt["backbone"].get(k) for k in ("name", "dim", "sha256")}
        if stored != {k: backbone[k] for k in ("name", "dim", "sha256")}:
            raise BotaclipError(
                f"--resume {o.resume} was trained on backbone {stored['name']} ({stored['sha256']}), "
                f"not {backbone['name']} ({backbone['sha256']}); use the same --backbone/--weights"
            )

    t0 = time.perf_counter()
    plots = releves.plots
    cache_dir = Path(o.cache_dir) if o.cache_dir else out.parent
    with reader:
        cached = cache_features(
            plots["releve_id"].tolist(), plots["lat"].to_numpy(), plots["lng"].to_numpy(), reader, embedder.embed,
            backbone, cache_dir, views=o.views, min_valid=o.min_valid, seed=o.seed,
            batch_size=o.embed_batch_size,
            progress=_progress_echo(echo),
        )
    seconds_cache = time.perf_counter() - t0
    for reason, n in cached.skipped_counts().items():
        skipped[reason] = skipped.get(reason, 0) + n
    if not cached.releve_ids:
        raise BotaclipError(
            f"no relevé inside the imagery: all {len(plots)} relevés of {o.releves} are outside "
            f"{', '.join(map(str, o.imagery))} or have less than {o.min_valid:.0%} valid pixels; check the "
            "coordinates (lat/lng, CRS) and the imagery extent"
        )
    echo(f"features: {len(cached.releve_ids)} relevés x {o.views} views from {cached.path} "
         f"({cached.computed} embedded now, {seconds_cache:.1f} s)"
         + (f"; skipped {_counts(skipped)}" if skipped else ""))

    ids = cached.releve_ids
    coords = plots.set_index("releve_id").loc[ids]
    if resume_ckpt is not None:
        # The checkpoint's split, exactly: relevés added since then are left out of this run.
        val_ids, train_ids = set(resume_ckpt["split"]["val"]), set(resume_ckpt["split"]["train"])
        val_idx = np.array([i for i, r in enumerate(ids) if r in val_ids], dtype=np.int64)
        train_idx = np.array([i for i, r in enumerate(ids) if r in train_ids], dtype=np.int64)
        vocabulary = SpeciesVocabulary.from_list(resume_ckpt["vocabulary"])
        config = TrainConfig.from_dict({**resume_ckpt["config"], "epochs": o.epochs, "device": o.device})
    else:
        train_idx, val_idx = spatial_block_split(coords["lat"].to_numpy(), coords["lng"].to_numpy(),
                                                 o.val_fraction, o.block_res, o.seed)
        train_set = set(ids[i] for i in train_idx)
        long_train = releves.long[releves.long["releve_id"].isin(train_set)]
        vocabulary = SpeciesVocabulary.build(long_train["releve_id"], long_train["species"], o.min_plots)
        config = TrainConfig(
            embed_dim=o.embed_dim, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, weight_decay=o.weight_decay,
            lambda_reg=o.lambda_reg, k_neighbors=o.k_neighbors, adapter=o.adapter, cover_transform=o.cover_transform,
            patience=o.patience, seed=o.seed, device=o.device,
        )
    cover, _, unknown = vocabulary.encode(releves.long["releve_id"].tolist(), releves.long["species"].tolist(),
                                          releves.long["cover"].tolist(), order=ids)
    echo(f"split: {len(train_idx)} training / {len(val_idx)} validation relevés (H3 blocks at res {o.block_res}); "
         f"vocabulary: {len(vocabulary)} species in >= {o.min_plots} training plots "
         f"({unknown} rows of other species ignored)")

    base_payload = {
        "backbone": backbone,
        "config": config.to_dict(),
        "vocabulary": vocabulary.to_list(),
        "split": {"train": [ids[i] for i in train_idx], "val": [ids[i] for i in val_idx],
                  "block_res": int(o.block_res), "val_fraction": float(o.val_fraction)},
        "data": {"releves": str(o.releves), "plots": str(o.plots) if o.plots else None,
                 "imagery": [str(p) for p in o.imagery], "views": int(o.views), "min_plots": int(o.min_plots),
                 "min_valid": float(o.min_valid), "cache": str(cached.path)},
    }

    if resume_ckpt is None:
        log_path.write_text("")
    else:  # the log restarts from what the checkpoint knows, so no epoch is listed twice
        log_path.write_text("".join(json.dumps(h) + "\n" for h in resume_ckpt["state"]["history"][1:]))

    def on_epoch(record: dict, result: TrainResult) -> None:
        echo(format_epoch(record, config.epochs))
        with open(log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        save_checkpoint(out, {**base_payload, "model": result.state["best_model"], "history": result.state["history"],
                              "summary": {}, "state": result.state})

    t1 = time.perf_counter()
    result = fit_botaclip(cached.features, cover, train_idx, val_idx, config,
                          resume=resume_ckpt["state"] if resume_ckpt is not None else None, on_epoch=on_epoch)
    seconds_train = time.perf_counter() - t1
    params = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    summary = {
        "baseline": result.baseline,
        "best": result.best,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history) - 1,
        "stopped_early": result.stopped_early,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "trainable_parameters": int(params),
        "skipped": skipped,
    }
    save_checkpoint(out, {**base_payload, "model": result.state["best_model"], "history": result.history,
                          "summary": summary, "state": result.state})
    return TrainReport(
        out=out, log_path=log_path, cache_path=cached.path, n_releves=len(ids), n_train=len(train_idx),
        n_val=len(val_idx), skipped=skipped, vocabulary_size=len(vocabulary), unknown_species_rows=unknown,
        trainable_parameters=int(params), baseline=result.baseline, best=result.best, best_epoch=result.best_epoch,
        epochs_run=len(result.history) - 1, stopped_early=result.stopped_early, cached_now=cached.computed,
        seconds_cache=seconds_cache, seconds_train=seconds_train, history=result.history,
    )


def format_summary(report: TrainReport) -> str:
    """The final comparison of the trained adapter with the untrained (identity) start."""
    lines = [
        f"best epoch {report.best_epoch} of {report.epochs_run}"
        + (" (stopped early)" if report.stopped_early else "")
        + f"; {report.trainable_parameters:,} trainable parameters",
        f"{'validation':<12}{'untrained':>11}{'trained':>10}",
    ]
    for k in RECALL_KS:
        key = f"recall@{k}"
        lines.append(f"{key:<12}{report.baseline[key]:>11.3f}{report.best[key]:>10.3f}")
    lines.append(f"{'SigLIP':<12}{report.baseline['siglip']:>11.4f}{report.best['siglip']:>10.4f}")
    lines.append(f"{'R':<12}{report.baseline['reg']:>11.5f}{report.best['reg']:>10.5f}")
    lines.append(f"wrote {report.out} and {report.log_path}")
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counts.items())


def _progress_echo(echo: Callable[[str], None]) -> Callable[[int, int], None]:
    state = {"last": 0.0}

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - state["last"] > 10:
            state["last"] = now
            echo(f"embedding chips: {done}/{total} relevés")

    return report

