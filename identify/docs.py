"""The parts of the documentation that are generated from the code, so they cannot drift from it: the error-code
table (identify.error_codes), the configuration reference (identify.config) and the command-line reference
(identify.cli's click commands). `python -m identify.docs` rewrites each generated block between its markers;
`python -m identify.docs --check` exits 1 when one is out of date (`make lint` runs it)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Callable

import click

from identify.error_codes import CODES

ROOT = Path(__file__).resolve().parent.parent


def error_table() -> str:
    """Every registered code: its HTTP status (— for the command line) and when it happens."""
    rows = ["| code | HTTP | when |", "|---|---|---|"]
    rows += [f"| `{code}` | {entry.status or '—'} | {entry.when} |" for code, entry in CODES.items()]
    return "\n".join(rows)


def _default(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def config_table() -> str:
    """Every setting: its environment variable, its place in identify.toml, its default and what it does."""
    from identify.config import SETTING_DOCS, FusionConfig, ServiceConfig

    rows = ["| environment | `identify.toml` | default | meaning |", "|---|---|---|---|",
            "| `IDENTIFY_DATA_DIR` | — | `var` | data dir: database, indexes, photos, models |",
            "| `IDENTIFY_DATABASE_URL` | `database_url` | `sqlite:///$IDENTIFY_DATA_DIR/identify.db` | any SQLAlchemy "
            "URL, e.g. `postgresql://user@host/db` |",
            "| `IDENTIFY_TAXONOMY_MAPPING` | `taxonomy_mapping` | `$IDENTIFY_DATA_DIR/taxonomy.csv` if present | CSV "
            "`label,scientific_name` overriding name resolution |",
            "| `IDENTIFY_CALIBRATION` | `[calibration] method` | `none` | `confidence`, `temperature`, `isotonic` or "
            "`none` (`none` switches a stored calibration off); its fitted values are written by `evaluate "
            "--write-config` |"]
    for section, settings in (("fusion", FusionConfig), ("service", ServiceConfig)):
        for field in dataclasses.fields(settings):
            rows.append(f"| `IDENTIFY_{field.name.upper()}` | `[{section}] {field.name}` | {_default(field.default)} "
                        f"| {SETTING_DOCS[field.name]} |")
    rows.append("| `MODELS_DIR`, `LOG_LEVEL` | — | `models`, `WARNING` | birder's own settings |")
    return "\n".join(rows)


def _commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found: list[tuple[list[str], click.Command]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            found += _commands(command, [*path, name])
        else:
            found.append(([*path, name], command))
    return found


def cli_reference() -> str:
    """Every command: its usage, what it does (its docstring) and its options, as `--help` shows them."""
    from identify.cli import main

    out: list[str] = []
    for path, command in _commands(main, ["identify"]):
        context = click.Context(command, info_name=" ".join(path))
        usage = " ".join([*path, *command.collect_usage_pieces(context)])
        out += [f"### `{' '.join(path)}`", "", f"```\n{usage}\n```", "", (command.help or "").strip(), ""]
        help_option = command.get_help_option(context)  # -h/--help, on every command: not worth a row each
        options = [record for param in command.get_params(context)
                   if isinstance(param, click.Option) and param is not help_option
                   and (record := param.get_help_record(context))]
        if options:
            out += ["| option | what |", "|---|---|"]
            out += [f"| `{flags.replace('|', chr(92) + '|')}` | {text.replace('|', chr(92) + '|')} |"
                    for flags, text in options]
            out.append("")
    return "\n".join(out).rstrip()


# block name -> (the file it stands in, below the repository root; what makes it)
BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "errors": ("docs/reference/errors.md", error_table),
    "configuration": ("docs/reference/configuration.md", config_table),
    "cli": ("docs/reference/cli.md", cli_reference),
}


def _marked(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- /generated:{name} -->)", re.S)


def render(text: str, name: str, make: Callable[[], str]) -> str:
    """`text` with its generated block `name` made anew."""
    match = _marked(name).search(text)
    if match is None:
        raise ValueError(f"no generated:{name} block")
    return text[:match.start(2)] + make() + "\n" + text[match.end(2):]


def main(argv: list[str]) -> int:
    stale = []
    for name, (relative, make) in BLOCKS.items():
        path = ROOT / relative
        text = path.read_text(encoding="utf-8")
        fresh = render(text, name, make)
        if fresh != text:
            stale.append(relative)
            if "--check" in argv:  # say what differs, so a stale block is found at a glance
                import difflib

                sys.stderr.writelines(list(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True),
                                                                relative, "generated", n=0))[:40])
            if "--check" not in argv:
                path.write_text(fresh, encoding="utf-8")
    if stale and "--check" in argv:
        print(f"generated blocks out of date in {', '.join(stale)}: run python -m identify.docs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
