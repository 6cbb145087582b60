"""The list of sightings (API and page): filters by any taxon name, date, decision and status; paged; the
public sees generalised positions, curators exact ones."""

from __future__ import annotations

import io

from tests.conftest import SPECIES, jpeg_bytes, kept_as, species_photo


def upload(client, species: int, variant: int, **fields):  # type: ignore[no-untyped-def]
    data = {"image": (io.BytesIO(jpeg_bytes(species_photo(species, variant))), "bird.jpg"), **fields}
    response = client.post("/api/v1/identify", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_the_list_filters_pages_and_generalises(client, token):
    made = [upload(client, n % 3, 60 + n, lat="51.501234", lon="-0.141234", observed_at=f"2026-05-0{n + 1}T08:00",
                   coordinate_uncertainty_m="12") for n in range(5)]
    everything = client.get("/api/v1/sightings").get_json()
    assert everything["total"] == 5 and [i["sighting_id"] for i in everything["items"]] == [
        m["sighting_id"] for m in reversed(made)]  # the latest upload first
    public = everything["items"][0]
    assert public["location"] == "generalised" and public["lat"] != 51.501234 and public["coordinate_uncertainty_m"] > 12
    exact = client.get("/api/v1/sightings", headers={"Authorization": f"Bearer {token}"}).get_json()["items"][0]
    assert exact["lat"] == 51.501234 and exact["coordinate_uncertainty_m"] == 12
    first = client.get("/api/v1/sightings", query_string={"per_page": "2"}).get_json()
    assert len(first["items"]) == 2 and first["next"] and client.get(first["next"]).get_json()["page"] == 2
    labels = {m["sighting_id"]: m["answer_label"] for m in made}
    crows = client.get("/api/v1/sightings", query_string={"species": "Corvidae"}).get_json()["items"]  # a family
    assert {i["sighting_id"] for i in crows} == {s for s, label in labels.items() if label == kept_as(SPECIES[1])}
    by_name = client.get("/api/v1/sightings", query_string={"species": "hooded crow"}).get_json()["items"]
    assert {i["sighting_id"] for i in by_name} == {i["sighting_id"] for i in crows}
    may = client.get("/api/v1/sightings", query_string={"from": "2026-05-02", "to": "2026-05-03T23:00"}).get_json()
    assert may["total"] == 2
    decided = made[0]["decision"]
    same = client.get("/api/v1/sightings", query_string={"decision": decided}).get_json()["items"]
    assert same and all(i["decision"] == decided for i in same)
    assert client.get("/api/v1/sightings", query_string={"status": "rejected"}).get_json()["total"] == 0
    bad = client.get("/api/v1/sightings", query_string={"status": "lost"})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_filter"
    empty = client.get("/api/v1/sightings", query_string={"decision": ""})
    assert empty.status_code == 400 and empty.get_json()["error"]["code"] == "bad_filter"
    page = client.get("/sightings", query_string={"species": "Corvidae", "decision": "", "status": ""}).get_data(
        as_text=True)
    assert f"{len(crows)} sighting" in page and "Hooded Crow" in page
    broken = client.get("/sightings", query_string={"from": "yesterday"})
    assert broken.status_code == 200 and "bad_date" in broken.get_data(as_text=True)
    assert "No sighting matches" not in broken.get_data(as_text=True)


def test_a_stated_uncertainty_goes_to_darwin_core():
    import uuid
    from datetime import datetime, timezone

    from identify.export import ExportRow, record

    row = ExportRow(1, "confirmed", "Passer_domesticus", None, None, 51.5, -0.1, None, None, "a.jpg", "m", "0" * 64,
                    "confident", 0.9, "ana", None, datetime(2026, 5, 1, tzinfo=timezone.utc),
                    coordinate_uncertainty_m=12.0)
    assert record(row, uuid.uuid4(), "")["coordinateUncertaintyInMeters"] == "12.0"
    hidden = record(ExportRow(**{**row.__dict__, "hide_location": True}), uuid.uuid4(), "")
    assert float(hidden["coordinateUncertaintyInMeters"]) > 1000  # generalised: the square's radius wins
