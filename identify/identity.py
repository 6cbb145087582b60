"""The model's identity: what makes two embeddings comparable (the weights' checksum, the network, the input it
expects, its classes and embedding size). Readable without torch, so SQL-only code never imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    network: str
    sha256: str
    classes: list[str]
    signature: dict[str, Any]
    rgb_stats: dict[str, Any]
    size: tuple[int, int]
    embedding_dim: int

    @property
    def decode_size(self) -> int:
        """The smallest square a photo must be decoded to before the transform (JPEG draft decoding)."""
        return max(self.size)
