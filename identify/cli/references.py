"""The reference set as records: identify references list, show, relabel, retire, restore (the same records and
rules as the API's /api/v1/references; a change records the curator named with --curator)."""

from __future__ import annotations

import json

import click

from identify.cli.base import _parts, _settings, main, reports_errors
from identify.metadata import parse_timestamp


@main.group()
def references() -> None:
    """List, open, relabel, retire and restore references (by their public ids)."""


def _records():  # type: ignore[no-untyped-def]
    return _parts(_settings()).reference_records


def _line(record) -> str:  # type: ignore[no-untyped-def]
    from identify.answers import display_name  # here, not at the top: every command's start stays light

    origin = f"review of sighting {record.sighting} by {record.added_by}" if record.source == "review" else "build"
    crop = f"  crop {record.crop.text}" if record.crop else ""
    return (f"{record.public_id}  {record.status:<7}  v{record.version}  {display_name(record.species, record.taxon)}"
            f"  [{origin}]  {record.path}{crop}")


@references.command("list")
@click.option("--species", help="A label, or any common or scientific name of its taxon.")
@click.option("--source", type=click.Choice(["build", "review"]), help="From a build, or a curator's review.")
@click.option("--curator", help="Added through this curator's review, or changed by them.")
@click.option("--status", type=click.Choice(["active", "retired", "all"]), default="active", show_default=True)
@click.option("--from", "since", help="Recorded on or after (ISO 8601).")
@click.option("--to", "until", help="Recorded before (ISO 8601).")
@click.option("--flag", type=click.Choice(["mislabelled", "near_duplicate", "thin"]),
              help="Only those the health check (identify references check) lists under this flag.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1), help="At most this many.")
@click.option("--json", "json_output", is_flag=True, help="One JSON object per reference.")
@reports_errors
def references_list(species: str | None, source: str | None, curator: str | None, status: str, since: str | None,
                    until: str | None, flag: str | None, limit: int, json_output: bool) -> None:
    """The references that pass the filters, newest first."""
    from identify.reference_records import ReferenceFilters

    flagged = None
    if flag is not None:
        report, chosen = _health(None, None, 3)
        flagged = report.flagged(flag, chosen.public_ids, chosen.canonical)
    filters = ReferenceFilters(species, source, curator, status, parse_timestamp(since, "from"),
                               parse_timestamp(until, "to"), flag, flagged)
    records, total = _records().page(filters, 1, limit)
    for record in records:
        click.echo(json.dumps(record.to_dict()) if json_output else _line(record))
    if not json_output:
        click.echo(f"{len(records)} of {total} shown", err=True)


@references.command("show")
@click.argument("reference_id")
@click.option("--json", "json_output", is_flag=True)
@reports_errors
def references_show(reference_id: str, json_output: bool) -> None:
    """One reference with every change made to it."""
    record = _records().get(reference_id)
    if json_output:
        click.echo(json.dumps(record.to_dict(with_changes=True)))
        return
    click.echo(_line(record))
    for change in record.changes:
        moved = f" {change.from_species} -> {change.to_species}" if change.action in ("relabel", "propose") else ""
        click.echo(f"  {change.at:%Y-%m-%d %H:%M} {change.action}{moved} by {change.curator or 'the command line'} "
                   f"(v{change.version}): {change.reason}")


def _change(reference_id: str, action: str, reason: str, version: int | None, curator: str | None,
            **extra: object) -> None:
    parts = _parts(_settings())
    curator_id = parts.curators.id_of(curator) if curator else None
    classes = parts.store.model_classes()
    rule = parts.second_opinion(parts.prior()) if action == "relabel" else None  # one rule, as the web app's
    record = parts.reference_records.change(reference_id, action, reason, version, curator_id,
                                            model_classes=classes, second_opinion=rule, **extra)  # type: ignore[arg-type]
    if record.awaiting is not None and action == "relabel":
        click.echo(f"the relabel to {record.awaiting.to_species} waits for a second curator (a species no "
                   "active reference has, or a first record here): another curator relabels it the same way "
                   "to apply it", err=True)
    click.echo(_line(record))


def _change_options(command):  # type: ignore[no-untyped-def]
    command = click.option("--curator", help="Who makes the change (recorded; default: the command line).")(command)
    command = click.option("--version", "version", type=int, help="The version you looked at (`show`); left "
                           "out: the current one.")(command)
    command = click.option("--reason", required=True, help="Why: kept in the reference's history.")(command)
    return click.argument("reference_id")(command)


@references.command("relabel")
@_change_options
@click.option("--species", required=True, help="A label in use, or any common or scientific name.")
@click.option("--as-written", is_flag=True, help="Take a name no taxonomy knows, as written.")
@reports_errors
def references_relabel(reference_id: str, reason: str, version: int | None, curator: str | None, species: str,
                       as_written: bool) -> None:
    """Give a reference another species; every server and predict follow within IDENTIFY_REFRESH_SECONDS."""
    _change(reference_id, "relabel", reason, _current(reference_id, version), curator, species=species,
            as_written=as_written)


@references.command("retire")
@_change_options
@reports_errors
def references_retire(reference_id: str, reason: str, version: int | None, curator: str | None) -> None:
    """Take a reference out of every search and index; it is kept, and can be restored."""
    _change(reference_id, "retire", reason, _current(reference_id, version), curator)


@references.command("restore")
@_change_options
@reports_errors
def references_restore(reference_id: str, reason: str, version: int | None, curator: str | None) -> None:
    """Bring a retired reference back."""
    _change(reference_id, "restore", reason, _current(reference_id, version), curator)


def _current(reference_id: str, version: int | None) -> int:
    """The version given, else the reference's current one (a person at a shell changes what they see)."""
    return version if version is not None else _records().get(reference_id).version


@references.command("check")
@click.option("--index", "index_name", help="The index to check [default: IDENTIFY_INDEX].")
@click.option("--model", help="Also weigh the classifier: this birder model (the index's) runs once on every "
                              "reference photo.")
@click.option("--min-references", default=3, show_default=True, type=click.IntRange(min=1),
              help="Species with fewer active references are listed as thin.")
@click.option("--json", "json_output", is_flag=True, help="The report as one JSON object.")
@reports_errors
def references_check(index_name: str | None, model: str | None, min_references: int, json_output: bool) -> None:
    """A health check of the reference set: likely mislabelled references, near-duplicates under different
    species, thin species and the pairs the index confuses most. Changes nothing."""
    report, _ = _health(index_name, model, min_references)
    if json_output:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(f"{report.references} references of {report.species} species"
               + (" (neighbours and classifier)" if report.classifier else " (neighbours)"))
    for m in report.mislabelled:
        click.echo(f"likely mislabelled: {m.id} labelled {m.species}, the evidence names {m.suggested} "
                   f"(quality {m.quality:.3f}; {m.agreeing} neighbours agree with its label)")
    for d in report.near_duplicates:
        click.echo(f"near-duplicates under two species: {d.a} ({d.species_a}) and {d.b} ({d.species_b}), "
                   f"similarity {d.similarity:.3f}")
    for species, count in report.thin_species.items():
        click.echo(f"thin: {species} has {count} reference{'s' if count != 1 else ''}")
    for pair in report.confused_pairs[:5]:
        click.echo(f"confused: {pair['a']} / {pair['b']}: {pair['count']} nearest neighbours across")
    click.echo("relabel or retire with: identify references relabel|retire ID --reason ...", err=True)


def _health(index_name: str | None, model: str | None, min_references: int):  # type: ignore[no-untyped-def]
    """The health report of an index's active references, and those references (labels as answers name them)."""
    from identify.reference_health import check_reference_set, reference_set
    from identify.scoring import SpeciesNames

    settings = _settings()
    parts = _parts(settings)
    chosen = reference_set(parts.references, index_name or settings.service.index)
    classifier, classes = (None, []) if model is None else _classifier_of(model, chosen.paths, chosen.labels)
    names = SpeciesNames(classes or parts.store.model_classes(), parts.references.label_taxa())
    return check_reference_set(chosen, names.canonical, settings.fusion, min_references, classifier, classes)


def _classifier_of(model: str, paths: list[str], labels: list[str]):  # type: ignore[no-untyped-def]
    """The classifier's probabilities of each reference photo (a row of zeros where a photo no longer reads)."""
    import numpy as np

    from identify.backbone import load_backbone
    from index_builder.dataset import default_workers, embed_sources
    from index_builder.sources import ReferenceSource
    from pathlib import Path

    backbone = load_backbone(model)
    sources = [ReferenceSource(Path(path), label) for path, label in zip(paths, labels, strict=True)]
    embedded = embed_sources(backbone, sources, 32, default_workers(), False, "references")
    probabilities = np.zeros((len(paths), len(backbone.identity.classes)), dtype=np.float32)
    probabilities[embedded.positions] = embedded.probabilities
    return probabilities, list(backbone.identity.classes)
