"""iPhone photos: HEIC (the iPhone camera's default) is read with its EXIF place and time, identified as a JPEG
of the same pixels would be, and served to the public as a JPEG without metadata. Before: `not_an_image`."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest
from PIL import Image

from tests.conftest import species_photo
from tests.test_public_copies import SECRET
from tests.test_web_api import bearer, upload


def heic_with_gps(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2026:05:01 07:30:00"  # DateTimeOriginal
    exif.get_ifd(0x8769)[0x9011] = "+02:00"  # OffsetTimeOriginal
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 30.0, 0.0), 3: "W", 4: (1.0, 15.0, 0.0)})
    exif[0x010E] = SECRET.decode()
    out = io.BytesIO()
    image.save(out, "HEIF", exif=exif.tobytes(), quality=95)
    return out.getvalue()


def test_a_heic_photo_with_gps_is_identified_and_its_place_read(client, token):
    data = heic_with_gps(species_photo(1, 3))
    assert data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix")  # a real HEIF container
    response = upload(client, data)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["species"], created  # identified: ranked species like any photo
    body = client.get(f"/api/v1/sightings/{created['sighting_id']}", headers=bearer(token)).get_json()
    assert body["lat"] == pytest.approx(52.5) and body["lon"] == pytest.approx(-1.25)
    assert datetime.fromisoformat(body["observed_at"]) == datetime(2026, 5, 1, 5, 30, tzinfo=timezone.utc)
    public_url = client.get(f"/api/v1/sightings/{created['sighting_id']}").get_json()["photo_url"]
    public = client.get(public_url)  # a copy every browser shows, with nothing of the EXIF
    assert public.status_code == 200 and public.mimetype == "image/jpeg"
    assert SECRET not in public.data and b"GPS" not in public.data
    assert Image.open(io.BytesIO(public.data)).format == "JPEG"


def test_the_sweep_keeps_a_heic_photos_public_copy_while_its_sighting_stands(client, service):
    """The public copy of a HEIC photo is a JPEG named after it (`<hash>.heic.jpg`): the photo sweep must count
    it as in use, like every public copy of a photo a sighting names."""
    created = upload(client, heic_with_gps(species_photo(2, 5))).get_json()
    url = client.get(f"/api/v1/sightings/{created['sighting_id']}").get_json()["photo_url"]
    assert client.get(url).status_code == 200
    copy = service.photos.public_copy(url.rsplit("/", 1)[1])
    assert copy is not None and copy.name.endswith(".heic.jpg") and copy.exists()
    names, hashes = service._photo_files_in_use()
    service.photos.sweep(names, hashes, older_than_seconds=-1, named=service.sightings.names_photo)
    assert copy.exists()
