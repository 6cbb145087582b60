"""What the service lets out: no secret of any setting where a setting is shown or logged, no worker id or audit
counts on the public status, cache headers that do not contradict themselves, Retry-After only on a refusal.
Each test failed before its fix (its docstring says how)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from identify.config import redacted
from identify.web import create_app
from tests.conftest import free_port, jpeg_bytes, species_photo
from tests.test_web_api import bearer, upload

SECRET = "s3cret-Pa55"


@pytest.mark.parametrize(("setting", "shown"), [
    (f"redis://127.0.0.1:6379/10?password={SECRET}", "redis://127.0.0.1:6379/10?password=***"),
    (f"redis://:{SECRET}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    (f"rediss://ana:{SECRET}@h:6390/0?ssl_cert_reqs=none", "rediss://ana:***@h:6390/0?ssl_cert_reqs=none"),
    (f"redis+sentinel://:{SECRET}@h1:26379,h2:26379/m", "redis+sentinel://:***@h1:26379,h2:26379/m"),
    (f"redis+unix:///run/redis.sock?db=2&password={SECRET}", "redis+unix:///run/redis.sock?db=2&password=***"),
    (f"postgresql+psycopg://app:{SECRET}@db/identify", "postgresql+psycopg://app:***@db/identify"),
    ("memory://", "memory://"), ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
])
def test_a_setting_is_shown_without_its_secret(setting, shown):
    assert redacted(setting) == shown and SECRET not in redacted(setting)


@pytest.mark.parametrize("storage", [f"redis://127.0.0.1:{{port}}/10?password={SECRET}",
                                     f"redis+sentinel://:{SECRET}@127.0.0.1:{{port}},127.0.0.1:{{port}}/mymaster",
                                     f"redis+cluster://:{SECRET}@127.0.0.1:{{port}}"])
def test_the_limiter_storage_never_shows_its_password_and_any_form_starts(web_settings, make_service, caplog,
                                                                            storage):
    """Before: a password in the query (redis-py takes it there) was printed by /api/v1/status and the start-up
    log; a sentinel URL with several hosts crashed start-up (ValueError reading its port); a cluster none of whose
    nodes answered crashed it too."""
    settings = replace(web_settings, service=replace(web_settings.service,
                                                     rate_limit_storage=storage.format(port=free_port())))
    with caplog.at_level(logging.WARNING):
        app = create_app(settings, make_service(settings))
    token = app.extensions["identify"].curators.create("ana", "correct horse battery")
    client = app.test_client()
    assert upload(client, jpeg_bytes(species_photo(0, 11))).status_code == 201  # counting, failing open
    status = client.get("/api/v1/status", headers=bearer(token)).get_data(as_text=True)
    assert SECRET not in status and "***" in status
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert any("rate-limit storage" in record.getMessage() for record in caplog.records)


def test_a_limiter_storage_whose_client_is_missing_is_a_plain_configuration_error(web_settings, make_service):
    from identify.errors import IdentifyError

    settings = replace(web_settings, service=replace(web_settings.service,
                                                     rate_limit_storage=f"memcached://u:{SECRET}@127.0.0.1:11211"))
    with pytest.raises(IdentifyError) as refused:
        create_app(settings, make_service(settings))
    assert refused.value.code == "bad_config" and SECRET not in refused.value.message


def test_the_public_status_names_no_worker_and_no_audit_counts(client, token):
    """Before: /api/v1/status gave anyone the worker's PID and the live audit's counts."""
    public = client.get("/api/v1/status").get_json()
    assert "process" not in public and "audit" not in public
    curators = client.get("/api/v1/status", headers=bearer(token)).get_json()
    assert isinstance(curators["process"], int) and "groups" in curators["audit"]


def test_the_in_memory_limiter_says_it_counts_for_this_process_only(client):
    """Before: with the default memory:// store, /status said counting "shared" (two workers each count their own)."""
    assert client.get("/api/v1/status").get_json()["rate_limits"]["counting"] == "this process only"


def test_an_original_is_private_and_never_also_public(client, token):
    """Before: `Cache-Control: public, max-age=31536000, private` (contradictory)."""
    sighting = upload(client, jpeg_bytes(species_photo(0, 12))).get_json()["sighting_id"]
    original = client.get(f"/api/v1/sightings/{sighting}", headers=bearer(token)).get_json()["photo_url"]
    response = client.get(original, headers=bearer(token))
    assert response.status_code == 200
    assert response.cache_control.private and not response.cache_control.public
    assert "public" not in response.headers["Cache-Control"].replace("private", "")


def test_retry_after_comes_only_with_a_refusal(web_settings, make_service):
    """Before: every answer the limiter counted, a 201 included, carried Retry-After."""
    settings = replace(web_settings, service=replace(web_settings.service, identify_limit="2 per minute"))
    client = create_app(settings, make_service(settings)).test_client()
    answers = [upload(client, jpeg_bytes(species_photo(0, 13 + n))) for n in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert "Retry-After" not in answers[0].headers and "Retry-After" not in answers[1].headers
    assert int(answers[2].headers["Retry-After"]) > 0
