"""Place and season: occurrence counts by hand, imports (CSV and a GBIF Darwin Core Archive), the prior in the
answer of `identify predict` and of the API, and confirmed sightings counting as records."""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from identify.cli import main
from identify.fusion import RankedSpecies, with_prior
from identify.observation import Place
from identify.prior import FLOOR, SHRINK_LOCAL, SHRINK_REGIONAL, Occurrences, PriorModel, TaxonPrior, cell_of, week_of
from identify.taxonomy import Taxon, Taxonomy

JERUSALEM, BERLIN = (31.78, 35.22), (52.52, 13.40)
HERE, AWAY = "Passer hispaniolensis", "Passer domesticus"


def test_the_prior_by_hand():
    cell = cell_of(*JERUSALEM)
    april = date(2026, 4, 15)
    model = PriorModel([(cell, week_of(april), HERE, 300), (cell, week_of(april) + 2, "Upupa epops", 100),
                        (cell_of(*BERLIN), week_of(april), AWAY, 600)])
    priors = model.at(Place(*JERUSALEM, april))
    local_total = regional_total = 400  # both Jerusalem taxa are within two weeks; the region has no AWAY
    overall = {HERE: 0.3, "Upupa epops": 0.1, AWAY: 0.6}
    for taxon, local in ((HERE, 300), ("Upupa epops", 100), (AWAY, 0)):
        p_regional = (local + SHRINK_REGIONAL * overall[taxon]) / (regional_total + SHRINK_REGIONAL)
        expected = (local + SHRINK_LOCAL * p_regional) / (local_total + SHRINK_LOCAL)
        assert priors[taxon].probability == pytest.approx(expected)
    assert priors[HERE].probability > priors["Upupa epops"].probability > priors[AWAY].probability
    assert priors[HERE].expected_here and priors["Upupa epops"].expected_here and not priors[AWAY].expected_here
    assert sum(p.probability for p in priors.values()) == pytest.approx(1.0)
    january = model.at(Place(*JERUSALEM, date(2026, 1, 10)))  # out of season: nothing local, the region speaks
    assert not january[HERE].expected_here and january[HERE].probability > january[AWAY].probability


def test_weeks_wrap_around_the_year():
    cell = cell_of(*JERUSALEM)
    model = PriorModel([(cell, 52, HERE, 5)])
    assert model.at(Place(*JERUSALEM, date(2027, 1, 6)))[HERE].expected_here  # week 1: two weeks from 52


def test_the_prior_multiplies_and_the_floor_keeps_a_rarity_possible():
    def taxon(name: str) -> Taxon:
        return Taxon(name, None, "species", name.split()[0], "Passeridae", "Passeriformes", "test", "0")

    ranking = [RankedSpecies("House sparrow", 0.75, 0.5, 1.0, taxon(AWAY)),
               RankedSpecies("Spanish sparrow", 0.20, 0.5, 0.0, taxon(HERE)),
               RankedSpecies("tabby", 0.05, 0.0, 0.0, None)]
    priors = {HERE: TaxonPrior(0.9, True), AWAY: TaxonPrior(0.0001, False)}
    out = {s.name: s for s in with_prior(ranking, priors, FLOOR)}
    weights = {"House sparrow": 0.75 * FLOOR, "Spanish sparrow": 0.20 * 0.9, "tabby": 0.05 * (FLOOR + 0.9) / 2}
    total = sum(weights.values())
    assert {n: s.score for n, s in out.items()} == pytest.approx({n: w / total for n, w in weights.items()})
    assert out["House sparrow"].expected_here is False and out["House sparrow"].prior == pytest.approx(0.0001)
    assert out["tabby"].expected_here is None and out["tabby"].prior is None
    assert with_prior(ranking, {}, FLOOR) == ranking  # no occurrences: the photo's answer alone


def _occurrence_rows(n_per_year: int = 40) -> list[tuple[str, float, float, str]]:
    rng = random.Random(1)
    rows = []
    for year in range(2019, 2026):
        for _ in range(n_per_year):
            day = f"{year}-04-{rng.randint(1, 28):02d}"
            rows.append((HERE, JERUSALEM[0] + rng.uniform(-0.2, 0.2), JERUSALEM[1] + rng.uniform(-0.2, 0.2), day))
            rows.append((AWAY, BERLIN[0] + rng.uniform(-0.2, 0.2), BERLIN[1] + rng.uniform(-0.2, 0.2), day))
    return rows


def write_csv(path: Path, rows, extra=()) -> Path:  # type: ignore[no-untyped-def]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["gbifID", "scientificName", "decimalLatitude", "decimalLongitude", "eventDate"])
        for i, row in enumerate([*rows, *extra]):
            writer.writerow([i, *row])
    return path


def write_dwca(path: Path, rows) -> Path:  # type: ignore[no-untyped-def]
    """A minimal GBIF-style Darwin Core Archive: occurrence.txt (tab-separated core) and meta.xml."""
    terms = ["gbifID", "scientificName", "decimalLatitude", "decimalLongitude", "eventDate"]
    core = io.StringIO()
    core.write("\t".join(terms) + "\n")
    for i, (name, lat, lon, day) in enumerate(rows):
        core.write(f"{i}\t{name}\t{lat}\t{lon}\t{day}\n")
    fields = "\n".join(f'    <field index="{i}" term="http://rs.tdwg.org/dwc/terms/{t}"/>'
                       for i, t in enumerate(terms) if i)
    meta = f"""<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1"
        rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0"/>
{fields}
  </core>
</archive>"""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("occurrence.txt", core.getvalue())
        archive.writestr("meta.xml", meta)
        archive.writestr("eml.xml", "<eml/>")
    return path


@pytest.mark.parametrize("kind", ["csv", "dwca"])
def test_imports_count_records_and_skip_what_they_cannot_use(kind, database_url, tmp_path):
    from identify.storage import Store, make_engine, upgrade_database

    rows = _occurrence_rows(5)
    bad = [("Passer domesticus", "", "13.4", "2024-04-01"), ("Passer domesticus", "52.5", "13.4", "not a date"),
           ("Avis inventa", "52.5", "13.4", "2024-04-01"), ("Passer domesticus", "95", "13.4", "2024-04-01")]
    path = write_csv(tmp_path / "occ.csv", rows, bad) if kind == "csv" else write_dwca(tmp_path / "occ.zip", rows + bad)
    engine = make_engine(database_url)
    upgrade_database(engine)
    occurrences = Occurrences(Store(engine), Taxonomy())
    report = occurrences.import_file(path)
    assert (report.records, report.imported, report.skipped, report.taxa) == (74, 70, 4, 2)
    again = occurrences.import_file(path)  # a second import adds to the counts
    model = occurrences.model()
    priors = model.at(Place(*JERUSALEM, date(2026, 4, 10)))
    assert again.imported == 70 and priors[HERE].expected_here and not priors[AWAY].expected_here
    assert sum(model._overall.values()) == 140
    engine.dispose()


@pytest.mark.parametrize("content", ["name,lat\nx,1\n", ""])
def test_a_file_that_is_not_occurrences_is_refused(content, data_dir, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = CliRunner().invoke(main, ["occurrences", "import", str(path)])
    assert result.exit_code == 1 and "error: bad_occurrences:" in result.stderr
    result = CliRunner().invoke(main, ["occurrences", "import", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "error: occurrences_not_found:" in result.stderr


def test_predict_at_a_place_where_only_the_look_alike_was_recorded(data_dir, tmp_path):
    """The acceptance line: without the place the photo's own answer; at the place, the recorded look-alike
    first or a review for an unusual record, and the other taxon marked as not expected here."""
    from identify.synthetic import make_species_folder, write_birder_checkpoint

    refs = make_species_folder(tmp_path / "refs", [AWAY, HERE], per=5)
    model = write_birder_checkpoint("mobilenet_v3_small_0_25", [AWAY, HERE], 96, tmp_path / "tiny.pt")
    runner = CliRunner()
    assert runner.invoke(main, ["build-index", "--model", str(model), "--images", str(refs), "--name", "b",
                                "--workers", "0", "--json"]).exit_code == 0
    imported = runner.invoke(main, ["occurrences", "import", str(write_csv(tmp_path / "o.csv", _occurrence_rows())),
                                    "--json"])
    assert imported.exit_code == 0 and json.loads(imported.output)["imported"] == 560
    photo = str(refs / AWAY / f"{AWAY}_0.jpg")
    base = ["predict", "--model", str(model), "--index", "b", "--json", photo]

    def answer(*extra: str) -> dict:
        result = runner.invoke(main, [*base, *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])

    alone = answer()
    assert alone["species"][0]["name"] == AWAY and alone["place"] is None
    assert "expected_here" not in alone["species"][0]
    placed = answer("--lat", str(JERUSALEM[0]), "--lon", str(JERUSALEM[1]), "--date", "2026-04-15")
    by_name = {s["name"]: s for s in placed["species"]}
    assert placed["species"][0]["name"] == HERE or "unusual_for_place_date" in placed["reasons"]
    assert by_name[AWAY]["expected_here"] is False and by_name[HERE]["expected_here"] is True
    assert by_name[HERE]["prior"] > 0.9 > by_name[AWAY]["prior"]
    assert placed["place"]["date"].startswith("2026-04-15")
    ignored = answer("--lat", str(JERUSALEM[0]), "--lon", str(JERUSALEM[1]), "--date", "2026-04-15",
                     "--ignore-location")
    assert ignored["species"] == alone["species"]
    in_berlin = answer("--lat", str(BERLIN[0]), "--lon", str(BERLIN[1]), "--date", "2026-04-15")
    assert in_berlin["species"][0]["name"] == AWAY and "unusual_for_place_date" not in in_berlin["reasons"]
    bad = runner.invoke(main, [*base, "--lat", "91", "--lon", "0"])
    assert bad.exit_code == 1 and "bad_coordinates" in bad.stderr


def test_uploads_use_the_place_and_confirmed_sightings_become_records(service, client, token):
    """The API: lat, lon and observed_at shape the answer; ignore_location leaves them out; a confirmed sighting
    with a place and date counts for the next upload there."""
    from tests.conftest import jpeg_bytes, species_photo

    def upload(**fields: str) -> dict:
        response = client.post("/api/v1/identify",
                               data={"image": (io.BytesIO(jpeg_bytes(species_photo(3, 0))), "b.jpg"), **fields})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    at_place = {"lat": "31.78", "lon": "35.22", "observed_at": "2026-04-15T07:00:00+03:00"}
    first = upload(**at_place)
    assert first["place"] is None  # nothing recorded anywhere yet: no prior
    correct = client.post(f"/api/v1/sightings/{first['sighting_id']}/review",
                          headers={"Authorization": f"Bearer {token}"},
                          json={"action": "correct", "species": "Spanish Sparrow", "version": 1})
    assert correct.status_code == 200 and correct.get_json()["answer_taxon"]["scientific_name"] == HERE
    second = upload(**at_place)
    spanish = next(s for s in second["species"] if s["taxon"] and s["taxon"]["scientific_name"] == HERE)
    assert second["place"] is not None and spanish["expected_here"] is True
    others = [s for s in second["species"] if s is not spanish and s["taxon"]]
    assert others and all(s["expected_here"] is False for s in others)
    assert upload(**at_place, ignore_location="true")["place"] is None
    page = client.get(f"/sightings/{second['sighting_id']}").get_data(as_text=True)
    assert "Here and now" in page and "unusual" in page


def test_without_thresholds_certified_with_a_place_a_place_never_makes_an_answer_confident():
    """A calibration certified on the photo alone (re-certified from references, which carry no place): an answer
    the place leaves as the photo gave it is decided under the photo alone's threshold; one the place changes
    goes to a curator (`place_changes_answer`), however high its score with the place."""
    from datetime import date

    import numpy as np

    from identify.calibration import Calibration
    from identify.config import FusionConfig
    from identify.fusion import CONFIDENT, Neighbour
    from identify.measurement import prior_of
    from identify.observation import Place
    from identify.scoring import SpeciesNames, answer
    from identify.taxonomy import Taxon

    def taxon(name: str) -> Taxon:
        return Taxon(name, None, "species", name.split()[0], "Passeridae", "Passeriformes", "test", "0")

    names = SpeciesNames(["Passer domesticus", "Passer italiae"],
                         {"Passer domesticus": taxon("Passer domesticus"), "Passer italiae": taxon("Passer italiae")})
    probabilities = np.array([0.7, 0.3])
    neighbours = [Neighbour(i, "Passer domesticus" if i < 4 else "Passer italiae", 0.9 - 0.01 * i) for i in range(6)]
    config = FusionConfig(min_margin=0.0, k=6)
    certified = Calibration(target_error=0.05, thresholds=(("known", 0.5),))  # no `+place` threshold
    counts = {"Passer domesticus": 10, "Passer italiae": 10}
    rome = Place(41.9, 12.5, date(2026, 5, 10))
    here = [("Passer italiae", 41.9 + d, 12.5 + d, date(2026, 5, 10)) for d in np.linspace(-0.2, 0.2, 200)]
    both = here + [("Passer domesticus", 41.9 + d, 12.5 + d, date(2026, 5, 10)) for d in np.linspace(-0.2, 0.2, 200)]
    alone = answer(probabilities, neighbours, names, config, certified, reference_counts=counts)
    assert alone.top.name == "Passer domesticus" and alone.decision.decision == CONFIDENT
    agreeing = answer(probabilities, neighbours, names, config, certified, prior_of(both), rome,
                      reference_counts=counts)
    assert agreeing.top.name == "Passer domesticus" and agreeing.decision.decision == CONFIDENT
    assert agreeing.threshold == 0.5 and agreeing.risk_bounded  # the photo alone's certificate
    flipped = answer(probabilities, neighbours, names, config, certified, prior_of(here), rome,
                     reference_counts=counts)
    assert flipped.top.name == "Passer italiae" and flipped.decision.decision != CONFIDENT
    assert "place_changes_answer" in flipped.decision.reasons
    # thresholds certified with a place decide such answers themselves, as before
    with_place = Calibration(target_error=0.05, thresholds=(("known", 0.5), ("known+place", 0.3)))
    decided = answer(probabilities, neighbours, names, config, with_place, prior_of(here), rome,
                     reference_counts=counts)
    assert "place_changes_answer" not in decided.decision.reasons and decided.groups[-1] == "all+place"
