"""Index build: images/s of `identify build-index` against a pure batched forward of the same model on the
same decoded tensors (target >= 0.9: decoding and writing hidden behind compute), and against birder's own
`birder-predict --save-embeddings` on the same folder (target: faster). A random-weight birder checkpoint of
the network at its native size stands in for trained weights (same compute).

    .venv/bin/python benchmarks/bench_build.py [--network xcit_nano12_p16] [--size 256] [--images 384]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from identify.synthetic import species_photo, write_birder_checkpoint

BIN = Path(sys.executable).parent
SPECIES = ["Passer_domesticus", "Corvus_cornix", "Columba_livia", "Pica_pica"]


def write_photos(root: Path, count: int, width: int, height: int) -> None:
    """Noisy JPEGs of the given size in species folders (a 2-megapixel export of a camera photo by default)."""
    for i in range(count):
        folder = root / SPECIES[i % len(SPECIES)]
        folder.mkdir(parents=True, exist_ok=True)
        photo = species_photo(i % len(SPECIES), i, size=min(width, height)).resize((width, height))
        photo.save(folder / f"{i:05d}.jpg", quality=90)


def pure_forward(checkpoint: Path, photos: Path, batch_size: int, channels_last: bool = False,
                 compiled: bool = False) -> float:
    """img/s of birder's forward pass alone, on tensors decoded beforehand, in the plain memory layout (the
    reference of the issue's targets) or in channels-last (what the Backbone now uses); `compiled`: through
    torch.compile (compiled during the warm-up, which is not timed)."""
    from identify.backbone import load_backbone
    from identify.observation import read_photo_file

    backbone = load_backbone(str(checkpoint))
    transform = backbone.transform
    tensors = torch.stack([transform(read_photo_file(p).image) for p in sorted(photos.rglob("*.jpg"))])
    backbone.use_memory_format(torch.channels_last if channels_last else torch.contiguous_format)
    if compiled:
        backbone.compile(batch_size)
    backbone.forward(tensors[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(tensors), batch_size):
        backbone.forward(tensors[start : start + batch_size])
    return len(tensors) / (time.perf_counter() - started)


def timed(command: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="xcit_nano12_p16")
    parser.add_argument("--size", type=int, default=256, help="the network's native input size")
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--photo-size", default="1600x1200", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile", action="store_true",
                        help="build-index --compile and birder-predict --compile, against a compiled forward too")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-build-"))
    photos = root / "photos"
    width, height = (int(x) for x in args.photo_size.split("x"))
    write_photos(photos, args.images, width, height)
    (root / "models").mkdir()
    checkpoint = write_birder_checkpoint(args.network, SPECIES, args.size, root / "models" / f"{args.network}.pt")

    forward_ips = pure_forward(checkpoint, photos, args.batch_size)
    compiled_ips = pure_forward(checkpoint, photos, args.batch_size, channels_last=True, compiled=True) \
        if args.compile else None
    compile_flag = ["--compile"] if args.compile else []
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(root / "var"), "MODELS_DIR": str(root / "models")}
    build_wall, done = timed([str(BIN / "identify"), "build-index", "--model", str(checkpoint), "--images", str(photos),
                              "--name", "bench", "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                              "--json", *compile_flag], env=env)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # birder-predict reads models/<network>.pt under its working directory, at the size the checkpoint says.
    birder_wall, _ = timed([str(BIN / "birder-predict"), "-n", args.network, "--save-embeddings", "--batch-size",
                            str(args.batch_size), "-j", str(args.workers), *compile_flag, str(photos)], env=env,
                           cwd=root)
    build_ips = report["images_per_second"]
    print(f"{args.network} @{args.size}, {args.images} photos {args.photo_size}, batch {args.batch_size}, "
          f"{args.workers} decode workers, torch threads {torch.get_num_threads()}")
    print(f"pure batched forward          {forward_ips:7.1f} img/s")
    if compiled_ips is not None:
        print(f"  compiled, channels-last     {compiled_ips:7.1f} img/s   (compiled {compiled_ips / forward_ips:.2f}x)")
        print("  (its compile filled inductor's cache: the build and birder-predict below compile from it)")
    print(f"identify build-index (embed)  {build_ips:7.1f} img/s   ratio to pure forward {build_ips / forward_ips:.2f} "
          f"(target >= 0.9)")
    print(f"identify build-index (whole)  {args.images / build_wall:7.1f} img/s   {build_wall:.1f} s incl. start-up")
    print(f"birder-predict --save-embed.  {args.images / birder_wall:7.1f} img/s   {birder_wall:.1f} s incl. start-up")
    print(f"build-index / birder-predict  {birder_wall / build_wall:.2f}x (target > 1)")
    print("JSON " + json.dumps({"forward_ips": round(forward_ips, 2), "build_embed_ips": build_ips,
                               "build_wall_s": round(build_wall, 2), "birder_wall_s": round(birder_wall, 2),
                               "ratio_forward": round(build_ips / forward_ips, 3),
                               "ratio_birder": round(birder_wall / build_wall, 3),
                               "compiled_forward_ips": round(compiled_ips, 2) if compiled_ips else None}))


if __name__ == "__main__":
    main()
