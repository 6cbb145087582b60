"""Shared fixtures: random-weight birder checkpoints, generated species photos, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from identify.synthetic import free_port, jpeg_bytes, make_species_folder, species_photo, write_birder_checkpoint

__all__ = ["free_port", "jpeg_bytes", "make_species_folder", "species_photo", "write_birder_checkpoint"]

# Every JSON answer of the API is checked against its schema in the OpenAPI document (identify.web.openapi).
os.environ.setdefault("IDENTIFY_CHECK_RESPONSES", "1")
POSTGRES_ADMIN_URL = os.environ.get("IDENTIFY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPECIES = ["Passer_domesticus", "Corvus_cornix", "Columba_livia"]


def kept_as(label: str) -> str:
    """The species a test label is kept and answered under: its species-rank taxon's scientific name
    (identify.taxonomy.species_key), which for these folder labels is the label with spaces."""
    return label.replace("_", " ")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test run on the postgresql parameter of `database_url` is a postgres test (make test-fast skips them)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenet_v3_small_0_25 at 96 px over SPECIES, in a file whose name does not say the network."""
    return write_birder_checkpoint("mobilenet_v3_small_0_25", SPECIES, 96, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model (other weights and embedding size), named as birder names files."""
    return write_birder_checkpoint("mobilenet_v3_small_0_5", SPECIES, 96,
                                   tmp_path_factory.mktemp("ckpt") / "mobilenet_v3_small_0_5_test.pt")


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    return make_species_folder(tmp_path / "refs", SPECIES, per=6)


def _postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"identify_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the issue requires PostgreSQL: a missing server fails, it does not skip
        pytest.fail(f"local PostgreSQL at {POSTGRES_ADMIN_URL} is needed for the SQL tests: {exc}")
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'identify.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data dir, with the default SQLite database inside it."""
    path = tmp_path / "var"
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(path))
    monkeypatch.delenv("IDENTIFY_DATABASE_URL", raising=False)
    return path


@pytest.fixture(scope="session")
def tiny_backbone(tiny_checkpoint: Path):
    from identify.backbone import load_backbone

    return load_backbone(str(tiny_checkpoint))


def build_reference_index(settings, backbone, refs: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    """Build and publish index `name` over `refs`, in this process."""
    from identify.storage import Store, make_engine, upgrade_database
    from index_builder.runner import BuildOptions, IndexBuilder
    from index_builder.sources import from_folder

    engine = make_engine(settings.database_url)
    upgrade_database(engine)
    IndexBuilder(settings, backbone, Store(engine), BuildOptions(name, batch_size=8, workers=0, progress=False)).run(
        from_folder(refs)
    )
    engine.dispose()


@pytest.fixture
def web_settings(tmp_path: Path, database_url: str, tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    """Settings of a service over the tiny model. One neighbour votes (k=1), so an answer follows the nearest
    reference, and confidence needs 0.9, so photos of random-weight models land in the review queue."""
    from identify.config import FusionConfig, ServiceConfig, Settings

    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        fusion=FusionConfig(k=1, confident_score=0.9),
        # One curator's review teaches at once here; the second opinion (on by default) is tested on its own.
        service=ServiceConfig(model=str(tiny_checkpoint), index="birds", refresh_seconds=0, secret_key="test-key",
                              second_opinion="off"),
    )


@pytest.fixture(scope="session")
def sqlite_birds(tmp_path_factory: pytest.TempPathFactory, tiny_backbone) -> Path:  # type: ignore[no-untyped-def]
    """The `birds` index over SPECIES (6 photos each) built once into a SQLite database and a data dir: what
    `make_service` copies for each SQLite test instead of building it again (a second a test)."""
    from identify.config import Settings

    root = tmp_path_factory.mktemp("sqlite-birds")
    refs = make_species_folder(root / "refs", SPECIES, per=6)
    build_reference_index(Settings(root / "var", f"sqlite:///{root / 'identify.db'}"), tiny_backbone, refs, "birds")
    return root


def _published_birds(settings, backbone, refs: Path, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    """The `birds` index in `settings`' database and data dir: copied from `sqlite_birds` on SQLite (the same
    rows and files a build makes), built on PostgreSQL."""
    import shutil

    if not settings.database_url.startswith("sqlite:///"):
        build_reference_index(settings, backbone, refs, "birds")
        return
    template: Path = request.getfixturevalue("sqlite_birds")
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(template / "identify.db", database)
    shutil.copytree(template / "var", settings.data_dir, symlinks=True)


@pytest.fixture
def make_service(web_settings, tiny_backbone, refs, request):  # type: ignore[no-untyped-def]
    """A factory of services (each one a 'worker process') over one database and one published index."""
    from identify.service import IdentificationService
    from identify.storage import Store, make_engine

    _published_birds(web_settings, tiny_backbone, refs, request)
    engines = []

    def make(settings=None):  # type: ignore[no-untyped-def]
        settings = settings or web_settings
        engine = make_engine(settings.database_url)
        engines.append(engine)
        return IdentificationService(settings, tiny_backbone, Store(engine))

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def service(make_service):  # type: ignore[no-untyped-def]
    """One service (one worker) over the tiny model and the `birds` index."""
    return make_service()


@pytest.fixture
def client(service):  # type: ignore[no-untyped-def]
    """Flask's test client of the app over `service` (for the API; the page tests use one with CSRF)."""
    from identify.web import create_app

    return create_app(service.settings, service).test_client()


@pytest.fixture
def token(service) -> str:  # type: ignore[no-untyped-def]
    """The API token of curator `ana`."""
    return service.curators.create("ana", "correct horse battery")


def page_token(html: str) -> str:
    """The CSRF token a page's forms carry."""
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def log_in(client, name: str = "ana", password: str = "correct horse battery"):  # type: ignore[no-untyped-def]
    """Sign `client` in on the login page, as a curator's browser does; the client, for chaining."""
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"csrf_token": page_token(page), "name": name, "password": password})
    return client


@contextlib.contextmanager
def serving(root: Path, checkpoint: Path, backbone) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    """A real `identify serve` on loopback over the tiny model, with an index and a curator; its base URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    from identify.config import FusionConfig, ServiceConfig, Settings
    from identify.curators import Curators
    from identify.storage import Store, make_engine

    settings = Settings(root / "var", f"sqlite:///{root / 'var' / 'identify.db'}", FusionConfig(k=1),
                        ServiceConfig(index="birds"))
    build_reference_index(settings, backbone, make_species_folder(root / "refs", SPECIES, per=4), "birds")
    engine = make_engine(settings.database_url)
    Curators(Store(engine)).create("ana", "correct horse battery")
    engine.dispose()
    port = free_port()
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(settings.data_dir), "IDENTIFY_MODEL": str(checkpoint),
           "IDENTIFY_INDEX": "birds", "IDENTIFY_K": "1", "IDENTIFY_CONFIDENT_SCORE": "0.9"}
    env.pop("IDENTIFY_DATABASE_URL", None)
    log = open(root / "serve.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "identify"), "serve", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/api/v1/openapi.json", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    break
                time.sleep(0.25)
        else:
            pytest.fail(f"identify serve did not answer: {(root / 'serve.log').read_text()[-2000:]}")
        if server.poll() is not None:
            pytest.fail(f"identify serve exited: {(root / 'serve.log').read_text()[-2000:]}")
        yield {"base": base, "log": root / "serve.log", "root": root, "database_url": settings.database_url, "env": env}
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@contextlib.contextmanager
def gunicorn_serving(root: Path, checkpoint: Path, backbone, database_url: str, per: int = 2,  # type: ignore[no-untyped-def]
                     **env_extra: str) -> Iterator[dict]:
    """Two gunicorn workers over `database_url` and the tiny model, with an index; their base URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    from identify.config import FusionConfig, ServiceConfig, Settings

    settings = Settings(root / "var", database_url, FusionConfig(), ServiceConfig(index="birds"))
    build_reference_index(settings, backbone, make_species_folder(root / "refs", SPECIES, per=per), "birds")
    port = free_port()
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(settings.data_dir), "IDENTIFY_DATABASE_URL": database_url,
           "IDENTIFY_MODEL": str(checkpoint), "IDENTIFY_INDEX": "birds", "IDENTIFY_IDENTIFY_LIMIT": "off",
           "IDENTIFY_REFRESH_SECONDS": "0.5", **env_extra}
    log = open(root / "gunicorn.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:identify.web.gunicorn_config",  # the README's
         "--workers", "2", "--bind", f"127.0.0.1:{port}", "identify.web:create_app()"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/api/v1/status", timeout=30)
                break
            except OSError:
                assert server.poll() is None, (root / "gunicorn.log").read_text()[-2000:]
                time.sleep(0.25)
        yield {"base": base, "log": root / "gunicorn.log", "root": root, "database_url": database_url}
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, tiny_backbone) -> Iterator[dict]:
    """A server the browser tests share."""
    with serving(tmp_path_factory.mktemp("served"), tiny_checkpoint, tiny_backbone) as server:
        yield server


def store_sightings(service, count: int, seed: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    """`count` sightings with random embeddings, straight into SQL as another worker's uploads would land (no
    forward pass, no index of `service` told); returns their embeddings."""
    from identify.sightings import NewSighting, PhotoOfSighting

    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((count, service.backbone.identity.embedding_dim)).astype(np.float32)
    for n, embedding in enumerate(embeddings):
        name = f"{seed:016x}{n:048x}"
        service.sightings.add(NewSighting(photos=[PhotoOfSighting(name, f"{name}.jpg", embedding)],
                                          model_id=service.model_id, embedding=embedding, decision="needs_review",
                                          reasons=[], uncertainty=0.5, predictions=[], neighbours=[]))
    return embeddings
