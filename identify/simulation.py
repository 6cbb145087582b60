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

from datetime import date, timedelta

from identify.measurement import EvaluationData
from identify.observation import Place
from identify.taxonomy import Taxon

LOOKALIKE = 0.7  # distance between the centres of a look-alike pair, before normalising
SPREAD = 0.35  # typical distance of a photo from its species' centre
PAIRS_PER_FAMILY = 3
# Range centres (lat, lon): the Levant, the Balkans, France, the Baltic. Look-alikes live in different ones.
REGIONS = ((31.5, 35.0), (42.0, 22.0), (46.5, 2.5), (56.0, 14.0))
SUMMER = (14, 38)  # ISO weeks of the summer visitors; the others stay all year
RECORDS_PER_SPECIES = 150
VIEWS = 3  # photos of each queried bird, for measuring how a sighting's photos are pooled


def simulated_taxa(names: list[str]) -> dict[str, Taxon]:
    """A made-up taxonomy: species 2i and 2i+1 (a look-alike pair) share a genus, three pairs a family."""
    taxa = {}
    for i, name in enumerate(names):
        pair = i // 2
        genus = f"Simgenus{pair:02d}"
        taxa[name] = Taxon(f"{genus} species{i:02d}", f"Simulated bird {i}", "species", genus,
                           f"Simfamily{pair // PAIRS_PER_FAMILY}idae", "Simuliformes", "simulation", "0")
    return taxa


def _when(rng: np.random.Generator, summer: bool) -> date:
    first, last = SUMMER if summer else (1, 52)
    return date.fromisocalendar(2026, int(rng.integers(first, last + 1)), 3) + timedelta(days=int(rng.integers(0, 3)))


def _where(rng: np.random.Generator, region: int) -> tuple[float, float]:
    lat, lon = REGIONS[region]
    return lat + float(rng.uniform(-1.5, 1.5)), lon + float(rng.uniform(-1.5, 1.5))


def _geography(rng: np.random.Generator, taxa: dict[str, Taxon], names: list[str], query_labels: np.ndarray):
    """Each species a range (one region; the two of a look-alike pair in different ones) and a season (every
    other pair are summer visitors); each query a place and date in its species' range; recorded occurrences
    drawn the same way, and an uninformative set spread evenly over every region and week."""
    region = {i: (i // 2 + i % 2) % len(REGIONS) for i in range(len(names))}
    summer = {i: (i // 2) % 2 == 1 for i in range(len(names))}
    places = [Place(*_where(rng, region[int(label)]), _when(rng, summer[int(label)])) for label in query_labels]
    records, uninformative = [], []
    for i, name in enumerate(names):
        for _ in range(RECORDS_PER_SPECIES):
            records.append((taxa[name].scientific_name, *_where(rng, region[i]), _when(rng, summer[i])))
            uninformative.append((taxa[name].scientific_name, *_where(rng, int(rng.integers(0, len(REGIONS)))),
                                  _when(rng, False)))
    return places, records, uninformative


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
    fooled = np.array([label in weak and rng.random() < 0.6 for label in query_labels])

    def classifier(labels: np.ndarray) -> np.ndarray:
        logits = rng.normal(scale=1.0, size=(len(labels), species))
        for row, label in enumerate(labels):
            if label in new:  # no class to name: the look-alike draws some of the probability, if it is a class
                logits[row, label ^ 1] += 1.5
            elif fooled[row % len(fooled)]:  # the classifier's blind spot: a confident wrong answer
                logits[row, (label + 3) % species] += 3.5
            else:
                logits[row, label] += 3.0
        logits = logits[:, known]  # the classifier has no output for a new species
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    probabilities = classifier(query_labels)
    # More photos of each queried bird: the same bird (its point), seen again with fresh noise.
    view_embeddings = queries[:, None, :] + rng.normal(scale=0.5 * SPREAD / np.sqrt(dim), size=(len(queries), VIEWS - 1, dim))
    view_probabilities = np.stack([classifier(query_labels) for _ in range(VIEWS - 1)], axis=1)
    taxa = simulated_taxa(names)
    places, records, uninformative = _geography(rng, taxa, names, query_labels)
    # What the classifier says of each reference photo (the health check reads it), drawn last: every figure
    # above comes from the same draws as before it existed.
    reference_probabilities = classifier(reference_labels)
    return EvaluationData(
        classes=[names[i] for i in known], probabilities=probabilities, query_embeddings=queries,
        query_labels=[names[i] for i in query_labels], reference_embeddings=references,
        reference_labels=[names[i] for i in reference_labels], kind="simulation",
        description=(f"seeded simulation (seed {seed}): {species} species in look-alike pairs (each pair a genus), "
                     f"{dim}-d clusters, {references_per_species} references and {queries_per_species} queries per "
                     f"species; the classifier is weak on {len(weak)} species and knows {len(known)}: "
                     f"{new_species} are new, present only as references; each species lives in one of "
                     f"{len(REGIONS)} regions (look-alikes in different ones), half of them in summer only, with "
                     f"{RECORDS_PER_SPECIES} occurrence records each; {VIEWS} photos of each queried bird"),
        taxa=taxa,
        query_places=places, occurrences=records, uninformative_occurrences=uninformative,
        view_probabilities=view_probabilities, view_embeddings=view_embeddings,
        reference_probabilities=reference_probabilities,
    )
