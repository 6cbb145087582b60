"""Pixels and files below the observation room: the pixel limit, RGB for any mode, a file's content hash.

Every path that reads a photo (reference build, upload, CLI) goes through `identify.observation.read_photo`,
so a photo that one path accepts the others accept too."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

# 80 megapixels: above any camera a naturalist carries, far below what a decompression bomb asks for.
DEFAULT_MAX_PIXELS = 80_000_000


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: alpha composited on white, 16-bit scaled down, CMYK and palettes converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's "I" -> "L" conversion clips at 255; scale 16-bit range down instead.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
