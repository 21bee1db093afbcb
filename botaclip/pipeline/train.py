"""The BotaCLIP training job: relevés -> chips at plot locations -> cached frozen-backbone embeddings -> adapter.

``train_botaclip(config, **options)`` is what ``botaclip train`` runs, with a
:class:`~botaclip.pipeline.train_config.TrainJobConfig` (``TrainOptions(...)`` builds one from flat keywords, as
before; keyword options set its fields by name):

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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from botaclip.config import build
from botaclip.errors import InvalidInputError, param
from botaclip.model.adapter import backbone_identity, load_checkpoint, save_checkpoint
from botaclip.model.dofa import RandomInitWarning
from botaclip.model.train import RECALL_KS, TrainConfig, TrainResult, fit_botaclip
from botaclip.model.vocabulary import SpeciesVocabulary
from botaclip.pipeline.feature_cache import CacheSettings, cache_features
from botaclip.pipeline.releves import read_releves
from botaclip.pipeline.spatial_split import spatial_block_folds, spatial_block_split
from botaclip.pipeline.stac_source import stac_inputs
from botaclip.pipeline.train_config import (  # noqa: F401 - TrainOptions: the flat form, imported from here
    CenteringConfig,
    SplitConfig,
    TrainJobConfig,
    TrainOptions,
)
from botaclip.progress import Progress, as_progress, counter
from botaclip.store.outputs import check_output_path


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
        raise InvalidInputError(f"{param('size_px')} {size_px} is not a multiple of the patch size {config.patch_size}")
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
                raise InvalidInputError(f"backbone feature set {name!r} of {store_path} is empty; index it first")
            return mean.astype(np.float32), {"source": "store", "store": str(store.path), "feature_set": name,
                                             "rows": int(rows)}
        if feature_set:
            why = "it is not a backbone feature set" if spec.kind != "backbone" else (
                f"it was made with {spec.provenance.get('model')} ({spec.provenance.get('weights_sha256')}, "
                f"{spec.provenance.get('size_px')} px), not {backbone['name']} ({backbone['sha256']}, "
                f"{backbone['size_px']} px)")
            raise InvalidInputError(f"{param('center_set')} {name!r} of {store_path} cannot centre this adapter: {why}")
    raise InvalidInputError(
        f"no backbone feature set in {store_path} was made with {backbone['name']} ({backbone['sha256']}) at "
        f"{backbone['size_px']} px and {backbone['chip_m']:g} m chips; index one with the same {param('backbone')}, "
        f"{param('weights')}, {param('size_px')} and {param('chip_m')}, or name it with {param('center_set')}"
    )


def _centering(c: CenteringConfig, backbone: dict, features: np.ndarray) -> tuple[np.ndarray | None, dict]:
    if not c.center:
        return None, {"source": "none"}
    if c.center_store:
        return store_center(c.center_store, backbone, c.center_set)
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


def _split_and_vocabulary(data: _Data, pool: np.ndarray, o: SplitConfig, seed: int
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


def _cross_fit(data: _Data, cfg: TrainJobConfig, center: np.ndarray | None, log_path: Path,
               progress: Progress) -> tuple[dict, list[dict]]:
    """Trains the K fold adapters; returns the checkpoint's ``cross_fit`` entry and one summary per fold."""
    o, seed = cfg.split, cfg.fit.seed
    blocks, fold_of_block, fold = spatial_block_folds(data.lat, data.lng, o.folds, o.block_res, seed)
    progress.step(f"cross-fitting: {len(blocks)} H3 blocks at res {o.block_res} dealt to {o.folds} folds of "
                  f"{', '.join(str(int((fold == k).sum())) for k in range(o.folds))} relevés")
    parts, summaries = [], []
    for k in range(o.folds):
        t0 = time.perf_counter()
        pool = np.flatnonzero(fold != k)
        train_idx, val_idx, vocabulary = _split_and_vocabulary(data, pool, o, seed + 1 + k)
        cover, _ = _encode(data, vocabulary)
        config = cfg.fit

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
        progress.step(f"fold {k + 1}/{o.folds}: trained on {len(train_idx)} / validated on {len(val_idx)} relevés, "
                      f"{len(held_out)} held out; best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
                      f"{_headline(result.best)} ({summary['seconds']:.1f} s)")
    entry = {
        "k": int(o.folds), "block_res": int(o.block_res), "seed": int(seed),
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


def train_botaclip(config: TrainJobConfig | None = None, echo: Callable[[str], None] | None = print, *,
                   progress: Progress | None = None, **options) -> TrainReport:
    """Runs the whole training job; writes ``out`` (checkpoint) and ``<out>.jsonl`` (per-epoch log).

    Args:
        config: a :class:`~botaclip.pipeline.train_config.TrainJobConfig` (``TrainOptions(...)`` builds one from
            flat keywords); keyword ``options`` set its fields by name: ``releves``, ``imagery``, ``out``,
            ``plots``, ``crs``, ``resume`` and any field of its groups (``backbone``, ``views``, ``folds``,
            ``center_store``, ``epochs``, ``lr``, ``seed``, ``device``, ...).
        echo: where progress lines go when no ``progress`` is given (default: print; None: nowhere).
        progress: a :class:`botaclip.progress.Progress` reporter for the phase and epoch lines, the
            chip-embedding counter and warnings.

    A bad option raises :class:`~botaclip.errors.InvalidInputError` naming it in ``.params`` before anything is
    read; an unknown one raises TypeError.
    """
    cfg = build(TrainJobConfig, config, **options)
    report = progress if progress is not None else as_progress(None, echo)
    out, log_path = _check_outputs(cfg)
    resume = _load_resume(cfg)
    releves = _read_checked_releves(cfg)
    t0 = time.perf_counter()
    cached, backbone = _cache(cfg, releves, resume, report)
    seconds_cache = time.perf_counter() - t0
    skipped = dict(releves.skipped)
    for reason, n in cached.skipped_counts().items():
        skipped[reason] = skipped.get(reason, 0) + n
    if not cached.releve_ids:
        raise InvalidInputError(
            f"no relevé inside the imagery: all {len(releves.plots)} relevés of {cfg.releves} are outside "
            f"{', '.join(cfg.imagery) or cfg.features.stac_source.stac} or have less than {cfg.features.min_valid:.0%} valid pixels; check the "
            "coordinates (lat/lng, CRS) and the imagery extent"
        )
    report.step(f"features: {len(cached.releve_ids)} relevés x {cfg.features.views} views from {cached.path} "
                f"({cached.computed} embedded now, {seconds_cache:.1f} s)"
                + (f"; skipped {_counts(skipped)}" if skipped else ""))
    coords = releves.plots.set_index("releve_id").loc[cached.releve_ids]
    data = _Data(ids=cached.releve_ids, features=cached.features, lat=coords["lat"].to_numpy(),
                 lng=coords["lng"].to_numpy(), long=releves.long)
    plan = _plan(cfg, data, resume, backbone)
    report.step(_plan_line(cfg, plan))
    _start_log(log_path, resume)
    t_folds = time.perf_counter()
    cross_fit, fold_summaries = _cross_fit(data, cfg, plan.center, log_path, report) if cfg.split.folds else (None,
                                                                                                             [])
    seconds_folds = time.perf_counter() - t_folds
    payload = _payload(cfg, plan, backbone, data.ids, cached.path, cross_fit)
    t1 = time.perf_counter()
    result = _fit_full(data, plan, payload, (out, log_path), resume, report)
    seconds_train = time.perf_counter() - t1
    params = int(sum(p.numel() for p in result.model.parameters() if p.requires_grad))
    summary = {
        "baseline": result.baseline, "best": result.best, "best_epoch": result.best_epoch,
        "epochs_run": len(result.history) - 1, "stopped_early": result.stopped_early, "n_train": len(plan.train_idx),
        "n_val": len(plan.val_idx), "trainable_parameters": params, "skipped": skipped,
        "seconds_train": round(seconds_train, 2),
        **({"folds": fold_summaries, "seconds_folds": round(seconds_folds, 2)} if fold_summaries else {}),
    }
    save_checkpoint(out, {**payload, "model": result.state["best_model"], "history": result.history,
                          "summary": summary, "state": result.state})
    return TrainReport(
        out=out, log_path=log_path, cache_path=cached.path, n_releves=len(data.ids), n_train=len(plan.train_idx),
        n_val=len(plan.val_idx), skipped=skipped, vocabulary_size=len(plan.vocabulary),
        unknown_species_rows=plan.unknown, trainable_parameters=params, baseline=result.baseline, best=result.best,
        best_epoch=result.best_epoch, epochs_run=len(result.history) - 1, stopped_early=result.stopped_early,
        cached_now=cached.computed, seconds_cache=seconds_cache, seconds_train=seconds_train, history=result.history,
        objective=plan.config.objective, centering=plan.centering, folds=fold_summaries, seconds_folds=seconds_folds,
    )


def _check_outputs(cfg: TrainJobConfig) -> tuple[Path, Path]:
    """The checkpoint and log paths, refused where they would write into a store."""
    out = Path(cfg.out)
    check_output_path(out, what=param("out"))
    if cfg.features.cache_dir:
        check_output_path(cfg.features.cache_dir, what=param("cache_dir"), is_dir=True)
    return out, out.with_suffix(".jsonl")


def _load_resume(cfg: TrainJobConfig) -> dict | None:
    """The checkpoint to resume (None without ``resume``); a cross-fitted one is refused."""
    if not cfg.resume:
        return None
    ckpt = load_checkpoint(cfg.resume)
    if ckpt.get("cross_fit"):
        raise InvalidInputError(f"{param('resume')} {cfg.resume} is a cross-fitted checkpoint; retrain it with "
                                f"{param('folds')} instead")
    return ckpt


def _read_checked_releves(cfg: TrainJobConfig):
    """The relevés, refused before the expensive part when no species could reach ``min_plots`` or the relevés
    cannot fill the folds."""
    releves = read_releves(cfg.releves, cfg.plots, crs=cfg.crs)
    SpeciesVocabulary.build(releves.long["releve_id"], releves.long["species"], cfg.split.min_plots)
    if cfg.split.folds:
        spatial_block_folds(releves.plots["lat"].to_numpy(), releves.plots["lng"].to_numpy(), cfg.split.folds,
                            cfg.split.block_res, cfg.fit.seed)
    return releves


def _cache(cfg: TrainJobConfig, releves, resume: dict | None, progress: Progress):
    """The frozen backbone's features of every relevé's chip, from the cache or computed now, and the backbone's
    identity; a resumed checkpoint of another backbone, or a centring store without its backbone set, is refused
    first."""
    from botaclip.imagery.chips import ChipReader
    from botaclip.model.embedder import Embedder

    f = cfg.features
    with warnings.catch_warnings():
        # Said once, as one line, below; not as a Python warning with a source line.
        warnings.simplefilter("ignore", RandomInitWarning)
        backbone_model = make_backbone(f.backbone, f.weights, f.backbone_seed, f.size_px)
        # The rasters and their bands: imagery with the bands preset, or the STAC items' VRTs with their
        # wavelengths (which replace the preset).
        imagery, stac_bands = stac_inputs(f.stac_source, cfg.imagery, progress.warn)
        reader = ChipReader(imagery, bands=f.bands if stac_bands is None else stac_bands, chip_m=f.chip_m,
                            size_px=f.size_px)
        embedder = Embedder(backbone_model, list(reader.wavelengths), device=cfg.fit.device,
                            batch_size=f.embed_batch_size, normalize=True)
    if backbone_model.random_init:
        progress.warn(f"{f.backbone} has random weights (seed={f.backbone_seed}): no weights "
                      "given, so the backbone embeddings carry no pretrained knowledge")
    backbone = backbone_info(f.backbone, backbone_model, reader.spec.name, reader.wavelengths, f.chip_m, f.size_px)
    with reader:
        if resume is not None:
            stored = {k: resume["backbone"].get(k) for k in ("name", "dim", "sha256")}
            if stored != {k: backbone[k] for k in ("name", "dim", "sha256")}:
                raise InvalidInputError(
                    f"{param('resume')} {cfg.resume} was trained on backbone {stored['name']} ({stored['sha256']}), "
                    f"not {backbone['name']} ({backbone['sha256']}); use the same {param('backbone')}/"
                    f"{param('weights')}")
        elif cfg.centering.center_store:  # a wrong store fails before the backbone runs
            store_center(cfg.centering.center_store, backbone, cfg.centering.center_set)
        plots = releves.plots
        cached = cache_features(
            plots["releve_id"].tolist(), plots["lat"].to_numpy(), plots["lng"].to_numpy(), reader, embedder.embed,
            backbone, CacheSettings(Path(f.cache_dir) if f.cache_dir else Path(cfg.out).parent, views=f.views,
                                    min_valid=f.min_valid, seed=cfg.fit.seed, batch_size=f.embed_batch_size),
            progress=counter(progress, "relevés", "embedding chips"),
        )
    return cached, backbone


@dataclass
class _Plan:
    """What the full adapter trains on: the split, the vocabulary and compositions, its config and centring."""

    train_idx: np.ndarray
    val_idx: np.ndarray
    vocabulary: SpeciesVocabulary
    config: TrainConfig
    center: np.ndarray | None
    centering: dict
    cover: np.ndarray
    unknown: int


def _plan(cfg: TrainJobConfig, data: _Data, resume: dict | None, backbone: dict) -> _Plan:
    """A new split, vocabulary and centring, or, resuming, exactly the checkpoint's (relevés added since are left
    out of this run; its centring is in its weights)."""
    if resume is not None:
        val_ids, train_ids = set(resume["split"]["val"]), set(resume["split"]["train"])
        val_idx = np.array([i for i, r in enumerate(data.ids) if r in val_ids], dtype=np.int64)
        train_idx = np.array([i for i, r in enumerate(data.ids) if r in train_ids], dtype=np.int64)
        vocabulary = SpeciesVocabulary.from_list(resume["vocabulary"])
        config = replace(TrainConfig.from_dict(resume["config"]), epochs=cfg.fit.epochs, device=cfg.fit.device)
        center, centering = None, dict(resume.get("centering") or {"source": "none"})
    else:
        center, centering = _centering(cfg.centering, backbone, data.features)
        train_idx, val_idx, vocabulary = _split_and_vocabulary(data, np.arange(len(data.ids)), cfg.split,
                                                               cfg.fit.seed)
        config = cfg.fit
    cover, unknown = _encode(data, vocabulary)
    return _Plan(train_idx, val_idx, vocabulary, config, center, centering, cover, unknown)


def _plan_line(cfg: TrainJobConfig, plan: _Plan) -> str:
    c = plan.centering
    return (f"split: {len(plan.train_idx)} training / {len(plan.val_idx)} validation relevés (H3 blocks at res "
            f"{cfg.split.block_res}); vocabulary: {len(plan.vocabulary)} species in >= {cfg.split.min_plots} "
            f"training plots ({plan.unknown} rows of other species ignored); objective {plan.config.objective}; "
            "input centring: "
            + (f"{c['source']} ({c.get('feature_set') or c.get('rows')})" if c["source"] != "none" else "none"))


def _start_log(log_path: Path, resume: dict | None) -> None:
    """An empty per-epoch log, or, resuming, what the checkpoint knows (so that no epoch is listed twice)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if resume is None:
        log_path.write_text("")
    else:
        log_path.write_text("".join(json.dumps(h) + "\n" for h in resume["state"]["history"][1:]))


def _payload(cfg: TrainJobConfig, plan: _Plan, backbone: dict, ids: list[str], cache_path: Path,
             cross_fit: dict | None) -> dict:
    """The checkpoint's entries besides the weights, history and summary."""
    return {
        "objective": plan.config.objective,
        "backbone": backbone,
        "centering": plan.centering,
        "config": plan.config.to_dict(),
        "vocabulary": plan.vocabulary.to_list(),
        "split": {"train": [ids[i] for i in plan.train_idx], "val": [ids[i] for i in plan.val_idx],
                  "block_res": int(cfg.split.block_res), "val_fraction": float(cfg.split.val_fraction)},
        "data": {"releves": str(cfg.releves), "plots": str(cfg.plots) if cfg.plots else None,
                 "imagery": [str(p) for p in cfg.imagery], "views": int(cfg.features.views),
                 "min_plots": int(cfg.split.min_plots), "min_valid": float(cfg.features.min_valid),
                 "cache": str(cache_path)},
        **({"cross_fit": cross_fit} if cross_fit is not None else {}),
    }


def _fit_full(data: _Data, plan: _Plan, payload: dict, paths: tuple[Path, Path], resume: dict | None,
              progress: Progress) -> TrainResult:
    """Trains the full adapter, one progress line, one log line and a checkpoint after each epoch."""
    out, log_path = paths

    def on_epoch(record: dict, result: TrainResult) -> None:
        progress.step(format_epoch(record, plan.config.epochs))
        with open(log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        save_checkpoint(out, {**payload, "model": result.state["best_model"], "history": result.state["history"],
                              "summary": {}, "state": result.state})

    return fit_botaclip(data.features, plan.cover, plan.train_idx, plan.val_idx, plan.config,
                        resume=resume["state"] if resume is not None else None, on_epoch=on_epoch, center=plan.center)


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
