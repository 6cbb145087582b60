"""Re-certification from the labelled data a deployment holds (identify.certify), and the report's shift block
(identify.shift): the bound follows the references."""

from __future__ import annotations

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
