"""`index --engine ray` on a local Ray instance (2 CPUs): same cells and embeddings as the local engine, resume,
a worker killed mid-run, CLI errors. Real Ray actors, a real tiny DOFA, a real store on the sample region."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from botaclip.cli import cli
from botaclip.pipeline import run_index
from botaclip.store import Store

# Ray tests share one xdist worker (`make test` runs `-n auto --dist loadgroup`): two Ray instances at once
# would fight over 2 cores and ports.
pytestmark = [
    pytest.mark.xdist_group("ray"),
    pytest.mark.filterwarnings("ignore:.*has random weights"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

ray = pytest.importorskip("ray")  # part of the dev extra: installed wherever the suite runs
SET = "dofa_tiny_rgbn"
# Partitions at resolution 9 (7 cells each) give a 1 km region some 20 units of work.
TINY = dict(backbone="dofa-tiny", size_px=32, batch_size=8, workers=1, progress=False, partition_resolution=9)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from botaclip.sample import make_sample

    return make_sample(tmp_path_factory.mktemp("s") / "sample", seed=0, size_km=1.0, plots=20)


@pytest.fixture(scope="module")
def local_store(sample, tmp_path_factory):
    """The reference: the same job with the local engine."""
    path = tmp_path_factory.mktemp("local") / "store"
    summary = run_index("sample", [str(sample.ortho)], path, **TINY)
    assert summary.written > 20 and Store.open(path).info(SET)["partitions"] > 6
    return path


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray instance (2 CPUs, no dashboard, no usage stats) for the module; always shut down."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024**2, _temp_dir=str(temp),
             logging_level="WARNING", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _same_features(a, b) -> None:
    fa, fb = Store.open(a).features_numpy(SET), Store.open(b).features_numpy(SET)
    assert len(np.unique(fb.h3)) == len(fb.h3)  # no duplicate
    np.testing.assert_array_equal(fa.h3, fb.h3)
    np.testing.assert_allclose(fa.X, fb.X, atol=1e-6, rtol=0)


def test_ray_engine_matches_local_engine_and_resumes(sample, local_store, ray_local, tmp_path):
    store = tmp_path / "store"
    # A first run stopped early (limit) leaves partly written partitions, as a driver killed mid-run would.
    first = run_index("sample", [str(sample.ortho)], store, engine="ray", limit=12, **TINY)
    assert first.engine == "ray" and 0 < first.written <= 12
    assert Store.open(store).runs()[-1]["status"] == "done"
    rest = run_index("sample", [str(sample.ortho)], store, engine="ray", **TINY)
    ref = Store.open(local_store).info(SET)
    assert first.written + rest.written == ref["rows"] and rest.skipped_present == first.written
    _same_features(local_store, store)
    info = Store.open(store).info(SET)
    assert info["partitions"] == ref["partitions"] and info["provenance"]["model"] == "dofa-tiny"
    # Every partition is marked complete; the driver recorded the run; no scratch file is left.
    assert Store.open(store).partitions(SET) == Store.open(local_store).partitions(SET)
    run = Store.open(store).runs()[-1]
    assert run["status"] == "done" and run["rows_written"] == rest.written
    assert not any((store / ".tmp").rglob("*.parquet"))
    # Per-worker progress: two actors on two CPUs, sharing the partitions.
    assert len(rest.worker_stats) == 2 and sum(w["cells"] for w in rest.worker_stats) > 0
    assert "worker 0" in rest.format()
    # --overwrite (another seed) is built aside and swapped in: every cell recomputed, none merged from the old set.
    old = Store.open(store).features_numpy(SET)
    again = run_index("sample", [str(sample.ortho)], store, engine="ray", overwrite=True, seed=1, **TINY)
    new = Store.open(store).features_numpy(SET)
    assert again.written == ref["rows"] and again.skipped_present == 0
    np.testing.assert_array_equal(new.h3, old.h3)
    assert not np.allclose(new.X, old.X) and Store.open(store).verify().ok
    assert not any((store / ".tmp").rglob("*.parquet")) and not any((store / ".swap").glob("*"))


def test_worker_killed_mid_run_still_yields_every_cell_once(sample, local_store, ray_local, tmp_path):
    store = tmp_path / "store"
    features = store / "features" / SET
    killed: list[str] = []
    finished = threading.Event()

    def kill_one_worker_after_first_commit():
        # Watches for as long as the run lasts: a fixed deadline ran out before the first commit on a loaded machine.
        while not finished.is_set() and not killed:
            if features.is_dir() and any(features.glob("parent=*/data.parquet")):
                names = sorted(n for n in ray.util.list_named_actors() if n.startswith("botaclip-index-"))
                if names:
                    ray.kill(ray.get_actor(names[0]))
                    killed.append(names[0])
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker_after_first_commit, daemon=True)
    killer.start()
    try:
        summary = run_index("sample", [str(sample.ortho)], store, engine="ray", **TINY)
    finally:
        finished.set()
        killer.join(timeout=5)
    assert killed, "the test did not get to kill a worker"
    died = [w for w in summary.worker_stats if w["died"]]
    assert len(died) == 1 and len(summary.worker_stats) == 3  # two workers, one replacement
    _same_features(local_store, store)
    assert summary.written == Store.open(local_store).info(SET)["rows"]


def test_cli_engine_ray_errors_are_one_line(sample, tmp_path, cli_runner, monkeypatch):
    args = ["index", "--region", "sample", "--imagery", str(sample.ortho), "--store", str(tmp_path / "s"),
            "--backbone", "dofa-tiny", "--size-px", "32", "--quiet", "--engine", "ray"]
    result = cli_runner.invoke(cli, args + ["--shard", "0/2"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --shard and --engine ray do not combine")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if botaclip[ray] were not installed
    result = cli_runner.invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: the Ray engine needs Ray: pip install 'botaclip[ray]' "
                                     "(or pip install 'ray>=2.9')")
    assert not (tmp_path / "s").exists()  # nothing created
