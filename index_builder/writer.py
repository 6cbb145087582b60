"""Records a batch of embeddings in SQL through the reference set's one way in (identify.references), one
transaction per batch: an interrupted build keeps every batch it finished, and the next run skips those photos
by content hash."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from identify.references import NewReference, References
from index_builder.sources import ReferenceSource


class EmbeddingWriter:
    def __init__(self, references: References, index_id: int, model_id: int) -> None:
        self.references = references
        self.index_id = index_id
        self.model_id = model_id

    def write(self, sources: Sequence[ReferenceSource], hashes: Sequence[str], vectors: np.ndarray,
              probabilities: np.ndarray | None = None) -> list[int]:
        """Returns the reference ids, in the order given. `probabilities`: the classifier's output from the same
        forward pass, kept beside each embedding (re-certification reads it)."""
        references = [
            NewReference(
                file_sha256=sha,
                path=str(source.path),
                species=source.species,
                vector=vector,
                where=source.where,
                source=source.source,
                creator=source.creator,
                license=source.license,
                crop=source.crop,
                probabilities=probabilities[row] if probabilities is not None else None,
                individual=source.group,
            )
            for row, (source, sha, vector) in enumerate(zip(sources, hashes, vectors, strict=True))
        ]
        return self.references.add_batch(self.index_id, self.model_id, references)
