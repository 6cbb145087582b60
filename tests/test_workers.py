"""Several gunicorn workers on one PostgreSQL database, as deployed: what one worker stores, every other one
finds, however many rows the others add between its searches."""

from __future__ import annotations

import http.client
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
from tests.conftest import SPECIES, _postgres_database, build_reference_index, free_port, gunicorn_serving, jpeg_bytes, \
    make_species_folder, species_photo

UPLOADS = 2400  # more than the live index's look-back (1000), as in the finding
CLIENTS = 16

pytestmark = pytest.mark.slow


def _multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = "identify-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"b.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _get(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        return json.loads(response.read())


def _curator_token(database_url: str, name: str = "ivy") -> str:
    """A curator's token: /status names the worker that answered to curators only."""
    from identify.curators import Curators
    from identify.storage import Store, make_engine

    engine = make_engine(database_url)
    try:
        return Curators(Store(engine)).create(name, "correct horse battery")
    finally:
        engine.dispose()


@pytest.fixture
def gunicorn_server(tmp_path: Path, tiny_checkpoint: Path, tiny_backbone) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    """Two gunicorn workers on a fresh PostgreSQL database: base URL and database URL."""
    for url in _postgres_database():
        with gunicorn_serving(tmp_path, tiny_checkpoint, tiny_backbone, url) as server:
            yield server


@pytest.mark.postgres
def test_every_worker_covers_every_sighting_after_a_burst(gunicorn_server):
    base, token = gunicorn_server["base"], _curator_token(gunicorn_server["database_url"])
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
        status = _get(base + "/api/v1/status", token)
        seen[status["process"]] = status["sightings"]
        if len(seen) == 2:
            break
    assert len(seen) == 2, "only one worker answered"
    assert set(seen.values()) == {UPLOADS}, seen


def _serve(root: Path, checkpoint: Path, env_extra: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "IDENTIFY_DATA_DIR": str(root / "var"), "IDENTIFY_MODEL": str(checkpoint),
           "IDENTIFY_INDEX": "birds", "IDENTIFY_IDENTIFY_LIMIT": "off", **(env_extra or {})}
    env.pop("IDENTIFY_DATABASE_URL", None)
    server = subprocess.Popen([str(Path(sys.executable).parent / "identify"), "serve", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            _get(base + "/api/v1/status")
            return server, base
        except OSError:
            assert server.poll() is None, "identify serve exited"
            time.sleep(0.25)
    raise AssertionError("identify serve did not answer")


def _upload(base: str, photo: bytes) -> str:
    body, content_type = _multipart(photo)
    request = urllib.request.Request(base + "/api/v1/identify", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["sighting_id"]


@pytest.fixture
def served_root(tmp_path: Path, tiny_backbone) -> Path:  # type: ignore[no-untyped-def]
    settings = Settings(tmp_path / "var", f"sqlite:///{tmp_path / 'var' / 'identify.db'}", FusionConfig(),
                        ServiceConfig(index="birds"))
    build_reference_index(settings, tiny_backbone, make_species_folder(tmp_path / "refs", SPECIES, per=2), "birds")
    return tmp_path


def test_no_acknowledged_upload_is_lost_when_the_server_is_killed(served_root, tiny_checkpoint):
    """SIGKILL under load from 8 clients: every upload answered 201 before the kill is there after a restart,
    with its photo; the ones cut off are simply not there."""
    import signal
    import threading

    server, base = _serve(served_root, tiny_checkpoint)
    acknowledged: list[str] = []
    stop = threading.Event()

    def client(number: int) -> None:
        variant = 0
        while not stop.is_set():
            variant += 1
            try:
                acknowledged.append(_upload(base, jpeg_bytes(species_photo(number % 3, 2000 + 50 * number + variant,
                                                                           size=64))))
            except (OSError, http.client.HTTPException):  # the server is gone, or went in the middle of an answer
                return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 150
    server, base = _serve(served_root, tiny_checkpoint)
    try:
        for sighting_id in acknowledged:
            sighting = _get(f"{base}/api/v1/sightings/{sighting_id}")
            with urllib.request.urlopen(base + sighting["photo_url"], timeout=30) as photo:
                assert photo.status == 200
        assert _get(base + "/api/v1/status")["sightings"] >= len(acknowledged)
    finally:
        server.terminate()
        server.wait(30)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_eight_thousand_requests_from_sixteen_clients_without_an_error_and_with_flat_memory(served_root,
                                                                                              tiny_checkpoint):
    """The service's everyday mix (pages, sightings, similar sightings, name suggestions, status and one upload
    in twenty): no answer other than 2xx, and the server's memory after the last 6,000 requests within 32 MiB of
    what it was after the first 2,000."""
    server, base = _serve(served_root, tiny_checkpoint)
    try:
        seeds = [_upload(base, jpeg_bytes(species_photo(i % 3, 3000 + i, size=64))) for i in range(20)]
        paths = ["/", "/api/v1/status", "/api/v1/taxa?q=sparr"] + \
                [f"/api/v1/sightings/{s}" for s in seeds[:5]] + [f"/api/v1/sightings/{s}/similar" for s in seeds[:5]] + \
                [f"/sightings/{s}" for s in seeds[:3]]

        def request(number: int) -> int:
            if number % 20 == 0:
                _upload(base, jpeg_bytes(species_photo(number % 3, 4000 + number, size=64)))
                return 201
            with urllib.request.urlopen(base + paths[number % len(paths)], timeout=60) as response:
                response.read()
                return response.status

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            first = list(pool.map(request, range(2000)))
            warm = _rss_mib(server.pid)
            rest = list(pool.map(request, range(2000, 8000)))
        end = _rss_mib(server.pid)
        statuses = first + rest
        assert len(statuses) == 8000 and all(200 <= s < 300 for s in statuses)
        print(f"server memory: {warm:.0f} MiB after 2,000 requests, {end:.0f} MiB after 8,000")
        assert end - warm < 32, (warm, end)
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.postgres
def test_a_retired_reference_stops_voting_in_every_worker(gunicorn_server):
    """Issue 23's line: retired through one gunicorn worker, a reference leaves every worker's search within
    the refresh interval (0.5 s here): each worker's status counts one reference fewer, and a photo of it no
    longer finds it, whichever worker answers."""
    base = gunicorn_server["base"]
    token = _curator_token(gunicorn_server["database_url"])
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    photo = jpeg_bytes(species_photo(1, 1))  # a reference photo of the build (per=2: variants 0 and 1)
    body, content_type = _multipart(photo)

    def nearest() -> str:
        request = urllib.request.Request(base + "/api/v1/identify", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["neighbours"][0]["reference_id"]

    reference = nearest()
    with urllib.request.urlopen(urllib.request.Request(base + f"/api/v1/references/{reference}", headers=auth),
                                timeout=30) as response:
        version = json.loads(response.read())["version"]
    retire = urllib.request.Request(base + f"/api/v1/references/{reference}/retire", method="POST", headers=auth,
                                    data=json.dumps({"reason": "blurred", "version": version}).encode())
    with urllib.request.urlopen(retire, timeout=30) as response:
        assert json.loads(response.read())["status"] == "retired"
    time.sleep(1.0)  # past the refresh interval
    seen: dict[int, int] = {}
    for _ in range(200):  # separate connections: the kernel hands them to either worker
        status = _get(base + "/api/v1/status", token)
        seen[status["process"]] = status["index"]["references"]
        if len(seen) == 2:
            break
    assert len(seen) == 2, "only one worker answered"
    assert set(seen.values()) == {2 * len(SPECIES) - 1}, seen
    assert all(nearest() != reference for _ in range(12))  # a dozen uploads: both workers answer some
