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


# ---- the rank that holds (issue 36) ----------------------------------------------------------------------------
SPARROW_TAXA = {"House": _taxon("Passer domesticus", "Passer", "Passeridae"),
                "Spanish": _taxon("Passer hispaniolensis", "Passer", "Passeridae"),
                "Robin": Taxon("Erithacus rubecula", None, "species", "Erithacus", "Muscicapidae", "Passeriformes",
                               "test", "0")}


def _two_sparrows(calibration: Calibration, **kwargs):
    """Two sparrows the evidence cannot tell apart: neither species clears 0.8, their genus does."""
    from identify.scoring import SpeciesNames, answer

    names = SpeciesNames(["House", "Spanish", "Robin"], SPARROW_TAXA)
    neighbours = votes(("House", 0.9), ("Spanish", 0.9), ("House", 0.88), ("Spanish", 0.88))
    config = FusionConfig(weight_knn=0.5, k=4, temperature=1.0, confident_score=0.8, min_margin=0.0)
    return answer(np.array([0.48, 0.48, 0.04]), neighbours, names, config, calibration,
                  group_name=lambda rank, name: {"Passer": "sparrow"}.get(name), **kwargs)


def test_an_answer_is_confident_at_the_most_specific_rank_whose_own_threshold_holds():
    certified = Calibration(thresholds=(("rank:genus", 0.9), ("rank:family", 0.3)), target_error=0.05)
    sparrows = _two_sparrows(certified)
    assert sparrows.decision.decision == CONFIDENT and sparrows.rank == "genus"
    assert "low_score" in sparrows.decision.reasons  # why not at species, kept for the page
    rolled = sparrows.rollup
    assert rolled is not None and rolled.certified and (rolled.scientific_name, rolled.family) == ("Passer", "Passeridae")
    assert rolled.text == "A sparrow (genus Passer)"
    assert set(rolled.members) == {"Passer domesticus", "Passer hispaniolensis"}  # species keys, one per species
    # the genus not certified (too few answers to bound it): the family, whose own threshold holds
    family = _two_sparrows(Calibration(thresholds=(("rank:genus", NOTHING_CONFIDENT), ("rank:family", 0.3)),
                                       target_error=0.05))
    assert family.rank == "family" and family.rollup is not None and family.rollup.scientific_name == "Passeridae"
    # a genus threshold the sum does not reach: not the genus
    assert _two_sparrows(Calibration(thresholds=(("rank:genus", 0.999),), target_error=0.05)).rank is None


def test_no_rank_is_confident_where_its_bound_is_not_known_to_hold():
    thresholds = (("rank:genus", 0.9),)
    # uncalibrated: no rank certified; the roll-up is a suggestion, and the answer waits for a curator
    plain = _two_sparrows(Calibration(thresholds=thresholds))
    assert plain.decision.decision == NEEDS_REVIEW and plain.rank is None
    assert plain.rollup is not None and not plain.rollup.certified and plain.rollup.text.startswith("Probably")
    certified = Calibration(thresholds=thresholds, target_error=0.05)
    assert _two_sparrows(certified, stale=True).rank is None  # the references moved since
    # a member's references changed since the thresholds were certified: not certified against them yet
    assert _two_sparrows(certified, held_back=frozenset({"Passer hispaniolensis"})).rank is None
    # the live audit stopped the species' group: nothing in it is confident, at any rank
    assert _two_sparrows(certified, over_target=frozenset({"known"})).rank is None


def test_a_rank_threshold_is_not_tested_below_where_the_left_out_species_go_wrong():
    """Rank thresholds on the calibration answers alone would certify the genus at the bottom of the grid; the
    left-out species' photos answered wrong at genus (their look-alike is of another genus) raise it."""
    from types import SimpleNamespace

    from identify.risk import RankEvidence, rank_controls

    rng = np.random.default_rng(0)
    config = FusionConfig(target_error=0.05, risk_confidence=0.9)

    def answers(scores: np.ndarray, right: np.ndarray) -> SimpleNamespace:
        n = len(scores)
        return SimpleNamespace(decisions=[NEEDS_REVIEW] * n, answers=[SimpleNamespace(groups=("known", "all"))] * n,
                               rank_scores=np.stack([scores, np.ones(n), np.ones(n)], axis=1),
                               rank_right=np.stack([right, np.ones(n, dtype=bool), np.ones(n, dtype=bool)], axis=1),
                               rows=np.arange(n))

    calibration_answers = answers(rng.uniform(0.5, 1.0, 400), np.ones(400, dtype=bool))
    alone = rank_controls(calibration_answers, np.zeros(400, dtype=bool), config)
    assert alone["rank:genus"].threshold == 0.3  # every calibration answer right at genus: the grid's bottom
    # 300 left-out photos: those scored under 0.9 at genus are wrong there
    scores = np.linspace(0.5, 1.0, 300)
    left = answers(scores, scores >= 0.9)
    raised = rank_controls(calibration_answers, np.zeros(400, dtype=bool), config,
                           open_set=[RankEvidence.of(left)])  # type: ignore[arg-type]
    wrong_under = int(((scores >= raised["rank:genus"].threshold) & (scores < 0.9)).sum())
    assert raised["rank:genus"].threshold > 0.8 and clopper_pearson_upper(wrong_under, 300, 0.9) <= 0.05
    # what the genus leaves reaches the family, whose own threshold takes it
    assert raised["rank:family"].threshold < NOTHING_CONFIDENT
