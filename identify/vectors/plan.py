"""Choosing, building and tuning a FAISS index for a collection (FAISS wiki, autofaiss): exact search up to
FLAT_LIMIT vectors, IVF above with `nprobe` tuned to a target recall, HNSW on request, and IVF-PQ (with OPQ)
when the vectors would not fit a memory budget."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from identify.errors import IdentifyError
from identify.vectors import faiss_module, gpu_count, normalised

log = logging.getLogger(__name__)

FLAT_LIMIT = 100_000  # exact search up to here (FAISS wiki: brute force is fine below ~100k-1M)
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw", "ivfpq")
# What a vector costs in memory besides its code: its id in the inverted list, in IDMap2's id map and in
# IDMap2's reverse hash map (about 16 bytes with the hash table's overhead).
ID_BYTES = 8 + 8 + 16
PQ_CODE_BYTES = (64, 48, 32, 24, 16, 12, 8, 4, 2, 1)  # sub-quantizers tried, biggest (most accurate) first
# k-means wants 39 to 256 points per centroid (FAISS); 64 keeps a million-vector build to minutes on a CPU.
TRAIN_POINTS_PER_LIST = 64
TARGET_RECALL = 0.95  # IVF: nprobe is raised until recall@10 on a sample of the collection reaches this
IVF_MIN_SPEEDUP = 2.0  # below this, exact search (recall 1) is worth its cost
# IVF-PQ re-ranks its best k * k_factor candidates exactly from the full vectors (kept on disk beside the codes
# and memory-mapped by servers); the planner tries these factors, smallest first, until the target recall.
RERANK_FACTORS = (4, 16, 64, 256)


@dataclass(frozen=True)
class IndexPlan:
    index_type: str  # flat, ivf, hnsw, ivfpq
    factory: str  # FAISS index_factory string, without the IDMap2 wrapper
    nprobe: int | None = None  # IVF: lists searched per query
    ef_search: int | None = None  # HNSW: candidate list size per query
    recall_at_10: float | None = None  # IVF, IVF-PQ: recall@10 against exact search, measured when tuned
    k_factor: int | None = None  # IVF-PQ: candidates re-ranked exactly per neighbour asked (FAISS IndexRefine)


def flat_bytes(count: int, dim: int) -> int:
    """Memory of an exact index: float32 vectors and their ids."""
    return count * (4 * dim + ID_BYTES)


def _ivf_lists(count: int) -> int:
    # IVF needs ~39 training points per list; small collections get fewer lists rather than a bad clustering.
    return max(1, min(int(4 * math.sqrt(max(count, 1))), count // 39))


def plan_index(count: int, requested: str = "auto", dim: int | None = None,
               memory_budget: int | None = None) -> IndexPlan:
    """The index for `count` vectors: exact up to FLAT_LIMIT, else IVF with 4*sqrt(N) lists (autofaiss); IVF-PQ
    when `memory_budget` (bytes) cannot hold the exact vectors of dimension `dim`."""
    if requested not in INDEX_TYPES:
        raise IdentifyError("bad_index_type", f"index type must be one of {', '.join(INDEX_TYPES)}")
    index_type = requested if requested != "auto" else ("flat" if count <= FLAT_LIMIT else "ivf")
    if requested == "auto" and memory_budget is not None and dim and flat_bytes(count, dim) > memory_budget:
        index_type = "ivfpq"
    if index_type == "flat":
        return IndexPlan("flat", "Flat")
    if index_type == "hnsw":
        return IndexPlan("hnsw", "HNSW32", ef_search=128)
    nlist = _ivf_lists(count)
    nprobe = max(1, min(nlist, nlist // 16 + 8))
    if index_type == "ivfpq":
        return IndexPlan("ivfpq", _pq_factory(count, dim or 0, nlist, memory_budget), nprobe=nprobe)
    return IndexPlan("ivf", f"IVF{nlist},Flat", nprobe=nprobe)


def _pq_factory(count: int, dim: int, nlist: int, memory_budget: int | None) -> str:
    """IVF-PQ with the most code bytes that fit the budget (and divide the dimension), OPQ-rotated where that
    helps. Codes are 8 bits wide when there are points enough to train 256 centroids per sub-quantizer, fewer
    bits below."""
    fitting = [m for m in PQ_CODE_BYTES if dim % m == 0 and m <= max(1, dim // 2)  # sub-vectors of 2+ dims
               and (memory_budget is None or count * (m + ID_BYTES) <= memory_budget)]
    if not fitting:
        smallest = count * (1 + ID_BYTES)
        raise IdentifyError("memory_budget_too_small", f"{count} vectors need at least {smallest / 2**20:.1f} MiB "
                            "even as 1-byte codes with their ids; raise --memory-budget")
    m = fitting[0]
    bits = max(1, min(8, int(math.log2(max(2, count // 39)))))
    # OPQ rotates the space so each sub-vector carries a fair share of the variance: it helps when sub-vectors
    # span several dimensions, and costs training time for nothing when they span one or two.
    rotation = f"OPQ{m}," if dim // m >= 4 else ""
    # RFlat: the full vectors beside the codes, to re-rank the codes' best candidates exactly. They live on disk
    # (memory-mapped when served); the budget is for what each query scans, the codes and ids.
    return f"{rotation}IVF{nlist},PQ{m}x{bits},RFlat"


def build_faiss_index(ids: np.ndarray, vectors: np.ndarray, plan: IndexPlan) -> Any:
    """A trained, filled `IDMap2` index (inner product) over the normalised vectors; on GPU when present."""
    faiss = faiss_module()
    unit = normalised(vectors)
    index = faiss.index_factory(unit.shape[1], f"IDMap2,{plan.factory}", faiss.METRIC_INNER_PRODUCT)
    if plan.index_type == "ivf":
        _train_ivf(faiss, index, unit)
    elif plan.index_type == "ivfpq":  # OPQ rotation, coarse centroids and PQ codebooks: FAISS trains them all
        index.train(_training_sample(unit, TRAIN_POINTS_PER_LIST * faiss.extract_index_ivf(index).nlist))
    index.add_with_ids(unit, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _training_sample(unit: np.ndarray, size: int) -> np.ndarray:
    if len(unit) <= size:
        return unit
    return np.ascontiguousarray(unit[np.random.default_rng(0).choice(len(unit), size, replace=False)])


def _train_ivf(faiss: Any, index: Any, unit: np.ndarray) -> None:
    """Spherical k-means for the coarse quantizer, on the GPUs when there are any (the costly part).

    CPU and GPU share this path; only the index that assigns points to centroids moves."""
    ivf = faiss.extract_index_ivf(index)
    sample = _training_sample(unit, TRAIN_POINTS_PER_LIST * ivf.nlist)
    clustering = faiss.Clustering(unit.shape[1], ivf.nlist)
    clustering.spherical = True  # centroids on the unit sphere, as the vectors are
    assigner = faiss.IndexFlatIP(unit.shape[1])
    if gpu_count() > 0:
        assigner = faiss.index_cpu_to_all_gpus(assigner)
    clustering.train(np.ascontiguousarray(sample), assigner)
    ivf.quantizer.add(faiss.vector_to_array(clustering.centroids).reshape(ivf.nlist, -1))
    ivf.is_trained = index.is_trained = True


def _best_of_two(search: Any) -> tuple[Any, float]:
    """The result of `search()` and its faster time of two runs (the first may pay for cold caches)."""
    times = []
    for _ in range(2):
        started = time.perf_counter()
        result = search()
        times.append(time.perf_counter() - started)
    return result, min(times)


def tune_nprobe(index: Any, vectors: np.ndarray, target: float = TARGET_RECALL, queries: int = 200,
                k: int = 10) -> tuple[int | None, float]:
    """(nprobe, recall@k): the smallest nprobe (1, 2, 4, ... lists, all of them last) whose recall@k against
    exact search reaches `target`, and the recall it reached. nprobe is None when IVF is then not at least
    IVF_MIN_SPEEDUP times faster than exact search (uniform data is like that: exact search is then the better
    index), or when not even every list reaches the target (IVF-PQ's codes may not; its recall says how far).

    The queries are a sample of the collection, each one's own row left out (a new photo is not indexed)."""
    faiss = faiss_module()
    unit = normalised(vectors)
    rows = np.random.default_rng(1).choice(len(unit), min(queries, len(unit)), replace=False)
    sample = np.ascontiguousarray(unit[rows])
    id_map = faiss.vector_to_array(index.id_map)
    (_, exact), exact_seconds = _best_of_two(lambda: faiss.knn(sample, unit, k + 1, metric=faiss.METRIC_INNER_PRODUCT))
    truth = [set(id_map[row].tolist()) - {own} for row, own in zip(exact, id_map[rows], strict=True)]
    wanted = max(1, sum(len(t) for t in truth))
    ivf = faiss.extract_index_ivf(index)
    nprobe, recall = 1, 0.0
    while True:
        ivf.nprobe = min(nprobe, ivf.nlist)
        (_, found), ivf_seconds = _best_of_two(lambda: index.search(sample, k + 1))
        recall = sum(len(t & set(row.tolist())) for t, row in zip(truth, found, strict=True)) / wanted
        if recall >= target:
            return (ivf.nprobe if ivf_seconds * IVF_MIN_SPEEDUP <= exact_seconds else None), recall
        if nprobe >= ivf.nlist:
            return None, recall
        nprobe *= 2


def build_planned_index(ids: np.ndarray, vectors: np.ndarray, requested: str = "auto",
                        memory_budget: int | None = None) -> tuple[Any, IndexPlan]:
    """The index `build-index` publishes, and its plan. An IVF index gets the nprobe that reaches
    TARGET_RECALL; under `auto`, a collection where IVF cannot do that faster than exact search gets Flat. An
    IVF-PQ index (past the memory budget) gets the nprobe that reaches the target, or all its lists when its
    codes cannot, and says the recall@10 it has either way."""
    plan = plan_index(len(ids), requested, vectors.shape[1] if vectors.ndim == 2 else None, memory_budget)
    index = build_faiss_index(ids, vectors, plan)
    if plan.index_type not in ("ivf", "ivfpq"):
        return index, plan
    nlist = faiss_module().extract_index_ivf(index).nlist
    if plan.index_type == "ivfpq":
        return index, _tune_reranking(index, vectors, plan, int(nlist))
    nprobe, recall = tune_nprobe(index, vectors)
    if nprobe is None and requested == "auto":
        log.info("IVF reaches recall %.2f no faster than exact search here: publishing an exact index", TARGET_RECALL)
        plan = plan_index(len(ids), "flat")
        return build_faiss_index(ids, vectors, plan), plan
    return index, dataclasses.replace(plan, nprobe=nprobe or int(nlist), recall_at_10=round(recall, 4))


def _tune_reranking(index: Any, vectors: np.ndarray, plan: IndexPlan, nlist: int) -> IndexPlan:
    """IVF-PQ: the smallest re-ranking factor, then nprobe, that reach TARGET_RECALL (or the largest factor and
    every list when none does), with the recall@10 reached."""
    for k_factor in RERANK_FACTORS:
        apply_plan(index, dataclasses.replace(plan, k_factor=k_factor))
        nprobe, recall = tune_nprobe(index, vectors)
        if recall >= TARGET_RECALL:
            break
    return dataclasses.replace(plan, nprobe=nprobe or nlist, k_factor=k_factor, recall_at_10=round(recall, 4))


def apply_plan(index: Any, plan: IndexPlan) -> Any:
    """Set the plan's search parameters (IVF nprobe, HNSW efSearch, IVF-PQ's re-ranking factor) on a built
    index; returns the index."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if plan.nprobe is not None:
        try:  # through OPQ's pre-transform to the IVF inside
            faiss.extract_index_ivf(index).nprobe = plan.nprobe
        except RuntimeError:  # not an IVF index
            pass
    if plan.ef_search is not None and hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = plan.ef_search
    if plan.k_factor is not None and hasattr(inner, "k_factor"):
        inner.k_factor = plan.k_factor
    return index


def exact_knn(queries: np.ndarray, references: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, positions in `references`) of each query's k nearest, best first: exact search."""
    faiss = faiss_module()
    unit = normalised(references)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    return index.search(normalised(queries), min(k, len(unit)))


def close_pairs(similarities: np.ndarray, neighbours: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(row, neighbour, similarity) of every answer of a self-search (`exact_knn(v, v, k)`) at `threshold` or
    closer, the row itself and FAISS's padding left out: near-copies, look-alikes, whatever the threshold means."""
    close = (similarities >= threshold) & (neighbours >= 0) & (neighbours != np.arange(len(neighbours))[:, None])
    return [(int(row), int(neighbours[row, col]), float(similarities[row, col])) for row, col in np.argwhere(close)]


def linked_groups(count: int, links: Sequence[tuple[int, int]]) -> tuple[int, np.ndarray]:
    """(how many groups, a group number per row) when linked rows, and rows linked through others, are one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows, cols = [a for a, _ in links], [b for _, b in links]
    graph = coo_matrix((np.ones(len(links)), (rows, cols)), shape=(count, count))
    found, labels = connected_components(graph, directed=False)
    return int(found), labels
