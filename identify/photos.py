"""Stored photos and thumbnails under the data dir, named by content hash.

    photos/<sha[:2]>/<sha256>.<ext>   the uploaded bytes, unchanged (EXIF kept)
    thumbnails/<sha256>.jpg           320 px, upright RGB
    thumbnails/<sha256>-<crop>.jpg    the same of a stored crop (the bird, as the model looked at it)

Files are served only by these generated names (`resolve` refuses anything else), so no user-chosen path ever
reaches the file system. Writes go to a temporary file renamed into place: a reader never sees half a photo.

A file is shared by every sighting of the same bytes, so its lifetime follows the rows that name it, never one
request's fate. An upload holds a shared lock on its photos (`reserved`) from before it saves them until its
transaction has committed or failed; a file is removed only under the exclusive lock and only when no committed
row names it (`remove_unnamed`, and the sweep), so a file that a concurrent upload saved or reused is never
removed under it. The locks are striped by the hash's first two hex digits: 256 small files in `.photo-locks/`."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from PIL import Image

from identify.framing import Crop
from identify.images import bare_copy
from identify.locks import exclusive_lock, shared_locks

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 320
PUBLIC_FOLDER = "public-bare"  # what the public is served: pixels and orientation, no other metadata
OLDER_PUBLIC_FOLDERS = ("public",)  # copies that kept EXIF less GPS, XMP, IPTC and comments: never served again
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif", "BMP": "bmp", "MPO": "jpg",
              "HEIF": "heic"}
# The public copy's name when its format is not the photo's (identify.images.bare_copy writes HEIF as JPEG).
PUBLIC_SUFFIX = {".heic": ".jpg"}


def public_name(name: str) -> str:
    """The file name of a stored photo's public copy."""
    return name + PUBLIC_SUFFIX.get(Path(name).suffix, "")
PHOTO_NAME = re.compile(r"^([0-9a-f]{64})\.(jpg|png|webp|gif|tif|bmp|heic|img)$")
THUMBNAIL_NAME = re.compile(r"^([0-9a-f]{64})\.jpg$")


@dataclass(frozen=True)
class StoredPhoto:
    sha256: str
    name: str  # generated: <sha256>.<ext>


def photo_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def photo_name(sha256: str, image_format: str | None) -> str:
    return f"{sha256}.{EXTENSIONS.get(image_format or '', 'img')}"


def _write_atomically(path: Path, write: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)  # type: ignore[operator]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PhotoStore:
    def __init__(self, data_dir: Path) -> None:
        self.photos = data_dir / "photos"
        self.thumbnails = data_dir / "thumbnails"
        # Copies without any metadata, for the public. The folder's name changes with what a copy keeps: copies an
        # older release made (with XMP and comments still in them) are never served, and the sweep removes them.
        self.public = data_dir / PUBLIC_FOLDER
        self.older_public = [data_dir / name for name in OLDER_PUBLIC_FOLDERS]
        # beside the photo folders, not in them: the sweep's lock, and the time of the last sweep
        self.sweep_lock = data_dir / ".photo-sweep.lock"
        self.sweep_stamp = data_dir / ".photo-sweep.last"
        self.locks = data_dir / ".photo-locks"

    def photo_path(self, name: str) -> Path:
        return self.photos / name[:2] / name

    def save(self, data: bytes, image_format: str | None, sha256: str | None = None) -> StoredPhoto:
        """Store the bytes under their hash (`sha256` when the caller has it already). Call it inside `reserved`
        of the same hash when a row is to name the file."""
        sha256 = sha256 or photo_sha256(data)
        name = photo_name(sha256, image_format)
        path = self.photo_path(name)
        if not path.exists():  # else the same bytes are stored already, perhaps by an upload in flight
            _write_atomically(path, lambda out: out.write(data))
        return StoredPhoto(sha256, name)

    def _lock_path(self, name: str) -> Path:
        return self.locks / f"{name[:2]}.lock"

    @contextlib.contextmanager
    def reserved(self, sha256s: Iterable[str]) -> Iterator[None]:
        """For the block, no file of these hashes is removed: hold it from before `save` until the transaction
        that names the files has committed or rolled back."""
        with shared_locks(self._lock_path(sha) for sha in sha256s):
            yield

    def remove_unnamed(self, names: Iterable[str], named: Callable[[str], bool]) -> int:
        """Remove the stored photos among `names` that no committed row names (`named`), skipping any that an
        upload in flight holds (`reserved`); returns how many. For a failed upload's clean-up: it never raises,
        since it runs while another error is on its way to the user (what it leaves, the sweep takes later)."""
        removed = 0
        for name in dict.fromkeys(names):
            try:
                removed += self._remove_if_unnamed(name, named)
            except Exception as exc:  # the database may be what failed: keep the file
                log.warning("kept photo %s after a failed upload: %s", name, exc)
        return removed

    def _remove_if_unnamed(self, name: str, named: Callable[[str], bool]) -> bool:
        with exclusive_lock(self._lock_path(name)) as held:
            if not held or named(name):
                return False
            self.photo_path(name).unlink(missing_ok=True)
            return True

    def thumbnail_path(self, sha256: str, crop: Crop | None = None) -> Path:
        return self.thumbnails / (f"{sha256}-{crop.text.replace(',', '_')}.jpg" if crop else f"{sha256}.jpg")

    def make_thumbnail(self, sha256: str, image: Image.Image, crop: Crop | None = None) -> Path:
        """`image`: the photo, or the crop's pixels when `crop` names one."""
        path = self.thumbnail_path(sha256, crop)
        if not path.exists():
            small = image.copy()
            small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            _write_atomically(path, lambda out: small.save(out, "JPEG", quality=85))
        return path

    def public_copy(self, name: str) -> Path | None:
        """A copy of a stored photo with no metadata at all (identify.images.bare_copy: only the pixels and
        their orientation), made on first request: what the public is served."""
        original = self.resolve_photo(name)
        if original is None:
            return None
        path = self.public / name[:2] / public_name(name)
        if not path.exists():
            with Image.open(original) as image:
                _write_atomically(path, lambda out: bare_copy(image, out))
        return path

    def resolve_photo(self, name: str) -> Path | None:
        """The file behind a generated photo name, or None: any other name never touches the disk."""
        if not PHOTO_NAME.match(name):
            return None
        path = self.photo_path(name)
        return path if path.is_file() else None

    def sweep_if_due(self, every_seconds: float, kept: Callable[[], tuple[set[str], set[str]]],
                     older_than_seconds: float, named: Callable[[str], bool]) -> int | None:
        """`sweep`, unless another process is sweeping or one swept less than `every_seconds` ago (None then).
        Several workers start at once and restart often; one sweep an hour is enough, and `kept` (which reads
        every photo name and hash from SQL) is only called when it runs."""
        with exclusive_lock(self.sweep_lock) as held:
            if not held:
                return None
            stamp = self.sweep_stamp
            if stamp.exists() and time.time() - stamp.stat().st_mtime < every_seconds:
                return None
            removed = self.sweep(*kept(), older_than_seconds, named)
            stamp.touch()
            return removed

    def sweep(self, kept_names: set[str], kept_hashes: set[str], older_than_seconds: float,
              named: Callable[[str], bool]) -> int:
        """Delete stored files that no row names, last written more than `older_than_seconds` ago; returns how
        many. A server killed between writing a photo and committing its sighting leaves such a file (and a
        killed write a `.tmp-` file). `kept_*` (read from SQL before the walk) pick the candidates; a photo is
        then removed only through `remove_unnamed`, which asks `named` again under its lock, since an upload may
        have reused the file and committed since. Thumbnails and public copies are made again on demand."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        orphans = []
        older = [path for folder in self.older_public for path in folder.glob("*/*")]
        kept_public = {public_name(name) for name in kept_names}
        for path in [*self.photos.glob("*/*"), *self.public.glob("*/*"), *self.thumbnails.glob("*"), *older]:
            half_written = path.name.startswith(".tmp-")
            if half_written or path.parent.parent in self.older_public:
                wanted = False  # an older release's public copy: made again without metadata on demand
            elif path.parent.parent == self.photos:
                wanted = path.name in kept_names
            elif path.parent.parent == self.public:
                wanted = path.name in kept_public
            else:  # a thumbnail, named by the photo's hash (and a crop)
                wanted = path.stem[:64] in kept_hashes
            if wanted or not path.is_file() or path.stat().st_mtime >= cutoff:
                continue
            if path.parent.parent == self.photos and not half_written:
                orphans.append(path.name)
            else:
                path.unlink(missing_ok=True)
                removed += 1
        return removed + self.remove_unnamed(orphans, named)

    def thumbnail_sha256(self, name: str) -> str | None:
        """The photo hash a generated thumbnail name stands for, or None for any other name."""
        match = THUMBNAIL_NAME.match(name)
        return match.group(1) if match else None
