"""Vector search: the only rooms of the project that import FAISS.

- `catalog`: the manifests and the list of published indexes, without FAISS (the command line's quick path);
- `plan`: which index type a collection gets, building and tuning it (and exact k-NN for evaluation);
- `published`: an index on disk with its manifest, written and read atomically, checked against the model;
- `live`: an index in a running process that follows SQL (rows other processes commit join it) and the
  versions that builds publish.

Cosine similarity is the inner product of L2-normalised vectors. Every index is wrapped in `IndexIDMap2`,
so FAISS ids are SQL ids."""

from __future__ import annotations

from typing import Any

import numpy as np

from identify.errors import IdentifyError


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise IdentifyError(
            "faiss_missing", "FAISS is not installed: pip install 'identify[cpu]' (or 'identify[gpu]')"
        ) from None
    return faiss


def faiss_threads() -> int:
    return int(faiss_module().omp_get_max_threads())


def gpu_count() -> int:
    faiss = faiss_module()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def normalised(vectors: np.ndarray) -> np.ndarray:
    """A float32 copy with unit rows (zero rows stay zero)."""
    out = np.array(vectors, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out
