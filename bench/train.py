"""Benchmark of BotaCLIP training on the built-in sample region (CPU by default).

Prints: backbone caching time and rate, seconds per epoch and in total, trainable parameters, validation recall@k
of the untrained start, of a frozen identity adapter with a trained relevé encoder (the raw backbone), and of the
trained adapter, plus the paper's variants (lambda = 0, one view, MLP adapter) on the same cached features and
split. With a CUDA device, also the caching rate of DOFA-base at 224 px.

    .venv/bin/python bench/train.py                      # 5 km, 2000 plots, DOFA-small, 64 px, 1 view
    .venv/bin/python bench/train.py --size-px 224 --views 4   # the command's defaults for chips

Also times a cross-fitted run (``--folds 5``: five fold adapters plus the full one) on the warm cache.
"""

from __future__ import annotations

import argparse
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _region(size_km: float, plots: int) -> dict:
    from botaclip.sample import ensure_sample

    region = ensure_sample(seed=0, size_km=size_km, plots=plots)
    return {"releves": region.releves, "ortho": region.ortho, "plots": region.plots}


def _variants(report, region, views: int) -> list[tuple[str, dict]]:
    from botaclip.model.train import TrainConfig, fit_botaclip
    from botaclip.pipeline.train import load_training_data

    feats, cover, train_idx, val_idx, base, center = load_training_data(report.out)
    out = []
    for name, change, one_view in [
        ("identity adapter, trained relevé encoder (raw backbone)", {"train_adapter": False}, False),
        ("--lambda-reg 0", {"lambda_reg": 0.0}, False),
        *([("--views 1", {}, True)] if views > 1 else []),  # with one cached view it is the default run
        ("--adapter mlp", {"adapter": "mlp"}, False),
        ("--k-neighbors 10", {"k_neighbors": 10}, False),
    ]:
        config = TrainConfig.from_dict({**base, **change})
        t = time.perf_counter()
        result = fit_botaclip(feats[:, :1] if one_view else feats, cover, train_idx, val_idx, config, center=center)
        out.append((name, {**result.best, "seconds": time.perf_counter() - t, "epochs": len(result.history) - 1}))
    return out


def _device_rate() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device: DOFA-base caching rate to be measured"
    from botaclip.model.embedder import Embedder
    from botaclip.pipeline.train import make_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_backbone("dofa-base", None, 0, 224)
        emb = Embedder(model, [0.665, 0.56, 0.49, 0.842], device="cuda", batch_size=256, normalize=True)
    x = np.random.default_rng(0).normal(size=(1024, 4, 224, 224)).astype(np.float32)
    emb.embed(x[:256])
    torch.cuda.synchronize()
    t = time.perf_counter()
    emb.embed(x)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return f"DOFA-base 224 px on {torch.cuda.get_device_name()}: {1024 / dt:.0f} chips/s (bf16, batch 256, from host arrays)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=5)
    p.add_argument("--plots", type=int, default=2000)
    p.add_argument("--backbone", default="dofa-small")
    p.add_argument("--size-px", type=int, default=64)
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--block-res", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/botaclip-bench-train"))
    p.add_argument("--no-variants", action="store_true")
    p.add_argument("--folds", type=int, default=5, help="also time a cross-fitted run (0: skip)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from botaclip.pipeline.train import TrainOptions, format_summary, train_botaclip

    args.workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    region = _region(args.size_km, args.plots)
    print(f"sample region ({args.size_km:g} km, {args.plots} plots): {time.perf_counter() - t:.1f} s")
    cache = args.workdir / f"cache-{args.backbone}-{args.size_px}px-{args.views}v"
    shutil.rmtree(cache, ignore_errors=True)

    def run(out_name: str, folds: int = 0) -> tuple[object, float]:
        options = TrainOptions(
            releves=str(region["releves"]), imagery=[str(region["ortho"])], out=str(args.workdir / out_name),
            backbone=args.backbone, size_px=args.size_px, views=args.views, epochs=args.epochs,
            batch_size=args.batch_size, block_res=args.block_res, device="cpu", cache_dir=str(cache), folds=folds,
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = train_botaclip(options, echo=lambda line: None)
        return report, time.perf_counter() - start

    cold, cold_s = run("adapter.pt")
    warm, warm_s = run("adapter-warm.pt")
    chips = cold.cached_now * args.views
    print(f"backbone {args.backbone} random init, {args.size_px} px chips, {args.views} views, CPU x{args.threads}")
    print(f"relevés used {cold.n_releves} (train {cold.n_train}, val {cold.n_val}), skipped {cold.skipped}, "
          f"vocabulary {cold.vocabulary_size} species")
    print(f"caching: {cold.seconds_cache:.1f} s for {chips} chips ({chips / cold.seconds_cache:.1f} chips/s, "
          "chip reading included)")
    print(f"training: {cold.seconds_train:.1f} s for {cold.epochs_run} epochs "
          f"({cold.seconds_train / max(cold.epochs_run, 1):.3f} s/epoch), best epoch {cold.best_epoch}")
    print(f"total, cold cache: {cold_s:.1f} s; again with the cache warm: {warm_s:.1f} s "
          f"({warm.cached_now} relevés embedded)")
    print(f"trainable parameters: {cold.trainable_parameters:,}")
    print(format_summary(cold))
    if args.folds:
        cf, cf_s = run("adapter-crossfit.pt", folds=args.folds)
        each = ", ".join(f"{f['seconds']:.1f}" for f in cf.folds)
        print(f"\ncross-fitted, --folds {args.folds} (cache warm): {cf_s:.1f} s in all; {cf.seconds_folds:.1f} s for "
              f"the {args.folds} fold adapters ({each} s), "
              f"{cf.seconds_train:.1f} s for the full one; one adapter alone: {warm.seconds_train:.1f} s")
    if not args.no_variants:
        print("\nvariants on the same cached features and split (validation, best epoch):")
        print(f"{'variant':<58}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'epochs':>8}{'s':>7}")
        rows = [("untrained start", {**cold.baseline, "seconds": 0.0, "epochs": 0}),
                ("trained (defaults)", {**cold.best, "seconds": cold.seconds_train, "epochs": cold.epochs_run})]
        for name, m in rows + _variants(cold, region, args.views):
            print(f"{name:<58}{m['recall@1']:>7.3f}{m['recall@5']:>7.3f}{m['recall@10']:>7.3f}"
                  f"{m['epochs']:>8d}{m['seconds']:>7.1f}")
    print(_device_rate())


if __name__ == "__main__":
    main()
