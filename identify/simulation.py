"""A seeded simulation with known ground truth, for measuring fusion where no labelled bird photos can be had.

Species are clusters of unit vectors. Pairs of species lie close together (look-alikes, and congeners: each
pair is a genus, three pairs a family), so the neighbours confuse them; the classifier tells look-alikes apart
but is weak on a set of other species, where it often names a wrong one. Neither part alone is right
everywhere; their fusion can be (Jia et al. 2021).

Some species are new: not classes of the classifier, present only as references (a rarity a curator has
added). For their photos the classifier can only spread its probability over the classes it has, leaning
towards the look-alike when that one is a class."""

from __future__ import annotations

import numpy as np

from identify.evaluation import EvaluationData
from identify.taxonomy import Taxon

LOOKALIKE = 0.7  # distance between the centres of a look-alike pair, before normalising
SPREAD = 0.35  # typical distance of a photo from its species' centre
PAIRS_PER_FAMILY = 3


def simulated_taxa(names: list[str]) -> dict[str, Taxon]:
    """A made-up taxonomy: species 2i and 2i+1 (a look-alike pair) share a genus, three pairs a family."""
    taxa = {}
    for i, name in enumerate(names):
        pair = i // 2
        genus = f"Simgenus{pair:02d}"
        taxa[name] = Taxon(f"{genus} species{i:02d}", f"Simulated bird {i}", "species", genus,
                           f"Simfamily{pair // PAIRS_PER_FAMILY}idae", "Simuliformes", "simulation", "0")
    return taxa


def simulate(seed: int = 0, species: int = 20, references_per_species: int = 20, queries_per_species: int = 100,
             dim: int = 64, weak_species: int = 6, new_species: int = 4) -> EvaluationData:
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
    new = set(rng.choice(species, size=new_species, replace=False).tolist())
    known = [i for i in range(species) if i not in new]
    weak = set(rng.choice(known, size=min(weak_species, len(known)), replace=False).tolist())
    logits = rng.normal(scale=1.0, size=(len(query_labels), species))
    for row, label in enumerate(query_labels):
        partner = label ^ 1
        if label in new:  # no class to name: the look-alike draws some of the probability, if it is a class
            logits[row, partner] += 1.5
            continue
        logits[row, label] += 3.0
        if label in weak and rng.random() < 0.6:  # the classifier's blind spot: a confident wrong answer
            logits[row, label] -= 3.0
            logits[row, (label + 3) % species] += 3.5
    logits = logits[:, known]  # the classifier has no output for a new species
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return EvaluationData(
        classes=[names[i] for i in known], probabilities=probabilities, query_embeddings=queries,
        query_labels=[names[i] for i in query_labels], reference_embeddings=references,
        reference_labels=[names[i] for i in reference_labels], kind="simulation",
        description=(f"seeded simulation (seed {seed}): {species} species in look-alike pairs (each pair a genus), "
                     f"{dim}-d clusters, {references_per_species} references and {queries_per_species} queries per "
                     f"species; the classifier is weak on {len(weak)} species and knows {len(known)}: "
                     f"{new_species} are new, present only as references"),
        taxa=simulated_taxa(names),
    )
