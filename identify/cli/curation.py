"""Curators and their records: create-curator, curators, export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from identify.cli.base import (
    _settings,
    _parts,
    main,
    reports_errors,
)
from identify.errors import IdentifyError


@main.command("create-curator")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--generate-password", is_flag=True, help="Make up a password and print it.")
@click.option("--reset", is_flag=True, help="Set a new password (and token) for an existing curator.")
@reports_errors
def create_curator(name: str, password_stdin: bool, generate_password: bool, reset: bool) -> None:
    """Create a curator who may review sightings; prints their API token (shown once)."""
    import secrets


    if password_stdin and generate_password:
        raise IdentifyError("bad_arguments", "give --password-stdin or --generate-password, not both")
    if generate_password:
        password = secrets.token_urlsafe(12)
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    token = _parts(_settings()).curators.create(name, password, replace=reset)
    click.echo(f"curator {name!r} {'ready (password and token set anew)' if reset else 'created'}")
    if generate_password:
        click.echo(f"password: {password}")
    click.echo(f"API token (shown once; send as 'Authorization: Bearer <token>'): {token}")


@main.group()
def curators() -> None:
    """Curators' access: list them, disable or enable one, issue a new API token."""


def _curators():  # type: ignore[no-untyped-def]
    return _parts(_settings()).curators


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
    """No login and no token for NAME from now on (the token is revoked for good), and every session of theirs
    ends; their reviews stay."""
    _curators().set_disabled(name, True)
    click.echo(f"curator {name!r} disabled")


@curators.command("enable")
@click.argument("name")
@reports_errors
def curators_enable(name: str) -> None:
    """Let a disabled curator log in again (their old sessions stay ended, their old token stays revoked:
    `identify curators token NAME` issues a new one)."""
    _curators().set_disabled(name, False)
    click.echo(f"curator {name!r} enabled; their old API token stays revoked (identify curators token {name} "
               "issues a new one)")


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
    from identify.export import export_rows, installation_id, write_export

    settings = _settings()
    rows = export_rows(_parts(settings).store, status)
    count = write_export(rows, out, fmt, installation_id(settings.data_dir),
                         (settings.service.public_url or "") if media_url is None else media_url)
    click.echo(f"wrote {count} {status} sightings to {out} ({fmt})")
