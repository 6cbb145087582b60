"""Every text limit is one constant (identify.rules) read by the forms, the API's schemas and the SQL column: the
documented maximum is stored on SQLite and PostgreSQL alike, one more character is a 400 that stores nothing.
Before: an observer of 201 characters (documented: 2,000) was a 500 StringDataRightTruncation on PostgreSQL
(VARCHAR(200)) and stored on SQLite; an `as_written` species over 300 characters in a review's `correct` or a
reference's `relabel` likewise; a JSON list sent as a reason was stored as its Python spelling."""

from __future__ import annotations

import pytest
from sqlalchemy import String

from identify.rules import MAX_NAME, MAX_SOURCE, MAX_TEXT
from identify.schema import Base, Sighting, Species
from tests.conftest import jpeg_bytes, species_photo
from tests.test_web_api import bearer, count_rows, upload


def test_every_column_that_keeps_a_name_as_given_is_as_wide_as_its_limit():
    widths = {f"{table.name}.{column.name}": column.type.length for table in Base.metadata.sorted_tables
              for column in table.columns if isinstance(column.type, String) and column.type.length}
    for column in ("sightings.observer", "species.name", "curators.name"):
        assert widths[column] >= MAX_NAME, column
    assert widths["reference_images.source"] >= MAX_SOURCE


def test_the_documented_maxima_are_stored_on_every_database(client, service, token):
    observer, note = "o" * MAX_NAME, "n" * MAX_TEXT
    body = upload(client, jpeg_bytes(species_photo(0, 5)), observer=observer, note=note).get_json()
    sighting = client.get(f"/api/v1/sightings/{body['sighting_id']}", headers=bearer(token)).get_json()
    assert (sighting["observer"], sighting["note"]) == (observer, note)

    species = "Avis longissima " + "x" * (MAX_NAME - 16)  # no taxonomy knows it: kept as written
    corrected = client.post(f"/api/v1/sightings/{body['sighting_id']}/review", headers=bearer(token),
                            json={"action": "correct", "version": sighting["version"], "species": species,
                                  "as_written": True, "note": "r" * MAX_TEXT, "add_as_reference": True})
    assert corrected.status_code == 200, corrected.get_json()
    assert corrected.get_json()["answer_label"] == species

    reference = client.get("/api/v1/references?per_page=1", headers=bearer(token)).get_json()["items"][-1]
    other = "Avis altera " + "y" * (MAX_NAME - 12)
    relabel = client.post(f"/api/v1/references/{reference['id']}/relabel", headers=bearer(token),
                          json={"species": other, "as_written": True, "reason": "z" * MAX_TEXT,
                                "version": reference["version"]})
    assert relabel.status_code in (200, 202), relabel.get_json()
    assert service.curators.create("c" * MAX_NAME, "correct horse battery")


def test_one_character_more_is_refused_and_stores_nothing(client, service, token):
    before = count_rows(service, Sighting)
    for field, size in (("observer", MAX_NAME + 1), ("note", MAX_TEXT + 1)):
        response = upload(client, jpeg_bytes(species_photo(0, 6)), **{field: "o" * size})
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_field", field
    assert count_rows(service, Sighting) == before
    body = upload(client, jpeg_bytes(species_photo(0, 7))).get_json()
    species_before = count_rows(service, Species)
    review = client.post(f"/api/v1/sightings/{body['sighting_id']}/review", headers=bearer(token),
                         json={"action": "correct", "version": 1, "species": "s" * (MAX_NAME + 1),
                               "as_written": True})
    assert review.status_code == 400 and count_rows(service, Species) == species_before
    reference = client.get("/api/v1/references?per_page=1", headers=bearer(token)).get_json()["items"][0]
    relabel = client.post(f"/api/v1/references/{reference['id']}/relabel", headers=bearer(token),
                          json={"species": "s" * (MAX_NAME + 1), "as_written": True, "reason": "why",
                                "version": reference["version"]})
    assert relabel.status_code == 400 and count_rows(service, Species) == species_before


@pytest.mark.parametrize("value", [[None, None], 5, {"a": 1}, True])
def test_text_that_is_not_a_string_is_refused_not_stored_as_python(client, token, value):
    body = upload(client, jpeg_bytes(species_photo(0, 8))).get_json()
    reference = client.get("/api/v1/references?per_page=1", headers=bearer(token)).get_json()["items"][0]
    retire = client.post(f"/api/v1/references/{reference['id']}/retire", headers=bearer(token),
                         json={"reason": value, "version": reference["version"]})
    assert retire.status_code == 400 and retire.get_json()["error"]["code"] == "bad_field"
    review = client.post(f"/api/v1/sightings/{body['sighting_id']}/review", headers=bearer(token),
                         json={"action": "confirm", "version": 1, "note": value})
    assert review.status_code == 400 and review.get_json()["error"]["code"] == "bad_field"
    assert client.get(f"/api/v1/references/{reference['id']}", headers=bearer(token)).get_json()["status"] == "active"


def test_a_manifest_name_over_the_limit_is_a_bad_manifest(tmp_path):
    from identify.errors import IdentifyError
    from index_builder.sources import from_manifest

    manifest = tmp_path / "refs.csv"
    manifest.write_text(f"path,species\na.jpg,{'s' * (MAX_NAME + 1)}\n")
    with pytest.raises(IdentifyError) as refused:
        from_manifest(manifest)
    assert refused.value.code == "bad_manifest" and "line 2" in refused.value.message
