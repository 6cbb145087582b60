"""The server-rendered pages through Flask's test client: upload-and-match, login, the review queue, CSRF,
cookies and stored files."""

from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import func, select

from identify.schema import Review, Sighting
from identify.web import create_app
from tests.conftest import SPECIES, jpeg_bytes, species_photo
from tests.conftest import page_token as csrf_token

PHOTO = jpeg_bytes(species_photo(3, 0))


@pytest.fixture
def service(make_service):  # type: ignore[no-untyped-def]
    service = make_service()
    service.curators.create("ana", "correct horse battery")
    return service


@pytest.fixture
def client(service):  # type: ignore[no-untyped-def]
    return create_app(service.settings, service).test_client()


def upload_page(client, data: bytes = PHOTO):  # type: ignore[no-untyped-def]
    token = csrf_token(client.get("/").get_data(as_text=True))
    return client.post("/", data={"csrf_token": token, "image": (io.BytesIO(data), "bird.jpg")})


def log_in(client, name: str = "ana", password: str = "correct horse battery"):  # type: ignore[no-untyped-def]
    token = csrf_token(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "name": name, "password": password, "next": "/review"})


def rows(service, model) -> int:  # type: ignore[no-untyped-def]
    with service.store.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def uploaded(client) -> str:  # type: ignore[no-untyped-def]
    """Upload through the page; the new sighting's address (a random public id, never the SQL key)."""
    response = upload_page(client)
    assert response.status_code == 302 and re.fullmatch(r"/sightings/[A-Za-z0-9_-]{16}", response.headers["Location"])
    return response.headers["Location"]


def test_upload_page_identifies_and_explains(client):
    html = client.get(uploaded(client)).get_data(as_text=True)
    assert "Here and now" not in html  # no place was given: no prior column (it once showed, empty)
    assert "Not sure yet." in html and "What you can do" in html and "The model, on its own" in html
    assert "The whole photo was identified." in html and "similarity 0." not in html  # numbers for people
    assert re.search(r'src="/media/thumbnails/[0-9a-f]{64}\.jpg"', html)  # the nearest reference photos
    assert re.search(r'src="/media/photos/[0-9a-f]{64}\.jpg"', html)
    assert 'id="review-heading"' not in html  # the public sees no review form


def test_upload_page_shows_errors_in_place_and_stores_nothing(client, service):
    response = upload_page(client, b"plain text, no picture")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'data-code="not_an_image"' in html and ">not_an_image<" not in html  # a code for programs, not text
    assert "not a photo the service can read" in html and 'id="upload-form"' in html and "Traceback" not in html
    assert rows(service, Sighting) == 0


def test_upload_page_lists_every_problem_and_keeps_what_was_typed(client, service):
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post("/", data={"csrf_token": token, "lat": "91", "lon": "5", "observed_at": "yesterday",
                                      "observer": "Ana Lopes", "note": "x" * 2001,
                                      "image": (io.BytesIO(b""), "")})  # the file field left empty
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    problems = re.findall(r'<li data-code="(\w+)">[^<]*</li>', html)  # codes for programs; words for people
    assert problems == ["bad_coordinates", "bad_date", "bad_field", "missing_image"]
    assert 'value="Ana Lopes"' in html and 'value="91"' in html and 'value="yesterday"' in html
    assert rows(service, Sighting) == 0


def test_forms_without_the_csrf_token_are_refused(client, service):
    response = client.post("/", data={"image": (io.BytesIO(PHOTO), "bird.jpg")})
    assert response.status_code == 400 and "csrf_failed" in response.get_data(as_text=True)
    assert rows(service, Sighting) == 0
    assert client.post("/login", data={"name": "ana", "password": "correct horse battery"}).status_code == 400


def test_login_sets_a_safe_cookie_and_wrong_passwords_fail(client):
    assert client.get("/review").headers["Location"].startswith("/login?next=/review")
    assert log_in(client, password="wrong password").status_code == 401
    assert log_in(client, name="nobody").status_code == 401
    response = log_in(client)
    assert response.status_code == 302 and response.headers["Location"] == "/review"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_login_never_redirects_off_site(client):
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"csrf_token": token, "name": "ana", "password": "correct horse battery",
                                           "next": "//evil.example/"})
    assert response.headers["Location"] == "/review"


def test_review_from_the_queue_page(client, service):
    address = uploaded(client)
    public_id = address.rsplit("/", 1)[1]
    log_in(client)
    html = client.get("/review").get_data(as_text=True)
    assert f"Sighting {public_id}" in html and 'name="version" value="1"' in html and "Keys:" in html
    form = {"csrf_token": csrf_token(html), "version": "1", "action": "correct", "species": SPECIES[0],
            "add_as_reference": "1", "back": "/review"}
    response = client.post(f"{address}/review", data=form)
    assert response.status_code == 302 and response.headers["Location"] == "/review"
    html = client.get("/review").get_data(as_text=True)
    assert "Corrected to House Sparrow (Passer domesticus); its photo is now a reference" in html and "Nothing to review" in html
    stale = client.post(f"{address}/review", data={**form, "action": "confirm", "add_as_reference": ""})  # old version
    assert "someone reviewed it meanwhile" in client.get(stale.headers["Location"]).get_data(as_text=True)
    assert rows(service, Review) == 1
    sighting = client.get(address).get_data(as_text=True)
    assert 'name="version" value="2"' in sighting and "ana corrected" in sighting and "added as reference" in sighting


def test_the_public_cannot_review(client, service):
    address = uploaded(client)
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post(f"{address}/review", data={"csrf_token": token, "version": "1", "action": "reject"})
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert rows(service, Review) == 0


def test_cookie_authenticated_api_writes_need_the_csrf_header(client, service):
    api = "/api/v1" + uploaded(client)
    log_in(client)
    review = {"action": "confirm", "version": 1}
    refused = client.post(f"{api}/review", json=review)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "csrf_failed"
    token = csrf_token(client.get("/review").get_data(as_text=True))
    accepted = client.post(f"{api}/review", json=review, headers={"X-CSRFToken": token})
    assert accepted.status_code == 200 and accepted.get_json()["status"] == "confirmed"


def test_logout_ends_the_session(client):
    log_in(client)
    token = csrf_token(client.get("/review").get_data(as_text=True))
    client.post("/logout", data={"csrf_token": token})
    assert client.get("/review").status_code == 302


def test_stored_files_are_served_only_by_generated_names(client, service):
    photo = re.search(r'/media/photos/[0-9a-f]{64}\.jpg', client.get(uploaded(client)).get_data(as_text=True)).group(0)
    assert client.get(photo).status_code == 200
    for path in ("/media/photos/secret_key", "/media/photos/..%2Fsecret_key", "/media/photos/../identify.db",
                 "/media/thumbnails/" + "0" * 64 + ".jpg", "/media/thumbnails/secret_key"):
        assert client.get(path).status_code == 404, path


def test_unknown_pages_render_an_error_page(client, service):
    upload_page(client)
    response = client.get("/sightings/1")  # the SQL key of the sighting just stored: not a public id
    assert response.status_code == 404 and "unknown_sighting" in response.get_data(as_text=True)
    assert response.mimetype == "text/html"


def _session_cookie(client) -> str:  # type: ignore[no-untyped-def]
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_logout_ends_every_session_of_the_curator(service):
    """A cookie saved before logging out (another browser, a stolen copy) must open nothing afterwards."""
    app = create_app(service.settings, service)
    here, elsewhere = app.test_client(), app.test_client()
    log_in(here)
    log_in(elsewhere)
    saved = _session_cookie(here)
    token = csrf_token(here.get("/review").get_data(as_text=True))
    here.post("/logout", data={"csrf_token": token})
    replay = app.test_client()
    replay.set_cookie("session", saved)
    assert replay.get("/review").status_code == 302
    assert elsewhere.get("/review").status_code == 302  # the other browser's session ended too
    log_in(here)
    assert here.get("/review").status_code == 200  # logging in again works


def test_a_password_reset_ends_every_session(service, client):
    log_in(client)
    assert client.get("/review").status_code == 200
    service.curators.create("ana", "a brand new password", replace=True)
    assert client.get("/review").status_code == 302


def test_every_answer_carries_the_security_headers(client):
    for path in ("/", "/login", "/api/v1/status", "/api/v1/nothing"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        script = next(part for part in csp.split(";") if part.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in script and "frame-ancestors 'none'" in csp, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert "Strict-Transport-Security" not in response.headers  # only behind HTTPS
    assert "<script>" not in client.get("/").get_data(as_text=True)  # no inline script to allow


def test_one_log_line_per_request_with_its_id(client, caplog):
    import logging

    logger = logging.getLogger("identify.requests")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="identify.requests"):
            mine = client.get("/api/v1/status", headers={"X-Request-ID": "trace-42"})
            theirs = client.get("/api/v1/nothing")
    finally:
        logger.removeHandler(caplog.handler)
    assert mine.headers["X-Request-ID"] == "trace-42"
    assert len(theirs.headers["X-Request-ID"]) == 32
    lines = [r.getMessage() for r in caplog.records if r.name == "identify.requests"]
    assert lines[0].startswith("GET /api/v1/status 200 ") and lines[0].endswith("id=trace-42")
    assert lines[1].startswith("GET /api/v1/nothing 404 ") and len(lines) == 2
    assert client.get("/", headers={"X-Request-ID": "bad id\\n"}).headers["X-Request-ID"] != "bad id\\n"


def _wrong_logins(client, count: int, name: str = "ana") -> list:  # type: ignore[no-untyped-def]
    client.application.config["WTF_CSRF_ENABLED"] = False
    return [client.post("/login", data={"name": name, "password": "not the password"}) for _ in range(count)]


def test_twenty_wrong_passwords_for_one_account_are_slowed_down(client):
    answers = _wrong_logins(client, 20)
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(a.headers["Retry-After"].isdigit() for a in limited)
    assert answers[0].status_code == 401 and "too_many_requests" in limited[0].get_data(as_text=True)
    right = client.post("/login", data={"name": "ana", "password": "correct horse battery"})
    assert right.status_code == 429  # the guessing address waits out the window, even with the right password


def test_logins_that_succeed_do_not_count(client):
    client.application.config["WTF_CSRF_ENABLED"] = False
    for _ in range(15):
        assert client.post("/login", data={"name": "ana", "password": "correct horse battery"}).status_code == 302


def test_workers_share_their_counters_in_redis(make_service, web_settings):
    """Two workers over one Redis: failures at one count at the other (a Redis server runs on 127.0.0.1:6379)."""
    from dataclasses import replace

    shared = replace(web_settings, service=replace(web_settings.service, rate_limit_storage="redis://127.0.0.1:6379"))
    first = create_app(shared, make_service(shared)).test_client()
    second = create_app(shared, make_service(shared)).test_client()
    first.application.extensions["identify_limiter"].reset()
    assert all(a.status_code == 401 for a in _wrong_logins(first, 6))
    later = [a.status_code for a in _wrong_logins(second, 5)]
    assert later[:4] == [401] * 4 and later[4] == 429  # the 11th failure overall, at the other worker
    first.application.extensions["identify_limiter"].reset()


def test_uploads_are_limited_per_address_and_a_refused_one_stores_nothing(make_service, web_settings):
    from dataclasses import replace

    tight = replace(web_settings, service=replace(web_settings.service, identify_limit="3 per minute"))
    service = make_service(tight)
    client = create_app(tight, service).test_client()
    statuses = [client.post("/api/v1/identify", data={"image": (io.BytesIO(PHOTO), "b.jpg")}).status_code
                for _ in range(4)]
    assert statuses == [201, 201, 201, 429] and rows(service, Sighting) == 3


def _set_decision(service, public_id: str, decision: str) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    with service.store.sessions.begin() as session:
        session.execute(update(Sighting).where(Sighting.public_id == public_id).values(decision=decision))


def test_a_no_match_is_not_headed_with_a_species(client, service):
    address = uploaded(client)
    _set_decision(service, address.rsplit("/", 1)[1], "no_match")
    html = client.get(address).get_data(as_text=True)
    heading = re.search(r'<h1 id="answer">(.*?)</h1>', html, re.S).group(1)
    assert "No match" in heading and not any(name.replace("_", " ") in heading for name in SPECIES)
    assert not any(common in heading for common in ("Sparrow", "Crow", "Dove"))
    assert "None of the species this service knows fits this photo well" in html and 'id="next-steps"' in html


def test_a_reviewed_sighting_shows_the_review_not_needs_review(client, service):
    address = uploaded(client)
    log_in(client)
    html = client.get(address).get_data(as_text=True)
    client.post(f"{address}/review", data={"csrf_token": csrf_token(html), "version": "1", "action": "correct",
                                           "species": SPECIES[1], "back": address})
    decision = re.search(r'<p class="decision[^"]*" id="decision">(.*?)</p>', client.get(address).get_data(as_text=True),
                         re.S).group(1)
    assert "Corrected by a curator" in decision and "Hooded Crow" in decision and "Needs review</strong>" not in decision


def test_the_why_text_counts_the_neighbours_it_shows(client):
    html = client.get(uploaded(client)).get_data(as_text=True)
    why = re.sub(r"\s+", " ", re.search(r'<p id="why">(.*?)</p>', html, re.S).group(1))
    section = html[html.index("<summary>All"):html.index('id="similar-heading"')]
    shown = section.count("<li>")
    named = re.search(r"Of the (\d+) most similar|The most similar reference photo", why)
    assert named and int(named.group(1) or 1) == shown, (why, shown)


def test_similar_sightings_below_the_floor_are_not_offered(make_service, web_settings):
    from dataclasses import replace

    strict = replace(web_settings, service=replace(web_settings.service, similar_floor=0.9999))
    svc = make_service(strict)
    client = create_app(strict, svc).test_client()
    first = uploaded(client)
    client.post("/", data={"csrf_token": csrf_token(client.get("/").get_data(as_text=True)),
                           "image": (io.BytesIO(jpeg_bytes(species_photo(0, 5))), "other.jpg")})
    assert "Nothing close yet" in client.get(first).get_data(as_text=True)
    similar = client.get(f"/api/v1/sightings/{first.rsplit('/', 1)[1]}/similar").get_json()["similar"]
    assert similar == []
    anything = replace(web_settings, service=replace(web_settings.service, similar_floor=-1.0))
    loose = create_app(anything, make_service(anything)).test_client()
    assert loose.get(f"/api/v1/sightings/{first.rsplit('/', 1)[1]}/similar").get_json()["similar"]


def test_after_a_review_the_queue_goes_on_to_the_next_sighting(client, service):
    ids = [uploaded(client).rsplit("/", 1)[1] for _ in range(3)]
    log_in(client)
    html = client.get("/review").get_data(as_text=True)
    order = re.findall(r'id="item-([\w-]+)"', html)
    assert sorted(order) == sorted(ids)
    answer = client.post(f"/sightings/{order[0]}/review", data={
        "csrf_token": csrf_token(html), "version": "1", "action": "confirm", "back": "/review#item-" + order[1]})
    back = re.search(r'name="back" value="([^"]+)"', html).group(1)
    assert back == f"/review?page=1#item-{order[1]}"
    assert answer.status_code == 302 and answer.headers["Location"].endswith(f"#item-{order[1]}")


def test_the_why_text_counts_neighbours_of_the_taxon_whatever_their_label():
    """Found in the demo: 'of the 20 most similar reference photos, 0 are Red Junglefowl' while 5 were labelled
    Gallus gallus, because the vote's winner carried the classifier's label `cock`."""
    from identify.identifier import NeighbourInfo, SpeciesNames
    from identify.taxonomy import Taxonomy
    from identify.web.views import agreeing_neighbours

    junglefowl = Taxonomy().resolve("Gallus gallus")
    neighbours = [NeighbourInfo(i, label, 0.9, "p.jpg", "0" * 64)
                  for i, label in enumerate(["Gallus gallus", "Gallus gallus", "Meleagris gallopavo", "tabby"])]
    taxa = {"cock": junglefowl, "Gallus gallus": junglefowl, "tabby": None,
            "Meleagris gallopavo": Taxonomy().resolve("Meleagris gallopavo")}
    names = SpeciesNames(["cock"], taxa)  # the classifier's `cock` stands for Gallus gallus in answers
    assert agreeing_neighbours(neighbours, "cock", names.canonical) == 2
    assert agreeing_neighbours(neighbours, "tabby", names.canonical) == 1
