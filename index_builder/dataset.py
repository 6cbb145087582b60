"""Decoding and transforms, run in DataLoader workers so they overlap the forward passes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from identify.backbone import Backbone
from identify.errors import IdentifyError
from identify.observation import read_photo_file
from index_builder.sources import ReferenceSource


@dataclass
class DecodedBatch:
    positions: list[int]  # positions in the dataset of the decoded images, in `tensors` order
    tensors: torch.Tensor | None  # (n, 3, H, W) uint8 (Backbone.finish_batch makes the input), None if all failed
    failures: list[tuple[int, str, str]]  # (position, error code, message)


class ReferenceDataset(Dataset):
    def __init__(self, sources: Sequence[ReferenceSource], transform: Callable[[Image.Image], torch.Tensor],
                 draft_size: int | None = None):
        self.sources = sources
        self.transform = transform
        self.draft_size = draft_size  # decode JPEGs at the smallest scale that covers the model's input

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, tuple[str, str] | None]:
        try:
            source = self.sources[position]
            if source.crop is None:
                image = read_photo_file(source.path, draft_size=self.draft_size).image
            else:  # decoded large enough that the crop still covers the model's input
                draft = source.crop.decode_size(self.draft_size) if self.draft_size else None
                image = source.crop.cut(read_photo_file(source.path, draft_size=draft).image)
            return position, self.transform(image), None
        except IdentifyError as exc:
            return position, None, (exc.code, exc.message)


def collate(items: list[tuple[int, torch.Tensor | None, tuple[str, str] | None]]) -> DecodedBatch:
    good = [(position, tensor) for position, tensor, _ in items if tensor is not None]
    failures = [(position, error[0], error[1]) for position, _, error in items if error is not None]
    tensors = torch.stack([tensor for _, tensor in good]) if good else None
    return DecodedBatch([position for position, _ in good], tensors, failures)


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def loader(dataset: ReferenceDataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


@dataclass
class EmbeddedSources:
    positions: list[int]  # sources that decoded, in the row order below
    probabilities: np.ndarray  # (n, classes)
    embeddings: np.ndarray  # (n, dim)
    failures: list[tuple[int, str, str]]  # (position, error code, message)


def embed_sources(backbone: Backbone, sources: Sequence[ReferenceSource], batch_size: int, workers: int,
                  progress: bool, description: str = "embedding") -> EmbeddedSources:
    """Probabilities and embeddings of every source that decodes (one forward pass each), with a progress bar."""
    positions: list[int] = []
    probabilities, embeddings, failures = [], [], []
    with tqdm(total=len(sources), unit="img", desc=description, disable=not progress) as bar:
        dataset = ReferenceDataset(sources, backbone.decode_transform, backbone.identity.decode_size)
        for batch in loader(dataset, batch_size, workers):
            failures += batch.failures
            if batch.tensors is not None:
                output = backbone.forward_decoded(batch.tensors)
                positions += batch.positions
                probabilities.append(output.probabilities)
                embeddings.append(output.embeddings)
            bar.update(len(batch.positions) + len(batch.failures))
    if not positions:
        raise IdentifyError("nothing_embedded", f"none of the {len(sources)} photos could be read")
    return EmbeddedSources(positions, np.concatenate(probabilities), np.concatenate(embeddings), failures)
