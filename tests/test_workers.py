"""Several gunicorn workers on one PostgreSQL database, as deployed: what one worker stores, every other one
finds, however many rows the others add between its searches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from identify.config import FusionConfig, ServiceConfig, Settings
from tests.conftest import SPECIES, _postgres_database, build_reference_index, free_port, jpeg_bytes, \
    make_species_folder, species_photo

UPLOADS = 2400  # more than the live index's look-back (1000), as in the finding
CLIENTS = 16


def _multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = "identify-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"b.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def gunicorn_on_postgres(tmp_path: Path, tiny_checkpoint: Path, tiny_backbone) -> Iterator[str]:  # type: ignore[no-untyped-def]
    for url in _postgres_database():
        settings = Settings(tmp_path / "var", url, FusionConfig(), ServiceConfig(index="birds"))
        build_reference_index(settings, tiny_backbone, make_species_folder(tmp_path / "refs", SPECIES, per=2), "birds")
        port = free_port()
        env = {**os.environ, "IDENTIFY_DATA_DIR": str(settings.data_dir), "IDENTIFY_DATABASE_URL": url,
               "IDENTIFY_MODEL": str(tiny_checkpoint), "IDENTIFY_INDEX": "birds", "IDENTIFY_IDENTIFY_LIMIT": "off",
               "IDENTIFY_REFRESH_SECONDS": "0.5"}
        log = open(tmp_path / "gunicorn.log", "w")
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--workers", "2", "--threads", "4", "--bind",
             f"127.0.0.1:{port}", "--timeout", "120", "identify.web:create_app()"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    _get(base + "/api/v1/status")
                    break
                except OSError:
                    assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()[-2000:]
                    time.sleep(0.25)
            yield base
        finally:
            server.terminate()
            server.wait(30)
            log.close()


def test_every_worker_covers_every_sighting_after_a_burst(gunicorn_on_postgres):
    base = gunicorn_on_postgres
    photos = [_multipart(jpeg_bytes(species_photo(i % 3, 1000 + i % 50, size=64))) for i in range(UPLOADS)]

    def upload(photo: tuple[bytes, str]) -> int:
        body, content_type = photo
        request = urllib.request.Request(base + "/api/v1/identify", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        statuses = list(pool.map(upload, photos))
    assert statuses.count(201) == UPLOADS

    time.sleep(1.0)  # past the refresh interval: each worker looks in SQL at its next request
    seen: dict[int, int] = {}
    for _ in range(200):  # separate connections: the kernel hands them to either worker
        status = _get(base + "/api/v1/status")
        seen[status["process"]] = status["sightings"]
        if len(seen) == 2:
            break
    assert len(seen) == 2, "only one worker answered"
    assert set(seen.values()) == {UPLOADS}, seen
