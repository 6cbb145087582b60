"""Server-rendered pages: upload-and-match, a sighting with its similar sightings, the curator's review queue,
and the stored files (served only by their generated names)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for

from identify.answers import DECISION_WORDS, REASON_WORDS, STATUS_WORDS, display_name, name_parts, reason_words
from identify.errors import IdentifyError
from identify.framing import parse_crop
from identify.rollup import rank_taxon
from identify.taxonomy import Taxon
from identify.web import views
from identify.web.auth import current_curator, keep_private, local_path, login_required, service
from identify.rules import MAX_PAGE
from identify.reference_records import ReferenceFilters
from identify.web.forms import (parse_bulk_review, parse_count, parse_filters, parse_list_filters, parse_reference_change,
                                parse_reference_filters, parse_review, parse_upload)

bp = Blueprint("pages", __name__)

QUEUE_PAGE = 20
SIMILAR_ON_PAGE = 8

LIST_PAGE = 24  # sightings on one page of the list
CROP_TEXT = {"user": "the square the uploader drew", "detector": "the detector's best bird, with a margin",
             "curator": "a curator's crop", "automatic": "the whole photo and its centre", None: "the whole photo"}
SECOND_OPINION_TEXT = {"new_species": "a species with no reference photo yet",
                       "first_record": "never recorded at this place in this season", "all": "every answer",
                       "awaited": "it had waited for a second curator"}
SINGLE_CURATOR_TEXT = ("You are this deployment's only curator, so it was taken at once and marked for a later "
                       "curator to check.")


@bp.app_context_processor
def wording() -> dict[str, Any]:
    return {"decision_text": DECISION_WORDS, "reason_text": REASON_WORDS, "crop_text": CROP_TEXT,
            "status_text": STATUS_WORDS, "reason_words": reason_words}


def one_line(record: Any, neighbours: list[Any], agreeing: int) -> str:
    """Why the answer is what it is, in one sentence a birder reads (the numbers are behind "details")."""
    reasons = reason_words(record.reasons)
    ranked = rank_taxon(record.rollup) if record.decision == "confident" else None
    if ranked is not None:  # confident at a higher rank: what held the species back, first
        return (f"Sure of the {ranked.rank}, not of the species: " + (reasons[0][:1].lower() + reasons[0][1:]
                if reasons else "the species' own bound does not hold.") + " A curator will name the species.")
    if record.decision == "confident":
        if not neighbours:
            return "The model is sure, and nothing held the answer back."
        return f"The model and {agreeing} of the {len(neighbours)} most similar reference photos agree."
    if record.decision == "no_match":
        return "None of the species this service knows fits this photo well." + (f" {reasons[0]}" if reasons else "")
    return (reasons[0] + " " if reasons else "") + "The best guess is shown; a curator will check it."


def review_sentence(outcome: Any, named: str) -> str:
    """What a review did, in words: "Corrected to Indian Peafowl (Pavo cristatus); its photo is now a reference." """
    record = outcome.sighting
    if record.status == "awaiting_second_opinion":
        why = SECOND_OPINION_TEXT.get(outcome.second_opinion or "", "it would teach the service something new")
        return (f"Named {named}; waiting for a second curator ({why}). It becomes a reference once another "
                "curator agrees.")
    done = {"confirmed": f"Confirmed as {named}", "corrected": f"Corrected to {named}", "rejected": "Rejected",
            "open": "Reopened: back in the review queue"}.get(record.status, STATUS_WORDS.get(record.status, "Saved"))
    added = "; its photo is now a reference" if outcome.reference_id else ""
    alone = f" {SINGLE_CURATOR_TEXT}" if outcome.single_curator else ""
    return f"{done}{added}.{alone}"


def decision_word(record: Any) -> str:
    return DECISION_WORDS[record.decision].lower() + ("," if record.decision == "no_match" else ":")


@bp.app_template_global()  # a global, not context: the macros of _names.html, imported, see no context
def display_parts(label: str | None, taxon: Any) -> tuple[str | None, str | None, str | None]:
    """identify.answers.name_parts for a template, whose taxon may be a record's or an answer's JSON."""
    if isinstance(taxon, dict):
        taxon = Taxon(taxon["scientific_name"], taxon.get("common_name"), taxon["rank"], taxon.get("genus"),
                      taxon.get("family"), taxon.get("order"), taxon.get("authority", ""),
                      taxon.get("authority_version", ""))
    return name_parts(label, taxon)


bp.add_app_template_global(views.thumbnail_url, "thumb")
bp.add_app_template_global(views.cover_crop)


@bp.app_template_global()
def label_name(label: str | None) -> str:
    """A model's or a reference's label by the naming rule (its taxon's names, the label itself when no
    taxonomy knows it), as plain text. A label the served names do not hold yet (a relabel still proposed) is
    resolved by the taxonomy."""
    svc = service()
    taxon = svc.identifier.names.taxa.get(label or "") or (svc.references.taxonomy.resolve(label) if label else None)
    return display_name(label, taxon) or "no species"


@bp.get("/favicon.ico")
def favicon() -> Any:
    """Browsers ask for /favicon.ico whatever the page links: answer it rather than log a 404 each time."""
    return current_app.send_static_file("favicon.svg")


@bp.get("/")
def upload() -> Any:
    return render_template("upload.html", form={})


@bp.post("/")
def upload_post() -> Any:
    try:
        fields, photos = parse_upload(request.form, request.files.getlist("image"))
        identified = service().identify_upload(photos, fields)
    except IdentifyError as exc:  # every problem listed, the fields kept as typed (a browser clears the photos)
        return render_template("upload.html", error=exc, form=request.form), exc.status
    return redirect(url_for("pages.sighting", sighting_id=identified.public_id))


@bp.get("/sightings")
def sightings() -> Any:
    """Recent sightings with filters, paged: positions as this viewer may see them."""
    svc = service()
    error, records, total = None, [], 0
    try:
        page = parse_count(request.args.get("page"), "page", 1, MAX_PAGE)
        chosen = {key: value for key, value in request.args.items() if value}  # the form's "any" sends ""
        records, total = svc.sighting_search.page(views.filters_for_viewer(parse_list_filters(chosen)),
                                                  page, LIST_PAGE)
    except IdentifyError as exc:
        page, error = 1, exc
    return render_template("sightings.html", items=[views.sighting_summary_json(r) for r in records], total=total,
                           page=page, per_page=LIST_PAGE, filters=request.args, error=error)


@bp.get("/sightings/<sighting_id>")
def sighting(sighting_id: str) -> Any:
    svc = service()
    key = svc.sighting_key(sighting_id)
    record = svc.sighting(key)
    filter_error = None
    try:
        similar = svc.similar_to_sighting(key, SIMILAR_ON_PAGE, views.filters_for_viewer(parse_filters(request.args)))
    except IdentifyError as exc:
        similar, filter_error = [], exc
    curator = current_curator()
    answer, neighbours = views.sighting_json(record), svc.neighbours_of(record)
    by_vote = max(answer["species"], key=lambda s: s["knn"], default=None)
    agreeing = views.agreeing_neighbours(neighbours, by_vote["name"], svc.identifier.names.canonical) if by_vote else 0
    return render_template(
        "sighting.html", sighting=record, answer=answer, neighbours=neighbours, agreeing=agreeing, similar=similar,
        one_line=one_line(record, neighbours, agreeing),
        model_had_said=f"The service had first said: {DECISION_WORDS[record.decision].lower()}.",
        compare=svc.compare(record),
        filters=request.args, filter_error=filter_error, curator=curator,
        species_names=svc.species_names() if curator else [], calibration=svc.identifier.calibration_state(),
    )


@bp.get("/review/audit")
@login_required
def audit() -> Any:
    """The live audit: the deployment's own error among confident answers, with its bounds, per group."""
    svc = service()
    return render_template("audit.html", audit=svc.audit_summary(), share=svc.limits.audit_share,
                           calibration=svc.identifier.calibration_state())


@bp.get("/review")
@login_required
def review_queue() -> Any:
    svc = service()
    try:
        page = parse_count(request.args.get("page"), "page", 1, MAX_PAGE)
    except IdentifyError:
        page = 1  # a page number a person edited into the address: show the first
    records, total = svc.queue(page, QUEUE_PAGE)
    return render_template("review.html", items=records, page=page, total=total, per_page=QUEUE_PAGE,
                           species_names=svc.species_names(), calibration=svc.identifier.calibration_state(),
                           ranked_of={r.id: views.sighting_json(r)["species"] for r in records},
                           like_of={r.id: [] if r.audit else svc.references_like(r) for r in records})


@bp.get("/review/groups")
@login_required
def review_groups() -> Any:
    """The queue's look-alike sightings with one answer, to confirm or correct a group at once."""
    svc = service()
    return render_template("review_groups.html", groups=svc.review_groups(), species_names=svc.species_names())


@bp.post("/review/bulk")
@login_required
def review_bulk() -> Any:
    curator = current_curator()
    assert curator is not None
    body: dict[str, Any] = {**request.form.to_dict(), "items": request.form.getlist("items")}
    body["add_as_reference"] = "add_as_reference" in request.form
    body["as_written"] = "as_written" in request.form
    try:
        svc = service()
        results = svc.review_many(parse_bulk_review(body, svc.sighting_key, curator.id))
    except IdentifyError as exc:
        flash(f"Group: {exc.message}", "error")
        return redirect(url_for("pages.review_groups"))
    failed = [r for r in results if r.error is not None]
    flash(f"{len(results) - len(failed)} of {len(results)} sightings reviewed"
          + "".join(f"; sighting {r.public_id}: {r.error.message}" for r in failed if r.error), "error" if failed else "message")
    return redirect(url_for("pages.review_groups"))


@bp.post("/sightings/<sighting_id>/review")
@login_required
def review(sighting_id: str) -> Any:
    curator = current_curator()
    assert curator is not None
    back = local_path(request.form.get("back"))
    body: dict[str, Any] = {**request.form.to_dict(), "crop": request.form.getlist("crop") or None}
    body["add_as_reference"] = "add_as_reference" in request.form  # an unticked box sends nothing: that is a no
    body["as_written"] = "as_written" in request.form
    try:
        svc = service()
        outcome = svc.review(parse_review(svc.sighting_key(sighting_id), curator.id, body))
    except IdentifyError as exc:
        flash(f"Sighting {sighting_id}: {exc.message}", "error")
        return redirect(back)
    named = display_name(outcome.sighting.species, outcome.sighting.taxon) if outcome.sighting.species else "no species"
    if body.get("action") == "recrop":
        flash(f"Sighting {sighting_id}: identified again on the new crop: {decision_word(outcome.sighting)} {named}.")
    else:
        flash(f"Sighting {sighting_id}: {review_sentence(outcome, named)}")
    return redirect(back)


@bp.get("/references")
@login_required
def references() -> Any:
    """The reference set, filtered (curators)."""
    svc = service()
    args = {key: value for key, value in request.args.items() if value and key != "page"}
    error, items, total = None, [], 0
    try:
        page = parse_count(request.args.get("page"), "page", 1, MAX_PAGE)
        filters = parse_reference_filters(args)
        items, total = svc.references_page(filters, page, QUEUE_PAGE)
    except IdentifyError as exc:
        page, filters, error = 1, ReferenceFilters(), exc
    return render_template("references.html", items=items, total=total, page=page, per_page=QUEUE_PAGE,
                           filters=filters, filters_args=args, error=error, species_names=svc.species_names())


@bp.get("/references/check")
@login_required
def reference_health() -> Any:
    """The health check of the reference set: what to relabel or retire first."""
    return render_template("reference_health.html", report=service().reference_health())


@bp.get("/references/<reference_id>")
@login_required
def reference(reference_id: str) -> Any:
    svc = service()
    record, nearest = svc.reference(reference_id)
    return render_template("reference.html", ref=record, nearest=nearest, species_names=svc.species_names())


@bp.post("/references/<reference_id>/<action>")
@login_required
def change_reference(reference_id: str, action: str) -> Any:
    curator = current_curator()
    assert curator is not None
    if action not in ("relabel", "retire", "restore"):
        abort(404)
    try:
        if action == "retire" and request.form.get("confirm") != "yes":  # the page asks; a form without it is a slip
            raise IdentifyError("bad_reference_change", "tick the box to confirm: the photo leaves every search")
        record = service().change_reference(reference_id, action, curator.id,
                                            **parse_reference_change(request.form, action))
    except IdentifyError as exc:
        if exc.status == 404:
            raise
        flash(f"Reference {reference_id}: {exc.message}", "error")
        return redirect(url_for("pages.reference", reference_id=reference_id))
    done = {"relabel": f"relabelled {display_name(record.species, record.taxon)}", "retire": "retired",
            "restore": "restored"}
    if action == "relabel" and record.awaiting is not None:
        flash(f"Reference {reference_id}: the relabel to {label_name(record.awaiting.to_species)} waits for a "
              f"second curator ({SECOND_OPINION_TEXT[record.awaiting.second_opinion or 'all']}); it keeps its label "
              "until another curator relabels it the same way.")
        return redirect(url_for("pages.reference", reference_id=reference_id))
    taken_alone = bool(record.changes and record.changes[-1].second_opinion)
    flash(f"Reference {reference_id} {done[action]}; every server follows within seconds."
          + (f" {SINGLE_CURATOR_TEXT}" if taken_alone else ""))
    return redirect(url_for("pages.reference", reference_id=reference_id))


@bp.get("/media/photos/<name>")
def photo(name: str) -> Any:
    """The photo as the public sees it: without its GPS position."""
    path = service().photos.public_copy(name)
    if path is None:
        abort(404)
    return send_file(path, max_age=31536000)  # content-addressed: a name never changes its bytes


@bp.get("/media/originals/<name>")
@login_required
def original(name: str) -> Any:
    """The photo byte for byte, GPS included: curators only."""
    path = service().photos.resolve_photo(name)
    if path is None:
        abort(404)
    return keep_private(send_file(path, max_age=31536000))  # never kept by a shared cache


@bp.get("/media/thumbnails/<name>")
def thumbnail(name: str) -> Any:
    """A photo's thumbnail; with `?crop=x,y,w,h`, of a crop stored for it (views.thumbnail_url)."""
    svc = service()
    sha256 = svc.photos.thumbnail_sha256(name)
    try:
        crop = parse_crop(request.args.get("crop"))
    except IdentifyError:
        abort(404)  # no thumbnail is named so
    path = svc.thumbnail(sha256, crop) if sha256 else None
    if path is None:
        abort(404)
    return send_file(path, mimetype="image/jpeg", max_age=31536000)
