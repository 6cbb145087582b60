"""`identify serve` on loopback, over real HTTP: the identify contract and its errors, as a client sees them."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid

import pytest

from tests.conftest import jpeg_bytes, species_photo

pytestmark = pytest.mark.slow  # a real `identify serve` in a subprocess


def post_image(url: str, data: bytes, filename: str, content_type: str) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_prints_its_address(served):
    assert f"on {served['base']}/" in served["log"].read_text()


def test_identify_a_jpeg(served):
    status, body = post_image(f"{served['base']}/api/v1/identify", jpeg_bytes(species_photo(1, 40)), "b.jpg", "image/jpeg")
    assert status == 201
    assert {"sighting_id", "decision", "species", "neighbours", "model"} <= set(body)
    assert set(body["species"][0]) == {"name", "display_name", "score", "classifier", "knn", "fused", "taxon"}
    assert body["decision"] in ("confident", "needs_review", "no_match")


def test_a_text_file_is_not_an_image(served):
    status, body = post_image(f"{served['base']}/api/v1/identify", b"hello, I am text\n" * 10, "notes.txt", "text/plain")
    assert (status, body["error"]["code"]) == (400, "not_an_image")


def test_25_megabytes_is_too_large(served):
    data = jpeg_bytes(species_photo(1, 41)) + os.urandom(25 * 2**20)
    status, body = post_image(f"{served['base']}/api/v1/identify", data, "big.jpg", "image/jpeg")
    assert (status, body["error"]["code"]) == (413, "file_too_large")
