"""A sighting is an observation of one to five photos of the same bird: pooled evidence, every photo stored,
shown and made a reference, and the limits."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from identify.cli import main
from identify.identifier import Evidence, NeighbourInfo, pool_evidence
from identify.schema import ReferenceImage, Sighting, SightingPhoto
from tests.conftest import jpeg_bytes, species_photo


def post(client, photos: list[bytes], **fields: str):  # type: ignore[no-untyped-def]
    data = {"image": [(io.BytesIO(p), f"bird{i}.jpg") for i, p in enumerate(photos)], **fields}
    return client.post("/api/v1/identify", data=data, content_type="multipart/form-data")


def count(service, model) -> int:  # type: ignore[no-untyped-def]
    with service.store.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_pooling_by_hand():
    a = Evidence(np.array([0.8, 0.2]), np.array([3.0, 0.0]), [NeighbourInfo(1, "x", 0.9, "p", "h"),
                                                            NeighbourInfo(2, "y", 0.5, "p", "h")], 0.01)
    b = Evidence(np.array([0.2, 0.8]), np.array([0.0, 2.0]), [NeighbourInfo(2, "y", 0.7, "p", "h")], 0.02)
    pooled = pool_evidence([a, b])
    assert pooled.probabilities == pytest.approx([0.5, 0.5])  # sqrt(0.8*0.2) for both, renormalised
    assert [(n.reference_id, n.similarity) for n in pooled.neighbours] == [(1, 0.9), (2, 0.7)]
    assert pooled.embedding == pytest.approx([0.5, 0.5]) and pooled.forward_seconds == 0.02
    assert pool_evidence([a]) is a


def test_one_upload_with_three_photos_is_one_sighting_with_three_photos(client, service, token):
    photos = [jpeg_bytes(species_photo(3, v)) for v in (0, 1, 2)]
    response = post(client, photos)
    assert response.status_code == 201, response.get_json()
    sighting_id = response.get_json()["sighting_id"]
    assert count(service, Sighting) == 1 and count(service, SightingPhoto) == 3
    body = client.get(f"/api/v1/sightings/{sighting_id}").get_json()
    assert len(body["photos"]) == 3 and body["photos"][0]["photo_url"] == body["photo_url"]
    for photo in body["photos"]:
        assert client.get(photo["photo_url"]).status_code == 200
        assert client.get(photo["thumbnail_url"]).mimetype == "image/jpeg"
    page = client.get(f"/sightings/{sighting_id}").get_data(as_text=True)
    assert page.count('alt="Photo ') == 3
    reviewed = client.post(f"/api/v1/sightings/{sighting_id}/review", headers={"Authorization": f"Bearer {token}"},
                           json={"action": "correct", "species": "Wallcreeper", "version": 1})
    assert reviewed.status_code == 200
    with service.store.session() as session:  # every photo teaches
        key = service.sighting_key(sighting_id)
        labels = session.scalars(select(ReferenceImage.source).where(ReferenceImage.sighting_id == key)).all()
    assert len(labels) == 3


def test_the_photos_together_are_one_identification(client, service):
    """The pooled answer is no single photo's: its neighbours are the union of all photos' neighbours."""
    photos = [jpeg_bytes(species_photo(0, 60)), jpeg_bytes(species_photo(2, 61))]
    together = post(client, photos).get_json()
    alone = [post(client, [p]).get_json() for p in photos]
    ids = {n["reference_id"] for n in together["neighbours"]}
    assert ids == {n["reference_id"] for a in alone for n in a["neighbours"]}


@pytest.mark.parametrize(("photos", "code", "status"), [
    ([jpeg_bytes(species_photo(3, v)) for v in range(6)], "too_many_photos", 400),
    ([jpeg_bytes(species_photo(3, 0)), b"not a photo at all", jpeg_bytes(species_photo(3, 1))], "not_an_image", 400),
])
def test_bad_observations_store_nothing(client, service, photos, code, status):
    response = post(client, photos)
    error = response.get_json()["error"]
    assert response.status_code == status and error["code"] == code
    if code == "not_an_image":
        # the message names the file and its place, and says what to send instead
        assert error["message"].startswith("“bird1.jpg” (photo 2 of 3): ") and "JPEG" in error["message"]
    assert count(service, Sighting) == 0 and count(service, SightingPhoto) == 0
    assert not list((service.settings.data_dir / "photos").rglob("*.*"))


def test_predict_group_treats_a_folder_as_one_observation(service, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    folder = tmp_path / "one-bird"
    folder.mkdir()
    for v in range(3):
        species_photo(3, v).save(folder / f"{v}.jpg", quality=90)
    result = CliRunner().invoke(main, ["predict", "--model", str(tiny_checkpoint), "--index", "birds", "--group",
                                       "--json", str(folder)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    answer = json.loads(lines[-1])
    assert len(lines) == 1 and sorted(answer["photos"]) == sorted(str(p) for p in folder.iterdir())
    assert answer["species"] and answer["decision"] in ("confident", "needs_review", "no_match")
