"""The live audit: a random share (`audit_share`, 5 %) of the answers the service called `confident` also enters
the review queue, shown to curators without the model's answer. What they name is the truth the deployment can
publish: the running error among confident answers, overall and per risk group, with Clopper–Pearson bounds
at `risk_confidence`.

An audit counts once reviewed: right when the curator's species is the model's (confirmed, or named blind as the
model named it), wrong when it is another, left out when rejected (not a bird, unusable). Only audits of answers
given since the stored calibration was fitted count (`[calibration] fitted_at`): recalibrating starts afresh.

When the *lower* bound on the error passes the target, there is evidence at the stated confidence that
confident answers err more often than promised: the service stops answering `confident` in that group (reason
`risk_over_target`) until `evaluate --write-config` is run again. The upper bound is what may be published
("at most x % wrong, 90 % confidence"); waiting for it to fall under the target before saying anything would
keep a new deployment silent for its first few hundred audits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from identify.calibration import clopper_pearson_upper
from identify.schema import Prediction, Review, Sighting
from identify.scoring import ALL
from identify.storage import Store


def clopper_pearson_lower(errors: int, audited: int, confidence: float) -> float:
    """One-sided lower bound on an error rate after `errors` in `audited` trials (exact binomial)."""
    from scipy.stats import beta

    if audited == 0 or errors == 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, errors, audited - errors + 1))


@dataclass(frozen=True)
class AuditFigures:
    audited: int
    wrong: int
    upper_bound: float
    lower_bound: float
    over_target: bool

    @property
    def error(self) -> float:
        return self.wrong / self.audited if self.audited else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"audited": self.audited, "wrong": self.wrong, "error": self.error, "upper_bound": self.upper_bound,
                "lower_bound": self.lower_bound, "over_target": self.over_target}


def figures(wrong: int, audited: int, target: float, confidence: float) -> AuditFigures:
    lower = clopper_pearson_lower(wrong, audited, confidence)
    return AuditFigures(audited, wrong, clopper_pearson_upper(wrong, audited, confidence), lower, lower > target)


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
