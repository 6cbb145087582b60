"""The JSON API through Flask's test client, on SQLite and PostgreSQL: the identify -> review -> reference loop,
conflicts between curators, other workers catching up, similar sightings, and every bad input."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.conftest import SPECIES, jpeg_bytes, kept_as, species_photo, store_sightings
from identify.schema import Prediction, Review, Sighting
from identify.web import create_app, schemas

NEW_BIRD = species_photo(3, 0)  # a colour and shape none of the references has


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(client, data: bytes, path: str = "/api/v1/identify", **fields: str):  # type: ignore[no-untyped-def]
    return client.post(path, data={"image": (io.BytesIO(data), "bird.jpg"), **fields})


def count_rows(service, model) -> int:  # type: ignore[no-untyped-def]
    with service.store.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def stored_files(service) -> list[str]:  # type: ignore[no-untyped-def]
    root = service.settings.data_dir
    return sorted(p.name for d in ("photos", "thumbnails") for p in (root / d).rglob("*") if p.is_file())


def test_identify_answers_the_documented_contract(client):
    response = upload(client, jpeg_bytes(species_photo(0, 50)))
    assert response.status_code == 201
    body = response.get_json()
    assert list(body)[:2] == ["sighting_id", "url"]
    assert body["decision"] in ("confident", "needs_review", "no_match")
    assert 1 <= len(body["species"]) <= 5
    assert set(body["species"][0]) == {"name", "display_name", "score", "classifier", "knn", "fused", "taxon"}
    taxa = {s["name"]: s["taxon"] for s in body["species"]}  # the model's classes are scientific names here
    assert taxa["Passer domesticus"]["scientific_name"] == "Passer domesticus"  # the class Passer_domesticus
    assert taxa["Passer domesticus"]["family"] == "Passeridae" and taxa["Corvus cornix"]["genus"] == "Corvus"
    scores = [s["score"] for s in body["species"]]
    assert scores == sorted(scores, reverse=True)
    assert set(body["neighbours"][0]) == {"reference_id", "species", "name", "similarity", "thumbnail_url"}
    assert body["neighbours"][0]["species"] in SPECIES  # as the build's folder wrote it
    assert body["neighbours"][0]["name"] == kept_as(body["neighbours"][0]["species"])
    assert set(body["model"]) == {"name", "sha256"} and len(body["model"]["sha256"]) == 64
    assert response.headers["Location"].endswith(f"/api/v1/sightings/{body['sighting_id']}")
    timing = dict(part.split(";dur=") for part in response.headers["Server-Timing"].replace(";desc=forward", "").split(", "))
    assert 0 < float(timing["model"]) < float(timing["app"])
    assert client.get(body["neighbours"][0]["thumbnail_url"]).mimetype == "image/jpeg"


def test_an_upload_with_several_problems_names_them_all(client, service):
    response = client.post("/api/v1/identify", data={"lat": "12", "observed_at": "2999-01-01", "ignore_location": "maybe"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_coordinates"
    assert [p["code"] for p in error["problems"]] == ["bad_coordinates", "bad_date", "bad_field", "missing_image"]
    assert count_rows(service, Sighting) == 0
    one = upload(client, jpeg_bytes(species_photo(0, 1)), lat="12").get_json()["error"]
    assert one["code"] == "bad_coordinates" and "problems" not in one  # one problem: the plain shape


def test_a_similar_search_refuses_a_second_photo_rather_than_drop_it(client):
    photo = jpeg_bytes(species_photo(0, 2))
    both = client.post("/api/v1/similar", data={"image": [(io.BytesIO(photo), "a.jpg"), (io.BytesIO(photo), "b.jpg")]})
    assert both.status_code == 400 and both.get_json()["error"]["code"] == "too_many_photos"
    assert client.post("/api/v1/similar", data={"image": (io.BytesIO(photo), "a.jpg")}).status_code == 200


def test_the_whole_loop_correction_becomes_a_reference(client, service, token):
    first = upload(client, jpeg_bytes(NEW_BIRD)).get_json()
    assert first["decision"] == "needs_review"
    wrong = first["species"][0]["name"]
    corrected = next(kept_as(s) for s in SPECIES if kept_as(s) not in (wrong, first["neighbours"][0]["name"]))

    queue = client.get("/api/v1/review/queue", headers=bearer(token)).get_json()
    assert [item["sighting_id"] for item in queue["items"]] == [first["sighting_id"]]
    version = queue["items"][0]["version"]

    reviewed = client.post(f"/api/v1/sightings/{first['sighting_id']}/review", headers=bearer(token),
                           json={"action": "correct", "species": corrected, "version": version,
                                 "note": "white patch", "add_as_reference": True})
    assert reviewed.status_code == 200, reviewed.get_json()
    body = reviewed.get_json()
    assert body["status"] == "corrected" and body["answer_label"] == corrected and body["version"] == version + 1
    assert body["reviews"][0]["curator"] == "ana" and body["reviews"][0]["added_as_reference"] is True

    again = upload(client, jpeg_bytes(NEW_BIRD)).get_json()
    assert again["species"][0]["name"] == corrected
    nearest = again["neighbours"][0]
    assert nearest["reference_id"] == body["reference_id"] and nearest["species"] == corrected
    assert nearest["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert client.get("/api/v1/review/queue", headers=bearer(token)).get_json()["items"][0]["sighting_id"] == again["sighting_id"]


def test_a_stale_version_is_refused_with_the_current_state(client, service, token):
    other = service.curators.create("ben", "another long one")
    sighting_id = upload(client, jpeg_bytes(NEW_BIRD)).get_json()["sighting_id"]
    url = f"/api/v1/sightings/{sighting_id}/review"
    assert client.post(url, headers=bearer(token), json={"action": "confirm", "version": 1}).status_code == 200
    late = client.post(url, headers=bearer(other), json={"action": "correct", "species": SPECIES[0], "version": 1})
    assert late.status_code == 409
    body = late.get_json()
    assert body["error"]["code"] == "stale_version"
    assert body["sighting"]["version"] == 2 and body["sighting"]["status"] == "confirmed"
    assert count_rows(service, Review) == 1  # the refused review left no trace


def test_another_worker_and_a_restarted_one_catch_up_from_sql(make_service, token):
    first, second = make_service(), make_service()
    client_a = create_app(first.settings, first).test_client()
    client_b = create_app(second.settings, second).test_client()
    sighting_id = upload(client_a, jpeg_bytes(NEW_BIRD)).get_json()["sighting_id"]
    # B never saw the upload, yet finds it among similar sightings: it read SQL.
    hits = client_b.post("/api/v1/similar", data={"image": (io.BytesIO(jpeg_bytes(NEW_BIRD)), "b.jpg")}).get_json()
    assert hits["similar"][0]["sighting_id"] == sighting_id
    reviewed = client_a.post(f"/api/v1/sightings/{sighting_id}/review", headers=bearer(token),
                             json={"action": "correct", "species": SPECIES[2], "version": 1, "add_as_reference": True})
    reference_id = reviewed.get_json()["reference_id"]
    for client in (client_b, create_app(first.settings, make_service()).test_client()):  # B, and a restart
        answer = upload(client, jpeg_bytes(NEW_BIRD)).get_json()
        assert answer["neighbours"][0]["reference_id"] == reference_id


def test_review_needs_a_curator(client, token):
    sighting_id = upload(client, jpeg_bytes(NEW_BIRD)).get_json()["sighting_id"]
    url = f"/api/v1/sightings/{sighting_id}/review"
    for headers in ({}, bearer("idt_not-a-token"), bearer("garbage")):
        response = client.post(url, headers=headers, json={"action": "confirm", "version": 1})
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorised"
        assert client.get("/api/v1/review/queue", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("review", "status", "code"),
    [
        ({"action": "correct", "species": "Avis inventa", "version": 1}, 400, "unknown_species"),
        ({"action": "correct", "version": 1}, 400, "bad_review"),
        ({"action": "approve", "version": 1}, 400, "bad_review"),
        ({"action": "confirm"}, 400, "bad_review"),
        ({"action": "reject", "version": 1, "add_as_reference": True}, 400, "bad_review"),
        ({"action": "confirm", "version": 1, "add_as_reference": "maybe"}, 400, "bad_field"),
    ],
)
def test_bad_reviews_change_nothing(client, service, token, review, status, code):
    sighting_id = upload(client, jpeg_bytes(NEW_BIRD)).get_json()["sighting_id"]
    response = client.post(f"/api/v1/sightings/{sighting_id}/review", headers=bearer(token), json=review)
    assert response.status_code == status and response.get_json()["error"]["code"] == code
    assert client.get(f"/api/v1/sightings/{sighting_id}").get_json()["version"] == 1
    assert count_rows(service, Review) == 0


def test_unknown_sighting_is_404(client, token):
    for response in (client.get("/api/v1/sightings/999"), client.get("/api/v1/sightings/999/similar"),
                     client.post("/api/v1/sightings/999/review", headers=bearer(token),
                                 json={"action": "confirm", "version": 1})):
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "unknown_sighting"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


PHOTO_OK = jpeg_bytes(species_photo(0, 1))
# (case, photos, fields, status, code): what the probe sent, each answered with its code, nothing stored.
BAD_UPLOADS = [
    ("empty file", [b""], {}, 400, "empty_file"),
    ("text", [b"hello, I am text\n" * 10], {}, 400, "not_an_image"),
    ("truncated", [PHOTO_OK[:400]], {}, 400, "truncated_image"),
    ("over 4 Mpx", [_png(Image.new("L", (3000, 3000)))], {}, 413, "too_many_pixels"),  # the limit set below
    ("second photo truncated", [PHOTO_OK, PHOTO_OK[:400]], {}, 400, "truncated_image"),
    ("six photos", [PHOTO_OK] * 6, {}, 400, "too_many_photos"),
    ("lat 91", [PHOTO_OK], {"lat": "91", "lon": "0"}, 400, "bad_coordinates"),
    ("lat alone", [PHOTO_OK], {"lat": "12"}, 400, "bad_coordinates"),
    ("lon nan", [PHOTO_OK], {"lat": "1", "lon": "nan"}, 400, "bad_coordinates"),
    ("words as a date", [PHOTO_OK], {"observed_at": "last tuesday"}, 400, "bad_date"),
    ("year 2999", [PHOTO_OK], {"observed_at": "2999-01-01"}, 400, "bad_date"),
    ("edge of the calendar", [PHOTO_OK], {"observed_at": "0001-01-01T00:00:00+05:00"}, 400, "bad_date"),
    ("long note", [PHOTO_OK], {"note": "x" * 5000}, 400, "bad_field"),
    ("NUL in a note", [PHOTO_OK], {"note": "a\x00b"}, 400, "bad_field"),
    ("long observer name", [PHOTO_OK], {"observer": "y" * 2001}, 400, "bad_field"),
    ("boolean maybe", [PHOTO_OK], {"ignore_location": "maybe"}, 400, "bad_field"),
]


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=[case[0] for case in BAD_UPLOADS])
def test_bad_uploads_get_a_code_and_store_nothing(make_service, web_settings, case):
    from dataclasses import replace

    _, photos, fields, status, code = case
    settings = replace(web_settings, service=replace(web_settings.service, max_pixels=4_000_000))
    service = make_service(settings)
    client = create_app(settings, service).test_client()
    response = client.post("/api/v1/identify", data={
        "image": [(io.BytesIO(data), f"{n}.jpg") for n, data in enumerate(photos)], **fields})
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)
    assert count_rows(service, Sighting) == 0 and count_rows(service, Prediction) == 0
    assert stored_files(service) == []


def test_missing_image_and_oversize_uploads(make_service, web_settings):
    from dataclasses import replace

    settings = replace(web_settings, service=replace(web_settings.service, max_upload_mb=0.05))
    service = make_service(settings)
    client = create_app(settings, service).test_client()
    response = client.post("/api/v1/identify", data={"note": "no photo"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "missing_image"
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8))
    over_limit = jpeg_bytes(noisy, quality=95)  # ~0.2 MB: over 0.05 MB, under the 1 MB form slack
    assert 0.05 * 2**20 < len(over_limit) < 2**20
    over_body = over_limit + bytes(2 * 2**20)  # over the whole request limit: refused before reading
    for data in (over_limit, over_body):
        response = upload(client, data)
        assert response.status_code == 413 and response.get_json()["error"]["code"] == "file_too_large"
    assert count_rows(service, Sighting) == 0 and stored_files(service) == []


def _exif_jpeg(image: Image.Image, orientation: int | None = None, gps: bool = False, taken: str | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
        exif.get_ifd(0x8769)[0x9011] = "+02:00"  # OffsetTimeOriginal
    if gps:
        exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 30.0, 0.0), 3: "W", 4: (1.0, 15.0, 0.0)})
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_date_and_position_come_from_exif_unless_given(client, token):
    data = _exif_jpeg(species_photo(1, 3), gps=True, taken="2026:05:01 07:30:00")
    url = upload(client, data).get_json()["url"].replace("/sightings", "/api/v1/sightings")
    body = client.get(url, headers=bearer(token)).get_json()  # a curator sees the exact position
    assert body["lat"] == pytest.approx(52.5) and body["lon"] == pytest.approx(-1.25)
    assert datetime.fromisoformat(body["observed_at"]) == datetime(2026, 5, 1, 5, 30, tzinfo=timezone.utc)
    given = upload(client, data, lat="-33.9", lon="18.4", observed_at="2026-06-02T10:00:00+00:00").get_json()
    body = client.get(f"/api/v1/sightings/{given['sighting_id']}", headers=bearer(token)).get_json()
    assert (body["lat"], body["lon"]) == (-33.9, 18.4) and body["observed_at"].startswith("2026-06-02T10:00:00")


def _cmyk_jpeg() -> bytes:
    return jpeg_bytes(species_photo(2, 2).convert("CMYK"))


def _sixteen_bit_png() -> bytes:
    grey = (np.asarray(species_photo(2, 2).convert("L")).astype(np.uint16) * 256)
    return _png(Image.fromarray(grey.astype(np.uint16)))


def _palette_png() -> bytes:
    return _png(species_photo(2, 2).convert("P", palette=Image.Palette.ADAPTIVE))


def _transparent_png() -> bytes:
    return _png(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))


@pytest.mark.parametrize("make", [_cmyk_jpeg, _sixteen_bit_png, _palette_png, _transparent_png])
def test_unusual_modes_are_accepted(client, service, make):
    response = upload(client, make())
    assert response.status_code == 201, response.get_json()


def _thumbnail(client, data: bytes) -> Image.Image:  # type: ignore[no-untyped-def]
    sighting = client.get(f"/api/v1/sightings/{upload(client, data).get_json()['sighting_id']}").get_json()
    response = client.get(sighting["thumbnail_url"])
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    return Image.open(io.BytesIO(response.data))


def test_rotated_and_transparent_photos_are_handled_correctly(client):
    rotated = _exif_jpeg(Image.new("RGB", (120, 60), (200, 40, 40)), orientation=6)  # stored landscape, shown portrait
    width, height = _thumbnail(client, rotated).size
    assert width < height
    assert _thumbnail(client, _transparent_png()).convert("RGB").getpixel((10, 10)) >= (250, 250, 250)


def _upload_at(client, variant: int, when: str, lat: float, lon: float) -> int:  # type: ignore[no-untyped-def]
    data = jpeg_bytes(species_photo(0, variant))
    return upload(client, data, observed_at=when, lat=str(lat), lon=str(lon)).get_json()["sighting_id"]


def test_similar_sightings_exclude_itself_and_honour_filters(client):
    london = _upload_at(client, 60, "2026-04-01T08:00:00Z", 51.5, -0.1)
    paris = _upload_at(client, 61, "2026-05-01T08:00:00Z", 48.9, 2.35)
    cairo = _upload_at(client, 62, "2026-06-01T08:00:00Z", 30.0, 31.2)
    url = f"/api/v1/sightings/{london}/similar"
    everything = client.get(url).get_json()["similar"]
    assert sorted(hit["sighting_id"] for hit in everything) == sorted([paris, cairo])
    similarities = [hit["similarity"] for hit in everything]
    assert similarities == sorted(similarities, reverse=True)
    assert [h["sighting_id"] for h in client.get(url, query_string={"bbox": "-10,35,30,60"}).get_json()["similar"]] == [paris]
    assert [h["sighting_id"] for h in client.get(url, query_string={"from": "2026-05-15"}).get_json()["similar"]] == [cairo]
    assert [h["sighting_id"] for h in client.get(url, query_string={"to": "2026-05-15", "k": "5"}).get_json()["similar"]] == [paris]
    assert len(client.get(url, query_string={"k": "1"}).get_json()["similar"]) == 1
    answer = client.get(f"/api/v1/sightings/{paris}").get_json()["answer_label"]
    only = client.get(url, query_string={"species": answer}).get_json()["similar"]
    assert only and all(hit["answer_label"] == answer for hit in only)


@pytest.mark.parametrize(
    ("query", "code"),
    [({"k": "0"}, "bad_k"), ({"k": "many"}, "bad_k"), ({"bbox": "1,2,3"}, "bad_coordinates"),
     ({"bbox": "0,50,10,40"}, "bad_coordinates"), ({"from": "2026-02-30"}, "bad_date"),
     ({"from": "2026-05-02", "to": "2026-05-01"}, "bad_date"), ({"species": "Avis inventa"}, "unknown_species")],
)
def test_bad_similar_filters(client, query, code):
    sighting_id = upload(client, jpeg_bytes(NEW_BIRD)).get_json()["sighting_id"]
    response = client.get(f"/api/v1/sightings/{sighting_id}/similar", query_string=query)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code


def test_similar_to_a_photo_stores_nothing(client, service):
    first = upload(client, jpeg_bytes(species_photo(1, 70))).get_json()["sighting_id"]
    files = stored_files(service)
    response = upload(client, jpeg_bytes(species_photo(1, 70)), path="/api/v1/similar")
    assert response.status_code == 200
    assert response.get_json()["similar"][0]["sighting_id"] == first
    assert response.get_json()["similar"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert count_rows(service, Sighting) == 1 and stored_files(service) == files


def test_queue_is_most_uncertain_first_and_paginated(client, service, token):
    for variant in range(5):
        upload(client, jpeg_bytes(species_photo(variant % 4, 80 + variant)))
    first = client.get("/api/v1/review/queue", headers=bearer(token), query_string={"per_page": 2}).get_json()
    second = client.get(first["next"], headers=bearer(token)).get_json()
    items = first["items"] + second["items"]
    assert first["total"] == 5  # the tiny model is never confident at 0.9
    uncertainties = [item["uncertainty"] for item in items]
    assert uncertainties == sorted(uncertainties, reverse=True)
    assert len({item["sighting_id"] for item in items}) == 4 and first["page"] == 1 and second["page"] == 2
    assert second["next"] is not None


def test_openapi_is_generated_and_lists_every_route(client):
    """Every route under /api/v1 with each of its methods, and nothing else; schemas named as in the code."""
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
              for rule in client.application.url_map.iter_rules()
              if rule.rule.startswith("/api/v1/") and rule.endpoint != "api.openapi"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method.upper()) for path, operations in document["paths"].items() for method in operations}
    assert documented == routes and len(routes) == 18
    response = document["paths"]["/api/v1/identify"]["post"]["responses"]["201"]
    assert response["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Identification"
    assert set(document["components"]["schemas"]["Identification"]["properties"]) == set(
        schemas.Identification.model_fields)
    queue = document["paths"]["/api/v1/review/queue"]["get"]
    assert queue["security"] == [{"bearer": []}, {"cookie": []}]


def test_an_answer_that_drifts_from_its_schema_fails_the_tests(client, monkeypatch):
    """A field a view adds without declaring it (as /similar once did) turns into a 500 under the test suite."""
    from identify.web import views

    assert client.get("/api/v1/taxa?q=sparrow").status_code == 200
    monkeypatch.setattr(views, "suggestion_json", lambda s: {"name": s.name, "taxon": None, "undeclared": 1})
    answer = client.get("/api/v1/taxa?q=sparrow")
    assert answer.status_code == 500 and answer.get_json()["error"]["code"] == "internal_error"


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/api/v1/nothing").get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/identify").get_json()["error"]["code"] == "method_not_allowed"


def test_concurrent_uploads_are_all_stored(web_settings, refs, tmp_path):
    """Threads of one worker at once, with a model whose classes are not yet species rows: the first uploads
    race to create them, and every upload must still be stored once."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from identify.backbone import load_backbone
    from identify.service import IdentificationService
    from identify.storage import Store, make_engine
    from tests.conftest import build_reference_index, write_birder_checkpoint

    classes = ["Alauda_arvensis", "Sturnus_vulgaris", "Turdus_merula"]
    checkpoint = write_birder_checkpoint("mobilenet_v3_small_0_25", classes, 96, tmp_path / "mobilenet_v3_small_0_25_x.pt")
    settings = replace(web_settings, service=replace(web_settings.service, model=str(checkpoint)))
    backbone = load_backbone(str(checkpoint))
    build_reference_index(settings, backbone, refs, "birds")
    service = IdentificationService(settings, backbone, Store(make_engine(settings.database_url)))
    app = create_app(settings, service)

    def one(variant: int) -> int:
        return upload(app.test_client(), jpeg_bytes(species_photo(variant % 4, 200 + variant))).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(one, range(12)))
    assert statuses == [201] * 12
    assert count_rows(service, Sighting) == 12 and service.similar_index.count == 12


def _exif_local_jpeg(taken: str, gps: tuple[tuple[float, float, float], str, tuple[float, float, float], str] | None) -> bytes:
    """EXIF DateTimeOriginal without OffsetTimeOriginal (most cameras), with or without GPS."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = taken
    if gps:
        exif.get_ifd(0x8825).update({1: gps[1], 2: gps[0], 3: gps[3], 4: gps[2]})
    buffer = io.BytesIO()
    species_photo(1, 4).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize(("gps", "observed", "zone"), [
    (((31.0, 46.0, 0.0), "N", (35.0, 13.0, 0.0), "E"), "2026-04-15T07:00:00+03:00", "place"),  # Jerusalem, summer time
    (((52.0, 30.0, 0.0), "N", (13.0, 24.0, 0.0), "E"), "2026-01-15T07:00:00+01:00", "place"),  # Berlin, winter
    (None, "2026-04-15T07:00:00", "unknown"),  # no offset, no place: the wall time, marked unknown, not UTC
])
def test_exif_times_are_local_and_keep_their_offset(client, gps, observed, zone):
    taken = observed[:19].replace("-", ":", 2).replace("T", " ")
    sighting_id = upload(client, _exif_local_jpeg(taken, gps)).get_json()["sighting_id"]
    body = client.get(f"/api/v1/sightings/{sighting_id}").get_json()
    assert (body["observed_at"], body["observed_zone"]) == (observed, zone)
    page = client.get(f"/sightings/{sighting_id}").get_data(as_text=True)
    assert ("time zone unknown" in page) == (zone == "unknown")


def test_a_given_time_keeps_its_offset_and_a_bare_one_takes_the_places(client):
    given = upload(client, jpeg_bytes(species_photo(1, 5)), observed_at="2026-04-15T07:00:00-04:00").get_json()
    body = client.get(f"/api/v1/sightings/{given['sighting_id']}").get_json()
    assert (body["observed_at"], body["observed_zone"]) == ("2026-04-15T07:00:00-04:00", "offset")
    bare = upload(client, jpeg_bytes(species_photo(1, 5)), observed_at="2026-04-15T07:00", lat="31.78",
                  lon="35.22").get_json()
    body = client.get(f"/api/v1/sightings/{bare['sighting_id']}").get_json()
    assert (body["observed_at"], body["observed_zone"]) == ("2026-04-15T07:00:00+03:00", "place")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2999-01-01",
                                    "1799-12-31T23:00:00Z", "0001-01-01"])
def test_dates_at_the_edge_of_the_calendar_are_refused_not_a_server_error(client, service, moment):
    """Not a server error (converting to UTC overflowed), and not stored either: a bird seen in 2999 or before
    1800 is a typo (2999-01-01 was stored before)."""
    response = upload(client, jpeg_bytes(species_photo(1, 6)), observed_at=moment)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_date"
    assert count_rows(service, Sighting) == 0


def test_a_date_a_day_ahead_is_clock_skew_and_a_camera_clock_in_the_future_is_no_date(client):
    from datetime import timedelta

    soon = (datetime.now(timezone.utc) + timedelta(hours=20)).isoformat(timespec="seconds")
    assert upload(client, jpeg_bytes(species_photo(1, 9)), observed_at=soon).status_code == 201
    future_exif = _exif_jpeg(species_photo(1, 10), taken="2999:01:01 07:30:00")
    answer = upload(client, future_exif)  # bad EXIF never fails an upload: the date is just not known
    assert answer.status_code == 201
    body = client.get(f"/api/v1/sightings/{answer.get_json()['sighting_id']}").get_json()
    assert body["observed_at"] is None


def _gps_of(data: bytes) -> dict:
    return dict(Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825))


def test_the_public_sees_a_generalised_place_and_a_photo_without_gps(client, token):
    data = _exif_jpeg(species_photo(1, 7), orientation=6, gps=True, taken="2026:05:01 07:30:00")
    assert _gps_of(data)  # the upload carries its position
    sighting_id = upload(client, data).get_json()["sighting_id"]
    public = client.get(f"/api/v1/sightings/{sighting_id}").get_json()
    assert (public["lat"], public["lon"], public["location"]) == (52.55, -1.25, "generalised")
    assert 5_000 < public["coordinate_uncertainty_m"] < 8_000
    photo = client.get(public["photo_url"])
    assert photo.status_code == 200 and _gps_of(photo.data) == {}
    assert Image.open(io.BytesIO(photo.data)).getexif().get(0x0112) == 6  # orientation kept
    assert client.get(public["photo_url"].replace("/photos/", "/originals/")).status_code in (302, 401)
    curator = client.get(f"/api/v1/sightings/{sighting_id}", headers=bearer(token)).get_json()
    assert (curator["lat"], curator["lon"], curator["location"]) == (52.5, -1.25, "exact")
    page = client.get(f"/sightings/{sighting_id}").get_data(as_text=True)
    assert public["place"] and f"In {public['place']}" in page and "52.50000" not in page  # a county, no town


def test_an_uploader_can_hide_the_location(client, token):
    sighting_id = upload(client, jpeg_bytes(species_photo(1, 8)), lat="31.78", lon="35.22",
                         hide_location="true").get_json()["sighting_id"]
    public = client.get(f"/api/v1/sightings/{sighting_id}").get_json()
    assert (public["lat"], public["lon"], public["location"]) == (None, None, "hidden")
    curator = client.get(f"/api/v1/sightings/{sighting_id}", headers=bearer(token)).get_json()
    assert (curator["lat"], curator["location"]) == (31.78, "hidden from the public")


def test_public_ids_are_random_tokens_and_sql_keys_stay_inside(client, service):
    ids = [upload(client, jpeg_bytes(species_photo(2, v))).get_json()["sighting_id"] for v in (30, 31)]
    assert all(isinstance(i, str) and len(i) == 16 and not i.isdigit() for i in ids) and ids[0] != ids[1]
    assert client.get(f"/api/v1/sightings/{ids[0]}").status_code == 200
    key = service.sighting_key(ids[0])
    assert client.get(f"/api/v1/sightings/{key}").get_json()["error"]["code"] == "unknown_sighting"


def test_the_upgrade_gives_existing_sightings_a_public_id(client, service):
    from identify.storage import downgrade_database, upgrade_database

    upload(client, jpeg_bytes(species_photo(2, 32)))
    upload(client, jpeg_bytes(species_photo(2, 33)))
    downgrade_database(service.store.engine, "0008")  # as a database of the release before public ids
    upgrade_database(service.store.engine)
    with service.store.session() as session:
        public = session.scalars(select(Sighting.public_id)).all()
    assert len(public) == 2 and len(set(public)) == 2 and all(len(p) == 16 for p in public)


def test_the_publics_area_filter_sees_only_the_generalised_square(client, token):
    """A narrow box around the exact position must not find a sighting whose shown square centre lies outside
    it (else many boxes would narrow the position down); a curator's box works on the exact position."""
    target = upload(client, jpeg_bytes(species_photo(2, 40)), lat="31.7812", lon="35.2234").get_json()["sighting_id"]
    probe = upload(client, jpeg_bytes(species_photo(2, 41))).get_json()["sighting_id"]
    narrow = {"bbox": "35.22,31.78,35.23,31.79"}  # holds the exact place, not the square's centre (31.75, 35.25)
    square = {"bbox": "35.2,31.7,35.3,31.8"}

    def found(query, headers=None) -> list[str]:  # type: ignore[no-untyped-def]
        response = client.get(f"/api/v1/sightings/{probe}/similar", query_string=query, headers=headers or {})
        return [h["sighting_id"] for h in response.get_json()["similar"]]

    assert found(narrow) == [] and found(square) == [target]
    assert found(narrow, bearer(token)) == [target]
    hidden = upload(client, jpeg_bytes(species_photo(2, 42)), lat="31.7812", lon="35.2234",
                    hide_location="true").get_json()["sighting_id"]
    assert hidden not in found(square) and hidden in found(square, bearer(token))


def test_every_worker_sees_every_sighting_after_a_burst_larger_than_the_look_back(make_service, client):
    """Worker B stores 2,400 sightings while worker A, before it next looks, stores one of its own: A's
    similar-sightings search must then cover all of them (it once covered only the last 1,000)."""
    worker_a, worker_b = make_service(), make_service()
    worker_a.similar_index.refresh(force=True)
    store_sightings(worker_b, 2400)
    own = create_app(worker_a.settings, worker_a).test_client()
    upload(own, jpeg_bytes(species_photo(2, 50)))  # A's own row, above the whole burst
    worker_a.similar_index.refresh(force=True)
    assert worker_a.similar_index.count == 2401 == count_rows(worker_a, Sighting)


@pytest.mark.parametrize(("body", "code"), [
    ({"action": "confirm", "version": 1.7}, "bad_review"),  # was taken as 1
    ({"action": "confirm", "version": True}, "bad_review"),
    ({"action": "confirm", "version": 3_000_000_000}, "bad_review"),  # past SQL's INTEGER: a 500 on PostgreSQL
    ({"action": "confirm", "version": "1e3"}, "bad_review"),
    ({"action": "reject", "version": 1, "note": "two\x00birds"}, "bad_field"),  # PostgreSQL refuses NUL
    ({"action": "reject", "version": 1, "note": "\ud800"}, "bad_field"),  # a lone surrogate is no UTF-8
])
def test_reviews_with_bad_values_are_refused_and_change_nothing(client, service, token, body, code):
    sighting_id = upload(client, jpeg_bytes(NEW_BIRD)).get_json()["sighting_id"]
    response = client.post(f"/api/v1/sightings/{sighting_id}/review", headers=bearer(token), json=body)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    assert count_rows(service, Review) == 0
    assert client.get(f"/api/v1/sightings/{sighting_id}").get_json()["version"] == 1


def test_nul_in_a_filter_or_a_login_name_is_bad_input_not_a_server_error(client):
    sighting_id = upload(client, jpeg_bytes(NEW_BIRD)).get_json()["sighting_id"]
    for field in ("species", "genus", "family"):
        response = client.get(f"/api/v1/sightings/{sighting_id}/similar", query_string={field: "Passer\x00"})
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_field"
    app = client.application
    app.config["WTF_CSRF_ENABLED"] = False
    response = client.post("/login", data={"name": "ana\x00", "password": "correct horse battery"})
    assert response.status_code == 401


def test_405_answers_say_which_methods_are_allowed(client):
    response = client.get("/api/v1/identify")
    assert response.status_code == 405 and response.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_a_review_page_number_past_any_page_shows_the_first(client, service, token):
    app = client.application
    app.config["WTF_CSRF_ENABLED"] = False
    assert client.post("/login", data={"name": "ana", "password": "correct horse battery"}).status_code == 302
    for page in ("3000000000", "99999999999999999999999", "-5", "x"):
        response = client.get(f"/review?page={page}")
        assert response.status_code == 200 and "Review queue" in response.get_data(as_text=True)


def test_two_curators_promoting_the_same_photo_at_once_share_one_reference(client, service, token):
    """Two sightings of one photo, each corrected by another curator at the same moment: both reviews stand and
    the photo becomes one reference (on PostgreSQL the second insert once failed on the unique hash: a 500)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from identify.schema import ReferenceImage

    other = service.curators.create("ben", "another long one")
    app = client.application
    for round_ in range(10):
        photo = jpeg_bytes(species_photo(1, 300 + round_))
        ids = [upload(client, photo).get_json()["sighting_id"] for _ in range(2)]
        start = threading.Barrier(2)

        def promote(sighting_id: str, curator_token: str, start: threading.Barrier = start) -> int:
            body = {"action": "correct", "species": SPECIES[2], "version": 1, "add_as_reference": True}
            with app.test_client() as own:
                start.wait()
                return own.post(f"/api/v1/sightings/{sighting_id}/review", headers=bearer(curator_token),
                                json=body).status_code

        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = list(pool.map(promote, ids, [token, other]))
        assert statuses == [200, 200], (round_, statuses)
    assert count_rows(service, ReferenceImage) == 18 + 10


def test_photo_files_no_sighting_names_are_swept_at_start(make_service, client, service):
    """A server killed between storing a photo and committing its sighting leaves a file no row names: a start
    removes it once it is an hour old, and keeps every photo a sighting or reference still uses. One process
    sweeps at most once an hour: the other workers' starts skip the sweep and its SQL reads."""
    import os
    import time

    kept = upload(client, jpeg_bytes(species_photo(0, 77))).get_json()
    summary = client.get(f"/api/v1/sightings/{kept['sighting_id']}").get_json()
    assert client.get(summary["thumbnail_url"]).status_code == 200  # thumbnails are made on first request
    photos = service.photos
    orphan = photos.save(jpeg_bytes(species_photo(1, 78)), "JPEG")
    photos.make_thumbnail(orphan.sha256, Image.open(io.BytesIO(jpeg_bytes(species_photo(1, 78)))))
    fresh = photos.save(jpeg_bytes(species_photo(2, 79)), "JPEG")  # an upload still in flight in another worker
    half_written = photos.photos / "ab" / ".tmp-killed"
    half_written.parent.mkdir(parents=True, exist_ok=True)
    half_written.write_bytes(b"half a photo")
    make_service()  # a restart within the hour of the last sweep leaves the files alone
    assert photos.photo_path(orphan.name).exists() and half_written.exists()
    hour_ago = time.time() - 3700
    for path in (photos.photo_path(orphan.name), photos.thumbnail_path(orphan.sha256), half_written,
                 photos.sweep_stamp, *photos.photos.glob("*/*"), *photos.thumbnails.glob("*")):
        if path != photos.photo_path(fresh.name):
            os.utime(path, (hour_ago, hour_ago))

    restarted = make_service()
    assert not photos.photo_path(orphan.name).exists() and not photos.thumbnail_path(orphan.sha256).exists()
    assert not half_written.exists() and photos.photo_path(fresh.name).exists()
    record = restarted.sighting(restarted.sighting_key(kept["sighting_id"]))
    assert photos.photo_path(record.photo_name).exists() and photos.thumbnail_path(record.photo_sha256).exists()
    assert client.get(kept["neighbours"][0]["thumbnail_url"]).status_code == 200  # references' thumbnails stay


def test_twenty_two_curator_races_each_have_one_winner_and_one_409(client, service, token):
    """Two curators review the same version of a sighting at the same moment, twenty times: each time exactly
    one review stands and the other gets 409 stale_version. (On PostgreSQL a confirm that lost to a reject was
    a 400 'nothing to confirm': the loser was judged on the winner's state before its version was checked.)"""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    other = service.curators.create("ben", "another long one")
    app = client.application
    for round_ in range(20):
        sighting_id = upload(client, jpeg_bytes(species_photo(round_ % 3, 400 + round_))).get_json()["sighting_id"]
        start = threading.Barrier(2)

        def review(body: dict, curator_token: str, start: threading.Barrier = start,
                   sighting_id: str = sighting_id) -> int:
            with app.test_client() as own:
                start.wait()
                return own.post(f"/api/v1/sightings/{sighting_id}/review", headers=bearer(curator_token),
                                json=body).status_code

        bodies = [{"action": "confirm", "version": 1}, {"action": "reject", "version": 1, "add_as_reference": False}]
        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = sorted(pool.map(review, bodies, [token, other]))
        assert statuses == [200, 409], (round_, statuses)
    assert count_rows(service, Review) == 20


def test_a_field_given_twice_is_refused_not_half_read(client):
    """Found by schemathesis: /similar with k=1&k=2 answered with the first."""
    photo = jpeg_bytes(species_photo(0, 2))
    twice = client.post("/api/v1/similar", data={"image": (io.BytesIO(photo), "a.jpg"), "k": ["1", "2"]})
    assert twice.status_code == 400 and twice.get_json()["error"]["code"] == "bad_field"
    assert client.get("/api/v1/taxa?q=wren&q=sparrow").status_code == 400


def test_only_one_of_several_processes_sweeps_photos_at_a_time(tmp_path):
    """While one process sweeps (holding the sweep lock), another's start skips it without reading SQL."""
    import fcntl

    from identify.photos import PhotoStore

    photos = PhotoStore(tmp_path)
    asked = []

    def kept() -> tuple[set[str], set[str]]:
        asked.append(True)
        return set(), set()

    def named(name: str) -> bool:
        return False

    with open(photos.sweep_lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert photos.sweep_if_due(3600, kept, 3600, named) is None and not asked
    assert photos.sweep_if_due(3600, kept, 3600, named) == 0 and asked == [True]
    assert photos.sweep_if_due(3600, kept, 3600, named) is None and asked == [True]  # swept less than an hour ago
