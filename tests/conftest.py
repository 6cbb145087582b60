"""Shared fixtures: random-weight birder checkpoints, generated species photos, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

POSTGRES_ADMIN_URL = os.environ.get("IDENTIFY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPECIES = ["Passer_domesticus", "Corvus_cornix", "Columba_livia"]


def write_birder_checkpoint(network: str, classes: list[str], size: int, path: Path) -> Path:
    """A random-weight checkpoint exactly as birder writes one (no `network` entry: birder does not store it)."""
    import birder
    from birder.data.transforms.classification import get_rgb_stats
    from birder.model_registry import registry
    from birder.net.base import get_signature

    torch.manual_seed(0)
    net = registry.net_factory(network, len(classes), 3, size=(size, size)).eval()
    torch.save(
        {
            "state": net.state_dict(),
            "birder_version": birder.__version__,
            "task": net.task,
            "signature": get_signature(input_shape=(1, 3, size, size), num_outputs=len(classes)),
            "class_to_idx": {name: i for i, name in enumerate(classes)},
            "rgb_stats": get_rgb_stats("birder"),
        },
        path,
    )
    return path


def species_photo(species_index: int, variant: int, size: int = 96) -> Image.Image:
    """A photo of a made-up species: its own colour and shape, with position and noise varying."""
    rng = random.Random(1000 * species_index + variant)
    base = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (200, 180, 40)][species_index % 4]
    image = Image.new("RGB", (size, size), tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in base))
    draw = ImageDraw.Draw(image)
    x, y = rng.randint(5, size // 2), rng.randint(5, size // 2)
    if species_index % 2:
        draw.ellipse([x, y, x + size // 3, y + size // 3], fill=(255, 255, 255))
    else:
        draw.rectangle([x, y, x + size // 3, y + size // 4], fill=(0, 0, 0))
    noise = np.random.default_rng(1000 * species_index + variant).integers(-10, 10, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image).astype(np.int16) + noise, 0, 255).astype(np.uint8))


def make_species_folder(root: Path, species: list[str], per: int, first_variant: int = 0) -> Path:
    for s_index, name in enumerate(species):
        (root / name).mkdir(parents=True, exist_ok=True)
        for variant in range(first_variant, first_variant + per):
            species_photo(s_index, variant).save(root / name / f"{name}_{variant}.jpg", quality=92)
    return root


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


def jpeg_bytes(image: Image.Image, **save_options: object) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save_options)
    return buffer.getvalue()


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
        service=ServiceConfig(model=str(tiny_checkpoint), index="birds", refresh_seconds=0, secret_key="test-key"),
    )


@pytest.fixture
def make_service(web_settings, tiny_backbone, refs):  # type: ignore[no-untyped-def]
    """A factory of services (each one a 'worker process') over one database and one published index."""
    from identify.service import IdentificationService
    from identify.storage import Store, make_engine

    build_reference_index(web_settings, tiny_backbone, refs, "birds")
    engines = []

    def make(settings=None):  # type: ignore[no-untyped-def]
        settings = settings or web_settings
        engine = make_engine(settings.database_url)
        engines.append(engine)
        return IdentificationService(settings, tiny_backbone, Store(engine))

    yield make
    for engine in engines:
        engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, tiny_backbone) -> Iterator[dict]:
    """A real `identify serve` on loopback over the tiny model, with an index and a curator; its base URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    from identify.config import FusionConfig, ServiceConfig, Settings
    from identify.curators import Curators
    from identify.storage import Store, make_engine

    root = tmp_path_factory.mktemp("served")
    settings = Settings(root / "var", f"sqlite:///{root / 'var' / 'identify.db'}", FusionConfig(k=1),
                        ServiceConfig(index="birds"))
    build_reference_index(settings, tiny_backbone, make_species_folder(root / "refs", SPECIES, per=4), "birds")
    engine = make_engine(settings.database_url)
    Curators(Store(engine)).create("ana", "correct horse battery")
    engine.dispose()
    port = free_port()
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(settings.data_dir), "IDENTIFY_MODEL": str(tiny_checkpoint),
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
        yield {"base": base, "log": root / "serve.log", "root": root}
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
