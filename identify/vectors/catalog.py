"""What the published indexes are, read from their manifests alone: no FAISS, no torch, so that the command
line can list indexes and refuse an unknown name in milliseconds."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from identify.errors import IdentifyError

METRIC = "cosine"
UNKNOWN_MAX_ID = -1  # a manifest written before `max_reference_id` existed: the index's own ids tell


@dataclass(frozen=True)
class Manifest:
    """What a published index holds. Fields after `count` were added over time and have defaults, so an index
    published by an older release still opens; fields a newer release adds are ignored here."""

    model: str
    model_sha256: str
    network: str
    dim: int
    metric: str
    count: int
    index_type: str = "flat"
    factory: str = "Flat"
    nprobe: int | None = None
    ef_search: int | None = None
    recall_at_10: float | None = None  # IVF, IVF-PQ: what the build measured against exact search
    max_reference_id: int = UNKNOWN_MAX_ID  # rows above this id were added to SQL after the build
    k_factor: int | None = None  # IVF-PQ: candidates re-ranked exactly per neighbour asked
    created: str = ""
    version: str = ""
    excluded_ids: tuple[int, ...] = ()  # members retired when it was built: left out (a restore brings them back)

    @property
    def reranks(self) -> bool:
        """IVF-PQ with a re-ranking layer: the full vectors beside the codes (FAISS IndexRefineFlat)."""
        return self.factory.endswith(",RFlat")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text())
            known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
            manifest = cls(**known)
        except (OSError, ValueError, TypeError) as exc:  # TypeError: a field that has no default is missing
            raise IdentifyError("index_corrupt", f"{path} is not a readable manifest ({exc})", 500) from None
        if manifest.metric != METRIC:
            raise IdentifyError("index_corrupt", f"{path}: metric {manifest.metric!r}, expected {METRIC!r}", 500)
        return manifest



def read_manifest(indexes_dir: Path, name: str) -> Manifest | None:
    path = indexes_dir / name / "manifest.json"
    return Manifest.from_file(path) if path.exists() else None


@dataclass(frozen=True)
class PublishedIndex:
    """One entry of `identify indexes`."""

    name: str
    manifest: Manifest
    size_bytes: int

    def to_dict(self) -> dict[str, object]:
        m = self.manifest
        return {"name": self.name, "model": m.model, "network": m.network, "vectors": m.count, "dim": m.dim,
                "index_type": m.index_type, "factory": m.factory, "recall_at_10": m.recall_at_10,
                "size_bytes": self.size_bytes,
                "created": m.created}


def published_indexes(indexes_dir: Path) -> list[PublishedIndex]:
    """Every index published under `indexes_dir`, by name (the `<name>` links; versions are not listed)."""
    if not indexes_dir.is_dir():
        return []
    found = []
    for link in sorted(indexes_dir.iterdir()):
        if link.name.startswith(".") or not (link / "manifest.json").is_file():
            continue
        index_file = link / "index.faiss"
        found.append(PublishedIndex(link.name, Manifest.from_file(link / "manifest.json"),
                                    index_file.stat().st_size if index_file.exists() else 0))
    return found


def require_index(indexes_dir: Path, name: str) -> Manifest:
    """The manifest of index `name`, or an `unknown_index` error that names the indexes there are."""
    manifest = read_manifest(indexes_dir, name)
    if manifest is not None:
        return manifest
    known = [entry.name for entry in published_indexes(indexes_dir)]
    there = f"known: {', '.join(known)}" if known else "none is published yet (run: identify build-index)"
    raise IdentifyError("unknown_index", f"no index named {name!r} under {indexes_dir}; {there}", 404)
