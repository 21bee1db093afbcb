"""The index job on a Ray cluster: partitions are embedded by long-lived Ray actors, committed by the driver.

    run_index("sample", ["sample/ortho.tif"], "store", backbone="dofa-small", engine="ray", ray_address="auto")

How it runs (docs/scale.md):
- The unit of work is a coarse H3 partition of the store (``store.partition_of``), the same unit as ``--shard``.
  The driver (the process that calls :func:`botaclip.pipeline.run_index`) validates the input, opens the store's
  writer (it holds the store's writer lock for the whole job), plans the cells of each partition still to do and
  hands ``(parent, cells)`` to :class:`IndexWorker` actors, each holding one loaded model (one per GPU, or CPU
  workers). At most two partitions are queued per actor, so an actor never waits for the driver.
- A worker writes the partition's Parquet file with the store's own writer into a private scratch store under
  ``STORE/.tmp/`` (atomic: temp file, fsync, rename) and returns its relative path; the driver commits it by one
  atomic rename into ``features/<name>/parent=<hex>/`` and records it in the catalog. Only the driver commits, and
  it accepts one result per partition, so no partition is committed twice.
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
import shutil
import socket
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from botaclip.errors import BotaclipError
from botaclip.ray_cluster import import_ray, ray_init

STORE_PATH_ENV = "BOTACLIP_RAY_STORE_PATH"
QUEUED_PER_WORKER = 2  # partitions submitted to one actor at a time: one running, one waiting
STATS_EVERY_S = 30.0  # per-worker progress lines
MAX_ATTEMPTS = 3  # a partition whose worker died this many times stops the job


def check_ray_options(shard, n_workers: int | None, gpus_per_worker: float | None, cpus_per_worker: float) -> None:
    """Refuse bad Ray options before anything is read or written (and check that Ray is installed)."""
    if shard is not None:
        raise BotaclipError("--shard and --engine ray do not combine: the Ray engine already spreads the "
                            "partitions over its workers; drop --shard")
    if n_workers is not None and int(n_workers) < 1:
        raise BotaclipError(f"--ray-workers must be at least 1, got {n_workers}")
    if gpus_per_worker is not None and float(gpus_per_worker) < 0:
        raise BotaclipError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker}")
    if float(cpus_per_worker) <= 0:
        raise BotaclipError(f"--cpus-per-worker must be more than 0, got {cpus_per_worker}")
    import_ray()


@dataclass
class RayIndexJob:
    """What a worker needs to embed partitions exactly as the local engine would (paths are absolute)."""

    imagery: list[str]
    bands: object  # botaclip.imagery.bands.BandSpec
    chip_m: float
    size_px: int
    resampling: str
    normalize: str
    backbone: str
    weights: str | None
    seed: int
    adapter: str | None
    device: str
    batch_size: int
    read_threads: int
    min_valid: float
    name: str
    kind: str
    dim: int
    provenance: dict
    resolution: int
    partition_resolution: int
    merge_existing: bool = True  # False for --overwrite: a replacement does not keep the old set's rows


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the driver already reported them (random weights, ...)
            self.reader = ChipReader(job.imagery, job.bands, chip_m=job.chip_m, size_px=job.size_px,
                                     resampling=job.resampling, normalization=job.normalize)
            model = make_backbone(job.backbone, job.weights, job.seed, job.size_px)
            self.bundle = None
            if job.adapter is not None:
                from botaclip.model.adapter import load_adapter

                self.bundle = load_adapter(job.adapter)
            self.embedder = Embedder(model, list(self.reader.wavelengths), device=job.device,
                                     batch_size=job.batch_size, normalize=True)
        # Created at the first partition, once the driver has checked that this node shares the store.
        self._scratch = self.root / scratch / f"w{worker}-{os.getpid()}-{secrets.token_hex(3)}"
        self._writer = None

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
        import pyarrow.parquet as pq

        from botaclip.imagery import PrefetchStats, prefetch_chips
        from botaclip.store import Store
        from botaclip.store.layout import partition_path

        t0 = time.perf_counter()
        job = self.job
        if self._writer is None:
            scratch = Store.create(self._scratch, job.resolution, job.partition_resolution)
            self._writer = scratch.writer(job.name, kind=job.kind, dim=job.dim, provenance=dict(job.provenance),
                                          geometry=False)  # a scratch store: statistics are the driver's job
        w = self._writer
        existing = partition_path(self.root, job.name, parent)
        if job.merge_existing and existing.exists():  # partly written earlier (or by another region): keep its rows
            table = pq.read_table(existing)
            if table.num_rows:
                w.write(h3=table.column("h3").to_numpy().astype(np.uint64), embedding=w.spec.decode(table),
                        valid_fraction=table.column("valid_fraction").to_numpy(zero_copy_only=False))
        out = {"parent": int(parent), "written": 0, "nodata": 0, "outside": 0, "embedded": 0, "embed_s": 0.0}
        stats = PrefetchStats()
        batches = prefetch_chips(self.reader, [(int(parent), np.asarray(cells, dtype=np.uint64))],
                                 batch_size=job.batch_size, workers=job.read_threads, min_valid=job.min_valid,
                                 stats=stats)
        meta: deque = deque()

        def chip_arrays():
            for batch in batches:
                meta.append(batch)
                yield batch.chips

        try:
            stream = self.embedder.embed_stream(chip_arrays())
            while True:
                t1, wait0 = time.perf_counter(), stats.wait_s
                try:
                    emb = next(stream)
                except StopIteration:
                    break
                out["embed_s"] += (time.perf_counter() - t1) - (stats.wait_s - wait0)
                batch = meta.popleft()
                out["embedded"] += len(batch.h3)
                if len(batch.h3):
                    if self.bundle is not None:
                        from botaclip.pipeline.index import adapt_embeddings

                        emb = adapt_embeddings(self.bundle, emb)
                    w.write(h3=batch.h3, embedding=emb, valid_fraction=batch.valid_fraction)
                    out["written"] += len(batch.h3)
                out["nodata"] += len(batch.nodata)
                out["outside"] += len(batch.outside)
        finally:
            batches.close()
        w.finish_partition(int(parent))
        staged = partition_path(self._scratch, job.name, parent)
        out.update(staged=str(staged.relative_to(self.root)), wait_s=stats.wait_s,
                   seconds=time.perf_counter() - t0, worker=self.worker)
        return out

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.reader.close()


# -- the driver ---------------------------------------------------------------------------------------------------


def _check_resources(ray, gpus: float, cpus: float) -> None:
    res = ray.cluster_resources()
    if gpus > 0 and res.get("GPU", 0) < gpus:
        raise BotaclipError(f"the Ray cluster has {res.get('GPU', 0):g} GPU(s), fewer than --gpus-per-worker "
                            f"{gpus:g}; pass --gpus-per-worker 0 for CPU workers")
    if res.get("CPU", 0) < cpus:
        raise BotaclipError(f"the Ray cluster has {res.get('CPU', 0):g} CPU(s), fewer than --cpus-per-worker "
                            f"{cpus:g}")


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


def run_partitions_ray(
    job: RayIndexJob,
    store,
    parents: Sequence[int],
    cells_of,
    summary,
    *,
    started: float,
    overwrite: bool = False,
    limit: int | None = None,
    address: str | None = None,
    n_workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
    progress: bool = True,
    say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    derive_from: str | None = None,
):
    """Run the planned partitions of an index job on Ray actors and commit them into ``store`` (driver side).

    Called by :func:`botaclip.pipeline.run_index` with ``engine="ray"`` once the input is validated and the store
    opened; ``summary`` (an IndexSummary) is filled and returned.
    """
    from tqdm import tqdm

    from botaclip.pipeline.index import cells_to_do, check_replacement_written, format_worker_stats

    ray = import_ray()
    if derive_from:
        say(f"note: the Ray engine embeds every cell from the imagery (it does not derive from {derive_from!r} yet)")
    summary.engine = "ray"
    # A local instance only carries partitions' cell ids and small results: a small object store.
    started_ray = ray_init(ray, address, object_store_mb=128)
    writer = pool = None
    failed = True
    root = Path(store.path)
    scratch = Path(".tmp") / f"ray-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        gpus = float(gpus_per_worker) if gpus_per_worker is not None else (
            1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0)
        _check_resources(ray, gpus, float(cpus_per_worker))
        n = _worker_count(ray, n_workers, gpus, float(cpus_per_worker))
        # The job's writer: holds the store's lock for the whole run and records the run in the catalog. Opening
        # it clears STORE/.tmp (leftovers of killed jobs), so it comes before any worker writes there.
        writer = store.writer(job.name, kind=job.kind, dim=job.dim, provenance=dict(job.provenance),
                              overwrite=overwrite)
        (root / scratch).mkdir(parents=True)
        token = secrets.token_hex(6)
        driver_probe = scratch / "probe-driver"  # removed with the scratch directory
        (root / driver_probe).write_text(token)
        pool = _Pool(ray, job, str(root), str(scratch), gpus, float(cpus_per_worker), str(driver_probe), token)
        say(f"starting {n} Ray worker(s) ({gpus:g} GPU, {float(cpus_per_worker):g} CPU each) ...")
        pool.ready(pool.start(n))

        counts = {p: int(len(cells_of(p))) for p in parents}
        summary.planned = sum(counts.values())
        bar = tqdm(total=summary.planned, unit="cell", file=sys.stderr, disable=not progress, dynamic_ncols=True,
                   smoothing=0.1)
        remaining = [None if limit is None else int(limit)]
        planned = iter(parents)
        retry: deque = deque()  # (parent, cells, attempts) of partitions whose worker died

        def next_task():
            if retry:
                return retry.popleft()
            for parent in planned:
                if remaining[0] is not None and remaining[0] <= 0:
                    return None
                cells = cells_of(parent)
                if cells.size == 0:
                    continue
                todo = cells_to_do(store, job.name, parent, cells, summary, bar, remaining,
                                   check_present=not overwrite)
                summary.partitions += 1
                if todo.size:
                    return int(parent), todo, 0
            return None

        in_flight: dict = {}  # ObjectRef -> (worker id, parent, cells, attempts)
        load = {wid: 0 for wid in pool.actors}
        summary.setup_seconds = time.perf_counter() - started
        replacements = 2 * n
        last_stats = time.monotonic()
        while True:
            for wid in list(pool.actors):  # keep every actor fed with QUEUED_PER_WORKER partitions
                while load[wid] < QUEUED_PER_WORKER and (task := next_task()) is not None:
                    parent, cells, attempts = task
                    in_flight[pool.actors[wid].run_partition.remote(parent, cells)] = (wid, parent, cells, attempts)
                    load[wid] += 1
            if not in_flight:
                if retry:  # work left but no worker alive
                    raise BotaclipError("every Ray worker died; see the Ray logs (/tmp/ray/session_latest/logs), "
                                        "then run the same command to resume")
                break
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
            for ref in done:
                wid, parent, cells, attempts = in_flight.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    # The worker (or its node) died: nothing of this partition was committed; run it elsewhere.
                    if wid in pool.actors:
                        say(f"Ray worker {wid} died ({_remote_error(exc)}); its partitions go to other workers")
                        pool.died(wid)
                        if replacements > 0:
                            replacements -= 1
                            new = pool.start(1)
                            pool.ready(new)
                            load.update({i: 0 for i in new})
                    if attempts + 1 >= MAX_ATTEMPTS:
                        raise BotaclipError(f"partition {parent:x} failed on {MAX_ATTEMPTS} Ray workers that died; "
                                            "see the Ray logs, then run the same command to resume") from None
                    retry.append((parent, cells, attempts + 1))
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise BotaclipError(f"Ray worker {wid} failed on partition {parent:x}: "
                                        f"{_remote_error(exc)}") from None
                load[wid] -= 1
                # Commit: one atomic rename into the store (or into a replacement's staging area); the driver
                # alone does this, once per partition.
                writer.commit_file(parent, root / res["staged"], res["written"])
                summary.written += res["written"]
                summary.embedded += res["embedded"]
                summary.skipped_nodata += res["nodata"]
                summary.skipped_outside += res["outside"]
                summary.embed_seconds += res["embed_s"]
                summary.read_wait_seconds += res["wait_s"]
                pool.record(res)
                bar.update(res["written"] + res["nodata"] + res["outside"])
                if progress:
                    parts = sum(st["partitions"] for st in pool.stats.values())
                    bar.set_postfix_str(f"{parts} partitions, {len(pool.actors)} workers", refresh=False)
            if time.monotonic() - last_stats >= STATS_EVERY_S:
                last_stats = time.monotonic()
                for line in format_worker_stats(list(pool.stats.values())):
                    (bar.write if progress else say)(line)
        bar.close()
        check_replacement_written(writer.replacing, summary, job.name, job.min_valid)
        failed = False
    finally:
        if pool is not None:
            try:
                if not failed:
                    for actor in pool.actors.values():
                        ray.get(actor.close.remote())
            except Exception:  # pragma: no cover - closing is best effort; the scratch dir goes anyway
                pass
            pool.shutdown()
            summary.worker_stats = list(pool.stats.values())
        shutil.rmtree(root / scratch, ignore_errors=True)
        if writer is not None:
            writer.close(failed=failed)
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary
