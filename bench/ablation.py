"""Ablation: what collapses the adapted space, and which training defaults the sample world supports.

On the 5 km sample region (DOFA-small, random init, 112 px chips, 1 view, as `botaclip demo`), trains BotaCLIP
variants on the same cached relevé features and spatial split, derives each adapted set over every indexed cell,
and prints one row per variant:

- validation recall@5 (image -> relevé) and the epochs run;
- geometry of the adapted set, from the store's catalog (computed on write): effective dimensionality
  (participation ratio of the PCA spectrum), share of the first component, mean pairwise cosine;
- habitat structure with centred cosine (silhouette, kNN accuracy) and the geometry kept against the backbone
  (Spearman of pairwise centred-cosine distances);
- the butterfly (presence-only, Boyce index) and soil (abundance, Spearman rho) SDMs, logistic, 5 spatial folds,
  and the rho of their out-of-fold predictions with the true suitability. The plant task is left out: its relevés
  trained the adapters (see `botaclip demo` for the cross-fitted comparison).

Variants change one thing at a time against the defaults (centred input, R against it, lambda 1, t 10, b -10,
lr 1e-2); "uncentred" is the first demo's input.

    .venv/bin/python bench/ablation.py                          # every variant, training seeds 0 and 1
    .venv/bin/python bench/ablation.py --variants defaults,uncentred --seeds 1
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

#: name -> (centred input?, TrainConfig changes); one change at a time against "defaults".
VARIANTS: dict[str, tuple[bool, dict]] = {
    "defaults": (True, {}),
    "uncentred (first demo)": (False, {}),
    "R on raw cosines": (True, {"reg_target": "raw"}),
    "lambda 0": (True, {"lambda_reg": 0.0}),
    "lambda 10": (True, {"lambda_reg": 10.0}),
    "R on 10 nearest": (True, {"k_neighbors": 10}),
    "t 1, b 0 start": (True, {"init_temperature": 1.0, "init_bias": 0.0}),
    "lr 1e-3 (first demo)": (True, {"lr": 1e-3}),
    "lr 1e-4": (True, {"lr": 1e-4}),
    "BotaSP (supervised)": (True, {"objective": "supervised"}),
    "BotaSP, lr 1e-3": (True, {"objective": "supervised", "lr": 1e-3}),
}


def _setup(args):
    """Sample region, backbone store, relevé feature cache, split, vocabulary: everything variants share."""
    from botaclip.pipeline.index import run_index
    from botaclip.pipeline.train import TrainOptions, load_training_data, train_botaclip
    from botaclip.sample import ensure_sample

    sample = ensure_sample(seed=0, size_km=args.size_km, plots=args.plots)
    store_dir = args.workdir / "store"
    t = time.perf_counter()
    run_index(str(sample.region_geojson), [str(sample.ortho)], store_dir, name="dofa", backbone="dofa-small",
              size_px=args.size_px, bands="rgbn", device="cpu", workers=2, progress=False, echo=lambda m: None)
    print(f"backbone set: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    base = train_botaclip(TrainOptions(
        releves=str(sample.releves), imagery=[str(sample.ortho)], out=str(args.workdir / "base.pt"),
        backbone="dofa-small", size_px=args.size_px, views=1, epochs=1, device="cpu",
        cache_dir=str(args.workdir / "cache"), center_store=str(store_dir), center_set="dofa", bands="rgbn",
    ), echo=lambda m: None)
    print(f"relevé features: {time.perf_counter() - t:.1f} s ({base.n_releves} relevés)")
    feats, cover, train_idx, val_idx, config, _ = load_training_data(base.out)
    return sample, store_dir, feats, cover, train_idx, val_idx, config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=5)
    p.add_argument("--plots", type=int, default=2000)
    p.add_argument("--size-px", type=int, default=112)
    p.add_argument("--seeds", type=int, default=2, help="training seeds per variant (0, 1, ...)")
    p.add_argument("--sdm-seeds", type=int, default=1,
                   help="score the SDMs on the sets of the first N training seeds (the costly part)")
    p.add_argument("--variants", default=None, help="comma-separated names (default: all)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/botaclip-bench-ablation"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    args.workdir.mkdir(parents=True, exist_ok=True)
    chosen = list(VARIANTS) if not args.variants else [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")

    from botaclip.diagnostics import diagnose
    from botaclip.model.train import TrainConfig, fit_botaclip
    from botaclip.pipeline.demo import SdmPlan, score_tasks
    from botaclip.store import Store

    started = time.perf_counter()
    sample, store_dir, feats, cover, train_idx, val_idx, base_config = _setup(args)
    store = Store.open(store_dir)
    h3, X, _ = store.features_numpy("dofa")
    center = store.geometry("dofa")["mean"].astype(np.float32)

    # The identity adapter on the centred input = the backbone, centred: the reference every variant starts from.
    sets = {"raw backbone": "dofa", "centred backbone (identity)": "v_identity"}
    with store.writer("v_identity", kind="botaclip", dim=X.shape[1], overwrite=True) as w:
        w.write(h3, (X - center) / np.linalg.norm(X - center, axis=1, keepdims=True))
    training: dict[str, list[dict]] = {}
    for i, name in enumerate(chosen):
        centred, change = VARIANTS[name]
        for seed in range(args.seeds):
            # The setup run only built the cache (1 epoch): epochs and patience are the command's defaults.
            config = TrainConfig.from_dict({**base_config, "epochs": args.epochs, "patience": TrainConfig.patience,
                                            **change, "seed": seed, "device": "cpu"})
            t = time.perf_counter()
            result = fit_botaclip(feats, cover, train_idx, val_idx, config, center=center if centred else None)
            seconds = time.perf_counter() - t
            with torch.no_grad():
                adapted = result.model.encode_image(torch.from_numpy(X)).numpy()
            set_name = f"v{i}_s{seed}"
            with store.writer(set_name, kind="botaclip", dim=adapted.shape[1], overwrite=True) as w:
                w.write(h3, adapted)
            sets[f"{name} | seed {seed}"] = set_name
            key = "species_auc" if config.objective == "supervised" else "recall@5"
            training.setdefault(name, []).append({"val": result.best.get(key), "key": key, "seconds": seconds,
                                                  "epochs": len(result.history) - 1})
            print(f"trained {name!r} seed {seed}: {key} {result.best.get(key):.3f}, {len(result.history) - 1} "
                  f"epochs, {seconds:.1f} s", flush=True)

    store = Store.open(store_dir, read_only=True)
    names = list(sets.values())
    t = time.perf_counter()
    diag = diagnose(store, names, labels=sample.cells, label_col="habitat", centered=True, sample=20_000)
    print(f"diagnostics: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    scored = {label: n for label, n in sets.items()
              if " | seed " not in label or int(label.rsplit(" ", 1)[1]) < args.sdm_seeds}
    plan = SdmPlan(model="logistic", folds=5, plant_species=0, tasks=("butterflies", "soil"))
    scores, _ = score_tasks(store, sample, scored, seed=0, plan=plan, out=None, echo=lambda m: None)
    print(f"SDMs (butterflies, soil): {time.perf_counter() - t:.1f} s", flush=True)

    def mean(d: dict) -> float:
        v = [x for x in d.values() if x is not None and np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    rows = []
    for label, set_name in sets.items():
        g = store.geometry(set_name)
        r = diag.results[set_name]
        rows.append({
            "label": label,
            "eff_dim": g["effective_dim"], "pc1": g["explained_variance_ratio"][0], "mean_cos": g["mean_cosine"],
            "silhouette": r.get("silhouette_cosine"), "knn": r.get("knn_accuracy"),
            "dist_rho": r.get("distance_spearman", 1.0),
            **({"boyce": mean(scores["butterflies"]["metric"][label]),
                "bf_truth": mean(scores["butterflies"]["truth"][label]),
                "soil": mean(scores["soil"]["metric"][label]), "soil_truth": mean(scores["soil"]["truth"][label])}
               if label in scored else dict.fromkeys(("boyce", "bf_truth", "soil", "soil_truth"))),
        })
    cols = [("eff_dim", "eff dim", "{:.2f}"), ("pc1", "PC1", "{:.3f}"), ("mean_cos", "mean cos", "{:.3f}"),
            ("silhouette", "silh", "{:.3f}"), ("knn", "kNN", "{:.3f}"), ("dist_rho", "dist rho", "{:.3f}"),
            ("boyce", "Boyce", "{:.3f}"), ("bf_truth", "bf truth", "{:.3f}"), ("soil", "soil rho", "{:.3f}"),
            ("soil_truth", "soil truth", "{:.3f}")]
    print(f"\nper set (diagnostics with centred cosine; SDMs: logistic, 5 spatial folds, SDM seed 0, on the "
          f"first {args.sdm_seeds} of {args.seeds} training seed(s) per variant)")
    print(f"{'set':<42}" + "".join(f"{t:>11}" for _, t, _ in cols))
    for r in rows:
        print(f"{r['label']:<42}" + "".join(f"{f.format(r[k]) if r[k] is not None else '—':>11}" for k, _, f in cols))

    print("\nper variant (mean over training seeds)")
    print(f"{'variant':<28}{'val':>7}{'epochs':>7}{'s':>6}" + "".join(f"{t:>11}" for _, t, _ in cols))
    for name in ["raw backbone", "centred backbone (identity)", *chosen]:
        picked = [r for r in rows if r["label"] == name or r["label"].startswith(f"{name} | seed ")]
        tr = training.get(name, [])
        val = f"{np.mean([t['val'] for t in tr]):.3f}" if tr else "—"
        ep = f"{np.mean([t['epochs'] for t in tr]):.0f}" if tr else "—"
        sec = f"{np.mean([t['seconds'] for t in tr]):.1f}" if tr else "—"
        print(f"{name:<28}{val:>7}{ep:>7}{sec:>6}" + "".join(
            f"{f.format(np.mean(v)) if (v := [r[k] for r in picked if r[k] is not None]) else '—':>11}"
            for k, _, f in cols))
    print(f"\ntotal {time.perf_counter() - started:.0f} s (2-core CPU, no GPU)")


if __name__ == "__main__":
    main()
