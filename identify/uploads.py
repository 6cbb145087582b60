"""An upload, from bytes to a stored sighting: each photo read once (at the size its crop needs), framed (the
uploader's crop, else the detector's best bird, else the whole photo), identified in one forward pass per
photo batched with other requests, then stored (files by content hash, one SQL transaction). A curator's
re-crop runs the same path over the stored photos (`reframe`).

On any failure nothing is stored: photo files that no committed row names are removed again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from identify.errors import IdentifyError
from identify.framing import (AUTOMATIC, CURATOR, DETECTOR, USER, Crop, Framing, centre_crops, decode_size_for,
                              frame_photos)
from identify.identifier import Evidence, Identification, pool_evidence
from identify.observation import Photo, WhereAndWhen, read_photo
from identify.photos import StoredPhoto
from identify.rules import MAX_PHOTOS
from identify.sightings import NewSighting, PhotoOfSighting, SightingRecord


@dataclass(frozen=True)
class SightingFields:
    """What an uploader may say about a photo (parsed by the web layer); blank fields are read from EXIF."""

    given: WhereAndWhen = WhereAndWhen()  # what the observer says of place and time; EXIF fills the rest
    observer: str | None = None
    note: str | None = None
    ignore_location: bool = False  # leave place and season out of the identification (Merlin's "I don't know")
    hide_location: bool = False  # show the public no position at all (curators still see it)
    crops: tuple[Crop | None, ...] = ()  # where the bird is in each photo, in upload order (None: the whole photo)
    file_names: tuple[str, ...] = ()  # as the uploader's device named the files: what error messages say
    coordinate_uncertainty_m: float | None = None  # how far off the given position may be (a phone's accuracy)


@dataclass(frozen=True)
class Identified:
    sighting_id: int  # SQL's key
    public_id: str  # what the outside world calls it
    result: Identification
    framing: tuple[Framing, ...] = field(default=())  # how each photo was looked at, in upload order
    photos: tuple[StoredPhoto, ...] = field(default=())


def _which(number: int, count: int, names: Sequence[str]) -> str:
    """How a message names a photo: its file name when known, else its place in the upload ("" for a lone
    photo without a name: the message speaks of "the photo" already)."""
    name = names[number - 1] if number <= len(names) and names[number - 1] else None
    if name:
        return f"“{name}”" + (f" (photo {number} of {count})" if count > 1 else "")
    return f"photo {number} of {count}" if count > 1 else ""


class UploadPipeline:
    def __init__(self, service: Any) -> None:
        """`service`: the IdentificationService whose parts it uses (limits, model, batchers, stores)."""
        self.service = service
        self.limits = service.limits
        self.model_size = service.backbone.identity.decode_size

    def read(self, data: bytes, crop: Crop | None = None) -> Photo:
        if len(data) > self.limits.max_upload_bytes:
            raise IdentifyError("file_too_large", f"the photo is over {self.limits.max_upload_mb:g} MB: send a "
                                "smaller copy (a phone's share or export size will do)", 413)
        detecting = self.service.finder is not None
        return read_photo(data, self.limits.max_pixels, decode_size_for(crop, self.model_size, detecting))

    def read_all(self, photos: Sequence[bytes], given: Sequence[Crop | None],
                 names: Sequence[str] = ()) -> tuple[list[Photo], list[Crop | None]]:
        """Every photo decoded (at the size its crop needs) and checked, with its crop (None: the whole photo),
        or an error that names the photo (nothing done yet)."""
        if not photos:
            raise IdentifyError("missing_image", "choose a photo: send it as the multipart form field `image`")
        if len(photos) > MAX_PHOTOS:
            raise IdentifyError("too_many_photos", f"{len(photos)} photos: one sighting takes 1 to {MAX_PHOTOS} "
                                "photos of the same bird")
        crops = self.crops(given, len(photos))
        read = []
        for number, (data, crop) in enumerate(zip(photos, crops, strict=True), start=1):
            try:
                read.append(self.read(data, crop))
            except IdentifyError as exc:
                raise exc.led_by(_which(number, len(photos), names)) from None
        return read, crops

    @staticmethod
    def crops(given: Sequence[Crop | None], count: int) -> list[Crop | None]:
        """One crop (or None) per photo: those given, in photo order, the rest None; more than photos refused."""
        if len(given) > count:
            raise IdentifyError("bad_crop", f"{len(given)} crops for {count} photos: one `crop` per "
                                "`image` at most, in the same order")
        return [*given, *[None] * (count - len(given))]

    def frame(self, read: Sequence[Photo], crops: Sequence[Crop | None], names: Sequence[str] = (),
              source: str = USER, detect: bool = True) -> list[tuple[Any, Framing]]:
        """Each photo's pixels for the model and how they were framed (identify.framing.frame_photos); the
        detector, when one is configured and `detect`, frames the photos sent without a crop."""
        finder = self.service.finder
        find = finder.submit_many if finder is not None and detect else None
        framed = frame_photos([photo.image for photo in read], crops, find, source,
                              lambda index: _which(index + 1, len(read), names))
        return [self._detected_at_full_size(photo, image, framing)
                for photo, (image, framing) in zip(read, framed, strict=True)]

    def _detected_at_full_size(self, photo: Photo, image: Any, framing: Framing) -> tuple[Any, Framing]:
        """A detector's square cut again from a decode large enough for it. The photo was decoded for the
        detector before the box was known; a small bird's square from that decode would be enlarged for the
        model, as a user's crop (decoded for its crop from the start) is not."""
        if framing.source != DETECTOR or framing.crop is None or photo.format != "JPEG":
            return image, framing  # only a JPEG is decoded below its full size (a draft)
        needed = framing.crop.decode_size(self.model_size)
        if min(photo.image.size) >= needed or max(photo.image.size) >= max(photo.full_size):
            return image, framing  # the decode already covers the model's input, or is the whole photo
        sharper = read_photo(photo.data, self.limits.max_pixels, needed).image
        return framing.crop.cut(sharper), framing

    def identify(self, photos: Sequence[bytes], fields: SightingFields) -> Identified:
        """Identify one to five photos of one bird and store them as one sighting."""
        svc = self.service
        read, crops = self.read_all(photos, fields.crops, fields.file_names)
        framed = self.frame(read, crops, fields.file_names)
        # EXIF first: the place and date take part in the identification.
        where = fields.given.completed_by(photo.exif for photo in read)
        place = None if fields.ignore_location else where.place()
        framed = self.with_centre_crops(framed)
        evidence = self.evidence(framed)
        result = svc.identifier.explain(pool_evidence(evidence), place, svc.audit_summary().over_target)
        framing = tuple(f for _, f in framed)
        stored: list[StoredPhoto] = []  # filled one by one: a failure on the second photo still knows the first
        try:
            with svc.photos.reserved([photo.sha256 for photo in read]):  # none removed until the row is committed
                for photo in read:
                    stored.append(svc.photos.save(photo.data, photo.format, photo.sha256))
                sighting_id, public_id = svc.sightings.add(NewSighting(
                    photos=[PhotoOfSighting(p.sha256, p.name, e.embedding, f, e.probabilities)
                            for p, e, f in zip(stored, evidence, framing, strict=True)],
                    model_id=svc.model_id, **self._answer_columns(result),
                    where=where, coordinate_uncertainty_m=fields.coordinate_uncertainty_m if fields.given.located
                    else None,
                    audit=svc._drawn_for_audit(result), risk_group=result.risk_group,
                    observer=fields.observer, note=fields.note, hide_location=fields.hide_location,
                ))
        except BaseException:
            # Only what no committed row names: the same bytes may belong to a sighting another request stored.
            svc.photos.remove_unnamed([photo.name for photo in stored], svc.sightings.names_photo)
            raise
        svc.similar_index.add([sighting_id], result.embedding[None, :])
        return Identified(sighting_id, public_id, result, framing, tuple(stored))

    def with_centre_crops(self, framed: list[tuple[Any, Framing]]) -> list[tuple[Any, Framing]]:
        """With `auto_crop` on, a photo neither cropped nor framed by a detector is marked to be looked at with
        its centre crops too."""
        if not self.limits.auto_crop:
            return framed
        return [(image, Framing(None, AUTOMATIC)) if f.crop is None and not f.detections else (image, f)
                for image, f in framed]

    def evidence(self, framed: Sequence[tuple[Any, Framing]]) -> list[Evidence]:
        """One forward pass per photo (and per centre crop of an automatic one), batched with each other and
        with the uploads that arrive meanwhile; a photo's centre crops pooled with it."""
        images, owners = [], []
        for number, (image, framing) in enumerate(framed):
            for look in [image, *(centre_crops(image) if framing.source == AUTOMATIC else [])]:
                images.append(look)
                owners.append(number)
        found = self.service.batcher.submit_many(images)
        return [pool_evidence([e for e, owner in zip(found, owners, strict=True) if owner == number])
                for number in range(len(framed))]

    @staticmethod
    def _answer_columns(result: Identification) -> dict[str, Any]:
        """What a sighting stores of its answer (a new upload and a re-crop alike)."""
        return dict(embedding=result.embedding, decision=result.decision.decision, reasons=result.decision.reasons,
                    uncertainty=result.decision.uncertainty, predictions=result.species,
                    rollup=result.rollup.to_dict() if result.rollup is not None else None,
                    neighbours=[(n.reference_id, n.similarity) for n in result.neighbours])

    def reframe(self, record: SightingRecord, crops: Sequence[Crop | None], curator_id: int,
                version: int, note: str | None, reviewed: Callable[..., SightingRecord]) -> SightingRecord:
        """A curator's new crops for a sighting's photos (None: keep that photo's framing), identified again
        from the stored full-resolution files; `reviewed` stores the new answer (identify.reviews.recrop)."""
        svc = self.service
        chosen = self.crops(crops, len(record.photos))
        if not any(crop is not None for crop in chosen):
            raise IdentifyError("bad_crop", "give the new crop of at least one photo")
        kept = [crop if crop is not None else photo.framing.crop if photo.framing else None
                for crop, photo in zip(chosen, record.photos, strict=True)]
        read = [self.read(svc.photos.photo_path(photo.name).read_bytes(), crop)
                for photo, crop in zip(record.photos, kept, strict=True)]
        framed = self.frame(read, kept, source=CURATOR, detect=False)
        framing = [f if new is not None or photo.framing is None else photo.framing
                   for (_, f), new, photo in zip(framed, chosen, record.photos, strict=True)]
        evidence = self.evidence([(image, f) for (image, _), f in zip(framed, framing, strict=True)])
        # The place and season again when they shaped the first answer (an uploader may have left them out).
        placed = any(p.expected_here is not None for p in record.predictions)
        place = WhereAndWhen.stored(record.lat, record.lon, record.observed_at).place() if placed else None
        result = svc.identifier.explain(pool_evidence(evidence), place, svc.audit_summary().over_target)
        # Similar sightings keep the first embedding until the next snapshot (their index adds, never replaces).
        return reviewed(record.id, version, curator_id, note, self._answer_columns(result),
                        [(e.embedding, f, e.probabilities) for e, f in zip(evidence, framing, strict=True)])
