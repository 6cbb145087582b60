"""The observation room (identify.observation): a photo's bytes are read and parsed once, for uploads, `predict`
and the builder alike, and one shape of place and time (WhereAndWhen) carries what the observer and the camera
say to the prior and to SQL."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from identify.cli import main
from identify.observation import Place, WhereAndWhen, read_photo
from identify.service import SightingFields
from tests.conftest import jpeg_bytes, species_photo

JERUSALEM = (31.78, 35.22)


def exif_jpeg(taken: str | None = "2026:04:10 07:30:00", gps: bool = True, seed: int = 1) -> bytes:
    image = species_photo(1, seed)
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal, local wall time
    if gps:
        exif.get_ifd(0x8825).update({1: "N", 2: (31.0, 46.0, 48.0), 3: "E", 4: (35.0, 13.0, 12.0)})
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


class Counting:
    """How often Pillow opens a photo and how often a file's bytes are read, while patched in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opens = 0
        self.reads: list[str] = []
        real_open, real_read = Image.open, Path.read_bytes

        def counted_open(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.opens += 1
            return real_open(*args, **kwargs)

        def counted_read(path: Path) -> bytes:
            self.reads.append(path.name)
            return real_read(path)

        monkeypatch.setattr(Image, "open", counted_open)
        monkeypatch.setattr(Path, "read_bytes", counted_read)


def test_read_photo_takes_format_exif_hash_and_pixels_from_one_parse(monkeypatch):
    data = exif_jpeg()
    counting = Counting(monkeypatch)
    photo = read_photo(data)
    assert counting.opens == 1
    assert photo.format == "JPEG" and photo.image.mode == "RGB" and photo.image.size == (96, 96)
    assert photo.sha256 == hashlib.sha256(data).hexdigest()
    assert photo.exif.moment == datetime(2026, 4, 10, 7, 30) and photo.exif.lat == pytest.approx(31.78)
    assert read_photo(jpeg_bytes(species_photo(1, 2))).exif == WhereAndWhen()  # no EXIF: nothing, no error


def test_an_upload_parses_each_photo_once_and_stores_its_exif(service, monkeypatch):
    photos = [exif_jpeg(seed=1), exif_jpeg(taken=None, gps=False, seed=2)]
    counting = Counting(monkeypatch)
    identified = service.identify_upload(photos, SightingFields())
    assert counting.opens == len(photos)  # was three parses a photo: decode, EXIF, format
    record = service.sighting(identified.sighting_id)
    # The first photo's EXIF: the wall time placed in Jerusalem's zone (UTC+3 in April), the position kept.
    assert (record.lat, record.lon) == pytest.approx(JERUSALEM, abs=1e-3)
    assert record.observed is not None and record.observed.zone == "place" and record.observed.offset_minutes == 180
    assert record.observed_at == datetime(2026, 4, 10, 4, 30, tzinfo=timezone.utc)


def test_predict_reads_each_file_once(service, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    folder = tmp_path / "one-bird"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.jpg").write_bytes(exif_jpeg(seed=n))
    records = tmp_path / "occurrences.csv"  # a prior to apply: the place must be known to be used
    records.write_text("scientificName,decimalLatitude,decimalLongitude,eventDate\n"
                       + "".join(f"Passer domesticus,{JERUSALEM[0]},{JERUSALEM[1]},2025-04-1{n}\n" for n in range(5)))
    assert CliRunner().invoke(main, ["occurrences", "import", str(records)]).exit_code == 0
    for group in ([], ["--group"]):
        counting = Counting(monkeypatch)
        result = CliRunner().invoke(main, ["predict", "--model", str(tiny_checkpoint), "--index", "birds", *group,
                                           "--json", str(folder)])
        assert result.exit_code == 0, result.output
        photo_reads = [name for name in counting.reads if name.endswith(".jpg")]
        assert sorted(photo_reads) == ["0.jpg", "1.jpg", "2.jpg"], group  # was twice: pixels, then EXIF
        answers = [json.loads(line) for line in result.output.strip().splitlines()]
        assert all(answer["place"] is not None for answer in answers)  # the EXIF place reached the prior


def test_the_builder_decodes_a_reference_from_one_read(tiny_backbone, tmp_path, monkeypatch):
    from index_builder.dataset import ReferenceDataset
    from index_builder.sources import ReferenceSource

    path = tmp_path / "a.jpg"
    path.write_bytes(exif_jpeg())
    dataset = ReferenceDataset([ReferenceSource(path, "sp")], tiny_backbone.decode_transform,
                               tiny_backbone.identity.decode_size)
    counting = Counting(monkeypatch)
    position, tensor, error = dataset[0]
    assert error is None and tensor is not None and counting.opens == 1 and counting.reads == ["a.jpg"]


def test_what_the_observer_gives_wins_and_the_photos_fill_the_rest():
    camera = [WhereAndWhen(None, None, datetime(2026, 4, 10, 7, 30)), WhereAndWhen(*JERUSALEM, None),
              WhereAndWhen(10.0, 10.0, datetime(2025, 1, 1))]
    filled = WhereAndWhen().completed_by(camera)
    assert filled == WhereAndWhen(*JERUSALEM, datetime(2026, 4, 10, 7, 30))  # first position, first moment
    assert filled.time is not None and filled.time.zone == "place" and filled.time.offset_minutes == 180
    assert filled.place() == Place(*JERUSALEM, filled.time.local)
    given = WhereAndWhen(51.5, -0.12, datetime(2026, 5, 1, 6, 0, tzinfo=timezone(timedelta(hours=1))))
    assert given.completed_by(camera) == given
    assert given.time is not None and given.time.zone == "offset" and given.observed_at == \
        datetime(2026, 5, 1, 5, 0, tzinfo=timezone.utc)


def test_no_place_without_both_a_position_and_a_time():
    assert WhereAndWhen(*JERUSALEM).place() is None
    assert WhereAndWhen(None, None, datetime(2026, 4, 10)).place() is None
    unplaced = WhereAndWhen(None, None, datetime(2026, 4, 10, 7, 30))
    assert unplaced.time is not None and unplaced.time.zone == "unknown"  # never silently UTC
    stored = WhereAndWhen.stored(1.0, 2.0, datetime(2026, 4, 10, 7, 30))  # SQL's naive UTC
    assert stored.observed_at == datetime(2026, 4, 10, 7, 30, tzinfo=timezone.utc)
