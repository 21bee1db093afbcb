"""The training-feature cache: relevé locations -> chips -> frozen backbone embeddings, computed once.

The backbone is frozen, so BotaCLIP never needs its gradient: each relevé's chip (cut at the plot's own location,
not at a cell centre) is embedded once, optionally as K augmented views (view 0 = the chip as read; the others
random dihedral transforms - flips and 90-degree rotations - with a small crop jitter), and the unit-normalised
embeddings are stored in one ``.npz`` file. Training then draws a view per step at no cost.

The cache file's name is a hash of everything that changes the numbers (backbone name and weights sha256,
wavelengths, band preset, normalisation, chip size in metres and pixels, number of views, augmentation seed,
valid-fraction threshold, imagery files with size and modification time); inside, rows are keyed by relevé id, so
a later run with more relevés embeds only the new ones, and a run with the same ones does no backbone forward.
Relevés outside the imagery or with too little valid data are recorded as skipped (with the reason) and are not
read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from botaclip.atomic import atomic_write
from botaclip.errors import BotaclipError, InvalidInputError, param

CACHE_VERSION = 1
SKIP_OUTSIDE = "outside the imagery"
SKIP_INVALID = "too little valid data"


@dataclass
class CachedFeatures:
    """Backbone embeddings of relevé chips.

    Attributes:
        releve_ids: ids of the relevés with features, in the order asked for (skipped ones left out).
        features: [N, K, D] float32, unit-normalised, K views per relevé (view 0 = un-augmented).
        skipped: relevé id -> reason, for the relevés asked for that have no features.
        path: the cache file.
        computed: number of relevés embedded by this call (0 when everything came from the cache).
        key: what the cache is keyed by.
    """

    releve_ids: list[str]
    features: np.ndarray
    skipped: dict[str, str]
    path: Path
    computed: int
    key: dict = field(repr=False, default_factory=dict)

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.skipped.values():
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def cache_key(backbone: dict, reader_description: dict, views: int, min_valid: float, seed: int) -> dict:
    """The cache identity: backbone identity + chip geometry and imagery + augmentation."""
    return {
        "version": CACHE_VERSION,
        "backbone": {k: backbone.get(k) for k in ("name", "dim", "sha256")},
        "wavelengths": [float(w) for w in reader_description.get("wavelengths", [])],
        "bands": reader_description.get("bands"),
        "chip_m": float(reader_description.get("chip_m", 0)),
        "size_px": int(reader_description.get("size_px", 0)),
        "normalization": reader_description.get("normalization"),
        "imagery": [
            # A remote raster's version is also its ETag (local files have none: their keys stay as they were).
            {k: src.get(k) for k in ("path", "size_bytes", "mtime_ns", "etag") if k != "etag" or src.get(k)}
            for src in reader_description.get("imagery", [])
        ],
        "views": int(views),
        "min_valid": float(min_valid),
        # The seed only drives the augmentations: with one view (none) every training seed shares the cache.
        "seed": int(seed) if views > 1 else 0,
    }


def cache_path(cache_dir: str | os.PathLike, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"botaclip-features-{digest}.npz"


def augment_views(chip: np.ndarray, views: int, rng: np.random.Generator, max_crop: float = 0.15) -> np.ndarray:
    """K views of one chip [C, H, W]: view 0 unchanged; views 1..K-1 a random crop of (1 - U(0, max_crop)) of the
    side at a random offset, resized back to H x W (bilinear), then one of the 7 non-identity dihedral transforms
    (flips and 90-degree rotations; distinct while K <= 8). Returns [K, C, H, W] float32."""
    c, h, w = chip.shape
    out = np.empty((views, c, h, w), dtype=np.float32)
    out[0] = chip
    transforms = rng.permutation(7) + 1  # 1..7: (rotation k, flip) pairs except the identity
    x = torch.from_numpy(np.ascontiguousarray(chip, dtype=np.float32))
    for v in range(1, views):
        scale = 1.0 - rng.uniform(0.0, max_crop)
        ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = x[:, top : top + ch, left : left + cw]
        if (ch, cw) != (h, w):
            crop = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        t = int(transforms[(v - 1) % 7])
        rotated = torch.rot90(crop, k=t % 4, dims=(1, 2))
        if t >= 4:
            rotated = torch.flip(rotated, dims=(2,))
        out[v] = rotated.numpy()
    return out


def _view_rng(seed: int, releve_id: str) -> np.random.Generator:
    # Per-relevé stream: a relevé's views do not depend on which other relevés are in the run.
    return np.random.default_rng([int(seed), zlib.crc32(releve_id.encode())])


def _load(path: Path, key: dict) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not path.exists():
        return {}, {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["key"])) != key:
                return {}, {}
            ids = [str(s) for s in data["releve_ids"]]
            feats = data["features"]
            rows = {rid: feats[i] for i, rid in enumerate(ids)}
            skipped = {str(r): str(why) for r, why in zip(data["skipped_ids"], data["skipped_reasons"], strict=True)}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return {}, {}  # unreadable or foreign: recompute (the file is replaced atomically at the end)
    return rows, skipped


def _save(path: Path, key: dict, rows: dict[str, np.ndarray], skipped: dict[str, str], dim: int, views: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(rows)
    feats = np.stack([rows[i] for i in ids]) if ids else np.zeros((0, views, dim), dtype=np.float32)
    atomic_write(path, lambda tmp: np.savez(
        tmp,
        key=np.array(json.dumps(key, sort_keys=True)),
        releve_ids=np.array(ids, dtype=str),
        features=feats.astype(np.float32),
        skipped_ids=np.array(sorted(skipped), dtype=str),
        skipped_reasons=np.array([skipped[i] for i in sorted(skipped)], dtype=str),
    ), suffix=".npz")


@dataclass(frozen=True)
class CacheSettings:
    """Where the feature cache lives and how its chips are embedded.

    Args:
        cache_dir: folder of the cache file.
        views: K, the number of views per chip (1 = no augmentation).
        min_valid: relevés whose chip has a smaller fraction of valid pixels are skipped.
        seed: seed of the augmentations.
        batch_size: chips per backbone forward (each relevé contributes K chips).
        workers: threads reading chips.
    """

    cache_dir: str | os.PathLike
    views: int = 1
    min_valid: float = 0.8
    seed: int = 0
    batch_size: int = 64
    workers: int = 2


def cache_features(
    releve_ids: Sequence[str],
    lat: np.ndarray,
    lng: np.ndarray,
    reader,
    embed: Callable[[np.ndarray], np.ndarray],
    backbone: dict,
    settings: CacheSettings,
    progress: Callable[[int, int], None] | None = None,
) -> CachedFeatures:
    """Backbone embeddings of each relevé's chip, from the cache where present, computed (and cached) otherwise.

    Args:
        releve_ids, lat, lng: the relevés and their plot locations (degrees, WGS84; lat first).
        reader: a :class:`botaclip.imagery.chips.ChipReader` (chip size, bands, imagery).
        embed: chips [B, C, H, W] float32 (normalised) -> unit-normalised embeddings [B, D] (the frozen backbone).
        backbone: identity of the backbone: {name, dim, sha256} (sha256 or "random-init:seed=S").
        settings: cache folder, views, valid-fraction threshold, seed, batch size (:class:`CacheSettings`).
        progress: called with (relevés done, relevés to embed).
    """
    views, min_valid, seed = settings.views, settings.min_valid, settings.seed
    if views < 1:
        raise InvalidInputError(f"{param('views')} must be at least 1, got {views}")
    if not 0 <= min_valid <= 1:
        raise InvalidInputError(f"{param('min_valid')} must be between 0 and 1, got {min_valid}")
    ids = [str(r) for r in releve_ids]
    key = cache_key(backbone, reader.describe(), views, min_valid, seed)
    path = cache_path(settings.cache_dir, key)
    rows, skipped = _load(path, key)
    todo = [i for i, rid in enumerate(ids) if rid not in rows and rid not in skipped]
    dim = int(backbone["dim"])

    if todo:
        lat_t, lng_t = np.asarray(lat, dtype=float)[todo], np.asarray(lng, dtype=float)[todo]
        located = reader.locate(lat_t, lng_t)
        per_batch = max(1, settings.batch_size // views)
        done = 0
        with ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool:
            for start in range(0, len(todo), per_batch):
                chunk = list(range(start, min(start + per_batch, len(todo))))
                chips = list(pool.map(lambda j: reader.read_located(located[j]), chunk))
                stack, owners = _sort_chips([ids[todo[j]] for j in chunk], chips, settings, skipped)
                if stack:
                    _embed_stack(embed, stack, owners, (views, dim), rows)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(todo))
        _save(path, key, rows, skipped, dim, views)

    kept = [rid for rid in ids if rid in rows]
    feats = np.stack([rows[r] for r in kept]) if kept else np.zeros((0, views, dim), dtype=np.float32)
    return CachedFeatures(
        releve_ids=kept,
        features=feats.astype(np.float32, copy=False),
        skipped={rid: skipped[rid] for rid in ids if rid in skipped},
        path=path,
        computed=len(todo),
        key=key,
    )


def _sort_chips(rids: list[str], chips: list, settings: CacheSettings, skipped: dict) -> tuple[list, list]:
    """The augmented views of the chips worth embedding and their relevés; the others go to ``skipped``."""
    stack, owners = [], []
    for rid, chip in zip(rids, chips, strict=True):
        if chip.outside:
            skipped[rid] = SKIP_OUTSIDE
        elif chip.valid_fraction < settings.min_valid:
            skipped[rid] = SKIP_INVALID
        else:
            stack.append(augment_views(chip.data, settings.views, _view_rng(settings.seed, rid)))
            owners.append(rid)
    return stack, owners


def _embed_stack(embed, stack: list, owners: list[str], shape: tuple[int, int], rows: dict) -> None:
    """Embed the stacked views and store each relevé's [views, dim] embeddings in ``rows``."""
    views, dim = shape
    emb = np.asarray(embed(np.concatenate(stack)), dtype=np.float32).reshape(len(owners), views, -1)
    if emb.shape[-1] != dim:
        raise BotaclipError(f"backbone returned {emb.shape[-1]}-d embeddings, expected {dim}")
    for rid, e in zip(owners, emb, strict=True):
        rows[rid] = e
