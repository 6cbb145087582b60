"""Decoding and transforms, run in DataLoader workers so they overlap the forward passes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from identify.errors import IdentifyError
from identify.images import read_image_file
from index_builder.sources import ReferenceSource


@dataclass
class DecodedBatch:
    positions: list[int]  # positions in the dataset of the decoded images, in `tensors` order
    tensors: torch.Tensor | None  # (n, 3, H, W), None when every image of the batch failed
    failures: list[tuple[int, str, str]]  # (position, error code, message)


class ReferenceDataset(Dataset):
    def __init__(self, sources: Sequence[ReferenceSource], transform: Callable[[Image.Image], torch.Tensor]):
        self.sources = sources
        self.transform = transform

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, tuple[str, str] | None]:
        try:
            return position, self.transform(read_image_file(self.sources[position].path)), None
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
