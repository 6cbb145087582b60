"""The bird in the frame (issue 24, item 3): the demo's real model (ImageNet EfficientNet-Lite0) over the demo's
reference gallery, asked about the demo's real bird photos (tuxpaint cut-outs) set small in a large frame.

Each of the 35 birds is placed at 5-20 % of the area of a 2400x1600 frame (a real texture: grass, gravel,
brick, water, stubble, tiled at its own scale) at a random place, mirrored, and asked three ways through the
served decision path (Identifier.search -> pool_evidence -> Identifier.explain, as identify.uploads calls it):
  full frame    the whole photo, as an upload without a crop;
  user crop     the true box squared with the detector's margin (what a person drags): identify.framing;
  auto crop     the whole photo pooled with centre crops (60 % and 35 % of the short side), the cheap
                automatic crop the issue proposes;
and, as the yardstick, the bird filling the frame (the cut-out on the same background at 55-85 %, as the
demo's queries are). Printed: top-1 right and confident-and-right, per way, in one run.

    .venv/bin/python benchmarks/bench_framing.py [--seeds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"

FRAME = (2400, 1600)


def tiled(texture: Image.Image, size: tuple[int, int]) -> Image.Image:
    out = Image.new("RGB", size)
    for x in range(0, size[0], texture.width):
        for y in range(0, size[1], texture.height):
            out.paste(texture, (x, y))
    return out


def placed(bird: Image.Image, ground: Image.Image, share: float, rng: np.random.Generator) -> tuple[Image.Image, tuple]:
    """The bird at `share` of the frame's area (its bounding box), somewhere in the frame; (photo, box)."""
    bird = bird.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop(bird.getbbox())
    scale = (share * ground.width * ground.height / (bird.width * bird.height)) ** 0.5
    bird = bird.resize((max(1, round(bird.width * scale)), max(1, round(bird.height * scale))), Image.Resampling.LANCZOS)
    x = int(rng.integers(0, ground.width - bird.width + 1))
    y = int(rng.integers(0, ground.height - bird.height + 1))
    out = ground.copy()
    out.paste(bird, (x, y), bird)
    return out, (x, y, x + bird.width, y + bird.height)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    from identify import demo
    from identify.config import load_settings
    from identify.framing import Crop, centre_crops
    from identify.identifier import pool_evidence
    from identify.service import IdentificationService

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "IDENTIFY_DATA_DIR": str(root)}
        demo.write_demo_photos(root)
        model = root / "models" / "demo.pt"
        subprocess.run([BIN / "identify", "convert-demo-model", "--out", str(model)], env=env, check=True,
                       capture_output=True)
        subprocess.run([BIN / "identify", "build-index", "--model", str(model), "--images", str(root / "gallery"),
                        "--name", "demo"], env=env, check=True, capture_output=True)
        os.environ.update(env, IDENTIFY_MODEL=str(model), IDENTIFY_INDEX="demo",
                          IDENTIFY_TAXONOMY_MAPPING=str(root / "taxonomy.csv"))
        service = IdentificationService.from_settings(load_settings())
        identifier = service.identifier
        grounds = demo.backgrounds()
        tally: dict[str, list[int]] = {way: [0, 0, 0, 0] for way in ("bird fills the frame", "full frame", "user crop",
                                                                   "auto crop")}

        def ask(way: str, images: list[Image.Image], truth: str) -> None:
            result = identifier.explain(pool_evidence(identifier.search(images)), None, frozenset())
            top = result.species[0] if result.species else None
            right = top is not None and top.taxon is not None and top.taxon.scientific_name == truth
            tally[way][0] += 1
            tally[way][1] += right
            tally[way][2] += right and result.decision.decision == "confident"
            tally[way][3] += not right and result.decision.decision == "confident"

        for seed in range(args.seeds):
            rng = np.random.default_rng(100 + seed)
            for number, (stamp, species) in enumerate(sorted(demo.SPECIES.items())):
                bird = Image.open(demo.STAMPS / f"{stamp}.png").convert("RGBA")
                scene = demo.QUERY_SCENES[(number + seed) % len(demo.QUERY_SCENES)]
                ground = grounds[scene]
                ask("bird fills the frame", [demo.scene(bird, ground, rng, mirrored=True)], species)
                photo, box = placed(bird, tiled(ground, FRAME), float(rng.uniform(0.05, 0.20)), rng)
                ask("full frame", [photo], species)
                ask("user crop", [Crop.square_around(box, photo.size).cut(photo)], species)
                ask("auto crop", [photo, *centre_crops(photo)], species)
        print(f"{'way':<22} {'photos':>6} {'top-1 right':>12} {'confident and right':>20} {'confident, wrong':>17}")
        for way, (count, right, sure, wrong) in tally.items():
            print(f"{way:<22} {count:>6} {100 * right / count:>11.1f}% {100 * sure / count:>19.1f}% "
                  f"{100 * wrong / count:>16.1f}%")
        base = tally["bird fills the frame"]
        for way in ("full frame", "user crop", "auto crop"):
            print(f"{way}: top-1 {100 * (tally[way][1] - base[1]) / base[0]:+.1f} points against the bird filling "
                  f"the frame, {100 * (tally[way][1] - tally['full frame'][1]) / base[0]:+.1f} against the full "
                  f"frame; confident and right {100 * (tally[way][2] - tally['full frame'][2]) / base[0]:+.1f} "
                  "against the full frame")


if __name__ == "__main__":
    main()
