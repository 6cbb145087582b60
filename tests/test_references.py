"""The reference set with one owner, and curators naming any taxon, on SQLite and PostgreSQL:

- a curator names a species nobody knew (not a class of the model, no references) -> the photo becomes a
  reference of that taxon at once -> `identify predict` (not only the web app) ranks it first;
- corrections take any name of the taxonomy; a name outside it needs `as_written`;
- suggestions as the curator types; similar sightings by genus and family;
- labels stored before taxa existed are linked by `identify taxonomy sync`."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

from identify.cli import main
from identify.references import References
from identify.schema import ReferenceImage, Species
from identify.schema import Taxon as TaxonRow
from tests.conftest import jpeg_bytes, species_photo

NEW_BIRD = species_photo(3, 0)  # a colour and shape none of the references has
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(client, image) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/identify", data={"image": (io.BytesIO(jpeg_bytes(image)), "bird.jpg")})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def review(client, auth, sighting_id: int, **body):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/sightings/{sighting_id}/review", headers=auth, json={"version": 1, **body})


def predict_json(service, checkpoint: Path, photo: Path) -> dict:  # type: ignore[no-untyped-def]
    env = {"IDENTIFY_DATA_DIR": str(service.settings.data_dir), "IDENTIFY_DATABASE_URL": service.settings.database_url}
    result = CliRunner().invoke(main, ["predict", "--model", str(checkpoint), "--index", "birds", "--k", "1",
                                       "--json", str(photo)], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_a_species_nobody_knew_becomes_a_reference_that_predict_finds(client, service, auth, tiny_checkpoint,
                                                                        tmp_path):
    first = upload(client, NEW_BIRD)
    assert "Tichodroma muraria" not in {s["name"] for s in first["species"]}
    reviewed = review(client, auth, first["sighting_id"], action="correct", species="wallcreeper")
    assert reviewed.status_code == 200, reviewed.get_json()
    body = reviewed.get_json()
    assert body["answer_label"] == "Tichodroma muraria" and body["answer"] == "Wallcreeper (Tichodroma muraria)" and body["answer_taxon"]["scientific_name"] == "Tichodroma muraria"
    assert body["reference_id"] is not None  # a correction teaches at once unless the curator says otherwise
    assert body["reviews"][0]["added_as_reference"] is True

    photo = tmp_path / "again.jpg"
    NEW_BIRD.save(photo, quality=80)  # the same bird, encoded again: near-identical
    answer = predict_json(service, tiny_checkpoint, photo)
    top = answer["species"][0]
    assert top["name"] == "Tichodroma muraria" and top["classifier"] == 0.0 and top["knn"] == 1.0
    assert top["taxon"]["family"] == "Tichodromidae" and top["taxon"]["genus"] == "Tichodroma"
    assert answer["neighbours"][0]["reference_id"] == body["reference_id"]
    assert answer["neighbours"][0]["path"].endswith(".jpg")


def test_a_correction_by_any_name_uses_the_label_of_its_taxon(client, service, auth):
    sighting = upload(client, NEW_BIRD)
    body = review(client, auth, sighting["sighting_id"], action="correct", species="Hooded Crow").get_json()
    assert body["answer_label"] == "Corvus cornix"  # the species of that taxon, not a second label
    assert body["answer_taxon"]["common_name"] == "Hooded Crow"
    with service.store.session() as session:
        assert session.scalar(select(Species.id).where(Species.name == "Hooded Crow")) is None


def test_a_name_outside_the_taxonomy_needs_as_written(client, service, auth):
    sighting_id = upload(client, NEW_BIRD)["sighting_id"]
    refused = review(client, auth, sighting_id, action="correct", species="Hodded crow")
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["code"] == "unknown_species" and "Hooded Crow" in error["message"]
    with service.store.session() as session:
        assert session.scalar(select(ReferenceImage.id)) is not None  # the build's references only
        assert session.scalar(select(Species.id).where(Species.name == "Hodded crow")) is None
    taken = review(client, auth, sighting_id, action="correct", species="Island form A", as_written=True)
    assert taken.status_code == 200
    assert taken.get_json()["answer"] == "Island form A" and taken.get_json()["answer_taxon"] is None


def test_no_reference_when_the_curator_says_so(client, auth):
    sighting_id = upload(client, NEW_BIRD)["sighting_id"]
    body = review(client, auth, sighting_id, action="correct", species="Wallcreeper", add_as_reference=False).get_json()
    assert body["reference_id"] is None and body["reviews"][0]["added_as_reference"] is False


def test_suggestions_for_what_a_curator_types(client):
    found = client.get("/api/v1/taxa", query_string={"q": "wallcr"}).get_json()
    assert found["taxa"][0]["name"] == "Wallcreeper"
    assert found["taxa"][0]["taxon"]["scientific_name"] == "Tichodroma muraria"
    assert client.get("/api/v1/taxa", query_string={"q": "tichodroma m"}).get_json()["taxa"][0]["name"] == \
        "Tichodroma muraria"
    assert client.get("/api/v1/taxa", query_string={"q": ""}).get_json()["taxa"] == []
    bad = client.get("/api/v1/taxa", query_string={"q": "x", "limit": "500"})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_field"


def test_similar_sightings_by_genus_and_family(client, auth):
    first = upload(client, NEW_BIRD)
    review(client, auth, first["sighting_id"], action="correct", species="Wallcreeper", add_as_reference=False)
    second = upload(client, species_photo(3, 1))["sighting_id"]

    def similar(**filters: str) -> list[int]:
        response = client.get(f"/api/v1/sightings/{second}/similar", query_string=filters)
        assert response.status_code == 200, response.get_json()
        return [hit["sighting_id"] for hit in response.get_json()["similar"]]

    assert similar(genus="Tichodroma") == [first["sighting_id"]]
    assert similar(family="tichodromidae") == [first["sighting_id"]]
    assert similar(species="Tichodroma muraria") == [first["sighting_id"]]  # any name of the taxon
    assert similar(family="Passeridae") == [] and similar(genus="Tichodroma", family="Corvidae") == []


def test_labels_stored_before_taxa_are_linked_by_sync(web_settings, tmp_path, monkeypatch):
    from identify.storage import Store, make_engine, upgrade_database

    engine = make_engine(web_settings.database_url)
    upgrade_database(engine, "0002")  # a database of the release before taxa
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO species (name, created_at) VALUES ('House sparrow', "
                                   "CURRENT_TIMESTAMP), ('tabby', CURRENT_TIMESTAMP)")
    upgrade_database(engine)
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(web_settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", web_settings.database_url)
    result = CliRunner().invoke(main, ["taxonomy", "sync"])
    assert result.exit_code == 0 and "linked 1 labels" in result.output and "1 resolve to none" in result.output
    taxa = References(Store(engine)).label_taxa()
    assert taxa["House sparrow"].scientific_name == "Passer domesticus" and taxa["tabby"] is None  # type: ignore[union-attr]
    with Store(engine).session() as session:
        assert session.scalar(select(TaxonRow.family)) == "Passeridae"
    engine.dispose()


def test_sql_only_commands_do_not_import_torch_or_faiss():
    """`identify create-curator --help` and `identify db --help` answer without the model stack."""
    for command in (["create-curator", "--help"], ["db", "--help"], ["taxonomy", "--help"]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "identify", *command],
                                capture_output=True, text=True, check=True)
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        heavy = {name for name in imported if name.split(".")[0] in ("torch", "faiss", "birder", "torchvision")}
        assert "Usage:" in result.stdout and not heavy, (command, sorted(heavy)[:5])


def test_faiss_is_imported_only_under_identify_vectors():
    offenders = []
    for path in [*ROOT.glob("identify/**/*.py"), *ROOT.glob("index_builder/*.py"), *ROOT.glob("benchmarks/*.py")]:
        if "vectors" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "faiss"]
    assert offenders == []


def test_benchmarks_do_not_import_the_tests():
    for path in ROOT.glob("benchmarks/*.py"):
        modules = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        assert not any((m or "").startswith("tests") for m in modules), path


def striped(seed: int, size: int = 96):  # type: ignore[no-untyped-def]
    """A photo of a species unlike the model's own: diagonal bands."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.arange(size)
    band = ((x[None, :] + x[:, None] * 0.3 + rng.integers(0, 8)) // 4) % 2
    image = np.where(band[..., None] == 1, np.array([230, 150, 60]), np.array([30, 20, 10])).astype(np.int16)
    image += rng.integers(-15, 15, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def test_a_species_only_references_know_is_confident_with_default_settings(web_settings, tiny_backbone, refs,
                                                                          tiny_checkpoint, tmp_path):
    """Six close references of Upupa epops, not a class of the model: a near-identical photo is `confident`
    for it through the API and through `identify predict`, with the default fusion settings."""
    from dataclasses import replace

    from identify.config import FusionConfig
    from identify.service import IdentificationService
    from identify.storage import Store, make_engine
    from identify.web import create_app
    from tests.conftest import build_reference_index

    (refs / "Upupa epops").mkdir()
    for seed in range(6):
        striped(seed).save(refs / "Upupa epops" / f"hoopoe_{seed}.jpg", quality=92)
    settings = replace(web_settings, fusion=FusionConfig())
    build_reference_index(settings, tiny_backbone, refs, "birds")
    engine = make_engine(settings.database_url)
    service = IdentificationService(settings, tiny_backbone, Store(engine))
    client = create_app(settings, service).test_client()
    query = Image.open(io.BytesIO(jpeg_bytes(striped(0), quality=70)))  # the same bird, saved again: near-identical
    answer = upload(client, query)
    top = answer["species"][0]
    assert (top["name"], answer["decision"], answer["reasons"]) == ("Upupa epops", "confident", [])
    assert top["classifier"] == 0.0 and top["taxon"]["family"] == "Upupidae" and answer["rollup"] is None
    photo = tmp_path / "query.jpg"
    query.save(photo, quality=75)
    env = {"IDENTIFY_DATA_DIR": str(settings.data_dir), "IDENTIFY_DATABASE_URL": settings.database_url}
    result = CliRunner().invoke(main, ["predict", "--model", str(tiny_checkpoint), "--index", "birds", "--json",
                                       str(photo)], env=env)
    predicted = json.loads(result.output.strip().splitlines()[-1])
    assert predicted["species"][0]["name"] == "Upupa epops" and predicted["decision"] == "confident"
    engine.dispose()


def test_an_uncertain_answer_rolls_up_to_its_genus_on_the_api_and_the_page(service, client, auth):
    """Two sparrows share the neighbours' vote: neither species is sure, the genus is ("Probably a sparrow")."""
    import numpy as np

    from identify.identifier import Evidence, NeighbourInfo

    from dataclasses import replace

    service.references.ensure_species(["Passer italiae"])  # a congener only references would know
    service.identifier.names = service.identifier._load_names()
    service.identifier.config = replace(service.identifier.config, k=6, confident_score=0.75)
    neighbours = [NeighbourInfo(i + 1, species, 0.95, "x.jpg", "0" * 64)
                  for i, species in enumerate(["Passer italiae", "Passer_domesticus"] * 3)]
    evidence = Evidence(np.array([0.34, 0.33, 0.33], dtype=np.float32), np.zeros(8, dtype=np.float32), neighbours, 0.0)
    result = service.identifier.explain(evidence, None, frozenset())
    assert result.decision.decision == "needs_review" and result.species[0].score < 0.75
    assert result.rollup is not None and result.rollup.to_dict()["scientific_name"] == "Passer"
    assert result.rollup.common_name == "sparrow" and result.rollup.score >= 0.75
    assert set(result.rollup.members) == {"Passer italiae", "Passer domesticus"}

    sighting = upload(client, NEW_BIRD)["sighting_id"]  # a stored sighting, given this roll-up
    with service.store.sessions.begin() as session:
        from identify.schema import Sighting

        session.get(Sighting, service.sighting_key(sighting)).rollup = result.rollup.to_dict()
    body = client.get(f"/api/v1/sightings/{sighting}").get_json()
    assert body["rollup"]["common_name"] == "sparrow" and body["rollup"]["rank"] == "genus"
    page = client.get(f"/sightings/{sighting}").get_data(as_text=True)
    assert "Probably a sparrow\n(genus <i class=\"sci\">Passer</i>)" in page and "the species is uncertain" in page


def test_the_service_shows_calibrated_scores_and_keeps_the_fused_ones(make_service, web_settings):
    """A stored calibration (what evaluate --write-config writes) is applied to every answer."""
    from dataclasses import replace

    from identify.calibration import Calibration
    from identify.web import create_app

    plain = create_app(web_settings, make_service()).test_client()
    sharpened = replace(web_settings, calibration=Calibration("temperature", 0.25))
    calibrated = create_app(sharpened, make_service(sharpened)).test_client()
    before, after = upload(plain, NEW_BIRD)["species"], upload(calibrated, NEW_BIRD)["species"]
    assert [s["fused"] for s in after] == pytest.approx([s["score"] for s in before])
    assert after[0]["score"] > after[0]["fused"]  # T < 1 sharpens
    powered = [s["fused"] ** 4 for s in after]
    assert after[0]["score"] == pytest.approx(powered[0] / sum(powered), rel=1e-3)
