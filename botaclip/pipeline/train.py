"""The BotaCLIP training job: relevés -> chips at plot locations -> cached frozen-backbone embeddings -> adapter.

``train_botaclip(TrainOptions(...))`` is what ``botaclip train`` runs:

1. read the relevés (long or wide table, coordinates in it or in a plots table, any CRS);
2. cut each relevé's chip at the plot location and embed it with the frozen backbone, once, through the feature
   cache (K augmented views per chip; relevés outside the imagery or mostly nodata are skipped and counted);
3. fix the adapter's input centring: the mean vector of the backbone feature set of a store (``center_store``),
   or else of the relevés' own chips;
4. with ``folds=K``: deal whole H3 blocks of relevés to K folds and train one adapter per fold on the relevés of
   the other folds (cross-fitting: adapter k never sees fold k);
5. split the relevés into training and validation sets by whole H3 blocks, build the species vocabulary on the
   training relevés (species in >= ``min_plots`` plots) and train the full adapter (BotaCLIP: SigLIP + lambda * R;
   BotaSP with ``objective="supervised"``: species BCE + lambda * R) with early stopping on the validation loss,
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
import torch

from botaclip.errors import BotaclipError
from botaclip.model.adapter import backbone_identity, load_checkpoint, save_checkpoint
from botaclip.model.dofa import RandomInitWarning
from botaclip.model.train import OBJECTIVES, RECALL_KS, TrainConfig, TrainResult, check_config, fit_botaclip
from botaclip.model.vocabulary import SpeciesVocabulary
from botaclip.pipeline.feature_cache import cache_features
from botaclip.pipeline.releves import read_releves
from botaclip.pipeline.spatial_split import spatial_block_folds, spatial_block_split
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
    objective: str = "contrastive"
    embed_dim: int | None = None
    epochs: int = 100
    batch_size: int = 512
    # 1e-2, not the 1e-3 of the first demo: at 1e-3 SigLIP's t and b hardly leave their start within the ~30
    # epochs early stopping allows, and the butterfly and soil SDMs were clearly worse (docs/training.md,
    # ablation); BotaSP's BCE was still falling after 100 epochs at 1e-3 and is lower at 1e-2 in about 45.
    lr: float = 1e-2
    weight_decay: float = 1e-4
    lambda_reg: float = 1.0
    k_neighbors: int | None = None
    init_temperature: float = 10.0
    init_bias: float = -10.0
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
    # Input centring: the mean of a store's backbone feature set (center_store, center_set: default the set made
    # with this backbone), else of the relevés' chips; center=False turns it off (the first demo's setting).
    center: bool = True
    center_store: str | None = None
    center_set: str | None = None
    # Cross-fitting: K >= 2 trains K fold adapters on whole H3 blocks (block_res) besides the full one; 0: off.
    folds: int = 0


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
    objective: str = "contrastive"
    centering: dict = field(default_factory=dict)
    # Cross-fitting: one summary per fold adapter (fold, n_train, n_val, n_held_out, best, best_epoch, seconds).
    folds: list[dict] = field(default_factory=list)
    seconds_folds: float = 0.0


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
    """One progress line per epoch (BotaCLIP: SigLIP, t, b and recall@k; BotaSP: BCE and species AUC)."""
    nan = float("nan")
    if "val_bce" in record:
        head = f"train BCE {record.get('train_bce', nan):.4f} R {record.get('train_reg', nan):.5f} | " \
               f"val BCE {record['val_bce']:.4f} R {record['val_reg']:.5f} | " \
               f"val species AUC {record.get('val_species_auc', nan):.3f}"
    else:
        recall = "/".join(f"{record.get(f'val_recall@{k}', nan):.3f}" for k in RECALL_KS)
        head = f"train SigLIP {record.get('train_siglip', nan):.4f} R {record.get('train_reg', nan):.5f} | " \
               f"val SigLIP {record['val_siglip']:.4f} R {record['val_reg']:.5f} | " \
               f"t {record['temperature']:.2f} b {record['bias']:.2f} | val recall@1/5/10 {recall}"
    return f"epoch {record['epoch']:3d}/{epochs}  {head}"


def _check_options(o: TrainOptions) -> None:
    from botaclip.imagery.chips import MAX_SIZE_PX

    checks = [
        (o.objective in OBJECTIVES, f"unknown --objective {o.objective!r}: use {' or '.join(OBJECTIVES)}"),
        (o.epochs >= 1, f"--epochs must be at least 1, got {o.epochs}"),
        (o.batch_size >= 2, f"--batch-size must be at least 2, got {o.batch_size}"),
        (o.lr > 0, f"--lr must be positive, got {o.lr}"),
        (o.weight_decay >= 0, f"--weight-decay must be >= 0, got {o.weight_decay}"),
        (o.lambda_reg >= 0, f"--lambda-reg must be >= 0, got {o.lambda_reg}"),
        (o.init_temperature > 0, f"--init-temperature must be positive, got {o.init_temperature}"),
        (o.views >= 1, f"--views must be at least 1, got {o.views}"),
        (o.min_plots >= 1, f"--min-plots must be at least 1, got {o.min_plots}"),
        (o.embed_dim is None or o.embed_dim >= 1, f"--embed-dim must be positive, got {o.embed_dim}"),
        (o.patience >= 1, f"--patience must be at least 1, got {o.patience}"),
        (0 < o.val_fraction < 1, f"--val-fraction must be between 0 and 1 (exclusive), got {o.val_fraction}"),
        (0 <= o.block_res <= 15, f"--block-res must be an H3 resolution 0..15, got {o.block_res}"),
        (o.k_neighbors is None or o.k_neighbors >= 1, f"--k-neighbors must be at least 1, got {o.k_neighbors}"),
        (o.folds == 0 or o.folds >= 2, f"--folds must be at least 2 to cross-fit (0 for no cross-fitting), "
                                       f"got {o.folds}"),
        (not (o.folds and o.resume), "--resume continues one adapter; a cross-fitted run (--folds) is retrained "
                                     "from the start (training is cheap once the backbone features are cached)"),
        (o.center or not (o.center_store or o.center_set), "--no-center contradicts --center-store/--center-set"),
        (o.center_store is not None or o.center_set is None, "--center-set needs --center-store"),
        (o.seed >= 0 and o.backbone_seed >= 0, f"--seed must be 0 or more, got {min(o.seed, o.backbone_seed)}"),
        (1 <= o.size_px <= MAX_SIZE_PX, f"--size-px must be between 1 and {MAX_SIZE_PX}, got {o.size_px}"),
    ]
    for ok, message in checks:
        if not ok:
            raise BotaclipError(message)


def _train_config(o: TrainOptions, seed: int | None = None) -> TrainConfig:
    config = TrainConfig(
        objective=o.objective, embed_dim=o.embed_dim, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
        weight_decay=o.weight_decay, lambda_reg=o.lambda_reg, k_neighbors=o.k_neighbors,
        init_temperature=o.init_temperature, init_bias=o.init_bias, adapter=o.adapter,
        cover_transform=o.cover_transform, patience=o.patience, seed=o.seed if seed is None else seed,
        device=o.device,
    )
    check_config(config)
    return config


def store_center(store_path: str, backbone: dict, feature_set: str | None = None) -> tuple[np.ndarray, dict]:
    """The mean vector [D] of a store's backbone feature set (``feature_set``, or the set made with ``backbone``:
    same model, weights, wavelengths, chip size in metres and pixels) and a record of where it came from."""
    from botaclip.pipeline.provenance import identity
    from botaclip.store import Store

    store = Store.open(store_path, read_only=True)
    wanted = identity({"model": backbone["name"], "weights_sha256": backbone["sha256"],
                       "wavelengths": backbone["wavelengths"], "chip_m": backbone["chip_m"],
                       "size_px": backbone["size_px"]}, ("model", "weights_sha256", "wavelengths", "chip_m", "size_px"))
    candidates = [feature_set] if feature_set else [
        n for n in store.feature_sets() if store.spec(n).kind == "backbone"]
    for name in candidates:
        spec = store.spec(name)
        have = identity(spec.provenance, tuple(wanted))
        if spec.kind == "backbone" and spec.dim == backbone["dim"] and have == wanted:
            geometry = store.geometry(name)
            if geometry is not None:
                mean, rows = geometry["mean"], geometry["rows"]
            else:  # a set written before the catalog kept statistics: one pass for the mean
                total, rows = np.zeros(spec.dim), 0
                for _, _, X in store.iter_partitions(name):
                    total += X.astype(np.float64).sum(axis=0)
                    rows += len(X)
                mean = total / max(rows, 1)
            if rows == 0:
                raise BotaclipError(f"backbone feature set {name!r} of {store_path} is empty; index it first")
            return mean.astype(np.float32), {"source": "store", "store": str(store.path), "feature_set": name,
                                             "rows": int(rows)}
        if feature_set:
            why = "it is not a backbone feature set" if spec.kind != "backbone" else (
                f"it was made with {spec.provenance.get('model')} ({spec.provenance.get('weights_sha256')}, "
                f"{spec.provenance.get('size_px')} px), not {backbone['name']} ({backbone['sha256']}, "
                f"{backbone['size_px']} px)")
            raise BotaclipError(f"--center-set {name!r} of {store_path} cannot centre this adapter: {why}")
    raise BotaclipError(
        f"no backbone feature set in {store_path} was made with {backbone['name']} ({backbone['sha256']}) at "
        f"{backbone['size_px']} px and {backbone['chip_m']:g} m chips; index one with the same --backbone, --weights, "
        "--size-px and --chip-m, or name it with --center-set"
    )


def _centering(o: TrainOptions, backbone: dict, features: np.ndarray) -> tuple[np.ndarray | None, dict]:
    if not o.center:
        return None, {"source": "none"}
    if o.center_store:
        return store_center(o.center_store, backbone, o.center_set)
    # No store: the relevés' own chips (view 0, as read) stand in for the region's backbone set.
    mean = features[:, 0].astype(np.float64).mean(axis=0)
    return mean.astype(np.float32), {"source": "releves", "rows": int(features.shape[0])}


@dataclass
class _Data:
    """The cached features of every usable relevé, their compositions and locations."""

    ids: list[str]
    features: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    long: object  # the relevés' long table (pandas)


def _split_and_vocabulary(data: _Data, pool: np.ndarray, o: TrainOptions, seed: int
                          ) -> tuple[np.ndarray, np.ndarray, SpeciesVocabulary]:
    """Spatial train/validation split of the rows ``pool`` and the vocabulary of its training relevés."""
    tr, va = spatial_block_split(data.lat[pool], data.lng[pool], o.val_fraction, o.block_res, seed)
    train_idx, val_idx = pool[tr], pool[va]
    train_set = {data.ids[i] for i in train_idx}
    long_train = data.long[data.long["releve_id"].isin(train_set)]
    return train_idx, val_idx, SpeciesVocabulary.build(long_train["releve_id"], long_train["species"], o.min_plots)


def _encode(data: _Data, vocabulary: SpeciesVocabulary) -> tuple[np.ndarray, int]:
    long = data.long
    cover, _, unknown = vocabulary.encode(long["releve_id"].tolist(), long["species"].tolist(),
                                          long["cover"].tolist(), order=data.ids)
    return cover, unknown


def _cross_fit(data: _Data, o: TrainOptions, center: np.ndarray | None, log_path: Path,
               echo: Callable[[str], None]) -> tuple[dict, list[dict]]:
    """Trains the K fold adapters; returns the checkpoint's ``cross_fit`` entry and one summary per fold."""
    blocks, fold_of_block, fold = spatial_block_folds(data.lat, data.lng, o.folds, o.block_res, o.seed)
    echo(f"cross-fitting: {len(blocks)} H3 blocks at res {o.block_res} dealt to {o.folds} folds of "
         f"{', '.join(str(int((fold == k).sum())) for k in range(o.folds))} relevés")
    parts, summaries = [], []
    for k in range(o.folds):
        t0 = time.perf_counter()
        pool = np.flatnonzero(fold != k)
        train_idx, val_idx, vocabulary = _split_and_vocabulary(data, pool, o, o.seed + 1 + k)
        cover, _ = _encode(data, vocabulary)
        config = _train_config(o)

        def on_epoch(record: dict, _result, fold_k: int = k) -> None:
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"fold": fold_k, **record}) + "\n")

        result = fit_botaclip(data.features, cover, train_idx, val_idx, config, on_epoch=on_epoch, center=center)
        held_out = [data.ids[i] for i in np.flatnonzero(fold == k)]
        summary = {"fold": k, "n_train": len(train_idx), "n_val": len(val_idx), "n_held_out": len(held_out),
                   "vocabulary": len(vocabulary), "baseline": result.baseline, "best": result.best,
                   "best_epoch": result.best_epoch, "epochs_run": len(result.history) - 1,
                   "seconds": round(time.perf_counter() - t0, 2)}
        summaries.append(summary)
        parts.append({
            "fold": k,
            "model": {key: v.detach().cpu().clone() for key, v in result.model.state_dict().items()},
            "vocabulary": vocabulary.to_list(),
            "split": {"train": [data.ids[i] for i in train_idx], "val": [data.ids[i] for i in val_idx],
                      "held_out": held_out, "block_res": int(o.block_res), "val_fraction": float(o.val_fraction)},
            "history": result.history,
            "summary": summary,
        })
        echo(f"fold {k + 1}/{o.folds}: trained on {len(train_idx)} / validated on {len(val_idx)} relevés, "
             f"{len(held_out)} held out; best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
             f"{_headline(result.best)} ({summary['seconds']:.1f} s)")
    entry = {
        "k": int(o.folds), "block_res": int(o.block_res), "seed": int(o.seed),
        # H3 ids fit in int64 (their top bit is always 0); tensors keep the checkpoint weights_only-loadable.
        "blocks": torch.from_numpy(blocks.astype(np.int64)), "folds": torch.from_numpy(fold_of_block),
        "releves": {"ids": list(data.ids), "lat": torch.from_numpy(data.lat.astype(np.float64)),
                    "lng": torch.from_numpy(data.lng.astype(np.float64))},
        "adapters": parts,
    }
    return entry, summaries


def _headline(metrics: dict) -> str:
    """The validation metric of an objective, as short text."""
    if "species_auc" in metrics:
        return f"val species AUC {metrics['species_auc']:.3f}"
    return f"val recall@5 {metrics.get('recall@5', float('nan')):.3f}"


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
    if resume_ckpt is not None and resume_ckpt.get("cross_fit"):
        raise BotaclipError(f"--resume {o.resume} is a cross-fitted checkpoint; retrain it with --folds instead")

    releves = read_releves(o.releves, o.plots, crs=o.crs)
    # Fail before the expensive part when no species could ever reach --min-plots.
    SpeciesVocabulary.build(releves.long["releve_id"], releves.long["species"], o.min_plots)
    if o.folds:  # and when the relevés cannot fill the folds
        spatial_block_folds(releves.plots["lat"].to_numpy(), releves.plots["lng"].to_numpy(), o.folds, o.block_res,
                            o.seed)
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
    if o.center_store and resume_ckpt is None:  # a wrong store fails before the backbone runs
        store_center(o.center_store, backbone, o.center_set)

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
    data = _Data(ids=ids, features=cached.features, lat=coords["lat"].to_numpy(), lng=coords["lng"].to_numpy(),
                 long=releves.long)
    if resume_ckpt is not None:
        # The checkpoint's split, exactly: relevés added since then are left out of this run.
        val_ids, train_ids = set(resume_ckpt["split"]["val"]), set(resume_ckpt["split"]["train"])
        val_idx = np.array([i for i, r in enumerate(ids) if r in val_ids], dtype=np.int64)
        train_idx = np.array([i for i, r in enumerate(ids) if r in train_ids], dtype=np.int64)
        vocabulary = SpeciesVocabulary.from_list(resume_ckpt["vocabulary"])
        config = TrainConfig.from_dict({**resume_ckpt["config"], "epochs": o.epochs, "device": o.device})
        center, centering = None, dict(resume_ckpt.get("centering") or {"source": "none"})  # in the weights
    else:
        center, centering = _centering(o, backbone, cached.features)
        train_idx, val_idx, vocabulary = _split_and_vocabulary(data, np.arange(len(ids)), o, o.seed)
        config = _train_config(o)
    cover, unknown = _encode(data, vocabulary)
    objective = config.objective
    echo(f"split: {len(train_idx)} training / {len(val_idx)} validation relevés (H3 blocks at res {o.block_res}); "
         f"vocabulary: {len(vocabulary)} species in >= {o.min_plots} training plots "
         f"({unknown} rows of other species ignored); objective {objective}; input centring: "
         + (f"{centering['source']} ({centering.get('feature_set') or centering.get('rows')})"
            if centering["source"] != "none" else "none"))

    log_path.parent.mkdir(parents=True, exist_ok=True)
    if resume_ckpt is None:
        log_path.write_text("")
    else:  # the log restarts from what the checkpoint knows, so no epoch is listed twice
        log_path.write_text("".join(json.dumps(h) + "\n" for h in resume_ckpt["state"]["history"][1:]))

    t_folds = time.perf_counter()
    cross_fit, fold_summaries = _cross_fit(data, o, center, log_path, echo) if o.folds else (None, [])
    seconds_folds = time.perf_counter() - t_folds

    base_payload = {
        "objective": objective,
        "backbone": backbone,
        "centering": centering,
        "config": config.to_dict(),
        "vocabulary": vocabulary.to_list(),
        "split": {"train": [ids[i] for i in train_idx], "val": [ids[i] for i in val_idx],
                  "block_res": int(o.block_res), "val_fraction": float(o.val_fraction)},
        "data": {"releves": str(o.releves), "plots": str(o.plots) if o.plots else None,
                 "imagery": [str(p) for p in o.imagery], "views": int(o.views), "min_plots": int(o.min_plots),
                 "min_valid": float(o.min_valid), "cache": str(cached.path)},
        **({"cross_fit": cross_fit} if cross_fit is not None else {}),
    }

    def on_epoch(record: dict, result: TrainResult) -> None:
        echo(format_epoch(record, config.epochs))
        with open(log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        save_checkpoint(out, {**base_payload, "model": result.state["best_model"], "history": result.state["history"],
                              "summary": {}, "state": result.state})

    t1 = time.perf_counter()
    result = fit_botaclip(cached.features, cover, train_idx, val_idx, config,
                          resume=resume_ckpt["state"] if resume_ckpt is not None else None, on_epoch=on_epoch,
                          center=center)
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
        "seconds_train": round(seconds_train, 2),
        **({"folds": fold_summaries, "seconds_folds": round(seconds_folds, 2)} if fold_summaries else {}),
    }
    save_checkpoint(out, {**base_payload, "model": result.state["best_model"], "history": result.history,
                          "summary": summary, "state": result.state})
    return TrainReport(
        out=out, log_path=log_path, cache_path=cached.path, n_releves=len(ids), n_train=len(train_idx),
        n_val=len(val_idx), skipped=skipped, vocabulary_size=len(vocabulary), unknown_species_rows=unknown,
        trainable_parameters=int(params), baseline=result.baseline, best=result.best, best_epoch=result.best_epoch,
        epochs_run=len(result.history) - 1, stopped_early=result.stopped_early, cached_now=cached.computed,
        seconds_cache=seconds_cache, seconds_train=seconds_train, history=result.history, objective=objective,
        centering=centering, folds=fold_summaries, seconds_folds=seconds_folds,
    )


def load_training_data(checkpoint: str | Path
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray | None]:
    """What a checkpoint's full adapter trained on, read back from its feature cache and relevé table:
    (features [N, K, D], cover [N, V] on its vocabulary, train_idx, val_idx, config dict, input centring [D] or
    None), rows = its training then its validation relevés. For ablations and benchmarks on identical data."""
    ckpt = load_checkpoint(checkpoint)
    data = ckpt["data"]
    with np.load(data["cache"], allow_pickle=False) as cache:
        row = {str(r): i for i, r in enumerate(cache["releve_ids"])}
        features = cache["features"]
    ids = list(ckpt["split"]["train"]) + list(ckpt["split"]["val"])
    releves = read_releves(data["releves"], data.get("plots"))
    cover, _, _ = SpeciesVocabulary.from_list(ckpt["vocabulary"]).encode(
        releves.long["releve_id"].tolist(), releves.long["species"].tolist(), releves.long["cover"].tolist(),
        order=ids)
    n_train = len(ckpt["split"]["train"])
    center = ckpt["model"].get("image_adapter.center")
    return (features[[row[r] for r in ids]], cover, np.arange(n_train), np.arange(n_train, len(ids)),
            dict(ckpt["config"]), None if center is None or not bool(center.any()) else center.numpy())


def format_summary(report: TrainReport) -> str:
    """The final comparison of the trained adapter with the untrained (identity) start."""
    lines = [
        f"best epoch {report.best_epoch} of {report.epochs_run}"
        + (" (stopped early)" if report.stopped_early else "")
        + f"; {report.trainable_parameters:,} trainable parameters; objective {report.objective}",
        f"{'validation':<12}{'untrained':>11}{'trained':>10}",
    ]
    if report.objective == "supervised":
        lines.append(f"{'species AUC':<12}{report.baseline['species_auc']:>11.3f}{report.best['species_auc']:>10.3f}")
        lines.append(f"{'BCE':<12}{report.baseline['bce']:>11.4f}{report.best['bce']:>10.4f}")
    else:
        for k in RECALL_KS:
            key = f"recall@{k}"
            lines.append(f"{key:<12}{report.baseline[key]:>11.3f}{report.best[key]:>10.3f}")
        lines.append(f"{'SigLIP':<12}{report.baseline['siglip']:>11.4f}{report.best['siglip']:>10.4f}")
    lines.append(f"{'R':<12}{report.baseline['reg']:>11.5f}{report.best['reg']:>10.5f}")
    if report.folds:
        lines.append(f"cross-fitted: {len(report.folds)} fold adapters in {report.seconds_folds:.1f} s "
                     f"(full adapter {report.seconds_train:.1f} s)")
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

