"""BotaCLIP checkpoints: writing them, and loading the adapter to derive adapted embeddings from backbone ones.

A checkpoint is a ``torch.save``d dict of tensors, str, int, float, bool, None, lists and dicts only, so it loads
with ``torch.load(weights_only=True)``::

    format            "botaclip-adapter/2" (/1: written before centring and BotaSP; still read, as uncentred)
    objective         "contrastive" (BotaCLIP) or "supervised" (BotaSP)
    backbone          {name, model_name, dim, sha256, wavelengths, bands, chip_m, size_px}   (name: the registry
                      name, e.g. dofa-base; model_name: the model's own name, which differs at other chip sizes;
                      sha256: the weights file's sha256, or "random-init:seed=S" for a random backbone)
    centering         {source, feature_set, store, rows}: where the adapter's input centring (the
                      ``image_adapter.center`` buffer of ``model``) came from; source "none" for no centring
    config            the TrainConfig as a dict
    vocabulary        list of species names (the relevé encoder's input / the species head's output order)
    model             the best state dict (image adapter with its centring, relevé encoder and SigLIP t' and b, or
                      the species head)
    split             training and validation relevé ids, block_res, val_fraction
    history, summary  the per-epoch log and the final comparison with the untrained start
    state             the loop state for --resume (last epoch's weights, optimizer, RNG, counters)
    cross_fit         only for ``botaclip train --folds K``: {k, block_res, seed, blocks (int64 H3 cells),
                      folds (int64, fold of each block), releves {ids, lat, lng (degrees)}, adapters: K dicts
                      {fold, model, vocabulary, split (with held_out: the ids of fold k), history, summary}};
                      the top-level model is then the full adapter, trained on every relevé

``load_adapter(path)`` returns an :class:`AdapterBundle` whose ``transform`` maps unit-normalised backbone
embeddings [N, D] to unit-normalised adapted embeddings [N, E] (torch only: no imagery, no store), with
``cross_fit`` holding the K fold adapters of a cross-fitted checkpoint.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from botaclip.atomic import atomic_write
from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param
from botaclip.model.botaclip import BotaCLIP, BotaSP, ImageAdapter, ReleveEncoder
from botaclip.model.vocabulary import SpeciesVocabulary

CHECKPOINT_FORMAT = "botaclip-adapter/2"
READABLE_FORMATS = ("botaclip-adapter/1", CHECKPOINT_FORMAT)


def backbone_identity(weights_sha256: str | None, seed: int = 0) -> str:
    """The string that identifies a backbone's weights: their sha256, or ``random-init:seed=S``."""
    return weights_sha256 if weights_sha256 else f"random-init:seed={int(seed)}"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Writes ``payload`` atomically (temp file in the same folder, then rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a BotaCLIP checkpoint with ``weights_only=True``; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"adapter checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a text file would fail as "KeyError: 101"
        raise InvalidInputError(f"{path} is not a BotaCLIP adapter checkpoint (not a PyTorch file: a text file, or a "
                                "truncated one?); give the .pt file written by `botaclip train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, damaged archives, foreign objects
        raise BotaclipError(f"cannot read adapter checkpoint {path} (damaged, or not written by `botaclip train`): "
                            f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") not in READABLE_FORMATS:
        raise InvalidInputError(f"{path} is not a BotaCLIP adapter checkpoint (written by `botaclip train`)")
    return ckpt


def model_from_checkpoint(ckpt: dict, part: dict | None = None) -> BotaCLIP | BotaSP:
    """Rebuilds the trained module (best weights) from a loaded checkpoint: the top-level adapter, or ``part``
    (one of ``ckpt["cross_fit"]["adapters"]``, which has its own model and vocabulary)."""
    from botaclip.model.train import TrainConfig, build_model, loadable_state

    part = part or ckpt
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(int(ckpt["backbone"]["dim"]), len(part["vocabulary"]), config)
    model.load_state_dict(loadable_state(part["model"], model))
    model.eval()
    return model


@dataclass
class AdapterBundle:
    """A trained BotaCLIP (or BotaSP) adapter with the identity of the backbone it was trained on.

    Attributes:
        backbone: {name, dim, sha256, wavelengths, bands, chip_m, size_px} of the training backbone.
        embed_dim: E, the adapted embedding's dimension.
        adapter: the image adapter (eval mode, CPU), its input centring included.
        releve_encoder: the relevé encoder (eval mode, CPU), for relevé -> embedding queries; None for BotaSP.
        vocabulary: the encoder's (or species head's) species vocabulary.
        config, summary: the training config and final summary from the checkpoint.
        path: where it was loaded from.
        objective: "contrastive" (BotaCLIP) or "supervised" (BotaSP).
        species_head: BotaSP's linear species head (eval mode, CPU); None for BotaCLIP.
        centering: where the input centring came from ({source, feature_set, store, rows}).
        cross_fit: the fold adapters of a cross-fitted checkpoint (``botaclip train --folds K``), else None.
    """

    backbone: dict
    embed_dim: int
    adapter: ImageAdapter
    releve_encoder: ReleveEncoder | None
    vocabulary: SpeciesVocabulary
    config: dict
    summary: dict
    path: Path | None = None
    objective: str = "contrastive"
    species_head: torch.nn.Linear | None = None
    centering: dict = field(default_factory=dict)
    cross_fit: CrossFitAdapters | None = None

    @property
    def backbone_name(self) -> str:
        return str(self.backbone["name"])

    @property
    def sha256(self) -> str:
        """The training backbone's weights sha256, or ``random-init:seed=S``."""
        return str(self.backbone["sha256"])

    def check_backbone(self, name: str, sha256: str | None, dim: int | None = None, seed: int = 0) -> None:
        """Raises BotaclipError unless (name, weights) match the backbone this adapter was trained on.

        ``sha256`` is the weights file's sha256, or None for a randomly initialised backbone with ``seed``.
        """
        identity = backbone_identity(sha256, seed)
        # The registry name (dofa-small) or the model's own name (which spells out a non-224 px grid).
        names = {self.backbone_name, str(self.backbone.get("model_name") or self.backbone_name)}
        if name not in names or identity != self.sha256 or (dim is not None and int(dim) != self.dim):
            where = f" ({self.path})" if self.path else ""
            raise InvalidInputError(
                f"adapter{where} was trained on backbone {self.backbone_name} with weights {self.sha256}, "
                f"not {name} with weights {identity}; use the same {param('backbone')}/{param('weights')} or retrain the adapter"
            )

    @property
    def dim(self) -> int:
        """D, the backbone embedding dimension the adapter takes."""
        return int(self.backbone["dim"])

    @property
    def center(self) -> np.ndarray:
        """The input centring [D] (float32; zeros when the adapter is not centred)."""
        return self.adapter.center.detach().numpy().copy()

    @torch.no_grad()
    def transform(self, embeddings: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Unit-normalised backbone embeddings [N, D] -> unit-normalised adapted embeddings [N, E], float32."""
        x = np.asarray(embeddings)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"adapter expects backbone embeddings of shape [N, {self.dim}], got {list(x.shape)}")
        out = np.empty((x.shape[0], self.embed_dim), dtype=np.float32)
        for start in range(0, x.shape[0], batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            out[start : start + batch_size] = self.adapter(chunk).numpy()
        return out

    @torch.no_grad()
    def encode_releves(self, releve_ids, species, cover) -> tuple[list, np.ndarray, int]:
        """Long table columns -> (relevé ids, unit-normalised embeddings [N, E], number of ignored unknown rows)."""
        if self.releve_encoder is None:
            raise InvalidInputError(f"adapter {self.path or ''} was trained with {param('objective')} {self.objective} (BotaSP): "
                                    "it has no relevé encoder")
        matrix, ids, unknown = self.vocabulary.encode(releve_ids, species, cover)
        return ids, self.releve_encoder(torch.from_numpy(matrix)).numpy(), unknown

    def provenance(self) -> dict:
        """What a feature set derived with this adapter should record."""
        return {
            "adapter_path": str(self.path) if self.path else None,
            "adapter_embed_dim": self.embed_dim,
            "adapter_kind": self.config.get("adapter"),
            "objective": self.objective,
            "centering": dict(self.centering),
            "backbone": dict(self.backbone),
        }


@dataclass
class CrossFitAdapters:
    """The K fold adapters of a cross-fitted checkpoint and the spatial blocks behind them.

    Adapter k was trained (and validated) only on relevés whose block is not in fold k.

    Attributes:
        block_res: H3 resolution of the blocks.
        blocks: uint64 [B] H3 cells at ``block_res`` holding the relevés; folds: int64 [B], fold of each block.
        releve_ids, releve_lat, releve_lng: the relevés that trained any adapter (degrees, WGS84).
        adapters: K bundles, adapter k never saw fold k.
        seed: the seed of the fold assignment.
    """

    block_res: int
    blocks: np.ndarray
    folds: np.ndarray
    releve_ids: list[str]
    releve_lat: np.ndarray
    releve_lng: np.ndarray
    adapters: list[AdapterBundle]
    seed: int = 0

    @property
    def k(self) -> int:
        return len(self.adapters)


def _bundle(ckpt: dict, model: BotaCLIP | BotaSP, vocabulary: list, summary: dict, path) -> AdapterBundle:
    supervised = isinstance(model, BotaSP)
    return AdapterBundle(
        backbone=dict(ckpt["backbone"]),
        embed_dim=model.image_adapter.out_dim,
        adapter=model.image_adapter,
        releve_encoder=None if supervised else model.releve_encoder,
        vocabulary=SpeciesVocabulary.from_list(vocabulary),
        config=dict(ckpt["config"]),
        summary=dict(summary or {}),
        path=Path(path),
        objective=model.objective,
        species_head=model.species_head if supervised else None,
        centering=dict(ckpt.get("centering") or {"source": "none"}),
    )


def load_adapter(path: str | os.PathLike) -> AdapterBundle:
    """Loads a checkpoint written by ``botaclip train`` (``weights_only=True``) as an :class:`AdapterBundle`
    (with ``cross_fit`` set for a cross-fitted checkpoint)."""
    ckpt = load_checkpoint(path)
    bundle = _bundle(ckpt, model_from_checkpoint(ckpt), ckpt["vocabulary"], ckpt.get("summary"), path)
    cf = ckpt.get("cross_fit")
    if cf:
        folds = [_bundle(ckpt, model_from_checkpoint(ckpt, part), part["vocabulary"], part.get("summary"), path)
                 for part in sorted(cf["adapters"], key=lambda p: int(p["fold"]))]
        bundle.cross_fit = CrossFitAdapters(
            block_res=int(cf["block_res"]),
            blocks=np.asarray(cf["blocks"], dtype=np.int64).astype(np.uint64),
            folds=np.asarray(cf["folds"], dtype=np.int64),
            releve_ids=[str(r) for r in cf["releves"]["ids"]],
            releve_lat=np.asarray(cf["releves"]["lat"], dtype=np.float64),
            releve_lng=np.asarray(cf["releves"]["lng"], dtype=np.float64),
            adapters=folds, seed=int(cf.get("seed", 0)),
        )
    return bundle
