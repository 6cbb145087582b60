"""The bird in the frame: a user's crop, a detector's box, a curator's re-crop (identify.framing, .detector,
.uploads), through the API, the command line and SQL."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from identify.cli import main
from identify.errors import IdentifyError
from identify.framing import Crop, Detection, frame_photos
from tests.conftest import SPECIES, jpeg_bytes, kept_as, log_in, page_token, species_photo

FRAME = 768  # the big frame's side; the bird is a 128-pixel square in it (1/36 of the frame)
BIRD_AT = (560, 96)
BIRD_CROP = Crop(BIRD_AT[0] / FRAME, BIRD_AT[1] / FRAME, 128 / FRAME, 128 / FRAME)
# Far means far here: nearest reference under 0.9, and the random classifier is never sure (3 classes)
FAR = {"no_match_similarity": 0.9, "no_match_classifier": 0.99, "min_support": 1}


def small_bird_in_a_big_frame(species: int = 2, variant: int = 70) -> bytes:
    """A photo of species `species` as a small part of a large frame of textured ground."""
    rng = np.random.default_rng(7)
    ground = rng.integers(90, 150, (FRAME // 8, FRAME // 8, 3)).astype(np.uint8)
    frame = Image.fromarray(ground).resize((FRAME, FRAME), Image.Resampling.BICUBIC)
    frame.paste(species_photo(species, variant).resize((128, 128)), BIRD_AT)
    return jpeg_bytes(frame)


@pytest.fixture
def far_service(make_service, web_settings):  # type: ignore[no-untyped-def]
    fusion = dataclasses.replace(web_settings.fusion, **FAR)
    return make_service(dataclasses.replace(web_settings, fusion=fusion))


def upload(client, data: bytes, **fields):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/identify", data={"image": (io.BytesIO(data), "frame.jpg"), **fields},
                       content_type="multipart/form-data")


def test_a_crop_is_what_the_model_looks_at(far_service):
    from identify.web import create_app

    client = create_app(far_service.settings, far_service).test_client()
    photo = small_bird_in_a_big_frame()
    whole = upload(client, photo).get_json()
    assert whole["decision"] == "no_match" and whole["photos"][0]["crop"] is None
    cropped = upload(client, photo, crop=BIRD_CROP.text)
    assert cropped.status_code == 201, cropped.get_json()
    body = cropped.get_json()
    assert body["decision"] != "no_match" and body["answer_label"] == kept_as(SPECIES[2])
    assert body["photos"][0]["crop_source"] == "user"
    assert body["photos"][0]["crop"] == pytest.approx(BIRD_CROP.to_dict(), abs=1e-4)
    stored = client.get(f"/api/v1/sightings/{body['sighting_id']}").get_json()
    assert stored["photos"][0]["crop"] == body["photos"][0]["crop"] and stored["photos"][0]["crop_source"] == "user"
    page = client.get(body["url"]).get_data(as_text=True)
    assert 'class="crop-box"' in page and "left: 72.9" in page  # the box drawn where it was, on the photo


def test_lists_show_the_bird_a_stored_crop_frames(far_service):
    """The thumbnail of a cropped photo is of its crop, cut from the full photo: the bird, not a field with a
    speck in it; made only for crops a sighting stored; kept by the sweep while the photo is."""
    import os
    import time

    from identify.web import create_app

    client = create_app(far_service.settings, far_service).test_client()
    body = upload(client, small_bird_in_a_big_frame(), crop=BIRD_CROP.text).get_json()
    url = body["photos"][0]["thumbnail_url"]
    listed = client.get("/api/v1/sightings").get_json()["items"][0]
    assert listed["thumbnail_url"] == url and url.endswith(f"?crop={BIRD_CROP.text}")
    picture = Image.open(io.BytesIO(client.get(url).data))
    assert picture.size == (128, 128)  # the bird's 128 pixels, from the full 768-pixel photo
    expected = Image.open(io.BytesIO(small_bird_in_a_big_frame())).crop((560, 96, 688, 224))
    assert np.abs(np.asarray(picture, float) - np.asarray(expected, float)).mean() < 8
    whole = url.partition("?")[0]
    assert Image.open(io.BytesIO(client.get(whole).data)).size == (320, 320)  # the whole photo's stays
    for other in ("0,0,0.5,0.5", "1,2", "x"):  # no crop anybody stored: no file made of it
        assert client.get(f"{whole}?crop={other}").status_code == 404
    photos = far_service.photos
    made = sorted(p.name for p in photos.thumbnails.glob("*"))
    assert len(made) == 2
    hour_ago = time.time() - 3700
    for path in [*photos.thumbnails.glob("*"), photos.sweep_stamp]:
        os.utime(path, (hour_ago, hour_ago))
    photos.sweep(*far_service._photo_files_in_use(), 3600, far_service.sightings.names_photo)
    assert sorted(p.name for p in photos.thumbnails.glob("*")) == made


def test_predict_crop_agrees_with_the_service(far_service, tmp_path):
    from identify.web import create_app

    client = create_app(far_service.settings, far_service).test_client()
    photo = tmp_path / "frame.jpg"
    photo.write_bytes(small_bird_in_a_big_frame())
    served = upload(client, photo.read_bytes(), crop=BIRD_CROP.text).get_json()
    env = {"IDENTIFY_DATA_DIR": str(far_service.settings.data_dir),
           "IDENTIFY_DATABASE_URL": far_service.settings.database_url,
           **{f"IDENTIFY_{key.upper()}": str(value) for key, value in FAR.items()},
           "IDENTIFY_K": "1", "IDENTIFY_CONFIDENT_SCORE": "0.9"}
    result = CliRunner().invoke(main, ["predict", "--model", far_service.settings.service.model, "--index", "birds",
                                       "--crop", BIRD_CROP.text, "--json", str(photo)], env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["decision"] == served["decision"] and answer["species"][0]["name"] == served["answer_label"]
    assert answer["framing"][0]["crop"] == served["photos"][0]["crop"]
    bad = CliRunner().invoke(main, ["predict", "--model", far_service.settings.service.model, "--index", "birds",
                                    "--crop", "0.5,0.5,0.9,0.2", str(photo)], env=env)
    assert bad.exit_code != 0 and "bad_crop" in bad.output


SLIVERS = ["0,0,1e-308,1e-308", "0,0,5e-324,5e-324", "0,0,4e-323,4e-323", "0.5,0.5,2.2e-308,0.1"]


@pytest.mark.parametrize(("crop", "code"), [("0.1,0.1,0.5", "bad_crop"), ("0.6,0.1,0.5,0.5", "bad_crop"),
                                            ("a,b,c,d", "bad_crop"), ("0,0,0.001,0.001", "crop_too_small"),
                                            ("nan,0,0.5,0.5", "bad_crop"), ("0,0,inf,0.5", "bad_crop"),
                                            ("0,0,-0.0,0.5", "bad_crop"),
                                            *((sliver, "crop_too_small") for sliver in SLIVERS)])
def test_bad_crops_are_refused_and_store_nothing(client, service, crop, code):
    """A sliver of a crop (1e-308 wide) was a 500: its decode size overflowed to infinity."""
    from identify.schema import Sighting

    response = upload(client, small_bird_in_a_big_frame(), crop=crop)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    with service.store.session() as session:
        assert session.query(Sighting).count() == 0


def test_more_crops_than_photos_are_refused(client):
    response = client.post("/api/v1/identify", data={"image": (io.BytesIO(small_bird_in_a_big_frame()), "a.jpg"),
                                                     "crop": [BIRD_CROP.text, BIRD_CROP.text]},
                           content_type="multipart/form-data")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_crop"


# The box a detector draws tight round the bird: with the margin, the square it identifies is the bird's
_SIDE = 128 / 1.3
DETECTED = Crop((BIRD_AT[0] + (128 - _SIDE) / 2) / FRAME, (BIRD_AT[1] + (128 - _SIDE) / 2) / FRAME, _SIDE / FRAME,
                _SIDE / FRAME)


class StandIn:
    """A deterministic detector: it finds the bird where the test put it, and a worse one elsewhere."""

    def find(self, images):  # type: ignore[no-untyped-def]
        return [[Detection(DETECTED, 0.9, "bird"), Detection(Crop(0.0, 0.0, 0.1, 0.1), 0.6, "bird")]
                for _ in images]


def test_the_detectors_best_bird_is_identified_and_every_box_reported(make_service, web_settings):
    from identify.service import IdentificationService
    from identify.web import create_app

    first = make_service(dataclasses.replace(web_settings, fusion=dataclasses.replace(web_settings.fusion, **FAR)))
    service = IdentificationService(first.settings, first.backbone, first.store, finder=StandIn())
    client = create_app(service.settings, service).test_client()
    body = upload(client, small_bird_in_a_big_frame()).get_json()
    photo = body["photos"][0]
    assert photo["crop_source"] == "detector" and [d["score"] for d in photo["detections"]] == [0.9, 0.6]
    crop = Crop(**photo["crop"])  # a square around the best box, with a margin, inside the frame
    assert crop.x < DETECTED.x and crop.x + crop.w > DETECTED.x + DETECTED.w and crop.w == pytest.approx(crop.h)
    assert body["decision"] != "no_match" and body["answer_label"] == kept_as(SPECIES[2])
    # a crop the user drew wins over the detector
    drawn = upload(client, small_bird_in_a_big_frame(), crop="0,0,0.5,0.5").get_json()["photos"][0]
    assert drawn["crop_source"] == "user" and drawn["detections"] == []


class SmallBird:
    """A stand-in detector that finds a small bird: its square, in the detector's half-size decode, is
    narrower than the model's input."""

    box = Crop(BIRD_AT[0] / FRAME, BIRD_AT[1] / FRAME, 0.06, 0.06)

    def find(self, images):  # type: ignore[no-untyped-def]
        return [[Detection(self.box, 0.9, "bird")] for _ in images]


def test_a_detected_bird_is_cut_from_the_full_resolution_photo(make_service, web_settings):
    from identify.service import IdentificationService
    from identify.web import create_app

    first = make_service(web_settings)
    service = IdentificationService(first.settings, first.backbone, first.store, finder=SmallBird())
    looked_at = []
    submit = service.batcher.submit_many
    service.batcher.submit_many = lambda images: looked_at.extend(i.size for i in images) or submit(images)
    photo = upload(create_app(service.settings, service).test_client(), small_bird_in_a_big_frame()).get_json()
    crop = Crop(**photo["photos"][0]["crop"])
    # the square's pixels in the 768-pixel photo itself, not in the 384-pixel decode the detector was given
    assert looked_at == [crop.cut(Image.open(io.BytesIO(small_bird_in_a_big_frame()))).size]
    assert looked_at[0][0] > service.backbone.identity.decode_size / 2


class FindsNothing:
    def find(self, images):  # type: ignore[no-untyped-def]
        return [[] for _ in images]


def test_a_detector_that_finds_no_bird_says_so(make_service, web_settings):
    from identify.service import IdentificationService
    from identify.web import create_app

    first = make_service(web_settings)
    service = IdentificationService(first.settings, first.backbone, first.store, finder=FindsNothing())
    client = create_app(service.settings, service).test_client()
    body = upload(client, small_bird_in_a_big_frame()).get_json()
    assert body["photos"][0] | {"photo_url": "", "thumbnail_url": ""} == {
        "photo_url": "", "thumbnail_url": "", "crop": None, "crop_source": "detector", "detections": []}
    page = _text(client.get(body["url"]).get_data(as_text=True))
    assert "The detector found no bird: the whole photo was identified." in page


def test_a_random_weight_birder_detector_loads_and_reports_its_boxes(make_service, web_settings, tmp_path):
    """The loading path: a birder detection checkpoint in birder's own layout, found by IDENTIFY_DETECTOR."""
    from birder.model_registry import registry

    from identify.detector import write_detection_checkpoint
    from identify.service import IdentificationService, load_finder
    from identify.web import create_app

    net = registry.detection_net_factory("ssdlite", 3, registry.net_factory("mobilenet_v3_small_0_25", 3, 3,
                                                                             size=(256, 256)), size=(256, 256))
    path = write_detection_checkpoint(net, {"bird": 1, "person": 2}, (256, 256),
                                      {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
                                      tmp_path / "ssdlite_mobilenet_v3_small_0_25.pt")
    # random weights score every box about 0.25: a threshold under that lets them through
    settings = dataclasses.replace(web_settings, service=dataclasses.replace(
        web_settings.service, detector=str(path), detector_threshold=0.2))
    finder = load_finder(settings)
    assert finder is not None and finder.identity.network == "ssdlite"  # type: ignore[attr-defined]
    first = make_service(settings)
    service = IdentificationService(settings, first.backbone, first.store, finder=finder)
    body = upload(create_app(settings, service).test_client(), small_bird_in_a_big_frame()).get_json()
    photo = body["photos"][0]
    assert photo["detections"] and all(d["label"] == "bird" for d in photo["detections"])
    assert photo["crop_source"] == "detector" and photo["crop"] is not None
    none_bird = dataclasses.replace(settings.service, detector_classes="heron")
    with pytest.raises(IdentifyError) as refused:
        load_finder(dataclasses.replace(settings, service=none_bird))
    assert refused.value.code == "bad_detector"


def test_a_curator_recrops_and_the_sighting_is_identified_again(far_service, token):
    from identify.web import create_app

    client = create_app(far_service.settings, far_service).test_client()
    body = upload(client, small_bird_in_a_big_frame()).get_json()
    assert body["decision"] == "no_match"
    url = f"/api/v1/sightings/{body['sighting_id']}/review"
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post(url, headers=headers, json={"action": "recrop", "version": 1, "crop": [BIRD_CROP.text]})
    assert response.status_code == 200, response.get_json()
    again = response.get_json()
    assert again["status"] == "open" and again["version"] == 2 and again["answer_label"] == kept_as(SPECIES[2])
    assert again["decision"] != "no_match" and again["photos"][0]["crop_source"] == "curator"
    assert again["reviews"][-1]["action"] == "recrop"
    stale = client.post(url, headers=headers, json={"action": "recrop", "version": 1, "crop": [BIRD_CROP.text]})
    assert stale.status_code == 409


@pytest.mark.parametrize("sliver", SLIVERS[:2])
def test_a_sliver_of_a_recrop_is_refused_and_changes_nothing(far_service, token, sliver):
    """A curator's re-crop of 1e-308 (JSON and form) was a 500 OverflowError, as on upload."""
    from identify.web import create_app

    client = create_app(far_service.settings, far_service).test_client()
    body = upload(client, small_bird_in_a_big_frame()).get_json()
    url = f"/api/v1/sightings/{body['sighting_id']}/review"
    refused = client.post(url, headers={"Authorization": f"Bearer {token}"},
                          json={"action": "recrop", "version": 1, "crop": [sliver]})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "crop_too_small"
    page = log_in(client).get(body["url"]).get_data(as_text=True)
    form = client.post(f"{body['url']}/review", data={"csrf_token": page_token(page), "version": "1",
                                                      "action": "recrop", "crop": sliver, "back": body["url"]},
                       follow_redirects=True)
    assert form.status_code in (200, 400) and "pixels" in form.get_data(as_text=True)
    after = client.get(f"/api/v1/sightings/{body['sighting_id']}").get_json()
    assert after["version"] == 1 and after["photos"][0]["crop_source"] != "curator"


def test_a_reference_made_from_a_cropped_sighting_shows_its_crop(far_service, token):
    """Confirmed, a cropped sighting becomes a reference that stands for its crop: the neighbour cards, the
    compare view and the reference list show the bird, not the whole frame; the reference says which part of
    its photo the index uses (API) and draws it on the whole photo (its page)."""
    from identify.web import create_app

    client = create_app(far_service.settings, far_service).test_client()
    body = upload(client, small_bird_in_a_big_frame(), crop=BIRD_CROP.text).get_json()
    confirmed = client.post(f"/api/v1/sightings/{body['sighting_id']}/review", json={"action": "confirm", "version": 1},
                            headers={"Authorization": f"Bearer {token}"})
    assert confirmed.status_code == 200, confirmed.get_json()
    again = upload(client, small_bird_in_a_big_frame(), crop=BIRD_CROP.text).get_json()  # its nearest: itself
    cropped = [n["thumbnail_url"] for n in again["neighbours"] if "?crop=" in n["thumbnail_url"]]
    assert len(cropped) == 1 and cropped[0].endswith(f"?crop={BIRD_CROP.text}")
    assert Image.open(io.BytesIO(client.get(cropped[0]).data)).size == (128, 128)
    page = client.get(again["url"]).get_data(as_text=True)
    assert cropped[0] in page  # the cards of the page use it too, named by the naming rule (not the raw label)
    assert f'<span class="title">{again["answer"]}</span>' in page and "(Columba livia)" in again["answer"]
    made, = [n["reference_id"] for n in again["neighbours"] if "?crop=" in n["thumbnail_url"]]
    reference = client.get(f"/api/v1/references/{made}", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert reference["crop"] == pytest.approx(BIRD_CROP.to_dict(), abs=1e-4) and reference["thumbnail_url"] == cropped[0]
    page = log_in(client).get(f"/references/{made}").get_data(as_text=True)
    assert f'style="{_box_style(BIRD_CROP)}"' in page and "the crop of the sighting it came from" in page
    assert cropped[0] in client.get("/references").get_data(as_text=True)


def _box_style(box: Crop) -> str:
    return f"left: {box.x * 100:.1f}%; top: {box.y * 100:.1f}%; width: {box.w * 100:.1f}%; height: {box.h * 100:.1f}%"


def test_framing_by_hand():
    image = Image.new("RGB", (400, 200))
    square = Crop.square_around((380, 90, 400, 110), (400, 200), margin=0.5)  # at the right edge: moved inside
    assert square.x + square.w == pytest.approx(1.0) and square.w * 400 == pytest.approx(square.h * 200)
    (cut, framing), = frame_photos([image], [Crop(0.5, 0.0, 0.5, 1.0)])
    assert cut.size == (200, 200) and framing.source == "user"
    (whole, nothing), = frame_photos([image], [None], find=lambda images: [[] for _ in images])
    assert whole is image and nothing.crop is None
    assert Crop(0.25, 0.5, 0.5, 0.25).decode_size(224) == 896  # a quarter of the frame: decoded 4x larger


def _text(html: str) -> str:
    import re

    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).strip()


def test_the_heading_names_the_answer_as_the_api_does(client):
    import re

    body = upload(client, jpeg_bytes(species_photo(1, 50))).get_json()
    stored = client.get(f"/api/v1/sightings/{body['sighting_id']}").get_json()
    html = client.get(body["url"]).get_data(as_text=True)
    heading = _text(re.search(r'<h1 id="answer">(.*?)</h1>', html, re.S).group(1))
    if body["decision"] == "no_match":
        assert heading == "No match" and stored["answer"] is None
    else:  # a guess is headed as one: "Possibly" before the name, which is the API's `answer`
        hedge = "Possibly " if body["decision"] == "needs_review" else ""
        assert heading == hedge + stored["answer"] and stored["answer"] == body["answer"]
        heading = heading.removeprefix(hedge)
        assert heading == f"{stored['answer_taxon']['common_name']} ({stored['answer_taxon']['scientific_name']})"
        assert "<i class=\"sci\">" in re.search(r'<h1 id="answer">(.*?)</h1>', html, re.S).group(1)
    assert body["sighting_id"] not in heading  # the id is on a small line of its own
    assert f"Sighting <code>{body['sighting_id']}</code>" in html


def test_the_compare_view_shows_each_top_species_own_references(client):
    import re

    body = upload(client, jpeg_bytes(species_photo(0, 50))).get_json()
    html = client.get(body["url"]).get_data(as_text=True)
    section = html[html.index('id="compare"'):html.index("<summary>All")]
    rows = re.findall(r'<div class="compare-row">(.*?)</div>', section, re.S)
    top = [s["display_name"] for s in body["species"][:3]]
    assert [_text(re.search(r"<h3>(.*?)<span", row, re.S).group(1)) for row in rows] == top
    for row, name in zip(rows, top, strict=True):
        common = name.split(" (")[0]
        assert f'alt="A reference photo of {common}"' in row  # at least one of its own references
        assert "Your photo" in row


def test_the_naming_rule():
    from identify.answers import display_name
    from identify.taxonomy import Taxonomy

    taxonomy = Taxonomy()
    assert display_name("cock", taxonomy.resolve("Gallus gallus")) == "Red Junglefowl (Gallus gallus)"
    assert display_name("hummingbird", taxonomy.resolve("Trochilidae")) == "a hummingbird (family Trochilidae)"
    assert display_name("crane bird", taxonomy.resolve("Gruidae")) == "a crane (family Gruidae)"
    assert display_name("Accipitriformes", taxonomy.resolve("Accipitriformes")) == "order Accipitriformes"
    assert display_name("Island_form_A", None) == "Island form A"


def test_a_manifest_crop_is_what_the_builder_embeds(tmp_path, tiny_backbone):
    import torch

    from index_builder.dataset import ReferenceDataset
    from index_builder.sources import from_manifest

    (tmp_path / "frame.jpg").write_bytes(small_bird_in_a_big_frame())
    (tmp_path / "refs.csv").write_text(f'path,species,crop\nframe.jpg,Columba_livia,"{BIRD_CROP.text}"\n'
                                       "frame.jpg,Columba_livia,\n")
    cropped, whole = from_manifest(tmp_path / "refs.csv")
    assert cropped.crop is not None and whole.crop is None
    assert list(cropped.crop.to_dict().values()) == pytest.approx(list(BIRD_CROP.to_dict().values()), abs=1e-4)
    dataset = ReferenceDataset([cropped, whole], tiny_backbone.decode_transform, tiny_backbone.identity.decode_size)
    image = Image.open(tmp_path / "frame.jpg").convert("RGB")
    assert torch.equal(dataset[0][1], tiny_backbone.decode_transform(cropped.crop.cut(image)))
    assert not torch.equal(dataset[0][1], dataset[1][1])
    (tmp_path / "bad.csv").write_text('path,species,crop\nframe.jpg,Columba_livia,"0.9,0.9,0.5,0.5"\n')
    with pytest.raises(IdentifyError) as bad:
        from_manifest(tmp_path / "bad.csv")
    assert bad.value.code == "bad_crop"


def test_the_automatic_crop_pools_centre_crops_with_the_photo(make_service, web_settings):
    from identify.framing import CENTRE_CROPS
    from identify.web import create_app

    service = make_service(dataclasses.replace(web_settings, service=dataclasses.replace(web_settings.service,
                                                                                          auto_crop=True)))
    looked: list[int] = []
    search = service.identifier.search
    service.batcher._run = lambda images: looked.append(len(images)) or search(images)  # type: ignore[method-assign]
    client = create_app(service.settings, service).test_client()
    body = upload(client, small_bird_in_a_big_frame()).get_json()
    assert body["photos"][0]["crop_source"] == "automatic" and body["photos"][0]["crop"] is None
    assert sum(looked) == 1 + len(CENTRE_CROPS)  # the photo and each centre crop: one forward pass each
    drawn = upload(client, small_bird_in_a_big_frame(), crop=BIRD_CROP.text).get_json()["photos"][0]
    assert drawn["crop_source"] == "user"  # a square the user drew is looked at alone


def test_a_curator_recrops_on_the_page(far_service):
    from identify.web import create_app

    client = create_app(far_service.settings, far_service).test_client()
    far_service.curators.create("ana", "correct horse battery")
    body = upload(client, small_bird_in_a_big_frame()).get_json()
    page = log_in(client).get(body["url"]).get_data(as_text=True)
    assert "Re-crop and identify again" in page
    done = client.post(f"{body['url']}/review", data={"csrf_token": page_token(page), "version": "1", "action": "recrop",
                                                      "crop": BIRD_CROP.text, "back": body["url"]},
                       follow_redirects=True).get_data(as_text=True)
    assert "identified again on the new crop" in done and "Rock Dove" in done
    assert client.get(f"/api/v1/sightings/{body['sighting_id']}").get_json()["photos"][0]["crop_source"] == "curator"


def test_a_recrop_looks_at_a_kept_automatic_photo_as_its_upload_did(make_service, web_settings, token):
    """A photo the curator leaves alone keeps its framing, and is looked at the same way again: an automatic
    one with its centre crops (the bug: the re-crop looked at it whole while calling it automatic)."""
    from identify.framing import CENTRE_CROPS
    from identify.web import create_app

    service = make_service(dataclasses.replace(web_settings, service=dataclasses.replace(web_settings.service,
                                                                                          auto_crop=True)))
    client = create_app(service.settings, service).test_client()
    body = client.post("/api/v1/identify", data={"image": [(io.BytesIO(small_bird_in_a_big_frame()), "a.jpg"),
                                                           (io.BytesIO(small_bird_in_a_big_frame(1)), "b.jpg")]},
                       content_type="multipart/form-data").get_json()
    looked: list[int] = []
    search = service.identifier.search
    service.batcher._run = lambda images: looked.append(len(images)) or search(images)  # type: ignore[method-assign]
    response = client.post(f"/api/v1/sightings/{body['sighting_id']}/review",
                           headers={"Authorization": f"Bearer {token}"},
                           json={"action": "recrop", "version": 1, "crop": [BIRD_CROP.text, ""]})
    assert response.status_code == 200, response.get_json()
    photos = response.get_json()["photos"]
    assert [p["crop_source"] for p in photos] == ["curator", "automatic"]
    assert sum(looked) == 1 + 1 + len(CENTRE_CROPS)
