"""A seeded simulation with known ground truth, for measuring fusion where no labelled bird photos can be had.

Species are clusters of unit vectors. Pairs of species lie close together (look-alikes), so the neighbours
confuse them; the classifier tells look-alikes apart but is weak on a set of other species, where it often
names a wrong one. Neither part alone is right everywhere; their fusion can be (Jia et al. 2021)."""

from __future__ import annotations

import numpy as np

from identify.evaluation import EvaluationData

LOOKALIKE = 0.7  # distance between the centres of a look-alike pair, before normalising
SPREAD = 0.35  # typical distance of a photo from its species' centre


def simulate(seed: int = 0, species: int = 16, references_per_species: int = 20, queries_per_species: int = 25,
             dim: int = 64, weak_species: int = 6) -> EvaluationData:
    rng = np.random.default_rng(seed)
    names = [f"Species_{i:02d}" for i in range(species)]
    centres = rng.normal(size=(species, dim))
    centres[1::2] = centres[0::2] + LOOKALIKE * rng.normal(size=(species // 2, dim)) / np.sqrt(dim)  # pairs
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def sample(per: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(species), per)
        points = centres[labels] + rng.normal(scale=SPREAD / np.sqrt(dim), size=(len(labels), dim))
        return points, labels

    references, reference_labels = sample(references_per_species)
    queries, query_labels = sample(queries_per_species)
    weak = rng.choice(species, size=weak_species, replace=False)
    logits = rng.normal(scale=1.0, size=(len(query_labels), species))
    logits[np.arange(len(query_labels)), query_labels] += 3.0
    for row, label in enumerate(query_labels):
        if label in weak and rng.random() < 0.6:  # the classifier's blind spot: a confident wrong answer
            logits[row, label] -= 3.0
            logits[row, (label + 3) % species] += 3.5
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return EvaluationData(
        classes=names, probabilities=probabilities, query_embeddings=queries,
        query_labels=[names[i] for i in query_labels], reference_embeddings=references,
        reference_labels=[names[i] for i in reference_labels], kind="simulation",
        description=(f"seeded simulation (seed {seed}): {species} species in look-alike pairs, {dim}-d clusters, "
                     f"{references_per_species} references and {queries_per_species} queries per species; the "
                     f"classifier is weak on {weak_species} species"),
    )
