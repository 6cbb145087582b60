"""What every command of the `identify` command line shares: the group, the settings and the system of record,
the common options, and errors as one line with a stable code."""

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


def _parts(settings):  # type: ignore[no-untyped-def]
    """The house's parts (identify.parts), wired as the web app wires them; SQL is opened and migrated on
    first use."""
    from identify.parts import Parts

    return Parts(settings)


model_option = click.option("--model", required=True, envvar="IDENTIFY_MODEL", show_envvar=True,
                            help="Birder pretrained model name or path to a .pt checkpoint.")
network_option = click.option("--network", help="Birder network of the checkpoint, when it cannot be told from it.")
json_option = click.option("--json", "json_output", is_flag=True, help="Print JSON instead of text.")
memory_budget_option = click.option(
    "--memory-budget", callback=lambda _c, _p, value: _bytes(value),
    help="Memory the published index may take (e.g. 512MB, 4GiB); past it, auto chooses IVF-PQ.")


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


def _labelled(path: Path):  # type: ignore[no-untyped-def]
    """Labelled photos: species folders, or a CSV manifest."""
    from index_builder.sources import from_folder, from_manifest

    return from_manifest(path) if path.is_file() else from_folder(path)
