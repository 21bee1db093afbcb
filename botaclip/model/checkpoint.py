"""Reading DOFA checkpoints safely and fitting them to a model, with errors that say what to do.

Two published formats load (their parameter names are the same; the files differ in what else they hold):

- the original release (`DOFA_ViT_base_e100.pth`, `DOFA_ViT_large_e100.pth`, Hugging Face earthflow/DOFA):
  a raw state dict saved from the pretraining model, with extra keys `mask_token`, `norm.weight`, `norm.bias`,
  `projector.weight`, `projector.bias` that the encoder does not use; they are dropped by name;
- the TorchGeo conversion (`dofa_base_patch16_224-a0275954.pth`, `dofa_large_patch16_224-0ff904d3.pth`):
  the same encoder keys without the extras.

Neither carries `fc_norm.*` (the pooled-feature LayerNorm) or `head.*`: those keep their defaults here.
Any other missing or unexpected key is an error naming the keys. Files are read with
`torch.load(weights_only=True)`: a pickle that carries code or custom objects is refused, never run.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from botaclip.atomic import sha256_file
from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param
from botaclip.model.dofa import DOFA, DOFA_CONFIGS

__all__ = [
    "IGNORED_CHECKPOINT_KEYS",
    "describe_checkpoint_size",
    "fit_state_dict",
    "load_dofa_checkpoint",
    "read_checkpoint",
    "sha256_file",
]

#: Keys of the original release that belong to the pretraining setup, not the encoder: dropped knowingly.
IGNORED_CHECKPOINT_KEYS = re.compile(r"^(mask_token|norm\.(weight|bias)|projector\..+)$")
#: Model keys no checkpoint carries: they keep the values the model has (fc_norm is reset to 1, 0).
_INITIALISED_HERE = re.compile(r"^(fc_norm|head)\.")
_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")
_WRAPPER_KEYS = ("model", "state_dict")
_MAX_LISTED = 8


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], str]:
    """Read a checkpoint file into a flat state dict of tensors; returns it with the file's sha256.

    Accepts a raw state dict or one wrapped under `model` or `state_dict` (training checkpoints).
    Raises BotaclipError naming the file if it is missing, not a PyTorch file, carries pickled code or
    custom objects, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    sha = sha256_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise InvalidInputError(
                f"refused to load {path}: it contains pickled Python objects or code, not just tensors "
                "(loading uses weights_only=True); re-save it as a plain state dict with "
                "torch.save(model.state_dict(), ...) from a source you trust"
            ) from None
        raise BotaclipError(f"{path} is not a readable PyTorch checkpoint ({exc})") from None
    except Exception as exc:  # zip/pickle readers raise RuntimeError, EOFError, KeyError... on damaged files
        raise BotaclipError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}); is the file complete?"
        ) from None

    if isinstance(obj, Mapping):
        for wrapper in _WRAPPER_KEYS:
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InvalidInputError(
            f"{path} holds no state dict: expected a dict of tensors, raw or under 'model' or 'state_dict'"
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise InvalidInputError(f"{path}: state dict entries that are not tensors: {_listed(not_tensors)}")
    return {str(k): v for k, v in obj.items()}, sha


def describe_checkpoint_size(state: Mapping[str, Tensor]) -> tuple[str, str | None]:
    """What model size a state dict looks like: (description, backbone name or None).

    `("DOFA-large", "dofa-large")` for a published size, else a description of its dimensions.
    """
    dims = None
    for key in ("cls_token", "pos_embed"):
        if key in state and state[key].ndim >= 1:
            dims = int(state[key].shape[-1])
            break
    depth = 1 + max((int(m.group(1)) for k in state if (m := _BLOCK_INDEX.match(k))), default=-1)
    for name, config in DOFA_CONFIGS.items():
        if name != "dofa-tiny" and (config.embed_dim, config.depth) == (dims, depth):
            return "DOFA-" + name.split("-", 1)[1], name
    return f"a DOFA with embed_dim={dims} and {depth} blocks", None


def _size_hint(state: Mapping[str, Tensor]) -> str:
    description, name = describe_checkpoint_size(state)
    if name is None:
        return f"this checkpoint is {description}, not a published size"
    return f"this checkpoint is {description}: use {param('backbone')} {name}"


def fit_state_dict(model: DOFA, state: Mapping[str, Tensor], source: str = "checkpoint") -> list[str]:
    """Check a state dict against `model` and copy it in; returns the keys dropped as known extras.

    Errors (BotaclipError, naming `source`): a size mismatch (naming a key, both shapes and the size the file
    looks like), missing keys, unexpected keys. `fc_norm` is reset to its default affine when absent.
    """
    dropped = sorted(k for k in state if IGNORED_CHECKPOINT_KEYS.match(k))
    state = {k: v for k, v in state.items() if k not in dropped}
    expected = model.state_dict()

    mismatched = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    file_description, _ = describe_checkpoint_size(state)
    model_depth = model.config.depth
    file_depth = 1 + max((int(m.group(1)) for k in state if (m := _BLOCK_INDEX.match(k))), default=-1)
    if mismatched:
        key = mismatched[0]
        raise InvalidInputError(
            f"{source} does not fit {model.name}: {key} has shape {tuple(state[key].shape)} in the file but "
            f"{tuple(expected[key].shape)} in the model; {_size_hint(state)}"
        )
    if file_depth != model_depth and file_depth > 0:
        raise InvalidInputError(
            f"{source} does not fit {model.name}: the file has {file_depth} transformer blocks, the model "
            f"{model_depth}; {_size_hint(state)}"
        )

    unexpected = sorted(k for k in state if k not in expected)
    if unexpected:
        raise InvalidInputError(f"{source}: unexpected keys for {model.name}: {_listed(unexpected)}")
    missing = sorted(k for k in expected if k not in state and not _INITIALISED_HERE.match(k))
    if missing:
        raise InvalidInputError(
            f"{source}: keys missing for {model.name}: {_listed(missing)} (file looks like {file_description})"
        )

    non_float = [k for k, v in state.items() if not v.is_floating_point()]
    if non_float:
        raise InvalidInputError(f"{source}: weights that are not floating point: {_listed(non_float)}")

    with torch.no_grad():
        model.load_state_dict(state, strict=False)  # copy_ casts dtype and device to the model's
        if "fc_norm.weight" not in state:
            model.fc_norm.reset_parameters()
    model.clear_kernel_cache()
    return dropped


def load_dofa_checkpoint(model: DOFA, path: str | os.PathLike) -> list[str]:
    """Load a DOFA checkpoint file into `model` and record its sha256; returns the keys dropped as extras.

    The rules are those of `read_checkpoint` and `fit_state_dict`. On error the model is left unchanged.
    """
    state, sha = read_checkpoint(path)
    dropped = fit_state_dict(model, state, source=str(path))
    model.weights_sha256 = sha
    model.weights_file = Path(path).name
    model.random_init = False
    return dropped
