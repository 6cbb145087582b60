"""The pages in a real browser: headless Debian Chromium driven by Playwright, against `identify serve`.

Screenshots go to $IDENTIFY_SCREENSHOTS (default var/test-screenshots). Chromium must be installed
(`make test` installs Debian's `chromium` when it is missing); a missing browser fails these tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import jpeg_bytes, species_photo

CHROMIUM = os.environ.get("IDENTIFY_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags, Chromium keeps trying to reach Google's hosts from a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("IDENTIFY_SCREENSHOTS", "var/test-screenshots"))

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _predict(served: dict, photo: Path) -> dict:
    """`identify predict --json` on the file, against the server's data: what the command line answers."""
    import json
    import subprocess
    import sys

    run = subprocess.run([str(Path(sys.executable).parent / "identify"), "predict", str(photo), "--json"],
                         env=served["env"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_a_photo_submitted_untouched_is_identified_whole_as_predict_answers(page, served, tmp_path):
    """No square unless the user draws one: the page sends the whole photo, and its answer is the command
    line's on the file. Before: the page preselected the middle half and cut off the bird's head."""
    photo = tmp_path / "bird.jpg"
    photo.write_bytes(jpeg_bytes(species_photo(3, 7, size=256)))
    page.goto(served["base"] + "/")
    shot(page, "1-upload")
    page.set_input_files("#image", str(photo))
    expect(page.locator("#croppers img")).to_be_visible()
    expect(page.locator("#croppers .square")).to_be_hidden()
    expect(page.locator("#croppers")).to_contain_text("The whole photo will be identified.")
    assert page.locator("#croppers input[name=crop]").input_value() == ""
    page.click("#identify-button")
    page.wait_for_url("**/sightings/*")
    expect(page.locator(".framed .crop-box")).to_have_count(0)
    expect(page.locator("figcaption")).to_contain_text("The whole photo was identified.")
    sighting = page.url.rsplit("/", 1)[1]
    served_answer = page.request.get(f"{served['base']}/api/v1/sightings/{sighting}").json()
    assert served_answer["photos"][0]["crop"] is None
    predicted = _predict(served, photo)
    assert predicted["framing"][0]["crop"] is None
    assert served_answer["decision"] == predicted["decision"]
    assert [(s["name"], round(s["score"], 4)) for s in served_answer["species"]] == \
        [(s["name"], round(s["score"], 4)) for s in predicted["species"]]
    heading = page.locator("#answer").inner_text()
    assert predicted["species"][0]["display_name"] in heading or predicted["decision"] == "no_match"


def test_mark_the_bird_and_see_the_result(page, served, tmp_path):
    photo = tmp_path / "bird.jpg"
    photo.write_bytes(jpeg_bytes(species_photo(3, 7, size=256)))
    page.goto(served["base"] + "/")
    page.set_input_files("#image", str(photo))
    square = page.locator("#croppers .square")
    page.click("text=Mark the bird")
    expect(square).to_be_visible()  # the square on the photo, the middle half to start
    crop = page.locator("#croppers input[name=crop]")
    before = [float(v) for v in crop.input_value().split(",")]
    assert before[2] == pytest.approx(0.5, abs=0.01)
    square.focus()
    page.keyboard.press("ArrowRight")  # moved with the keyboard
    page.keyboard.press("Shift+ArrowDown")  # and made larger
    after = [float(v) for v in crop.input_value().split(",")]
    assert after[0] > before[0] and after[2] > before[2]
    box = square.bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 10)  # and dragged
    page.mouse.down()
    page.mouse.move(box["x"] - 20, box["y"] - 20)
    page.mouse.up()
    dragged = [float(v) for v in crop.input_value().split(",")]
    assert dragged[0] < after[0]
    # the shade covers the photo only: the header and the Identify button stay as they were
    assert page.evaluate("document.elementFromPoint(5, 5).closest('header') !== null")
    shot(page, "1b-crop")
    page.click("#identify-button")
    page.wait_for_url("**/sightings/*")
    expect(page.locator("#decision")).to_contain_text("Not sure yet")
    expect(page.locator("#next-steps")).to_contain_text("a curator will look")
    expect(page.locator(".framed .crop-box")).to_be_visible()  # the square it was identified on, drawn
    expect(page.locator("table.species")).to_be_hidden()  # the numbers wait behind "details"
    page.click("#details summary")
    expect(page.locator("table.species tbody tr")).to_have_count(3)
    expect(page.locator("#why")).to_contain_text("The model, on its own")
    expect(page.locator("#compare .compare-row")).to_have_count(3)
    expect(page.locator("#compare .compare-row img").first).to_be_visible()
    # a thumbnail is made on its first request: wait for it to arrive (visible is only its box), then it has pixels
    page.wait_for_function("document.querySelector('#compare .compare-row img').complete")
    assert page.evaluate("document.querySelector('#compare .compare-row img').naturalWidth") > 0
    shot(page, "2-result")


def test_too_many_photos_or_a_file_that_is_no_photo_is_refused_before_the_upload(page, served, tmp_path):
    files = []
    for n in range(6):
        files.append(tmp_path / f"bird{n}.jpg")
        files[-1].write_bytes(jpeg_bytes(species_photo(3, n, size=64)))
    page.goto(served["base"] + "/")
    page.set_input_files("#image", [str(f) for f in files])
    expect(page.locator("#choose-problem")).to_contain_text("at most 5 photos")
    expect(page.locator("#identify-button")).to_be_disabled()
    text = tmp_path / "notes.txt"
    text.write_text("not a bird")
    page.set_input_files("#image", [str(files[0]), str(text)])
    expect(page.locator("#choose-problem")).to_contain_text("notes.txt")
    page.set_input_files("#image", [str(files[0])])
    expect(page.locator("#choose-problem")).to_be_hidden()
    expect(page.locator("#identify-button")).to_be_enabled()


def test_drop_a_photo_log_in_and_review_from_the_queue_with_the_keyboard(page, served):
    page.goto(served["base"] + "/")
    # Drag and drop: a file dropped on the zone becomes the form's photo.
    dropped = page.evaluate_handle(
        """(bytes) => { const transfer = new DataTransfer();
                        transfer.items.add(new File([new Uint8Array(bytes)], 'bird.jpg', {type: 'image/jpeg'}));
                        return transfer; }""",
        list(jpeg_bytes(species_photo(3, 8, size=256))),
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    expect(page.locator("#croppers img")).to_have_attribute("alt", "Photo 1: bird.jpg")
    page.click("#identify-button")
    page.wait_for_url("**/sightings/*")
    sighting = page.url.rsplit("/", 1)[1]

    page.click("text=Curator login")
    page.fill("input[name=name]", "ana")
    page.fill("input[name=password]", "correct horse battery")
    shot(page, "3-login")
    page.click("button:has-text('Log in')")
    page.wait_for_url("**/review*")
    item = page.locator(f"#item-{sighting}")
    expect(item).to_be_visible()
    shot(page, "4-queue")
    item.focus()
    page.keyboard.press("e")  # edit the species, then Enter corrects
    field = item.locator("input[name=species]")
    expect(field).to_be_focused()
    field.fill("hooded crow")  # a common name: it names the taxon of the label Corvus_cornix
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    expect(page.locator(".flash")).to_contain_text(f"Sighting {sighting}: Corrected to Hooded Crow (Corvus cornix)")
    expect(page.locator(f"#item-{sighting}")).to_have_count(0)
    shot(page, "5-reviewed")
    page.goto(f"{served['base']}/sightings/{sighting}")
    expect(page.locator("#answer")).to_have_text("Hooded Crow (Corvus cornix)")
    expect(page.locator("#answer i.sci")).to_have_text("Corvus cornix")  # the scientific name in italics
    expect(page.locator(".history")).to_contain_text("ana corrected")


# What a thumb presses: WCAG 2.5.5 asks 44 px. Links inside running text are exempt, as WCAG exempts them.
TAP_TARGETS = ("button, input:not([type=hidden]):not([type=checkbox]), summary, label.check, nav a, .pager a, "
               "ul.cards a, ul.more-photos a")
SMALL_TARGETS = f"""() => Array.from(document.querySelectorAll("{TAP_TARGETS}"))
    .filter((e) => e.offsetParent !== null)
    .map((e) => [e.outerHTML.slice(0, 60), e.getBoundingClientRect().height])
    .filter(([, height]) => height < 44)"""
OVERFLOWING = """(width) => Array.from(document.querySelectorAll("body *"))
    .filter((e) => e.getBoundingClientRect().right > width && !Array.from(e.children).some(
        (c) => c.getBoundingClientRect().right > width))
    .map((e) => e.outerHTML.slice(0, 80))"""


def _check_page(page: Page, label: str, width: int) -> list[str]:
    """Sideways scroll, tap targets and axe-core's WCAG checks of the page in view: a list of what fails."""
    from axe_playwright_python.sync_playwright import Axe

    problems = []
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        problems.append(f"{label} @{width}: {scroll_width}px wide: {page.evaluate(OVERFLOWING, width)[:3]}")
    if width < 600:
        problems += [f"{label} @{width}: tap target {h:.0f}px {html}" for html, h in page.evaluate(SMALL_TARGETS)]
    results = Axe().run(page)
    problems += [f"{label} @{width}: axe {v['id']}: {[n['target'] for n in v['nodes']][:3]}"
                 for v in results.response["violations"]]
    shot(page, f"phone-{label}-{width}")
    return problems


@pytest.mark.parametrize("width", [390, 1280])
def test_every_page_fits_the_screen_and_passes_axe(browser, served, tmp_path, width):
    """Upload, result, sighting with similar sightings, login, review queue, the audit, one sighting's review,
    the sightings list as a curator sees it, the references and one reference, and an error page: no sideways scroll, 44 px tap targets on a phone, no axe-core violation, at 390 and 1280 px."""
    phone = width < 600
    context = browser.new_context(viewport={"width": width, "height": 844 if phone else 900}, is_mobile=phone,
                                  has_touch=phone, device_scale_factor=2 if phone else 1)
    page = context.new_page()
    base, problems = served["base"], []
    photo = tmp_path / "bird.jpg"
    photo.write_bytes(jpeg_bytes(species_photo(2, 11, size=256)))
    page.goto(base + "/")
    # phones offer the camera and the photo library; HEIC named too, for browsers that do not call it an image
    assert page.get_attribute("#image", "accept") == "image/*,.heic,.heif"
    problems += _check_page(page, "upload", width)
    page.set_input_files("#image", str(photo))
    page.click("text=Mark the bird")
    page.locator("#croppers .square").wait_for()
    problems += _check_page(page, "upload-crop", width)
    page.click("#identify-button")
    page.wait_for_url("**/sightings/*")
    result = page.url
    problems += _check_page(page, "result", width)
    if phone:  # the answer and the user's own photo on the first screen of a phone
        assert page.locator("#answer").bounding_box()["y"] + 20 < 844
        assert page.locator(".photo .framed img").bounding_box()["y"] + 40 < 844
    page.goto(base + "/sightings")
    problems += _check_page(page, "sightings", width)
    page.goto(base + "/login")
    problems += _check_page(page, "login", width)
    page.fill("input[name=name]", "ana")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button:has-text('Log in')")
    page.wait_for_url("**/review*")
    problems += _check_page(page, "review-queue", width)
    page.goto(base + "/review/audit")
    problems += _check_page(page, "audit", width)
    page.goto(result)
    # re-crop with the upload page's square, over the photo, starting from the crop it had: no text box of fractions
    expect(page.locator("form.recrop .cropper .square")).to_be_visible()
    assert page.locator("form.recrop input[name=crop]").get_attribute("type") == "hidden"
    expect(page.locator("form.recrop")).not_to_contain_text("fractions")
    problems += _check_page(page, "review-one", width)
    page.goto(base + "/review/groups")
    problems += _check_page(page, "review-groups", width)
    page.goto(base + "/references/check")
    problems += _check_page(page, "reference-health", width)
    page.goto(base + "/sightings")  # a curator's list has the single-curator filter
    page.locator("input[name=single_curator]").wait_for()
    problems += _check_page(page, "sightings-curator", width)
    page.goto(base + "/references")
    problems += _check_page(page, "references", width)
    page.click("ul.cards a")
    page.wait_for_url("**/references/*")
    problems += _check_page(page, "reference", width)
    page.goto(base + "/sightings/no-such-sighting")
    problems += _check_page(page, "error", width)
    context.close()
    assert problems == []


def test_use_my_location_fills_the_position_and_its_accuracy(browser, served):
    """The browser's geolocation, asked only on the button: position and accuracy filled, a typed position
    drops the accuracy; the date-time field is a picker, left empty."""
    context = browser.new_context(permissions=["geolocation"], geolocation={"latitude": 52.2053, "longitude": 0.1218,
                                                                            "accuracy": 18})
    page = context.new_page()
    page.goto(served["base"] + "/")
    assert page.input_value("#lat") == "" and page.get_attribute("input[name=observed_at]", "type") == "datetime-local"
    page.click("summary")
    page.click("#use-location")
    expect(page.locator("#location-status")).to_contain_text("within 18 m")
    assert page.input_value("#lat") == "52.205300" and page.input_value("#lon") == "0.121800"
    assert page.input_value("#coordinate_uncertainty_m") == "18"
    assert page.input_value("input[name=observed_at]") == ""  # nothing the user did not choose
    page.fill("#lat", "52.3")
    assert page.input_value("#coordinate_uncertainty_m") == ""
    context.close()
