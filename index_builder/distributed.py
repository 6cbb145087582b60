"""A build over several processes under torchrun: one rank per process (or GPU), on one machine or several.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous); without them the build is one process and
nothing here touches torch.distributed. The ranks share the work and the database, not memory:

    rank 0        takes the index's build lock, records the model, the index and every species, starts the build
    barrier
    every rank    hashes, triages and embeds its shard (every world_size-th photo of the sorted list), writing
                  its rows to SQL batch by batch (PostgreSQL when several machines share it)
    barrier       (the totals are summed onto rank 0)
    rank 0        builds and publishes the index from SQL

A rerun resumes like a one-process build: each rank skips what SQL already holds. gloo on CPU, NCCL on GPU.
If a rank dies, torchrun stops the others; nothing half-written is published."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

Item = TypeVar("Item")

# Ranks wait at a barrier for the slowest shard; torchrun, not this timeout, stops them when a rank dies.
BARRIER_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Ranks":
        """The process's place in a torchrun launch; rank 0 of 1 when not launched by torchrun."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[Item]) -> list[Item]:
        """This rank's disjoint, stable share: every world_size-th item from its rank on."""
        return list(items[self.rank::self.world_size])

    def device(self):  # type: ignore[no-untyped-def]
        """The GPU of this rank's local slot when there are GPUs, else None (the CPU)."""
        import torch

        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else None

    def start(self) -> None:
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def total(self, counts: list[int]) -> list[int]:
        """The counts summed over every rank (each rank gets the sums)."""
        if not self.distributed:
            return counts
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(counts, dtype=torch.int64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return [int(value) for value in tensor.cpu()]

    def finish(self) -> None:
        """Leave the launch once every rank is done (rank 0 has published): all ranks then tear the group down
        together. Only on success: after an error a rank just exits, and torchrun stops the others (a rank that
        destroys its group while another still talks to it can abort in gloo's threads: it happened once here,
        rank 1 ending in SIGABRT while rank 0 published)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
