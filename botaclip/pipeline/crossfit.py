"""Indexing with a cross-fitted adapter (``botaclip train --folds K``): the full adapted set and K companion sets,
all derived from one stored backbone set, and the cross-fit recorded in the store's catalog.

    run_index(region, imagery, store, adapter="cf.pt", name="botaclip")   # dispatches here for a cross-fitted file

1. the backbone set of the region is indexed first (resumable: nothing to do when it is there), under the name of
   an existing set made with the same backbone and chips, else the default name;
2. every set is then *derived* from it, partition by partition: ``NAME`` with the full adapter (all relevés) and
   ``NAME_fold<k>`` with fold adapter k (which never saw the relevés of the blocks in fold k); derivation is
   exact (the adapter is a function of the stored unit embedding), cheap, and resumable like any index run;
3. ``Store.record_cross_fit`` keeps the fold sets, the block -> fold map and the training relevés' cells, so SDMs
   can evaluate fold k with ``NAME_fold<k>`` (``Store.cross_fit(NAME)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from botaclip.errors import BotaclipError, InvalidInputError, param

FOLD_SUFFIX = "_fold"


def fold_set_names(name: str, k: int) -> list[str]:
    """The companion sets of adapted set ``name``: ``name_fold0`` .. ``name_fold<k-1>`` (valid identifiers)."""
    from botaclip.store.schema import check_identifier

    names = [f"{name}{FOLD_SUFFIX}{i}" for i in range(k)]
    for n in names:
        try:
            check_identifier(n)
        except BotaclipError:
            raise InvalidInputError(f"{param('name')} {name!r} is too long for its fold sets (e.g. {n!r}, at most 63 "
                                    "characters); choose a shorter name") from None
    return names


def matching_backbone_sets(store, backbone: dict) -> list[str]:
    """Backbone sets of ``store`` made with the backbone an adapter was trained on (``AdapterBundle.backbone``:
    model, weights, wavelengths, chip size in metres and pixels, dimension)."""
    from botaclip.pipeline.provenance import identity

    keys = ("model", "weights_sha256", "wavelengths", "chip_m", "size_px")
    wanted = identity({"model": backbone["name"], "weights_sha256": backbone["sha256"],
                       "wavelengths": backbone["wavelengths"], "chip_m": backbone["chip_m"],
                       "size_px": backbone["size_px"]}, keys)
    out = []
    for name in store.feature_sets():
        spec = store.spec(name)
        if spec.kind == "backbone" and spec.dim == int(backbone["dim"]) and identity(spec.provenance, keys) == wanted:
            out.append(name)
    return out


def releve_cells(bundle, resolution: int) -> np.ndarray:
    """Sorted unique uint64 cells, at ``resolution``, of the relevés that trained a cross-fitted adapter."""
    from botaclip.store import h3vec

    cf = bundle.cross_fit
    cells, ok = h3vec.latlng_to_cell(cf.releve_lat, cf.releve_lng, int(resolution))
    return np.unique(cells[ok])


def index_cross_fitted(bundle, region, imagery, store_path, config, say: Callable[[str], None]):
    """Index ``region`` with the cross-fitted adapter ``bundle`` (loaded from ``config.model.adapter``; ``config``
    an :class:`~botaclip.pipeline.index_config.IndexConfig`); see the module docstring. The backbone set is
    indexed with the same config, without the adapter. Returns the :class:`IndexSummary` of the full set, with
    one note per companion set."""
    from botaclip.atomic import sha256_file
    from botaclip.config import with_options
    from botaclip.pipeline.index import default_name, run_index
    from botaclip.pipeline.index_steps import IndexSummary
    from botaclip.store import Store

    started = time.perf_counter()
    cf = bundle.cross_fit
    model, chips = config.model, config.chips
    adapter_path = str(model.adapter)
    backbone_name = model.backbone.strip().lower()
    # Refuse a mismatched backbone before indexing anything with it.
    bundle.check_backbone(backbone_name, sha256_file(model.weights) if model.weights else None, seed=model.seed)
    if int(bundle.backbone["size_px"]) != chips.size_px or float(bundle.backbone["chip_m"]) != chips.chip_m:
        raise InvalidInputError(
            f"adapter {adapter_path} was trained on {bundle.backbone['chip_m']:g} m chips at "
            f"{bundle.backbone['size_px']} px, not {chips.chip_m:g} m at {chips.size_px} px; use the same "
            f"{param('chip_m')}/{param('size_px')}")
    bands = chips.bands or bundle.backbone.get("bands")
    name = config.output.name or default_name(backbone_name, str(bands), adapted=True)
    fold_names = fold_set_names(name, cf.k)

    existing = Store.open(store_path, read_only=True) if (Path(store_path) / "catalog.duckdb").is_file() else None
    found = matching_backbone_sets(existing, bundle.backbone) if existing is not None else []
    source = found[0] if found else default_name(backbone_name, str(bands), adapted=False)
    say(f"cross-fitted adapter ({cf.k} folds): backbone set {source!r} first, then {name!r} and "
        f"{fold_names[0]!r}..{fold_names[-1]!r} derived from it")
    backbone_config = with_options(config, adapter=None, name=source, overwrite=False)
    backbone_summary = run_index(region, imagery, store_path, backbone_config, echo=say)
    st = Store.open(store_path)
    if source not in matching_backbone_sets(st, bundle.backbone):
        raise InvalidInputError(f"backbone set {source!r} in {store_path} was not made with the adapter's backbone "
                                f"{bundle.backbone['name']} ({bundle.sha256}); choose another {param('name')}")
    cells = st.existing_cells(source)
    adapter_sha = sha256_file(adapter_path)
    base = dict(st.info(source)["provenance"])
    for key in ("created", "code_version"):
        base.pop(key, None)
    targets = [(name, bundle, {"role": "full", "folds": cf.k, "fold_sets": fold_names})]
    targets += [(fold_names[k], cf.adapters[k], {"role": "fold", "fold": k, "of": name}) for k in range(cf.k)]
    summary = IndexSummary(feature_set=name, kind="botaclip", store=str(store_path), notes=list(backbone_summary.notes))
    for target, adapter, role in targets:
        provenance = {**base, "kind": "botaclip", "adapter_sha256": adapter_sha, "adapter": adapter.provenance(),
                      "derived_from": source, "cross_fit": role}
        written = derive_set(st, source, target, adapter, provenance, cells, config.output.overwrite)
        if target == name:
            summary.written = summary.derived = written
        else:
            summary.notes.append(f"{target}: {written} cells derived (fold {role['fold']} adapter)")
    st.record_cross_fit(name, fold_names, cf.block_res, cf.blocks, cf.folds, releve_cells(bundle, st.resolution),
                        adapter_sha256=adapter_sha)
    summary.planned = backbone_summary.planned
    summary.skipped_nodata, summary.skipped_outside = backbone_summary.skipped_nodata, backbone_summary.skipped_outside
    summary.partitions = len({int(p) for p in st.partition_of(cells)}) if cells.size else 0
    summary.notes.append(f"cross-fit recorded: {cf.k} fold sets, {len(cf.blocks)} blocks at res {cf.block_res}")
    summary.seconds = time.perf_counter() - started
    return summary


def derive_set(store, source: str, target: str, bundle, provenance: dict, cells: np.ndarray,
               overwrite: bool = False) -> int:
    """Write adapted set ``target`` = ``bundle.transform`` of backbone set ``source`` on ``cells`` (sorted uint64),
    one partition at a time, as the index job derives; cells ``target`` already holds are kept (unless
    ``overwrite``). Returns the rows written."""
    from tqdm import tqdm

    from botaclip.pipeline.index import JobWriter
    from botaclip.pipeline.index_steps import IndexSummary, IndexTarget, cells_to_do, derive_partition

    summary = IndexSummary(feature_set=target, kind="botaclip", store=str(store.path))
    bar = tqdm(disable=True)
    parents = store.partition_of(cells)
    writer = JobWriter(store, IndexTarget(target, "botaclip", bundle.embed_dim, provenance, store.resolution,
                                          store.partition_resolution), overwrite)
    failed = True
    try:
        for parent in np.unique(parents):
            todo = cells_to_do(store, target, int(parent), cells[parents == parent], summary, bar, [None],
                               writer.check_present)
            if todo.size:
                derive_partition(store, source, bundle, writer, int(parent), todo, summary, bar)
            writer.finish(int(parent))
        failed = False
    finally:
        writer.close(failed=failed)
    return summary.written
