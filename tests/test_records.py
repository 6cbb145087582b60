"""Records with who, where and when: sightings cards and their API items carry the date, the place's name
(offline GeoNames; the town for curators, only county and region for the public's generalised position) and
the observer, with the whole photo; a reference carries its provenance (photographer, licence, source, date)
from the manifest to its page and the API. Before: no place name, no observer, no provenance anywhere."""

from __future__ import annotations

import numpy as np

from identify.observation import WhereAndWhen
from identify.metadata import parse_timestamp
from identify.references import NewReference
from identify.schema import ReferenceImage
from index_builder.sources import from_manifest
from tests.conftest import jpeg_bytes, log_in, species_photo
from tests.test_web_api import bearer, upload


def test_sightings_say_when_where_and_who(client, token):
    made = upload(client, jpeg_bytes(species_photo(0, 61)), lat="52.5275", lon="-1.2177", observer="Ana Lopes",
                  observed_at="2026-05-01T08:00").get_json()
    public = client.get("/api/v1/sightings").get_json()["items"][0]
    assert public["sighting_id"] == made["sighting_id"] and public["observer"] == "Ana Lopes"
    assert public["place"] == "Leicestershire, England (GB)"  # no town for a generalised position
    curator = client.get("/api/v1/sightings", headers=bearer(token)).get_json()["items"][0]
    assert curator["place"] == "near Broughton Astley, Leicestershire, England (GB)"
    assert public["whole_thumbnail_url"].endswith(".jpg") and public["cover_crop"] is None
    page = client.get("/sightings").get_data(as_text=True)
    assert "2026-05-01 08:00" in page and "Leicestershire, England (GB)" in page and "by Ana Lopes" in page
    assert "Broughton Astley" not in page
    hidden = upload(client, jpeg_bytes(species_photo(1, 62)), lat="52.5275", lon="-1.2177",
                    hide_location="true").get_json()
    item = next(i for i in client.get("/api/v1/sightings").get_json()["items"] if i["sighting_id"] == hidden["sighting_id"])
    assert item["place"] is None and item["location"] == "hidden"


def test_a_manifest_gives_a_reference_its_photographer_and_licence(tmp_path, client, service, token):
    (tmp_path / "refs.csv").write_text(
        "path,species,photographer,licence,source,observed_at\n"
        "a.jpg,Columba_livia,Ana Lopes,CC BY 4.0,Field trip 12,2026-04-02T07:00:00+00:00\n")
    (tmp_path / "b.csv").write_text("path,species,creator,license\nb.jpg,Columba_livia,Bo Li,"
                                    "https://creativecommons.org/licenses/by/4.0/\n")  # Darwin Core's names
    (row,) = from_manifest(tmp_path / "refs.csv")
    (other,) = from_manifest(tmp_path / "b.csv")
    assert (row.creator, row.license, row.source) == ("Ana Lopes", "CC BY 4.0", "Field trip 12")
    assert (other.creator, other.license) == ("Bo Li", "https://creativecommons.org/licenses/by/4.0/")
    with service.store.session() as session:
        index_id = service.references.index_of(session, "birds", service.model_id)
        session.commit()
    vector = np.ones(service.backbone.identity.embedding_dim, dtype=np.float32)
    (made,) = service.references.add_batch(index_id, service.model_id, [NewReference(
        "a" * 64, "a.jpg", row.species, vector, WhereAndWhen(moment=parse_timestamp(
            "2026-04-02T07:00:00+00:00")), row.source, row.creator, row.license)])
    with service.store.session() as session:
        public_id = session.get(ReferenceImage, made).public_id
    body = client.get(f"/api/v1/references/{public_id}", headers=bearer(token)).get_json()
    assert body["provenance"] == {"creator": "Ana Lopes", "license": "CC BY 4.0", "source": "Field trip 12",
                                  "created": "2026-04-02T07:00:00+00:00"}
    page = log_in(client).get(f"/references/{public_id}").get_data(as_text=True)
    assert "Photographer" in page and "Ana Lopes" in page and "CC BY 4.0" in page
    assert 'name="confirm" value="yes" required' in page  # retiring asks for a tick as well as a reason


def test_a_place_far_from_any_town_is_not_named_after_one():
    """The nearest GeoNames place can be hundreds of kilometres away (at sea): then no name, not a wrong one."""
    from identify.places import place_name

    assert place_name(52.5275, -1.2177, exact=True) == "near Broughton Astley, Leicestershire, England (GB)"
    assert place_name(45.0, -30.0, exact=True) is None  # mid-Atlantic
    assert place_name(45.0, -30.0, exact=False) is None
