"""The report's two conditions side by side, the photo alone first: many uploads carry no place, and an answer
certified only with a place is no answer for them.

- `photo_alone`: every test query answered on its photos' evidence, as an upload without a place is;
- `with_place`: the test queries that have a place and date, answered with the place-and-season prior.

Each gives the selective figures (coverage, error among confident with its upper bound, per group and per true
species), the open set (species the classifier knows whose references are withheld) and the answers by rank
(species when confident, else the genus, family or order whose own threshold holds, else none), with the error
at the rank answered: a genus is right when the truth's genus is it."""

from __future__ import annotations

from typing import Any

import numpy as np

from identify.calibration import NOTHING_CONFIDENT, Calibration, clopper_pearson_upper
from identify.config import FusionConfig
from identify.measurement import Decided, EvaluationData, Neighbourhood, _error_among, _share, decide_rows
from identify.prior import PriorModel
from identify.risk import group_report, open_set_block
from identify.rollup import RANK_GROUP, RANKS


def placed_rows(data: EvaluationData, rows: np.ndarray) -> np.ndarray:
    """The rows among `rows` whose query has a place and date."""
    places = data.query_places or []
    return np.array([row for row in rows if row < len(places) and places[row] is not None], dtype=int)


def rank_block(decided: Decided, confidence: float, calibration: Calibration) -> dict[str, Any]:
    """Each query answered at one rank: the species when confident, else the rank that holds (a roll-up
    certified by its rank's own threshold, identify.risk.rank_controls), else none; the share answered at each
    rank and the error there (a genus is right when the truth's genus is it), with its upper bound, and at any
    rank together; each rank with the threshold it was certified with (null: none certified)."""
    ranks, right = decided.answered_ranks()
    certified = dict(calibration.thresholds)
    block: dict[str, Any] = {}
    for rank in ("species", *RANKS):
        at = ranks == rank
        errors = int((at & ~right).sum())
        threshold = certified.get(RANK_GROUP + rank)  # on the photo alone's scores, with a place too
        block[rank] = {"answered": int(at.sum()), "share": _share(at), "errors": errors,
                       **({} if rank == "species" else
                          {"threshold": threshold if threshold is not None and threshold < NOTHING_CONFIDENT else None}),
                       "error": _error_among(at, right),
                       "upper_bound": clopper_pearson_upper(errors, int(at.sum()), confidence)}
    answered = ranks != "none"
    errors = int((answered & ~right).sum())
    block["any"] = {"answered": int(answered.sum()), "share": _share(answered), "errors": errors,
                    "error": _error_among(answered, right),
                    "upper_bound": clopper_pearson_upper(errors, int(answered.sum()), confidence)}
    block["none"] = {"answered": int((~answered).sum()), "share": _share(~answered)}
    return block


def condition_block(data: EvaluationData, hood: Neighbourhood, rows: np.ndarray, config: FusionConfig,
                    calibration: Calibration, seed: int, prior: PriorModel | None = None) -> dict[str, Any]:
    """The queries `rows` answered as served under one condition (with `prior`: their places; without: the
    photo alone), and the open set under the same condition."""
    if len(rows) == 0:
        return {"measured": False, "queries": 0}
    return _figures(data, decide_rows(data, hood, rows, config, calibration, prior), config, calibration, seed, prior)


def _figures(data: EvaluationData, decided: Decided, config: FusionConfig, calibration: Calibration, seed: int,
             prior: PriorModel | None) -> dict[str, Any]:
    rows = decided.rows
    confident = decided.species_confident
    errors = int((confident & ~decided.correct).sum())
    return {
        "measured": True, "queries": int(len(rows)), "top1": _share(decided.correct),
        "selective": {"coverage": _share(confident), "confident": int(confident.sum()), "errors": errors,
                      "realised_error": _error_among(confident, decided.correct),
                      "upper_bound": clopper_pearson_upper(errors, int(confident.sum()), config.risk_confidence),
                      "target_error": config.target_error,
                      "groups": group_report(data, decided, config, calibration)},
        "open_set": open_set_block(data, rows, config, calibration, seed, prior),
        "ranks": rank_block(decided, config.risk_confidence, calibration),
    }


def conditions(data: EvaluationData, hood: Neighbourhood, test: np.ndarray, config: FusionConfig,
               calibration: Calibration, seed: int, prior: PriorModel | None) -> dict[str, dict[str, Any]]:
    """`photo_alone` and `with_place` (see the module); `with_place` is not measured without a prior."""
    if len(test) == 0:
        return {"photo_alone": {"measured": False, "queries": 0}, "with_place": {"measured": False, "queries": 0}}
    decided_alone = decide_rows(data, hood, test, config, calibration)
    alone = _figures(data, decided_alone, config, calibration, seed, None)
    if prior is None:
        return {"photo_alone": alone, "with_place": {"measured": False, "queries": 0}}
    placed = placed_rows(data, test)
    with_place = condition_block(data, hood, placed, config, calibration, seed, prior)
    if with_place["measured"]:  # what the place adds: the same queries' top-1 on their photos alone
        with_place["top1_photo_alone"] = _share(decided_alone.correct[np.isin(decided_alone.rows, placed)])
    return {"photo_alone": alone, "with_place": with_place}
