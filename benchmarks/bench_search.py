"""Search: exact flat vs the index `identify build-index` chooses (auto), on random unit vectors.

For each size and dimension it builds both indexes the way the builder does (plan_index, build_faiss_index,
tune_nprobe), then measures queries/s of each in one run and recall@10 of auto against exact. Prints one line
per case with the ratio auto/flat queries/s.

    .venv/bin/python benchmarks/bench_search.py [--sizes 10000,100000,1000000] [--dims 128,384,768] [--queries 1000]
        [--clusters N]   # N > 0: clustered vectors, as embeddings of N species are
        [--memory-budget MB]   # as build-index --memory-budget: IVF-PQ when the exact vectors would not fit
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from identify.vectors import faiss_module, faiss_threads
from identify.vectors.plan import apply_plan, build_faiss_index, build_planned_index, plan_index


def random_unit(n: int, dim: int, seed: int, clusters: int = 0) -> np.ndarray:
    """Unit vectors: uniform on the sphere, or (clusters > 0) around that many centres, as embeddings of
    photos of that many species would be."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345 + dim).standard_normal((max(clusters, 1), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: no float64 copy of a million rows
        size = min(100_000, n - start)
        chunk = rng.standard_normal((size, dim), dtype=np.float32)
        if clusters:
            chunk = centres[rng.integers(0, clusters, size)] + chunk * (0.5 / np.sqrt(dim))
        out[start : start + size] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def queries_per_second(index, queries: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    _, found = index.search(queries, k)
    return len(queries) / (time.perf_counter() - started), found


def case(n: int, dim: int, n_queries: int, clusters: int, memory_budget: int | None = None) -> dict:
    vectors = random_unit(n, dim, seed=n + dim, clusters=clusters)
    queries = random_unit(n_queries, dim, seed=1, clusters=clusters)
    ids = np.arange(n, dtype=np.int64)
    flat = build_faiss_index(ids, vectors, plan_index(n, "flat"))
    started = time.perf_counter()
    auto, plan = build_planned_index(ids, vectors, "auto", memory_budget)  # exactly what build-index publishes
    apply_plan(auto, plan)
    build_seconds = time.perf_counter() - started
    flat_qps, exact = queries_per_second(flat, queries)
    auto_qps, found = queries_per_second(auto, queries)
    recall = float(np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact.tolist(), found.tolist(), strict=True)]))
    return {"n": n, "dim": dim, "auto": plan.factory, "nprobe": plan.nprobe, "build_s": round(build_seconds, 1),
            "flat_qps": round(flat_qps, 1), "auto_qps": round(auto_qps, 1), "ratio": round(auto_qps / flat_qps, 2),
            "recall_at_10": round(recall, 3), "tuned_recall_at_10": plan.recall_at_10,
            **bytes_per_vector(auto, n, dim, plan.factory.endswith(",RFlat")), "k_factor": plan.k_factor}


def bytes_per_vector(index, n: int, dim: int, reranks: bool) -> dict:  # type: ignore[no-untyped-def]
    """The index file's bytes per vector, and those a server holds in memory (a re-ranking layer's full vectors
    stay in the file, memory-mapped, read a few per query)."""
    on_disk = len(faiss_module().serialize_index(index)) / n
    return {"bytes_per_vector": round(on_disk, 1), "scanned_bytes_per_vector": round(on_disk - (4 * dim if reranks else 0), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", default="128,384,768")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=0,
                        help="0: uniform random unit vectors (the issue's case); N: clustered around N centres")
    parser.add_argument("--memory-budget", type=float, default=None, help="MB, as build-index --memory-budget")
    args = parser.parse_args()
    budget = int(args.memory_budget * 2**20) if args.memory_budget else None
    print(f"data: {'uniform random unit vectors' if not args.clusters else f'{args.clusters} clusters'}; "
          f"{args.queries} queries; FAISS threads {faiss_threads()}", flush=True)
    for n in (int(x) for x in args.sizes.split(",")):
        for dim in (int(x) for x in args.dims.split(",")):
            result = case(n, dim, args.queries, args.clusters, budget)
            print(f"n={n:>8} d={dim:>4}  flat {result['flat_qps']:>9.1f} q/s  auto {result['auto']:<14} "
                  f"nprobe={result['nprobe']}  {result['auto_qps']:>9.1f} q/s  ratio {result['ratio']:>6.2f}x  "
                  f"recall@10 {result['recall_at_10']:.3f}  {result['bytes_per_vector']} B/vector on disk, "
                  f"{result['scanned_bytes_per_vector']} in memory  k_factor={result['k_factor']}  "
                  f"(build {result['build_s']} s)", flush=True)
            print("JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
