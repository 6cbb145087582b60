"""Measuring quality: evaluate (choose and fit, or --check a stored configuration)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from identify.cli.base import (
    _labelled,
    _parts,
    _passive_openmp,
    _settings,
    json_option,
    main,
    network_option,
    reports_errors,
)
from identify.errors import IdentifyError


def _embedded_photos(model: str, network: str | None, references: Path, queries: Path, batch_size: int,
                     workers: int | None, progress: bool):  # type: ignore[no-untyped-def]
    """EvaluationData from labelled photos: one forward pass per photo, decoding in DataLoader workers."""
    from identify.backbone import load_backbone
    from identify.measurement import EvaluationData
    from index_builder.dataset import default_workers, embed_sources

    reference_sources, query_sources = _labelled(references), _labelled(queries)  # validated before the model
    parts = _parts(_settings())
    backbone = load_backbone(model, network=network)
    workers = default_workers() if workers is None else workers
    refs = embed_sources(backbone, reference_sources, batch_size, workers, progress, "references")
    asked = embed_sources(backbone, query_sources, batch_size, workers, progress, "queries")
    skipped = len(refs.failures) + len(asked.failures)
    return EvaluationData(
        classes=backbone.identity.classes, probabilities=asked.probabilities, query_embeddings=asked.embeddings,
        query_labels=[query_sources[p].species for p in asked.positions], reference_embeddings=refs.embeddings,
        reference_labels=[reference_sources[p].species for p in refs.positions], kind="labelled photos",
        # the classifier on each reference, from the same forward pass: leaving species out reads it
        reference_probabilities=refs.probabilities,
        reference_groups=[reference_sources[p].group for p in refs.positions],
        query_paths=[str(query_sources[p].path) for p in asked.positions],
        query_groups=[query_sources[p].group for p in asked.positions],
        # where and when each query was seen (the manifest's lat, lon, observed_at): answered with the
        # deployment's prior, as an upload with a place is
        query_places=[query_sources[p].where.place() for p in asked.positions],
        prior_model=parts.prior(),
        description=f"model {backbone.identity.name} ({backbone.identity.sha256[:12]}); references {references}, "
                    f"queries {queries}" + (f"; {skipped} unreadable photos skipped" if skipped else ""),
        taxa=parts.taxonomy.resolve_all(
            {*backbone.identity.classes, *(s.species for s in reference_sources), *(s.species for s in query_sources)}),
    )


def _check_sources(model: str | None, references: Path | None, queries: Path | None, simulate: bool,
                   from_reviews: bool) -> None:
    """One source of labelled queries: photos (--model, --references, --queries), the simulation, or the
    deployment's reviewed sightings (--model --from-reviews)."""
    photos = bool(references or queries)
    if simulate + from_reviews + photos != 1 or (simulate and model):
        raise IdentifyError("bad_arguments", "give --model, --references and --queries; or --simulate; or --model "
                            "and --from-reviews")
    if photos and not (model and references and queries):
        raise IdentifyError("bad_arguments", "--model, --references and --queries go together")
    if from_reviews and not model:
        raise IdentifyError("bad_arguments", "--from-reviews needs the --model the service serves")


def _reviewed_sightings(settings, model: str, network: str | None, batch_size: int, workers: int | None,  # type: ignore[no-untyped-def]
                        progress: bool):
    """EvaluationData from the deployment's own reviewed sightings: each one's photo (a forward pass) labelled
    with the curator's species, against the references the service searches. A reviewed sighting that became a
    reference is a query here, not a reference: no query finds its own photo."""
    from identify.backbone import load_backbone
    from identify.measurement import EvaluationData
    from index_builder.dataset import default_workers, embed_sources
    from index_builder.sources import ReferenceSource

    parts = _parts(settings)
    backbone = load_backbone(model, network=network)
    model_id = parts.register(backbone)
    reviewed = parts.reviews.reviewed(model_id)
    if not reviewed:
        raise IdentifyError("too_few_queries", "no sighting of this model has been confirmed or corrected yet")
    vectors, labels, promoted_from = parts.references.labelled_vectors(settings.service.index, model_id,
                                                                       backbone.identity.embedding_dim)
    asked = {sighting for sighting, _, _ in reviewed}
    keep = [i for i, sighting in enumerate(promoted_from) if sighting not in asked]
    sources = [ReferenceSource(path, label, group=f"sighting {sighting}") for sighting, path, label in reviewed]
    embedded = embed_sources(backbone, sources, batch_size, default_workers() if workers is None else workers,
                             progress, "reviewed sightings")
    return EvaluationData(
        classes=backbone.identity.classes, probabilities=embedded.probabilities,
        query_embeddings=embedded.embeddings, query_labels=[sources[p].species for p in embedded.positions],
        reference_embeddings=vectors[keep], reference_labels=[labels[i] for i in keep], kind="reviewed sightings",
        query_paths=[f"sighting {reviewed[p][0]}" for p in embedded.positions],
        query_groups=[sources[p].group for p in embedded.positions],  # a sighting's photos are one bird
        description=f"model {backbone.identity.name}; {len(embedded.positions)} sightings curators confirmed or "
                    f"corrected, against index {settings.service.index} ({len(keep)} references)",
        taxa=parts.taxonomy.resolve_all({*backbone.identity.classes, *labels, *(s.species for s in sources)}))


@main.command()
@click.option("--model", help="Birder pretrained model name or path to a .pt checkpoint.")
@network_option
@click.option("--references", type=click.Path(path_type=Path, exists=True), help="Species folders or a CSV manifest.")
@click.option("--queries", type=click.Path(path_type=Path, exists=True), help="Labelled queries, same layouts.")
@click.option("--simulate", is_flag=True, help="Measure on the seeded simulation instead of photos.")
@click.option("--from-reviews", is_flag=True,
              help="Measure on this deployment's own sightings curators confirmed or corrected (with --model), "
                   "against the references the service searches (IDENTIFY_INDEX).")
@click.option("--seed", default=0, show_default=True, help="Seed of the simulation.")
@click.option("--ignore-location", is_flag=True,
              help="Answer the queries on the photo alone, as uploads without a place (no prior).")
@click.option("--sim-references", default=20, show_default=True, type=click.IntRange(min=1),
              help="References per species in the simulation (to measure a calibration after the gallery grows).")
@click.option("--overlap", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="The share of their range boxes and season weeks the simulation's look-alike pairs share "
                   "(0: the place always tells them apart; 1: never).")
@click.option("--shift/--no-shift", default=True, show_default=True,
              help="With --simulate: also measure the threshold after the gallery grows, after look-alike "
                   "mislabels and with places moved, as fitted and re-certified (the report's shift block; "
                   "about half a minute).")
@click.option("--out", type=click.Path(path_type=Path), help="Report folder [default: <data dir>/evaluation].")
@click.option("--write-config", is_flag=True,
              help="Store the chosen λ, k, T, the calibration and the confident threshold in <data dir>/identify.toml.")
@click.option("--check", "check_stored", is_flag=True,
              help="Measure the stored configuration as it is (nothing refitted) on every query: error among "
                   "confident answers with its upper bound, coverage, top-1, per group.")
@click.option("--calibration", "calibration_method", default="confidence", show_default=True,
              type=click.Choice(["confidence", "temperature", "isotonic", "none"]), help="The calibrator to fit.")
@click.option("--target-error", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Error allowed among confident answers [default: 0.05, or [fusion] target_error].")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader decode workers.")
@json_option
@reports_errors
def evaluate(model: str | None, network: str | None, references: Path | None, queries: Path | None, simulate: bool,
             from_reviews: bool, ignore_location: bool, seed: int, sim_references: int, overlap: float,
             shift: bool, out: Path | None, write_config: bool, check_stored: bool, calibration_method: str,
             target_error: float | None, batch_size: int, workers: int | None, json_output: bool) -> None:
    """Measure quality on labelled queries, as the service decides: classifier, kNN and fusion accuracy, λ, k
    and T chosen on a tuning split, calibration, a confident threshold with a stated risk, new species and
    roll-up, each measured on a test split. Writes report.md, metrics.json, queries.csv and PNG plots.

    With --check, nothing is chosen or fitted: the configuration the service serves (identify.toml) is measured
    as it is on every query, and the command exits 3 when the error bound is over the target."""
    _passive_openmp()
    from identify.config import write_fusion_settings
    from identify.evaluation import evaluate as measure
    from identify.report import write_report
    from identify.simulation import simulate as simulated

    settings = _settings()
    _check_sources(model, references, queries, simulate, from_reviews)
    if check_stored and write_config:
        raise IdentifyError("bad_arguments", "--check measures the stored configuration; --write-config replaces it")
    if simulate:
        data = simulated(seed, references_per_species=sim_references, overlap=overlap)
    elif from_reviews:
        data = _reviewed_sightings(settings, model, network, batch_size, workers, not json_output)  # type: ignore[arg-type]
    else:
        data = _embedded_photos(model, network, references, queries, batch_size, workers,  # type: ignore[arg-type]
                                not json_output)
    if ignore_location:
        data = dataclasses.replace(data, query_places=None)
    if check_stored:
        _check_stored(settings, data, out, target_error, json_output)
        return
    fusion = settings.fusion.replace(target_error=target_error)
    result = measure(data, fusion, calibration_method=calibration_method, seed=seed)
    if simulate and shift:
        from identify.shift import shift_block

        result.shift = shift_block(seed, fusion, overlap)
    report = write_report(result, out or settings.data_dir / "evaluation")
    if write_config:
        if not result.held_out:
            raise IdentifyError("too_few_queries", f"{result.queries} labelled queries are too few to choose and "
                                "check settings on separate splits; nothing was written")
        chosen = {key: getattr(result.config, key) for key in ("weight_knn", "k", "temperature", "confident_score",
                                                              "target_error", "risk_confidence",
                                                              "no_match_similarity", "no_match_classifier", "vouch_vote",
                                                              "contradicting_vote", "spread_quantile")}
        path = write_fusion_settings(settings.data_dir, chosen, result.calibration)
        click.echo(f"wrote {chosen} and the {result.calibration.method} calibration to {path}", err=json_output)
    if json_output:
        click.echo(json.dumps({"report": str(report), **result.to_dict()}))
        return
    for name, values in result.accuracy.items():
        click.echo(f"{name:<11} top-1 {values['top1']:.3f}  top-5 {values['top5']:.3f}")
    settled, selective = result.config, result.selective
    click.echo(f"chosen λ={settled.weight_knn:g} k={settled.k} T={settled.temperature:g}; ECE "
               f"{result.calibration_block['ece_before']:.3f} -> {result.calibration_block['ece_after']:.3f} "
               f"({result.calibration.method}); pooled threshold {settled.confident_score:g} (the photo alone)")
    rule, split = result.no_match, result.split
    click.echo(f"split: {split['tuning']}/{split['calibration']}/{split['test']} queries, {split['groups']} groups kept "
               f"whole ({split['declared_groups']} declared, {split['near_duplicate_links']} near-duplicate links); "
               f"no_match below similarity {rule['similarity']:g} with the classifier below {rule['classifier']:g} "
               f"(test: said of {rule['test']['share']:.1%}, {rule['test']['top1_right']} of {rule['test']['said']} "
               "with the right top-1)")
    for name, words in (("photo_alone", "the photo alone"), ("with_place", "with place and season")):
        condition = result.conditions[name]
        if not condition["measured"]:
            continue
        chosen, open_set, ranks = condition["selective"], condition["open_set"], condition["ranks"]["any"]
        click.echo(f"{words} ({condition['queries']} queries): top-1 {condition['top1']:.3f}; confident "
                   f"{chosen['coverage']:.1%}, error {chosen['realised_error']:.1%} (bound {chosen['upper_bound']:.1%}; "
                   f"target {chosen['target_error']:.0%}); open set "
                   + (f"{open_set['confident_share']:.1%} confident" if open_set.get("measured") else "not measured")
                   + f"; answered at some rank {ranks['share']:.1%}, error {ranks['error']:.1%} ("
                   + ", ".join(f"{rank} {condition['ranks'][rank]['share']:.1%}" for rank in ("species", "genus",
                                                                                             "family", "order")) + ")")
        _echo_groups(chosen["groups"], {}, f"{words}, ")
    rules = result.open_set_rules
    if "photos" in rules:
        click.echo(f"open-set rules by leave-one-species-out ({rules['species']} species, {rules['photos']} reference "
                   f"photos): vouch_vote {rules['vouch_vote']:g}, contradicting_vote {rules['contradicting_vote']:g}; "
                   f"{rules['served_confident_share']:.1%} of the left-out photos confident"
                   + ("" if rules["bounded"] else " (not bounded: no setting kept the bound)"))
    for step in result.shift.get("growth", []):
        before, after = step["as_fitted"], step["recertified"]
        click.echo(f"shift: references {step['references_per_species'][0]} -> {step['references_per_species'][1]} a "
                   f"species: as fitted {before['coverage']:.1%} confident, error {before['error']:.1%} "
                   f"({before['state']}); re-certified {after['coverage']:.1%}, error {after['error']:.1%}")
    if result.shift:
        wrong = result.shift["mislabels"]
        click.echo(f"shift: 5 % of reference birds mislabelled: as fitted error {wrong['as_fitted']['error']:.1%} "
                   f"({wrong['as_fitted']['state']}); re-certified {wrong['recertified']['coverage']:.1%} confident, "
                   f"error {wrong['recertified']['error']:.1%}")
    click.echo(f"as served (each query with its place, if any): coverage {selective['coverage']:.1%}, error "
               f"{selective['realised_error']:.1%} among confident")
    if result.prior.get("measured"):
        prior = result.prior
        click.echo(f"an uninformative prior with the same thresholds: coverage {prior['coverage_uninformative']:.1%}, "
                   f"error {prior['error_uninformative']:.1%}")
    click.echo(f"report: {report}")


def _echo_groups(groups: dict, open_set: dict, condition: str) -> None:  # type: ignore[type-arg]
    """Per risk group its threshold and error, per true group the error, and the open-set condition."""
    click.echo(f"{condition}by answer: " + "; ".join(
        f"{name} >= {g['threshold']:g} ({'own' if g['threshold_from'] == 'own' else 'pooled'}): "
        f"{g['errors']} wrong of {g['confident']} confident" for name, g in groups["by_answer"].items()))
    click.echo(f"{condition}by truth: " + "; ".join(
        f"{name} species: coverage {g['coverage']:.1%}, error {g['realised_error']:.1%} of {g['confident']}"
        for name, g in groups["by_truth"].items()))
    if open_set.get("measured"):
        click.echo(f"open set: {open_set['queries']} queries of {len(open_set['species'])} species with their "
                   f"references withheld: {open_set['confident_share']:.1%} confident (target at most "
                   f"{open_set['target']:.0%})")


def _check_stored(settings, data, out: Path | None, target_error: float | None,  # type: ignore[no-untyped-def]
                  json_output: bool) -> None:
    """evaluate --check: the served configuration on these queries, as it is."""
    from identify.measurement import check
    from identify.report import write_queries

    checked = check(data, settings.fusion.replace(target_error=target_error), settings.calibration)
    table = write_queries(checked.answers, out or settings.data_dir / "evaluation")
    if json_output:
        click.echo(json.dumps({"queries_csv": str(table), **checked.to_dict()}))
    else:
        c = checked
        click.echo(f"stored configuration: λ={c.config.weight_knn:g} k={c.config.k} T={c.config.temperature:g}, "
                   f"{c.calibration.method} calibration, confident at >= {c.config.confident_score:g}")
        click.echo(f"{c.queries} queries: top-1 {c.top1:.3f}; confident {c.coverage:.1%} ({c.confident}), error "
                   f"{c.realised_error:.1%}, upper bound {c.upper_bound:.1%} at {c.config.risk_confidence:.0%} "
                   f"(target {c.config.target_error:.0%})")
        for name, group in c.groups.items():
            click.echo(f"  {name} species: {group['queries']} queries, top-1 {group['top1']:.3f}, confident "
                       f"{group['coverage']:.1%}, error {group['realised_error']:.1%} (bound {group['upper_bound']:.1%})")
        state = c.calibration_state
        if state["state"] == "stale":
            click.echo("calibration stale against these references (" + "; ".join(state["reasons"]) + "): the "
                       "service answers nothing confident until evaluate --write-config is run on them; the "
                       "figures above are what the stored thresholds would give")
        elif state["state"] == "uncalibrated":
            click.echo("no calibration fitted by evaluate is stored: no threshold of this deployment has a stated risk")
        click.echo(f"answers: {table}")
    if not checked.within_target:
        sys.exit(3)


@main.command()
@click.option("--index", "index_name", help="The index to certify [default: IDENTIFY_INDEX].")
@json_option
@reports_errors
def certify(index_name: str | None, json_output: bool) -> None:
    """Fit the confident thresholds again from what this deployment holds that is labelled: its references (each
    answered without its own individual, each species without its own references) and the sightings curators
    confirmed or corrected, with the calibrator and λ, k, T that evaluate stored. One runs at a time across
    every worker and host: exits 4 when another is running. Writes nothing to identify.toml: the result is a
    row of SQL (identify.certifications)."""
    from sqlalchemy import select

    from identify.certifications import recertify
    from identify.schema import Index, Model

    settings = _settings()
    parts = _parts(settings)
    name = index_name or settings.service.index
    with parts.store.session() as session:
        found = session.execute(select(Index.id, Model.id, Model.classes, Model.embedding_dim)
                                .join(Model, Model.id == Index.model_id).where(Index.name == name)).first()
    if found is None:
        raise IdentifyError("unknown_index", f"no index named {name!r}: build it first", 404)
    index_id, model_id, classes, dim = found

    def said(fraction: float, stage: str) -> None:
        if not json_output:
            click.echo(f"{fraction:4.0%} {stage}", err=True)

    record = recertify(parts.certifications, model_id, name, index_id, list(classes), dim, settings.fusion,
                       settings.calibration, parts.prior(), said)
    if record is None:
        running = parts.certifications.latest(model_id, name, status="running")
        click.echo(json.dumps({"running": running.to_dict() if running else None}) if json_output else
                   f"another certification of {name} is running ({running.stage if running else '?'}); nothing done")
        sys.exit(4)
    if record.status != "done":
        raise IdentifyError("certification_failed", f"certification {record.id} of {name} failed: {record.error}")
    if json_output:
        click.echo(json.dumps(record.to_dict()))
        return
    figures = (record.result or {}).get("figures", {})
    if "nothing_certified" in figures:
        click.echo(f"certification {record.id} of {name}: nothing certified ({figures['nothing_certified']}); "
                   "answers are held back until there is more to go on")
        return
    click.echo(f"certification {record.id} of {name}: {figures['references']} references of "
               f"{figures['individuals']} individuals and {figures['reviewed']} reviewed sightings, in "
               f"{figures['seconds']:.1f} s; pooled threshold {figures['pooled']:g}; "
               + "; ".join(f"{group} >= {g['threshold']:g} ({g['errors']} wrong of {g['answered']})"
                           for group, g in figures["groups"].items()))
