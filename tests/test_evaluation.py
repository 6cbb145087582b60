"""`identify evaluate`: metrics checked against a case computed by hand, the simulation where fusion must beat
both of its parts, and the real demo model on real photos through the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from identify.cli import main
from identify.config import FusionConfig, load_settings
from identify.evaluation import evaluate
from identify.measurement import EvaluationData, coverage_risk, expected_calibration_error
from identify.simulation import simulate


def hand_case() -> EvaluationData:
    """Two references, a=(1,0) and b=(0,1). q0 is an `a` the classifier calls b; q1 a `b` that lies nearer a."""
    return EvaluationData(
        classes=["a", "b"],
        probabilities=np.array([[0.4, 0.6], [0.1, 0.9]]),
        query_embeddings=np.array([[1.0, 0.0], [0.8, 0.6]]),
        query_labels=["a", "b"],
        reference_embeddings=np.array([[1.0, 0.0], [0.0, 1.0]]),
        reference_labels=["a", "b"],
        kind="simulation",
    )


def test_the_hand_computed_case():
    # k=2, T=1, lambda=0.5. q0: p_knn(a) = 1/(1+e^-1) = 0.7311 -> fused a = 0.3655 + 0.2 = 0.5655 (right).
    # q1: p_knn(a) = 1/(1+e^-0.2) = 0.5498 -> fused b = 0.2251 + 0.45 = 0.6751 (right).
    result = evaluate(hand_case(), FusionConfig(k=2, temperature=1.0, weight_knn=0.5))
    assert result.accuracy["classifier"]["top1"] == 0.5  # q0 wrong
    assert result.accuracy["knn"]["top1"] == 0.5  # q1 wrong
    assert result.accuracy["fusion"]["top1"] == 1.0
    knn_a0, knn_a1 = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-0.2))
    top0, top1 = 0.5 * knn_a0 + 0.5 * 0.4, 0.5 * (1 - knn_a1) + 0.5 * 0.9
    assert result.curve["threshold"] == pytest.approx([top1, top0])  # most confident first
    assert result.ece["fusion"] == pytest.approx(0.5 * (1 - top0) + 0.5 * (1 - top1))
    assert result.curve["risk"] == [0.0, 0.0] and result.curve["coverage"] == [0.5, 1.0]
    # Two queries cannot be split: no calibration, the given settings. One reference per species: each answer
    # stands on one reference, too thin for confident (identify.openset), whatever its score.
    assert not result.held_out and result.calibration.method == "none"
    assert result.decisions["needs_review"] == 1.0
    assert all("thin_support" in row["reasons"].split() for row in result.answers)
    # q0's classifier favours b, which has one reference: the neighbours could not outvote it
    assert "named_species_unreferenced" in result.answers[0]["reasons"]
    # One reference enough: q0's margin (0.131) is under 0.15, so it needs review; q1 clears 0.5 by a wide
    # margin. That classifier and neighbours disagree on both only explains.
    thin = evaluate(hand_case(), FusionConfig(k=2, temperature=1.0, weight_knn=0.5, min_support=1))
    assert thin.decisions["needs_review"] == 0.5 and thin.decisions["confident"] == 0.5
    # With two references and min_support 2 only k=2 is swept (k=1 could never back an answer with two
    # references). At T=1, q0 is right when 0.4622 lambda > 0.2 (1 - lambda), lambda > 0.302, and q1 when
    # 0.8 - 0.8996 lambda > 0, lambda < 0.889: lambda in {0.4, ..., 0.8}; the tie goes to an even mix.
    assert {row["k"] for row in result.sweep} == {2}
    assert result.best == {"weight_knn": 0.5, "k": 2, "temperature": 1.0, "top1": 1.0}
    right = {row["weight_knn"] for row in result.sweep if row["top1"] == 1.0 and row["temperature"] == 1.0}
    assert right == {0.4, 0.5, 0.6, 0.7, 0.8}


def test_calibration_and_coverage_risk_by_hand():
    confidence = np.array([0.95, 0.92, 0.55, 0.15])
    correct = np.array([True, False, True, False])
    ece, bins = expected_calibration_error(confidence, correct, bins=10)
    # Bins are (low, high] (Guo et al.): (0.9, 1.0] holds 0.95 and 0.92 (accuracy 0.5, confidence 0.935).
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.935) + 0.25 * abs(1 - 0.55) + 0.25 * abs(0 - 0.15))
    assert [b["count"] for b in bins] == [1, 1, 2]
    curve = coverage_risk(confidence, correct)
    assert curve["risk"] == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert curve["aurc"] == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)


def test_the_vectorised_fusion_matches_the_services_fuse():
    """evaluate() scores from matrices, the service through identify.fusion.fuse: the same numbers, new
    species (outside the classifier's classes) included."""
    from identify.measurement import LabelSpace, fused_matrix, knn_matrix, neighbourhood
    from identify.fusion import Neighbour, fuse

    data = simulate(seed=3)
    config = FusionConfig(weight_knn=0.6, k=10, temperature=0.1)
    hood, space = neighbourhood(data, 10), LabelSpace.of(data)
    fused = fused_matrix(space, knn_matrix(space, hood, 10, 0.1), 0.6)
    assert (~space.is_class).sum() == 4
    for row in range(0, len(data.query_labels), 37):
        neighbours = [Neighbour(int(i), data.reference_labels[i], float(s))
                      for s, i in zip(hood.similarities[row], hood.reference_index[row], strict=True)]
        ranking = fuse(data.classes, data.probabilities[row], neighbours, config)
        by_name = {s.name: s.score for s in ranking}
        assert {name: fused[row, i] for i, name in enumerate(space.names) if fused[row, i] > 0} == \
            pytest.approx(by_name)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_the_simulation_fusion_beats_both_parts(seed):
    result = evaluate(simulate(seed), FusionConfig())
    fusion = result.accuracy["fusion"]["top1"]
    assert fusion > result.accuracy["classifier"]["top1"] + 0.05
    assert fusion > result.accuracy["knn"]["top1"] + 0.05
    assert result.held_out and result.split["test"] >= 500
    assert result.calibration_block["ece_after"] < result.calibration_block["ece_before"]
    assert result.selective["realised_error"] <= 0.05 and result.selective["coverage"] > 0.25


@pytest.mark.slow
def test_evaluate_simulation_writes_report_plots_json_and_config(data_dir, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", "--simulate", "--out", str(out), "--write-config", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["kind"] == "simulation" and summary["held_out"]
    calibration, selective = summary["calibration"], summary["selective"]
    assert calibration["method"] == "confidence" and calibration["ece_after"] < calibration["ece_before"]
    assert {"target_error", "threshold", "coverage", "realised_error"} <= selective.keys()
    assert selective["target_error"] == 0.05 and selective["realised_error"] <= 0.05
    assert {"queries", "top1", "confident_share", "confident_error"} <= summary["new_species"].keys()
    assert summary["new_species"]["queries"] > 0 and summary["known_species"]["queries"] > 0
    assert summary["new_species"]["queries"] + summary["known_species"]["queries"] == summary["split"]["test"]
    assert {"uncertain", "rolled_up_share", "correct_share"} <= summary["rollup"].keys()
    # roll-ups are checked against the truth's taxon under the name the service gives the species (it read 0 when
    # the truths were looked up under the folder labels while the answers named species by scientific name)
    assert summary["rollup"]["rolled_up_share"] > 0 and summary["rollup"]["correct_share"] > 0.9
    prior, views = summary["prior"], summary["views"]
    # photo alone first, then with a place; look-alikes share half their range and season, so the place helps
    # where it can tell them apart
    assert list(summary)[list(summary).index("photo_alone") + 1] == "with_place"
    alone, placed = summary["photo_alone"], summary["with_place"]
    assert alone["queries"] == summary["split"]["test"] and 0.5 < placed["queries"] / alone["queries"] < 0.7
    assert placed["top1"] > placed["top1_photo_alone"] + 0.01
    for condition in (alone, placed):
        assert {"selective", "open_set", "ranks"} <= condition.keys() and condition["open_set"]["measured"]
        assert sum(condition["ranks"][rank]["answered"] for rank in ("species", "genus", "family", "order", "none")) \
            == condition["queries"]
    # the shift block: growth in one world, mislabels and moved places, each as fitted and re-certified
    shift = summary["shift"]
    assert [step["references_per_species"] for step in shift["growth"]] == [[2, 3], [5, 7], [20, 30], [5, 20]]
    for step in [*shift["growth"], shift["mislabels"]]:
        assert step["as_fitted"]["state"] in ("current", "stale") and step["recertified"]["state"] == "current"
    assert {"as_fitted", "moved"} <= shift["place_overlap"].keys()
    assert prior["uninformative_change_points"] <= 1.0  # seed 0; an even spread of records changes ~nothing
    assert views["views"] == 3 and views["top1_pooled"] > views["top1_one_photo"]
    assert [row["method"] for row in summary["ablation"]] == [
        "classifier", "kNN", "fusion", "+ temperature scaling", "+ calibration (confidence)", "+ roll-up"]
    assert {p.name for p in out.iterdir()} == {"report.md", "metrics.json", "queries.csv", "coverage_risk.png",
                                               "reliability.png", "sweep.png"}
    report = (out / "report.md").read_text()
    assert "**Data: simulation.**" in report and "## Ablation" in report and "| + roll-up |" in report
    assert report.index("## The photo alone, and with a place") < report.index("## Ablation")
    assert "## Shift" in report and "| references 5 -> 20 a species |" in report
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == summary["accuracy"]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    settings = load_settings()
    chosen = summary["config"]
    assert (settings.fusion.weight_knn, settings.fusion.k, settings.fusion.temperature,
            settings.fusion.confident_score) == (chosen["weight_knn"], chosen["k"], chosen["temperature"],
                                                 chosen["confident_score"])
    assert settings.calibration.method == "confidence" and len(settings.calibration.coefficients) == 8


def test_write_config_refuses_what_it_could_not_check(data_dir, tmp_path, monkeypatch):
    """Two queries cannot be split: nothing is written rather than settings tuned on what reports them."""
    monkeypatch.setattr("identify.simulation.simulate", lambda seed, references_per_species, overlap: hand_case())
    result = CliRunner().invoke(main, ["evaluate", "--simulate", "--no-shift", "--write-config", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "error: too_few_queries:" in result.stderr
    assert not (data_dir / "identify.toml").exists()
    assert "too few to hold any out" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.slow
def test_evaluate_the_real_demo_model_on_real_bird_photos(data_dir, tmp_path):
    """The demo's 35 bird queries against its 90 references, through `identify evaluate`."""
    from identify.demo import write_demo_photos
    from identify.demo_model import convert_demo_model

    write_demo_photos(tmp_path / "demo")
    model = convert_demo_model(tmp_path / "lite0.pt")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", "--model", str(model), "--references", str(tmp_path / "demo" / "gallery"),
                                       "--queries", str(tmp_path / "demo" / "queries.csv"), "--out", str(out), "--json",
                                       "--workers", "0"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["kind"] == "labelled photos" and summary["queries"] == 35
    assert summary["accuracy"]["fusion"]["top1"] >= 0.5  # measured 0.60 on its test split
    assert "**Data: labelled photos.**" in (out / "report.md").read_text()


def test_evaluate_needs_photos_or_the_simulation(data_dir):
    result = CliRunner().invoke(main, ["evaluate"])
    assert result.exit_code == 1 and "error: bad_arguments:" in result.stderr


def _queries_csv(path) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    import csv
    from pathlib import Path

    return {Path(row["path"]).name: row for row in csv.DictReader(path.open())}


@pytest.mark.slow
def test_evaluate_measures_what_the_stored_settings_serve_on_the_simulation(data_dir, tmp_path):
    """Every test query of queries.csv is answered again through identify.scoring.answer (what Identifier.explain
    serves) with the settings --write-config stored, read back as a server reads them: same top species, score
    and decision. (Before, evaluate composed its own twin of the pipeline.)"""
    from collections import Counter

    from identify.measurement import _neighbours, in_label_space, neighbourhood, served_prior
    from identify.scoring import SpeciesNames, answer

    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", "--simulate", "--no-shift", "--seed", "3", "--out", str(out), "--write-config"])
    assert result.exit_code == 0, result.output
    stored = load_settings()
    data, _ = in_label_space(simulate(3))
    hood = neighbourhood(data, stored.fusion.k)
    names = SpeciesNames(data.classes, data.taxa)
    prior, counts = served_prior(data), dict(Counter(data.reference_labels))
    assert prior is not None and data.query_places is not None
    rows = _queries_csv(out / "queries.csv")
    assert len(rows) > 100
    for path, row in rows.items():
        query = int(path.split()[-1])
        # as a server answers an upload with a place and a date, its prior from the records, its reference counts
        served = answer(data.probabilities[query], _neighbours(data, hood, query, stored.fusion.k), names,
                        stored.fusion, stored.calibration, prior, data.query_places[query],
                        reference_counts=counts)
        assert (served.top.name, str(served.decision.decision)) == (row["top_species"], row["decision"]), path
        assert abs(served.top.score - float(row["score"])) < 1e-6 and row["truth"] == data.query_labels[query]


@pytest.mark.slow
def test_evaluate_measures_what_predict_serves_on_the_demo_photos(tmp_path, monkeypatch):
    """The demo's real model and real photos: `identify evaluate --write-config`, then `identify predict` over an
    index of the same references answers every test query with evaluate's top species, score and decision. The
    classifier's top-1 is measured in the service's label space (its class `cock` names Gallus gallus, as a
    query folder does): it was 0.000 when evaluate compared raw labels."""
    from identify.demo import write_demo_photos
    from identify.demo_model import convert_demo_model

    root = tmp_path / "demo"
    write_demo_photos(root)  # with taxonomy.csv: the data dir's mapping, as `make demo` has it
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(root))
    monkeypatch.delenv("IDENTIFY_DATABASE_URL", raising=False)
    model = convert_demo_model(tmp_path / "lite0.pt")
    out = tmp_path / "report"
    evaluated = CliRunner().invoke(main, ["evaluate", "--model", str(model), "--references", str(root / "gallery"),
                                          "--queries", str(root / "queries.csv"), "--out", str(out), "--json",
                                          "--workers", "0", "--write-config"])
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert summary["accuracy"]["classifier"]["top1"] > 0
    built = CliRunner().invoke(main, ["build-index", "--model", str(model), "--images", str(root / "gallery"),
                                      "--name", "demo", "--workers", "0"])
    assert built.exit_code == 0, built.output
    predicted = CliRunner().invoke(main, ["predict", "--model", str(model), "--index", "demo", "--json",
                                          "--ignore-location", str(root / "queries")])
    answers = {json.loads(line)["photo"].rsplit("/", 1)[-1]: json.loads(line)
               for line in predicted.stdout.splitlines() if line.startswith("{")}
    rows = _queries_csv(out / "queries.csv")
    assert rows and set(rows) <= set(answers)
    for name, row in rows.items():
        served = answers[name]
        assert (served["species"][0]["name"], served["decision"]) == (row["top_species"], row["decision"]), name
        assert abs(served["species"][0]["score"] - float(row["score"])) < 1e-4, name


@pytest.mark.slow
def test_evaluate_check_measures_the_stored_threshold_without_refitting(data_dir, tmp_path):
    """--write-config on seed 0, then --check on seed 7: seed 0's threshold is the one measured, with its error
    bound, per group; nothing is written. (Before, evaluate on seed 7 refitted and reported its own 0.905.)"""
    assert CliRunner().invoke(main, ["evaluate", "--simulate", "--no-shift", "--seed", "0", "--write-config",
                                     "--out", str(tmp_path / "fit")]).exit_code == 0
    written = load_settings().fusion.confident_score
    before = (data_dir / "identify.toml").read_text()
    checked = CliRunner().invoke(main, ["evaluate", "--simulate", "--seed", "7", "--check", "--json",
                                        "--out", str(tmp_path / "check")])
    assert checked.exit_code in (0, 3), checked.output
    report = json.loads(checked.stdout.strip().splitlines()[-1])
    assert report["config"]["confident_score"] == written and (data_dir / "identify.toml").read_text() == before
    assert report["queries"] == 2000 and 0 < report["coverage"] < 1
    assert report["realised_error"] <= report["upper_bound"] <= 1
    assert set(report["groups"]) == {"known", "new"}
    assert (checked.exit_code == 3) == (report["upper_bound"] > report["config"]["target_error"])
    assert len(_queries_csv(tmp_path / "check" / "queries.csv")) == 2000
    both = CliRunner().invoke(main, ["evaluate", "--simulate", "--check", "--write-config"])
    assert both.exit_code == 1 and "bad_arguments" in both.stderr


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 13])
def test_the_goals_of_confidence_on_the_photo_alone(seed, data_dir):
    """Issue 36's goals through `identify evaluate --simulate --json`, on the photo alone and with the default
    place overlap: error among confident at most 5 % in every group with 20 or more confident answers and 10 % in
    every species with 10 or more; the open set at most 5 % (confident at species, and wrong at a higher rank);
    at most 5 % wrong at the rank answered, overall and at each rank answered 20 times or more; after every
    growth step and after 5 % mislabels, at most 5 % wrong or held back once re-certified, and never over 5 %
    while the state says current. (Missed, so not asserted: coverage at species, 40 % photo alone and 60 % with a
    place, and answered at some rank 75 % on seed 4; docs/how-to/evaluate.md gives by how much and why; the
    audit's goal is tests/test_audit.py's.)"""
    result = CliRunner().invoke(main, ["evaluate", "--simulate", "--seed", str(seed), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("photo_alone", "with_place"):
        condition = summary[name]
        groups = condition["selective"]["groups"]
        for group, figures in groups["by_answer"].items():
            assert figures["confident"] < 20 or figures["realised_error"] <= 0.05, (name, group, figures)
        for species, figures in groups["species"].items():
            assert figures["confident"] < 10 or figures["realised_error"] <= 0.10, (name, species, figures)
        assert condition["open_set"]["measured"] and condition["open_set"]["confident_share"] <= 0.05
        assert condition["ranks"]["any"]["error"] <= 0.05
        for rank in ("genus", "family", "order"):  # each rank answered under its own bound
            at = condition["ranks"][rank]
            assert at["answered"] < 20 or at["error"] <= 0.05, (name, rank, at)
        # a species without references answered at a higher rank is wrong there when its look-alike is of
        # another genus (every third pair): that must stay within the target too
        assert condition["open_set"]["at_rank"]["wrong_share"] <= 0.05, (name, condition["open_set"])
    shift = summary["shift"]
    for step in [*shift["growth"], shift["mislabels"]]:
        fitted, certified = step["as_fitted"], step["recertified"]
        assert fitted["state"] != "current" or fitted["error"] <= 0.05, step
        assert certified["confident"] < 20 or certified["error"] <= 0.05, step


def test_the_sweep_never_chooses_fewer_neighbours_than_an_answer_needs():
    """Issue 36: on the demo's photos (near-copies of their references) k = 1 had the best top-1, and with one
    voter no answer can have `min_support` distinct references: nothing at all was confident. The sweep keeps
    to k >= min_support."""
    data = simulate(0, species=10, references_per_species=10, queries_per_species=20)
    for support in (2, 20):
        chosen = evaluate(data, FusionConfig(min_support=support), seed=0, choose_rules=False).config
        assert chosen.k >= support, (support, chosen.k)
