"""The one second-opinion rule (identify.reference_records.SecondOpinion), for corrections and relabels alike:
what would teach something new waits for a second curator where there are two enabled curators; with one it
is taken and marked single-curator (history, queue filter, API). Before: a relabel never asked (one curator
relabelled a reference to a species no other reference had, then corrected sightings to it with no second
opinion), and a lone curator could never finish a correction to a new species (403 second_curator_needed)."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from identify.cli import main
from tests.conftest import jpeg_bytes, log_in, page_token, species_photo
from tests.test_curation import nearest_species, post
from tests.test_web_api import bearer

NEW = "Upupa epops"  # no reference of the test index is a hoopoe


@pytest.fixture
def shipped(make_service, web_settings):  # type: ignore[no-untyped-def]
    """A service with the shipped rule (new_species,first_record) and its test client; no curator yet."""
    from identify.config import ServiceConfig
    from identify.web import create_app

    rule = dataclasses.replace(web_settings.service, second_opinion=ServiceConfig().second_opinion)
    service = make_service(dataclasses.replace(web_settings, service=rule))
    return service, create_app(service.settings, service).test_client()


def _a_reference(client, token: str) -> dict:  # type: ignore[no-untyped-def]
    return client.get("/api/v1/references?per_page=1", headers=bearer(token)).get_json()["items"][0]


def _relabel(client, token: str, reference: dict, species: str = NEW):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/references/{reference['id']}/relabel", headers=bearer(token),
                       json={"species": species, "reason": "the crest", "version": reference["version"]})


def test_a_relabel_to_a_new_species_waits_for_a_second_curator(shipped):
    service, client = shipped
    fay = service.curators.create("fay", "correct horse battery")
    gus = service.curators.create("gus", "correct horse battery")
    reference = _a_reference(client, fay)
    photo_label = reference["species"]
    proposed = _relabel(client, fay, reference)
    assert proposed.status_code == 202, proposed.get_json()
    body = proposed.get_json()
    assert body["species"] == photo_label and body["version"] == reference["version"]  # keeps its label
    proposed_label = body["awaiting_second_opinion"]["to_species"]  # the label the taxonomy gives a hoopoe
    assert body["awaiting_second_opinion"]["second_opinion"] == "new_species"
    assert client.get(f"/api/v1/references/{reference['id']}", headers=bearer(gus)).get_json()["status"] == "active"
    # still in the index under its old label, and no sighting can be corrected to the species through it
    sighting = post(client, jpeg_bytes(species_photo(2, 45))).get_json()["sighting_id"]
    waited = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(fay),
                         json={"action": "correct", "species": NEW, "version": 1}).get_json()
    assert waited["status"] == "awaiting_second_opinion" and waited["reference_id"] is None
    again = _relabel(client, fay, reference)
    assert again.status_code == 403 and again.get_json()["error"]["code"] == "second_curator_needed"
    agreed = _relabel(client, gus, reference)
    assert agreed.status_code == 200, agreed.get_json()
    after = client.get(f"/api/v1/references/{reference['id']}", headers=bearer(gus)).get_json()
    assert after["species"] == proposed_label and after["taxon"]["scientific_name"] == NEW
    assert after["awaiting_second_opinion"] is None
    assert [(c["action"], c["curator"]) for c in after["changes"]] == [("propose", "fay"), ("relabel", "gus")]
    assert after["changes"][-1]["single_curator"] is None


def test_a_relabel_to_a_species_with_references_applies_at_once(shipped):
    service, client = shipped
    fay = service.curators.create("fay", "correct horse battery")
    service.curators.create("gus", "correct horse battery")
    reference = _a_reference(client, fay)
    other = next(r["species"] for r in client.get("/api/v1/references?per_page=100", headers=bearer(fay))
                 .get_json()["items"] if r["species"] != reference["species"])
    applied = _relabel(client, fay, reference, other)
    assert applied.status_code == 200 and applied.get_json()["species"] == other


def test_a_lone_curator_completes_a_correction_and_a_relabel_marked_single_curator(shipped):
    service, client = shipped
    ana = service.curators.create("ana", "correct horse battery")
    photo = jpeg_bytes(species_photo(2, 46))
    sighting = post(client, photo).get_json()["sighting_id"]
    corrected = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(ana),
                            json={"action": "correct", "species": NEW, "version": 1})
    assert corrected.status_code == 200, corrected.get_json()
    body = corrected.get_json()
    assert body["status"] == "corrected" and body["reference_id"] and body["single_curator"] == "new_species"
    assert body["second_opinion"] is None and body["reviews"][-1]["single_curator"] == "new_species"
    assert nearest_species(client, photo) == (body["reference_id"], body["answer_label"])  # taught at once
    listed = client.get("/api/v1/sightings?single_curator=true", headers=bearer(ana)).get_json()
    assert [item["sighting_id"] for item in listed["items"]] == [sighting]
    assert client.get("/api/v1/sightings?single_curator=false", headers=bearer(ana)).get_json()["total"] > 1
    for bad in ("", "maybe"):  # the long contract run found the empty value accepted
        refused = client.get(f"/api/v1/sightings?single_curator={bad}", headers=bearer(ana))
        assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_field"
    reference = next(r for r in client.get("/api/v1/references?per_page=100", headers=bearer(ana)).get_json()["items"]
                     if r["species"] != body["answer_label"])
    relabelled = _relabel(client, ana, reference, "Coracias garrulus")
    assert relabelled.status_code == 200, relabelled.get_json()
    history = client.get(f"/api/v1/references/{reference['id']}", headers=bearer(ana)).get_json()["changes"]
    assert history[-1]["action"] == "relabel" and history[-1]["single_curator"] == "new_species"
    # the page says so in words
    page = log_in(client, "ana").get(f"/sightings/{sighting}").get_data(as_text=True)
    assert "taken by the only curator, to be checked by a later one" in page


def test_a_waiting_answer_is_taken_once_its_curator_is_the_only_one_left(shipped):
    service, client = shipped
    fay = service.curators.create("fay", "correct horse battery")
    service.curators.create("gus", "correct horse battery")
    sighting = post(client, jpeg_bytes(species_photo(2, 47))).get_json()["sighting_id"]
    waited = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(fay),
                         json={"action": "correct", "species": NEW, "version": 1}).get_json()
    assert waited["status"] == "awaiting_second_opinion"
    service.curators.set_disabled("gus", True)
    taken = client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(fay),
                        json={"action": "confirm", "version": waited["version"]})
    assert taken.status_code == 200, taken.get_json()
    assert taken.get_json()["status"] == "corrected" and taken.get_json()["reference_id"]
    assert taken.get_json()["single_curator"] == "awaited"


def test_the_page_says_a_lone_curators_correction_in_words(shipped):
    service, client = shipped
    service.curators.create("ana", "correct horse battery")
    sighting = post(client, jpeg_bytes(species_photo(2, 48))).get_json()["sighting_id"]
    page = log_in(client, "ana").get(f"/sightings/{sighting}").get_data(as_text=True)
    done = client.post(f"/sightings/{sighting}/review", data={"csrf_token": page_token(page), "version": "1",
                                                               "action": "correct", "species": NEW,
                                                               "add_as_reference": "on",
                                                               "back": f"/sightings/{sighting}"},
                       follow_redirects=True).get_data(as_text=True)
    assert "only curator" in done and "awaiting_second_opinion" not in done


def test_the_public_sees_what_was_reviewed_not_by_whom_or_their_note(shipped):
    service, client = shipped
    ana = service.curators.create("ana", "correct horse battery")
    sighting = post(client, jpeg_bytes(species_photo(1, 49))).get_json()["sighting_id"]
    client.post(f"/api/v1/sightings/{sighting}/review", headers=bearer(ana),
                json={"action": "reject", "version": 1, "note": "private: the observer's garden"})
    public = client.get(f"/api/v1/sightings/{sighting}").get_json()["reviews"]
    assert public[0]["action"] == "reject" and public[0]["curator"] is None and public[0]["note"] is None
    mine = client.get(f"/api/v1/sightings/{sighting}", headers=bearer(ana)).get_json()["reviews"]
    assert mine[0]["curator"] == "ana" and mine[0]["note"].startswith("private")


def test_enabling_a_curator_again_does_not_revive_their_old_token(shipped, monkeypatch):
    service, client = shipped
    token = service.curators.create("ana", "correct horse battery")
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    assert CliRunner().invoke(main, ["curators", "disable", "ana"]).exit_code == 0
    enabled = CliRunner().invoke(main, ["curators", "enable", "ana"])
    assert enabled.exit_code == 0 and "curators token ana" in enabled.output
    assert client.get("/api/v1/review/queue", headers=bearer(token)).status_code == 401
    fresh = service.curators.new_token("ana")
    assert client.get("/api/v1/review/queue", headers=bearer(fresh)).status_code == 200


def test_the_command_line_relabel_follows_the_same_rule(shipped, monkeypatch):
    service, client = shipped
    fay = service.curators.create("fay", "correct horse battery")
    service.curators.create("gus", "correct horse battery")
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    monkeypatch.setenv("IDENTIFY_SECOND_OPINION", "new_species,first_record")
    reference = _a_reference(client, fay)
    command = ["references", "relabel", reference["id"], "--species", NEW, "--reason", "the crest"]
    proposed = CliRunner().invoke(main, [*command, "--curator", "fay"])
    assert proposed.exit_code == 0 and "waits for a second curator" in proposed.output, proposed.output
    assert _a_reference(client, fay)["species"] == reference["species"]
    agreed = CliRunner().invoke(main, [*command, "--curator", "gus"])
    assert agreed.exit_code == 0, agreed.output
    after = client.get(f"/api/v1/references/{reference['id']}", headers=bearer(fay)).get_json()
    assert after["taxon"]["scientific_name"] == NEW


def test_the_reference_page_says_a_relabel_waits_in_words(shipped):
    service, client = shipped
    service.curators.create("fay", "correct horse battery")
    gus = service.curators.create("gus", "correct horse battery")
    reference = _a_reference(client, gus)
    page = log_in(client, "fay").get(f"/references/{reference['id']}").get_data(as_text=True)
    done = client.post(f"/references/{reference['id']}/relabel",
                       data={"csrf_token": page_token(page), "version": str(reference["version"]), "species": NEW,
                             "reason": "the crest"}, follow_redirects=True).get_data(as_text=True)
    assert "waits for a second curator" in done and "Common Hoopoe (Upupa epops)" in done
    assert "proposed to relabel this photo as" in done and "relabel proposed" in done
