"""Pixels and files below the observation room: the pixel limit, RGB for any mode, a file's content hash.

Every path that reads a photo (reference build, upload, CLI) goes through `identify.observation.read_photo`,
so a photo that one path accepts the others accept too."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import IO, Any

import pillow_heif
from PIL import ExifTags, Image, ImageCms, ImageOps, JpegImagePlugin

# iPhones save HEIC by default: pillow-heif teaches Pillow to read HEIF/HEIC (with the EXIF place and time, and
# its rotation applied to the pixels). Every path that reads a photo imports this module.
pillow_heif.register_heif_opener()

# 80 megapixels: above any camera a naturalist carries, far below what a decompression bomb asks for.
DEFAULT_MAX_PIXELS = 80_000_000
# The formats Pillow writes an EXIF block into: a bare copy keeps its orientation there; the others (GIF, BMP)
# are turned upright instead.
ORIENTED_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}
SRGB = ImageCms.createProfile("sRGB")


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


def bare_copy(image: Image.Image, out: IO[bytes]) -> None:
    """Write the first frame of `image` in its own format with no metadata: no EXIF but its orientation (so the
    photo still shows upright), no GPS, XMP, IPTC, comments, PNG text chunks or TIFF tags, no ICC profile (the
    pixels are converted to sRGB by it first, so the colours stay right). A new image is made from the pixels
    alone, so no container Pillow would carry over from the file (its `info`) can reach the copy."""
    # A HEIF copy is served as JPEG: most browsers cannot show HEIC.
    image_format = "JPEG" if image.format in (None, "MPO", "HEIF") else image.format
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    image.seek(0)
    source = image if image_format in ORIENTED_FORMATS else ImageOps.exif_transpose(image)
    pixels = Image.frombytes(source.mode, source.size, source.tobytes())
    if source.mode == "P":
        pixels.putpalette(source.getpalette() or [])
        if "transparency" in source.info:  # drawing, not metadata: which palette entry is see-through
            pixels.info["transparency"] = source.info["transparency"]
    pixels, recoloured = _in_srgb(pixels, source.info.get("icc_profile"))
    options: dict[str, Any] = {}
    if image_format == "JPEG":
        options = _jpeg_quality(image, recoloured)
    if image_format == "TIFF" and orientation != 1:  # a TIFF's EXIF is its own tags
        options["tiffinfo"] = {ExifTags.Base.Orientation: orientation}
    elif image_format in ORIENTED_FORMATS and orientation != 1:
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        options["exif"] = exif.tobytes()
    pixels.save(out, image_format, **options)


def _in_srgb(pixels: Image.Image, icc: bytes | None) -> tuple[Image.Image, bool]:
    """The pixels in sRGB when a colour profile says they are in another space, and whether they changed. A
    profile that cannot be read is dropped (the pixels shown as they are)."""
    if not icc or pixels.mode not in ("RGB", "CMYK"):
        return pixels, False
    try:
        converted = ImageCms.profileToProfile(pixels, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB,
                                              outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return pixels, False
    if converted is None:
        return pixels, False
    converted.info.pop("icc_profile", None)  # littlecms attaches the sRGB profile it converted to
    return converted, True


def _jpeg_quality(original: Image.Image, recoloured: bool) -> dict[str, Any]:
    """The original JPEG's own quantisation and subsampling (no loss of quality beyond one re-encoding)."""
    tables = getattr(original, "quantization", None)
    if not tables or original.format not in ("JPEG", "MPO"):
        return {"quality": 92}
    options: dict[str, Any] = {"qtables": tables}
    sampling = JpegImagePlugin.get_sampling(original)
    if sampling >= 0 and not recoloured:
        options["subsampling"] = sampling
    return options
