"""Re-certification from the labelled data a deployment holds (identify.certify), and the report's shift block
(identify.shift): the bound follows the references."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace

import numpy as np
import pytest

from identify.certify import certify, leave_group_out, reference_groups
from identify.config import FusionConfig
from identify.evaluation import evaluate
from identify.measurement import in_label_space
from identify.shift import GROWTH, gallery, mislabelled, shift_block
from identify.simulation import simulate


def test_a_reference_is_never_answered_by_its_own_birds_photos():
    data, _ = in_label_space(simulate(0))
    groups = reference_groups(data, 0.97)
    assert len(set(groups.tolist())) == 140  # 7 birds of each of 20 species, declared
    asked, hood = leave_group_out(data, groups, 20)
    for row in range(len(groups)):
        assert (groups[hood.reference_index[row]] != groups[row]).all()
        assert hood.similarities[row].max() < 1.0  # not itself
    assert asked.query_labels == data.reference_labels
    assert np.array_equal(asked.probabilities, data.reference_probabilities)


def test_without_individuals_near_copies_are_one_individual():
    data, _ = in_label_space(simulate(0))
    copies = np.concatenate([data.reference_embeddings, data.reference_embeddings + 1e-4])
    doubled = replace(data, reference_embeddings=copies, reference_labels=data.reference_labels * 2,
                      reference_groups=None)
    groups = reference_groups(doubled, 0.97)
    half = len(data.reference_labels)
    assert all(groups[i] == groups[i + half] for i in range(half))  # a copy is never its original's neighbour


def test_certification_needs_the_classifiers_outputs_and_enough_individuals():
    data = simulate(0)
    with pytest.raises(ValueError):
        certify(replace(data, reference_probabilities=None), FusionConfig(), evaluate(data, FusionConfig()).calibration)
    few = gallery(simulate(0), 2)  # one bird a species: 20 individuals in all, each species one
    fitted = evaluate(simulate(0), FusionConfig(), seed=0)
    tiny = replace(few, reference_embeddings=few.reference_embeddings[:6], reference_labels=few.reference_labels[:6],
                   reference_probabilities=few.reference_probabilities[:6], reference_groups=few.reference_groups[:6])
    held = certify(tiny, fitted.config, fitted.calibration)
    assert held.config.confident_score > 1.0 and not held.calibration.thresholds
    assert held.figures == {"nothing_certified": "too few individuals among the references"}


@pytest.mark.slow
def test_recertified_thresholds_hold_on_queries_they_never_saw():
    """Fitted on a gallery of 5 references a species, the gallery grows to 20: the thresholds re-certified from
    the 20's references and the reviewed sightings (the calibration split) keep the bound on the test split, on
    the photo alone; every coarse group has its own threshold or is held back."""
    block = shift_block(3, FusionConfig())
    for step in [*block["growth"], block["mislabels"]]:
        after = step["recertified"]
        assert after["error"] <= 0.05 or after["confident"] < 20, step
    assert [tuple(step["references_per_species"]) for step in block["growth"]] == list(GROWTH)
    assert {step["as_fitted"]["state"] for step in block["growth"]} <= {"current", "stale"}
    assert block["place_overlap"]["moved"]["confident"] > 0


def test_mislabels_relabel_whole_birds_as_their_look_alike():
    data = gallery(simulate(1, references_per_species=30), 20)
    wrong = mislabelled(data, 0.05, seed=1)
    changed = [(a, b, bird) for a, b, bird in zip(data.reference_labels, wrong.reference_labels,
                                                  data.reference_groups, strict=True) if a != b]
    birds = {bird for _, _, bird in changed}
    assert len(birds) == 7  # 5 % of 140 birds
    assert all(int(a[-2:]) ^ 1 == int(b[-2:]) for a, b, _ in changed)
    assert all(sum(g == bird for g in data.reference_groups) == sum(1 for *_, g in changed if g == bird)
               for bird in birds)  # every photo of a mislabelled bird


# ---- what re-certification reads: kept beside every embedding ----------------------------------------------
def test_a_build_keeps_the_classifiers_output_and_the_individual_of_each_reference(
        tmp_path, tiny_checkpoint, tiny_backbone, web_settings):
    from sqlalchemy import select

    from identify.schema import Embedding, ReferenceImage
    from identify.storage import make_engine, unpacked_probabilities
    from tests.conftest import SPECIES, build_reference_index, make_species_folder

    folder = make_species_folder(tmp_path / "refs", SPECIES, per=2)
    ringed = folder / SPECIES[0] / "ringed_17"  # a sub-folder: one bird
    ringed.mkdir()
    for photo in sorted((folder / SPECIES[0]).glob("*.jpg")):
        photo.rename(ringed / photo.name)
    build_reference_index(web_settings, tiny_backbone, folder, "kept")
    engine = make_engine(web_settings.database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(ReferenceImage.label, ReferenceImage.individual, ReferenceImage.path,
                                         Embedding.probabilities)
                                  .join(Embedding, Embedding.reference_id == ReferenceImage.id)).all()
    engine.dispose()
    assert len(rows) == 2 * len(SPECIES)
    for label, individual, path, stored in rows:
        probabilities = unpacked_probabilities(stored)
        assert probabilities is not None and probabilities.shape == (len(tiny_backbone.identity.classes),)
        assert abs(float(probabilities.sum()) - 1.0) < 0.01  # float16: three digits
        assert individual == (f"{SPECIES[0]}/ringed_17" if label == SPECIES[0] else None), path
    # the same forward pass: the kept output is what the model says of the photo now
    from PIL import Image

    label, _, path, stored = rows[0]
    output = tiny_backbone.forward(tiny_backbone.batch([Image.open(path).convert("RGB")]))
    assert np.allclose(unpacked_probabilities(stored), output.probabilities[0], atol=2e-3)


def test_a_promoted_sighting_keeps_its_photos_output_and_is_its_own_individual(make_service, token):
    from sqlalchemy import select

    from identify.schema import Embedding, ReferenceImage, Sighting, SightingPhoto
    from identify.storage import key_of_public_id, unpacked_probabilities
    from identify.web import create_app
    from tests.conftest import jpeg_bytes, species_photo
    from tests.test_curation import bearer, post

    service = make_service()
    client = create_app(service.settings, service).test_client()
    answer = post(client, jpeg_bytes(species_photo(1, 77))).get_json()
    reviewed = client.post(f"/api/v1/sightings/{answer['sighting_id']}/review", headers=bearer(token),
                           json={"action": "correct", "species": "Hooded Crow", "version": 1,
                                 "add_as_reference": True})
    assert reviewed.status_code == 200, reviewed.get_json()
    sighting = key_of_public_id(service.store.sessions, Sighting, answer["sighting_id"], "no_sighting", "sighting")
    with service.store.session() as session:
        photo = session.scalars(select(SightingPhoto.probabilities).where(SightingPhoto.sighting_id == sighting)).one()
        reference = session.execute(select(ReferenceImage.individual, Embedding.probabilities)
                                    .join(Embedding, Embedding.reference_id == ReferenceImage.id)
                                    .where(ReferenceImage.sighting_id == sighting)).one()
    assert photo is not None and reference.probabilities == photo
    assert reference.individual == f"sighting {sighting}"
    assert unpacked_probabilities(photo).shape == (len(service.backbone.identity.classes),)


# ---- the job: one at a time across workers, its result in SQL -----------------------------------------------
def simulated_deployment(database_url: str, seed: int = 0):  # type: ignore[no-untyped-def]
    """The simulation's references recorded as a deployment's: a model row, an index, every reference with its
    embedding, the classifier's output and its bird, through the reference set's one way in."""
    from identify.certifications import Certifications
    from identify.identity import ModelIdentity
    from identify.references import NewReference, References
    from identify.storage import Store, make_engine, upgrade_database

    data = simulate(seed)
    engine = make_engine(database_url)
    upgrade_database(engine)
    store = Store(engine)
    identity = ModelIdentity("simulated", "simulated", f"{seed:064d}", list(data.classes), {}, {}, (64, 64),
                             data.reference_embeddings.shape[1])
    model_id = store.register_model(identity)
    index_id = store.open_index("simulated", model_id)
    references = References(store)
    references.add_batch(index_id, model_id, [
        NewReference(f"{row:064x}", f"/nowhere/{row}.jpg", label, data.reference_embeddings[row].astype(np.float32),
                     probabilities=data.reference_probabilities[row], individual=data.reference_groups[row])
        for row, label in enumerate(data.reference_labels)])
    return data, engine, Certifications(store, references), model_id, index_id


def test_one_certification_runs_at_a_time_across_workers(database_url):
    from datetime import timedelta

    from sqlalchemy import update

    from identify.certifications import Certifications, ReferenceState
    from identify.references import References
    from identify.schema import Certification, utcnow
    from identify.storage import Store, make_engine

    _, engine, first, model_id, index_id = simulated_deployment(database_url)
    other_engine = make_engine(database_url)  # another worker or host: its own connections
    second = Certifications(Store(other_engine), References(Store(other_engine)))
    state = first.reference_state(index_id)
    assert state == ReferenceState(0, state.newest, 400) and str(ReferenceState.parse(str(state))) == str(state)
    running = first.start(model_id, "simulated", state)
    assert running is not None and second.start(model_id, "simulated", state) is None  # refused while it runs
    first.report(running, 0.5, "halfway")
    assert second.latest(model_id, "simulated", status="running").stage == "halfway"
    # its worker dies: two minutes without a heartbeat and the next one takes over
    with engine.begin() as connection:
        connection.execute(update(Certification).where(Certification.id == running)
                           .values(heartbeat_at=utcnow() - timedelta(minutes=3)))
    taken = second.start(model_id, "simulated", state)
    assert taken is not None and taken != running
    assert first.latest(model_id, "simulated", status="abandoned").id == running
    second.finish(taken, {"figures": {}})
    assert first.latest(model_id, "simulated").id == taken  # done
    engine.dispose()
    other_engine.dispose()


@pytest.mark.slow
def test_a_certification_read_back_from_sql_is_the_one_made_in_memory(database_url):
    """What the job reads (references, their kept classifier outputs and birds) certifies what the same data
    certifies in memory: the same groups held back or certified, thresholds within the float16 rounding."""
    from identify.certifications import recertify

    data, engine, certifications, model_id, index_id = simulated_deployment(database_url)
    fitted = evaluate(data, FusionConfig(), seed=0)
    stages: list[str] = []
    record = recertify(certifications, model_id, "simulated", index_id, list(data.classes), 64, fitted.config,
                       fitted.calibration, None, lambda fraction, stage: stages.append(stage))
    assert record is not None and record.status == "done" and record.progress == 1.0 and len(stages) == 2
    assert record.reference_state == certifications.reference_state(index_id)
    # the simulation's made-up taxa are no bird taxonomy's: the deployment knows none of them, so no rank
    in_memory = certify(replace(data, query_embeddings=np.zeros((0, 64)), probabilities=np.zeros((0, 16)),
                                query_labels=[], query_places=None, query_groups=None, view_embeddings=None,
                                view_probabilities=None, taxa={}), fitted.config, fitted.calibration)
    figures = record.result["figures"]
    assert figures["references"] == 400 and figures["individuals"] == 140 and figures["reviewed"] == 0
    assert {g: f["threshold"] for g, f in figures["groups"].items()} == pytest.approx(
        {g: f["threshold"] for g, f in in_memory.figures["groups"].items()}, abs=0.011)
    config, calibration = record.served(fitted.config, fitted.calibration)
    assert calibration.thresholds and config.vouch_vote == in_memory.config.vouch_vote
    engine.dispose()


def test_identify_certify_from_the_command_line(data_dir, refs, tiny_backbone):
    """The birds index is too little to certify anything: the job records that every group is held back (no
    threshold keeps a 5 % bound on a dozen answers); while another runs, it exits 4 and changes nothing."""
    import json

    from click.testing import CliRunner

    from identify.cli import main
    from identify.config import load_settings
    from tests.conftest import build_reference_index

    settings = load_settings()
    build_reference_index(settings, tiny_backbone, refs, "birds")
    done = CliRunner().invoke(main, ["certify", "--index", "birds", "--json"])
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    figures = record["figures"]
    assert record["status"] == "done" and figures["references"] == len(list(refs.rglob("*.jpg")))
    assert figures["groups"] and all(g["threshold"] > 1.0 for g in figures["groups"].values())
    plain = CliRunner().invoke(main, ["certify", "--index", "birds"])
    assert plain.exit_code == 0 and "reviewed sightings" in plain.stdout and ">= 1.01" in plain.stdout
    from identify.certifications import ReferenceState
    from identify.parts import Parts

    parts = Parts(settings)
    assert parts.certifications.start(1, "birds", ReferenceState(0, 0, 0)) is not None  # another worker's
    busy = CliRunner().invoke(main, ["certify", "--index", "birds", "--json"])
    assert busy.exit_code == 4 and json.loads(busy.stdout)["running"]["stage"] == "starting"
    missing = CliRunner().invoke(main, ["certify", "--index", "nothing"])
    assert missing.exit_code == 1 and "unknown_index" in missing.stderr


def test_references_recorded_before_outputs_were_kept_are_searched_not_asked():
    data = simulate(2)
    fitted = evaluate(data, FusionConfig(), seed=2)
    older = data.reference_probabilities.copy()
    older[::4] = np.nan  # a quarter recorded before this round
    certified = certify(replace(data, reference_probabilities=older, query_embeddings=np.zeros((0, 64)),
                                probabilities=np.zeros((0, 16)), query_labels=[], query_places=None,
                                query_groups=None, view_embeddings=None, view_probabilities=None),
                        fitted.config, fitted.calibration)
    assert certified.figures["references"] == 400 and certified.figures["certifying"] <= 300
    assert certified.figures["open_set"]["photos"] == 300


# ---- the service follows the certifications, in two workers ------------------------------------------------
def test_changed_species_are_held_back_until_recertified_then_served_new_thresholds(make_service, web_settings,
                                                                                  token):
    """A calibrated deployment, two workers. The first certification runs by itself; then a curator promotes a
    sighting, relabels one reference and retires another while a re-certification cannot start (another host
    holds the job): the species those changes touched are still named first but held back (`recertifying`), in
    both workers, the others not; once the job runs, both workers serve its thresholds and hold nothing back."""
    from identify.calibration import Calibration, FittedOn
    from identify.certifications import ReferenceState
    from identify.web import create_app
    from tests.conftest import jpeg_bytes, species_photo
    from tests.test_curation import bearer, post

    calibrated = dataclasses.replace(web_settings, calibration=Calibration(target_error=0.05,
                                                                           fitted_on=FittedOn(18, 3, 6.0, False)))
    services = [make_service(calibrated), make_service(calibrated)]
    clients = [create_app(s.settings, s).test_client() for s in services]
    following = [s.identifier.following for s in services]
    for f in following:
        f.retry = 0.0  # try again at once (a server waits RETRY seconds between tries)
    # no certification yet: the stored calibration's own state is served, and a job starts
    assert clients[0].get("/api/v1/status").get_json()["calibration"]["state"] == "current"
    following[0].wait(60)
    following[1].wait(60)
    first = following[0].certifications.latest(following[0].model_id, "birds")
    assert first is not None and first.status == "done"
    for client in clients:
        assert client.get("/api/v1/status").get_json()["calibration"]["state"] == "current"
    # another host holds the job: nothing can re-certify while the curator changes the references
    held = following[0].certifications.start(following[0].model_id, "birds", ReferenceState(0, 0, 0))
    assert held is not None
    sighting = post(clients[0], jpeg_bytes(species_photo(0, 61))).get_json()
    promoted = clients[0].post(f"/api/v1/sightings/{sighting['sighting_id']}/review", headers=bearer(token),
                               json={"action": "correct", "species": "Corvus cornix", "version": 1,
                                     "add_as_reference": True})
    assert promoted.status_code == 200, promoted.get_json()
    listed = clients[0].get("/api/v1/references?species=Columba%20livia", headers=bearer(token)).get_json()["items"]
    retired = clients[0].post(f"/api/v1/references/{listed[0]['id']}/retire", headers=bearer(token),
                              json={"reason": "a blurred photo", "version": listed[0]["version"]})
    assert retired.status_code == 200, retired.get_json()
    time.sleep(1.1)  # the second worker follows SQL within its refresh interval
    touched = {"Corvus cornix", "Columba livia"}
    for client in clients:
        status = client.get("/api/v1/status").get_json()["calibration"]
        assert status["state"] == "recertifying", status
        seen = set()
        for number in range(6):
            answer = post(client, jpeg_bytes(species_photo(number % 3, 90 + number))).get_json()
            top = answer["species"][0]["name"]
            assert ("recertifying" in answer["reasons"]) == (top in touched), (top, answer["reasons"])
            assert top not in touched or answer["decision"] != "confident"
            seen.add(top in touched)
        assert seen == {True, False}  # answers of touched species held back, of the others not
    # the other host's job ends (its row abandoned); the next answer starts one here, once the tries made while
    # the other host held it have returned (a try still alive is not started twice: under load, CI once saw the
    # next answer find the last refused try still running, and no new job)
    following[0].certifications.fail(held, "the other host stopped")
    for f in following:
        f.wait(60)
    post(clients[0], jpeg_bytes(species_photo(0, 95)))
    for f in following:
        f.wait(60)
    newest = following[0].certifications.latest(following[0].model_id, "birds")
    assert newest is not None and newest.id > first.id
    assert newest.reference_state == following[0].certifications.reference_state(following[0].index_id)
    for service, client in zip(services, clients, strict=True):
        assert client.get("/api/v1/status").get_json()["calibration"]["state"] == "current"
        answer = post(client, jpeg_bytes(species_photo(1, 97))).get_json()
        assert "recertifying" not in answer["reasons"]
        served = service.identifier.served()
        assert served.calibration.thresholds == newest.served(service.identifier.config,
                                                              service.identifier.calibration)[1].thresholds
    for f in following:
        f.wait(60)  # nothing left running when the database goes


# ---- new species earn confidence ------------------------------------------------------------------------------
def test_a_new_species_is_named_and_said_new_here_until_it_has_earned_confidence():
    """A species only references know, in a calibrated deployment: named first, held back with `new_here` while
    the `new` group cannot be certified; confident once a certification gives the species its own threshold."""
    from identify.calibration import Calibration
    from identify.fusion import CONFIDENT, Neighbour
    from identify.scoring import SpeciesNames, answer

    names = SpeciesNames(["Passer domesticus", "Corvus cornix"], {})
    probabilities = np.array([0.55, 0.45])  # the classifier cannot name the hoopoe: it hesitates between its own
    neighbours = [Neighbour(i, "Upupa epops", 0.95 - 0.01 * i) for i in range(6)]
    config = FusionConfig(min_margin=0.0, contradicting_vote=1.01)
    counts = {"Upupa epops": 6, "Passer domesticus": 20, "Corvus cornix": 20}
    held = answer(probabilities, neighbours, names, config,
                  Calibration(target_error=0.05, thresholds=(("new", 1.01),)), reference_counts=counts)
    assert held.top.name == "Upupa epops" and held.decision.decision != CONFIDENT
    assert "new_here" in held.decision.reasons
    earned = answer(probabilities, neighbours, names, config,
                    Calibration(target_error=0.05, thresholds=(("new", 1.01), ("species:Upupa epops", 0.3))),
                    reference_counts=counts)
    assert earned.decision.decision == CONFIDENT and earned.threshold == 0.3
    # an uncalibrated deployment states no risk: its threshold decides, and nothing is said of earning
    plain = answer(probabilities, neighbours, names, config, Calibration(), reference_counts=counts)
    assert "new_here" not in plain.decision.reasons


def with_a_new_species(data, references: int, reviewed: int, seed: int = 5):  # type: ignore[no-untyped-def]
    """`data` (references only) with a species the classifier cannot name, unlike every other (its own corner of
    the space), photographed as birds of three photos: `references` of its photos as references, `reviewed` more
    as reviewed sightings (the queries)."""
    rng = np.random.default_rng(seed)
    dim = data.reference_embeddings.shape[1]
    centre = rng.normal(size=dim)
    centre /= np.linalg.norm(centre)

    def photos(count: int) -> np.ndarray:
        birds = centre + rng.normal(scale=0.28 / np.sqrt(dim), size=((count + 2) // 3, dim))
        return np.repeat(birds, 3, axis=0)[:count] + rng.normal(scale=0.2 / np.sqrt(dim), size=(count, dim))

    def unsure(count: int) -> np.ndarray:  # none of its classes: the classifier spreads itself thin
        logits = rng.normal(scale=0.5, size=(count, len(data.classes)))
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    return replace(
        data, reference_embeddings=np.concatenate([data.reference_embeddings, photos(references)]),
        reference_labels=data.reference_labels + ["Upupa epops"] * references,
        reference_probabilities=np.concatenate([data.reference_probabilities, unsure(references)]),
        reference_groups=data.reference_groups + [f"hoopoe {i // 3}" for i in range(references)],
        query_embeddings=photos(reviewed), probabilities=unsure(reviewed), query_labels=["Upupa epops"] * reviewed,
        query_places=None, query_groups=None, query_paths=None, view_embeddings=None, view_probabilities=None)


@pytest.mark.slow
def test_a_new_species_earns_confidence_from_its_own_evidence():
    """A species only references know: with a dozen references it has not earned confidence (its answers are
    too few for the confidence sequence to bound); once curators have confirmed enough answers naming it, it has
    its own threshold, with the sequence's bound under the target; the species the classifier knows are
    certified as before."""
    from identify.audit import confidence_sequence

    world = simulate(0)
    fitted = evaluate(world, FusionConfig(), seed=0)
    for reviewed, earning in ((0, False), (20, False), (150, True)):
        certified = certify(with_a_new_species(world, 12, reviewed), fitted.config, fitted.calibration)
        own = certified.figures["groups"].get("species:Upupa epops")
        assert (own is not None) == earning, (reviewed, own)
        if own is not None:
            assert own["answered"] >= 102 and own["upper_bound"] <= 0.05
            assert own["upper_bound"] == pytest.approx(confidence_sequence(own["errors"], own["answered"], 0.9)[1])


def test_a_reference_set_too_big_to_certify_in_memory_is_refused_not_run(data_dir, refs, tiny_backbone, monkeypatch):
    """Past MOST_REFERENCES the job would take a worker's memory (20,000 references of 400 species ran out of
    24 GiB here): it records why it did not run, the command says so, and the thresholds served stay."""
    from click.testing import CliRunner

    import identify.certifications as certifications
    from identify.cli import main
    from identify.config import load_settings
    from tests.conftest import build_reference_index

    build_reference_index(load_settings(), tiny_backbone, refs, "birds")
    monkeypatch.setattr(certifications, "MOST_REFERENCES", 5)
    refused = CliRunner().invoke(main, ["certify", "--index", "birds"])
    assert refused.exit_code == 1 and "error: certification_failed:" in refused.stderr
    assert "more than this version certifies in memory (5)" in refused.stderr
