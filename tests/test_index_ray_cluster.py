"""`index --engine ray --ray-address HOST:PORT` on a real two-node Ray cluster on loopback (`ray start --head` and
a second `ray start --address`, both stopped at the end), and a store the workers do not share, refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from botaclip.pipeline import run_index
from botaclip.store import Store

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*has random weights"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

ray = pytest.importorskip("ray")  # part of the dev extra: installed wherever the suite runs
RAY_CLI = str(Path(sys.executable).with_name("ray"))
SET = "dofa_tiny_rgbn"
TINY = dict(backbone="dofa-tiny", size_px=32, batch_size=8, workers=1, progress=False, partition_resolution=9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_under(temp: str) -> list[int]:
    """PIDs of processes whose command line mentions our Ray temp dir (this cluster's processes only)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if temp in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def cluster():
    """Head and worker node (1 CPU each) on 127.0.0.1; stopped at the end, even on failure."""
    temp = tempfile.mkdtemp(prefix="brc", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    port = _free_port()
    # A throwaway loopback cluster: no token authentication (else every client needs the generated token).
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp}",
              "--disable-usage-stats", f"--object-store-memory={100 * 1024**2}"]
    nodes = []
    try:
        nodes.append(subprocess.Popen([RAY_CLI, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                       "--block", *common], env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert time.monotonic() < deadline and nodes[0].poll() is None, "the Ray head did not start"
            time.sleep(0.2)
        nodes.append(subprocess.Popen([RAY_CLI, "start", f"--address={address}", "--block", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        yield address
    finally:
        # Every process of this cluster mentions its temp dir: stop them all (SIGTERM, then SIGKILL), no others.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in set(_processes_under(temp)) | {p.pid for p in nodes if p.poll() is None}:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and (_processes_under(temp) or any(p.poll() is None for p in nodes)):
                time.sleep(0.1)
        for p in nodes:
            p.wait(timeout=5)
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


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


def test_two_node_cluster_indexes_the_sample_region(cluster, sample, tmp_path):
    store = tmp_path / "store"
    out = _drive(cluster, sample.ortho, store, workers=2)
    assert "error" not in out, out
    summary = out["summary"]
    assert summary["engine"] == "ray" and summary["written"] > 20
    assert len({w["node_id"] for w in summary["worker_stats"]}) == 2  # one actor per node, each did work
    assert all(w["partitions"] > 0 for w in summary["worker_stats"])
    h3 = Store.open(store).existing_cells(SET)
    assert len(h3) == summary["written"] and len(np.unique(h3)) == len(h3)
    local = run_index("sample", [str(sample.ortho)], tmp_path / "local", **TINY)
    assert np.array_equal(Store.open(tmp_path / "local").existing_cells(SET), h3) and local.written == len(h3)


def test_store_not_shared_with_the_workers_is_refused(cluster, sample, tmp_path):
    # The workers see the store's path as another directory (as on a node with its own local disk there).
    elsewhere = tmp_path / "node-local-disk"
    elsewhere.mkdir()
    store = tmp_path / "store"
    Store.create(store, 10, 9)
    out = _drive(cluster, sample.ortho, store, workers=1,
                 runtime_env={"env_vars": {"BOTACLIP_RAY_STORE_PATH": str(elsewhere)}})
    msg = out["error"]
    assert msg.startswith(f"store {store} is not on storage shared with Ray worker 0") and "\n" not in msg
    assert "NFS" in msg and "object stores are not supported" in msg
    assert not any(elsewhere.rglob("*")) and not any((store / "features").rglob("*.parquet"))
    assert Store.open(store).runs() == []  # a run that failed before committing a file leaves the catalog as it was
