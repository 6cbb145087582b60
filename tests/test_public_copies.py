"""What the public is served of a photo (identify.photos.public_copy, identify.images.bare_copy): the pixels and
their orientation, no metadata container of any accepted format. Before: a TIFF whose XMP (tag 700) carried
exif:GPSLatitude was served with it, `hide_location` or not, and JPEG comments, PNG text chunks and IPTC went
through too."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from tests.conftest import species_photo
from tests.test_web_api import upload

SECRET = b"GPSLatitude 52.123456"  # what no public copy may hold, in whatever container it came
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="52.123456"/>'
       b'</rdf:RDF></x:xmpmeta>')
IPTC = b"\x1c\x02\x00\x00\x02\x00\x04\x1c\x02\x78\x00\x15" + SECRET  # IPTC-IIM caption (2:120)


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: kept, so the photo shows upright
    exif[0x010E] = SECRET.decode()  # ImageDescription
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 7.0, 24.44), 3: "W", 4: (1.0, 15.0, 0.0)})
    return exif.tobytes()


def _icc_with_text() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return profile.tobytes() + SECRET  # a profile's trailing bytes are read by no one but a snoop


def photo_in(fmt: str) -> bytes:
    """A bird photo in `fmt` carrying the position in every container that format has."""
    image, out = species_photo(1, 17).resize((96, 96)), io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", exif=_exif(), xmp=XMP, comment=SECRET, icc_profile=_icc_with_text())
        data = out.getvalue()
        # an APP13 Photoshop IRB with IPTC after the SOI marker: Pillow writes none, cameras and editors do
        irb = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + len(IPTC).to_bytes(4, "big") + IPTC
        return data[:2] + b"\xff\xed" + (len(irb) + 2).to_bytes(2, "big") + irb + data[2:]
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", SECRET.decode())
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        image.save(out, "PNG", exif=_exif(), pnginfo=info, icc_profile=_icc_with_text())
    elif fmt == "WEBP":
        image.save(out, "WEBP", exif=_exif(), xmp=XMP, icc_profile=_icc_with_text())
    elif fmt == "TIFF":
        image.save(out, "TIFF", tiffinfo={0x0112: 6, 700: XMP, 270: SECRET.decode(), 33723: IPTC})
    elif fmt == "GIF":
        image.save(out, "GIF", comment=SECRET)
    else:
        image.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP"])
def test_the_public_copy_of_every_format_carries_no_metadata(client, fmt):
    data = photo_in(fmt)
    assert fmt == "BMP" or SECRET in data or b"52.123456" in data or b"GPS" in data  # the upload carries it
    sighting_id = upload(client, data, lat="52.12", lon="-1.25", hide_location="true").get_json()["sighting_id"]
    body = client.get(f"/api/v1/sightings/{sighting_id}").get_json()
    assert body["location"] == "hidden", body
    served = client.get(body["photo_url"])
    assert served.status_code == 200
    copy = served.data
    for leak in (SECRET, b"52.123456", b"GPSLatitude", b"xmpmeta", b"8BIM", b"Photoshop"):
        assert leak not in copy, (fmt, leak)
    image = Image.open(io.BytesIO(copy))
    assert image.format == fmt
    exif = dict(image.getexif())
    assert not exif.get(0x8825) and 0x010E not in exif and 700 not in exif and 33723 not in exif
    assert not {"icc_profile", "xmp", "comment", "photoshop"} & set(image.info), image.info.keys()
    assert not getattr(image, "text", {}), image.text  # PNG tEXt/iTXt chunks
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        assert exif.get(0x0112) == 6  # upright as the camera meant it
    assert image.size == (96, 96)


def test_a_copy_an_older_release_made_is_never_served_and_is_swept(client, service):
    """Copies made before this fix kept XMP and comments; they lie in the older folder, which is never served
    and which the photo sweep empties."""
    from identify.photos import OLDER_PUBLIC_FOLDERS

    sighting = upload(client, photo_in("TIFF")).get_json()["sighting_id"]
    url = client.get(f"/api/v1/sightings/{sighting}").get_json()["photo_url"]
    name = url.rsplit("/", 1)[1]
    stale = service.settings.data_dir / OLDER_PUBLIC_FOLDERS[0] / name[:2] / name
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(photo_in("TIFF"))  # as the old code left it: the position in its XMP
    assert SECRET not in client.get(url).data and b"GPSLatitude" not in client.get(url).data
    names, hashes = service._photo_files_in_use()
    service.photos.sweep(names, hashes, older_than_seconds=-1, named=service.sightings.names_photo)
    assert not stale.exists()
