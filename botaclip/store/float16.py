"""float32 -> float16 rounding for the store's float16 embeddings, at the speed of the CPU's conversion instruction
when it can be had for free.

numpy converts float16 one value at a time in C (about 3-9 ns a value on the dev machine: 6-20 ms for one
partition of 2,401 x 768, as long as writing the partition's Parquet file), torch with the CPU's vectorised
conversion (F16C; 0.2-1.3 ms). Both round to nearest, ties to even, with the same subnormals and infinities
(tests/test_store_encodings.py compares them bit for bit; only NaN payloads may differ, and embeddings refuse
NaN), so the stored bytes do not depend on which one ran.
torch is a dependency of botaclip but takes seconds to import, so it is used only when the process has loaded it
already (`botaclip index`, training, any caller that ran a model); otherwise numpy converts.
"""

from __future__ import annotations

import sys

import numpy as np

# Elements per torch call: torch's grain size, below which it converts in the calling thread. One call over a whole
# partition wakes torch's OpenMP threads, which on a loaded machine wait for each other (17 ms median for one
# 2,401 x 768 partition at load 14, against 1.3 ms in chunks; the CPU time drops from 8 ms to 1.3 ms too).
_CHUNK = 32768


def to_float16(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write float32 `x` rounded to float16 into `out` (same shape, float16) and return `out`."""
    torch = sys.modules.get("torch")
    if (torch is not None and x.dtype == np.float32 and out.dtype == np.float16 and x.shape == out.shape
            and x.flags.c_contiguous and x.flags.writeable and out.flags.c_contiguous and out.flags.writeable):
        src, dst = torch.from_numpy(x).view(-1), torch.from_numpy(out).view(-1)
        for i in range(0, src.numel(), _CHUNK):
            dst[i:i + _CHUNK].copy_(src[i:i + _CHUNK])
    else:
        np.copyto(out, x, casting="unsafe")
    return out
