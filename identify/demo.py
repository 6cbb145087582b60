"""Photos for `make demo`: real photographs that scikit-image ships, laid out as a reference gallery and
a few query photos. Run as `python -m identify.demo DIR`; it prints the query paths.

References are the four corner crops (75 %) of each photo, labelled with its ImageNet class where it has
one. The queries are photos not in the gallery: the centre crops, and the right view of the motorcycle
stereo pair whose left view is the reference. `astronaut` is no ImageNet class: only its references
can name it, which shows the fused label space at work. `queries.csv` labels the queries and mirrored,
tighter and smaller views of them, for `identify evaluate`."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

# label -> scikit-image loader name (`stereo_motorcycle` gives the left and right views)
GALLERY = {
    "Egyptian cat": "chelsea",
    "espresso": "coffee",
    "tripod": "camera",
    "astronaut": "astronaut",
    "moped": "stereo_motorcycle",
}


def _photo(loader: str) -> tuple[Image.Image, Image.Image]:
    """(reference photo, query photo) for one loader."""
    import skimage.data

    if loader == "stereo_motorcycle":
        left, right, _ = skimage.data.stereo_motorcycle()
        return Image.fromarray(left).convert("RGB"), Image.fromarray(right).convert("RGB")
    image = Image.fromarray(getattr(skimage.data, loader)()).convert("RGB")
    width, height = image.size
    centre = image.crop((width // 8, height // 8, width - width // 8, height - height // 8))
    return image, centre


def _corner_crops(image: Image.Image, share: float = 0.75) -> list[Image.Image]:
    width, height = image.size
    w, h = int(width * share), int(height * share)
    return [image.crop((x, y, x + w, y + h)) for x in (0, width - w) for y in (0, height - h)]


def _variants(query: Image.Image) -> dict[str, Image.Image]:
    """More labelled queries for `identify evaluate`: mirrored, tighter, and smaller views of a query."""
    width, height = query.size
    return {
        "mirrored": query.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "tight": query.crop((width // 6, height // 6, width - width // 6, height - height // 6)),
        "small": query.resize((max(32, width // 4), max(32, height // 4))),
    }


def write_demo_photos(root: Path) -> list[Path]:
    """Write `root/gallery/<label>/*.jpg`, `root/queries/*.jpg` and `root/queries.csv` (the queries and their
    variants under `root/queries/more/`, labelled); returns the paths of `root/queries/*.jpg`."""
    queries, manifest = [], ["path,species"]
    for label, loader in GALLERY.items():
        reference, query = _photo(loader)
        folder = root / "gallery" / label
        folder.mkdir(parents=True, exist_ok=True)
        for number, crop in enumerate(_corner_crops(reference)):
            crop.save(folder / f"{loader}_{number}.jpg", quality=92)
        (root / "queries" / "more").mkdir(parents=True, exist_ok=True)
        query_path = root / "queries" / f"{loader}.jpg"
        query.save(query_path, quality=92)
        queries.append(query_path)
        manifest.append(f"queries/{loader}.jpg,{label}")
        for name, variant in _variants(query).items():
            variant.save(root / "queries" / "more" / f"{loader}_{name}.jpg", quality=92)
            manifest.append(f"queries/more/{loader}_{name}.jpg,{label}")
    (root / "queries.csv").write_text("\n".join(manifest) + "\n")
    return queries


if __name__ == "__main__":
    for path in write_demo_photos(Path(sys.argv[1] if len(sys.argv) > 1 else "var/demo")):
        print(path)
