"""Photo decoding: bytes or files in, an upright RGB Pillow image out, or an IdentifyError with a stable code.

Every path that reads a photo (reference build, upload, CLI) goes through `decode_image`, so a photo that
one path accepts the others accept too."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from identify.errors import IdentifyError

# 80 megapixels: above any camera a naturalist carries, far below what a decompression bomb asks for.
DEFAULT_MAX_PIXELS = 80_000_000


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
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


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode `data` fully; returns an EXIF-upright RGB image.

    With `draft_size`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
    draft_size x draft_size: a 12-megapixel photo meant for a 256-pixel model decodes several times faster.

    Raises IdentifyError: empty_file, not_an_image, truncated_image or too_many_pixels."""
    if not data:
        raise IdentifyError("empty_file", "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise IdentifyError(
                    "too_many_pixels", f"{width}x{height} pixels is over the limit of {max_pixels} pixels", 413
                )
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
    except IdentifyError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise IdentifyError("too_many_pixels", f"the image is over the limit of {max_pixels} pixels", 413) from None
    except UnidentifiedImageError:
        raise IdentifyError("not_an_image", "the file is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise IdentifyError("truncated_image", f"the image data is truncated or corrupt ({exc})") from None
    return _to_rgb(ImageOps.exif_transpose(image))


def image_format(data: bytes) -> str | None:
    """Pillow's name for the format of `data` (JPEG, PNG...), from the header alone."""
    try:
        return Image.open(io.BytesIO(data)).format
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def read_image_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentifyError("unreadable_file", f"{path}: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels, draft_size)
