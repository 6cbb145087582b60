"""Building and listing indexes: build-index, index-sightings, indexes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from identify.cli.base import (
    _passive_openmp,
    _settings,
    _parts,
    json_option,
    main,
    memory_budget_option,
    model_option,
    network_option,
    reports_errors,
)
from identify.errors import IdentifyError


@main.command("build-index")
@model_option
@network_option
@click.option("--images", type=click.Path(path_type=Path), help="Folder in class-folder layout: Species_name/*.jpg.")
@click.option("--manifest", type=click.Path(path_type=Path), help="CSV with path,species[,lat,lon,observed_at,source,group].")
@click.option("--name", default="default", show_default=True, help="Index name (indexes/<name>/ under the data dir).")
@click.option("--index-type", default="auto", show_default=True,
              type=click.Choice(["auto", "flat", "ivf", "hnsw", "ivfpq"]))
@memory_budget_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader decode workers [default: CPU count, at most 8].")
@click.option("--half", is_flag=True, help="Half precision on a CUDA device.")
@click.option("--compile", "compiled", is_flag=True,
              help="torch.compile the forward: slower to start (tens of seconds the first time), faster per photo.")
@json_option
@reports_errors
def build_index(model: str, network: str | None, images: Path | None, manifest: Path | None, name: str,
                index_type: str, memory_budget: int | None, batch_size: int, workers: int | None, half: bool,
                compiled: bool, json_output: bool) -> None:
    """Embed labelled reference photos and publish a FAISS index. Re-runs embed only new photos."""
    _passive_openmp()
    from identify.backbone import load_backbone
    from index_builder.distributed import Ranks
    from index_builder.runner import BuildOptions, IndexBuilder
    from index_builder.sources import from_folder, from_manifest

    if (images is None) == (manifest is None):
        raise IdentifyError("bad_arguments", "give exactly one of --images DIR or --manifest CSV")
    sources = from_folder(images) if images is not None else from_manifest(manifest)  # type: ignore[arg-type]
    settings = _settings()
    ranks = Ranks.from_environment()  # under torchrun: this process's share of the build
    ranks.start()
    # The model before SQL: a bad model changes nothing.
    backbone = load_backbone(model, network=network, half=half, device=ranks.device())
    if compiled:
        backbone.compile(batch_size)  # compiles at the first batch, so a build with nothing new pays nothing
    parts = _parts(settings)
    if ranks.leader:
        parts.store  # noqa: B018 - opened (and migrated) by rank 0 alone: two migrations at once would race
    ranks.barrier()
    options = BuildOptions(name, index_type, batch_size, workers, progress=sys.stderr.isatty() or not json_output,
                           memory_budget=memory_budget)
    report = IndexBuilder(settings, backbone, parts.store, options, parts.references, ranks).run(sources)
    ranks.finish()
    if json_output:
        click.echo(json.dumps(report.to_dict() if ranks.leader else report.shard_dict()))
        return
    if not ranks.leader:
        click.echo(f"rank {ranks.rank}: embedded {report.embedded}, skipped {report.skipped}, already indexed "
                   f"{report.already_indexed} of its shard")
        return
    click.echo(f"embedded {report.embedded}, skipped {report.skipped}, already indexed {report.already_indexed}, "
               f"duplicates {report.duplicates}, of {report.total} files ({report.images_per_second} img/s)")
    recall = f", recall@10 {report.recall_at_10:.3f}" if report.recall_at_10 is not None else ""
    click.echo(f"index {report.index}: {report.count} vectors, {report.index_type}{recall}"
               + ("" if report.published else " (unchanged)"))


@main.command("index-sightings")
@model_option
@network_option
@memory_budget_option
@json_option
@reports_errors
def index_sightings(model: str, network: str | None, memory_budget: int | None, json_output: bool) -> None:
    """Publish the similar-sightings snapshot of this model's sightings now, planned as build-index plans.

    Servers start from it and read from SQL only the sightings stored after it; they also publish one themselves
    every IDENTIFY_SIMILAR_SNAPSHOT_ROWS new sightings (0 leaves it to this command, e.g. from cron)."""
    from identify.backbone import load_backbone
    from identify.similar import SimilarSightings

    settings = _settings()
    backbone = load_backbone(model, network=network)
    parts = _parts(settings)
    similar = SimilarSightings(settings.indexes_dir, backbone.identity, parts.register(backbone),
                               parts.sightings, refresh_seconds=0, snapshot_rows=0, memory_budget=memory_budget)
    published = similar.snapshot() is not None
    report = {"published": published, "snapshot": str(similar.directory / similar.name), **similar.describe()}
    if json_output:
        click.echo(json.dumps(report))
        return
    recall = f", recall@10 {report['recall_at_10']:.3f}" if report["recall_at_10"] is not None else ""
    click.echo(f"similar sightings of {backbone.identity.name}: {report['snapshot_count']} in the snapshot "
               f"({report['index_type']}{recall}), {report['newer']} newer searched beside it"
               + ("" if published else " (unchanged: no sighting stored a minute ago or more is missing from it)"))


@main.command("indexes")
@json_option
@reports_errors
def indexes(json_output: bool) -> None:
    """List the published indexes: name, model, vectors, index type, size on disk, when built."""
    from identify.vectors.catalog import published_indexes

    settings = _settings()
    found = published_indexes(settings.indexes_dir)
    if json_output:
        click.echo(json.dumps([entry.to_dict() for entry in found]))
        return
    if not found:
        click.echo(f"no index under {settings.indexes_dir} (run: identify build-index)")
        return
    click.echo(f"{'name':<16} {'model':<32} {'vectors':>8} {'type':<6} {'size':>9}  built")
    for entry in found:
        m = entry.manifest
        click.echo(f"{entry.name[:16]:<16} {m.model[:32]:<32} {m.count:>8} {m.index_type:<6} "
                   f"{entry.size_bytes / 2**20:>7.1f}MB  {m.created or 'unknown'}")
