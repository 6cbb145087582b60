"""The bird in the frame: a crop (a user's square, a detector's box with a margin, a curator's re-crop) as
fractions of the upright photo, and how it becomes the pixels of the forward pass.

A crop is `x,y,w,h`, each a fraction of the upright photo's width or height, so it means the same at any
decoding size: the pixels are taken from a decode large enough that the crop still covers the model's input
(a JPEG is decoded at the DCT scale that keeps it so, never smaller). No torch here: the detector itself is
identify.detector's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from identify.errors import IdentifyError

MIN_CROP_PIXELS = 16  # a crop narrower than this (in the decoded photo) holds no bird a model can see
DETECTION_MARGIN = 0.15  # of the box's longer side, added on each side: the bird's outline and some context
USER, DETECTOR, CURATOR = "user", "detector", "curator"  # where a photo's crop came from
AUTOMATIC = "automatic"  # no crop: the whole photo pooled with centre crops (ServiceConfig.auto_crop)
CENTRE_CROPS = (0.6, 0.35)  # of the short side (BENCHMARKS.md: framing)
LARGEST_DECODE = 1 << 20  # pixels a side: larger than any photo the pixel guard lets in, so "decode it whole"


@dataclass(frozen=True)
class Crop:
    """A rectangle of the upright photo, as fractions of its width (x, w) and height (y, h)."""

    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.w, self.h)
        if not all(math.isfinite(v) for v in values):
            raise IdentifyError("bad_crop", "a crop is four numbers x,y,w,h between 0 and 1")
        if self.x < 0 or self.y < 0 or self.w <= 0 or self.h <= 0 or self.x + self.w > 1 + 1e-6 \
                or self.y + self.h > 1 + 1e-6:
            raise IdentifyError("bad_crop", f"the crop {self.text} does not lie inside the photo: x and y from "
                                "0, w and h above 0, x+w and y+h at most 1 (fractions of the photo)")

    @property
    def text(self) -> str:
        """`x,y,w,h` as the API, the manifest and `predict --crop` write it."""
        return ",".join(f"{v:.4f}".rstrip("0").rstrip(".") or "0" for v in (self.x, self.y, self.w, self.h))

    def to_dict(self) -> dict[str, float]:
        return {"x": round(self.x, 6), "y": round(self.y, 6), "w": round(self.w, 6), "h": round(self.h, 6)}

    @classmethod
    def of(cls, stored: Any) -> "Crop | None":
        """From its stored JSON form ({x, y, w, h}), or None."""
        if not isinstance(stored, dict):
            return None
        return cls(float(stored["x"]), float(stored["y"]), float(stored["w"]), float(stored["h"]))

    def pixels(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in a photo of `size` (width, height)."""
        width, height = size
        left, top = round(self.x * width), round(self.y * height)
        right = min(width, max(left + 1, round((self.x + self.w) * width)))
        bottom = min(height, max(top + 1, round((self.y + self.h) * height)))
        return left, top, right, bottom

    def cut(self, image: Image.Image) -> Image.Image:
        """The crop's pixels. Raises IdentifyError crop_too_small when they are too few to show a bird."""
        left, top, right, bottom = self.pixels(image.size)
        if min(right - left, bottom - top) < MIN_CROP_PIXELS:
            raise IdentifyError("crop_too_small", f"the crop {self.text} is {right - left}x{bottom - top} pixels "
                                f"of this photo: draw the square around the bird at least {MIN_CROP_PIXELS} "
                                "pixels wide")
        return image.crop((left, top, right, bottom))

    def decode_size(self, model_size: int) -> int:
        """The square a photo must be decoded to for this crop to cover `model_size` pixels: at most
        LARGEST_DECODE (the whole photo), where a sliver of a crop (1e-308 wide) would overflow; `cut` then
        refuses it as too small."""
        needed = model_size / min(self.w, self.h)
        return LARGEST_DECODE if needed >= LARGEST_DECODE else math.ceil(needed)

    @classmethod
    def square_around(cls, box: tuple[float, float, float, float], size: tuple[int, int],
                      margin: float = DETECTION_MARGIN) -> "Crop":
        """A square crop around a pixel box (left, top, right, bottom) in a photo of `size`, the box's longer
        side plus `margin` of it on each side, moved inside the photo (the model's input is square: a
        non-square crop would be squashed by its resize)."""
        width, height = size
        left, top, right, bottom = box
        side = min(max(right - left, bottom - top) * (1 + 2 * margin), width, height)
        centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
        x = min(max(centre_x - side / 2, 0.0), width - side)
        y = min(max(centre_y - side / 2, 0.0), height - side)
        return cls(x / width, y / height, side / width, side / height)


def parse_crop(raw: object, name: str = "crop") -> Crop | None:
    """`x,y,w,h` (fractions of the upright photo) as sent; blank is no crop (the whole photo)."""
    text = str(raw or "").strip()
    if not text:
        return None
    parts = text.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        return Crop(*(float(part) for part in parts))
    except ValueError:
        raise IdentifyError("bad_crop", f"{name} {text[:40]!r} is not x,y,w,h: four numbers between 0 and 1, "
                            "fractions of the photo's width and height (for example 0.25,0.3,0.4,0.4)") from None


@dataclass(frozen=True)
class Detection:
    """A bird a detector found: its box (as fractions, like a crop), its score and the detector's label."""

    box: Crop
    score: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"box": self.box.to_dict(), "score": round(self.score, 6), "label": self.label}

    @classmethod
    def of(cls, stored: dict[str, Any]) -> "Detection":
        box = Crop.of(stored["box"])
        assert box is not None
        return cls(box, float(stored["score"]), str(stored["label"]))


@dataclass(frozen=True)
class Framing:
    """How one photo was looked at: the crop used for the forward pass (None: the whole photo), where it came
    from (user, detector, curator, automatic; DETECTOR with no crop: the detector found no bird it could frame),
    and every bird a detector found in it."""

    crop: Crop | None = None
    source: str | None = None
    detections: tuple[Detection, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"crop": self.crop.to_dict() if self.crop is not None else None, "crop_source": self.source,
                "detections": [d.to_dict() for d in self.detections]}


def centre_crops(image: Image.Image) -> list[Image.Image]:
    """Squares at the photo's centre (CENTRE_CROPS of its short side): the cheap automatic crop, pooled with
    the whole photo as a sighting's photos are."""
    short = min(image.size)
    squares = []
    for fraction in CENTRE_CROPS:
        side = short * fraction
        box = ((image.width - side) / 2, (image.height - side) / 2, (image.width + side) / 2, (image.height + side) / 2)
        squares.append(image.crop(Crop.square_around(box, image.size, margin=0.0).pixels(image.size)))
    return squares


DETECTOR_DECODE_FACTOR = 4  # a photo for the detector is decoded at 4x the model's size: a bird a quarter of
# the frame wide still fills the model's input after its crop


def decode_size_for(crop: Crop | None, model_size: int, detecting: bool) -> int:
    """How large to decode a photo (JPEG draft) for what will be cut from it."""
    if crop is not None:
        return crop.decode_size(model_size)
    return model_size * DETECTOR_DECODE_FACTOR if detecting else model_size


def frame_photos(images: Sequence[Image.Image], crops: Sequence[Crop | None], find: Any = None,
                 source: str = USER, label: Any = None) -> list[tuple[Image.Image, Framing]]:
    """What the model looks at in each photo, and how it was framed: the given crop (`source` says whose),
    else the best bird `find` (a BirdFinder's find, or None) sees in it squared with a margin, else the whole
    photo. Raises IdentifyError (crop_too_small) for a crop too small to hold a bird, its message led by
    `label(index)` (how the caller names the photo)."""
    unframed = [i for i, crop in enumerate(crops) if crop is None]
    found = dict(zip(unframed, find([images[i] for i in unframed]), strict=True)) if find and unframed else {}
    looked = DETECTOR if find else None  # the detector looked even where it frames nothing: crop None says so
    framed = []
    for index, (image, crop) in enumerate(zip(images, crops, strict=True)):
        if crop is not None:
            try:
                framed.append((crop.cut(image), Framing(crop, source)))
            except IdentifyError as exc:
                raise exc.led_by(label(index) if label is not None else "") from None
            continue
        birds = tuple(found.get(index, ()))
        if not birds:
            framed.append((image, Framing(None, looked, birds)))
            continue
        square = Crop.square_around(birds[0].box.pixels(image.size), image.size)
        try:
            framed.append((square.cut(image), Framing(square, DETECTOR, birds)))
        except IdentifyError:  # a speck of a box: the whole photo says more
            framed.append((image, Framing(None, DETECTOR, birds)))
    return framed
