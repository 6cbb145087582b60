"""Decisions a curator can trust, by hand: the classifier's silence about a species outside its classes, the
calibration of the fused scores, the threshold with a stated risk, and the roll-up up the taxonomy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from identify.calibration import (
    NOTHING_CONFIDENT,
    Calibration,
    choose_threshold,
    clopper_pearson_upper,
    fit_confidence,
    fit_isotonic,
    fit_temperature,
)
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NEEDS_REVIEW, Neighbour, RankedSpecies, calibrated, decide, fuse
from identify.rollup import roll_up
from identify.taxonomy import Taxon


def votes(*pairs: tuple[str, float]) -> list[Neighbour]:
    return [Neighbour(i, species, similarity) for i, (species, similarity) in enumerate(pairs)]


def test_the_classifiers_silence_is_no_evidence_against_a_new_species():
    """Classes a, b; the neighbours vote for `new` only. The classifier's unknown share u = 1 - 0.6 goes to it."""
    config = FusionConfig(weight_knn=0.5, k=5, temperature=1.0)
    ranking = {s.name: s for s in fuse(["a", "b"], np.array([0.6, 0.4]), votes(("new", 0.9), ("new", 0.9)), config)}
    u = 0.4
    assert ranking["new"].score == pytest.approx(0.5 * 1.0 + 0.5 * u)
    assert ranking["a"].score == pytest.approx(0.5 * (1 - u) * 0.6)
    assert ranking["new"].classifier == 0.0 and not ranking["new"].in_classes
    assert sum(s.score for s in ranking.values()) == pytest.approx(1.0)
    decision = decide(sorted(ranking.values(), key=lambda s: -s.score), votes(("new", 0.9)), config)
    assert decision.decision == CONFIDENT  # "disagreement" is only where the classifier could have named it


def test_jia_et_al_is_the_special_case_when_every_species_is_a_class():
    config = FusionConfig(weight_knn=0.3, k=5, temperature=1.0)
    ranking = {s.name: s.score for s in fuse(["a", "b"], np.array([0.6, 0.4]), votes(("b", 0.9), ("a", 0.9)), config)}
    assert ranking == pytest.approx({"a": 0.3 * 0.5 + 0.7 * 0.6, "b": 0.3 * 0.5 + 0.7 * 0.4})


def test_new_species_take_the_unknown_share_as_far_as_the_neighbours_back_them():
    config = FusionConfig(weight_knn=0.5, k=5, temperature=1.0)
    ranking = {s.name: s.score for s in fuse(["a", "b"], np.array([0.8, 0.2]),
                                             votes(("x", 0.5), ("y", 0.5), ("y", 0.5), ("a", 0.5)), config)}
    u = 1 - 0.8
    backed = u * 0.75  # the neighbours back x and y with 0.25 + 0.5 of their vote
    assert ranking["x"] == pytest.approx(0.5 * 0.25 + 0.5 * u * 0.25)
    assert ranking["y"] == pytest.approx(0.5 * 0.5 + 0.5 * u * 0.5)
    assert ranking["a"] == pytest.approx(0.5 * 0.25 + 0.5 * (1 - backed) * 0.8)
    assert sum(ranking.values()) == pytest.approx(1.0)


def test_a_stray_far_neighbour_takes_almost_nothing():
    """A cat photo whose 20th neighbour is an astronaut reference (vote 1e-5) must not hand the astronaut the
    classifier's whole doubt (it took 0.29 of the fused score before)."""
    config = FusionConfig(weight_knn=0.5, k=20, temperature=0.07)
    ranking = {s.name: s.score for s in fuse(["Egyptian cat", "tabby"], np.array([0.42, 0.58]),
                                             votes(("Egyptian cat", 0.92), ("astronaut", 0.15)), config)}
    assert ranking["astronaut"] < 1e-3


def test_temperature_calibration_by_hand_and_fitted():
    assert Calibration("temperature", 0.5).apply(np.array([0.6, 0.4, 0.0])) == pytest.approx([0.36 / 0.52, 0.16 / 0.52, 0])
    # Fused scores that are too timid: the right label always holds 0.6 of two. NLL is least when the top
    # score becomes 1 - small: the fitted temperature sharpens (T < 1).
    scores = np.tile([0.6, 0.4], (50, 1))
    truth = np.zeros(50, dtype=int)
    truth[:5] = 1  # right 90% of the time: calibrated top should be about 0.9
    fitted = fit_temperature(scores, truth)
    assert fitted.temperature < 1.0
    assert fitted.apply(scores[0])[0] == pytest.approx(0.9, abs=0.01)


def test_isotonic_and_confidence_models_learn_the_rate_of_right_answers():
    rng = np.random.default_rng(0)
    top = rng.uniform(0.2, 1.0, 2000)
    right = rng.random(2000) < top ** 2  # a score that promises more than it keeps
    iso = fit_isotonic(top, right)
    assert iso.apply(np.array([0.5]))[0] == pytest.approx(0.25, abs=0.06)
    features = np.column_stack([top, rng.normal(size=2000)])  # the second feature is noise
    model = fit_confidence(features, right)
    assert abs(model.coefficients[0]) > 5 * abs(model.coefficients[1])
    assert model.confidence(np.array([[0.95, 0.0]]))[0] > model.confidence(np.array([[0.4, 0.0]]))[0]


def test_a_confidence_model_reorders_nothing_but_the_top_and_shares_the_rest():
    ranking = [RankedSpecies("a", 0.5, 0.5, 0.5, fused=0.5), RankedSpecies("b", 0.3, 0.3, 0.3, fused=0.3),
               RankedSpecies("c", 0.2, 0.2, 0.2, fused=0.2)]
    model = Calibration("confidence", coefficients=(0.0,) * 8, intercept=math.log(0.8 / 0.2))  # always 0.8
    out = {s.name: s for s in calibrated(ranking, model, votes(("a", 0.9)))}
    assert out["a"].score == pytest.approx(0.8) and out["a"].fused == 0.5
    assert out["b"].score == pytest.approx(0.2 * 0.3 / 0.5) and out["c"].score == pytest.approx(0.2 * 0.2 / 0.5)


def test_clopper_pearson_by_hand():
    # With no error in n trials the one-sided bound solves (1 - p)^n = 1 - confidence.
    assert clopper_pearson_upper(0, 45, 0.9) == pytest.approx(1 - 0.1 ** (1 / 45))
    assert clopper_pearson_upper(0, 0, 0.9) == 1.0 and clopper_pearson_upper(3, 3, 0.9) == 1.0
    assert clopper_pearson_upper(5, 200, 0.9) > 5 / 200


def test_the_threshold_keeps_the_bound_and_stops_at_the_first_failure():
    """400 answers scored 0.995 down to 0.6; the lowest 100 are all wrong, the rest all right."""
    scores = np.linspace(0.995, 0.6, 400)
    right = np.arange(400) < 300
    control = choose_threshold(scores, right, np.ones(400, dtype=bool), target_error=0.05, confidence=0.9)
    answered = scores >= control.threshold
    assert control.upper_bound <= 0.05 and answered.sum() == control.answered
    assert (answered & ~right).sum() == control.errors <= 0.05 * control.answered
    assert 300 <= control.answered < 320  # it goes just past the last right answer, no further
    none = choose_threshold(scores, np.zeros(400, dtype=bool), np.ones(400, dtype=bool), 0.05)
    assert none.threshold == NOTHING_CONFIDENT and none.answered == 0
    ineligible = choose_threshold(scores, right, np.zeros(400, dtype=bool), 0.05)
    assert ineligible.threshold == NOTHING_CONFIDENT


def _taxon(species: str, genus: str, family: str) -> Taxon:
    return Taxon(species, None, "species", genus, family, "Passeriformes", "test", "0")


def test_roll_up_to_the_lowest_taxon_that_clears_the_bar():
    sparrows = [RankedSpecies("House", 0.45, 0, 0, _taxon("Passer domesticus", "Passer", "Passeridae")),
                RankedSpecies("Spanish", 0.40, 0, 0, _taxon("Passer hispaniolensis", "Passer", "Passeridae")),
                RankedSpecies("Snowfinch", 0.10, 0, 0, _taxon("Montifringilla nivalis", "Montifringilla", "Passeridae")),
                RankedSpecies("tabby", 0.05, 0, 0, None)]
    genus = roll_up(sparrows, 0.8, lambda rank, name: {"Passer": "sparrow"}.get(name))
    assert genus is not None and (genus.rank, genus.scientific_name, genus.common_name) == ("genus", "Passer", "sparrow")
    assert genus.score == pytest.approx(0.85) and genus.members == ("House", "Spanish")
    assert genus.text == "Probably a sparrow (genus Passer)"
    family = roll_up(sparrows, 0.9)
    assert family is not None and (family.rank, family.scientific_name) == ("family", "Passeridae")
    assert family.score == pytest.approx(0.95) and family.text == "Probably a bird of the family Passeridae"
    assert roll_up(sparrows, 0.99) is None  # the whole order holds 0.95; the tabby has no taxon
    assert roll_up(sparrows[3:], 0.01) is None


def test_a_reason_for_review_is_the_score_not_the_disagreement():
    config = FusionConfig(confident_score=0.7, min_margin=0.1)
    sure = [RankedSpecies("a", 0.8, 0.9, 0.1, fused=0.6), RankedSpecies("b", 0.2, 0.1, 0.9, fused=0.4)]
    assert decide(sure, votes(("b", 0.9)), config).decision == CONFIDENT
    unsure = [RankedSpecies("a", 0.6, 0.9, 0.1), RankedSpecies("b", 0.4, 0.1, 0.9)]
    decision = decide(unsure, votes(("b", 0.9)), config)
    assert decision.decision == NEEDS_REVIEW and decision.reasons == ("low_score", "disagreement")


def test_when_no_threshold_keeps_the_risk_not_even_a_certain_score_is_confident():
    """The 'nothing passed' threshold must lie above every score: a kNN vote of exactly 1.0 passed 1.0 before."""
    config = FusionConfig(confident_score=NOTHING_CONFIDENT, min_margin=0.0)
    certain = [RankedSpecies("a", 1.0, 1.0, 1.0)]
    assert decide(certain, votes(("a", 0.99)), config).decision == NEEDS_REVIEW
    scores, right = np.ones(50), np.ones(50, dtype=bool)
    assert choose_threshold(scores, right, right, 0.05).threshold == NOTHING_CONFIDENT  # 50 < MIN_ANSWERED
