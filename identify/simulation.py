"""A seeded simulation with known ground truth, for measuring fusion where no labelled bird photos can be had.

Species are clusters of unit vectors. Pairs of species lie close together (look-alikes: most pairs a genus,
every third pair two genera of one family, as look-alikes often are; three pairs a family), so the neighbours
confuse them; the classifier tells look-alikes apart
but is weak on a set of other species, where it often names a wrong one. Neither part alone is right
everywhere; their fusion can be (Jia et al. 2021).

Some species are new: not classes of the classifier, present only as references (a rarity a curator has
added). For their photos the classifier can only spread its probability over the classes it has, leaning
towards the look-alike when that one is a class.

It is made not to be easy, as the world is not (these defaults are fixed, not tuned to the service):
- **Individuals**: every photo, reference or query, is one of three of one bird (PHOTOS_PER_INDIVIDUAL); a
  bird varies about its species' centre and its photos about the bird, the two spreads adding up to SPREAD.
  Queries and references name their bird (`query_groups`, `reference_groups`), so splits hold birds out whole.
- **Look-alikes share ranges**: each species lives in four 1.5-degree boxes for 26 weeks of the year; a
  look-alike pair shares `overlap` of its boxes and of its weeks (OVERLAP, half), so where and when both live
  the place cannot tell them apart, and elsewhere it can.
- **Many uploads have no place**: NO_PLACE of the queried birds (40 %) carry none, and are answered on the
  photo alone."""

from __future__ import annotations

import numpy as np

from datetime import date, timedelta

from identify.measurement import EvaluationData
from identify.observation import Place
from identify.taxonomy import Taxon

LOOKALIKE = 0.7  # distance between the centres of a look-alike pair, before normalising
SPREAD = 0.35  # typical distance of a photo from its species' centre
# Of a photo from its bird (the bird's own from the centre makes up the rest): photos of one bird stay under the
# service's same-photo similarity (0.97) to each other, as other photos of it are, not copies of one.
PHOTO_SPREAD = 0.6 * SPREAD
PHOTOS_PER_INDIVIDUAL = 3
PAIRS_PER_FAMILY = 3
# Every this-many-th look-alike pair is two genera of one family (a warbler of one genus taken for one of
# another): a genus answer is not right merely because the look-alike was confused.
CROSS_GENUS_EVERY = 3
FAMILIES_PER_ORDER = 3  # (one order for every bird would make an order's answer right by construction)
# Region centres (lat, lon): the Levant, the Balkans, France, the Baltic. Each is four boxes of 1.5 degrees.
REGIONS = ((31.5, 35.0), (42.0, 22.0), (46.5, 2.5), (56.0, 14.0))
BOX = 1.5
BOXES_PER_SPECIES = 4
SEASON_WEEKS = 26  # of the 52: every species is present half of the year
OVERLAP = 0.5  # the share of its range boxes and season weeks a look-alike pair shares
NO_PLACE = 0.4  # the share of queried birds whose photos carry no place
RECORDS_PER_SPECIES = 150
VIEWS = 3  # photos of each queried bird, for measuring how a sighting's photos are pooled


def simulated_taxa(names: list[str]) -> dict[str, Taxon]:
    """A made-up taxonomy: species 2i and 2i+1 (a look-alike pair) share a genus, except every
    CROSS_GENUS_EVERY-th pair, whose two are in two genera; three pairs a family, three families an order."""
    taxa = {}
    for i, name in enumerate(names):
        pair = i // 2
        split = pair % CROSS_GENUS_EVERY == CROSS_GENUS_EVERY - 1
        genus = f"Simgenus{pair:02d}" + ("ab"[i % 2] if split else "")
        taxa[name] = Taxon(f"{genus} species{i:02d}", f"Simulated bird {i}", "species", genus,
                           f"Simfamily{pair // PAIRS_PER_FAMILY}idae",
                           f"Simorder{pair // (PAIRS_PER_FAMILY * FAMILIES_PER_ORDER)}iformes", "simulation", "0")
    return taxa


def _boxes(region: int) -> list[tuple[float, float]]:
    """The four box centres of a region."""
    lat, lon = REGIONS[region]
    half = BOX / 2
    return [(lat + dy, lon + dx) for dy in (-half, half) for dx in (-half, half)]


def ranges(species: int, overlap: float) -> tuple[list[list[tuple[float, float]]], list[list[int]]]:
    """Each species' boxes and weeks (see the module). The first of a pair lives in its region's four boxes and
    a 26-week season starting where its pair's number puts it; the second shares `overlap` of those boxes (the
    rest in another region) and its season starts (1 - overlap) of a season later."""
    shared = round(overlap * BOXES_PER_SPECIES)
    shift = round((1.0 - overlap) * SEASON_WEEKS)
    boxes, weeks = [], []
    for i in range(species):
        pair, second = divmod(i, 2)
        home, away = pair % len(REGIONS), (pair + 1) % len(REGIONS)
        boxes.append(_boxes(home) if not second else _boxes(home)[:shared] + _boxes(away)[shared:])
        start = (13 * pair + (shift if second else 0)) % 52
        weeks.append([(start + w) % 52 + 1 for w in range(SEASON_WEEKS)])
    return boxes, weeks


def _sighted(rng: np.random.Generator, boxes: list[tuple[float, float]], weeks: list[int]) -> tuple[float, float, date]:
    """A place and date within a range: a box, a point in it, a week of the season."""
    lat, lon = boxes[int(rng.integers(0, len(boxes)))]
    half = BOX / 2
    week = weeks[int(rng.integers(0, len(weeks)))]
    when = date.fromisocalendar(2026, week, 3) + timedelta(days=int(rng.integers(0, 3)))
    return lat + float(rng.uniform(-half, half)), lon + float(rng.uniform(-half, half)), when


def _geography(rng: np.random.Generator, taxa: dict[str, Taxon], names: list[str], individual_labels: np.ndarray,
               overlap: float):
    """A place and date for each queried bird in its species' range (none for NO_PLACE of them); recorded
    occurrences drawn the same way, and an uninformative set spread evenly over every box and week."""
    boxes, weeks = ranges(len(names), overlap)
    everywhere = [box for region in range(len(REGIONS)) for box in _boxes(region)]
    places: list[Place | None] = []
    for label in individual_labels:
        lat, lon, when = _sighted(rng, boxes[int(label)], weeks[int(label)])
        places.append(Place(lat, lon, when) if rng.random() >= NO_PLACE else None)
    records, uninformative = [], []
    for i, name in enumerate(names):
        for _ in range(RECORDS_PER_SPECIES):
            records.append((taxa[name].scientific_name, *_sighted(rng, boxes[i], weeks[i])))
            uninformative.append((taxa[name].scientific_name, *_sighted(rng, everywhere, list(range(1, 53)))))
    return places, records, uninformative


def _individuals(count: int) -> np.ndarray:
    """The bird each of `count` photos of one species shows: three photos a bird (the last may have fewer)."""
    return np.arange(count) // PHOTOS_PER_INDIVIDUAL


def simulate(seed: int = 0, species: int = 20, references_per_species: int = 20, queries_per_species: int = 100,
             dim: int = 64, weak_species: int = 6, new_species: int = 4, overlap: float = OVERLAP) -> EvaluationData:
    """The simulated world of `seed` (see the module), its references and its labelled queries."""
    rng = np.random.default_rng(seed)
    names = [f"Species_{i:02d}" for i in range(species)]
    centres = rng.normal(size=(species, dim))
    centres[1::2] = centres[0::2] + LOOKALIKE * rng.normal(size=(species // 2, dim)) / np.sqrt(dim)  # pairs
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bird_spread = np.sqrt(SPREAD ** 2 - PHOTO_SPREAD ** 2) / np.sqrt(dim)

    def sample(per: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Photos of `per` a species, three of each bird: the points, labels, bird of each photo, and the birds."""
        birds_per = int(_individuals(per)[-1]) + 1
        bird_labels = np.repeat(np.arange(species), birds_per)
        birds = centres[bird_labels] + rng.normal(scale=bird_spread, size=(len(bird_labels), dim))
        bird_of = (np.arange(species)[:, None] * birds_per + _individuals(per)[None, :]).ravel()
        points = birds[bird_of] + rng.normal(scale=PHOTO_SPREAD / np.sqrt(dim), size=(len(bird_of), dim))
        return points, bird_labels[bird_of], bird_of, birds

    references, reference_labels, reference_birds, _ = sample(references_per_species)
    queries, query_labels, query_birds, birds = sample(queries_per_species)
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
    # More photos of each queried photo's bird, for pooling: the same bird seen again with fresh noise.
    view_embeddings = birds[query_birds][:, None, :] + rng.normal(
        scale=PHOTO_SPREAD / np.sqrt(dim), size=(len(queries), VIEWS - 1, dim))
    view_probabilities = np.stack([classifier(query_labels) for _ in range(VIEWS - 1)], axis=1)
    taxa = simulated_taxa(names)
    bird_places, records, uninformative = _geography(rng, taxa, names, np.repeat(np.arange(species), len(birds) // species),
                                                     overlap)
    reference_probabilities = classifier(reference_labels)
    return EvaluationData(
        classes=[names[i] for i in known], probabilities=probabilities, query_embeddings=queries,
        query_labels=[names[i] for i in query_labels], reference_embeddings=references,
        reference_labels=[names[i] for i in reference_labels], kind="simulation",
        description=(f"seeded simulation (seed {seed}): {species} species in look-alike pairs (a genus each, every third two genera of one family), "
                     f"{dim}-d clusters, {references_per_species} references and {queries_per_species} queries per "
                     f"species, {PHOTOS_PER_INDIVIDUAL} photos of each bird; the classifier is weak on {len(weak)} "
                     f"species and knows {len(known)}: {new_species} are new, present only as references; each "
                     f"species lives in {BOXES_PER_SPECIES} boxes of {BOX:g} degrees for {SEASON_WEEKS} weeks a "
                     f"year, look-alikes sharing {overlap:.0%} of both, with {RECORDS_PER_SPECIES} occurrence records "
                     f"each; {NO_PLACE:.0%} of the queried birds have no place; {VIEWS} photos of each queried bird"),
        taxa=taxa,
        query_places=[bird_places[bird] for bird in query_birds], occurrences=records,
        uninformative_occurrences=uninformative,
        view_probabilities=view_probabilities, view_embeddings=view_embeddings,
        query_groups=[f"bird {bird}" for bird in query_birds],
        reference_groups=[f"bird {bird}" for bird in reference_birds],
        reference_probabilities=reference_probabilities,
    )
