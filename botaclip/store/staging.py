"""Build a feature set aside, then swap it in: how `--overwrite` (and any all-or-nothing write such as an import)
replaces a feature set without ever losing the old one.

The new partitions are written under ``STORE/.tmp/stage-*/features/<name>/`` (discarded by the next writer if
this one dies). Committing moves the old directory to ``STORE/.swap/<name>.old`` (outside ``.tmp``, so nothing
clears it), moves the new one into ``features/<name>`` and replaces the catalog; the catalog replacement is the
commit point. A marker ``STORE/.swap/<name>.json`` (the run id) is written first, so that a writer killed in
between (a window of two renames) is repaired by the next writer of the store, or by `store verify --repair`:
if the catalog says that run finished, the old directory is deleted; otherwise the old set is put back.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from botaclip.atomic import fsync_dir
from botaclip.store.layout import PARTITION_FILE, features_dir

SWAP_DIR = ".swap"


def new_stage_root(root: Path, name: str) -> Path:
    """A fresh staging root; partitions go to ``partition_path(stage_root, name, parent)``."""
    stage = Path(root) / ".tmp" / f"stage-{name}-{os.getpid()}-{time.monotonic_ns()}"
    (stage / "features").mkdir(parents=True)
    return stage


def link_untouched(root: Path, stage_root: Path, name: str) -> None:
    """Add the live partitions that the staged set does not rewrite (hard links: no copy, same bytes), so the
    staged directory is the complete new feature set."""
    live = features_dir(root, name)
    if not live.is_dir():
        return
    staged = features_dir(stage_root, name)
    for sub in live.iterdir():
        src = sub / PARTITION_FILE
        dst = staged / sub.name / PARTITION_FILE
        if not src.is_file() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # a filesystem without hard links
            shutil.copy2(src, dst)


def _marker(root: Path, name: str) -> Path:
    return Path(root) / SWAP_DIR / f"{name}.json"


def _old(root: Path, name: str) -> Path:
    return Path(root) / SWAP_DIR / f"{name}.old"


def swap_in(root: Path, stage_root: Path, name: str, run_id: int, commit: Callable[[], None]) -> None:
    """Move the staged feature set into place and call `commit` (which replaces the catalog).

    If `commit` raises, the swap is undone and the error propagates: the old set and catalog stay as they were.
    """
    root = Path(root)
    live, staged, old = features_dir(root, name), features_dir(stage_root, name), _old(root, name)
    staged.mkdir(parents=True, exist_ok=True)  # an empty replacement is still a (empty) directory
    marker = _marker(root, name)
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(json.dumps({"run_id": int(run_id)}))
    had_old, moved_in = live.exists(), False
    try:
        if had_old:
            os.replace(live, old)
        os.replace(staged, live)
        moved_in = True
        fsync_dir(live.parent)
        commit()
    except BaseException:
        if moved_in:
            os.replace(live, staged)
        if had_old and old.exists():
            os.replace(old, live)
        marker.unlink(missing_ok=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    marker.unlink()


def pending_swaps(root: Path) -> list[str]:
    """Feature sets whose replacement was interrupted between its renames (repaired by `recover_swaps`)."""
    d = Path(root) / SWAP_DIR
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def recover_swaps(root: Path, finished_runs: set[int]) -> list[str]:
    """Finish or undo interrupted swaps (the caller holds the writer lock); returns one line per repair.

    `finished_runs`: run ids the catalog records as done, i.e. whose catalog replacement happened.
    """
    root = Path(root)
    done = []
    for name in pending_swaps(root):
        marker, old, live = _marker(root, name), _old(root, name), features_dir(root, name)
        try:
            run_id = int(json.loads(marker.read_text())["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            run_id = -1
        if run_id in finished_runs:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"{name}: finished the replacement of run {run_id} (it was committed)")
        elif old.exists():
            if live.exists():
                trash = root / ".tmp" / f"uncommitted-{name}-{time.monotonic_ns()}"
                trash.parent.mkdir(exist_ok=True)
                os.replace(live, trash)
            os.replace(old, live)
            done.append(f"{name}: restored the old feature set (replacement run {run_id} was interrupted)")
        marker.unlink()
    return done
