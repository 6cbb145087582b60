"""Photo decoding: every bad input gets its code; odd but valid photos come out upright RGB."""

import io

import numpy as np
import pytest
from PIL import Image

from identify.errors import IdentifyError
from identify.observation import decode_image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def error_code(data: bytes, **kwargs) -> str:
    with pytest.raises(IdentifyError) as error:
        decode_image(data, **kwargs)
    return error.value.code


def test_bad_inputs_have_stable_codes():
    jpeg = encoded(Image.new("RGB", (64, 64), "red"), "JPEG")
    assert error_code(b"") == "empty_file"
    assert error_code(b"hello, I am text\n" * 10) == "not_an_image"
    assert error_code(jpeg[: len(jpeg) // 2]) == "truncated_image"
    assert error_code(jpeg, max_pixels=1000) == "too_many_pixels"


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    out = decode_image(encoded(image, "PNG"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 255] + [0] * 765)
    out = decode_image(encoded(image, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb():
    out = decode_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    red, green, blue = out.getpixel((4, 4))
    assert out.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    image = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    out = decode_image(encoded(image, "PNG"))
    assert out.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = decode_image(encoded(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_draft_decoding_covers_the_requested_size_and_keeps_the_orientation():
    import io

    from identify.observation import decode_image

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    Image.new("RGB", (4000, 2000), (10, 120, 200)).save(buffer, "JPEG", exif=exif)
    full = decode_image(buffer.getvalue())
    small = decode_image(buffer.getvalue(), draft_size=256)
    assert full.size == (2000, 4000)
    assert small.size[0] >= 256 and small.size[1] >= 256 and small.size[0] < small.size[1]
    assert small.size == (500, 1000)  # 1/4 scale: 1/8 would give 250 pixels, under 256
