"""Published indexes: an index and its manifest written beside the current version and swapped in by rename
(readers never see half), read back with checks, refused when built with another model.

    <name>                      symlink to the current version
    .versions/<name>/<stamp>/   index.faiss + manifest.json of one published version
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from identify.errors import IdentifyError
from identify.vectors.catalog import METRIC, UNKNOWN_MAX_ID, Manifest, require_index
from identify.vectors import faiss_module, gpu_count, normalised
from identify.vectors.plan import IndexPlan, apply_plan

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2  # the current version and the one before it, for a manual rollback


class VectorIndex:
    """A FAISS index over normalised embeddings whose ids are SQL reference ids, with its manifest."""

    def __init__(self, index: Any, manifest: Manifest, honours_selectors: bool = True) -> None:
        self.index = index
        self.manifest = manifest
        # FAISS's GPU indexes take an IDSelector in the search parameters and silently ignore it (seen on an H100
        # with FAISS 1.15.1: a restricted search answered ids outside the selection), so a restricted search of a
        # GPU copy must filter its answers itself (LiveIndex does).
        self.honours_selectors = honours_selectors
        self._apply_search_parameters()

    def _apply_search_parameters(self) -> None:
        m = self.manifest
        apply_plan(self.index, IndexPlan(m.index_type, m.factory, m.nprobe, m.ef_search, k_factor=m.k_factor))

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, reference ids), each (n, k'), best first; k' = min(k, count); ids -1 mean none."""
        k = min(k, self.count)
        if k == 0:
            return no_answers(len(queries))
        return self.index.search(normalised(queries), k)


def no_answers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (similarities, ids) of a search with nothing to answer: n rows of no columns."""
    return np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)


def to_search_device(index: VectorIndex) -> VectorIndex:
    """The same index on all GPUs when there are any (FAISS batches the queries there), else unchanged."""
    if gpu_count() == 0:
        return index
    faiss = faiss_module()
    try:
        return VectorIndex(faiss.index_cpu_to_all_gpus(index.index), index.manifest, honours_selectors=False)
    except RuntimeError as exc:  # an index type without a GPU implementation (HNSW) stays on the CPU
        log.warning("index stays on the CPU: %s", exc)
        return index


def _version_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def publish(index: Any, manifest: Manifest, indexes_dir: Path, name: str) -> Path:
    """Write the index and manifest beside the current version, then swap the `<name>` link by rename."""
    faiss = faiss_module()
    versions = indexes_dir / ".versions" / name
    version_dir = versions / manifest.version
    version_dir.mkdir(parents=True)
    faiss.write_index(index, str(version_dir / "index.faiss"))
    (version_dir / "manifest.json").write_text(manifest.to_json())
    link = indexes_dir / name
    if link.exists() and not link.is_symlink():
        raise IdentifyError("index_path_taken", f"{link} exists and is not an index published by identify")
    tmp_link = indexes_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    os.symlink(os.path.relpath(version_dir, indexes_dir), tmp_link)
    os.replace(tmp_link, link)
    _prune_versions(versions, keep=version_dir)
    return link


def _prune_versions(versions: Path, keep: Path) -> None:
    old = sorted((p for p in versions.iterdir() if p.is_dir() and p != keep), key=lambda p: p.name)
    for path in old[: max(0, len(old) - (KEEP_VERSIONS - 1))]:
        shutil.rmtree(path, ignore_errors=True)


def new_manifest(identity: Any, plan: IndexPlan, count: int, max_reference_id: int,
                 excluded_ids: Sequence[int] = ()) -> Manifest:
    return Manifest(
        model=identity.name,
        model_sha256=identity.sha256,
        network=identity.network,
        dim=identity.embedding_dim,
        metric=METRIC,
        count=count,
        index_type=plan.index_type,
        factory=plan.factory,
        nprobe=plan.nprobe,
        ef_search=plan.ef_search,
        recall_at_10=plan.recall_at_10,
        k_factor=plan.k_factor,
        max_reference_id=max_reference_id,
        excluded_ids=tuple(sorted(int(i) for i in excluded_ids)),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        version=_version_stamp(),
    )


def load_index(indexes_dir: Path, name: str, mapped: bool = False) -> VectorIndex:
    """The published index `name`. Both files are read from one resolved version, never from two.

    `mapped`: the vectors (flat, HNSW) or inverted lists (IVF, IVF-PQ) stay in the file, memory-mapped read-only,
    so every server process on the machine shares one copy in the page cache instead of holding its own. The
    index must then never be written (LiveIndex adds new rows to an index of its own)."""
    faiss = faiss_module()
    require_index(indexes_dir, name)
    version_dir = (indexes_dir / name).resolve()
    manifest = Manifest.from_file(version_dir / "manifest.json")
    try:
        index = faiss.read_index(str(version_dir / "index.faiss"), _mapping_flags(manifest) if mapped else 0)
    except RuntimeError as exc:
        raise IdentifyError("index_corrupt", f"{version_dir / 'index.faiss'} does not read ({exc})", 500) from None
    if index.ntotal != manifest.count or index.d != manifest.dim:
        raise IdentifyError("index_corrupt", f"{version_dir} holds {index.ntotal}x{index.d}, manifest says "
                            f"{manifest.count}x{manifest.dim}", 500)
    if manifest.max_reference_id == UNKNOWN_MAX_ID:  # an older manifest: the ids in the index tell
        ids = faiss.vector_to_array(index.id_map) if hasattr(index, "id_map") else np.empty(0, dtype=np.int64)
        manifest = replace(manifest, max_reference_id=int(ids.max()) if len(ids) else 0)
    return VectorIndex(index, manifest)


def _mapping_flags(manifest: Manifest) -> int:
    """FAISS's read flags that leave the bulk of an index of this type in its file (the two cannot be combined:
    IVF's flag maps inverted lists, the other the codes of a flat index, of HNSW's storage or of a re-ranking
    layer's full vectors)."""
    faiss = faiss_module()
    # IVF-PQ with re-ranking: its full vectors (the bulk, read a few per query) are mapped; the codes are small.
    lists = manifest.index_type.startswith("ivf") and not manifest.reranks
    bulk = faiss.IO_FLAG_MMAP if lists else faiss.IO_FLAG_MMAP_IFC
    return bulk | faiss.IO_FLAG_READ_ONLY


def check_compatible(manifest: Manifest, identity: Any, name: str) -> None:
    """Refuse, loudly, to search an index with another model's embeddings."""
    if manifest.model_sha256 != identity.sha256:
        raise IdentifyError(
            "index_model_mismatch",
            f"index {name!r} was built with model {manifest.model} ({manifest.model_sha256[:12]}), "
            f"not {identity.name} ({identity.sha256[:12]})",
            409,
        )
    if manifest.dim != identity.embedding_dim:
        raise IdentifyError(
            "index_dim_mismatch", f"index {name!r} has dimension {manifest.dim}, the model gives {identity.embedding_dim}", 409
        )
