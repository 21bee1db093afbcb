"""DOFA inference throughput: botaclip's Embedder vs TorchGeo's reference DOFA, same weights.

    PYTHONPATH=/tmp/tg .venv/bin/python bench/inference.py            # CPU (2 threads), and GPU if present
    PYTHONPATH=/tmp/tg python bench/inference.py --skip-cpu --compile  # on a GPU machine

Prints images/s for DOFA-base, 224 px, 3 bands (RGB), after warm-up, median of timed repeats:
- CPU: batch 16, 2 threads, eager fp32, both under torch.inference_mode;
- GPU (when CUDA exists; otherwise a note): batch 256; TorchGeo eager fp32 vs botaclip fp32 and bf16
  (and compiled with --compile); host arrays in, host arrays out for both, so uploads are counted; plus the
  cosine similarity of botaclip's bf16 embeddings to the fp32 ones.

Needs only torch, timm and numpy, plus TorchGeo for the reference (never a botaclip dependency; install it
into a scratch folder: `pip install --target /tmp/tg --no-deps torchgeo` and set PYTHONPATH). Only
TorchGeo's `models/dofa.py` file is imported, so TorchGeo's other dependencies are not needed. The weights are
random (seed 0) and copied into the reference, so the comparison is exact; speed does not depend on them.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botaclip.model.dofa import DOFA, RandomInitWarning  # noqa: E402
from botaclip.model.embedder import Embedder  # noqa: E402

RGB = [0.665, 0.56, 0.49]


def load_reference():
    spec = importlib.util.find_spec("torchgeo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "dofa.py"
    module_spec = importlib.util.spec_from_file_location("torchgeo_models_dofa", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def timed(fn, repeats: int, sync=lambda: None) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def report(label: str, images: int, times: list[float], baseline: float | None = None) -> float:
    rate = images / statistics.median(times)
    extra = f"  ({rate / baseline:.2f}x reference)" if baseline else ""
    print(f"  {label:<42s} {rate:9.1f} images/s   median of {len(times)}{extra}")
    return rate


def bench_cpu(ours: DOFA, reference, args) -> None:
    torch.set_num_threads(args.cpu_threads)
    n = args.cpu_batch
    x = np.random.default_rng(0).normal(size=(n, 3, 224, 224)).astype(np.float32)
    xt = torch.from_numpy(x)
    embedder = Embedder(ours, RGB, device="cpu", batch_size=n, dtype="fp32")
    print(f"\nCPU: {args.model}, 224 px, 3 bands, batch {n}, {torch.get_num_threads()} threads, fp32 eager")

    def run_ours():
        embedder.embed(x)

    def run_ref():
        with torch.inference_mode():
            reference.forward_features(xt, RGB).numpy()

    runs = [("botaclip Embedder", run_ours)]
    if reference is not None:
        runs.insert(0, ("TorchGeo DOFA.forward_features", run_ref))
    for _, fn in runs:  # warm-up
        fn()
    times: dict[str, list[float]] = {label: [] for label, _ in runs}
    for _ in range(args.cpu_repeats):  # interleaved, so load from other processes hits both alike
        for label, fn in runs:
            times[label] += timed(fn, 1)
    baseline = None
    for label, _ in runs:
        rate = report(label, n, times[label], baseline)
        baseline = baseline or (rate if reference is not None else None)
    if reference is not None:
        # Each pair ran back to back, so the ratio within a pair is less affected by other load on the machine.
        ratios = [r / o for r, o in zip(times[runs[0][0]], times[runs[1][0]])]
        print(f"  paired speed ratio botaclip/TorchGeo: median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


def bench_gpu(ours: DOFA, reference, args) -> None:
    if not torch.cuda.is_available():
        print("\nGPU: skipped, no CUDA device here (run this script on a GPU machine for the GPU figures)")
        return
    device = torch.device("cuda")
    n, batches = args.gpu_batch, args.gpu_batches
    rng = np.random.default_rng(0)
    host = [rng.normal(size=(n, 3, 224, 224)).astype(np.float32) for _ in range(batches)]
    sync = torch.cuda.synchronize
    print(f"\nGPU: {torch.cuda.get_device_name(device)}, {args.model}, 224 px, 3 bands, batch {n}, "
          f"{batches} batches per run, host arrays in and out")

    baseline = None
    if reference is not None:
        reference.to(device)

        def run_ref():
            with torch.inference_mode():
                for x in host:
                    reference.forward_features(torch.from_numpy(x).to(device), RGB).cpu().numpy()

        run_ref()
        baseline = report("TorchGeo DOFA eager fp32", n * batches, timed(run_ref, args.gpu_repeats, sync))
        reference.cpu()
        torch.cuda.empty_cache()

    variants = [("botaclip fp32", dict(dtype="fp32")), ("botaclip bf16", dict(dtype="bf16"))]
    if args.compile:
        variants.append(("botaclip bf16 + torch.compile", dict(dtype="bf16", compile=True)))
    outputs = {}
    for label, options in variants:
        embedder = Embedder(ours, RGB, device="cuda", batch_size=n, **options)

        def run(label=label, embedder=embedder):
            outputs[label] = np.concatenate(list(embedder.embed_stream(host)))

        run()  # warm-up (and compilation)
        report(label, n * batches, timed(run, args.gpu_repeats, sync), baseline)
    ref32 = outputs["botaclip fp32"]
    for label, out in outputs.items():
        if label == "botaclip fp32":
            continue
        cos = (out * ref32).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref32, axis=1))
        print(f"  cosine({label}, fp32): min {cos.min():.5f}, mean {cos.mean():.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="dofa-base", choices=["dofa-tiny", "dofa-small", "dofa-base", "dofa-large"])
    parser.add_argument("--cpu-batch", type=int, default=16)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--cpu-repeats", type=int, default=5)
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--gpu-batches", type=int, default=4)
    parser.add_argument("--gpu-repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the GPU")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    args = parser.parse_args()

    heavy = [m for m in ("duckdb", "rasterio", "h3") if m in sys.modules]
    if heavy:
        print(f"note: importing botaclip.model pulled in {heavy}; it should need only torch and timm")

    warnings.simplefilter("ignore", RandomInitWarning)
    ours = DOFA.from_config(args.model, seed=0).eval()
    tg = load_reference()
    reference = None
    if tg is None:
        print("note: torchgeo not importable (PYTHONPATH=/tmp/tg?): timing botaclip only")
    else:
        c = ours.config
        reference = tg.DOFA(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, num_classes=0).eval()
        reference.load_state_dict(ours.state_dict(), strict=True)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            diff = (ours.embed(x, RGB) - reference.forward_features(x, RGB)).abs().max().item()
        print(f"same weights, fp32 CPU: max abs diff botaclip vs TorchGeo = {diff:.2e}")
    print(f"torch {torch.__version__}, timm fused attention: {ours.blocks[0].attn.fused_attn}")

    if not args.skip_cpu:
        bench_cpu(ours, reference, args)
    if not args.skip_gpu:
        bench_gpu(ours, reference, args)


if __name__ == "__main__":
    main()
