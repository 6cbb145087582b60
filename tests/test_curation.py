"""Curation you can undo (issue 23): references as records (list, open, relabel, retire, restore, with their
history), reviews that can be reopened or corrected again with their references following, every worker and
`predict` following within the refresh interval, and public ids wherever a reference appears."""

from __future__ import annotations

import dataclasses
import io
import json
import time

import pytest
from click.testing import CliRunner

from identify.cli import main
from tests.conftest import SPECIES, jpeg_bytes, log_in, page_token, species_photo

WRONG, RIGHT = "Corvus cornix", "Passer domesticus"  # the species the reference folders Corvus_cornix, ... are kept as


def post(client, data: bytes):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/identify", data={"image": (io.BytesIO(data), "bird.jpg")})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def workers(make_service, web_settings):  # type: ignore[no-untyped-def]
    """Two 'worker processes' over one database: the first follows SQL on every search, the second every
    second (IDENTIFY_REFRESH_SECONDS=1)."""
    from identify.web import create_app

    first = make_service()
    slow = dataclasses.replace(web_settings, service=dataclasses.replace(web_settings.service, refresh_seconds=1.0))
    second = make_service(slow)
    return first, create_app(first.settings, first).test_client(), create_app(second.settings, second).test_client()


def slip(client, token: str, photo: bytes) -> tuple[dict, str]:  # type: ignore[no-untyped-def]
    """The peacock story's slip: an upload corrected to the wrong species (one with references: a species without
    any waits for a second curator), added as a reference."""
    sighting = post(client, photo).get_json()
    reviewed = client.post(f"/api/v1/sightings/{sighting['sighting_id']}/review", headers=bearer(token),
                           json={"action": "correct", "species": "Hooded Crow", "version": 1, "add_as_reference": True})
    assert reviewed.status_code == 200, reviewed.get_json()
    return reviewed.get_json(), reviewed.get_json()["reference_id"]


def nearest_species(client, photo: bytes) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    answer = post(client, photo).get_json()
    return answer["neighbours"][0]["reference_id"], answer["neighbours"][0]["name"]  # the species it votes for


def test_the_peacock_story_relabelled(workers, token, web_settings, tmp_path, monkeypatch):
    """A wrong correction added as a reference answers the next upload; the curator relabels it; every worker
    (within its refresh interval) and `predict` answer the corrected species; the history shows the review
    and the relabel."""
    service, one, two = workers
    photo = jpeg_bytes(species_photo(0, 40))
    reviewed, reference = slip(one, token, photo)
    assert reference and not reference.isdigit()  # a public id, not the SQL key
    time.sleep(1.1)
    for client in (one, two):
        assert nearest_species(client, photo) == (reference, WRONG)  # answered from the slip
    opened = one.get(f"/api/v1/references/{reference}", headers=bearer(token)).get_json()
    assert opened["species"] == WRONG and opened["source"] == "review" and opened["added_by"] == "ana"
    assert opened["sighting_id"] == reviewed["sighting_id"] and opened["status"] == "active"
    relabelled = one.post(f"/api/v1/references/{reference}/relabel", headers=bearer(token),
                          json={"species": "House Sparrow", "reason": "a sparrow, not a hoopoe",
                                "version": opened["version"]})
    assert relabelled.status_code == 200, relabelled.get_json()
    assert relabelled.get_json()["species"] == RIGHT and relabelled.get_json()["version"] == opened["version"] + 1
    assert nearest_species(one, photo) == (reference, RIGHT)  # the worker that changed it: at once
    time.sleep(1.1)
    assert nearest_species(two, photo) == (reference, RIGHT)  # the other one: within its refresh interval
    history = one.get(f"/api/v1/references/{reference}", headers=bearer(token)).get_json()["changes"]
    assert [(c["action"], c["curator"], c["from_species"], c["to_species"], c["reason"]) for c in history] == [
        ("relabel", "ana", WRONG, RIGHT, "a sparrow, not a hoopoe")]
    sighting = one.get(f"/api/v1/sightings/{reviewed['sighting_id']}").get_json()
    assert [r["action"] for r in sighting["reviews"]] == ["correct"]
    (tmp_path / "upload.jpg").write_bytes(photo)
    for key, value in {"IDENTIFY_DATA_DIR": str(web_settings.data_dir), "IDENTIFY_DATABASE_URL": web_settings.database_url,
                       "IDENTIFY_MODEL": web_settings.service.model, "IDENTIFY_INDEX": "birds"}.items():
        monkeypatch.setenv(key, value)
    predicted = CliRunner().invoke(main, ["predict", "--json", str(tmp_path / "upload.jpg")])
    assert predicted.exit_code == 0, predicted.output
    neighbour = json.loads(predicted.stdout.strip().splitlines()[-1])["neighbours"][0]
    assert (neighbour["reference_id"], neighbour["name"]) == (reference, RIGHT)


def test_the_peacock_story_corrected_again(workers, token):
    """The same slip undone through the review: correcting the sighting again moves its reference with it
    (no `reference_conflict`), and the history keeps both reviews and the relabel they caused."""
    _, one, _ = workers
    photo = jpeg_bytes(species_photo(0, 41))
    reviewed, reference = slip(one, token, photo)
    again = one.post(f"/api/v1/sightings/{reviewed['sighting_id']}/review", headers=bearer(token),
                     json={"action": "correct", "species": RIGHT, "version": reviewed["version"]})
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["reference_id"] == reference and again.get_json()["answer_label"] == RIGHT
    assert nearest_species(one, photo) == (reference, RIGHT)
    sighting = one.get(f"/api/v1/sightings/{reviewed['sighting_id']}").get_json()
    assert [(r["action"], r["species"]) for r in sighting["reviews"]] == [("correct", WRONG), ("correct", RIGHT)]
    changes = one.get(f"/api/v1/references/{reference}", headers=bearer(token)).get_json()["changes"]
    assert [(c["action"], c["to_species"]) for c in changes] == [("relabel", RIGHT)]


def test_a_review_that_says_the_photo_should_not_teach_retires_its_reference(workers, token):
    """Corrected again with "add as reference" off, reopened, or rejected: the reference stops voting; a later
    review that teaches restores it."""
    _, one, _ = workers
    photo = jpeg_bytes(species_photo(0, 42))
    reviewed, reference = slip(one, token, photo)
    sighting = reviewed["sighting_id"]
    reopened = one.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(token),
                        json={"action": "reopen", "version": reviewed["version"], "note": "not sure after all"})
    assert reopened.status_code == 200 and reopened.get_json()["status"] == "open"
    assert reopened.get_json()["reference_id"] is None
    assert nearest_species(one, photo)[0] != reference  # retired: it votes no more
    record = one.get(f"/api/v1/references/{reference}", headers=bearer(token)).get_json()
    assert record["status"] == "retired" and record["changes"][-1]["reason"] == "review: reopen (not sure after all)"
    queue = one.get("/api/v1/review/queue", headers=bearer(token)).get_json()
    assert sighting in {item["sighting_id"] for item in queue["items"]}
    taught = one.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(token),
                      json={"action": "correct", "species": RIGHT, "version": reopened.get_json()["version"]})
    assert taught.get_json()["reference_id"] == reference
    assert nearest_species(one, photo) == (reference, RIGHT)  # restored and relabelled
    rejected = one.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(token),
                        json={"action": "reject", "version": taught.get_json()["version"]})
    assert rejected.status_code == 200
    assert [c["action"] for c in one.get(f"/api/v1/references/{reference}", headers=bearer(token))
            .get_json()["changes"]] == ["retire", "restore", "relabel", "retire"]


def test_retire_and_restore_through_the_api(workers, token):
    """A retired reference stops voting in every worker within the refresh interval and is kept (listed as
    retired); restoring it brings it back."""
    _, one, two = workers
    listed = one.get("/api/v1/references?per_page=100", headers=bearer(token)).get_json()
    assert listed["total"] == 6 * len(SPECIES) and all(item["source"] == "build" for item in listed["items"])
    photo = jpeg_bytes(species_photo(1, 2))  # a reference photo of the build itself
    reference, _ = nearest_species(one, photo)
    version = one.get(f"/api/v1/references/{reference}", headers=bearer(token)).get_json()["version"]
    retired = one.post(f"/api/v1/references/{reference}/retire", headers=bearer(token),
                       json={"reason": "a duplicate", "version": version})
    assert retired.status_code == 200 and retired.get_json()["status"] == "retired"
    assert nearest_species(one, photo)[0] != reference
    time.sleep(1.1)
    assert nearest_species(two, photo)[0] != reference
    status = two.get("/api/v1/status").get_json()
    assert status["index"]["references"] == 6 * len(SPECIES) - 1
    assert one.get("/api/v1/references?status=retired", headers=bearer(token)).get_json()["total"] == 1
    again = one.post(f"/api/v1/references/{reference}/retire", headers=bearer(token),
                     json={"reason": "twice", "version": version + 1})
    assert again.status_code == 400 and again.get_json()["error"]["code"] == "bad_reference_change"
    stale = one.post(f"/api/v1/references/{reference}/restore", headers=bearer(token), json={"version": version})
    assert stale.status_code == 409 and stale.get_json()["error"]["code"] == "stale_version"
    assert reference in stale.get_json()["error"]["message"]
    restored = one.post(f"/api/v1/references/{reference}/restore", headers=bearer(token), json={})
    assert restored.status_code == 200 and restored.get_json()["status"] == "active"
    assert nearest_species(one, photo)[0] == reference


def test_reference_endpoints_are_for_curators_and_refuse_bad_input(client, token):
    assert client.get("/api/v1/references").status_code == 401
    assert client.post("/api/v1/references/x/retire", json={"reason": "r", "version": 1}).status_code == 401
    missing = client.get("/api/v1/references/nosuchreference", headers=bearer(token))
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "unknown_reference"
    reference = client.get("/api/v1/references", headers=bearer(token)).get_json()["items"][0]["id"]
    for body, code in (({"version": 1}, "bad_reference_change"), ({"reason": "why"}, "bad_reference_change"),
                       ({"reason": "why", "version": 1, "species": "Passer nonexistens"}, "unknown_species")):
        refused = client.post(f"/api/v1/references/{reference}/relabel", headers=bearer(token), json=body)
        assert refused.status_code == 400 and refused.get_json()["error"]["code"] == code, (body, refused.get_json())
    bad = client.get("/api/v1/references?status=gone", headers=bearer(token))
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_field"


def test_references_filter_by_species_source_and_curator(workers, token):
    _, one, _ = workers
    _, reference = slip(one, token, jpeg_bytes(species_photo(2, 43)))
    listed = one.get("/api/v1/references?source=review", headers=bearer(token)).get_json()
    assert [item["id"] for item in listed["items"]] == [reference]
    assert one.get("/api/v1/references?curator=ana", headers=bearer(token)).get_json()["total"] == 1
    assert one.get("/api/v1/references?species=Corvus%20cornix&source=review", headers=bearer(token)).get_json()["total"] == 1
    sparrows = one.get("/api/v1/references?species=House%20Sparrow&per_page=2", headers=bearer(token)).get_json()
    assert sparrows["total"] == 6 and len(sparrows["items"]) == 2 and "page=2" in sparrows["next"]


def test_a_rebuilt_index_leaves_retired_references_out_and_a_restore_brings_them_back(
        make_service, web_settings, tiny_backbone, refs, token):
    from identify.web import create_app
    from tests.conftest import build_reference_index

    service = make_service()
    client = create_app(service.settings, service).test_client()
    token = service.curators.create("cy", "correct horse battery")
    photo = jpeg_bytes(species_photo(1, 2))
    reference, _ = nearest_species(client, photo)
    record = client.get(f"/api/v1/references/{reference}", headers=bearer(token)).get_json()
    client.post(f"/api/v1/references/{reference}/retire", headers=bearer(token),
                json={"reason": "blurred", "version": record["version"]})
    build_reference_index(web_settings, tiny_backbone, refs, "birds")  # a later build publishes a new version
    from identify.vectors.catalog import read_manifest

    manifest = read_manifest(web_settings.indexes_dir, "birds")
    assert manifest is not None and manifest.count == 6 * len(SPECIES) - 1 and len(manifest.excluded_ids) == 1
    fresh = make_service()  # a worker started on the new version
    fresh_client = create_app(fresh.settings, fresh).test_client()
    assert nearest_species(fresh_client, photo)[0] != reference
    fresh_client.post(f"/api/v1/references/{reference}/restore", headers=bearer(token), json={"reason": "sharp enough"})
    assert nearest_species(fresh_client, photo)[0] == reference  # not in the published file: back through the delta


def test_the_command_line_lists_opens_and_changes_references(make_service, web_settings, monkeypatch):
    service = make_service()
    service.curators.create("di", "correct horse battery")
    for key, value in {"IDENTIFY_DATA_DIR": str(web_settings.data_dir), "IDENTIFY_INDEX": "birds",
                       "IDENTIFY_DATABASE_URL": web_settings.database_url}.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    listed = runner.invoke(main, ["references", "list", "--species", "House Sparrow", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 6 and {row["species"] for row in rows} == {RIGHT} and rows[0]["source"] == "build"
    reference = rows[0]["id"]
    relabelled = runner.invoke(main, ["references", "relabel", reference, "--species", "Hooded Crow",
                                      "--reason", "a crow", "--curator", "di"])
    assert relabelled.exit_code == 0 and "Hooded Crow (Corvus cornix)" in relabelled.stdout, relabelled.output
    retired = runner.invoke(main, ["references", "retire", reference, "--reason", "blurred", "--version", "1"])
    assert retired.exit_code == 1 and "error: stale_version:" in retired.stderr  # it is at version 2 now
    assert runner.invoke(main, ["references", "retire", reference, "--reason", "blurred"]).exit_code == 0
    shown = json.loads(runner.invoke(main, ["references", "show", reference, "--json"]).stdout)
    assert shown["status"] == "retired" and shown["version"] == 3
    assert [(c["action"], c["curator"]) for c in shown["changes"]] == [("relabel", "di"), ("retire", None)]
    thin = runner.invoke(main, ["references", "list", "--flag", "thin", "--status", "all"])
    assert thin.exit_code == 0 and thin.stdout == "", thin.output  # six references a species: none is thin
    unknown = runner.invoke(main, ["references", "show", "nosuchreference"])
    assert unknown.exit_code == 1 and "error: unknown_reference:" in unknown.stderr
    assert service.reference_records.get(reference).species == "Corvus cornix"


def test_the_reference_pages_list_open_and_change_a_reference(service):
    """A curator's pages: the list with its filters, one reference with its nearest ones, and a retire then a
    restore through their forms (CSRF token), each in its history; the public is sent to log in."""
    import re

    from identify.web import create_app

    client = create_app(service.settings, service).test_client()
    assert client.get("/references").status_code == 302
    service.curators.create("eve", "correct horse battery")
    log_in(client, "eve")
    listing = client.get("/references?species=House+Sparrow").get_data(as_text=True)
    ids = [i for i in re.findall(r'href="/references/([A-Za-z0-9_-]+)"', listing) if i != "check"]
    assert len(ids) == 6 and "House Sparrow (<i class=\"sci\">Passer domesticus</i>)" in listing
    page = client.get(f"/references/{ids[0]}").get_data(as_text=True)
    assert "Its nearest references" in page and "an index build" in page
    assert len(re.findall(r'href="/references/[A-Za-z0-9_-]+"', page)) >= 5  # its neighbours link to theirs
    form = re.search(r'action="/references/[^"]+/retire".*?name="csrf_token" value="([^"]+)"', page, re.S).group(1)  # type: ignore[union-attr]
    unconfirmed = client.post(f"/references/{ids[0]}/retire", data={"csrf_token": form, "version": "1",
                                                                     "reason": "blurred"}, follow_redirects=True)
    assert "tick the box to confirm" in unconfirmed.get_data(as_text=True)  # nothing retired without the box
    retired = client.post(f"/references/{ids[0]}/retire", data={"csrf_token": form, "version": "1", "reason": "blurred",
                                                                 "confirm": "yes"},
                          follow_redirects=True).get_data(as_text=True)
    assert "retired" in retired and "blurred" in retired and "Restore" in retired
    stale = client.post(f"/references/{ids[0]}/restore", data={"csrf_token": form, "version": "1"},
                        follow_redirects=True).get_data(as_text=True)
    assert "changed since you loaded it" in stale  # the form a person left open: told, nothing changed
    restored = client.post(f"/references/{ids[0]}/restore", data={"csrf_token": form, "version": "2"},
                           follow_redirects=True).get_data(as_text=True)
    assert "restored" in restored and "Relabel" in restored
    assert client.get("/references?status=gone").status_code == 200  # a bad filter is shown, not a crash


def test_a_stale_review_names_the_sighting_by_its_public_id(client, token):
    """The 409 of a review made against an old version names the sighting as the outside world knows it."""
    sighting = post(client, jpeg_bytes(species_photo(1, 44))).get_json()["sighting_id"]
    first = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(token),
                        json={"action": "reject", "version": 1})
    assert first.status_code == 200
    stale = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(token),
                        json={"action": "reject", "version": 1}).get_json()["error"]
    assert stale["code"] == "stale_version" and f"sighting {sighting} is at version 2" in stale["message"]


@pytest.fixture
def two_curators(make_service, web_settings):  # type: ignore[no-untyped-def]
    """A service with the shipped second-opinion rule (new_species,first_record) and two curators' tokens."""
    from identify.config import ServiceConfig
    from identify.web import create_app

    shipped = dataclasses.replace(web_settings.service, second_opinion=ServiceConfig().second_opinion)
    service = make_service(dataclasses.replace(web_settings, service=shipped))
    client = create_app(service.settings, service).test_client()
    return service, client, service.curators.create("fay", "correct horse battery"), \
        service.curators.create("gus", "correct horse battery")


def test_a_new_species_waits_for_a_second_curator(two_curators):
    """The issue's line: one curator's correction to a species with no reference leaves the sighting
    awaiting_second_opinion and the photo out of the index; the same curator confirming is refused (403); a
    second curator's confirm makes it a reference."""
    service, client, fay, gus = two_curators
    photo = jpeg_bytes(species_photo(2, 45))
    sighting = post(client, photo).get_json()["sighting_id"]
    first = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(fay),
                        json={"action": "correct", "species": "Upupa epops", "version": 1})
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert body["status"] == "awaiting_second_opinion" and body["second_opinion"] == "new_species"
    assert body["reference_id"] is None
    assert client.get("/api/v1/references?source=review", headers=bearer(fay)).get_json()["total"] == 0
    assert nearest_species(client, photo)[1] != body["answer_label"]  # the photo is not searched as a reference
    queue = client.get("/api/v1/review/queue", headers=bearer(gus)).get_json()["items"]
    assert queue[0]["sighting_id"] == sighting  # waiting answers come before the uncertain ones
    same = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(fay),
                       json={"action": "confirm", "version": body["version"]})
    assert same.status_code == 403 and same.get_json()["error"]["code"] == "second_curator_needed"
    agreed = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(gus),
                         json={"action": "confirm", "version": body["version"]})
    assert agreed.status_code == 200, agreed.get_json()
    assert agreed.get_json()["status"] == "corrected" and agreed.get_json()["reference_id"]
    assert nearest_species(client, photo) == (agreed.get_json()["reference_id"], body["answer_label"])
    reviews = client.get(f"/api/v1/sightings/{sighting}", headers=bearer(gus)).get_json()["reviews"]
    assert [(r["curator"], r["action"]) for r in reviews] == [("fay", "correct"), ("gus", "confirm")]


def test_a_species_with_references_teaches_at_once_and_first_records_wait(two_curators, tmp_path):
    """A correction to a referenced species needs no second curator; with occurrence records known, a species
    never recorded at the sighting's place in its season waits (first_record)."""
    service, client, fay, _ = two_curators
    sighting = post(client, jpeg_bytes(species_photo(2, 46))).get_json()["sighting_id"]
    plain = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(fay),
                        json={"action": "correct", "species": "Hooded Crow", "version": 1}).get_json()
    assert plain["status"] == "corrected" and plain["reference_id"] and plain["second_opinion"] is None
    service.identifier.prior = _prior_with({"Corvus cornix": (52.5, 13.4)})  # crows recorded in Berlin only
    placed = client.post("/api/v1/identify", data={"image": (io.BytesIO(jpeg_bytes(species_photo(2, 47))), "b.jpg"),
                                                   "lat": "31.78", "lon": "35.22",
                                                   "observed_at": "2026-04-10T08:00:00+03:00"}).get_json()
    waited = client.post(f"/api/v1/sightings/{placed['sighting_id']}/review", headers=bearer(fay),
                         json={"action": "correct", "species": "Hooded Crow", "version": 1}).get_json()
    assert waited["status"] == "awaiting_second_opinion" and waited["second_opinion"] == "first_record"


def _prior_with(places: dict[str, tuple[float, float]]):  # type: ignore[no-untyped-def]
    from datetime import date

    from identify.measurement import prior_of

    return prior_of([(name, lat, lon, date(2025, 4, day)) for name, (lat, lon) in places.items()
                     for day in range(1, 28)])


def test_suggestions_tolerate_typos_and_put_the_sightings_likeliest_first(client, token, service):
    """"robin" lists European and American Robin where the deployment or the place knows them; "sparow" finds
    sparrows; for a sighting under review the species the model scored come first."""
    names = service.references.taxonomy
    assert "House Sparrow" in [s.name for s in names.suggest("sparow", limit=20)]
    robins = [s.name for s in names.suggest("robin", limit=5, context={"Erithacus rubecula": 0.5})]
    assert robins[0] == "European Robin" and all("Robin" in name for name in robins)
    assert [s.name for s in names.suggest("peafo")] == ["Congo Peafowl", "Green Peafowl", "Indian Peafowl"]
    assert names.suggest("peafo", context={"Pavo cristatus": 1.2})[0].name == "Indian Peafowl"
    sighting = post(client, jpeg_bytes(species_photo(2, 48))).get_json()
    top = sighting["species"][0]["taxon"]["scientific_name"]  # what the model scored highest for it
    genus = top.split()[0]
    asked = client.get(f"/api/v1/taxa?q={genus}&sighting={sighting['sighting_id']}", headers=bearer(token)).get_json()
    assert asked["taxa"][0]["taxon"]["scientific_name"] == top
    public = client.get(f"/api/v1/taxa?q={genus}&sighting={sighting['sighting_id']}").get_json()  # no curator
    assert public == client.get(f"/api/v1/taxa?q={genus}").get_json()  # a sighting's order is for curators


def _logged_in(service, name: str = "hal"):  # type: ignore[no-untyped-def]
    from identify.web import create_app

    service.curators.create(name, "correct horse battery")
    return log_in(create_app(service.settings, service).test_client(), name)


def test_the_queue_shows_when_where_who_and_the_proposed_species_references(service):
    client = _logged_in(service)
    client.application.config["WTF_CSRF_ENABLED"] = False
    post_form = {"image": (io.BytesIO(jpeg_bytes(species_photo(1, 49))), "b.jpg"), "lat": "52.51234", "lon": "13.40567",
                 "observed_at": "2026-05-01T07:30:00+02:00", "observer": "Jo Birder", "note": "at the feeder"}
    assert client.post("/api/v1/identify", data=post_form).status_code == 201
    queue = client.get("/review").get_data(as_text=True)
    assert "Seen 2026-05-01 07:30" in queue and "52.51234, 13.40567" in queue  # exact: a curator's page
    assert "by Jo Birder" in queue and "at the feeder" in queue
    assert 'href="/media/originals/' in queue and "Full size" in queue
    assert "Nearest reference photos of" in queue and queue.count('class="cards mini"') == 1


def test_a_no_match_is_not_prefilled_and_cannot_be_confirmed_with_one_key(make_service, web_settings):
    nothing_close = dataclasses.replace(web_settings.fusion, no_match_similarity=1.0, no_match_classifier=1.0)
    service = make_service(dataclasses.replace(web_settings, fusion=nothing_close))
    client = _logged_in(service)
    sighting = post(client, jpeg_bytes(species_photo(0, 50))).get_json()
    assert sighting["decision"] == "no_match"
    queue = client.get("/review").get_data(as_text=True)
    form = queue[queue.index(f'data-sighting="{sighting["sighting_id"]}"'):]
    assert 'name="species" list="species-names" value=""' in form
    assert 'value="confirm" disabled' in form


def test_look_alike_sightings_are_reviewed_as_a_group_and_a_stale_member_fails_alone(client, token):
    """Three uploads of one bird (a burst) and one of another: the queue groups the three; confirming the group
    reviews each on its own, and the one a curator reviewed meanwhile answers 409 alone."""
    burst = [post(client, jpeg_bytes(species_photo(0, 51), quality=q)).get_json() for q in (95, 90, 85)]
    other = post(client, jpeg_bytes(species_photo(2, 52))).get_json()
    groups = client.get("/api/v1/review/groups", headers=bearer(token)).get_json()["groups"]
    assert len(groups) == 1 and {i["sighting_id"] for i in groups[0]["items"]} == {s["sighting_id"] for s in burst}
    assert other["sighting_id"] not in {i["sighting_id"] for g in groups for i in g["items"]}
    items = [{"sighting_id": i["sighting_id"], "version": i["version"]} for i in groups[0]["items"]]
    meanwhile = client.post(f"/api/v1/sightings/{items[0]['sighting_id']}/review", headers=bearer(token),
                            json={"action": "reject", "version": items[0]["version"]})
    assert meanwhile.status_code == 200
    bulk = client.post("/api/v1/review/bulk", headers=bearer(token),
                       json={"action": "correct", "species": "Passer domesticus", "items": items,
                             "add_as_reference": False})
    assert bulk.status_code == 200, bulk.get_json()
    results = {r["sighting_id"]: r for r in bulk.get_json()["results"]}
    assert results[items[0]["sighting_id"]]["status"] == 409
    assert results[items[0]["sighting_id"]]["error"]["code"] == "stale_version"
    for item in items[1:]:
        assert results[item["sighting_id"]]["status"] == 200
        assert results[item["sighting_id"]]["sighting"]["status"] == "corrected"
    assert client.get(f"/api/v1/sightings/{items[0]['sighting_id']}").get_json()["status"] == "rejected"
    refused = client.post("/api/v1/review/bulk", headers=bearer(token), json={"action": "confirm", "items": []})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_review"


def test_the_group_page_reviews_a_group_through_its_form(service):
    client = _logged_in(service, "ida")
    for q in (95, 90):
        post(client, jpeg_bytes(species_photo(1, 53), quality=q))
    page = client.get("/review/groups").get_data(as_text=True)
    assert "2 sightings:" in page and page.count('name="items"') == 2
    import re

    items = re.findall(r'name="items" value="([^"]+)"', page)
    done = client.post("/review/bulk", data={"csrf_token": page_token(page), "items": items, "action": "reject"},
                       follow_redirects=True).get_data(as_text=True)
    assert "2 of 2 sightings reviewed" in done and "No look-alike sightings" in done


def test_public_ids_never_look_like_options():
    """A reference id is typed after `identify references ...`: one starting with "-" was read as an option."""
    from identify.schema import public_token

    assert not any(public_token().startswith("-") for _ in range(5000))
