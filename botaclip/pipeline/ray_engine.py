"""The index job on a Ray cluster: partitions are embedded by long-lived Ray actors, committed by the driver.

    run_index("sample", ["sample/ortho.tif"], "store", backbone="dofa-small", engine="ray", ray_address="auto")

How it runs (docs/scale.md):
- The unit of work is a coarse H3 partition of the store (``store.partition_of``), the same unit as ``--shard``.
  The driver (the process that calls :func:`botaclip.pipeline.run_index`) validates the input, opens the store's
  writer (it holds the store's writer lock for the whole job), plans the cells of each partition still to do and
  hands ``(parent, cells)`` to :class:`IndexWorker` actors, each holding one loaded model (one per GPU, or CPU
  workers). At most two partitions are queued per actor, so an actor never waits for the driver.
- A worker writes the partition's Parquet file with the store's own writer into a private scratch store, in a
  directory the driver's writer hands out (``FeatureSetWriter.scratch_dir``), and returns its relative path; the
  driver commits it with ``FeatureSetWriter.commit_file`` (one atomic rename, recorded in the catalog). Only the
  driver commits, and it accepts one result per partition, so no partition is committed twice.
- A worker or node that dies mid-partition leaves at most an uncommitted scratch file (removed at the end, and by
  the next writer of the store); its partitions are queued again and run on another worker, and a new actor
  replaces it. A driver that dies leaves committed partitions only: the same command resumes.
- The store directory must be on storage every node sees at the same path. At start, each worker writes a probe
  file that the driver must see, and reads one that the driver wrote; otherwise the job stops with a clear error.
  ``BOTACLIP_RAY_STORE_PATH`` (in a worker's environment) is the store's path on that node when it is mounted
  elsewhere than on the driver.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from botaclip.errors import BotaclipError, InvalidInputError, param
from botaclip.pipeline.index_config import IndexConfig
from botaclip.pipeline.index_steps import (
    EmbedTally,
    IndexSummary,
    IndexTarget,
    PartitionPlan,
    check_replacement_written,
    embed_partitions,
    format_worker_stats,
    partitions_to_do,
)
from botaclip.ray_cluster import import_ray, ray_init

STORE_PATH_ENV = "BOTACLIP_RAY_STORE_PATH"
QUEUED_PER_WORKER = 2  # partitions submitted to one actor at a time: one running, one waiting
STATS_EVERY_S = 30.0  # per-worker progress lines
MAX_ATTEMPTS = 3  # a partition whose worker died this many times stops the job


@dataclass
class RayIndexJob:
    """What a worker needs to embed partitions exactly as the local engine would: the job's config (its paths
    made absolute), the imagery (absolute paths), the resolved bands and the feature set to write."""

    config: IndexConfig
    imagery: list[str]
    bands: object  # botaclip.imagery.bands.BandSpec
    target: IndexTarget

    @property
    def merge_existing(self) -> bool:
        """False for overwrite: a replacement does not keep the old set's rows."""
        return not self.config.output.overwrite


# -- the worker (runs in a Ray actor process) ---------------------------------------------------------------------


def worker_store_root(driver_path: str) -> Path:
    """The store's directory as this node sees it: ``$BOTACLIP_RAY_STORE_PATH`` if set, else the driver's path."""
    return Path(os.environ.get(STORE_PATH_ENV) or driver_path)


class IndexWorker:
    """Holds one reader and one loaded model; embeds whole partitions into a scratch store in the store directory.

    Used as a Ray actor (``ray.remote(IndexWorker)``); plain Python otherwise, so it is testable without Ray.
    """

    def __init__(self, job: RayIndexJob, store_path: str, scratch: str, worker: int, threads: int) -> None:
        import torch

        from botaclip.imagery import ChipReader
        from botaclip.model.embedder import Embedder
        from botaclip.pipeline.train import make_backbone

        torch.set_num_threads(max(1, int(threads)))
        self.job, self.worker = job, worker
        self.root = worker_store_root(store_path)
        chips, m, runtime = job.config.chips, job.config.model, job.config.runtime
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the driver already reported them (random weights, ...)
            self.reader = ChipReader(job.imagery, job.bands, chip_m=chips.chip_m, size_px=chips.size_px,
                                     resampling=chips.resampling, normalization=chips.normalize)
            model = make_backbone(m.backbone, m.weights, m.seed, chips.size_px)
            self.bundle = None
            if m.adapter is not None:
                from botaclip.model.adapter import load_adapter

                self.bundle = load_adapter(m.adapter)
            self.embedder = Embedder(model, list(self.reader.wavelengths), device=runtime.device,
                                     batch_size=runtime.batch_size, normalize=True)
        # Created at the first partition, once the driver has checked that this node shares the store.
        self._scratch = self.root / scratch / f"w{worker}-{os.getpid()}-{secrets.token_hex(3)}"
        self._writer = None
        self._live = None  # the store itself, opened read-only when a partition's stored rows are merged

    def describe(self) -> dict:
        """Where this worker runs: node address, pid, GPU ids (as Ray assigned them), torch device."""
        try:
            import ray

            gpus = [str(g) for g in ray.get_gpu_ids()]
            node, node_id = ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - outside Ray
            gpus, node, node_id = [], socket.gethostname(), None
        return {"worker": self.worker, "node": node, "node_id": node_id, "pid": os.getpid(), "gpus": gpus,
                "device": str(self.embedder.device)}

    def probe(self, driver_probe: str, token: str) -> dict:
        """Check that this node shares the store directory with the driver: read the driver's probe file (path
        relative to the store) and write our own (returned relative path)."""
        seen = self.root / driver_probe
        try:
            read_back = seen.read_text()
        except OSError:
            read_back = None
        # Next to the driver's probe, in the job's scratch directory; nothing is created where it is missing.
        mine = Path(driver_probe).parent / f"probe-w{self.worker}-{os.getpid()}"
        try:
            (self.root / mine).write_text(token)
            wrote = None
        except OSError as exc:
            wrote = f"{exc.strerror or exc}"
        return {**self.describe(), "root": str(self.root), "saw_driver_probe": read_back == token,
                "probe": str(mine), "write_error": wrote}

    def run_partition(self, parent: int, cells: np.ndarray) -> dict:
        """Embed ``cells`` (uint64, all in partition ``parent``) and write the partition's complete file into
        this worker's scratch store, merged with the rows the store already holds for that partition.

        Returns the file's path relative to the store directory and the counts (written, nodata, outside)."""
        t0 = time.perf_counter()
        w = self._scratch_writer()
        self._keep_stored_rows(w, parent)
        tally, written = EmbedTally(), 0
        partitions = [(int(parent), np.asarray(cells, dtype=np.uint64))]
        with closing(embed_partitions(self.reader, self.embedder, partitions, self.job.config, self.bundle,
                                      tally)) as batches:
            for batch, emb in batches:
                if len(batch.h3):
                    w.write(h3=batch.h3, embedding=emb, valid_fraction=batch.valid_fraction)
                    written += len(batch.h3)
        w.finish_partition(int(parent))
        staged = w.partition_path(parent)
        return {"parent": int(parent), "written": written, "nodata": tally.nodata, "outside": tally.outside,
                "embedded": tally.embedded, "embed_s": tally.embed_s, "staged": str(staged.relative_to(self.root)),
                "wait_s": tally.wait_s, "seconds": time.perf_counter() - t0, "worker": self.worker}

    def _scratch_writer(self):
        """This worker's writer into its scratch store, created at the first partition."""
        if self._writer is None:
            from botaclip.store import Store

            t = self.job.target
            scratch = Store.create(self._scratch, t.resolution, t.partition_resolution)
            self._writer = scratch.writer(t.name, kind=t.kind, dim=t.dim, dtype=t.dtype, provenance=dict(t.provenance),
                                          geometry=False)  # a scratch store: statistics are the driver's job
        return self._writer

    def _keep_stored_rows(self, w, parent: int) -> None:
        """A partition partly written earlier (or by another region) keeps its rows, unless overwritten."""
        if not self.job.merge_existing:
            return
        if self._live is None:
            from botaclip.store import Store

            self._live = Store.open(self.root, read_only=True)
        table = self._live.partition_table(self.job.target.name, parent)
        if table is not None and table.num_rows:
            w.write(h3=table.column("h3").to_numpy().astype(np.uint64), embedding=w.spec.decode(table),
                    valid_fraction=table.column("valid_fraction").to_numpy(zero_copy_only=False))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.reader.close()


# -- the driver ---------------------------------------------------------------------------------------------------


def _check_resources(ray, gpus: float, cpus: float) -> None:
    res = ray.cluster_resources()
    if gpus > 0 and res.get("GPU", 0) < gpus:
        raise InvalidInputError(f"the Ray cluster has {res.get('GPU', 0):g} GPU(s), fewer than "
                                f"{param('gpus_per_worker')} {gpus:g}; pass {param('gpus_per_worker')} 0 for CPU "
                                "workers")
    if res.get("CPU", 0) < cpus:
        raise InvalidInputError(f"the Ray cluster has {res.get('CPU', 0):g} CPU(s), fewer than "
                                f"{param('cpus_per_worker')} {cpus:g}")


def _worker_count(ray, n_workers: int | None, gpus: float, cpus: float) -> int:
    if n_workers is not None:
        return int(n_workers)
    res = ray.cluster_resources()
    n = res.get("GPU", 0) // gpus if gpus > 0 else res.get("CPU", 1) // cpus
    return max(1, int(n))


def _remote_error(exc) -> str:
    """The worker's own error message (first line), without Ray's wrapping."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


class _Pool:
    """The driver's view of its actors: start, replace after a death, per-worker statistics."""

    def __init__(self, ray, job: RayIndexJob, store_path: str, scratch: str, gpus: float, cpus: float,
                 driver_probe: str, token: str) -> None:
        self.ray, self.job, self.store_path, self.scratch = ray, job, store_path, scratch
        self.driver_probe, self.token = driver_probe, token
        self.cls = ray.remote(IndexWorker)
        self.resources = dict(num_gpus=gpus, num_cpus=cpus, max_restarts=0, max_concurrency=1)
        self.threads = max(1, int(cpus))
        self.actors: dict[int, object] = {}
        self.stats: dict[int, dict] = {}
        self.next_id = 0

    def start(self, n: int) -> list[int]:
        ids = []
        for _ in range(n):
            wid = self.next_id
            self.next_id += 1
            # Named (botaclip-index-<token>-w<i>) so that an operator can find them: `ray list actors`.
            actor = self.cls.options(name=f"botaclip-index-{self.token}-w{wid}", **self.resources)
            self.actors[wid] = actor.remote(self.job, self.store_path, self.scratch, wid, self.threads)
            self.stats[wid] = {"worker": wid, "node": "?", "gpus": [], "partitions": 0, "cells": 0,
                               "busy_s": 0.0, "cells_per_s": 0.0, "died": False}
            ids.append(wid)
        return ids

    def ready(self, ids: Sequence[int]) -> None:
        """Wait for the actors to load their model, and check that each one shares the store directory."""
        refs = {wid: self.actors[wid].probe.remote(self.driver_probe, self.token) for wid in ids}
        for wid, ref in refs.items():
            try:
                info = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                raise BotaclipError(f"Ray worker {wid} failed to start: {_remote_error(exc)}") from None
            except self.ray.exceptions.RayTaskError as exc:
                raise BotaclipError(f"Ray worker {wid} failed: {_remote_error(exc)}") from None
            self.stats[wid].update(node=info["node"], node_id=info["node_id"], gpus=info["gpus"],
                                   device=info["device"])
            _check_probe(Path(self.store_path), info, self.token)

    def died(self, wid: int) -> None:
        self.stats[wid]["died"] = True
        self.actors.pop(wid, None)

    def shutdown(self) -> None:
        for actor in self.actors.values():
            try:
                self.ray.kill(actor)
            except Exception:  # pragma: no cover - already gone
                pass
        self.actors.clear()

    def record(self, res: dict) -> None:
        s = self.stats[res["worker"]]
        s["partitions"] += 1
        s["cells"] += res["written"] + res["nodata"] + res["outside"]
        s["busy_s"] += res["seconds"]
        s["cells_per_s"] = s["cells"] / s["busy_s"] if s["busy_s"] > 0 else 0.0


def _check_probe(root: Path, info: dict, token: str) -> None:
    where = f"Ray worker {info['worker']} on node {info['node']}"
    fix = ("put the store on a file system every node mounts at the same path (NFS, Lustre, GPFS; object stores "
           f"are not supported yet), or set {STORE_PATH_ENV} on nodes that mount it elsewhere")
    if not info["saw_driver_probe"]:
        raise BotaclipError(f"store {root} is not on storage shared with {where}: it does not see a file written "
                            f"there by this process (it looked under {info['root']}); " + fix)
    if info.get("write_error"):
        raise BotaclipError(f"store {root} is not writable by {where} (at {info['root']}: {info['write_error']})")
    try:
        seen = (root / info["probe"]).read_text() == token
    except OSError:
        seen = False
    if not seen:
        raise BotaclipError(f"store {root} is not on storage shared with {where}: a file it wrote there (under "
                            f"{info['root']}) is not visible to this process; " + fix)




def run_partitions_ray(job: RayIndexJob, store, plan: PartitionPlan, summary: IndexSummary, *, started: float,
                       say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
                       derive_from: str | None = None) -> IndexSummary:
    """Run the planned partitions of an index job on Ray actors and commit them into ``store`` (driver side).

    Called by :func:`botaclip.pipeline.run_index` with ``engine="ray"`` once the input is validated and the store
    opened; ``summary`` is filled and returned. ``job.config`` says where the cluster is (``ray_address``), how many
    actors with which resources, ``limit``, ``overwrite`` and ``progress``.
    """
    ray = import_ray()
    if derive_from:
        say(f"note: the Ray engine embeds every cell from the imagery (it does not derive from {derive_from!r} yet)")
    summary.engine = "ray"
    # A local instance only carries partitions' cell ids and small results: a small object store.
    started_ray = ray_init(ray, job.config.scale.ray_address, object_store_mb=128)
    driver = _Driver(ray, job, store, summary, say)
    failed = True
    try:
        driver.start_workers()
        driver.plan(plan)
        summary.setup_seconds = time.perf_counter() - started
        driver.run()
        check_replacement_written(driver.writer.replacing, summary, job.target.name, job.config.chips.min_valid)
        failed = False
    finally:
        driver.close(failed)
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary


class _Driver:
    """The driver's side of a Ray index job: the store's writer, the actors, the partitions in flight (each
    actor is kept fed with QUEUED_PER_WORKER of them), commits, retries after a worker death, progress."""

    def __init__(self, ray, job: RayIndexJob, store, summary: IndexSummary, say: Callable[[str], None]) -> None:
        self.ray, self.job, self.store, self.summary, self.say = ray, job, store, summary, say
        self.root = Path(store.path)
        self.scratch: Path | None = None  # the workers' scratch directory in the store (relative to it)
        self.progress = job.config.runtime.progress
        self.writer = self.pool = self.bar = None
        self.todo: Iterator[tuple[int, np.ndarray]] = iter(())
        self.retry: deque = deque()  # (parent, cells, attempts) of partitions whose worker died
        self.in_flight: dict = {}  # ObjectRef -> (worker id, parent, cells, attempts)
        self.load: dict[int, int] = {}  # worker id -> partitions submitted and not returned
        self.replacements = 0  # actors that may still be started to replace dead ones

    def start_workers(self) -> None:
        """Open the store's writer, then start the actors and check that each one shares the store directory."""
        ray, scale, t = self.ray, self.job.config.scale, self.job.target
        gpus = float(scale.gpus_per_worker) if scale.gpus_per_worker is not None else (
            1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0)
        cpus = float(scale.cpus_per_worker)
        _check_resources(ray, gpus, cpus)
        n = _worker_count(ray, scale.ray_workers, gpus, cpus)
        # The job's writer: holds the store's lock for the whole run and records the run in the catalog. Opening
        # it clears STORE/.tmp (leftovers of killed jobs), so it comes before any worker writes there.
        self.writer = self.store.writer(t.name, kind=t.kind, dim=t.dim, dtype=t.dtype, provenance=dict(t.provenance),
                                        overwrite=self.job.config.output.overwrite)
        self.scratch = self.writer.scratch_dir("ray").relative_to(self.root)
        token = secrets.token_hex(6)
        driver_probe = self.scratch / "probe-driver"  # removed with the scratch directory
        (self.root / driver_probe).write_text(token)
        self.pool = _Pool(ray, self.job, str(self.root), str(self.scratch), gpus, cpus, str(driver_probe), token)
        self.say(f"starting {n} Ray worker(s) ({gpus:g} GPU, {cpus:g} CPU each) ...")
        self.pool.ready(self.pool.start(n))
        self.load = {wid: 0 for wid in self.pool.actors}
        self.replacements = 2 * n

    def plan(self, plan: PartitionPlan) -> None:
        """Count the planned cells (the progress bar's total); partitions are then taken one at a time."""
        from tqdm import tqdm

        cfg = self.job.config
        self.summary.planned = plan.count()
        self.bar = tqdm(total=self.summary.planned, unit="cell", file=sys.stderr, disable=not self.progress,
                        dynamic_ncols=True, smoothing=0.1)
        self.todo = partitions_to_do(self.store, plan, self.summary, self.bar, name=self.job.target.name,
                                     limit=cfg.runtime.limit, check_present=not cfg.output.overwrite)

    def next_task(self) -> tuple[int, np.ndarray, int] | None:
        if self.retry:
            return self.retry.popleft()
        for parent, todo in self.todo:
            if todo.size:
                return int(parent), todo, 0
        return None

    def run(self) -> None:
        """Feed the actors and commit their results until every partition is done."""
        last_stats = time.monotonic()
        while True:
            for wid in list(self.pool.actors):  # keep every actor fed with QUEUED_PER_WORKER partitions
                while self.load[wid] < QUEUED_PER_WORKER and (task := self.next_task()) is not None:
                    parent, cells, attempts = task
                    ref = self.pool.actors[wid].run_partition.remote(parent, cells)
                    self.in_flight[ref] = (wid, parent, cells, attempts)
                    self.load[wid] += 1
            if not self.in_flight:
                if self.retry:  # work left but no worker alive
                    raise BotaclipError("every Ray worker died; see the Ray logs (/tmp/ray/session_latest/logs), "
                                        "then run the same command to resume")
                return
            done, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=5.0)
            for ref in done:
                self.collect(ref)
            if time.monotonic() - last_stats >= STATS_EVERY_S:
                last_stats = time.monotonic()
                for line in format_worker_stats(list(self.pool.stats.values())):
                    (self.bar.write if self.progress else self.say)(line)

    def collect(self, ref) -> None:
        """One partition's result: commit it, or queue it again when its worker died."""
        wid, parent, cells, attempts = self.in_flight.pop(ref)
        try:
            res = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            # The worker (or its node) died: nothing of this partition was committed; run it elsewhere.
            self.worker_died(wid, exc)
            if attempts + 1 >= MAX_ATTEMPTS:
                raise BotaclipError(f"partition {parent:x} failed on {MAX_ATTEMPTS} Ray workers that died; "
                                    "see the Ray logs, then run the same command to resume") from None
            self.retry.append((parent, cells, attempts + 1))
            return
        except self.ray.exceptions.RayTaskError as exc:
            raise BotaclipError(f"Ray worker {wid} failed on partition {parent:x}: {_remote_error(exc)}") from None
        self.load[wid] -= 1
        self.commit(res)

    def worker_died(self, wid: int, exc) -> None:
        """Say so once, and start a replacement while the budget of replacements lasts."""
        if wid not in self.pool.actors:
            return
        self.say(f"Ray worker {wid} died ({_remote_error(exc)}); its partitions go to other workers")
        self.pool.died(wid)
        if self.replacements > 0:
            self.replacements -= 1
            new = self.pool.start(1)
            self.pool.ready(new)
            self.load.update({i: 0 for i in new})

    def commit(self, res: dict) -> None:
        """One atomic rename into the store (or into a replacement's staging area); the driver alone does this,
        once per partition."""
        self.writer.commit_file(res["parent"], self.root / res["staged"], res["written"])
        s = self.summary
        s.written += res["written"]
        s.embedded += res["embedded"]
        s.skipped_nodata += res["nodata"]
        s.skipped_outside += res["outside"]
        s.embed_seconds += res["embed_s"]
        s.read_wait_seconds += res["wait_s"]
        self.pool.record(res)
        self.bar.update(res["written"] + res["nodata"] + res["outside"])
        if self.progress:
            parts = sum(st["partitions"] for st in self.pool.stats.values())
            self.bar.set_postfix_str(f"{parts} partitions, {len(self.pool.actors)} workers", refresh=False)

    def close(self, failed: bool) -> None:
        """Stop the actors, remove the scratch directory, close the writer (a failed job keeps what it committed)."""
        if self.bar is not None:
            self.bar.close()
        if self.pool is not None:
            try:
                if not failed:
                    for actor in self.pool.actors.values():
                        self.ray.get(actor.close.remote())
            except Exception:  # pragma: no cover - closing is best effort; the scratch dir goes anyway
                pass
            self.pool.shutdown()
            self.summary.worker_stats = list(self.pool.stats.values())
        if self.writer is not None:  # closing it removes the scratch directory
            self.writer.close(failed=failed)
