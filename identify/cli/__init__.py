"""The `identify` command line: one subcommand per task, a module per group of them (identify.cli.base holds
what they share). Errors print one line with a stable code."""

from identify.cli import build, curation, data, evaluation, identification, references, serving  # noqa: F401
from identify.cli.base import main

__all__ = ["main"]
