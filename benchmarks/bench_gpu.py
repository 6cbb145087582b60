"""The GPU path, measured against the CPU in one run on a GPU machine:

  1. FAISS exact search at 1M x 128 clustered vectors: GPU (all GPUs) queries/s against CPU queries/s;
  2. a float16 GPU index (`useFloat16`) against the float32 GPU index: queries/s and recall@10;
  3. the forward pass of a birder backbone, batched: GPU with float16 autocast against GPU float32 against CPU;
  4. `identify build-index --half` on the GPU against the same command on the CPU (images/s);
  5. the serving path on the GPU: the published index moved to the GPU as a server does (`to_search_device`),
     rows added live and a search restricted to some ids, each answer compared with the same steps on the CPU.

On a machine without a GPU it says so ("skipped: no GPU") and exits 0: no figure is made up. Run it on a GPU
machine through the `device` tool (see BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_gpu.py [--vectors 1000000] [--network xcit_nano12_p16] [--images 512] [--build-workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# `python -m identify` rather than the `identify` script: on a GPU machine the checkout is on PYTHONPATH and the
# package is not installed.
IDENTIFY = [sys.executable, "-m", "identify"]


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
    gpu_qps, on_gpu = qps(faiss.index_cpu_to_all_gpus(cpu))
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True
    half_qps, found = qps(faiss.index_cpu_to_all_gpus(cpu, co=options))
    return {"vectors": n, "cpu_qps": round(cpu_qps), "gpu_qps": round(gpu_qps),
            "search_gpu_vs_cpu": round(gpu_qps / cpu_qps, 1), "gpu_recall_at_10": round(recall_at_10(exact, on_gpu), 4), "fp16_qps": round(half_qps),
            "fp16_vs_fp32": round(half_qps / gpu_qps, 2), "fp16_recall_at_10": round(recall_at_10(exact, found), 4)}


def recall_at_10(exact: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact.tolist(), found.tolist(), strict=True)]))


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
    return {"forward_cpu_img_s": round(cpu, 1), "forward_gpu_fp32_img_s": round(fp32, 1),
            "forward_gpu_fp16_img_s": round(fp16, 1), "forward_gpu_vs_cpu": round(fp32 / cpu, 1),
            "forward_autocast_vs_fp32": round(fp16 / fp32, 2)}


def build_ratio(checkpoint: Path, images: int, root: Path, workers: int | None = None) -> dict:
    from identify.synthetic import make_species_folder

    refs = make_species_folder(root / "refs", ["Passer domesticus", "Corvus cornix", "Columba livia", "Pica pica"],
                               per=images // 4)

    def images_per_second(data_dir: Path, extra: list[str], env: dict[str, str]) -> float:
        command = [*IDENTIFY, "build-index", "--model", str(checkpoint), "--images", str(refs),
                   "--name", "bench", "--json", *extra, *(["--workers", str(workers)] if workers is not None else [])]
        run = subprocess.run(command, capture_output=True, text=True,
                             env={**os.environ, "IDENTIFY_DATA_DIR": str(data_dir), **env})
        if run.returncode != 0:
            sys.exit(f"build-index failed: {run.stderr[-1500:]}")
        return float(json.loads(run.stdout.strip().splitlines()[-1])["images_per_second"])

    cpu = images_per_second(root / "cpu", [], {"CUDA_VISIBLE_DEVICES": ""})
    gpu = images_per_second(root / "gpu", ["--half"], {})
    return {"build_cpu_img_s": cpu, "build_gpu_img_s": gpu, "build_gpu_vs_cpu": round(gpu / cpu, 1),
            "serving_path": serving_path(root / "gpu" / "indexes")}


def serving_path(indexes_dir: Path, name: str = "bench") -> str:
    """The published index as a server uses it: moved to the GPU, rows added live, searches restricted to a common
    and to a rare selection of ids (the rare one on a 5,000-row index, past what one GPU search returns); "same as
    CPU" when every answer equals the CPU's, else what differed or failed."""
    from identify.vectors.live import LiveIndex, empty_index
    from identify.vectors.published import VectorIndex, load_index, to_search_device

    def answers(index: VectorIndex) -> list[np.ndarray]:
        top = index.manifest.max_reference_id
        live = LiveIndex(index, top, ids_after=lambda _: [], vectors_of=lambda ids: (np.array(ids), None))
        rng = np.random.default_rng(5)
        added = rng.standard_normal((8, index.manifest.dim)).astype(np.float32)
        live.add(range(top + 1, top + 9), added)
        queries = np.concatenate([added, rng.standard_normal((8, index.manifest.dim)).astype(np.float32)])
        return [live.search(queries, 5)[1], live.search(queries, 5, allowed=np.arange(1, top + 9, 2))[1],
                live.search(queries, 5, allowed=np.arange(1, top + 9, max(1, top // 5)))[1]]

    def synthetic() -> VectorIndex:
        index = empty_index(64)
        index.add_with_ids(clustered(5000, 64, 7), np.arange(1, 5001))
        manifest = replace(load_index(indexes_dir, name).manifest, dim=64, count=5000, max_reference_id=5000)
        return VectorIndex(index, manifest)

    try:
        loaded = load_index(indexes_dir, name)
        on_gpu = to_search_device(loaded)
        if on_gpu is loaded:
            return "stayed on the CPU"
        gpu = answers(on_gpu) + answers(to_search_device(synthetic()))[1:]
        cpu = answers(load_index(indexes_dir, name)) + answers(synthetic())[1:]
    except Exception as exc:  # noqa: BLE001 - the point is to report what fails on a GPU
        return f"failed: {type(exc).__name__}: {exc}"[:300]
    same = [bool(np.array_equal(g, c)) for g, c in zip(gpu, cpu, strict=True)]
    return "same as CPU" if all(same) else f"differs from CPU (plain, common, rare; 5,000 rows: common, rare): {same}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--network", default="xcit_nano12_p16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--build-workers", type=int, default=None, help="build-index --workers (default: its own)")
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
                  **build_ratio(checkpoint, options.images, root, options.build_workers)}
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.bench_search` from a checkout
    main()
