"""The report's two conditions side by side, the photo alone first: many uploads carry no place, and an answer
certified only with a place is no answer for them.

- `photo_alone`: every test query answered on its photos' evidence, as an upload without a place is;
- `with_place`: the test queries that have a place and date, answered with the place-and-season prior.

Each gives the selective figures (coverage, error among confident with its upper bound, per group and per true
species), the open set (species the classifier knows whose references are withheld) and the answers by rank
(species when confident, else the roll-up's genus, family or order, else none), with the error at the rank
answered: a genus is right when the truth's genus is it."""

from __future__ import annotations

from typing import Any

import numpy as np

from identify.calibration import Calibration, clopper_pearson_upper
from identify.config import FusionConfig
from identify.fusion import CONFIDENT
from identify.measurement import Decided, EvaluationData, Neighbourhood, _error_among, _share, decide_rows
from identify.prior import PriorModel
from identify.risk import group_report, open_set_block
from identify.rollup import RANKS


def placed_rows(data: EvaluationData, rows: np.ndarray) -> np.ndarray:
    """The rows among `rows` whose query has a place and date."""
    places = data.query_places or []
    return np.array([row for row in rows if row < len(places) and places[row] is not None], dtype=int)


def rank_block(data: EvaluationData, decided: Decided, confidence: float) -> dict[str, Any]:
    """Each query answered at one rank: the species when confident, else the roll-up's taxon, else none; the
    share answered at each rank and the error there, and at any rank together."""
    confident = np.array([d == CONFIDENT for d in decided.decisions], dtype=bool)
    ranks = np.array(["species" if sure else (rank or "none")
                      for sure, rank in zip(confident, decided.rollup_ranks, strict=True)])
    right = np.where(confident, decided.correct, decided.rollup_correct)
    block: dict[str, Any] = {}
    for rank in ("species", *RANKS):
        at = ranks == rank
        block[rank] = {"answered": int(at.sum()), "share": _share(at), "errors": int((at & ~right).sum()),
                       "error": _error_among(at, right)}
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
    confident = np.array([d == CONFIDENT for d in decided.decisions], dtype=bool)
    errors = int((confident & ~decided.correct).sum())
    return {
        "measured": True, "queries": int(len(rows)), "top1": _share(decided.correct),
        "selective": {"coverage": _share(confident), "confident": int(confident.sum()), "errors": errors,
                      "realised_error": _error_among(confident, decided.correct),
                      "upper_bound": clopper_pearson_upper(errors, int(confident.sum()), config.risk_confidence),
                      "target_error": config.target_error,
                      "groups": group_report(data, decided, config, calibration)},
        "open_set": open_set_block(data, rows, config, calibration, seed, prior),
        "ranks": rank_block(data, decided, config.risk_confidence),
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
