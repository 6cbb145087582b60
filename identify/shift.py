"""The `shift` block of `evaluate --simulate`: what "confident" is worth when things move after it was fitted,
measured in one simulated world (its queries fixed, its gallery changed), on the photo alone:

- **gallery growth** (2 -> 3, 5 -> 7, 20 -> 30 and 5 -> 20 references a species): fitted by `evaluate` on the
  smaller gallery, then served on the larger one: the error among confident answers with the thresholds as
  fitted and the state a calibration compared by its counts alone would show (`current` or `stale`), and the
  same after **re-certification** (identify.certify) from the larger gallery's references and the reviewed
  sightings (the fitted evaluation's calibration queries stand in for what curators have reviewed);
- **5 % look-alike mislabels**: a twentieth of the reference birds relabelled as their look-alike after the
  fit: the same two figures, re-certified from the mislabelled references;
- **place overlap**: a tenth of the with-place test queries moved into their look-alike's range, answered with
  the thresholds as fitted.

Every figure is on the test split of the fitted evaluation (the queries the thresholds were not chosen on)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from identify.certify import certify
from identify.config import FusionConfig
from identify.evaluation import evaluate
from identify.fusion import CONFIDENT
from identify.calibration import FittedOn
from identify.measurement import (EvaluationData, _error_among, _share, decide_rows, in_label_space, neighbourhood,
                                  served_prior)
from identify.observation import Place
from identify.simulation import OVERLAP, simulate
from identify.splits import query_groups, split_queries

GROWTH = ((2, 3), (5, 7), (20, 30), (5, 20))
MISLABELLED = 0.05
PLACE_MOVED = 0.1
MISLABEL_GALLERY = 20


def gallery(data: EvaluationData, per_species: int) -> EvaluationData:
    """The world with the first `per_species` reference photos of each species (whole birds first)."""
    seen: dict[str, int] = {}
    keep = []
    for label in data.reference_labels:
        seen[label] = seen.get(label, 0) + 1
        keep.append(seen[label] <= per_species)
    mask = np.array(keep, dtype=bool)
    return _references(data, mask, [label for label, kept in zip(data.reference_labels, keep, strict=True) if kept])


def _references(data: EvaluationData, mask: np.ndarray, labels: list[str]) -> EvaluationData:
    groups = data.reference_groups
    return replace(data, reference_embeddings=data.reference_embeddings[mask], reference_labels=labels,
                   reference_probabilities=(data.reference_probabilities[mask]
                                            if data.reference_probabilities is not None else None),
                   reference_groups=[g for g, kept in zip(groups, mask, strict=True) if kept] if groups else None)


def mislabelled(data: EvaluationData, share: float, seed: int) -> EvaluationData:
    """`share` of the reference birds relabelled as their look-alike (species 2i <-> 2i+1 of the simulation)."""
    names = sorted(set(data.reference_labels))
    birds = sorted({str(bird) for bird in data.reference_groups or []})
    wrong = set(np.random.default_rng(seed).choice(birds, size=max(1, round(share * len(birds))), replace=False))
    labels = [names[names.index(label) ^ 1] if bird in wrong else label
              for label, bird in zip(data.reference_labels, [str(b) for b in data.reference_groups or []], strict=True)]
    return replace(data, reference_labels=labels)


def _splits(data: EvaluationData, config: FusionConfig, seed: int) -> tuple[np.ndarray, ...]:
    """The splits evaluate made of these queries (the same groups, labels and seed: the same split)."""
    served, _ = in_label_space(data)
    groups, _ = query_groups(served.query_embeddings, served.query_groups, config.same_photo_similarity)
    return split_queries(served.query_labels, seed, groups)


def _served(data: EvaluationData, rows: np.ndarray, config: FusionConfig, calibration: Any,
            prior: Any = None) -> dict[str, Any]:
    """Coverage and error among confident of `rows`, answered as served."""
    served, _ = in_label_space(data)
    decided = decide_rows(served, neighbourhood(served, max(config.k, 1)), rows, config, calibration, prior)
    confident = np.array([d == CONFIDENT for d in decided.decisions], dtype=bool)
    return {"coverage": _share(confident), "confident": int(confident.sum()),
            "errors": int((confident & ~decided.correct).sum()), "error": _error_among(confident, decided.correct)}


def queries_of(data: EvaluationData, rows: np.ndarray) -> EvaluationData:
    """The data with only the queries of `rows`."""
    def pick(values: Any) -> Any:
        return None if values is None else [values[row] for row in rows]

    return replace(data, probabilities=data.probabilities[rows], query_embeddings=data.query_embeddings[rows],
                   query_labels=pick(data.query_labels), query_places=pick(data.query_places),
                   query_groups=pick(data.query_groups), query_paths=pick(data.query_paths),
                   view_embeddings=None, view_probabilities=None)


def _after_change(fitted: Any, changed: EvaluationData, splits: tuple[np.ndarray, ...], seed: int) -> dict[str, Any]:
    """The fitted thresholds served on the changed references, and re-certified from them and the reviewed
    sightings (the calibration split's queries stand in for what curators have reviewed)."""
    from collections import Counter

    rows = splits[2]
    alone = replace(changed, query_places=None)
    before = _served(alone, rows, fitted.config, fitted.calibration)
    state = fitted.calibration.state(FittedOn.of_counts(Counter(changed.reference_labels), False))
    certified = certify(queries_of(changed, splits[1]), fitted.config, fitted.calibration, seed)
    after = _served(alone, rows, certified.config, certified.calibration)
    return {"as_fitted": {**before, "state": state.state},
            "recertified": {**after, "state": "current", "seconds": certified.figures.get("seconds"),
                            "open_set_bounded": certified.figures.get("open_set", {}).get("bounded")}}


def _moved_places(data: EvaluationData, rows: np.ndarray, seed: int) -> EvaluationData:
    """A tenth of the placed queries among `rows` moved to a place where their look-alike's records are."""
    rng = np.random.default_rng(seed)
    by_species: dict[str, list[tuple[float, float]]] = {}
    for name, lat, lon, _ in data.occurrences or []:
        by_species.setdefault(name, []).append((lat, lon))
    places = list(data.query_places or [])
    placed = [row for row in rows if places[row] is not None]
    names = sorted(data.taxa[label].scientific_name for label in set(data.query_labels))  # type: ignore[union-attr]
    for row in rng.choice(placed, size=round(PLACE_MOVED * len(placed)), replace=False):
        own = data.taxa[data.query_labels[row]].scientific_name  # type: ignore[union-attr]
        lookalike = names[names.index(own) ^ 1]
        lat, lon = by_species[lookalike][int(rng.integers(len(by_species[lookalike])))]
        places[row] = Place(lat, lon, places[row].when)  # type: ignore[union-attr]
    return replace(data, query_places=places)


def shift_block(seed: int, config: FusionConfig, overlap: float = OVERLAP) -> dict[str, Any]:
    """Every figure of the module, for the world of `seed` (look-alikes sharing `overlap` of their ranges)."""
    world = simulate(seed, references_per_species=max(b for _, b in GROWTH), overlap=overlap)
    growth = []
    for before, after in GROWTH:
        small = gallery(world, before)
        fitted = evaluate(small, config, seed=seed)
        growth.append({"references_per_species": [before, after],
                       **_after_change(fitted, gallery(world, after), _splits(small, fitted.config, seed), seed)})
    clean = gallery(world, MISLABEL_GALLERY)
    fitted = evaluate(clean, config, seed=seed)
    splits = _splits(clean, fitted.config, seed)
    rows = splits[2]
    wrong = _after_change(fitted, mislabelled(clean, MISLABELLED, seed), splits, seed)
    moved = _moved_places(clean, rows, seed)
    prior = served_prior(moved)
    placed = np.array([row for row in rows if moved.query_places and moved.query_places[row] is not None])
    return {"world": f"simulate(seed {seed}, {max(b for _, b in GROWTH)} references a species), galleries cut "
                     "from it; photo alone; test split of the fitted evaluation",
            "growth": growth,
            "mislabels": {"share_of_birds": MISLABELLED, "references_per_species": MISLABEL_GALLERY, **wrong},
            "place_overlap": {"moved_share": PLACE_MOVED,
                              "as_fitted": _served(clean, placed, fitted.config, fitted.calibration, served_prior(clean)),
                              "moved": _served(moved, placed, fitted.config, fitted.calibration, prior)}}
