"""A calibration set of real photos for `identify evaluate --write-config`: the demo's 35 bird cut-outs (each one
bird photographed once: one individual), every one on the three backgrounds the demo's references never use, at
random sizes and places, mirrored or not, N photos per background; grouped by bird, so evaluate's splits hold
a bird whole. The references are the demo's gallery, each cut-out's photos declared one individual.

    .venv/bin/python benchmarks/demo_calibration_set.py DIR [--per-background 8]
    .venv/bin/identify convert-demo-model --out DIR/models/efficientnet_lite0_imagenet.pt
    IDENTIFY_DATA_DIR=DIR .venv/bin/identify evaluate --model DIR/models/efficientnet_lite0_imagenet.pt \\
        --references DIR/references.csv --queries DIR/calibration.csv --write-config --out DIR/report
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from identify.demo import QUERY_SCENES, SPECIES, STAMPS, backgrounds, scene, write_demo_photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-background", type=int, default=8)
    args = parser.parse_args()
    root: Path = args.root
    write_demo_photos(root)
    scenes, rng = backgrounds(), np.random.default_rng(36)
    rows = ["path,species,group"]
    (root / "calibration").mkdir(exist_ok=True)
    for stamp, species in sorted(SPECIES.items()):
        bird = Image.open(STAMPS / f"{stamp}.png").convert("RGBA")
        for name in QUERY_SCENES:
            for copy in range(args.per_background):
                path = root / "calibration" / f"{stamp}_{name}_{copy}.jpg"
                scene(bird, scenes[name], rng, mirrored=bool(rng.integers(0, 2))).save(path, quality=90)
                rows.append(f"calibration/{path.name},{species},{stamp}")
    (root / "calibration.csv").write_text("\n".join(rows) + "\n")
    references = ["path,species,group"]
    for path in sorted((root / "gallery").rglob("*.jpg")):  # <stamp>_<scene>.jpg: the stamp is the bird
        references.append(f"gallery/{path.parent.name}/{path.name},{path.parent.name},{path.stem.rsplit('_', 1)[0]}")
    (root / "references.csv").write_text("\n".join(references) + "\n")
    print(f"{len(rows) - 1} calibration photos of {len(SPECIES)} birds; {len(references) - 1} references")


if __name__ == "__main__":
    main()
