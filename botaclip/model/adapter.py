"""BotaCLIP checkpoints: writing them, and loading the adapter to derive adapted embeddings from backbone ones.

A checkpoint is a ``torch.save``d dict of tensors, str, int, float, bool, None, lists and dicts only, so it loads
with ``torch.load(weights_only=True)``::

    format            "botaclip-adapter/1"
    backbone          {name, model_name, dim, sha256, wavelengths, bands, chip_m, size_px}   (name: the registry
                      name, e.g. dofa-base; model_name: the model's own name, which differs at other chip sizes;
                      sha256: the weights file's sha256, or "random-init:seed=S" for a random backbone)
    config            the TrainConfig as a dict
    vocabulary        list of species names (the relevé encoder's input order)
    model             the best state dict (image adapter, relevé encoder, SigLIP t' and b)
    history, summary  the per-epoch log and the final comparison with the untrained start
    state             the loop state for --resume (last epoch's weights, optimizer, RNG, counters)

``load_adapter(path)`` returns an :class:`AdapterBundle` whose ``transform`` maps unit-normalised backbone
embeddings [N, D] to unit-normalised adapted embeddings [N, E] (torch only: no imagery, no store).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from botaclip.atomic import atomic_write
from botaclip.errors import BotaclipError
from botaclip.model.botaclip import BotaCLIP, ImageAdapter, ReleveEncoder
from botaclip.model.vocabulary import SpeciesVocabulary

CHECKPOINT_FORMAT = "botaclip-adapter/1"


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
        raise BotaclipError(f"adapter checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a text file would fail as "KeyError: 101"
        raise BotaclipError(f"{path} is not a BotaCLIP adapter checkpoint (not a PyTorch file: a text file, or a "
                            "truncated one?); give the .pt file written by `botaclip train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, damaged archives, foreign objects
        raise BotaclipError(f"cannot read adapter checkpoint {path} (damaged, or not written by `botaclip train`): "
                            f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise BotaclipError(f"{path} is not a BotaCLIP adapter checkpoint (written by `botaclip train`)")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> BotaCLIP:
    """Rebuilds the trained BotaCLIP module (best weights) from a loaded checkpoint."""
    from botaclip.model.train import TrainConfig, build_model

    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(int(ckpt["backbone"]["dim"]), len(ckpt["vocabulary"]), config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model


@dataclass
class AdapterBundle:
    """A trained BotaCLIP adapter with the identity of the backbone it was trained on.

    Attributes:
        backbone: {name, dim, sha256, wavelengths, bands, chip_m, size_px} of the training backbone.
        embed_dim: E, the adapted embedding's dimension.
        adapter: the image adapter (eval mode, CPU).
        releve_encoder: the relevé encoder (eval mode, CPU), for relevé -> embedding queries.
        vocabulary: the encoder's species vocabulary.
        config, summary: the training config and final summary from the checkpoint.
        path: where it was loaded from.
    """

    backbone: dict
    embed_dim: int
    adapter: ImageAdapter
    releve_encoder: ReleveEncoder
    vocabulary: SpeciesVocabulary
    config: dict
    summary: dict
    path: Path | None = None

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
            raise BotaclipError(
                f"adapter{where} was trained on backbone {self.backbone_name} with weights {self.sha256}, "
                f"not {name} with weights {identity}; use the same --backbone/--weights or retrain the adapter"
            )

    @property
    def dim(self) -> int:
        """D, the backbone embedding dimension the adapter takes."""
        return int(self.backbone["dim"])

    @torch.no_grad()
    def transform(self, embeddings: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Unit-normalised backbone embeddings [N, D] -> unit-normalised adapted embeddings [N, E], float32."""
        x = np.asarray(embeddings)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise BotaclipError(f"adapter expects backbone embeddings of shape [N, {self.dim}], got {list(x.shape)}")
        out = np.empty((x.shape[0], self.embed_dim), dtype=np.float32)
        for start in range(0, x.shape[0], batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            out[start : start + batch_size] = self.adapter(chunk).numpy()
        return out

    @torch.no_grad()
    def encode_releves(self, releve_ids, species, cover) -> tuple[list, np.ndarray, int]:
        """Long table columns -> (relevé ids, unit-normalised embeddings [N, E], number of ignored unknown rows)."""
        matrix, ids, unknown = self.vocabulary.encode(releve_ids, species, cover)
        return ids, self.releve_encoder(torch.from_numpy(matrix)).numpy(), unknown

    def provenance(self) -> dict:
        """What a feature set derived with this adapter should record."""
        return {
            "adapter_path": str(self.path) if self.path else None,
            "adapter_embed_dim": self.embed_dim,
            "adapter_kind": self.config.get("adapter"),
            "backbone": dict(self.backbone),
        }


def load_adapter(path: str | os.PathLike) -> AdapterBundle:
    """Loads a checkpoint written by ``botaclip train`` (``weights_only=True``) as an :class:`AdapterBundle`."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    return AdapterBundle(
        backbone=dict(ckpt["backbone"]),
        embed_dim=model.image_adapter.out_dim,
        adapter=model.image_adapter,
        releve_encoder=model.releve_encoder,
        vocabulary=SpeciesVocabulary.from_list(ckpt["vocabulary"]),
        config=dict(ckpt["config"]),
        summary=dict(ckpt.get("summary") or {}),
        path=Path(path),
    )
