"""The evaluation report: `report.md` (the numbers and how to read them), `metrics.json` (every number) and PNG
plots (coverage-risk, reliability before and after calibration, the lambda sweep)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from identify.evaluation import Evaluation


def _reliability(axes: Any, bins: list[dict[str, float]], title: str) -> None:
    axes.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins],
             width=[(b["high"] - b["low"]) * 0.9 for b in bins], label="accuracy in bin")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    axes.set(xlabel="top-1 score", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="upper left")


def _plots(result: Evaluation, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    names = []
    figure, axes = plt.subplots(figsize=(5, 4))
    axes.plot(result.curve["coverage"], result.curve["risk"], label="calibrated score as confidence")
    axes.scatter([result.selective["coverage"]], [result.selective["realised_error"]], color="C3", zorder=3,
                 label="'confident' decisions")
    axes.axhline(result.selective["target_error"], color="grey", linestyle=":", label="target error")
    axes.set(xlabel="coverage (share answered)", ylabel="risk (error among answered)", title="Coverage-risk (test split)",
             xlim=(0, 1), ylim=(0, max(0.1, max(result.curve["risk"], default=0.0) * 1.1)))
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(out / "coverage_risk.png", dpi=120)
    names.append("coverage_risk.png")

    figure, (before, after) = plt.subplots(1, 2, figsize=(9, 4))
    _reliability(before, result.reliability["before"], f"Fused, ECE {result.calibration_block['ece_before']:.3f}")
    _reliability(after, result.reliability["after"],
                 f"Calibrated ({result.calibration.method}), ECE {result.calibration_block['ece_after']:.3f}")
    figure.tight_layout()
    figure.savefig(out / "reliability.png", dpi=120)
    names.append("reliability.png")

    if result.sweep:
        best_t = result.best["temperature"]
        figure, axes = plt.subplots(figsize=(5, 4))
        for k in sorted({row["k"] for row in result.sweep}):
            rows = sorted((r for r in result.sweep if r["k"] == k and r["temperature"] == best_t),
                          key=lambda r: r["weight_knn"])
            axes.plot([r["weight_knn"] for r in rows], [r["top1"] for r in rows], marker="o", label=f"k={k}")
        axes.set(xlabel="λ (share of the neighbours' vote)", ylabel="fused top-1 accuracy (tuning split)",
                 title=f"Sweep at T={best_t:g}")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / "sweep.png", dpi=120)
        names.append("sweep.png")
    plt.close("all")
    return names


def _ablation_table(result: Evaluation) -> list[str]:
    lines = ["| method | top-1 | ECE | threshold | coverage | error among confident | useful answers |",
             "|---|---|---|---|---|---|---|"]
    for row in result.ablation:
        lines.append(f"| {row['method']} | {row['top1']:.3f} | {row['ece']:.3f} | {row['threshold']:.3f} | "
                     f"{row['coverage']:.1%} | {row['realised_error']:.1%} | {row['useful']:.1%} |")
    return lines


def _group_table(groups: dict) -> list[str]:  # type: ignore[type-arg]
    lines = ["| answers | threshold | from | confident | errors | error among confident | upper bound |",
             "|---|---|---|---|---|---|---|"]
    for name, g in groups["by_answer"].items():
        lines.append(f"| {name} | {g['threshold']:.3f} | {g['threshold_from']} | {g['confident']} | {g['errors']} | "
                     f"{g['realised_error']:.1%} | {g['upper_bound']:.3f} |")
    for name, g in groups["by_truth"].items():
        lines.append(f"| queries of {name} species | | | {g['confident']} | {g['errors']} | "
                     f"{g['realised_error']:.1%} | {g['upper_bound']:.3f} |")
    return lines


def _risk_and_open_set(result: Evaluation) -> list[str]:
    groups, open_set = result.selective["groups"], result.open_set
    worst = sorted(groups["species"].items(), key=lambda item: -item[1]["realised_error"])[:5]
    lines = ["## Risk per group", "",
             "Each group of answers with enough calibration queries has its own threshold (Mondrian: "
             "Learn-then-Test on the group's own queries, so the bound holds in the group); the others take the "
             "pooled one. Measured on the test split, as served:", "", *_group_table(groups), "",
             "The five species whose confident answers err most often: "
             + ", ".join(f"{name} {g['errors']} of {g['confident']}" for name, g in worst) + ".", ""]
    if open_set.get("measured"):
        lines += ["## Open set", "",
                  f"The references of {', '.join(open_set['species'])} withheld (their look-alikes keep theirs): "
                  f"of their {open_set['queries']} test queries, {open_set['confident_share']:.1%} were answered "
                  f"confident anyway (the goal: at most {open_set['target']:.0%}). Why the others were not: "
                  + ", ".join(f"{reason} {count}" for reason, count in sorted(open_set["reasons"].items(),
                                                                             key=lambda item: -item[1])) + ".", ""]
    return lines


def _prior_and_views(result: Evaluation) -> list[str]:
    lines = []
    prior, views = result.prior, result.views
    if prior.get("measured"):
        lines += ["## Place and season", "",
                  "The queries have a place and a date, so they were answered as served, with the prior, and the "
                  "thresholds of answers with a place were chosen with it (groups `+place`).", "",
                  "| prior | top-1 | coverage | error among confident |", "|---|---|---|---|",
                  *(f"| {name} | {prior['top1_' + key]:.3f} | {prior['coverage_' + key]:.1%} | "
                    f"{prior['error_' + key]:.1%} |" for name, key in (("the records", "with"), ("none (the photo "
                    "alone)", "without"), ("uninformative (records spread evenly)", "uninformative"))), "",
                  "The uninformative prior is answered with the thresholds chosen with the records: it shows what "
                  "a prior other than the one a calibration was fitted with does to the bound.", "",
                  "### The photo alone, per group", "", *_group_table(prior["groups_without"]), ""]
    if views.get("measured"):
        lines += ["## Several photos of one bird", "",
                  f"Fusion top-1 from one photo {views['top1_one_photo']:.3f}; from all {views['views']} photos "
                  f"pooled (geometric mean of the classifier, neighbours of every photo) {views['top1_pooled']:.3f}.",
                  ""]
    return lines


def _conditions(result: Evaluation) -> list[str]:
    """The photo alone first, then with a place: the figures side by side."""
    measured = [(name, c) for name, c in (("the photo alone", result.conditions["photo_alone"]),
                                          ("with place and season", result.conditions["with_place"])) if c["measured"]]
    lines = ["## The photo alone, and with a place", "",
             "Every test query answered on its photos alone (as an upload without a place), and those with a place "
             "answered with it. Answered at some rank: the species when confident, else the most specific genus, "
             "family or order whose own threshold holds (the table after this one).", "",
             "| condition | queries | top-1 | confident | error among confident (bound) | open set confident | "
             "answered at some rank (error) |", "|---|---|---|---|---|---|---|"]
    for name, c in measured:
        chosen, open_set, ranks = c["selective"], c["open_set"], c["ranks"]["any"]
        lines.append(f"| {name} | {c['queries']} | {c['top1']:.3f} | {chosen['coverage']:.1%} | "
                     f"{chosen['realised_error']:.1%} ({chosen['upper_bound']:.3f}) | "
                     + (f"{open_set['confident_share']:.1%}" if open_set.get("measured") else "not measured")
                     + f" | {ranks['share']:.1%} ({ranks['error']:.1%}) |")
    lines += ["", "Answered at each rank (the species when confident, else the rank that holds; a genus is right "
              "when the truth's genus is it):", "",
              "| condition | rank | threshold | answered | error (bound) |", "|---|---|---|---|---|"]
    for name, c in measured:
        for rank in ("species", "genus", "family", "order"):
            at = c["ranks"][rank]
            threshold = "species' own" if rank == "species" else (
                f"{at['threshold']:.3f}" if at.get("threshold") is not None else "none certified")
            lines.append(f"| {name} | {rank} | {threshold} | {at['share']:.1%} | {at['error']:.1%} "
                         f"({at['upper_bound']:.3f}) |")
    rules = result.open_set_rules
    if "photos" in rules:
        lines += ["", f"Open-set rules chosen by leave-one-species-out over the references ({rules['species']} "
                  f"species, {rules['photos']} reference photos): vouch_vote {rules['vouch_vote']:g}, "
                  f"contradicting_vote {rules['contradicting_vote']:g}; {rules['served_confident_share']:.1%} of the "
                  "left-out photos confident as served."]
    return lines + [""]


def _shift(shift: dict) -> list[str]:  # type: ignore[type-arg]
    """When the references move after the fit: as fitted, and re-certified (identify.shift)."""
    if not shift:
        return []
    lines = ["## Shift", "", f"{shift['world']}.", "",
             "| change | as fitted: confident, error (state shown) | re-certified: confident, error |",
             "|---|---|---|"]
    rows = [(f"references {a} -> {b} a species", g) for (a, b), g in
            ((tuple(g["references_per_species"]), g) for g in shift["growth"])]
    rows.append((f"{shift['mislabels']['share_of_birds']:.0%} of the reference birds mislabelled as their look-alike",
                 shift["mislabels"]))
    for name, g in rows:
        before, after = g["as_fitted"], g["recertified"]
        lines.append(f"| {name} | {before['coverage']:.1%}, {before['error']:.1%} ({before['state']}) | "
                     f"{after['coverage']:.1%}, {after['error']:.1%} |")
    moved = shift["place_overlap"]
    lines += ["", f"With a place: {moved['moved_share']:.0%} of the queries moved into their look-alike's range: "
              f"error among confident {moved['as_fitted']['error']:.1%} -> {moved['moved']['error']:.1%} "
              f"(coverage {moved['as_fitted']['coverage']:.1%} -> {moved['moved']['coverage']:.1%}).", ""]
    return lines


def _no_match_line(rule: dict) -> str:  # type: ignore[type-arg]
    chosen, given = rule["test"], rule["given"]
    return (f"- No match: said when the nearest reference is below {rule['similarity']:g} and the classifier below "
            f"{rule['classifier']:g} ({rule['chosen_on']}: where the top-1 is right at most "
            f"{rule['right_at_most']:.0%} of the time). On the test split it is said of {chosen['share']:.1%}, "
            f"{chosen['top1_right']} of {chosen['said']} with the right top-1; the given thresholds "
            f"({given['similarity']:g}, {given['classifier']:g}) would have said it of {given['test']['share']:.1%}, "
            f"{given['test']['top1_right']} of {given['test']['said']} right.")


def _markdown(result: Evaluation, plots: list[str]) -> str:
    config, best, acc, dec = result.config, result.best, result.accuracy, result.decisions
    sel, new, roll, cal = result.selective, result.new_species, result.rollup, result.calibration_block
    known = result.known_species
    split = result.split
    where = (f"Queries split by species into tuning ({split['tuning']}), calibration ({split['calibration']}) and "
             f"test ({split['test']}), each of the {split['groups']} groups (individuals or sources: "
             f"{split['declared_groups']} declared, near-duplicates joined) on one side: λ, k, T, the no-match "
             "thresholds and the calibrator were chosen on the tuning split, the threshold on "
             "the calibration split, and every figure below is on the test split."
             if result.held_out else
             f"Only {result.queries} queries: too few to hold any out, so every figure is measured on all of them "
             "at the given settings, with no calibration and no stated risk. Add labelled queries.")
    lines = [
        "# Identification quality report", "",
        f"**Data: {result.kind}.** {result.description}", "",
        f"{result.queries} labelled queries against {result.references} references. {where}", "",
        f"Settings: λ={config.weight_knn:g}, k={config.k}, T={config.temperature:g}"
        + (f" (5-fold cross-validated top-1 of this choice on the tuning split: {best['cv_top1']:.3f})"
           if "cv_top1" in best else "") + ".", "",
        "| method | top-1 | top-5 |", "|---|---|---|",
        *(f"| {text} | {acc[name]['top1']:.3f} | {acc[name]['top5']:.3f} |" for name, text in (
            ("classifier", "classifier"), ("knn", "knn"), ("fusion", "fusion, as served (calibrated)"))),
        "", "Labels of one taxon count as one species, as in served answers; `queries.csv` lists every test "
        "query's answer.",
        "",
        *_conditions(result),
        "## Ablation", "",
        "Each part added in turn. Every threshold is chosen on the calibration split for the same target error; "
        "*useful answers* are confident right species, plus right genera, families or orders for the roll-up. A "
        "threshold above 1 means that no threshold could be shown to keep the error under the target.", "",
        *_ablation_table(result), "",
        "## Calibration and the confident threshold", "",
        f"- Calibration: {cal['method']}, fitted on the tuning split. Expected calibration error of the top-1 score "
        f"(15 bins): {cal['ece_before']:.3f} fused, {cal['ece_after']:.3f} calibrated.",
        f"- Threshold: {sel['threshold']:g}, chosen by {sel['method']} so that the error among confident answers "
        f"stays under {sel['target_error']:.0%} with {sel['confidence']:.0%} confidence "
        f"({sel['answered']} answered with {sel['errors']} errors on the calibration split, bound "
        f"{sel['upper_bound']:.3f}).",
        f"- On the test split: coverage {sel['coverage']:.1%} confident, realised error among them "
        f"{sel['realised_error']:.1%}. Decisions: {dec['confident']:.1%} confident, {dec['needs_review']:.1%} needs "
        f"review, {dec['no_match']:.1%} no match.",
        _no_match_line(result.no_match), "",
        "## Known and new species", "",
        f"{known['queries']} test queries of species the classifier knows: top-1 {known['top1']:.3f}, "
        f"{known['confident_share']:.1%} confident, error among those {known['confident_error']:.1%}.", "",
        f"{new['queries']} test queries of species the classifier does not know: top-1 {new['top1']:.3f}, "
        f"{new['confident_share']:.1%} confident, error among those {new['confident_error']:.1%}. Of the "
        f"{new['with_close_references']} with five or more of their own references among the ten nearest, "
        f"{new['close_confident_and_correct']:.1%} are confident and right.", "",
        *_risk_and_open_set(result),
        *_shift(result.shift),
        *_prior_and_views(result),
        "## Roll-up", "",
        f"{roll['uncertain']} test queries are not confident; {roll['rolled_up_share']:.1%} of them roll up "
        f"(genus {roll['by_rank']['genus']}, family {roll['by_rank']['family']}, order {roll['by_rank']['order']}), "
        f"and the taxon offered is right for {roll['correct_share']:.1%} of those (the species was right already "
        f"for {roll['species_already_right']:.1%}).", "",
    ]
    if best:
        lines += [f"The sweep's best on the tuning split: λ={best['weight_knn']:g}, k={best['k']}, "
                  f"T={best['temperature']:g}, top-1 {best['top1']:.3f} (λ 0…1, k 1…50, T 0.01…1).", ""]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


QUERY_COLUMNS = ("path", "truth", "group", "top_species", "score", "decision", "reasons", "correct")


def write_queries(answers: list[dict], out: Path) -> Path:
    """queries.csv: one row per measured query, as the service answered it."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "queries.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=QUERY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(answers)
    return out / "queries.csv"


def write_report(result: Evaluation, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
    write_queries(result.answers, out)
    plots = _plots(result, out)
    (out / "report.md").write_text(_markdown(result, plots))
    return out / "report.md"
