"""Confident stays true in use (issue 22): evidence a missing species would not fake (identify.openset), risk per
group (identify.risk: Mondrian thresholds), and what `evaluate` reports of both."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from identify.calibration import Calibration, choose_threshold, fewest_testable
from identify.cli import main
from identify.config import FusionConfig, load_settings, write_fusion_settings
from identify.fusion import CONFIDENT, NEEDS_REVIEW, Neighbour, RankedSpecies
from identify.openset import support_of
from identify.scoring import SpeciesNames, answer, answer_groups
from tests.conftest import jpeg_bytes, species_photo

LOOSE = FusionConfig(k=5, temperature=1.0, weight_knn=0.5, confident_score=0.3, min_margin=0.0)


def votes(*pairs: tuple[str, float]) -> list[Neighbour]:
    return [Neighbour(i, species, similarity) for i, (species, similarity) in enumerate(pairs)]


def ranked(*rows: tuple[str, float, float, bool]) -> list[RankedSpecies]:
    return [RankedSpecies(name, score, classifier, 0.0, in_classes=known) for name, score, classifier, known in rows]


# ---- thin evidence and the open set, by hand ---------------------------------------------------------------------
def test_one_reference_never_decides():
    ranking = ranked(("a", 0.9, 0.1, True), ("b", 0.1, 0.1, True))
    one = support_of(ranking, votes(("a", 0.8), ("b", 0.5)), {"a": 1, "b": 5}, LOOSE)
    assert one.references == 1 and one.reasons(LOOSE) == ("thin_support",)
    two = support_of(ranking, votes(("a", 0.8), ("a", 0.7), ("b", 0.5)), {"a": 2, "b": 5}, LOOSE)
    assert two.references == 2 and two.reasons(LOOSE) == ()


def test_a_copy_of_a_reference_is_named_and_not_counted():
    ranking = ranked(("a", 0.9, 0.0, True), ("b", 0.1, 0.6, True))
    support = support_of(ranking, votes(("a", 0.995), ("a", 0.8), ("b", 0.5)), {"a": 2, "b": 5}, LOOSE)
    assert support.same_photo_as == 0 and support.references == 1  # the copy is the photo, not more evidence
    assert "thin_support" in support.reasons(LOOSE)


def test_the_classifiers_favourite_without_references_keeps_an_answer_from_confident():
    # The classifier says `missing` (0.9); its references are gone, the look-alike's neighbours all vote `alike`.
    ranking = ranked(("alike", 0.95, 0.05, True), ("missing", 0.05, 0.9, True))
    neighbours = votes(*[("alike", 0.9)] * 5)
    support = support_of(ranking, neighbours, {"alike": 20}, LOOSE)
    assert support.unreferenced_favourite == "missing" and support.reasons(LOOSE) == ("named_species_unreferenced",)
    assert support_of(ranking, neighbours, None, LOOSE).unreferenced_favourite is None  # counts unknown: no rule
    # A favourite with references the neighbours could have found is a contradiction, not the open set.
    referenced = support_of(ranking, neighbours, {"alike": 20, "missing": 20}, LOOSE)
    assert referenced.reasons(LOOSE) == ("classifier_names_another",)
    relaxed = dataclasses.replace(LOOSE, contradicting_vote=1.01)
    assert support_of(ranking, neighbours, {"alike": 20, "missing": 20}, relaxed).reasons(relaxed) == ()


def test_the_decision_function_applies_them():
    names = SpeciesNames(["alike", "missing"], {})
    probabilities = np.array([0.1, 0.9])
    neighbours = votes(*[("alike", 0.9)] * 5)
    without = answer(probabilities, neighbours, names, dataclasses.replace(LOOSE, weight_knn=0.9), Calibration(),
                     reference_counts={"alike": 20})
    assert without.top.name == "alike" and without.decision.decision == NEEDS_REVIEW
    assert "named_species_unreferenced" in without.decision.reasons
    both = answer(probabilities, neighbours, names, dataclasses.replace(LOOSE, weight_knn=0.9, contradicting_vote=1.01),
                  Calibration(), reference_counts={"alike": 20, "missing": 20})
    assert both.decision.decision == CONFIDENT


# ---- risk per group, by hand --------------------------------------------------------------------------------------
def test_answer_groups_say_what_the_classifier_can_vouch_for():
    classes = ranked(("a", 0.9, 0.8, True), ("new", 0.1, 0.0, False))
    assert answer_groups(classes, votes(("a", 0.9), ("a", 0.8)), 5) == ("species:a", "known", "all")
    assert answer_groups(classes, votes(("a", 0.9), ("new", 0.8)), 5) == ("species:a", "contested", "all")
    assert answer_groups(classes, votes(("a", 0.9), ("a", 0.9), ("new", 0.8)), 2) == ("species:a", "known", "all")
    assert answer_groups(list(reversed(classes)), votes(("new", 0.9)), 5) == ("species:new", "new", "all")
    # the prior makes other scores: the same groups, apart
    assert answer_groups(classes, votes(("a", 0.9)), 5, placed=True) == ("species:a+place", "known+place", "all+place")


def test_a_groups_own_threshold_comes_before_the_pooled_one():
    names = SpeciesNames(["a", "b"], {})
    neighbours = votes(*[("a", 0.9)] * 5)
    probabilities = np.array([0.8, 0.2])
    pooled = answer(probabilities, neighbours, names, LOOSE, Calibration())
    assert pooled.decision.decision == CONFIDENT and pooled.threshold == LOOSE.confident_score
    strict = Calibration(thresholds=(("known", 0.99),))
    held = answer(probabilities, neighbours, names, LOOSE, strict)
    assert held.threshold == 0.99 and held.decision.decision == NEEDS_REVIEW and "low_score" in held.decision.reasons
    species_first = Calibration(thresholds=(("known", 0.99), ("species:a", 0.4)))
    assert answer(probabilities, neighbours, names, LOOSE, species_first).threshold == 0.4


def test_group_thresholds_are_stored_and_read_back(tmp_path):
    calibration = Calibration("temperature", 1.5, thresholds=(("new", 1.01), ("species:Passer domesticus", 0.9)))
    write_fusion_settings(tmp_path, {"confident_score": 0.8}, calibration)
    loaded = load_settings({"IDENTIFY_DATA_DIR": str(tmp_path)})
    assert loaded.calibration.thresholds == calibration.thresholds and loaded.fusion.confident_score == 0.8


def test_within_a_group_thresholds_are_tested_from_the_fewest_a_bound_can_certify():
    assert fewest_testable(0.05, 0.9) == 45
    scores = np.linspace(1.0, 0.5, 60)
    correct = np.ones(60, dtype=bool)
    assert choose_threshold(scores, correct, correct, 0.05).threshold > 1.0  # 60 < 100: pooled floor, untested
    assert choose_threshold(scores, correct, correct, 0.05, min_answered=45).threshold <= 0.5 + 1e-9


# ---- what evaluate reports ------------------------------------------------------------------------------------------
@pytest.mark.slow  # the whole evaluate on the simulation: the inner loop's hand-made cases cover the parts
def test_evaluate_reports_risk_per_group_and_the_open_set(tmp_path, monkeypatch):
    """The issue's acceptance line: per-group `selective` figures and an `open_set` block, and the thresholds
    --write-config stores are the ones the report used."""
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["evaluate", "--simulate", "--no-shift", "--json", "--write-config", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    groups = report["selective"]["groups"]  # as served: the simulation's queries have a place, the prior applies
    assert {"known+place", "new+place", "contested+place"} <= set(groups["by_answer"])
    assert set(groups["by_truth"]) == {"known", "new"} and len(groups["species"]) == 20
    alone = report["prior"]["groups_without"]  # the same queries without a place: the other thresholds
    assert {"known", "new", "contested"} <= set(alone["by_answer"])
    for name, group in [*groups["by_answer"].items(), *alone["by_answer"].items()]:
        if group["threshold_from"] == "own":  # each own threshold kept its bound on its calibration queries
            assert group["calibration"]["upper_bound"] <= 0.05 or group["threshold"] > 1.0, name
    assert report["prior"]["thresholds_chosen_with_prior"]
    open_set = report["open_set"]
    assert open_set["measured"] and open_set["queries"] > 0 and 0.0 <= open_set["confident_share"] <= 1.0
    stored = dict(load_settings({"IDENTIFY_DATA_DIR": str(tmp_path)}).calibration.thresholds)
    own = {name: g["threshold"] for name, g in [*groups["by_answer"].items(), *alone["by_answer"].items()]
           if g["threshold_from"] == "own"}
    assert {group: t for group, t in stored.items() if not group.startswith("rank:")} == own
    ranks = report["photo_alone"]["ranks"]  # and each rank's, as the report states it (none: 1.01 stored)
    assert {group.removeprefix("rank:"): t if t < 1.01 else None for group, t in stored.items()
            if group.startswith("rank:")} == {rank: ranks[rank]["threshold"] for rank in ("genus", "family", "order")}


# ---- through the service -------------------------------------------------------------------------------------------
def post(client, data: bytes):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/identify", data={"image": (io.BytesIO(data), "bird.jpg")})


def test_a_curators_slip_does_not_become_a_confident_answer(make_service, web_settings, token):
    """One photo filed as a species it is not (the only reference of that species); a re-saved copy of it comes
    back: it names that reference as the same photo, and is not confident however high its score."""
    # The nearest neighbour decides (T small, lambda high): without the rules the copy would be confident.
    sharp = dataclasses.replace(LOOSE, temperature=0.001, weight_knn=0.9)
    alone = dataclasses.replace(web_settings.service, second_opinion="off")  # one curator's slip teaches at once
    service = make_service(dataclasses.replace(web_settings, fusion=sharp, service=alone))
    from identify.web import create_app

    client = create_app(service=service).test_client()
    curator = service.curators.create("bo", "correct horse battery", replace=True)
    photo = species_photo(7, 3)
    first = post(client, jpeg_bytes(photo)).get_json()
    reviewed = client.post(f"/api/v1/sightings/{first['sighting_id']}/review",
                           headers={"Authorization": f"Bearer {curator}"},
                           json={"action": "correct", "species": "Upupa epops", "version": 1, "add_as_reference": True})
    assert reviewed.status_code == 200, reviewed.get_json()
    slip = reviewed.get_json()["reference_id"]
    buffer = io.BytesIO()
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        buffer, "JPEG", quality=80)  # the same pixels, saved again
    again = post(client, buffer.getvalue()).get_json()
    assert again["neighbours"][0]["reference_id"] == slip
    assert again["same_photo_as"] == slip
    top = again["species"][0]
    assert top["taxon"]["scientific_name"] == "Upupa epops" and top["score"] > 0.5  # the slip, ranked first
    assert again["decision"] != "confident" and "thin_support" in again["reasons"]


def test_an_upload_unlike_any_reference_says_no_same_photo(client):
    body = post(client, jpeg_bytes(species_photo(1, 40))).get_json()
    assert body["same_photo_as"] is None and body["neighbours"][0]["similarity"] < 0.97


def test_with_one_voter_nothing_is_confident():
    config = dataclasses.replace(LOOSE, k=1)
    names = SpeciesNames(["a", "b"], {})
    decided = answer(np.array([0.99, 0.01]), votes(("a", 0.9)), names, config, Calibration(),
                     reference_counts={"a": 10, "b": 10})
    assert decided.decision.decision == NEEDS_REVIEW and decided.decision.reasons == ("thin_support",)


# ---- a calibration that knows when it is stale ------------------------------------------------------------------
def test_a_calibration_is_stale_when_the_gallery_moves_beyond_the_bound():
    from identify.calibration import FittedOn

    fitted = FittedOn.of_counts({f"s{i}": 5 for i in range(20)}, prior=False)
    assert (fitted.references, fitted.species, fitted.median_per_species) == (100, 20, 5.0)
    assert fitted.differences(FittedOn.of_counts({f"s{i}": 6 for i in range(20)}, False)) == []  # x1.2: current
    grown = fitted.differences(FittedOn.of_counts({f"s{i}": 20 for i in range(20)}, False))  # 5 -> 20
    assert grown == ["references 100 -> 400", "median references per species 5 -> 20"]
    more_species = fitted.differences(FittedOn.of_counts({f"s{i}": 5 for i in range(24)}, False))
    assert more_species == ["species with references 20 -> 24"]
    calibration = Calibration("temperature", 1.0, target_error=0.05, fitted_on=fitted)
    assert calibration.state(FittedOn.of_counts({f"s{i}": 20 for i in range(20)}, False)).stale
    assert calibration.state(FittedOn.of_counts({f"s{i}": 5 for i in range(20)}, True)).state == "current"
    assert Calibration().state(None).state == "uncalibrated" and not Calibration().risk_bounded


def test_a_stale_calibration_answers_nothing_confident_and_says_so(make_service, web_settings):
    """The service's references (3 species, 6 each) against what a stored calibration was fitted on."""
    from identify.calibration import FittedOn
    from identify.web import create_app

    # one voter enough here: what is measured is the calibration's state, not the support
    sharp = dataclasses.replace(LOOSE, temperature=0.001, weight_knn=0.9, contradicting_vote=1.01, min_support=1)
    photo = jpeg_bytes(species_photo(0, 9))  # a new drawing of a referenced species
    answers = {}
    for name, fitted in (("current", FittedOn(18, 3, 6.0, False)), ("stale", FittedOn(300, 3, 100.0, False))):
        calibration = Calibration(target_error=0.05, fitted_on=fitted)
        # the stored calibration as it is: no re-certification of the references (identify.certifications)
        by_hand = dataclasses.replace(web_settings.service, auto_certify=False)
        service = make_service(dataclasses.replace(web_settings, fusion=sharp, calibration=calibration,
                                                   service=by_hand))
        client = create_app(service=service).test_client()
        answers[name] = post(client, photo).get_json()
        status = client.get("/api/v1/status").get_json()
        assert status["calibration"]["state"] == name
    current, stale = answers["current"], answers["stale"]
    assert current["calibration"] == {"state": "current", "reasons": []} and current["risk_bounded"] is True
    assert current["decision"] == "confident", current["reasons"]
    assert stale["calibration"]["state"] == "stale" and "references 18 -> 300" not in stale["calibration"]["reasons"]
    assert stale["calibration"]["reasons"] == ["references 300 -> 18", "median references per species 100 -> 6"]
    assert stale["risk_bounded"] is False and stale["decision"] != "confident"
    assert "calibration_stale" in stale["reasons"]
    assert current["species"][0]["name"] == stale["species"][0]["name"]  # the same ranking: only trust moved


def test_an_uncalibrated_service_states_no_risk(client):
    body = post(client, jpeg_bytes(species_photo(0, 2))).get_json()
    assert body["risk_bounded"] is False and body["calibration"]["state"] == "uncalibrated"
    page = client.get(body["url"]).get_data(as_text=True)
    assert "have not yet been checked against this deployment" in page


def test_a_classifier_naming_the_answers_genus_agrees_with_it():
    from identify.taxonomy import Taxon

    toucan = Taxon("Ramphastos", "toucans", "genus", "Ramphastos", "Ramphastidae", "Piciformes", "ebird", "2024")
    keel_billed = Taxon("Ramphastos sulfuratus", "Keel-billed Toucan", "species", "Ramphastos", "Ramphastidae",
                        "Piciformes", "ebird", "2024")
    ranking = [RankedSpecies("Ramphastos sulfuratus", 0.9, 0.0, 1.0, in_classes=False, taxon=keel_billed),
               RankedSpecies("toucan", 0.1, 0.6, 0.0, taxon=toucan)]
    neighbours = votes(("Ramphastos sulfuratus", 0.9), ("Ramphastos sulfuratus", 0.8))
    assert support_of(ranking, neighbours, {"Ramphastos sulfuratus": 3}, LOOSE).reasons(LOOSE) == ()
    other = dataclasses.replace(ranking[1], taxon=dataclasses.replace(toucan, scientific_name="Pteroglossus",
                                                                       genus="Pteroglossus"))
    assert support_of([ranking[0], other], neighbours, {"Ramphastos sulfuratus": 3}, LOOSE).reasons(LOOSE) == \
        ("named_species_unreferenced",)


def test_an_answer_confident_only_at_a_higher_rank_says_so_everywhere(make_service, web_settings, tmp_path,
                                                                       monkeypatch):
    """Issue 36, deliverable 4, through the service: no species threshold can be met (1.01), the genus's is.
    The answer is `confident` with the rank beside it; the API, the page, the sightings list and Darwin Core
    name the genus; the sighting waits in the review queue for the species and is not drawn as a species audit."""
    from identify.web import create_app

    sharp = dataclasses.replace(LOOSE, temperature=0.001, weight_knn=0.9, contradicting_vote=1.01, min_support=1)
    calibration = Calibration(target_error=0.05, thresholds=(
        ("known", 1.01), ("rank:genus", 0.3), ("rank:family", 0.3), ("rank:order", 0.3)))
    every_one_audited = dataclasses.replace(web_settings.service, auto_certify=False, audit_share=1.0)
    service = make_service(dataclasses.replace(web_settings, fusion=sharp, calibration=calibration,
                                               service=every_one_audited))
    client = create_app(service=service).test_client()
    body = post(client, jpeg_bytes(species_photo(0, 9))).get_json()  # a new drawing of the House Sparrow
    assert body["species"][0]["name"] == "Passer domesticus"
    assert body["decision"] == "confident" and body["rank"] == "genus", body["reasons"]
    assert "low_score" in body["reasons"]  # what held the species back
    assert body["rollup"]["certified"] and body["rollup"]["scientific_name"] == "Passer"
    assert body["answer_label"] == "Passer" and "genus Passer" in body["answer"]

    summary = client.get(f"/api/v1/sightings/{body['sighting_id']}").get_json()
    assert summary["rank"] == "genus" and summary["answer_taxon"]["rank"] == "genus"
    assert summary["answer_taxon"]["family"] == "Passeridae" and not summary["audit"]
    page = client.get(body["url"]).get_data(as_text=True)
    assert "Sure of the genus, not of the species" in page and "genus <i class=\"sci\">Passer</i>" in page
    assert "Confident of the genus" in client.get("/sightings").get_data(as_text=True)
    curator = service.curators.create("bo", "correct horse battery", replace=True)
    queue = client.get("/api/v1/review/queue", headers={"Authorization": f"Bearer {curator}"}).get_json()
    assert body["sighting_id"] in [item["sighting_id"] for item in queue["items"]]

    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    out = tmp_path / "all.csv"
    assert CliRunner().invoke(main, ["export", "--format", "csv", "--status", "all", "--out", str(out)]).exit_code == 0
    import csv

    (row,) = list(csv.DictReader(out.open()))
    assert (row["scientificName"], row["taxonRank"], row["genus"], row["family"], row["order"]) == (
        "Passer", "genus", "Passer", "Passeridae", "Passeriformes")
