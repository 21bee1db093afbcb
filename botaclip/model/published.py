"""Published DOFA checkpoints: where they live, and how a downloaded file is checked.

This is the only place in botaclip that touches the network, and only when a user calls
`botaclip weights download`. The TorchGeo-hosted files are content-addressed: the 8 hex digits before
`.pth` are the start of the file's sha256, so a download is verified without trusting the server.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from botaclip.atomic import atomic_write, sha256_file
from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param
from botaclip.model.checkpoint import describe_checkpoint_size, read_checkpoint
from botaclip.store.outputs import make_output_dir

_TORCHGEO = "https://hf.co/torchgeo/dofa/resolve/b8db318b64a90b9e085ec04ba8851233c5893666"

#: Backbone name -> URL of the published checkpoint (TorchGeo conversion, corrected Aug 2024 kernel layout).
PUBLISHED_WEIGHTS: dict[str, str] = {
    "dofa-base": f"{_TORCHGEO}/dofa_base_patch16_224-a0275954.pth",
    "dofa-large": f"{_TORCHGEO}/dofa_large_patch16_224-0ff904d3.pth",
}

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt)$")


@dataclass(frozen=True)
class WeightsCheck:
    """What `verify_weights` found about a checkpoint file."""

    path: Path
    sha256: str
    size_bytes: int
    expected_prefix: str | None  # the hash prefix in the file name, if it has one
    tensors: int  # number of tensors in the state dict
    looks_like: str  # e.g. "DOFA-base", or the dimensions of an unpublished size
    backbone: str | None  # the --backbone name to use with it, when it is a published size

    @property
    def name_matches(self) -> bool | None:
        return None if self.expected_prefix is None else self.sha256.startswith(self.expected_prefix)


def hash_prefix_from_name(name: str) -> str | None:
    """The sha256 prefix a content-addressed file name carries (`dofa_base_patch16_224-a0275954.pth`), or None."""
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def verify_weights(path: str | os.PathLike) -> WeightsCheck:
    """Check a checkpoint file: its hash against the prefix in its name, and that it loads as plain tensors.

    Loading uses `torch.load(weights_only=True)`, so a file that carries code is refused, never run.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file not found: {path}")
    sha = sha256_file(path)
    prefix = hash_prefix_from_name(path.name)
    if prefix is not None and not sha.startswith(prefix):
        raise InvalidInputError(
            f"{path} is corrupt or not the published file: its sha256 starts {sha[:len(prefix)]}, "
            f"its name says {prefix}; download it again"
        )
    state, _ = read_checkpoint(path)
    description, backbone = describe_checkpoint_size(state)
    return WeightsCheck(path, sha, path.stat().st_size, prefix, len(state), description, backbone)


def download_weights(backbone: str, to_dir: str | os.PathLike, url: str | None = None, timeout_s: float = 60.0) -> Path:
    """Download the published checkpoint of `backbone` into `to_dir`, verify it, and return its path.

    `url` replaces the published address (a mirror); the hash prefix in the file name is checked all the same.
    The file appears under its final name only once complete and verified; an existing verified file is reused.
    """
    if url is None:
        if backbone not in PUBLISHED_WEIGHTS:
            known = ", ".join(PUBLISHED_WEIGHTS)
            raise InvalidInputError(f"no published weights for {backbone!r}; choose one of: {known}")
        url = PUBLISHED_WEIGHTS[backbone]
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if hash_prefix_from_name(name) is None:
        raise InvalidInputError(f"cannot verify {url}: its file name carries no sha256 prefix (NAME-<hex>.pth)")
    to_dir = make_output_dir(to_dir, what="weights folder")
    target = to_dir / name
    if target.is_file():
        verify_weights(target)
        return target

    def download(tmp: Path) -> None:  # kept (renamed into place) only when its sha256 matches the name
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (https or user-given)
                    shutil.copyfileobj(response, out, length=1 << 20)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise BotaclipError(f"download of {url} failed: {reason}; check the network or pass {param('url')}") from None
        expected = hash_prefix_from_name(name)
        sha = sha256_file(tmp)
        if not sha.startswith(expected):
            raise BotaclipError(
                f"downloaded file from {url} has sha256 {sha[:12]}…, expected a prefix {expected}: not kept"
            )

    atomic_write(target, download, suffix=".part")
    verify_weights(target)
    return target
