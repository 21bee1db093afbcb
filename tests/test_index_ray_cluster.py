"""`index --engine ray --ray-address HOST:PORT` on a real two-node Ray cluster on loopback (`ray start --head` and
a second `ray start --address`, both stopped at the end), and a store the workers do not share, refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
TINY = dict(backbone="dofa-tiny", size_px=32, batch_size=8, workers=1, progress=False, partition_resolution=9)


# The driver runs in its own process, as `botaclip index` would (a process that already ran another Ray instance
# cannot reliably start actors on a new cluster).
DRIVER = """
import json, sys, time
import ray
from botaclip.errors import BotaclipError
from botaclip.pipeline import run_index

cfg = json.loads(sys.argv[1])
ray.init(address=cfg["address"], runtime_env=cfg.get("runtime_env"), logging_level="WARNING", log_to_driver=False)
deadline = time.monotonic() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.2)
try:
    s = run_index("sample", [cfg["ortho"]], cfg["store"], engine="ray", ray_address=cfg["address"],
                  ray_workers=cfg["workers"], **cfg["job"])
    print(json.dumps({"summary": s.to_dict()}))
except BotaclipError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _drive(address: str, ortho, store, workers: int, runtime_env: dict | None = None) -> dict:
    cfg = {"address": address, "ortho": str(ortho), "store": str(store), "workers": workers, "job": TINY,
           "runtime_env": runtime_env}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cfg)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from botaclip.sample import make_sample

    return make_sample(tmp_path_factory.mktemp("s") / "sample", seed=0, size_km=1.0, plots=20)


def test_two_node_cluster_indexes_the_sample_region(ray_cluster, sample, tmp_path):
    store = tmp_path / "store"
    out = _drive(ray_cluster, sample.ortho, store, workers=2)
    assert "error" not in out, out
    summary = out["summary"]
    assert summary["engine"] == "ray" and summary["written"] > 20
    assert len({w["node_id"] for w in summary["worker_stats"]}) == 2  # one actor per node, each did work
    assert all(w["partitions"] > 0 for w in summary["worker_stats"])
    h3 = Store.open(store).existing_cells(SET)
    assert len(h3) == summary["written"] and len(np.unique(h3)) == len(h3)
    local = run_index("sample", [str(sample.ortho)], tmp_path / "local", **TINY)
    assert np.array_equal(Store.open(tmp_path / "local").existing_cells(SET), h3) and local.written == len(h3)


def test_store_not_shared_with_the_workers_is_refused(ray_cluster, sample, tmp_path):
    # The workers see the store's path as another directory (as on a node with its own local disk there).
    elsewhere = tmp_path / "node-local-disk"
    elsewhere.mkdir()
    store = tmp_path / "store"
    Store.create(store, 10, 9)
    out = _drive(ray_cluster, sample.ortho, store, workers=1,
                 runtime_env={"env_vars": {"BOTACLIP_RAY_STORE_PATH": str(elsewhere)}})
    msg = out["error"]
    assert msg.startswith(f"store {store} is not on storage shared with Ray worker 0") and "\n" not in msg
    assert "NFS" in msg and "object stores are not supported" in msg
    assert not any(elsewhere.rglob("*")) and not any((store / "features").rglob("*.parquet"))
    assert Store.open(store).runs() == []  # a run that failed before committing a file leaves the catalog as it was
