"""The paper's comparison end to end on the built-in sample region (`botaclip demo`).

sample region -> index with the frozen backbone -> train BotaCLIP on the relevés -> derive the adapted feature set
-> spatial-block CV on three tasks like the paper's (plants: presence-absence, TSS; butterflies: presence-only,
Boyce index; soil groups: abundance, Spearman rho), raw backbone vs BotaCLIP on identical folds -> the Spearman
correlation of each model's predictions with the true suitability -> embedding diagnostics -> report and maps.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from botaclip.errors import BotaclipError
from botaclip.store.outputs import make_output_dir

#: task key -> (sample file attribute, SDM kind, headline metric, group in truth.parquet)
TASKS: dict[str, tuple[str, str, str, str]] = {
    "plants": ("releves", "presence-absence", "tss", "plant"),
    "butterflies": ("butterflies", "presence-only", "boyce", "butterfly"),
    "soil": ("soil", "abundance", "spearman", "soil"),
}
METRIC_LABELS = {"tss": "TSS", "boyce": "Boyce index", "spearman": "Spearman rho"}
BACKBONE_SET = "dofa"
ADAPTED_SET = "botaclip"


@dataclass
class DemoOptions:
    """What `botaclip demo` runs. Chip size in metres (`chip_m`) and pixels (`size_px`)."""

    out: Path = Path("demo-out")
    weights: str | None = None
    backbone: str = "dofa-small"
    seed: int = 0
    size_km: float = 5.0
    plots: int = 2000
    # 112 px keeps the whole demo under 10 minutes on 2 CPU cores; the paper used 224 px.
    size_px: int = 112
    chip_m: float = 100.0
    views: int = 1
    epochs: int = 100
    batch_size: int = 512
    plant_species: int = 15
    # Logistic regression keeps the three tasks to about a minute on 2 CPU cores; --model lightgbm|rf for the
    # tree models (the paper used random forests), several times slower.
    model: str = "logistic"
    folds: int = 5
    device: str = "auto"
    workers: int = 2


@dataclass
class DemoReport:
    """Everything the demo measured; `to_dict()` is what `report.json` holds."""

    options: dict
    backbone: dict
    training: dict
    tasks: dict
    diagnostics: dict | None
    seconds: dict
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from botaclip.diagnostics.report import json_safe  # JSON has no NaN: undefined scores become null

        return json_safe(asdict(self))

    def table(self) -> list[tuple[str, str, float, float, float]]:
        """Rows like the paper's Table 1: (task, metric, raw backbone, BotaCLIP, difference)."""
        rows = []
        for task, entry in self.tasks.items():
            raw = entry["feature_sets"][BACKBONE_SET]["mean"]
            adapted = entry["feature_sets"][ADAPTED_SET]["mean"]
            rows.append((task, METRIC_LABELS[entry["metric"]], raw, adapted, adapted - raw))
            raw_t = entry["feature_sets"][BACKBONE_SET]["truth_spearman"]["mean"]
            adapted_t = entry["feature_sets"][ADAPTED_SET]["truth_spearman"]["mean"]
            rows.append((task, "rho with true suitability", raw_t, adapted_t, adapted_t - raw_t))
        return rows

    def format_table(self) -> str:
        head = f"{'task':<12} {'metric':<26} {'raw DOFA':>9} {'BotaCLIP':>9} {'diff':>8}"
        lines = [head, "-" * len(head)]
        for task, metric, raw, adapted, diff in self.table():
            lines.append(f"{task:<12} {metric:<26} {raw:>9.3f} {adapted:>9.3f} {diff:>+8.3f}")
        return "\n".join(lines)


def _mean(values) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return float(v.mean()) if v.size else float("nan")


def _plant_subset(releves_csv: Path, n: int) -> list[str]:
    """Up to `n` plant species of intermediate prevalence (10-50 % of plots): informative for a TSS comparison
    and cheap enough for a 10-minute demo. Deterministic: ordered by prevalence, then name."""
    import pandas as pd

    table = pd.read_csv(releves_csv, usecols=["releve_id", "species"])
    prevalence = table.groupby("species")["releve_id"].nunique() / table["releve_id"].nunique()
    mid = prevalence[(prevalence >= 0.10) & (prevalence <= 0.50)]
    order = sorted(mid.index, key=lambda s: (abs(mid[s] - 0.25), s))
    return sorted(order[:n])


def _truth_correlations(store, occurrences, species: list[str], kind: str, truth, group: str, model: str,
                        seed: int) -> tuple[dict[str, dict[str, float]], dict | None]:
    """Spearman rho between each species' model prediction (fitted on all its cells) and its true suitability,
    per feature set, over every cell that has features and a truth value. Also returns the first species' maps
    (cells, truth, predictions) for the demo's picture."""
    from botaclip.sdm import make_model, spearman
    from botaclip.sdm.dataset import IndexedCells, StoreFeatures, label_cells
    from botaclip.sdm.evaluate import training_weights

    source = StoreFeatures(store)
    indexed = source.indexed_cells([BACKBONE_SET, ADAPTED_SET])
    truth = truth[(truth["group"] == group) & np.isin(truth["h3"].to_numpy(np.uint64), indexed)]
    out: dict[str, dict[str, float]] = {BACKBONE_SET: {}, ADAPTED_SET: {}}
    features = {name: source.features([name], indexed)[0] for name in out}
    row_of = {int(c): i for i, c in enumerate(indexed)}
    example = None
    for sp in species:
        t = truth[truth["taxon"] == sp]
        if t.empty:
            continue
        labelled = label_cells(occurrences, sp, kind, IndexedCells(indexed, source.resolution, "the demo store"),
                               seed=seed)
        rows = np.fromiter((row_of[int(c)] for c in labelled.h3), dtype=np.int64, count=labelled.h3.size)
        truth_rows = np.fromiter((row_of[int(c)] for c in t["h3"]), dtype=np.int64, count=len(t))
        task = labelled.task
        for name, X in features.items():
            estimator = make_model(model, task=task, seed=seed)
            estimator.fit(X[rows], labelled.y, sample_weight=training_weights(labelled.y, labelled.is_background))
            pred = estimator.predict(X[truth_rows])  # probability of presence, or expected abundance
            out[name][sp] = float(spearman(t["suitability"].to_numpy(), np.asarray(pred)))
            if example is None:
                example = {"species": sp, "h3": t["h3"].to_numpy(np.uint64), "truth": t["suitability"].to_numpy(),
                           "pred": {}, "rho": {}}
            if example["species"] == sp:
                example["pred"][name] = np.asarray(pred)
                example["rho"][name] = out[name][sp]
    return out, example


def run_demo(options: DemoOptions, echo: Callable[[str], None] = print) -> DemoReport:
    """Run the whole pipeline on the sample region into `options.out`; returns the report (also written)."""
    import pandas as pd

    from botaclip.pipeline.index import run_index
    from botaclip.pipeline.train import TrainOptions, format_summary, train_botaclip
    from botaclip.sample import SampleRegion, make_sample
    from botaclip.sdm import compare, read_occurrences
    from botaclip.store import Store

    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise BotaclipError(f"--out {out} is a file; give a folder for the demo's outputs")
    from botaclip.imagery.chips import MAX_SIZE_PX

    # Refused now rather than after the sample region is built.
    if options.seed < 0 or not 1 <= options.size_px <= MAX_SIZE_PX:
        raise BotaclipError(f"--seed must be 0 or more and --size-px between 1 and {MAX_SIZE_PX}; got "
                            f"{options.seed} and {options.size_px}")
    make_output_dir(out, what="--out")
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str, message: str):
        echo(f"[{time.perf_counter() - started:6.1f}s] {message}")
        seconds[name] = time.perf_counter()

    def done(name: str) -> None:
        seconds[name] = round(time.perf_counter() - seconds[name], 2)

    step("sample", f"1/6 sample region ({options.size_km:g} km, {options.plots} relevés, seed {options.seed})")
    sample_dir = out / "sample"
    wanted = (options.seed, float(options.size_km), options.plots)
    try:  # a rerun reuses the sample region it built, when built with the same parameters
        sample = SampleRegion.open(sample_dir)
        meta = sample.metadata()
        reuse = (meta.get("seed"), float(meta.get("size_km", -1)), meta.get("plots")) == wanted
    except BotaclipError:
        reuse = False
    if not reuse:
        sample = make_sample(sample_dir, seed=options.seed, size_km=options.size_km, plots=options.plots,
                             overwrite=sample_dir.exists())
    done("sample")

    store_dir = out / "store"
    step("index", f"2/6 index the region with {options.backbone} "
                  f"({'weights ' + options.weights if options.weights else 'RANDOM INIT: no --weights given'})")
    common = dict(backbone=options.backbone, weights=options.weights, chip_m=options.chip_m, size_px=options.size_px,
                  bands="rgbn", device=options.device, workers=options.workers, seed=options.seed, echo=echo)
    index_summary = run_index(str(sample.region_geojson), [str(sample.ortho)], store_dir, name=BACKBONE_SET, **common)
    done("index")

    adapter_path = out / "botaclip_adapter.pt"
    step("train", f"3/6 train BotaCLIP on the relevés ({options.views} view(s), up to {options.epochs} epochs)")
    train_report = train_botaclip(TrainOptions(
        releves=str(sample.releves), imagery=[str(sample.ortho)], out=str(adapter_path), backbone=options.backbone,
        weights=options.weights, backbone_seed=options.seed, epochs=options.epochs, batch_size=options.batch_size,
        views=options.views, seed=options.seed, device=options.device, chip_m=options.chip_m,
        size_px=options.size_px, bands="rgbn", cache_dir=str(out / "cache"),
    ), echo=echo)
    echo(format_summary(train_report))
    done("train")

    step("adapt", "4/6 derive the BotaCLIP feature set from the stored backbone embeddings")
    # The adapter was just (re)trained, so an adapted set left by an earlier run is replaced, never mixed.
    run_index(str(sample.region_geojson), [str(sample.ortho)], store_dir, name=ADAPTED_SET,
              adapter=str(adapter_path), overwrite=True, **common)
    done("adapt")

    step("sdm", "5/6 species distribution models: raw backbone vs BotaCLIP on identical spatial folds")
    store = Store.open(store_dir, read_only=True)
    truth = pd.read_parquet(sample.truth)
    tasks: dict[str, dict] = {}
    plant_example = None
    for task, (attr, kind, metric, group) in TASKS.items():
        path = getattr(sample, attr)
        occurrences = read_occurrences(path)  # read once: for the cross-validation and the truth correlation
        species = _plant_subset(path, options.plant_species) if task == "plants" else None
        echo(f"  {task}: {kind}, {METRIC_LABELS[metric]}")
        result = compare(store, occurrences, [BACKBONE_SET, ADAPTED_SET], species=species, kind=kind,
                         models=[options.model], folds=options.folds, seed=options.seed, out=out / f"sdm_{task}",
                         progress=lambda msg: echo(f"    {msg}"))
        scores: dict[str, dict[str, float]] = {BACKBONE_SET: {}, ADAPTED_SET: {}}
        for row in result.rows:
            if row.metric == metric:
                scores[row.features][row.species] = row.mean
        fitted = sorted(scores[BACKBONE_SET])
        rho, example = _truth_correlations(store, occurrences, fitted, kind, truth, group, options.model,
                                           options.seed)
        if task == "plants":
            plant_example = example
        tasks[task] = {
            "metric": metric, "kind": kind, "n_species": len(fitted), "skipped_species": result.skipped_species,
            "feature_sets": {
                name: {"mean": _mean(scores[name].values()), "per_species": scores[name],
                       "truth_spearman": {"mean": _mean(rho[name].values()), "per_species": rho[name]}}
                for name in (BACKBONE_SET, ADAPTED_SET)
            },
            "paired": [asdict(p) for p in result.paired if p.metric == metric],
        }
    done("sdm")

    step("report", "6/6 diagnostics, maps and report")
    diagnostics, diagnostics_md = _diagnostics(store, sample, out / "diagnostics", echo)
    maps = _write_maps(sample, plant_example, out / "maps")
    done("report")
    seconds["total"] = round(time.perf_counter() - started, 2)

    report = DemoReport(
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        backbone={"name": options.backbone, "weights": options.weights or "random-init",
                  "random_init": options.weights is None, "size_px": options.size_px, "chip_m": options.chip_m,
                  "cells_indexed": index_summary.written + index_summary.skipped_present},
        training={"releves_used": train_report.n_releves, "train": train_report.n_train, "val": train_report.n_val,
                  "vocabulary": train_report.vocabulary_size, "best_epoch": train_report.best_epoch,
                  "untrained": train_report.baseline, "trained": train_report.best},
        tasks=tasks, diagnostics=diagnostics, seconds=seconds, files=[str(p.relative_to(out)) for p in maps],
    )
    _write_reports(report, out, diagnostics_md)
    echo(report.format_table())
    echo(f"report: {out / 'report.md'} (and report.json, maps/*.png); {seconds['total']:.0f} s in all")
    return report


def _write_maps(sample, plant_example: dict | None, maps_dir: Path) -> list[Path]:
    from botaclip.pipeline.demo_maps import habitat_map, imagery_thumbnail, prediction_vs_truth

    maps_dir.mkdir(parents=True, exist_ok=True)
    written = [imagery_thumbnail(sample.ortho, maps_dir / "imagery.png"),
               habitat_map(sample.habitat, sample.habitat_table, maps_dir / "habitats.png")]
    if plant_example is not None:
        written.append(prediction_vs_truth(plant_example, maps_dir / "plant_prediction_vs_truth.png"))
    return written


def _diagnostics(store, sample, out_dir: Path, echo) -> tuple[dict, str]:
    """Embedding diagnostics with the sample's habitats as labels: (report.json entry, report.md section)."""
    from botaclip.diagnostics import diagnose

    report = diagnose(store, [BACKBONE_SET, ADAPTED_SET], labels=sample.cells, label_col="habitat",
                      out_dir=out_dir)
    echo(report.to_table())
    return report.to_dict(), report.to_markdown(heading_level=2, relative_to=out_dir.parent)


def _write_reports(report: DemoReport, out: Path, diagnostics_md: str) -> None:
    data = report.to_dict()
    (out / "report.json").write_text(json.dumps(data, indent=2))
    lines = [
        "# botaclip demo: raw DOFA vs BotaCLIP on the sample region",
        "",
        f"Backbone: {report.backbone['name']}, "
        + ("**random initialisation** (no `--weights` given: the numbers show the pipeline, not the published "
           "model's quality)" if report.backbone["random_init"] else f"weights `{report.backbone['weights']}`")
        + f"; chips {report.backbone['chip_m']:g} m at {report.backbone['size_px']} px.",
        "",
        "| task | metric | raw DOFA | BotaCLIP | difference |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {t} | {m} | {r:.3f} | {a:.3f} | {d:+.3f} |" for t, m, r, a, d in report.table()]
    trained, untrained = report.training["trained"], report.training["untrained"]
    lines += [
        "",
        "Scores are means over species of spatial-block cross-validated scores (identical folds for both feature "
        "sets); 'rho with true suitability' correlates each model's prediction with the simulated truth.",
        "",
        "## Training",
        "",
        f"{report.training['releves_used']} relevés ({report.training['train']} train / {report.training['val']} "
        f"validation, split by spatial blocks), vocabulary of {report.training['vocabulary']} species. "
        f"Validation image-to-relevé recall@5: {untrained.get('recall@5', float('nan')):.3f} untrained, "
        f"{trained.get('recall@5', float('nan')):.3f} trained (best epoch {report.training['best_epoch']}).",
        "",
        "## Per task",
    ]
    for task, entry in report.tasks.items():
        lines += ["", f"### {task} ({entry['kind']}, {METRIC_LABELS[entry['metric']]}, {entry['n_species']} species)", ""]
        for p in entry["paired"]:
            lines.append(f"- paired: {p['a']} wins {p['wins_a']}, {p['b']} wins {p['wins_b']}, "
                         f"Wilcoxon p = {p['p_value']:.3g}" if p.get("p_value") is not None else
                         f"- paired: {p['a']} wins {p['wins_a']}, {p['b']} wins {p['wins_b']}")
        if entry["skipped_species"]:
            lines.append(f"- skipped: {', '.join(f'{k} ({v})' for k, v in entry['skipped_species'].items())}")
    lines += ["", diagnostics_md.rstrip()]
    lines += ["", "## Maps", ""] + [f"![{Path(f).stem}]({f})" for f in report.files]
    lines += ["", "## Time", ""] + [f"- {k}: {v:.1f} s" for k, v in report.seconds.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
