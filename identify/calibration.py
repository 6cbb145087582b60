"""Calibration of the fused scores, and the `confident` threshold with a stated risk. Pure functions over arrays.

Calibration (fitted by `identify evaluate` on held-out labelled queries, stored in identify.toml, applied by
the service and `predict`, so that a score shown to a person is a probability):
- temperature scaling (Guo et al. 2017) of the fused distribution: q(c) ∝ p(c)^(1/T), T fitted by the
  negative log-likelihood of the true labels. One parameter, the ranking unchanged; the default.
- isotonic regression (scikit-learn) of "the top answer is right" on the top score, applied to every score.
  More flexible, and needs more data; the scores then no longer sum to one.
- a confidence model: logistic regression (scikit-learn) of "the top answer is right" on what the evidence
  says about it (the fused score and its margin, whether classifier and neighbours agree, whether the top
  species is one the classifier knows, the nearest similarity: identify.fusion.confidence_features). The top
  species gets that probability and the others share the rest in proportion to their fused scores. Temperature
  and isotonic scaling keep the fused score's order of confidence across photos; on the simulation that order
  is poor (a classifier that is confidently wrong on some species gives wrong answers high fused scores), and
  this model orders answers by how likely they are right, which is what a threshold with a stated risk needs.

The threshold: among `confident` answers the error must stay under a target (5% by default) with a stated
confidence (90%). It is chosen by Learn-then-Test (Angelopoulos et al. 2021) with fixed-sequence testing: the
thresholds of a grid are tested from the highest down, each with a one-sided Clopper–Pearson bound on the
error among the answers it would give, and testing stops at the first that fails; the last one that passed
(the most answers) is taken. Fixed-sequence testing controls the family-wise error at the stated level without
a correction for the grid. Thresholds that would answer fewer than MIN_ANSWERED calibration queries are left
out of the sequence beforehand (that depends on the scores alone, not on which answers are right)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from identify.errors import IdentifyError

METHODS = ("none", "temperature", "isotonic", "confidence")
EPSILON = 1e-12
THRESHOLD_GRID = tuple(round(x, 3) for x in np.arange(0.30, 0.9951, 0.005))
NOTHING_CONFIDENT = 1.01  # when no threshold keeps the bound: one no score reaches, so nothing is confident
MIN_ANSWERED = 100  # fewer: a Clopper-Pearson bound at 90% cannot reach 5% even with no error (n < 45)


# When the served reference set has moved this far from the one a calibration was fitted on, the calibration is
# stale (see FittedOn.differences). Independent checks found that growing the gallery from 5 to 20 references a
# species took the error among confident answers from 5% to 7.5-26.8%; docs/how-to/evaluate.md has the rest.
STALE_RATIO = 1.5  # references in all, or the median per species, up or down by more than this factor
STALE_SPECIES_SHARE = 0.10  # species with references, added or removed, more than this share


@dataclass(frozen=True)
class FittedOn:
    """The reference set (and prior) a calibration was fitted on, to know when it no longer describes what is
    served."""

    references: int
    species: int
    median_per_species: float
    prior: bool  # the threshold was chosen with the place-and-season prior in place

    @classmethod
    def of_counts(cls, counts: Mapping[str, int], prior: bool) -> "FittedOn":
        values = sorted(count for count in counts.values() if count > 0)
        return cls(sum(values), len(values), float(np.median(values)) if values else 0.0, prior)

    def differences(self, served: "FittedOn") -> list[str]:
        """What moved beyond the documented bound (STALE_RATIO, STALE_SPECIES_SHARE); none: still current."""
        moved = []

        def ratio(a: float, b: float) -> float:
            return max(a, b) / max(min(a, b), 1e-9)

        if ratio(self.references, served.references) > STALE_RATIO:
            moved.append(f"references {self.references} -> {served.references}")
        if ratio(self.median_per_species, served.median_per_species) > STALE_RATIO:
            moved.append(f"median references per species {self.median_per_species:g} -> {served.median_per_species:g}")
        if abs(self.species - served.species) > STALE_SPECIES_SHARE * max(self.species, 1):
            moved.append(f"species with references {self.species} -> {served.species}")
        return moved  # the prior is not compared: an answer the prior shaped is bounded only by `+place` thresholds

    def to_dict(self) -> dict[str, Any]:
        return {"references": self.references, "species": self.species,
                "median_per_species": self.median_per_species, "prior": self.prior}


@dataclass(frozen=True)
class CalibrationState:
    """What a stored calibration is worth for the references served now."""

    # uncalibrated (no evaluate has checked a threshold), current, recertifying (the references changed since the
    # newest certification: identify.certifications), or stale (no certification, and the references moved)
    state: str
    reasons: tuple[str, ...] = ()  # what moved, when stale

    @property
    def stale(self) -> bool:
        return self.state == "stale"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Calibration:
    method: str = "none"  # none, temperature or isotonic
    temperature: float = 1.0
    points: tuple[tuple[float, float], ...] = ()  # isotonic: (fused score, probability) breakpoints
    coefficients: tuple[float, ...] = ()  # confidence: logistic weights of identify.fusion.confidence_features
    intercept: float = 0.0
    # Mondrian thresholds: (group, threshold) for the groups whose calibration queries sufficed for their own
    # bound (identify.scoring.answer_groups names them); other answers take FusionConfig.confident_score.
    thresholds: tuple[tuple[str, float], ...] = ()
    # Set by `evaluate --write-config`: the error the thresholds were chosen to bound (None: no threshold of this
    # deployment has been checked on labelled queries, so no risk is stated), and what they were fitted on.
    target_error: float | None = None
    fitted_on: FittedOn | None = None
    fitted_at: str | None = None  # ISO 8601, UTC: audits of answers given before it do not count (identify.audit)

    @property
    def risk_bounded(self) -> bool:
        return self.target_error is not None

    def state(self, served: FittedOn | None) -> CalibrationState:
        """Current or stale against the reference set served now (`served` None: unknown, taken as current)."""
        if not self.risk_bounded:
            return CalibrationState("uncalibrated")
        moved = self.fitted_on.differences(served) if self.fitted_on is not None and served is not None else []
        return CalibrationState("stale", tuple(moved)) if moved else CalibrationState("current")

    def threshold_for(self, groups: Sequence[str]) -> float | None:
        """The threshold of the first of `groups` (most specific first) that has its own, else None."""
        own = dict(self.thresholds)
        return next((own[group] for group in groups if group in own), None)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise IdentifyError("bad_config", f"calibration method must be one of {', '.join(METHODS)}")
        if self.temperature <= 0:
            raise IdentifyError("bad_config", "calibration temperature must be positive")
        if self.method == "isotonic" and len(self.points) < 2:
            raise IdentifyError("bad_config", "isotonic calibration needs at least two points")
        if self.method == "confidence" and not self.coefficients:
            raise IdentifyError("bad_config", "confidence calibration needs its coefficients")
        if any(not 0.0 <= threshold <= NOTHING_CONFIDENT for _, threshold in self.thresholds):
            raise IdentifyError("bad_config", f"calibration thresholds must lie in [0, {NOTHING_CONFIDENT}]")

    def confidence(self, features: np.ndarray) -> np.ndarray:
        """The confidence model's probability that the top answer is right, per row of features."""
        z = np.asarray(features, dtype=np.float64) @ np.asarray(self.coefficients) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated scores of one distribution (1-d) or one per row (2-d)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.method == "temperature":
            powered = np.power(np.clip(scores, 0.0, 1.0), 1.0 / self.temperature)
            powered[scores <= 0] = 0.0
            total = powered.sum(axis=-1, keepdims=True)
            return np.divide(powered, total, out=np.zeros_like(powered), where=total > 0)
        if self.method == "isotonic":
            x, y = zip(*self.points, strict=True)
            return np.where(scores > 0, np.interp(scores, x, y), 0.0)
        return scores

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "temperature": self.temperature, "points": [list(p) for p in self.points],
                "coefficients": list(self.coefficients), "intercept": self.intercept,
                "thresholds": dict(self.thresholds),
                **({"target_error": self.target_error} if self.target_error is not None else {}),
                **({"fitted_on": self.fitted_on.to_dict()} if self.fitted_on is not None else {}),
                **({"fitted_at": self.fitted_at} if self.fitted_at is not None else {})}


def negative_log_likelihood(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean -log of the score given to the true label (rows whose label nobody can name are left out)."""
    rows = truth >= 0
    picked = scores[np.nonzero(rows)[0], truth[rows]]
    return float(-np.mean(np.log(np.clip(picked, EPSILON, 1.0))))


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> Calibration:
    """The temperature that minimises the NLL of the true labels (scores: rows are fused distributions)."""
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        return negative_log_likelihood(Calibration("temperature", float(np.exp(log_t))).apply(scores), truth)

    best = minimize_scalar(loss, bounds=(np.log(0.02), np.log(50.0)), method="bounded")
    return Calibration("temperature", round(float(np.exp(best.x)), 6))


def fit_isotonic(top_scores: np.ndarray, correct: np.ndarray) -> Calibration:
    """Isotonic regression of correctness on the top score (scikit-learn), kept as its breakpoints."""
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(top_scores, correct.astype(float))
    points = tuple((round(float(x), 6), round(float(y), 6))
                   for x, y in zip(model.X_thresholds_, model.y_thresholds_, strict=True))
    if len(points) < 2:  # all scores equal: a flat map at the accuracy
        points = ((0.0, points[0][1]), (1.0, points[0][1])) if points else ((0.0, 0.0), (1.0, 1.0))
    return Calibration("isotonic", points=points)


def fit_confidence(features: np.ndarray, correct: np.ndarray) -> Calibration:
    """Logistic regression of "the top answer is right" on the evidence features (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression

    if correct.all() or not correct.any():  # one class only: a constant at the observed rate
        rate = float(np.clip(correct.mean(), 0.01, 0.99))
        return Calibration("confidence", coefficients=(0.0,) * features.shape[1], intercept=float(np.log(rate / (1 - rate))))
    model = LogisticRegression(C=10.0, max_iter=2000).fit(features, correct)
    return Calibration("confidence", coefficients=tuple(round(float(c), 6) for c in model.coef_[0]),
                       intercept=round(float(model.intercept_[0]), 6))


@functools.lru_cache(maxsize=65536)  # pure, and asked of the same counts over and over when thresholds are swept
def clopper_pearson_upper(errors: int, answered: int, confidence: float) -> float:
    """One-sided upper bound on an error rate after `errors` in `answered` trials (exact binomial)."""
    from scipy.stats import beta

    if answered == 0:
        return 1.0
    if errors >= answered:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, answered - errors))


@dataclass
class RiskControl:
    """The chosen threshold and what it was chosen on."""

    target_error: float
    confidence: float  # of the bound
    threshold: float  # NOTHING_CONFIDENT when no threshold of the grid keeps the bound
    answered: int  # on the split it was chosen on
    errors: int
    upper_bound: float
    grid: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"target_error": self.target_error, "confidence": self.confidence, "threshold": self.threshold,
                "method": "Learn-then-Test: fixed-sequence testing with Clopper-Pearson bounds",
                "answered": self.answered, "errors": self.errors, "upper_bound": self.upper_bound}




def fewest_testable(target_error: float, confidence: float) -> int:
    """The fewest answers whose Clopper–Pearson bound can reach `target_error` at all (with no error):
    1 - (1 - confidence)^(1/n) <= target, so n >= log(1 - confidence) / log(1 - target); 45 at 5 %, 90 %."""
    return int(np.ceil(np.log(1.0 - confidence) / np.log(1.0 - target_error) - 1e-9))


UpperBound = Callable[[int, int, float], float]  # (errors, answered, confidence) -> the upper bound on the error


def choose_threshold(top_scores: np.ndarray, correct: np.ndarray, eligible: np.ndarray, target_error: float,
                     confidence: float = 0.9, grid: Sequence[float] = THRESHOLD_GRID,
                     min_answered: int = MIN_ANSWERED, upper: UpperBound | None = None) -> RiskControl:
    """The lowest threshold reached by fixed-sequence testing from the top of the grid (see the module): each
    threshold t answers the eligible queries scored >= t, and passes when the Clopper–Pearson bound at
    `confidence` on their error stays under `target_error`.

    `eligible` says which queries the decision's other rules (no match, margin) let be confident at all, so the
    risk is bounded for the decision as the service makes it. `upper`: another upper bound in place of
    Clopper–Pearson's (identify.certify.earned: the audit's anytime-valid confidence sequence)."""
    rows, chosen = [], None
    for threshold in sorted(grid, reverse=True):
        answered = eligible & (top_scores >= threshold)
        n, e = int(answered.sum()), int((answered & ~correct).sum())
        if n < min_answered:
            continue  # too few to test: not in the sequence
        bound = (upper or clopper_pearson_upper)(e, n, confidence)
        rows.append({"threshold": float(threshold), "answered": n, "errors": e, "upper_bound": bound})
        if bound > target_error:
            break
        chosen = rows[-1]
    if chosen is None:
        return RiskControl(target_error, confidence, NOTHING_CONFIDENT, 0, 0, 1.0, rows)
    return RiskControl(target_error, confidence, chosen["threshold"], int(chosen["answered"]), int(chosen["errors"]),
                       chosen["upper_bound"], rows)
