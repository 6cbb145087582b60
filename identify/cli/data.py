"""Reference data and the database: occurrences, taxonomy, db."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import click

from identify.cli.base import (
    _labelled,
    _settings,
    _parts,
    json_option,
    main,
    network_option,
    reports_errors,
)
from identify.errors import IdentifyError


@main.group()
def occurrences() -> None:
    """Occurrence records for the place-and-season prior (GBIF downloads, CSV)."""


@occurrences.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@reports_errors
def occurrences_import(path: Path, json_output: bool) -> None:
    """Count a GBIF occurrence download (Darwin Core Archive .zip) or a CSV with scientificName,
    decimalLatitude, decimalLongitude, eventDate into the prior (per H3 cell, week and taxon)."""
    report = _parts(_settings()).occurrences.import_file(path)
    if json_output:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(f"imported {report.imported} of {report.records} records ({report.skipped} without a usable "
               f"position, date or name) into {report.cells} cells, {report.taxa} taxa")


@main.group()
def taxonomy() -> None:
    """Bird names: which labels resolve to taxa, and the suggestions curators see."""


@taxonomy.command("check")
@click.option("--model", help="Birder pretrained model name or path to a .pt checkpoint: check its class labels.")
@network_option
@click.option("--references", "references_path", type=click.Path(path_type=Path),
              help="Species folders or a CSV manifest: check their labels.")
@click.option("--mapping", type=click.Path(path_type=Path),
              help="CSV label,scientific_name overriding resolution [default: IDENTIFY_TAXONOMY_MAPPING].")
@json_option
@reports_errors
def taxonomy_check(model: str | None, network: str | None, references_path: Path | None, mapping: Path | None,
                   json_output: bool) -> None:
    """List the labels that resolve to no taxon, with the nearest names of the taxonomy.

    Exits 0 when every label resolves, 1 otherwise (unresolved labels still work, as written)."""
    from identify.taxonomy import Taxonomy

    if not model and not references_path:
        raise IdentifyError("bad_arguments", "give --model, --references, or both")
    names = Taxonomy.with_mapping_file(mapping) if mapping else _parts(_settings()).taxonomy
    labels: list[str] = []
    if references_path is not None:
        labels += [source.species for source in _labelled(references_path)]  # validated before the model loads
    if model:
        from identify.backbone import model_classes

        labels = model_classes(model, network) + labels
    labels = list(dict.fromkeys(labels))
    resolved = names.resolve_all(labels)
    missing = [label for label, taxon in resolved.items() if taxon is None]
    suggestions = {label: [s.name for s in names.suggest(label, limit=3)] for label in missing}
    if json_output:
        click.echo(json.dumps({"labels": len(labels), "resolved": len(labels) - len(missing),
                               "unresolved": [{"label": label, "suggestions": suggestions[label]} for label in missing],
                               "taxa": {label: _taxon_json(t) for label, t in resolved.items()}}))
    else:
        click.echo(f"{len(labels) - len(missing)} of {len(labels)} labels resolve to a taxon")
        for label in missing:
            close = ", ".join(suggestions[label]) or "nothing close"
            click.echo(f"  unresolved: {label!r} (nearest: {close})")
        if missing:
            click.echo("map them in a CSV (label,scientific_name) named by IDENTIFY_TAXONOMY_MAPPING "
                       "or <data dir>/taxonomy.csv; unresolved labels keep working as written")
    if missing:
        sys.exit(1)


@taxonomy.command("sync")
@click.option("--all", "relink", is_flag=True, help="Resolve every label again (after the mapping file changed).")
@reports_errors
def taxonomy_sync(relink: bool) -> None:
    """Link the database's species labels to their taxa (new labels are linked as they come; run this after
    changing the mapping file)."""
    resolved, unresolved = _parts(_settings()).references.link_taxa(relink=relink)
    click.echo(f"linked {resolved} labels to taxa; {unresolved} resolve to none (kept as written)")


@taxonomy.command("suggest")
@click.argument("text")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 50))
@json_option
@reports_errors
def taxonomy_suggest(text: str, limit: int, json_output: bool) -> None:
    """Names of the taxonomy for TEXT, as a curator sees them while typing."""
    from identify.taxonomy import Taxonomy

    found = Taxonomy().suggest(text, limit)
    if json_output:
        click.echo(json.dumps([{"name": s.name, "taxon": _taxon_json(s.taxon)} for s in found]))
        return
    for s in found:
        click.echo(f"{s.name:<40} {s.taxon.scientific_name:<32} {s.taxon.rank:<10} {s.taxon.family or ''}")


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


def _migrate(step: Callable[..., None], revision: str) -> None:
    from identify.storage import current_revision, make_engine

    engine = make_engine(_settings().database_url)
    step(engine, revision)
    click.echo(f"database at revision {current_revision(engine) or 'base (empty)'}")


@db.command()
@click.option("--revision", default="head", show_default=True)
@reports_errors
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    from identify.storage import upgrade_database

    _migrate(upgrade_database, revision)


@db.command()
@click.argument("revision")
@reports_errors
def downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    from identify.storage import downgrade_database

    _migrate(downgrade_database, revision)


@db.command()
@reports_errors
def current() -> None:
    """Print the database's revision."""
    from identify.storage import current_revision, make_engine

    click.echo(current_revision(make_engine(_settings().database_url)) or "empty (run: identify db upgrade)")


def _taxon_json(taxon):  # type: ignore[no-untyped-def]
    """identify.answers.taxon_json, imported when a command prints JSON (it brings the identifier's imports)."""
    from identify.answers import taxon_json

    return taxon_json(taxon)
