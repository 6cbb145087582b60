"""Fusion and decision against hand-computed cases."""

import math

import numpy as np
import pytest

from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NEEDS_REVIEW, NO_MATCH, Neighbour, decide, fuse, knn_distribution


def neighbours(*pairs: tuple[str, float]) -> list[Neighbour]:
    return [Neighbour(i, species, sim) for i, (species, sim) in enumerate(pairs)]


def test_knn_distribution_is_softmax_of_similarity_over_temperature_summed_per_species():
    votes = knn_distribution(neighbours(("a", 0.9), ("b", 0.8), ("a", 0.1)), k=20, temperature=0.1)
    total = math.exp(9) + math.exp(8) + math.exp(1)
    assert votes["a"] == pytest.approx((math.exp(9) + math.exp(1)) / total)
    assert votes["b"] == pytest.approx(math.exp(8) / total)


def test_only_the_k_nearest_vote():
    votes = knn_distribution(neighbours(("a", 0.9), ("b", 0.8), ("b", 0.7)), k=1, temperature=1.0)
    assert votes == {"a": pytest.approx(1.0)}


def test_fused_score_is_lambda_mix_of_both_parts():
    config = FusionConfig(weight_knn=0.25, k=2, temperature=1.0)
    ranking = fuse(["a", "b"], np.array([0.2, 0.8]), neighbours(("a", 0.5), ("a", 0.4)), config)
    scores = {s.name: s for s in ranking}
    assert scores["a"].knn == pytest.approx(1.0)
    assert scores["a"].score == pytest.approx(0.25 * 1.0 + 0.75 * 0.2)
    assert scores["b"].score == pytest.approx(0.75 * 0.8)
    assert [s.name for s in ranking] == ["b", "a"]


def test_species_known_only_through_references_can_win():
    config = FusionConfig(weight_knn=0.6, k=3, temperature=0.07)
    ranking = fuse(["a", "b"], np.array([0.5, 0.5]), neighbours(("new", 0.9), ("new", 0.85), ("a", 0.2)), config)
    assert ranking[0].name == "new"
    assert ranking[0].classifier == 0.0 and ranking[0].knn > 0.99


def test_without_neighbours_the_classifier_decides_alone():
    ranking = fuse(["a", "b"], np.array([0.3, 0.7]), [], FusionConfig(weight_knn=0.9))
    assert [(s.name, s.score) for s in ranking] == [("b", pytest.approx(0.7)), ("a", pytest.approx(0.3))]


def test_confident_when_both_agree_strongly():
    config = FusionConfig()
    votes = neighbours(("a", 0.95), ("a", 0.9))
    ranking = fuse(["a", "b"], np.array([0.9, 0.1]), votes, config)
    decision = decide(ranking, votes, config)
    assert decision.decision == CONFIDENT and decision.reasons == ()
    assert decision.uncertainty == pytest.approx(1 - (ranking[0].score - ranking[1].score))


def test_disagreement_between_classifier_and_neighbours_needs_review():
    config = FusionConfig(weight_knn=0.5)
    votes = neighbours(("b", 0.95), ("b", 0.9))
    decision = decide(fuse(["a", "b"], np.array([0.9, 0.1]), votes, config), votes, config)
    assert decision.decision == NEEDS_REVIEW
    assert "disagreement" in decision.reasons


@pytest.mark.parametrize("probabilities, reason", [([0.45, 0.35, 0.2], "low_score"), ([0.52, 0.48, 0.0], "small_margin")])
def test_weak_or_close_answers_need_review(probabilities, reason):
    config = FusionConfig(weight_knn=0.0, confident_score=0.5, min_margin=0.15)
    ranking = fuse(["a", "b", "c"], np.array(probabilities), [], config)
    decision = decide(ranking, [], config)
    assert decision.decision == NEEDS_REVIEW and reason in decision.reasons


def test_far_from_every_reference_and_unsure_classifier_is_no_match():
    config = FusionConfig(no_match_similarity=0.5, no_match_classifier=0.3)
    votes = neighbours(("a", 0.2), ("b", 0.1))
    ranking = fuse(["a", "b", "c", "d", "e"], np.full(5, 0.2), votes, config)
    assert decide(ranking, votes, config).decision == NO_MATCH


def test_far_from_references_but_sure_classifier_is_not_no_match():
    config = FusionConfig(no_match_similarity=0.5, no_match_classifier=0.3)
    votes = neighbours(("a", 0.2))
    ranking = fuse(["a", "b"], np.array([0.95, 0.05]), votes, config)
    assert decide(ranking, votes, config).decision != NO_MATCH
