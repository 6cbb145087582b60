"""Each step of the build's embedding loop, measured against the pure forward in the same run (issue 13, item 4).

The same photos go through `index_builder.dataset.embed_sources` (decode workers, batches, forward) in several
variants, interleaved over rounds so that this machine's drift falls on every variant alike:

- `float`: decode workers apply birder's whole transform and ship float32 tensors (the build before issue 13);
- `uint8`: workers apply its per-photo half and ship uint8; the batch is scaled and normalised in one go;
- `uint8+channels_last`: the same, with the network and its input in channels-last memory layout (what the
  build does now: the Backbone uses channels-last; the other two variants run in the plain layout).

Each round also times the pure batched forward on tensors decoded beforehand; a variant's ratio is its img/s
over that round's forward. The pure forward is also timed in channels_last, to tell a faster forward from a
better-hidden decode. Photos as in bench_build.py (1600x1200 JPEGs, a random-weight xcit_nano12_p16).

    .venv/bin/python benchmarks/bench_build_steps.py [--network xcit_nano12_p16] [--images 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `identify build-index` sets it, before torch loads

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.bench_build` from a checkout

from benchmarks.bench_build import pure_forward, write_photos  # noqa: E402
from identify.backbone import Backbone, load_backbone  # noqa: E402
from identify.synthetic import write_birder_checkpoint  # noqa: E402
from index_builder.dataset import embed_sources  # noqa: E402
from index_builder.sources import ReferenceSource  # noqa: E402


def variant(backbone: Backbone, name: str) -> Backbone:
    """The backbone as the variant runs it (the network's weights are shared, in the variant's layout)."""
    copy = Backbone(backbone.net, backbone.identity, backbone.device)
    if name == "float":  # the whole transform in the workers, nothing per batch
        copy.__dict__["_split_transform"] = (backbone.transform, lambda batch: batch)
    copy.use_memory_format(torch.channels_last if name.endswith("channels_last") else torch.contiguous_format)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="xcit_nano12_p16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-steps-"))
    write_photos(root / "photos", args.images, 1600, 1200)
    checkpoint = write_birder_checkpoint(args.network, ["a", "b", "c", "d"], args.size, root / f"{args.network}.pt")
    backbone = load_backbone(str(checkpoint))
    sources = [ReferenceSource(path, path.parent.name) for path in sorted((root / "photos").rglob("*.jpg"))]
    names = ["float", "uint8", "uint8+channels_last"]
    ratios: dict[str, list[float]] = {name: [] for name in names}
    rates: dict[str, list[float]] = {name: [] for name in names}
    forward_gains: list[float] = []  # the pure forward itself in channels_last, against the plain one
    for _ in range(args.rounds):
        forward = pure_forward(checkpoint, root / "photos", args.batch_size)
        forward_gains.append(pure_forward(checkpoint, root / "photos", args.batch_size, channels_last=True) / forward)
        for name in names:
            started = time.perf_counter()
            embed_sources(variant(backbone, name), sources, args.batch_size, args.workers, progress=False)
            rate = len(sources) / (time.perf_counter() - started)
            rates[name].append(rate)
            ratios[name].append(rate / forward)
    print(f"{args.network} @{args.size}, {args.images} photos 1600x1200, batch {args.batch_size}, "
          f"{args.workers} decode workers, torch threads {torch.get_num_threads()}, {args.rounds} rounds")
    for name in names:
        print(f"{name:22s} {statistics.median(rates[name]):6.1f} img/s   ratio to pure forward "
              f"{statistics.median(ratios[name]):.2f}  (rounds: {', '.join(f'{r:.2f}' for r in ratios[name])})")
    print(f"pure forward in channels_last / plain pure forward: {statistics.median(forward_gains):.2f}  (rounds: "
          f"{', '.join(f'{r:.2f}' for r in forward_gains)})")
    print("JSON " + json.dumps({**{name: round(statistics.median(ratios[name]), 3) for name in names},
                               "forward_channels_last_gain": round(statistics.median(forward_gains), 3)}))


if __name__ == "__main__":
    main()
