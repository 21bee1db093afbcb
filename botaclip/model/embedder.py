"""Batched DOFA inference over streams of image chips, on CPU or CUDA.

    embedder = Embedder(DOFA.base().load_checkpoint(path), wavelengths=[0.665, 0.56, 0.49], normalize=True)
    for emb in embedder.embed_stream(chip_batches):   # each batch: float array [N, C, 224, 224], normalised
        ...                                            # emb: float32 [N, D], unit vectors

What makes it fast: the patch kernel is generated once for the band set; everything runs under
`torch.inference_mode`; timm's attention uses fused scaled-dot-product attention; on CUDA the blocks run in
bf16 autocast (the residual stream, pooling and LayerNorms stay in float32), host batches go through pinned
memory with non-blocking copies on a side stream so the next batch uploads while the current one computes;
optionally `torch.compile`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from botaclip.errors import InvalidInputError
from botaclip.model.device import resolve_device
from botaclip.model.dofa import DOFA, validate_wavelengths

__all__ = ["Embedder", "resolve_device", "resolve_dtype"]

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The compute dtype: `auto` -> bf16 on a CUDA device that supports it, float32 otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16):
            raise InvalidInputError(f"unsupported compute dtype {dtype}; use fp32 or bf16")
        return dtype
    name = str(dtype).lower()
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise InvalidInputError(f"unknown dtype {dtype!r}; use auto, fp32 or bf16")
    return _DTYPES[name]


@dataclass
class _Chunk:
    batch_index: int  # which input batch this chunk belongs to
    last: bool  # the last chunk of its input batch
    rows: int  # real rows (the rest is padding for torch.compile's fixed shapes)
    host: Tensor


class Embedder:
    """Embeds batches of chips with a DOFA model: `embed(x)` for one array, `embed_stream(batches)` for many.

    Args:
        model: the DOFA backbone (moved to `device` and put in eval mode).
        wavelengths: band wavelengths in µm, one per channel of every input batch.
        device: `auto` (CUDA when present), `cpu` or `cuda[:i]`.
        batch_size: chips per forward pass; larger input batches are split, results re-joined.
        dtype: compute dtype, `auto` (bf16 on CUDA, fp32 on CPU), `fp32` or `bf16` (autocast).
        compile: run the forward pass through `torch.compile` (padding the last batch to a fixed shape).
        normalize: return unit-length embeddings (what the feature store keeps).
    """

    def __init__(
        self,
        model: DOFA,
        wavelengths: Sequence[float],
        device: str | torch.device = "auto",
        batch_size: int = 64,
        dtype: str | torch.dtype = "auto",
        compile: bool = False,
        normalize: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.wavelengths = validate_wavelengths(wavelengths)
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.compiled = bool(compile)
        self.model = model.to(self.device).eval()
        self.model.warn_if_random_init()
        self._forward = torch.compile(self._forward_eager, dynamic=False) if compile else self._forward_eager

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    def provenance(self) -> dict[str, Any]:
        """The model's provenance plus how it was run (bands, precision, normalisation)."""
        return {
            **self.model.provenance(),
            "wavelengths": list(self.wavelengths),
            "compute_dtype": str(self.dtype).replace("torch.", ""),
            "normalized": self.normalize,
        }

    # -- one forward pass -------------------------------------------------------------------------------------

    def _forward_eager(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else nullcontext()
        )
        with autocast:
            tokens = self.model.forward_features_with_kernel(x, weight, bias)
        emb = self.model.forward_head(tokens, pre_logits=True)  # float32 pooling + LayerNorm
        if self.normalize:
            emb = F.normalize(emb, dim=-1)
        return emb

    def _run(self, x: Tensor) -> Tensor:
        # The kernel is generated in float32 and cached by the model; fetched per batch so that changed
        # weights are picked up (a dictionary lookup).
        with torch.inference_mode():
            weight, bias = self.model.patch_kernel(self.wavelengths, dtype=torch.float32, device=self.device)
            return self._forward(x, weight, bias)

    # -- input ------------------------------------------------------------------------------------------------

    def _as_tensor(self, batch: np.ndarray | Tensor) -> Tensor:
        if isinstance(batch, Tensor):
            x = batch.detach()
        else:
            array = np.asarray(batch)
            if not np.issubdtype(array.dtype, np.floating):
                raise InvalidInputError(f"images must be float (normalised); got an array of {array.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        self.model.check_input(x, self.wavelengths)
        return x.to(dtype=torch.float32).contiguous()

    def _chunks(self, batches: Iterable[np.ndarray | Tensor]) -> Iterator[_Chunk | int]:
        """Split input batches into model batches; an int marks an empty input batch."""
        for index, batch in enumerate(batches):
            x = self._as_tensor(batch)
            n = x.shape[0]
            if n == 0:
                yield index
                continue
            for start in range(0, n, self.batch_size):
                part = x[start : start + self.batch_size]
                rows = part.shape[0]
                if self.compiled and rows < self.batch_size:
                    pad = part.new_zeros((self.batch_size - rows, *part.shape[1:]))
                    part = torch.cat([part, pad])
                yield _Chunk(index, start + self.batch_size >= n, rows, part)

    # -- public -----------------------------------------------------------------------------------------------

    def embed(self, x: np.ndarray | Tensor) -> np.ndarray:
        """Embed one array of chips [N, C, H, W] (float, normalised) -> float32 [N, D]."""
        return next(iter(self.embed_stream([x])))

    def embed_stream(self, batches: Iterable[np.ndarray | Tensor]) -> Iterator[np.ndarray]:
        """Embed a stream of chip batches, yielding one float32 [N_i, D] array per input batch, in order.

        On CUDA the upload of the next model batch overlaps the computation of the current one.
        """
        if self.device.type == "cuda":
            yield from self._stream_cuda(batches)
        else:
            yield from self._stream_cpu(batches)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.embed_dim), dtype=np.float32)

    def _stream_cpu(self, batches: Iterable[np.ndarray | Tensor]) -> Iterator[np.ndarray]:
        parts: list[np.ndarray] = []
        for chunk in self._chunks(batches):
            if isinstance(chunk, int):
                yield self._empty()
                continue
            emb = self._run(chunk.host.to(self.device))
            parts.append(emb[: chunk.rows].float().numpy())
            if chunk.last:
                yield parts[0] if len(parts) == 1 else np.concatenate(parts)
                parts = []

    def _stream_cuda(self, batches: Iterable[np.ndarray | Tensor]) -> Iterator[np.ndarray]:
        device = self.device
        copy_stream = torch.cuda.Stream(device)
        compute_stream = torch.cuda.current_stream(device)

        def upload(chunk: _Chunk) -> tuple[_Chunk, Tensor, torch.cuda.Event]:
            host = chunk.host
            if host.device.type == "cpu" and not host.is_pinned():
                host = host.pin_memory()
            with torch.cuda.stream(copy_stream):
                on_device = host.to(device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(copy_stream)
            return chunk, on_device, ready

        chunks = self._chunks(batches)
        parts: list[tuple[Tensor, torch.cuda.Event]] = []  # pinned results of the current input batch
        pending: tuple[_Chunk, Tensor, torch.cuda.Event] | None = None
        empties: list[int] = []

        def next_upload() -> tuple[_Chunk, Tensor, torch.cuda.Event] | None:
            for chunk in chunks:
                if isinstance(chunk, int):
                    empties.append(chunk)
                    continue
                return upload(chunk)
            return None

        def flush() -> np.ndarray:
            arrays = []
            for host_out, done in parts:
                done.synchronize()
                arrays.append(host_out.numpy())
            parts.clear()
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

        pending = next_upload()
        while empties:
            empties.pop(0)
            yield self._empty()
        while pending is not None:
            chunk, on_device, ready = pending
            compute_stream.wait_event(ready)
            on_device.record_stream(compute_stream)
            emb = self._run(on_device)[: chunk.rows]
            host_out = torch.empty(emb.shape, dtype=torch.float32, pin_memory=True)
            host_out.copy_(emb, non_blocking=True)
            done = torch.cuda.Event()
            done.record(compute_stream)
            parts.append((host_out, done))
            pending = next_upload()  # pinned and queued while the GPU is still busy with this batch
            if chunk.last:
                yield flush()
            while empties:
                empties.pop(0)
                yield self._empty()
