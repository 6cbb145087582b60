"""Darwin Core export: the archive read back with python-dwca-reader, every term checked, through the command
line and the curators' download; the CSV; and what is left out."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from dwca.read import DwCAReader

from identify.cli import main
from identify.export import TERMS
from tests.conftest import jpeg_bytes, species_photo

DWC = "http://rs.tdwg.org/dwc/terms/"


def upload(client, variant: int, **fields: str) -> int:  # type: ignore[no-untyped-def]
    data = {"image": (io.BytesIO(jpeg_bytes(species_photo(3, variant))), "b.jpg"), **fields}
    response = client.post("/api/v1/identify", data=data)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["sighting_id"]


@pytest.fixture
def reviewed(client, token):  # type: ignore[no-untyped-def]
    """Three sightings: one corrected to the Spanish sparrow (with place, time and observer), one rejected, one
    left open."""
    auth = {"Authorization": f"Bearer {token}"}
    corrected = upload(client, 0, lat="31.78", lon="35.22", observed_at="2026-04-15T07:00:00+03:00",
                       observer="Noa", note="two males\tat the feeder")
    assert client.post(f"/api/v1/sightings/{corrected}/review", headers=auth,
                       json={"action": "correct", "species": "Spanish Sparrow", "version": 1}).status_code == 200
    rejected = upload(client, 1)
    assert client.post(f"/api/v1/sightings/{rejected}/review", headers=auth,
                       json={"action": "reject", "version": 1}).status_code == 200
    open_one = upload(client, 2)
    return {"corrected": corrected, "rejected": rejected, "open": open_one}


def read_archive(path: Path) -> list[dict[str, str]]:
    with DwCAReader(str(path)) as archive:
        assert archive.descriptor.core.type == DWC + "Occurrence"
        assert archive.metadata is not None  # eml.xml
        return [{term.removeprefix(DWC): value for term, value in row.data.items()} for row in archive]


def test_the_archive_reads_back_with_every_term(service, reviewed, tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    out = tmp_path / "sightings.zip"
    result = CliRunner().invoke(main, ["export", "--format", "dwca", "--out", str(out),
                                       "--media-url", "https://birds.example.org/"])
    assert result.exit_code == 0 and "wrote 1 confirmed sightings" in result.output, result.output
    (row,) = read_archive(out)
    assert set(TERMS) <= set(row)
    assert row["basisOfRecord"] == "HumanObservation"
    assert (row["scientificName"], row["taxonRank"], row["vernacularName"]) == ("Passer hispaniolensis", "species",
                                                                               "Spanish Sparrow")
    assert (row["kingdom"], row["class"], row["order"], row["family"], row["genus"]) == (
        "Animalia", "Aves", "Passeriformes", "Passeridae", "Passer")
    assert row["eventDate"] == "2026-04-15T07:00:00+03:00"
    assert (row["decimalLatitude"], row["decimalLongitude"], row["geodeticDatum"]) == ("31.780000", "35.220000", "WGS84")
    assert row["coordinateUncertaintyInMeters"] == ""  # unknown, and said so rather than made up
    assert (row["recordedBy"], row["identifiedBy"]) == ("Noa", "ana")
    assert row["dateIdentified"].endswith("+00:00")
    assert row["identificationVerificationStatus"] == "verified by a curator"
    assert "model tiny" in row["identificationRemarks"] and "corrected by a curator" in row["identificationRemarks"]
    assert row["occurrenceRemarks"] == "two males at the feeder"  # a tab inside a value cannot break the table
    assert row["associatedMedia"].startswith("https://birds.example.org/media/photos/")
    assert row["occurrenceID"].startswith("urn:uuid:")
    again = tmp_path / "again.zip"
    CliRunner().invoke(main, ["export", "--out", str(again)])
    assert read_archive(again)[0]["occurrenceID"] == row["occurrenceID"]  # stable across exports


def test_all_adds_open_machine_observations_and_never_rejected_ones(service, reviewed, tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    out = tmp_path / "all.csv"
    assert CliRunner().invoke(main, ["export", "--format", "csv", "--status", "all", "--out", str(out)]).exit_code == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["basisOfRecord"] for r in rows) == ["HumanObservation", "MachineObservation"]
    machine = next(r for r in rows if r["basisOfRecord"] == "MachineObservation")
    assert machine["identificationVerificationStatus"] == "unverified" and machine["identifiedBy"] == "identify (tiny)"
    assert machine["eventDate"] == "" and machine["decimalLatitude"] == ""


def test_curators_download_the_same_archive(client, reviewed, token, tmp_path):
    assert client.get("/api/v1/export").status_code == 401
    response = client.get("/api/v1/export", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    path = tmp_path / "download.zip"
    path.write_bytes(response.data)
    (row,) = read_archive(path)
    assert row["scientificName"] == "Passer hispaniolensis"
    assert row["associatedMedia"].startswith("/media/photos/")  # no public_url set: never the request's Host
    bad = client.get("/api/v1/export?format=xls", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_field"


def test_a_hidden_location_is_exported_generalised(client, token, tmp_path):
    auth = {"Authorization": f"Bearer {token}"}
    sighting = upload(client, 5, lat="31.78", lon="35.22", hide_location="true")
    assert client.post(f"/api/v1/sightings/{sighting}/review", headers=auth,
                       json={"action": "correct", "species": "Wallcreeper", "version": 1}).status_code == 200
    path = tmp_path / "hidden.zip"
    path.write_bytes(client.get("/api/v1/export", headers=auth).data)
    (row,) = read_archive(path)
    assert (row["decimalLatitude"], row["decimalLongitude"]) == ("31.750000", "35.250000")
    assert 5_000 < int(row["coordinateUncertaintyInMeters"]) < 8_000
