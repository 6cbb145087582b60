"""Re-certification as a job, and the one owner of the `certifications` table.

When the references change (a build, a promotion, a relabel or retire, a merge), the thresholds a deployment
serves no longer describe them. This job fits them again from what SQL holds (identify.certify): every active
reference of the index with the classifier's output kept beside its embedding and the individual it shows, and
the sightings curators confirmed or corrected. It runs one at a time per model and index across every worker
and host: starting inserts a `running` row, and a unique index over the running rows refuses a second (a row
whose heartbeat stopped two minutes ago, its worker dead, is marked `abandoned` first, so a killed job is run
again rather than waited for). Its progress and stage are in the row; what it decided is stored with the
reference set it was fitted for (`ReferenceState`: the newest reference change, the newest member and how many
there are), so a reader knows whether it still describes what is served. Restartable: it reads everything
from SQL and writes one row, so a job run again after a kill starts afresh and loses nothing."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from identify.calibration import Calibration, CalibrationState
from identify.config import CERTIFIED_SETTINGS, FusionConfig
from identify.measurement import EvaluationData
from identify.observation import WhereAndWhen
from identify.prior import PriorModel
from identify.references import ACTIVE, References
from identify.schema import Certification, Embedding, IndexMember, ReferenceChange, ReferenceImage, Sighting
from identify.schema import SightingPhoto, Species, utcnow
from identify.storage import Store, rows_to_arrays, unpacked_probabilities

logger = logging.getLogger("identify.certifications")
STALE_HEARTBEAT = timedelta(minutes=2)
# The job holds every answer's whole ranking in memory: 10,000 references of 200 species took about a minute and
# a few GB here, 20,000 of 400 species ran out of 24 GiB. Past this it refuses (its row says so) rather than
# take a worker down; the thresholds served stay as they were, and touched species stay held back.
MOST_REFERENCES = 10_000
RUNNING, DONE, FAILED, ABANDONED = "running", "done", "failed", "abandoned"


@dataclass(frozen=True, order=True)
class ReferenceState:
    """What a reference set is at one moment, as far as a certification cares."""

    change: int  # the newest reference change (relabel, retire, restore, merge, promotion)
    newest: int  # the newest member reference id (a build or promotion adds)
    members: int  # active members

    def __str__(self) -> str:
        return f"{self.change}:{self.newest}:{self.members}"

    @classmethod
    def parse(cls, text: str) -> "ReferenceState":
        change, newest, members = (int(part) for part in text.split(":"))
        return cls(change, newest, members)


@dataclass(frozen=True)
class CertificationRecord:
    id: int
    status: str
    reference_state: ReferenceState
    progress: float
    stage: str
    result: dict[str, Any] | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None

    def served(self, config: FusionConfig, calibration: Calibration) -> tuple[FusionConfig, Calibration]:
        """`config` and `calibration` with what this certification decided in place of theirs."""
        assert self.result is not None
        decided = self.result["config"]
        table = self.result["calibration"]
        thresholds = tuple(sorted((str(group), float(value)) for group, value in table["thresholds"].items()))
        return (config.replace(**{key: decided[key] for key in CERTIFIED_SETTINGS}),
                dataclasses.replace(calibration, coefficients=tuple(table["coefficients"]),
                                    intercept=float(table["intercept"]), thresholds=thresholds,
                                    target_error=table.get("target_error"), fitted_at=table.get("fitted_at")))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "reference_state": str(self.reference_state),
                "progress": self.progress, "stage": self.stage, "error": self.error,
                "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat()
                if self.finished_at else None, "figures": (self.result or {}).get("figures")}


def _record(row: Certification) -> CertificationRecord:
    return CertificationRecord(row.id, row.status, ReferenceState.parse(row.reference_state), row.progress, row.stage,
                               row.result, row.error, row.started_at, row.finished_at)


class Certifications:
    def __init__(self, store: Store, references: References) -> None:
        self.store = store
        self.references = references

    def reference_state(self, index_id: int) -> ReferenceState:
        with self.store.session() as session:
            newest, members = session.execute(
                select(func.max(IndexMember.reference_id), func.count())
                .join(ReferenceImage, ReferenceImage.id == IndexMember.reference_id)
                .where(IndexMember.index_id == index_id, ReferenceImage.status == ACTIVE)).one()
            change = session.scalar(select(func.max(ReferenceChange.id)))
        return ReferenceState(int(change or 0), int(newest or 0), int(members or 0))

    def latest(self, model_id: int, index_name: str, status: str | None = DONE) -> CertificationRecord | None:
        """The newest certification of the model's index (with `status`; None: any)."""
        query = select(Certification).where(Certification.model_id == model_id,
                                            Certification.index_name == index_name)
        if status is not None:
            query = query.where(Certification.status == status)
        with self.store.session() as session:
            row = session.scalars(query.order_by(Certification.id.desc()).limit(1)).first()
            return _record(row) if row is not None else None

    def newest_done(self, model_id: int, index_name: str) -> int | None:
        """The id of the newest finished certification of the model's index (one indexed look-up; a worker asks
        once per refresh interval)."""
        with self.store.session() as session:
            return session.scalar(select(func.max(Certification.id)).where(
                Certification.model_id == model_id, Certification.index_name == index_name,
                Certification.status == DONE))

    def touched_since(self, index_id: int, state: ReferenceState) -> set[str]:
        """The species (labels) whose references changed since `state`: members added after its newest, and
        every change after its newest change, from and to."""
        with self.store.session() as session:
            added = select(ReferenceImage.species_id).join(IndexMember, IndexMember.reference_id == ReferenceImage.id)\
                .where(IndexMember.index_id == index_id, ReferenceImage.id > state.newest)
            moved = [species for pair in session.execute(
                select(ReferenceChange.from_species_id, ReferenceChange.to_species_id)
                .where(ReferenceChange.id > state.change)) for species in pair if species is not None]
            ids = set(session.scalars(added)) | set(moved)
            return set(session.scalars(select(Species.name).where(Species.id.in_(ids)))) if ids else set()

    def start(self, model_id: int, index_name: str, state: ReferenceState) -> int | None:
        """A running row for this job, or None when another worker or host is running one."""
        now = utcnow()
        with self.store.sessions.begin() as session:
            session.execute(update(Certification).where(
                Certification.model_id == model_id, Certification.index_name == index_name,
                Certification.status == RUNNING, Certification.heartbeat_at < now - STALE_HEARTBEAT)
                .values(status=ABANDONED, finished_at=now, error="its worker stopped beating"))
        try:
            with self.store.sessions.begin() as session:
                row = Certification(model_id=model_id, index_name=index_name, status=RUNNING,
                                    reference_state=str(state), progress=0.0, stage="starting", started_at=now,
                                    heartbeat_at=now)
                session.add(row)
                session.flush()
                return int(row.id)
        except IntegrityError:
            return None

    def report(self, certification_id: int, progress: float, stage: str) -> None:
        with self.store.sessions.begin() as session:
            session.execute(update(Certification).where(Certification.id == certification_id)
                            .values(progress=progress, stage=stage, heartbeat_at=utcnow()))

    def finish(self, certification_id: int, result: dict[str, Any]) -> None:
        with self.store.sessions.begin() as session:
            session.execute(update(Certification).where(Certification.id == certification_id)
                            .values(status=DONE, progress=1.0, stage="done", result=result, finished_at=utcnow()))

    def fail(self, certification_id: int, error: str) -> None:
        with self.store.sessions.begin() as session:
            session.execute(update(Certification).where(Certification.id == certification_id)
                            .values(status=FAILED, stage="failed", error=error[:2000], finished_at=utcnow()))

    def labelled(self, index_id: int, model_id: int, classes: list[str], dim: int,
                 prior: PriorModel | None) -> EvaluationData:
        """What the deployment holds that is labelled (see the module), in evaluate's shape: the index's active
        references (a row of NaN for the classifier output of one recorded before outputs were kept: it is
        searched, not asked), and as queries the reviewed sightings that are not references themselves (their
        cover photo, their place)."""
        with self.store.session() as session:
            rows = session.execute(
                select(Embedding.reference_id, Embedding.vector, Embedding.probabilities, Species.name,
                       ReferenceImage.individual)
                .join(IndexMember, IndexMember.reference_id == Embedding.reference_id)
                .join(ReferenceImage, ReferenceImage.id == Embedding.reference_id)
                .join(Species, Species.id == ReferenceImage.species_id)
                .where(IndexMember.index_id == index_id, Embedding.model_id == model_id,
                       ReferenceImage.status == ACTIVE)
                .order_by(Embedding.reference_id)).all()
            promoted = select(ReferenceImage.sighting_id).where(ReferenceImage.sighting_id.is_not(None))
            reviewed = session.execute(
                select(Sighting.id, SightingPhoto.embedding, SightingPhoto.probabilities, Species.name, Sighting.lat,
                       Sighting.lon, Sighting.observed_at)
                .join(Sighting, Sighting.id == SightingPhoto.sighting_id)
                .join(Species, Species.id == Sighting.species_id)
                .where(Sighting.model_id == model_id, Sighting.status.in_(("confirmed", "corrected")),
                       SightingPhoto.position == 0, SightingPhoto.probabilities.is_not(None),
                       Sighting.id.not_in(promoted))
                .order_by(Sighting.id)).all()
        taxa = self.references.taxonomy.resolve_all({*classes, *(r[3] for r in rows), *(r[3] for r in reviewed)})
        unknown = np.full(len(classes), np.nan, dtype=np.float32)  # recorded before outputs were kept

        def outputs(stored: list[Any]) -> np.ndarray:
            unpacked = [unpacked_probabilities(p) for p in stored]
            return np.stack([p if p is not None else unknown for p in unpacked]) if unpacked else \
                np.zeros((0, len(classes)), dtype=np.float32)

        return EvaluationData(
            classes=list(classes), probabilities=outputs([r[2] for r in reviewed]),
            query_embeddings=rows_to_arrays([r[:2] for r in reviewed], dim)[1], query_labels=[r[3] for r in reviewed],
            reference_embeddings=rows_to_arrays([r[:2] for r in rows], dim)[1], reference_labels=[r[3] for r in rows],
            reference_probabilities=outputs([r[2] for r in rows]), reference_groups=[r[4] for r in rows],
            query_places=[WhereAndWhen.stored(lat, lon, when).place() for *_, lat, lon, when in reviewed],
            prior_model=prior, kind="the deployment's own labelled data", taxa=taxa)


def recertify(certifications: Certifications, model_id: int, index_name: str, index_id: int, classes: list[str],
              dim: int, config: FusionConfig, calibration: Calibration, prior: PriorModel | None,
              progress: Callable[[float, str], None] | None = None) -> CertificationRecord | None:
    """Run one re-certification of the model's index (see the module); None when another is running."""
    from identify.certify import certify  # torch-free, but heavy: only a job needs it

    state = certifications.reference_state(index_id)
    last = certifications.latest(model_id, index_name, status=None)
    if state.members > MOST_REFERENCES and last is not None and last.status == FAILED and \
            last.reference_state == state:
        return last  # refused for this very reference set already: one row says so, not one per try
    running = certifications.start(model_id, index_name, state)
    if running is None:
        return None

    def step(fraction: float, stage: str) -> None:
        certifications.report(running, fraction, stage)  # type: ignore[arg-type]
        if progress is not None:
            progress(fraction, stage)

    if state.members > MOST_REFERENCES:
        certifications.fail(running, f"{state.members} references: more than this version certifies in memory "
                                     f"({MOST_REFERENCES}); the thresholds served stay as they are")
        return certifications.latest(model_id, index_name, status=None)
    try:
        step(0.1, "reading the references and reviewed sightings")
        data = certifications.labelled(index_id, model_id, classes, dim, prior)
        step(0.3, f"answering {len(data.reference_labels)} references without their own individual or species, "
                  f"and {len(data.query_labels)} reviewed sightings")
        certified = certify(data, config, calibration)
        certifications.finish(running, certified.to_dict())
    except Exception as exc:  # noqa: BLE001 - any failure is recorded; the thresholds served stay as they were
        certifications.fail(running, f"{type(exc).__name__}: {exc}")
        raise
    return certifications.latest(model_id, index_name, status=None)


@dataclass(frozen=True)
class Served:
    """What an identifier serves of its index's certifications now."""

    config: FusionConfig
    calibration: Calibration
    held_back: frozenset[str]  # species labels whose references changed since the certification served
    state: CalibrationState | None  # None: no certification yet, the stored calibration's own state applies
    behind: bool  # the references moved since the newest certification: a job should run


RETRY = 30.0  # seconds between tries to start a job in one process


class Following:
    """An identifier's view of its index's certifications, read from SQL so every worker and host agrees: the
    newest finished certification's thresholds and rules, and the species whose references changed since the
    reference set it was fitted for (added, relabelled from or to, retired, restored, merged): those are still
    named first but held back from `confident` until a certification covers them. With `start_jobs`, a process
    that sees the references ahead of the newest certification starts one in a thread (the SQL row keeps it to
    one at a time across workers and hosts); only a deployment whose calibration states a risk is certified."""

    def __init__(self, certifications: Certifications, model_id: int, index_name: str, index_id: int,
                 classes: list[str], dim: int, config: FusionConfig, calibration: Calibration,
                 prior: Callable[[], PriorModel | None], start_jobs: bool = False,
                 refresh_seconds: float = 0.0) -> None:
        self.certifications = certifications
        self.model_id, self.index_name, self.index_id = model_id, index_name, index_id
        self.classes, self.dim = classes, dim
        self.config, self.calibration, self.prior = config, calibration, prior
        self.start_jobs = start_jobs and calibration.risk_bounded
        self._known: tuple[Any, Served] | None = None
        self._lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._tried = float("-inf")
        self.retry = RETRY  # seconds between tries in this process
        # How often SQL is asked for a newer certification: as often as the worker follows the references (the
        # live index's refresh interval), not on every answer.
        self.refresh_seconds = refresh_seconds
        self._newest: tuple[float, int | None] | None = None  # (when asked, newest finished id)

    def served(self, stamp: Any) -> Served:
        """As of now; `stamp` moves whenever the index's size or changes move (worked out again only then, or
        when a newer certification has finished)."""
        newest = self._newest_done()
        known = self._known
        if known is not None and known[0] == (stamp, newest):
            served = known[1]
        else:
            served = self._work_out(newest)
            self._known = ((stamp, newest), served)
        if served.behind:
            self._start()
        return served

    def _newest_done(self) -> int | None:
        asked = self._newest
        now = time.monotonic()
        if asked is None or now - asked[0] >= self.refresh_seconds:
            asked = (now, self.certifications.newest_done(self.model_id, self.index_name))
            self._newest = asked
        return asked[1]

    def _work_out(self, newest: int | None) -> Served:
        record = self.certifications.latest(self.model_id, self.index_name) if newest is not None else None
        if record is None or record.result is None:
            return Served(self.config, self.calibration, frozenset(), None, True)
        config, calibration = record.served(self.config, self.calibration)
        if record.reference_state == self.certifications.reference_state(self.index_id):
            return Served(config, calibration, frozenset(), CalibrationState("current"), False)
        touched = frozenset(self.certifications.touched_since(self.index_id, record.reference_state))
        why = (f"{len(touched)} species' references changed since certification {record.id}; being checked",)
        return Served(config, calibration, touched, CalibrationState("recertifying", why), True)

    def _start(self) -> None:
        if not self.start_jobs:
            return
        with self._lock:
            if (self._job is not None and self._job.is_alive()) or time.monotonic() - self._tried < self.retry:
                return
            self._tried = time.monotonic()
            self._job = threading.Thread(target=self.run, name="recertify", daemon=True)
            self._job.start()

    def run(self) -> CertificationRecord | None:
        """One re-certification now, in this thread (None: another worker or host is running one)."""
        try:
            return recertify(self.certifications, self.model_id, self.index_name, self.index_id, self.classes,
                             self.dim, self.config, self.calibration, self.prior())
        except Exception:  # noqa: BLE001 - recorded in its row; the thresholds served stay as they were
            logger.exception("re-certification of %s failed", self.index_name)
            return None

    def wait(self, timeout: float | None = None) -> None:
        """Until the job this process started (if any) has finished."""
        job = self._job
        if job is not None:
            job.join(timeout)
