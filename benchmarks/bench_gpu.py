"""The GPU path, measured against the CPU in one run on a GPU machine:

  1. FAISS exact search at 1M x 128 clustered vectors: GPU (all GPUs) queries/s against CPU queries/s;
  2. a float16 GPU index (`useFloat16`) against the float32 GPU index: queries/s and recall@10;
  3. the forward pass of a birder backbone, batched: GPU with float16 autocast against GPU float32 against CPU;
  4. `identify build-index --half` on the GPU against the same command on the CPU (images/s).

On a machine without a GPU it says so ("skipped: no GPU") and exits 0: no figure is made up. Run it on a GPU
machine through the `device` tool (see BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_gpu.py [--vectors 1000000] [--network xcit_nano12_p16] [--images 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def gpus() -> tuple[int, int]:
    """(CUDA devices torch sees, GPUs FAISS sees)."""
    import torch

    from identify.vectors import gpu_count

    return (torch.cuda.device_count() if torch.cuda.is_available() else 0), gpu_count()


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    from benchmarks.bench_search import random_unit

    return random_unit(n, dim, seed, clusters=1000)


def search_ratios(n: int, dim: int = 128, n_queries: int = 10_000) -> dict:
    from identify.vectors import faiss_module

    faiss = faiss_module()
    vectors, queries = clustered(n, dim, 3), clustered(n_queries, dim, 4)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(vectors)

    def qps(index) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
        index.search(queries[:100], 10)  # warm-up (GPU kernels, caches)
        started = time.perf_counter()
        _, found = index.search(queries, 10)
        return n_queries / (time.perf_counter() - started), found

    cpu_qps, exact = qps(cpu)
    gpu_qps, _ = qps(faiss.index_cpu_to_all_gpus(cpu))
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True
    half_qps, found = qps(faiss.index_cpu_to_all_gpus(cpu, co=options))
    recall = float(np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact.tolist(), found.tolist())]))
    return {"vectors": n, "cpu_qps": round(cpu_qps), "gpu_qps": round(gpu_qps), "gpu_vs_cpu": round(gpu_qps / cpu_qps, 1),
            "fp16_qps": round(half_qps), "fp16_vs_fp32": round(half_qps / gpu_qps, 2), "fp16_recall_at_10": round(recall, 4)}


def forward_ratios(checkpoint: Path, batch: int = 64, rounds: int = 10) -> dict:
    import torch

    from identify.backbone import load_backbone

    def images_per_second(device: str, half: bool) -> float:
        backbone = load_backbone(str(checkpoint), device=torch.device(device), half=half)
        size = backbone.identity.size
        tensors = torch.rand(batch, 3, *size)
        backbone.forward(tensors)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(rounds):
            backbone.forward(tensors)
        if device == "cuda":
            torch.cuda.synchronize()
        return batch * rounds / (time.perf_counter() - started)

    cpu = images_per_second("cpu", False)
    fp32 = images_per_second("cuda", False)
    fp16 = images_per_second("cuda", True)
    return {"cpu_img_s": round(cpu, 1), "gpu_fp32_img_s": round(fp32, 1), "gpu_fp16_img_s": round(fp16, 1),
            "gpu_vs_cpu": round(fp32 / cpu, 1), "autocast_vs_fp32": round(fp16 / fp32, 2)}


def build_ratio(checkpoint: Path, images: int, root: Path) -> dict:
    from identify.synthetic import make_species_folder

    refs = make_species_folder(root / "refs", ["Passer domesticus", "Corvus cornix", "Columba livia", "Pica pica"],
                               per=images // 4)

    def images_per_second(data_dir: Path, extra: list[str], env: dict[str, str]) -> float:
        command = [str(BIN / "identify"), "build-index", "--model", str(checkpoint), "--images", str(refs),
                   "--name", "bench", "--json", *extra]
        run = subprocess.run(command, capture_output=True, text=True,
                             env={**os.environ, "IDENTIFY_DATA_DIR": str(data_dir), **env})
        if run.returncode != 0:
            sys.exit(f"build-index failed: {run.stderr[-1500:]}")
        return float(json.loads(run.stdout.strip().splitlines()[-1])["images_per_second"])

    cpu = images_per_second(root / "cpu", [], {"CUDA_VISIBLE_DEVICES": ""})
    gpu = images_per_second(root / "gpu", ["--half"], {})
    return {"build_cpu_img_s": cpu, "build_gpu_img_s": gpu, "build_gpu_vs_cpu": round(gpu / cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--network", default="xcit_nano12_p16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=512)
    options = parser.parse_args()
    torch_gpus, faiss_gpus = gpus()
    if torch_gpus == 0 or faiss_gpus == 0:
        print(f"skipped: no GPU (torch sees {torch_gpus} CUDA devices, FAISS sees {faiss_gpus} GPUs; FAISS needs "
              "the faiss-gpu build: make test FAISS=gpu). No figure was measured.")
        return
    from identify.synthetic import write_birder_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        checkpoint = write_birder_checkpoint(options.network, ["a", "b", "c", "d"], options.size,
                                             root / f"{options.network}.pt")
        result = {"gpus": torch_gpus, **search_ratios(options.vectors), **forward_ratios(checkpoint),
                  **build_ratio(checkpoint, options.images, root)}
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.bench_search` from a checkout
    main()
