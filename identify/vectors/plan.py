"""Choosing, building and tuning a FAISS index for a collection (FAISS wiki, autofaiss): exact search up to
FLAT_LIMIT vectors, IVF above with `nprobe` tuned to a target recall, HNSW on request."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from identify.errors import IdentifyError
from identify.vectors import faiss_module, gpu_count, normalised

log = logging.getLogger(__name__)

FLAT_LIMIT = 100_000  # exact search up to here (FAISS wiki: brute force is fine below ~100k-1M)
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
# k-means wants 39 to 256 points per centroid (FAISS); 64 keeps a million-vector build to minutes on a CPU.
TRAIN_POINTS_PER_LIST = 64
TARGET_RECALL = 0.95  # IVF: nprobe is raised until recall@10 on a sample of the collection reaches this
IVF_MIN_SPEEDUP = 2.0  # below this, exact search (recall 1) is worth its cost


@dataclass(frozen=True)
class IndexPlan:
    index_type: str  # flat, ivf, hnsw
    factory: str  # FAISS index_factory string, without the IDMap2 wrapper
    nprobe: int | None = None  # IVF: lists searched per query
    ef_search: int | None = None  # HNSW: candidate list size per query


def plan_index(count: int, requested: str = "auto") -> IndexPlan:
    """The index for `count` vectors: exact up to FLAT_LIMIT, else IVF with 4*sqrt(N) lists (autofaiss)."""
    if requested not in INDEX_TYPES:
        raise IdentifyError("bad_index_type", f"index type must be one of {', '.join(INDEX_TYPES)}")
    index_type = requested if requested != "auto" else ("flat" if count <= FLAT_LIMIT else "ivf")
    if index_type == "flat":
        return IndexPlan("flat", "Flat")
    if index_type == "hnsw":
        return IndexPlan("hnsw", "HNSW32", ef_search=128)
    # IVF needs ~39 training points per list; small collections get fewer lists rather than a bad clustering.
    nlist = max(1, min(int(4 * math.sqrt(max(count, 1))), count // 39))
    return IndexPlan("ivf", f"IVF{nlist},Flat", nprobe=max(1, min(nlist, nlist // 16 + 8)))


def build_faiss_index(ids: np.ndarray, vectors: np.ndarray, plan: IndexPlan) -> Any:
    """A trained, filled `IDMap2` index (inner product) over the normalised vectors; on GPU when present."""
    faiss = faiss_module()
    unit = normalised(vectors)
    index = faiss.index_factory(unit.shape[1], f"IDMap2,{plan.factory}", faiss.METRIC_INNER_PRODUCT)
    if plan.index_type == "ivf":
        _train_ivf(faiss, index, unit)
    index.add_with_ids(unit, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _train_ivf(faiss: Any, index: Any, unit: np.ndarray) -> None:
    """Spherical k-means for the coarse quantizer, on the GPUs when there are any (the costly part).

    CPU and GPU share this path; only the index that assigns points to centroids moves."""
    ivf = faiss.extract_index_ivf(index)
    sample = unit
    if len(unit) > TRAIN_POINTS_PER_LIST * ivf.nlist:
        sample = unit[np.random.default_rng(0).choice(len(unit), TRAIN_POINTS_PER_LIST * ivf.nlist, replace=False)]
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
                k: int = 10) -> int | None:
    """The smallest nprobe (1, 2, 4, ... lists) whose recall@k against exact search reaches `target`, or None
    when IVF is then not at least IVF_MIN_SPEEDUP times faster than exact search (uniform data is like that:
    exact search is then the better index, with recall 1).

    The queries are a sample of the collection, each one's own row left out (a new photo is not indexed)."""
    faiss = faiss_module()
    unit = normalised(vectors)
    rows = np.random.default_rng(1).choice(len(unit), min(queries, len(unit)), replace=False)
    sample = np.ascontiguousarray(unit[rows])
    id_map = faiss.vector_to_array(index.id_map)
    (_, exact), exact_seconds = _best_of_two(lambda: faiss.knn(sample, unit, k + 1, metric=faiss.METRIC_INNER_PRODUCT))
    truth = [set(id_map[row].tolist()) - {own} for row, own in zip(exact, id_map[rows], strict=True)]
    wanted = sum(len(t) for t in truth)
    ivf = faiss.extract_index_ivf(index)
    nprobe = 1
    while nprobe < ivf.nlist:
        ivf.nprobe = nprobe
        (_, found), ivf_seconds = _best_of_two(lambda: index.search(sample, k + 1))
        hits = sum(len(t & set(row.tolist())) for t, row in zip(truth, found, strict=True))
        if hits >= target * wanted:
            return nprobe if ivf_seconds * IVF_MIN_SPEEDUP <= exact_seconds else None
        nprobe *= 2
    return None


def build_planned_index(ids: np.ndarray, vectors: np.ndarray, requested: str = "auto") -> tuple[Any, IndexPlan]:
    """The index `build-index` publishes, and its plan. An IVF index gets the nprobe that reaches
    TARGET_RECALL; under `auto`, a collection where IVF cannot do that faster than exact search gets Flat."""
    plan = plan_index(len(ids), requested)
    index = build_faiss_index(ids, vectors, plan)
    if plan.index_type != "ivf":
        return index, plan
    nprobe = tune_nprobe(index, vectors)
    if nprobe is None and requested == "auto":
        log.info("IVF reaches recall %.2f no faster than exact search here: publishing an exact index", TARGET_RECALL)
        plan = plan_index(len(ids), "flat")
        return build_faiss_index(ids, vectors, plan), plan
    nlist = faiss_module().extract_index_ivf(index).nlist
    return index, dataclasses.replace(plan, nprobe=nprobe or int(nlist))


def apply_plan(index: Any, plan: IndexPlan) -> Any:
    """Set the plan's search parameters (IVF nprobe, HNSW efSearch) on a built index; returns the index."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if plan.nprobe is not None and hasattr(inner, "nprobe"):
        inner.nprobe = plan.nprobe
    if plan.ef_search is not None and hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = plan.ef_search
    return index


def exact_knn(queries: np.ndarray, references: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, positions in `references`) of each query's k nearest, best first: exact search."""
    faiss = faiss_module()
    unit = normalised(references)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    return index.search(normalised(queries), min(k, len(unit)))
