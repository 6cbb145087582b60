"""Issue 20: no acknowledged photo lost, no public 500, faults that degrade, exports safe to open. Each test here
failed before its fix (the note of each says what it did then)."""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from identify.cli import main
from identify.export import NUMERIC_TERMS
from identify.schema import Sighting
from identify.web import create_app
from tests.conftest import free_port, jpeg_bytes, species_photo
from tests.test_web_api import bearer, count_rows, stored_files, upload

DANGEROUS_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _terminated() -> OperationalError:
    return OperationalError("COMMIT", {}, Exception("terminating connection due to administrator command"))


def _photo_urls(client, public_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    body = client.get(f"/api/v1/sightings/{public_id}").get_json()
    return [body["photo_url"], body["thumbnail_url"]]


# ---- 1, 2: a photo's lifetime follows the rows that name it ----------------------------------------------------
def test_a_failed_upload_never_removes_a_photo_another_upload_committed(client, service, monkeypatch):
    """Two clients upload the same bytes; the first saved the file, then its commit fails after the second
    committed a sighting naming it. Before: the first request's clean-up deleted the file (created by it), and the
    acknowledged sighting's photo and thumbnail answered 404."""
    photo = jpeg_bytes(species_photo(1, 901))
    real_add = service.sightings.add
    first_saved, second_committed = threading.Event(), threading.Event()
    calls: list[int] = []

    def add(new):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            first_saved.set()
            second_committed.wait(30)
            raise _terminated()
        return real_add(new)

    monkeypatch.setattr(service.sightings, "add", add)
    app = client.application
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(lambda: upload(app.test_client(), photo))
        assert first_saved.wait(30)
        second = upload(app.test_client(), photo)
        second_committed.set()
        failed = first.result(30)
    assert second.status_code == 201
    assert failed.status_code == 503 and failed.get_json()["error"]["code"] == "database_unavailable"
    for url in _photo_urls(client, second.get_json()["sighting_id"]):
        assert client.get(url).status_code == 200, url


def test_a_failed_upload_removes_the_photos_no_row_names(client, service, monkeypatch):
    """The disk fills up on the second photo of three: a 503 storage_full, and no file left behind. Before: a 500,
    and the first photo's file stayed (the list of saved photos was never assigned, so nothing was cleaned)."""
    real_save = service.photos.save
    saved: list[int] = []

    def save(data, image_format, sha256=None):  # type: ignore[no-untyped-def]
        saved.append(1)
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(data, image_format, sha256)

    monkeypatch.setattr(service.photos, "save", save)
    photos = [jpeg_bytes(species_photo(n, 910 + n)) for n in range(3)]
    response = client.post("/api/v1/identify", data={"image": [(io.BytesIO(p), f"{n}.jpg") for n, p in enumerate(photos)]})
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "storage_full"
    assert int(response.headers["Retry-After"]) > 0
    assert count_rows(service, Sighting) == 0 and stored_files(service) == []


def test_a_failed_upload_keeps_a_photo_an_upload_in_flight_holds(client, service, monkeypatch):
    """A clean-up while another upload of the same bytes has saved but not yet committed leaves the file (the
    sweep takes it later if that upload fails too)."""
    photo = jpeg_bytes(species_photo(2, 920))
    from identify.photos import photo_sha256

    sha = photo_sha256(photo)
    monkeypatch.setattr(service.sightings, "add", lambda new: (_ for _ in ()).throw(_terminated()))
    with service.photos.reserved([sha]):  # the other upload, between its save and its commit
        service.photos.save(photo, "JPEG", sha)
        assert upload(client, photo).status_code == 503
        assert len(stored_files(service)) == 1
    assert service.photos.remove_unnamed([n for n in stored_files(service)], service.sightings.names_photo) == 1


def test_the_sweep_keeps_a_file_an_upload_named_after_the_sweep_read_sql(make_service, service):
    """The sweep picks its candidates from one SQL read, then asks again under the lock: an upload that reused an
    old orphan and committed meanwhile keeps its file."""
    photos = service.photos
    data = jpeg_bytes(species_photo(0, 930))
    orphan = photos.save(data, "JPEG")
    hour_ago = time.time() - 7200
    os.utime(photos.photo_path(orphan.name), (hour_ago, hour_ago))
    store_after_read = {"done": False}

    def kept() -> tuple[set[str], set[str]]:
        names, hashes = service.sightings.photo_files()
        if not store_after_read["done"]:  # the upload commits right after the sweep's read
            store_after_read["done"] = True
            service.identify_upload([data], _fields())
        return names, hashes

    assert photos.sweep(*kept(), 3600, service.sightings.names_photo) == 0
    assert photos.photo_path(orphan.name).exists()


def _fields():  # type: ignore[no-untyped-def]
    from identify.service import SightingFields

    return SightingFields()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_identical_photos_from_two_clients_survive_backend_termination(web_settings, make_service, database_url):
    """The probe's race, as it ran: two clients upload the same bytes at once, round after round, while every
    backend of the database is terminated every 0.25 s. Every acknowledged sighting's photo and thumbnail are
    served afterwards. (Before: 20 acknowledged sightings of 3,176 answered 404 for their photo.)"""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    stop = threading.Event()
    terminated = []

    def terminate() -> None:
        while not stop.wait(0.25):
            with admin.connect() as connection:
                terminated.append(connection.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar())

    app = _app(web_settings, make_service, identify_limit="off")  # some 800 uploads in 20 s from one address
    client = app.test_client()
    acknowledged, statuses = [], []
    killer = threading.Thread(target=terminate, daemon=True)
    killer.start()
    try:
        deadline = time.monotonic() + 20
        round_ = 0
        while time.monotonic() < deadline:
            photo = jpeg_bytes(species_photo(round_ % 3, 1000 + round_))
            start = threading.Barrier(2)

            def send(_: int, start: threading.Barrier = start, photo: bytes = photo) -> tuple[int, str | None]:
                own = app.test_client()
                start.wait()
                response = upload(own, photo)
                return response.status_code, (response.get_json() or {}).get("sighting_id")

            with ThreadPoolExecutor(max_workers=2) as pool:
                for status, public_id in pool.map(send, range(2)):
                    statuses.append(status)
                    if status == 201:
                        acknowledged.append(public_id)
            round_ += 1
    finally:
        stop.set()
        killer.join(10)
        admin.dispose()
    assert sum(terminated) > 0 and acknowledged
    assert set(statuses) <= {201, 503}, sorted(set(statuses))  # a terminated backend is a retryable 503, never a 500
    missing = [url for public_id in acknowledged for url in _photo_urls(client, public_id)
               if client.get(url).status_code != 200]
    assert missing == [], f"{len(missing)} photo files of {len(acknowledged)} acknowledged sightings are gone"


# ---- 3: malformed multipart ---------------------------------------------------------------------------------
def _malformed_body(repeated: bool = False) -> tuple[bytes, str]:
    part = b'--b\r\nContent-Disposition: form-data; name="\\"\r\n\r\nx\r\n'
    return part * (2 if repeated else 1) + b"--b--\r\n", "multipart/form-data; boundary=b"


def test_a_part_whose_name_does_not_parse_is_a_400_on_every_form_and_api_endpoint(client, service, token):
    """Before: 500 on /, /login, /logout and the review form (Flask-WTF's CSRF lookup on a None name), and on
    /api/v1/identify with the part repeated (sorted() over None)."""
    public_id = upload(client, jpeg_bytes(species_photo(0, 940))).get_json()["sighting_id"]
    paths = ["/", "/login", "/logout", f"/sightings/{public_id}/review", "/api/v1/identify", "/api/v1/similar",
             f"/api/v1/sightings/{public_id}/review"]
    for path in paths:
        for repeated in (False, True):
            body, content_type = _malformed_body(repeated)
            for headers in ({}, bearer(token)):
                response = client.post(path, data=body, content_type=content_type, headers=headers)
                assert response.status_code == 400, (path, repeated, response.status_code)
                assert "bad_multipart" in response.get_data(as_text=True), path


# ---- 4, 5: the limiter fails open, never locks an owner out, and keys on the real client -------------------------
def _app(web_settings, make_service, **service_changes):  # type: ignore[no-untyped-def]
    settings = replace(web_settings, service=replace(web_settings.service, **service_changes))
    app = create_app(settings, make_service(settings))
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def _login(client, password: str, address: str = "127.0.0.1", **headers: str) -> int:  # type: ignore[no-untyped-def]
    return client.post("/login", data={"name": "ana", "password": password}, headers=headers,
                       environ_base={"REMOTE_ADDR": address}).status_code


def test_with_the_rate_limit_storage_unreachable_uploads_and_logins_still_work(web_settings, make_service, caplog):
    """Redis pointed at a closed port. Before: the server started silently, then every upload and every login,
    right password included, was a 500."""
    app = _app(web_settings, make_service, rate_limit_storage=f"redis://127.0.0.1:{free_port()}")
    app.extensions["identify"].curators.create("ana", "correct horse battery")
    client = app.test_client()
    with caplog.at_level(logging.WARNING):
        assert upload(client, jpeg_bytes(species_photo(0, 950))).status_code == 201
        assert _login(client, "correct horse battery") == 302
        assert _login(client, "not it") == 401
    status = client.get("/api/v1/status").get_json()["rate_limits"]
    assert status["reachable"] is False and "this process only" in status["counting"]
    assert any("storage" in r.getMessage().lower() for r in caplog.records if r.levelno >= logging.WARNING)
    answers = [_login(client, "not it") for _ in range(12)]  # still limited, in this process's memory
    assert 429 in answers


@pytest.mark.parametrize("storage", ["memory://", "redis://127.0.0.1:6379"])
def test_wrong_passwords_from_elsewhere_do_not_lock_the_owner_out(web_settings, make_service, storage):
    """Ten wrong passwords for one account from one address. Before: the owner got 429 for the right password from
    any address. Now the guessing address is stopped and the owner, from an address that has not failed, logs in;
    on Redis the same holds across two workers."""
    first = _app(web_settings, make_service, rate_limit_storage=storage)
    # Memory counts in one process: one worker; Redis is shared: the owner comes in through another worker.
    second = first if storage.startswith("memory") else _app(web_settings, make_service, rate_limit_storage=storage)
    first.extensions["identify_limiter"].reset()
    first.extensions["identify"].curators.create("ana", "correct horse battery")
    attacker, owner = first.test_client(), second.test_client()
    guesses = [_login(attacker, f"guess {n}", "127.0.0.9") for n in range(15)]
    assert guesses[:10] == [401] * 10 and set(guesses[10:]) == {429}
    assert _login(attacker, "correct horse battery", "127.0.0.9") == 429  # the guessing address waits
    assert _login(owner, "correct horse battery", "127.0.0.20") == 302  # the owner does not
    first.extensions["identify_limiter"].reset()


def test_behind_the_proxy_limits_key_on_the_forwarded_client_and_never_on_a_spoofed_header(web_settings, make_service):
    """Behind a proxy every request comes from its address: with proxy_hops=1 each client has its own bucket (the
    proxy's X-Forwarded-For); without it, X-Forwarded-For is ignored, so a client cannot pick its own bucket."""
    photo = jpeg_bytes(species_photo(0, 960))
    proxied = _app(web_settings, make_service, identify_limit="2 per minute", proxy_hops=1).test_client()

    def send(client, client_address: str) -> int:  # type: ignore[no-untyped-def]
        return client.post("/api/v1/identify", data={"image": (io.BytesIO(photo), "b.jpg")},
                           headers={"X-Forwarded-For": client_address}).status_code

    assert [send(proxied, "127.0.0.31") for _ in range(3)] == [201, 201, 429]
    assert send(proxied, "127.0.0.32") == 201  # another client behind the same proxy
    direct = _app(web_settings, make_service, identify_limit="2 per minute").test_client()
    assert [send(direct, f"127.0.0.{40 + n}") for n in range(3)] == [201, 201, 429]


def test_uploads_similar_photo_searches_and_the_page_form_share_one_bucket(web_settings, make_service):
    """Each costs a forward pass. Before: POST /api/v1/similar was not limited (320 in 4.7 s) and the page form
    had a bucket of its own."""
    client = _app(web_settings, make_service, identify_limit="3 per minute").test_client()
    photo = jpeg_bytes(species_photo(1, 961))
    statuses = [client.post(path, data={"image": (io.BytesIO(photo), "b.jpg")}).status_code
                for path in ("/api/v1/identify", "/", "/api/v1/similar", "/api/v1/similar", "/")]
    assert statuses[:3] == [201, 302, 200] and statuses[3:] == [429, 429]


# ---- 6: exports that a spreadsheet opens as text --------------------------------------------------------------
FORMULAS = {"observer": "=HYPERLINK(\"http://127.0.0.1/x\",\"click\")", "note": "\t=1+1"}


def _dangerous_cells(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(term, value) for row in rows for term, value in row.items()
            if term not in NUMERIC_TERMS and value.lstrip(" ").startswith(DANGEROUS_STARTS)]


@pytest.mark.parametrize("species", ["+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)"])
def test_an_exported_csv_has_no_cell_a_spreadsheet_would_run(client, service, token, tmp_path, monkeypatch, species):
    """Before: an observer, note or as-written species starting with = + - @ reached the CSV and the archive raw,
    and a leading tab was trimmed first, so '\\t=1+1' exported as '=1+1'."""
    from dwca.read import DwCAReader

    public_id = upload(client, jpeg_bytes(species_photo(0, 970)), lat="-33.9", lon="-18.4", **FORMULAS).get_json()["sighting_id"]
    review = {"action": "correct", "species": species, "version": 1, "as_written": True, "add_as_reference": False}
    assert client.post(f"/api/v1/sightings/{public_id}/review", headers=bearer(token), json=review).status_code == 200
    response = client.get("/api/v1/export?format=csv", headers=bearer(token))
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 1 and _dangerous_cells(rows) == []
    assert rows[0]["recordedBy"] == "'" + FORMULAS["observer"] and rows[0]["occurrenceRemarks"] == "'=1+1"
    assert rows[0]["scientificName"] == "'" + species and rows[0]["decimalLatitude"] == "-33.900000"
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    archive = tmp_path / "export.zip"
    assert CliRunner().invoke(main, ["export", "--out", str(archive)]).exit_code == 0
    with DwCAReader(str(archive)) as dwca:
        (row,) = [{term.rsplit("/", 1)[1]: value for term, value in r.data.items()} for r in dwca]
    assert _dangerous_cells([row]) == [] and row["recordedBy"] == "'" + FORMULAS["observer"]


def test_the_host_header_does_not_choose_the_exported_photo_links(web_settings, make_service, tmp_path):
    """Before: associatedMedia was built from the request's Host header, which the client writes."""
    from dwca.read import DwCAReader

    def exported(app) -> str:  # type: ignore[no-untyped-def]
        client = app.test_client()
        curator = app.extensions["identify"].curators.create(f"c{id(app)}", "correct horse battery")
        public_id = upload(client, jpeg_bytes(species_photo(1, 980))).get_json()["sighting_id"]
        client.post(f"/api/v1/sightings/{public_id}/review", headers=bearer(curator), json={"action": "confirm", "version": 1})
        path = tmp_path / f"{id(app)}.zip"
        path.write_bytes(client.get("/api/v1/export", headers={**bearer(curator), "Host": "evil.example"}).data)
        with DwCAReader(str(path)) as dwca:
            return next(iter(dwca)).data["http://rs.tdwg.org/dwc/terms/associatedMedia"]

    assert exported(_app(web_settings, make_service)).startswith("/media/photos/")
    configured = exported(_app(web_settings, make_service, public_url="https://birds.example.org/"))
    assert configured.startswith("https://birds.example.org/media/photos/")


# ---- 7: slow clients ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_half_open_connections_do_not_keep_new_clients_out(served):
    """150 connections that send half a request line and wait. Before (waitress' 100-connection default) a new
    client's request waited until they timed out."""
    import urllib.request

    host, port = served["base"].removeprefix("http://").split(":")
    idle = []
    try:
        for _ in range(150):
            connection = socket.create_connection((host, int(port)), timeout=5)
            connection.sendall(b"GET /api/v1/status HT")
            idle.append(connection)
        started = time.monotonic()
        with urllib.request.urlopen(served["base"] + "/api/v1/openapi.json", timeout=10) as response:
            assert response.status == 200
        assert time.monotonic() - started < 5
    finally:
        for connection in idle:
            connection.close()


# ---- 8: faults degrade ----------------------------------------------------------------------------------------
def test_a_database_fault_is_a_retryable_503_on_the_api_and_the_page(client, service, monkeypatch):
    monkeypatch.setattr(service.sightings, "add", lambda new: (_ for _ in ()).throw(_terminated()))
    client.application.config["WTF_CSRF_ENABLED"] = False
    photo = jpeg_bytes(species_photo(0, 990))
    for path in ("/api/v1/identify", "/"):
        response = upload(client, photo, path=path)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0, path
        assert "database_unavailable" in response.get_data(as_text=True)
    assert stored_files(service) == []
    document = client.get("/api/v1/openapi.json").get_json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "503" in operation["responses"], (method, path)


# ---- 9: the smaller findings ----------------------------------------------------------------------------------
def test_a_crlf_in_the_path_cannot_forge_a_log_line(client, caplog):
    logger = logging.getLogger("identify.requests")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="identify.requests"):
            client.get("/nothing%0D%0A2026-12-01 GET /api/v1/status 200 1.0ms id=forged")
    finally:
        logger.removeHandler(caplog.handler)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "identify.requests"]
    assert "\n" not in line and "\r" not in line and "\\r\\n" in line


def test_a_long_note_or_many_fields_are_named_as_such_not_as_a_big_photo(client):
    photo = jpeg_bytes(species_photo(0, 991))
    long_note = client.post("/api/v1/identify", data={"image": (io.BytesIO(photo), "b.jpg"), "note": "x" * 2**20})
    many = client.post("/api/v1/identify", data={"image": (io.BytesIO(photo), "b.jpg"),
                                                 **{f"f{n}": "1" for n in range(1000)}})
    for response in (long_note, many):
        error = response.get_json()["error"]
        assert response.status_code == 413 and error["code"] == "form_too_large" and "MB" not in error["message"]


def test_a_deeply_nested_review_or_a_huge_version_is_bad_input(client, token):
    public_id = upload(client, jpeg_bytes(species_photo(0, 992))).get_json()["sighting_id"]
    url = f"/api/v1/sightings/{public_id}/review"
    nested = client.post(url, data="[" * 100_000 + "]" * 100_000, content_type="application/json",
                         headers=bearer(token))
    assert nested.status_code == 400
    for version in ("9" * 5000, "1" + "0" * 4400, 10**20):
        for send in ({"json": {"action": "confirm", "version": version}},
                     {"data": {"action": "confirm", "version": version}}):
            response = client.post(url, headers=bearer(token), **send)
            assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_review"
    big = client.post(url, data='{"action": "confirm", "version": ' + "9" * 5000 + "}",
                      content_type="application/json", headers=bearer(token))
    assert big.status_code == 400


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_sqlite_database_is_readable_by_its_owner_only(client, service):
    upload(client, jpeg_bytes(species_photo(0, 993)))
    database = Path(service.settings.database_url.removeprefix("sqlite:///"))
    for path in (database, database.with_name(database.name + "-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_disabled_curator_and_an_expired_token_open_nothing(client, service, token, monkeypatch):
    from sqlalchemy import update

    from identify.schema import Curator

    client.application.config["WTF_CSRF_ENABLED"] = False
    assert client.get("/api/v1/review/queue", headers=bearer(token)).status_code == 200
    assert _login(client, "correct horse battery") == 302 and client.get("/review").status_code == 200
    monkeypatch.setenv("IDENTIFY_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("IDENTIFY_DATABASE_URL", service.settings.database_url)
    assert CliRunner().invoke(main, ["curators", "disable", "ana"]).exit_code == 0
    assert client.get("/api/v1/review/queue", headers=bearer(token)).status_code == 401
    assert client.get("/review").status_code == 302  # the session ended with it
    assert _login(client, "correct horse battery") == 401
    listed = CliRunner().invoke(main, ["curators", "list", "--json"])
    assert '"disabled": true' in listed.output
    assert CliRunner().invoke(main, ["curators", "enable", "ana"]).exit_code == 0
    # issue 34: enabling again does not revive the token that was revoked with the disabling
    assert client.get("/api/v1/review/queue", headers=bearer(token)).status_code == 401
    issued = CliRunner().invoke(main, ["curators", "token", "ana"])
    fresh = issued.output.strip().rsplit(" ", 1)[1]
    assert client.get("/api/v1/review/queue", headers=bearer(fresh)).status_code == 200
    with service.store.sessions.begin() as session:  # 90 days later
        session.execute(update(Curator).values(token_expires_at=Curator.created_at))
    assert client.get("/api/v1/review/queue", headers=bearer(fresh)).status_code == 401
    assert CliRunner().invoke(main, ["curators", "disable", "nobody"]).exit_code != 0


def test_answers_to_a_curator_are_private_to_caches(client, token):
    public_id = upload(client, jpeg_bytes(species_photo(0, 994)), lat="31.78", lon="35.22").get_json()["sighting_id"]
    assert "private" in client.get(f"/api/v1/sightings/{public_id}", headers=bearer(token)).headers["Cache-Control"]
    assert "private" in client.get("/api/v1/review/queue", headers=bearer(token)).headers["Cache-Control"]
    assert "private" not in client.get(f"/api/v1/sightings/{public_id}").headers.get("Cache-Control", "")


def test_a_nul_in_a_sighting_id_is_a_404_not_a_server_error(client, token):
    """Found by schemathesis on PostgreSQL, which refuses NUL in text: a 500 on every route with an id."""
    client.application.config["WTF_CSRF_ENABLED"] = False
    for url in ("/api/v1/sightings/%00ab", "/api/v1/sightings/%00ab/similar", "/sightings/ab%00"):
        for headers in ({}, bearer(token)):
            assert client.get(url, headers=headers).status_code == 404, url
    review = client.post("/api/v1/sightings/ab%00/review", headers=bearer(token), json={"action": "confirm", "version": 1})
    assert review.status_code == 404 and review.get_json()["error"]["code"] == "unknown_sighting"
