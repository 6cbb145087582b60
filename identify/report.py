"""The evaluation report: `report.md` (the numbers and how to read them), `metrics.json` (every number) and PNG
plots (coverage-risk, reliability diagram, the lambda sweep)."""

from __future__ import annotations

import json
from pathlib import Path

from identify.evaluation import Evaluation


def _plots(result: Evaluation, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    names = []
    figure, axes = plt.subplots(figsize=(5, 4))
    axes.plot(result.curve["coverage"], result.curve["risk"], label="fused score as confidence")
    decided = result.decisions
    axes.scatter([decided["confident"]], [decided["error_when_confident"]], color="C3", zorder=3,
                 label="'confident' decisions")
    axes.set(xlabel="coverage (share answered)", ylabel="risk (error among answered)", title="Coverage-risk",
             xlim=(0, 1), ylim=(0, max(0.05, max(result.curve["risk"]) * 1.1)))
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(out / "coverage_risk.png", dpi=120)
    names.append("coverage_risk.png")

    figure, axes = plt.subplots(figsize=(5, 4))
    bins = result.reliability
    axes.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins],
             width=[(b["high"] - b["low"]) * 0.9 for b in bins], label="accuracy in bin")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    axes.set(xlabel="fused top-1 score", ylabel="accuracy", title=f"Reliability (ECE {result.ece['fusion']:.3f})",
             xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="upper left")
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
        axes.set(xlabel="λ (share of the neighbours' vote)", ylabel="fused top-1 accuracy",
                 title=f"Sweep at T={best_t:g}")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / "sweep.png", dpi=120)
        names.append("sweep.png")
    plt.close("all")
    return names


def _markdown(result: Evaluation, plots: list[str]) -> str:
    config, best, acc, dec = result.config, result.best, result.accuracy, result.decisions
    lines = [
        "# Identification quality report", "",
        f"**Data: {result.kind}.** {result.description}", "",
        f"{result.queries} labelled queries against {result.references} references. Decisions below use "
        f"λ={config.weight_knn:g}, k={config.k}, T={config.temperature:g}.", "",
        "| method | top-1 | top-5 |", "|---|---|---|",
        *(f"| {name} | {acc[name]['top1']:.3f} | {acc[name]['top5']:.3f} |" for name in ("classifier", "knn", "fusion")),
        "",
        f"- Expected calibration error of the fused top-1 score: {result.ece['fusion']:.3f} "
        f"(classifier's own top-1 probability: {result.ece['classifier']:.3f}).",
        f"- Decisions: {dec['confident']:.1%} confident, {dec['needs_review']:.1%} needs review, "
        f"{dec['no_match']:.1%} no match; review rate {dec['review_rate']:.1%}; error among confident "
        f"answers {dec['error_when_confident']:.1%}.",
        f"- Area under the coverage-risk curve (lower is better): {result.curve['aurc']:.3f}.", "",
    ]
    if best:
        lines += [f"**Best setting on these queries:** λ={best['weight_knn']:g}, k={best['k']}, "
                  f"T={best['temperature']:g}: fused top-1 {best['top1']:.3f} (swept λ 0…1, k 1…50, T 0.01…1). "
                  "It is tuned on the queries themselves, so it is optimistic; confirm it on photos it was not "
                  "tuned on.", ""]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def write_report(result: Evaluation, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
    plots = _plots(result, out)
    (out / "report.md").write_text(_markdown(result, plots))
    return out / "report.md"
