"""The live audit: a random share (`audit_share`, 5 %) of the answers the service called `confident` also enters
the review queue, shown to curators without the model's answer. What they name is the truth the deployment can
publish: the running error among confident answers, overall and per risk group, with bounds at
`risk_confidence`.

An audit counts once reviewed: right when the curator's species is the model's (confirmed, or named blind as the
model named it), wrong when it is another, left out when rejected (not a bird, unusable). Only audits of answers
given since the stored calibration was fitted count (`[calibration] fitted_at`): recalibrating starts afresh.

The bounds are read on every request and page, so they must hold however often they are read: they are an
**anytime-valid confidence sequence** (Robbins' beta-binomial mixture: the error rates p whose mixture
likelihood ratio M_n(p) = E_{q ~ Beta(1/2, 1/2)}[q^wrong (1-q)^right] / (p^wrong (1-p)^right) stays under
1 / (1 - risk_confidence)). By Ville's inequality the true rate lies inside at every look at once with the stated
confidence, where a Clopper–Pearson interval read after every audit holds at each look but not at all of them
(checked every 10 audits, its 90 % upper bound held at every look in only 70-81 % of simulated seasons).

When the *lower* bound passes the target, there is evidence at the stated confidence that confident answers err
more often than promised: the service stops answering `confident` in that group (reason `risk_over_target`)
until `evaluate --write-config` is run again. The upper bound is what may be published ("at most x % wrong,
90 % confidence"). Each group also says how many more audits would decide it at its current error rate: until
the upper bound falls under the target, or the lower bound passes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select

from identify.schema import Prediction, Review, Sighting
from identify.scoring import ALL
from identify.storage import Store


def clopper_pearson_lower(errors: int, audited: int, confidence: float) -> float:
    """One-sided lower bound on an error rate after `errors` in `audited` trials (exact binomial), for one look."""
    from scipy.stats import beta

    if audited == 0 or errors == 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, errors, audited - errors + 1))


MIXTURE = (0.5, 0.5)  # the Beta prior of the mixture (Jeffreys')
NEVER = 10**6  # audits past which "how many more" is not worth saying


def _log_mixture_ratio(rate: float, wrong: float, audited: float) -> float:
    from scipy.special import betaln

    a, b = MIXTURE
    right = audited - wrong
    return float(betaln(a + wrong, b + right) - betaln(a, b) - wrong * np.log(rate) - right * np.log1p(-rate))


def confidence_sequence(wrong: float, audited: float, confidence: float) -> tuple[float, float]:
    """(lower, upper) of the anytime-valid confidence sequence on the error rate (see the module): the rates whose
    mixture likelihood ratio stays under 1 / (1 - confidence). The ratio is at most 1 at the observed rate, so
    each side is one root."""
    from scipy.optimize import brentq

    if audited <= 0:
        return 0.0, 1.0
    level = np.log(1.0 / (1.0 - confidence))
    observed = min(max(wrong / audited, 1e-12), 1.0 - 1e-12)

    def excess(rate: float) -> float:
        return _log_mixture_ratio(rate, wrong, audited) - level

    edge = 1e-12
    lower = 0.0 if excess(edge) < 0 or observed <= edge else float(brentq(excess, edge, observed))
    upper = 1.0 if excess(1.0 - edge) < 0 or observed >= 1.0 - edge else float(brentq(excess, observed, 1.0 - edge))
    return lower, upper


def audits_to_decide(wrong: int, audited: int, target: float, confidence: float) -> int | None:
    """How many more audits would decide the group if its error rate stayed as observed (none observed yet: as
    if none were wrong): 0 when decided (upper bound under the target, or lower bound past it), None when the
    rate is the target itself or it would take over NEVER."""
    rate = wrong / audited if audited else 0.0

    def decided(more: int) -> bool:
        lower, upper = confidence_sequence(wrong + rate * more, audited + more, confidence)
        return upper <= target or lower > target

    if decided(0):
        return 0
    if rate == target or not decided(NEVER):
        return None
    low, high = 0, 1
    while not decided(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decided(middle) else (middle, high)
    return high


@dataclass(frozen=True)
class AuditFigures:
    audited: int
    wrong: int
    upper_bound: float
    lower_bound: float
    over_target: bool
    to_decide: int | None = None  # audits more, at the observed rate, before the bounds decide (0: decided)

    @property
    def error(self) -> float:
        return self.wrong / self.audited if self.audited else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"audited": self.audited, "wrong": self.wrong, "error": self.error, "upper_bound": self.upper_bound,
                "lower_bound": self.lower_bound, "over_target": self.over_target, "to_decide": self.to_decide}


def figures(wrong: int, audited: int, target: float, confidence: float) -> AuditFigures:
    lower, upper = confidence_sequence(wrong, audited, confidence)
    return AuditFigures(audited, wrong, upper, lower, lower > target,
                        audits_to_decide(wrong, audited, target, confidence))


@dataclass(frozen=True)
class AuditSummary:
    groups: dict[str, AuditFigures]  # ALL, and each risk group (identify.scoring.answer_groups' coarse ones)
    open: int  # audits still waiting for a curator
    target: float
    confidence: float

    @property
    def over_target(self) -> frozenset[str]:
        return frozenset(name for name, g in self.groups.items() if g.over_target)

    def to_dict(self) -> dict[str, Any]:
        return {"target_error": self.target, "confidence": self.confidence, "open": self.open,
                "groups": {name: g.to_dict() for name, g in self.groups.items()},
                "over_target": sorted(self.over_target)}


class Audits:
    """Reads the audits out of SQL (the sightings' owner writes them; identify.sightings)."""

    def __init__(self, store: Store) -> None:
        self.sessions = store.sessions

    def stamp(self) -> int:
        """What moves whenever an audit may have been answered: the newest review's id, on every worker and
        host alike (one indexed look-up: cheap enough to read on every request)."""
        with self.sessions() as session:
            return int(session.scalar(select(func.max(Review.id))) or 0)

    def summary(self, target: float, confidence: float, since: datetime | None = None) -> AuditSummary:
        answered = select(Prediction.species_id).where(Prediction.sighting_id == Sighting.id,
                                                       Prediction.rank == 1).scalar_subquery()
        query = select(Sighting.risk_group, Sighting.species_id == answered, func.count()).where(
            Sighting.audit, Sighting.status.in_(("confirmed", "corrected")))
        waiting = select(func.count()).where(Sighting.audit, Sighting.status == "open")
        if since is not None:
            query, waiting = query.where(Sighting.created_at >= since), waiting.where(Sighting.created_at >= since)
        counts: dict[str, list[int]] = {ALL: [0, 0]}
        with self.sessions() as session:
            for group, right, count in session.execute(query.group_by(Sighting.risk_group,
                                                                      Sighting.species_id == answered)):
                for name in (ALL, group or "unknown"):
                    tally = counts.setdefault(name, [0, 0])
                    tally[0] += int(count)
                    tally[1] += 0 if right else int(count)
            still_open = int(session.scalar(waiting.select_from(Sighting)) or 0)
        return AuditSummary({name: figures(wrong, audited, target, confidence)
                             for name, (audited, wrong) in sorted(counts.items())}, still_open, target, confidence)
