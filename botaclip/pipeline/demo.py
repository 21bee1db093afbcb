"""The paper's comparison end to end on the built-in sample region (`botaclip demo`).

sample region -> index with the frozen backbone; two baselines that need no training, on the same cells: a
pretrained location encoder's embedding of each cell centre (GeoCLIP, the botaclip[geoclip] extra) and the
elevation from the DEM (covariates) -> for each seed, train BotaSP (supervised baseline) and BotaCLIP cross-fitted
on spatial blocks of the relevés (K fold adapters besides the full one) and derive their feature sets from the
stored backbone set -> spatial-block CV on three tasks like the paper's (plants: presence-absence, TSS;
butterflies: presence-only, Boyce index; soil groups: abundance, Spearman rho) with the raw backbone, BotaSP,
BotaCLIP, the location embeddings and the elevation on identical folds; wherever a species' cells hold training
relevés, SDM fold k is scored on features of the adapters that never saw fold k (no leakage) -> out-of-fold
predictions correlated with the true suitability -> mean +- sd over seeds, paired Wilcoxon tests over species x
seeds -> embedding diagnostics -> report and maps.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from botaclip.errors import BotaclipError, InvalidInputError, param
from botaclip.store.outputs import make_output_dir

#: task key -> (sample file attribute, SDM kind, headline metric, group in truth.parquet)
TASKS: dict[str, tuple[str, str, str, str]] = {
    "plants": ("releves", "presence-absence", "tss", "plant"),
    "butterflies": ("butterflies", "presence-only", "boyce", "butterfly"),
    "soil": ("soil", "abundance", "spearman", "soil"),
}
METRIC_LABELS = {"tss": "TSS", "boyce": "Boyce index", "spearman": "Spearman rho", "truth": "rho with true suitability"}
BACKBONE_SET = "dofa"
LOCATION_SET = "geoclip"  # GeoCLIP location-encoder embeddings of the backbone set's cells
COVARIATE_SET = "terrain"  # elevation (the DEM's mean per cell)
#: feature sets that no training seed changes (one for all seeds)
SHARED_SETS = (BACKBONE_SET, LOCATION_SET, COVARIATE_SET)
#: training objective -> the feature set it makes (suffixed with the seed)
OBJECTIVE_SETS = {"supervised": "botasp", "contrastive": "botaclip"}
COMPARED = (BACKBONE_SET, "botasp", "botaclip", LOCATION_SET, COVARIATE_SET)
SET_LABELS = {BACKBONE_SET: "raw DOFA", "botasp": "BotaSP", "botaclip": "BotaCLIP", LOCATION_SET: "GeoCLIP location",
              COVARIATE_SET: "elevation"}
SHORT_LABELS = {BACKBONE_SET: "raw", "botasp": "SP", "botaclip": "CLIP", LOCATION_SET: "loc"}
#: (a, b): paired comparisons reported, a - b (those whose sets are both compared)
PAIRS = (("botaclip", BACKBONE_SET), ("botasp", BACKBONE_SET), ("botaclip", "botasp"), ("botaclip", LOCATION_SET))


def seed_set(base: str, seed: int) -> str:
    """The store name of feature set ``base`` for training seed ``seed`` (the shared sets have one for all)."""
    return base if base in SHARED_SETS else f"{base}_s{seed}"


def compared_pairs(compared) -> tuple[tuple[str, str], ...]:
    """The paired comparisons of ``PAIRS`` whose two sets are both among ``compared``."""
    return tuple((a, b) for a, b in PAIRS if a in compared and b in compared)


@dataclass
class DemoOptions:
    """What `botaclip demo` runs. Chip size in metres (`chip_m`) and pixels (`size_px`)."""

    out: Path = Path("demo-out")
    weights: str | None = None
    backbone: str = "dofa-small"
    seed: int = 0
    # Training seeds (seed, seed + 1, ...): each trains both adapters and draws the folds again.
    seeds: int = 3
    size_km: float = 5.0
    plots: int = 2000
    # 112 px keeps the demo affordable on 2 CPU cores; the paper used 224 px.
    size_px: int = 112
    chip_m: float = 100.0
    views: int = 1
    epochs: int = 100
    batch_size: int = 512
    plant_species: int = 15
    # Logistic regression keeps the tasks affordable on 2 CPU cores; --model lightgbm|rf for the tree models (the
    # paper used random forests), several times slower.
    model: str = "logistic"
    # SDM folds, and the cross-fitting folds of the adapters (the same blocks where they overlap).
    folds: int = 5
    # H3 resolution of the relevé blocks the adapters are cross-fitted (and validated) on; None: the coarsest with
    # at least 4 blocks per fold (8, about 0.7 km2, on the default 5 km region).
    block_res: int | None = None
    device: str = "auto"
    workers: int = 2
    # SDM worker processes (None: one per core). 1 fits every species in this process: on the tests' tiny
    # demo, starting the worker pools of its 3 tasks x seeds cost more than the fits.
    sdm_jobs: int | None = None


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
    #: the feature sets compared, in table order (the location set is left out where its extra is missing)
    compared: list[str] = field(default_factory=lambda: list(COMPARED))

    def to_dict(self) -> dict:
        from botaclip.diagnostics.report import json_safe  # JSON has no NaN: undefined scores become null

        return json_safe(asdict(self))

    def table(self) -> list[dict]:
        """Rows like the paper's Table 1: per task, the headline metric and the rho with the true suitability,
        each with {set: (mean, sd over seeds)} and {"a-b": (mean difference, Wilcoxon p)}."""
        rows = []
        for task, entry in self.tasks.items():
            for key, label in ((entry["metric"], METRIC_LABELS[entry["metric"]]), ("truth", METRIC_LABELS["truth"])):
                block = entry["scores"][key]
                rows.append({
                    "task": task, "metric": label,
                    "sets": {s: (block["feature_sets"][s]["mean"], block["feature_sets"][s]["sd"])
                             for s in self.compared},
                    "pairs": {f"{p['a']}-{p['b']}": (p["mean_difference"], p["p_value"]) for p in block["paired"]},
                })
        return rows

    def format_table(self) -> str:
        """The table as fixed-width text (mean +- sd over seeds; differences with Wilcoxon p)."""
        n = self.options.get("seeds")
        pairs = compared_pairs(self.compared)
        head = (f"{'task':<12} {'metric':<26}" + "".join(f" {SET_LABELS[s]:>16}" for s in self.compared)
                + "".join(f" {SHORT_LABELS[a] + '-' + SHORT_LABELS[b] + ' (p)':>17}" for a, b in pairs))
        lines = [f"mean +- sd over {n} seed(s); p: Wilcoxon over species x seeds", head, "-" * len(head)]
        for row in self.table():
            cells = "".join(f" {_pm(*row['sets'][s]):>16}" for s in self.compared)
            diffs = "".join(f" {_dp(*row['pairs'][f'{a}-{b}']):>17}" for a, b in pairs)
            lines.append(f"{row['task']:<12} {row['metric']:<26}{cells}{diffs}")
        return "\n".join(lines)


def _pm(mean: float, sd: float) -> str:
    if mean is None or not math.isfinite(mean):
        return "—"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None and math.isfinite(sd) else f"{mean:.3f}"


def _dp(diff: float, p: float) -> str:
    if diff is None or not math.isfinite(diff):
        return "—"
    return f"{diff:+.3f} ({p:.2g})" if p is not None and math.isfinite(p) else f"{diff:+.3f} (—)"


def _mean(values) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return float(v.mean()) if v.size else float("nan")


def summarise_seeds(per_seed: dict[int, dict[str, dict[str, float]]], metric: str, compared=COMPARED) -> dict:
    """Scores per seed -> feature set -> species, to {"feature_sets": {set: {mean, sd, per_seed}}, "paired": [...]}.

    A set's value for one seed is its mean over species; ``mean`` and ``sd`` (ddof 1, nan for one seed) are over
    seeds, for each set of ``compared``. Paired comparisons (``PAIRS`` among ``compared``) pair the same species
    under the same seed: a two-sided Wilcoxon signed-rank test over species x seeds
    (``botaclip.sdm.paired_comparison``).
    """
    from botaclip.sdm import paired_comparison

    seeds = sorted(per_seed)
    sets: dict[str, dict] = {}
    for name in compared:
        values = [_mean(per_seed[s].get(name, {}).values()) for s in seeds]
        finite = [v for v in values if math.isfinite(v)]
        sets[name] = {"mean": _mean(values), "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan"),
                      "per_seed": values}
    paired = []
    for a, b in compared_pairs(compared):
        keys = [(s, sp) for s in seeds for sp in per_seed[s].get(a, {}) if sp in per_seed[s].get(b, {})]
        res = paired_comparison([per_seed[s][a][sp] for s, sp in keys], [per_seed[s][b][sp] for s, sp in keys],
                                metric)
        paired.append({"a": a, "b": b, **res})
    return {"feature_sets": sets, "paired": paired}


def _plant_subset(releves_csv: Path, n: int) -> list[str]:
    """Up to `n` plant species of intermediate prevalence (10-50 % of plots): informative for a TSS comparison
    and cheap enough for the demo. Deterministic: ordered by prevalence, then name."""
    import pandas as pd

    table = pd.read_csv(releves_csv, usecols=["releve_id", "species"])
    prevalence = table.groupby("species")["releve_id"].nunique() / table["releve_id"].nunique()
    mid = prevalence[(prevalence >= 0.10) & (prevalence <= 0.50)]
    order = sorted(mid.index, key=lambda s: (abs(mid[s] - 0.25), s))
    return sorted(order[:n])


def truth_correlations(result, truth, group: str, labels_of: dict[str, str]
                       ) -> tuple[dict[str, dict[str, float]], dict | None]:
    """Spearman rho between each species' out-of-fold predicted suitability and its true suitability, per feature
    set (keyed by label: ``labels_of`` maps store feature sets to labels), over the species' sample cells (relevé
    plots, presence and background cells, soil sites; a cell's samples averaged).

    The predictions are the spatial-block CV's out-of-fold ones (``ComparisonResult.predictions``): no cell is
    predicted by a model fitted on its own fold, nor, where the adapters were cross-fitted, with features of an
    adapter that saw its fold's relevés. Also returns the first species' maps (cells, truth, predictions).
    """
    import pandas as pd

    from botaclip.sdm import spearman

    truth = truth[truth["group"] == group]
    out: dict[str, dict[str, float]] = {label: {} for label in labels_of.values()}
    example = None
    for (sp, features, _model), (h3, oof) in sorted(result.predictions.items()):
        t = truth[truth["taxon"] == sp].set_index("h3")["suitability"]
        per_cell = pd.Series(np.asarray(oof, dtype=float), index=np.asarray(h3, dtype=np.uint64)).groupby(level=0).mean()
        per_cell = per_cell[np.isfinite(per_cell.to_numpy()) & per_cell.index.isin(t.index)]
        label = labels_of[features]
        rho = spearman(t.loc[per_cell.index].to_numpy(), per_cell.to_numpy()) if len(per_cell) > 2 else float("nan")
        out[label][sp] = float(rho)
        if example is None:
            cells = per_cell.index.to_numpy(np.uint64)
            example = {"species": sp, "h3": cells, "truth": t.loc[cells].to_numpy(), "pred": {}, "rho": {}}
        if example["species"] == sp:
            pred = per_cell.reindex(example["h3"]).to_numpy()
            example["pred"][SET_LABELS.get(label, label)] = pred
            example["rho"][SET_LABELS.get(label, label)] = out[label][sp]
    return out, example


@dataclass(frozen=True)
class SdmPlan:
    """Which SDMs :func:`score_tasks` fits: the model, the number of CV folds, how many plant species (0: all) and
    which tasks."""

    model: str = "logistic"
    folds: int = 5
    plant_species: int = 15
    tasks: tuple[str, ...] = tuple(TASKS)
    jobs: int | None = None  # worker processes of each comparison (None: one per core)


def score_tasks(store, sample, names: dict[str, str], seed: int, plan: SdmPlan, out: Path | None,
                echo: Callable[[str], None], occurrences: dict | None = None) -> tuple[dict[str, dict], dict | None]:
    """The SDM comparison of one seed: for each task, per-species CV scores (headline metric) and out-of-fold
    rho with the true suitability, keyed by ``names`` (label -> store feature set).

    Returns ({task: {"metric": {label: {species: v}}, "truth": {...}, "kind", "skipped", "cross_fitted"}},
    the plant example for the maps)."""
    import pandas as pd

    from botaclip.sdm import compare, read_occurrences

    truth = pd.read_parquet(sample.truth)
    labels_of = {v: k for k, v in names.items()}
    result_tasks: dict[str, dict] = {}
    plant_example = None
    for task in plan.tasks:
        attr, kind, metric, group = TASKS[task]
        path = getattr(sample, attr)
        occ = (occurrences or {}).get(task) or read_occurrences(path)
        species = _plant_subset(path, plan.plant_species) if task == "plants" else None
        echo(f"  {task} (seed {seed}): {kind}, {METRIC_LABELS[metric]}")
        # Only TSS needs a threshold chosen out of sample (inner CV: 3 more fits per fold); where the headline is
        # threshold-free (Boyce, Spearman) a fixed 0.5 saves that time (the written reports say which rule).
        result = compare(store, occ, list(names.values()), species=species, kind=kind, models=[plan.model], folds=plan.folds,
                         threshold="maxtss" if metric == "tss" else 0.5, seed=seed, jobs=plan.jobs,
                         out=None if out is None else out / f"sdm_{task}_s{seed}")
        scores: dict[str, dict[str, float]] = {label: {} for label in names}
        for row in result.rows:
            if row.metric == metric:
                scores[labels_of[row.features]][row.species] = row.mean
        rho, example = truth_correlations(result, truth, group, labels_of)
        if task == "plants":
            plant_example = example
        result_tasks[task] = {
            "kind": kind, "metric": scores, "truth": rho,
            "skipped": result.skipped_species,
            "cross_fitted": sorted({labels_of.get(n, n) for s in result.species for n in s.cross_fitted}),
            "folds": sorted({s.folds for s in result.species}),
        }
    return result_tasks, plant_example


def _check_options(options: DemoOptions) -> Path:
    """Refuse bad options now rather than after the sample region is built; returns the output folder."""
    from botaclip.imagery.chips import MAX_SIZE_PX

    if options.seeds < 1:
        raise InvalidInputError(f"{param('seeds')} must be at least 1, got {options.seeds}")
    if options.folds < 2:
        raise InvalidInputError(f"{param('folds')} must be at least 2, got {options.folds}")
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{param('out')} {out} is a file; give a folder for the demo's outputs")
    if options.seed < 0 or not 1 <= options.size_px <= MAX_SIZE_PX:
        raise InvalidInputError(f"{param('seed')} must be 0 or more and {param('size_px')} between 1 and {MAX_SIZE_PX}; got "
                                f"{options.seed} and {options.size_px}")
    return out


def _sample_region(options: DemoOptions, sample_dir: Path):
    """The demo's sample region: reused when a rerun finds one built with the same parameters."""
    from botaclip.sample import SampleRegion, make_sample

    wanted = (options.seed, float(options.size_km), options.plots)
    try:
        sample = SampleRegion.open(sample_dir)
        meta = sample.metadata()
        reuse = (meta.get("seed"), float(meta.get("size_km", -1)), meta.get("plots")) == wanted
    except BotaclipError:
        reuse = False
    if not reuse:
        sample = make_sample(sample_dir, seed=options.seed, size_km=options.size_km, plots=options.plots,
                             overwrite=sample_dir.exists())
    return sample


def _training_summary(objective: str, report) -> dict:
    return {
        "objective": objective, "releves_used": report.n_releves, "train": report.n_train,
        "val": report.n_val, "vocabulary": report.vocabulary_size, "best_epoch": report.best_epoch,
        "untrained": report.baseline, "trained": report.best, "seconds_cache": round(report.seconds_cache, 2),
        "seconds_full": round(report.seconds_train, 2), "seconds_folds": round(report.seconds_folds, 2),
        "folds": [{k: f[k] for k in ("fold", "n_train", "n_val", "n_held_out", "best", "seconds")}
                  for f in report.folds],
    }


def _train_adapters(options: DemoOptions, sample, out: Path, common: dict, echo: Callable[[str], None]) -> dict:
    """Train BotaSP and BotaCLIP for each seed and index the region with each adapter; returns their summaries."""
    from botaclip.pipeline.index import run_index
    from botaclip.pipeline.train import TrainOptions, train_botaclip

    store_dir = out / "store"
    training: dict[str, dict] = {}
    quiet = _indented(echo, skip=("epoch ", "embedding chips", "warning: "))
    block_res = options.block_res if options.block_res is not None else releve_block_res(sample.releves, options.folds)
    (out / "adapters").mkdir(exist_ok=True)
    for seed in range(options.seed, options.seed + options.seeds):
        for objective, base in OBJECTIVE_SETS.items():
            adapter_path = out / "adapters" / f"{base}_s{seed}.pt"
            echo(f"  {SET_LABELS[base]}, seed {seed}")
            report = train_botaclip(TrainOptions(
                releves=str(sample.releves), imagery=[str(sample.ortho)], out=str(adapter_path),
                backbone=options.backbone, weights=options.weights, backbone_seed=options.seed, objective=objective,
                folds=options.folds, block_res=block_res, epochs=options.epochs, batch_size=options.batch_size, views=options.views,
                seed=seed, device=options.device, chip_m=options.chip_m, size_px=options.size_px, bands="rgbn",
                cache_dir=str(out / "cache"), center_store=str(store_dir), center_set=BACKBONE_SET,
            ), echo=quiet)
            # The adapter was just (re)trained, so sets left by an earlier run are replaced, never mixed.
            run_index(str(sample.region_geojson), [str(sample.ortho)], store_dir, name=seed_set(base, seed),
                      adapter=str(adapter_path), overwrite=True, **{**common, "echo": quiet})
            training[f"{base}_s{seed}"] = _training_summary(objective, report)
    return training


def add_baselines(store_dir: Path, sample, echo: Callable[[str], None]) -> list[str]:
    """The sets compared that need no training, on the backbone set's cells: GeoCLIP location embeddings (left out,
    with a note, where the botaclip[geoclip] extra is missing) and the elevation (the DEM's mean per cell).
    Rebuilt on every run (seconds), so a rerun never mixes cells. Returns the feature sets compared."""
    from botaclip.errors import MissingDependencyError
    from botaclip.pipeline.location import add_location
    from botaclip.store import Store
    from botaclip.store.io import add_raster

    store = Store.open(store_dir)
    compared = list(COMPARED)
    try:
        summary = add_location(store, LOCATION_SET, like=BACKBONE_SET, overwrite=True)
        echo(f"  {SET_LABELS[LOCATION_SET]}: {summary.written} cells, {summary.cells_per_s:,.0f} cells/s")
    except MissingDependencyError as exc:
        echo(f"  note: no {SET_LABELS[LOCATION_SET]} column: {exc}")
        compared.remove(LOCATION_SET)
    terrain = add_raster(store, COVARIATE_SET, [str(sample.dem)], like=BACKBONE_SET, overwrite=True)
    echo(f"  {SET_LABELS[COVARIATE_SET]} (covariates from {sample.dem.name}): {terrain['cells']} cells")
    return compared


def _score_seeds(store, sample, options: DemoOptions, out: Path, echo: Callable[[str], None],
                 compared=COMPARED):
    """SDM scores of every training seed for the sets ``compared``, aggregated; and the plant example for the
    maps."""
    from botaclip.sdm import read_occurrences

    occurrences = {task: read_occurrences(getattr(sample, TASKS[task][0])) for task in TASKS}
    plan = SdmPlan(model=options.model, folds=options.folds, plant_species=options.plant_species,
                   jobs=options.sdm_jobs)
    per_seed: dict[int, dict] = {}
    plant_example = None
    for seed in range(options.seed, options.seed + options.seeds):
        names = {base: seed_set(base, seed) for base in compared}
        per_seed[seed], example = score_tasks(store, sample, names, seed, plan, out / "sdm", echo,
                                              occurrences=occurrences)
        plant_example = plant_example or example
    return _aggregate(per_seed, compared), plant_example


def run_demo(options: DemoOptions, echo: Callable[[str], None] = print) -> DemoReport:
    """Run the whole pipeline on the sample region into `options.out`; returns the report (also written)."""
    from botaclip.pipeline.demo_maps import interactive_map
    from botaclip.pipeline.index import run_index
    from botaclip.store import Store

    out = _check_options(options)
    make_output_dir(out, what=param("out"))
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    seeds = list(range(options.seed, options.seed + options.seeds))

    def step(name: str, message: str):
        echo(f"[{time.perf_counter() - started:6.1f}s] {message}")
        seconds[name] = time.perf_counter()

    def done(name: str) -> None:
        seconds[name] = round(time.perf_counter() - seconds[name], 2)

    step("sample", f"1/6 sample region ({options.size_km:g} km, {options.plots} relevés, seed {options.seed})")
    sample = _sample_region(options, out / "sample")
    done("sample")

    store_dir = out / "store"
    step("index", f"2/6 index the region with {options.backbone} "
                  f"({'weights ' + options.weights if options.weights else 'RANDOM INIT: no --weights given'})")
    common = dict(backbone=options.backbone, weights=options.weights, chip_m=options.chip_m, size_px=options.size_px,
                  bands="rgbn", device=options.device, workers=options.workers, seed=options.seed, echo=echo)
    index_summary = run_index(str(sample.region_geojson), [str(sample.ortho)], store_dir, name=BACKBONE_SET, **common)
    done("index")
    step("baselines", "2/6 baselines without training on the same cells: GeoCLIP location embeddings, elevation")
    compared = add_baselines(store_dir, sample, echo)
    done("baselines")

    step("train", f"3/6 train BotaSP and BotaCLIP, each cross-fitted on {options.folds} folds of relevé blocks, "
                  f"for seed(s) {', '.join(map(str, seeds))}; derive their feature sets from the stored backbone set")
    training = _train_adapters(options, sample, out, common, echo)
    done("train")

    step("sdm", f"4/6 species distribution models: {', '.join(SET_LABELS[s] for s in compared)} on identical "
                f"spatial folds, {len(seeds)} seed(s)")
    store = Store.open(store_dir, read_only=True)
    tasks, plant_example = _score_seeds(store, sample, options, out, echo, compared)
    done("sdm")

    step("report", "5/6 embedding diagnostics (centred cosine; seed "
                   f"{seeds[0]}'s feature sets) and maps")
    diagnostics, diagnostics_md = _diagnostics(store, sample, seeds[0], out / "diagnostics", echo, compared)
    maps = _write_maps(sample, plant_example, out / "maps")
    maps.append(interactive_map(store, [seed_set(base, seeds[0]) for base in compared], plant_example,
                                out / "maps" / "map.html"))
    done("report")
    seconds["total"] = round(time.perf_counter() - started, 2)

    report = DemoReport(
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        backbone={"name": options.backbone, "weights": options.weights or "random-init",
                  "random_init": options.weights is None, "size_px": options.size_px, "chip_m": options.chip_m,
                  "cells_indexed": index_summary.written + index_summary.skipped_present},
        training=training, tasks=tasks, diagnostics=diagnostics, seconds=seconds,
        files=[str(p.relative_to(out)) for p in maps], compared=compared,
    )
    echo("6/6 report")
    _write_reports(report, out, diagnostics_md)
    echo(report.format_table())
    echo(f"report: {out / 'report.md'} (and report.json, maps/*.png, maps/map.html); {seconds['total']:.0f} s in all")
    return report


def releve_block_res(releves_path: Path, folds: int, min_per_fold: int = 4) -> int:
    """The coarsest H3 resolution at which the relevés fall in at least ``min_per_fold`` blocks per fold."""
    from botaclip.pipeline.releves import read_releves
    from botaclip.pipeline.spatial_split import block_ids

    plots = read_releves(releves_path).plots
    for res in range(0, 16):
        if np.unique(block_ids(plots["lat"].to_numpy(), plots["lng"].to_numpy(), res)).size >= min_per_fold * folds:
            return res
    return 15


def _indented(echo: Callable[[str], None], skip: tuple[str, ...]) -> Callable[[str], None]:
    """Echo lines indented, leaving out the chatty ones (per-epoch lines, caching progress, repeated warnings)."""
    def say(line: str) -> None:
        if not line.startswith(skip):
            echo("    " + line)

    return say


def _aggregate(per_seed: dict[int, dict], compared=COMPARED) -> dict:
    """Per task: mean +- sd over seeds and paired tests for the headline metric and the truth correlation."""
    tasks: dict[str, dict] = {}
    first = per_seed[min(per_seed)]
    for task, entry in first.items():
        metric = TASKS[task][2]
        scores = {}
        for key, score_metric in ((metric, metric), ("truth", "spearman")):
            field_ = "metric" if key == metric else "truth"
            seeds_scores = {s: per_seed[s][task][field_] for s in per_seed}
            scores[key] = {**summarise_seeds(seeds_scores, score_metric, compared),
                           "per_species": {str(s): v for s, v in seeds_scores.items()}}
        tasks[task] = {
            "metric": metric, "kind": entry["kind"],
            "n_species": len(next(iter(entry["metric"].values()))),
            "skipped_species": entry["skipped"], "cross_fitted": entry["cross_fitted"], "folds": entry["folds"],
            "scores": scores,
        }
    return tasks


def _write_maps(sample, plant_example: dict | None, maps_dir: Path) -> list[Path]:
    from botaclip.pipeline.demo_maps import habitat_map, imagery_thumbnail, prediction_vs_truth

    maps_dir.mkdir(parents=True, exist_ok=True)
    written = [imagery_thumbnail(sample.ortho, maps_dir / "imagery.png"),
               habitat_map(sample.habitat, sample.habitat_table, maps_dir / "habitats.png")]
    if plant_example is not None:
        written.append(prediction_vs_truth(plant_example, maps_dir / "plant_prediction_vs_truth.png"))
    return written


def _diagnostics(store, sample, seed: int, out_dir: Path, echo, compared=COMPARED) -> tuple[dict, str]:
    """Embedding diagnostics of the embedding sets compared, with the sample's habitats as labels: (report.json
    entry, report.md section)."""
    from botaclip.diagnostics import diagnose

    sets = [seed_set(base, seed) for base in compared if base != COVARIATE_SET]
    report = diagnose(store, sets, labels=sample.cells, label_col="habitat", out_dir=out_dir, centered=True)
    echo(report.to_table())
    return report.to_dict(), report.to_markdown(heading_level=2, relative_to=out_dir.parent)


def _markdown_table(report: DemoReport) -> list[str]:
    """The comparison as a Markdown table: mean ± sd per set, then the paired differences with their p."""
    pairs = compared_pairs(report.compared)
    lines = ["| task | metric | " + " | ".join(SET_LABELS[s] for s in report.compared) + " | "
             + " | ".join(f"{SET_LABELS[a]} - {SET_LABELS[b]} (p)" for a, b in pairs) + " |",
             "|---|---|" + "---:|" * (len(report.compared) + len(pairs))]
    for row in report.table():
        lines.append(f"| {row['task']} | {row['metric']} | "
                     + " | ".join(_pm(*row["sets"][s]) for s in report.compared) + " | "
                     + " | ".join(_dp(*row["pairs"][f"{a}-{b}"]) for a, b in pairs) + " |")
    return lines


def _write_reports(report: DemoReport, out: Path, diagnostics_md: str) -> None:
    data = report.to_dict()
    (out / "report.json").write_text(json.dumps(data, indent=2))
    seeds = report.options["seeds"]
    lines = [
        "# botaclip demo: " + " vs ".join(SET_LABELS[s] for s in report.compared) + " on the sample region",
        "",
        f"Backbone: {report.backbone['name']}, "
        + ("**random initialisation** (no `--weights` given: the numbers show the pipeline, not the published "
           "model's quality)" if report.backbone["random_init"] else f"weights `{report.backbone['weights']}`")
        + f"; chips {report.backbone['chip_m']:g} m at {report.backbone['size_px']} px; {seeds} training seed(s); "
        f"SDM: {report.options['model']}, {report.options['folds']} spatial-block folds. "
        f"{SET_LABELS[LOCATION_SET]}: GeoCLIP's pretrained location encoder on each cell centre (no imagery); "
        f"{SET_LABELS[COVARIATE_SET]}: the DEM's mean per cell (covariates).",
        "",
        *_markdown_table(report),
        "",
        f"Each cell: mean over {seeds} seed(s) (each seed trains both adapters and draws the folds again) of the mean "
        "over species of the spatial-block cross-validated score; ± the standard deviation over seeds. "
        "Differences: mean over species x seeds; p: two-sided Wilcoxon signed-rank test over species x seeds. "
        "'rho with true suitability' correlates each species' out-of-fold predictions with the simulated truth "
        "over its sample cells.",
        "",
        "No leakage: the adapters are cross-fitted on spatial blocks of the relevés. Wherever a species' cells hold "
        "training relevés, the SDM folds are the adapters' folds and fold k is scored with the features of the "
        "adapters that never saw fold k; the truth correlations use those same out-of-fold predictions.",
        "",
        "## Per task",
    ]
    for task, entry in report.tasks.items():
        metric = entry["metric"]
        lines += ["", f"### {task} ({entry['kind']}, {METRIC_LABELS[metric]}, {entry['n_species']} species)", ""]
        if entry["cross_fitted"]:
            lines.append(f"- cross-fitted features used for: {', '.join(entry['cross_fitted'])} "
                         "(the species' cells overlap the training relevés)")
        lines += [f"- folds: {f}" for f in entry["folds"]]
        for p in entry["scores"][metric]["paired"]:
            pv = p.get("p_value")
            lines.append(f"- {SET_LABELS[p['a']]} vs {SET_LABELS[p['b']]}: {p['wins_a']} wins, {p['wins_b']} "
                         f"losses, {p['ties']} ties over {p['n_species']} species x seeds"
                         + (f"; Wilcoxon p = {pv:.3g}" if pv is not None else ""))
        if entry["skipped_species"]:
            lines.append(f"- skipped: {', '.join(f'{k} ({v})' for k, v in entry['skipped_species'].items())}")
    lines += ["", "## Training", ""]
    for name, t in report.training.items():
        headline = ("recall@5", "recall@5") if t["objective"] == "contrastive" else ("species AUC", "species_auc")
        lines.append(f"- {name}: {t['releves_used']} relevés ({t['train']} train / {t['val']} validation), "
                     f"{len(t['folds'])} fold adapters; validation {headline[0]} {t['untrained'].get(headline[1], float('nan')):.3f} "
                     f"untrained, {t['trained'].get(headline[1], float('nan')):.3f} trained; "
                     f"{t['seconds_folds']:.1f} s for the fold adapters, {t['seconds_full']:.1f} s for the full one")
    lines += ["", diagnostics_md.rstrip()]
    lines += ["", "## Maps", ""] + [f"![{Path(f).stem}]({f})" for f in report.files]
    lines += ["", "## Time", ""] + [f"- {k}: {v:.1f} s" for k, v in report.seconds.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
