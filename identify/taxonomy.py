"""Bird names to taxa: every species label (a model class, a reference folder, a manifest row, a curator's
input) resolves to a taxon with its scientific and common name, rank, genus, family and order, and the
authority it came from. The names come from `birdnames`, which ships AviList, eBird/Clements, BirdLife, IBP and
BBL offline.

Resolution, in order:
1. the operator's mapping file (CSV `label,scientific_name`), which overrides everything;
2. the label's scientific name, found by common name, scientific name or code in each authority in
   AUTHORITIES order (authorities disagree: "Hooded crow" is a species in eBird's list, not in AviList's);
3. the taxon of that scientific name is taken from the first authority in the same order that lists it, so
   one scientific name is always one taxon, whatever label led to it.
Labels are compared after birdnames' soft matching (case, hyphens, underscores, spaces) and ours on top:
apostrophes and full stops dropped, British and American spellings (grey/gray, colour/color) made one. A
label that resolves nowhere keeps working as written, with no taxon.

Reading birdnames' tables takes about a second (pandas); the index built from them is cached per birdnames
version under ~/.cache/identify/, so later starts load it in a fraction of that, and a lookup is a dict
access."""

from __future__ import annotations

import csv

import functools
import logging
import os
import pickle
import re
import threading
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from identify.errors import IdentifyError

log = logging.getLogger(__name__)

# (authority, version), most preferred first: AviList is the unified global list of 2025; eBird/Clements is what
# most field apps and birder's regional models follow; BirdLife backs the IUCN Red List; older eBird releases
# keep names that have since changed resolvable; IBP and BBL add North American alpha codes.
AUTHORITIES: tuple[tuple[str, int], ...] = (
    ("avilist", 2025), ("ebird", 2024), ("birdlife", 2024), ("ebird", 2023), ("ebird", 2022), ("ebird", 2021),
    ("ibp", 2024), ("bbl", 2025),
)
RANKS = ("species", "subspecies", "genus", "family", "order")
INDEX_FORMAT = 3  # bump when the cached index changes shape
SUGGESTIONS = 10


@dataclass(frozen=True)
class Taxon:
    scientific_name: str
    common_name: str | None
    rank: str  # species, subspecies, genus, family, order
    genus: str | None
    family: str | None
    order: str | None
    authority: str  # avilist, ebird, birdlife, ibp, bbl, or "mapping" for the operator's own entry
    version: str  # the authority's year

    @property
    def label(self) -> str:
        """How a person names it: the common name, else the scientific name."""
        return self.common_name or self.scientific_name


@dataclass(frozen=True)
class Suggestion:
    name: str  # the matching name, as the authority writes it
    taxon: Taxon


MATCHES = 400  # names starting with what was typed, at most, before the rest are looked at
FUZZY_CUTOFF = 80  # rapidfuzz ratio (0-100) for a close spelling
_SPELLINGS = {"grey": "gray", "colour": "color", "coloured": "colored", "moustached": "mustached"}


def name_key(label: str) -> str:
    """The form two labels share when they name the same thing: birdnames' soft matching (case, hyphens,
    underscores, spaces), no apostrophes or full stops, and one spelling for British and American words."""
    from_birdnames = re.sub(r"[-_\s]+", " ", label).strip().lower()  # birdnames.utils.normalize_string
    words = re.sub(r"['’.]", "", from_birdnames).split()
    return " ".join(_SPELLINGS.get(word, word) for word in words)


NOT_A_TAXON = "-"  # in a mapping file: this label names no taxon (an ImageNet "spatula" is no duck genus)
_CODE = re.compile(r"[A-Z]{4}|[A-Z]{6}|[a-z]{4,6}[0-9]")


def looks_like_code(label: str) -> bool:
    """Whether a label is written as a code: an IBP/BBL alpha code (HOSP, PASDOM) or an eBird code with its
    digit (graher1). Plain words are not taken as codes: "banana" is an eBird code, and ImageNet's banana is
    no Bananaquit."""
    return _CODE.fullmatch(label.strip()) is not None


def species_key(label: str, taxon: Taxon | None) -> str:
    """The name a species is kept and answered under: the scientific name of the species-rank taxon its label
    names, so that every label of one species (a model class "peacock", a folder "Pavo_cristatus", a curator's
    "Indian Peafowl") is one species everywhere. A label that names no taxon, several birds or a higher taxon
    ("partridge", "bee eater") or a subspecies stays its own species, as written."""
    return taxon.scientific_name if taxon is not None and taxon.rank == "species" else label


def _clean(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text if text and text.lower() != "nan" else None


def _rank(row: dict[str, Any], authority: str, scientific_name: str) -> str:
    if authority == "avilist" and _clean(row.get("avilist_taxon_rank")):
        return str(row["avilist_taxon_rank"])
    return "subspecies" if len(scientific_name.split()) == 3 else "species"


def _taxon_of(row: dict[str, Any], authority: str, version: int) -> Taxon | None:
    scientific_name = _clean(row.get("scientific_name"))
    if scientific_name is None or len(scientific_name.split()) > 3:  # hybrids and slashes are not taxa
        return None
    order = _clean(row.get(f"{authority}_order"))
    rank = _rank(row, authority, scientific_name)
    above_genus = rank in ("family", "order")  # birdnames' `genus` column is then the name's first word
    return Taxon(
        scientific_name=scientific_name,
        common_name=_clean(row.get(f"{authority}_common_name")),
        rank=rank,
        genus=None if above_genus else _clean(row.get("genus")),
        family=None if rank == "order" else _clean(row.get(f"{authority}_family")),
        order=order.capitalize() if order else None,  # BirdLife writes orders in capitals
        authority=authority,
        version=str(version),
    )


@dataclass
class _Index:
    """What the cache holds: the canonical taxon of each scientific name, and name keys to scientific names."""

    taxa: dict[str, Taxon]  # scientific name -> taxon from the first authority that lists it
    names: list[dict[str, str]]  # per authority (AUTHORITIES order): name key -> scientific name
    display: dict[str, tuple[str, str]]  # name key -> (name as written, scientific name), for suggestions


def _build_index() -> _Index:
    from birdnames.utils import load_taxonomy

    taxa: dict[str, Taxon] = {}
    names: list[dict[str, str]] = []
    display: dict[str, tuple[str, str]] = {}
    for authority, version in AUTHORITIES:
        table = load_taxonomy(authority, version)
        lookup: dict[str, str] = {}
        code_columns = [c for c in (f"{authority}_ebird_code", f"{authority}_alpha", f"{authority}_alpha6")
                        if c in table.columns]
        for row in table.to_dict("records"):
            taxon = _taxon_of(row, authority, version)
            if taxon is None:
                continue
            taxa.setdefault(taxon.scientific_name, taxon)
            written = [taxon.scientific_name] + ([taxon.common_name] if taxon.common_name else [])
            for name in written:
                key = name_key(name)
                lookup.setdefault(key, taxon.scientific_name)
                display.setdefault(key, (name, taxon.scientific_name))
            for column in code_columns:  # codes come last: a name always wins over a code
                code = _clean(row.get(column))
                if code:
                    lookup.setdefault(f"code:{code.lower()}", taxon.scientific_name)
        names.append(lookup)
    return _Index(taxa, names, display)


def _cache_path() -> Path:
    from importlib.metadata import version

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "identify" / f"taxonomy-birdnames-{version('birdnames')}-v{INDEX_FORMAT}.pickle"


_index_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _index() -> _Index:
    """The name index: from the cache, else built from birdnames' tables once and cached."""
    with _index_lock:
        cache = _cache_path()
        try:
            with open(cache, "rb") as handle:
                loaded = pickle.load(handle)
            if isinstance(loaded, _Index):
                return loaded
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            pass  # missing or damaged: rebuilt below
        index = _build_index()
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                pickle.dump(index, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache)
        except OSError as exc:  # a read-only home still resolves, only more slowly next time
            log.warning("cannot cache the taxonomy index at %s: %s", cache, exc)
        return index


def read_mapping(path: Path) -> dict[str, str]:
    """The operator's overrides: CSV with columns `label,scientific_name` (a header row); a scientific name of
    `-` says the label names no taxon. Label keys are compared as labels are (name_key)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip() for c in reader.fieldnames or []}
            if not {"label", "scientific_name"} <= columns:
                raise IdentifyError("bad_mapping", f"{path} needs the columns label,scientific_name")
            mapping = {}
            for line, row in enumerate(reader, start=2):
                label, scientific = (row.get("label") or "").strip(), (row.get("scientific_name") or "").strip()
                if not label or not scientific:
                    raise IdentifyError("bad_mapping", f"{path} line {line}: label and scientific_name are needed")
                mapping[name_key(label)] = scientific
            return mapping
    except FileNotFoundError:
        raise IdentifyError("mapping_not_found", f"no mapping file at {path}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise IdentifyError("bad_mapping", f"{path} is not a UTF-8 CSV file ({exc})") from None


class Taxonomy:
    """Resolves labels to taxa (cached per label) and suggests names as a curator types."""

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        self.mapping = mapping or {}
        self._resolved: dict[str, Taxon | None] = {}

    @classmethod
    def with_mapping_file(cls, path: Path | None) -> "Taxonomy":
        return cls(read_mapping(path) if path is not None else None)

    def _scientific_name(self, label: str, key: str) -> str | None:
        index = _index()
        candidates = [key] + ([f"code:{key}"] if looks_like_code(label) else [])
        for lookup in index.names:
            for candidate in candidates:
                if candidate in lookup:
                    return lookup[candidate]
        return None

    def resolve(self, label: str) -> Taxon | None:
        """The taxon a label names, or None when no authority (and no mapping) knows it."""
        if label in self._resolved:
            return self._resolved[label]
        key = name_key(label)
        taxon: Taxon | None = None
        if key in self.mapping:
            scientific = self.mapping[key]
            if scientific != NOT_A_TAXON:
                taxon = _index().taxa.get(scientific) or self._mapped_outside(scientific)
        elif key:
            found = self._scientific_name(label, key)
            taxon = _index().taxa.get(found) if found else None
        self._resolved[label] = taxon
        return taxon

    @staticmethod
    def _mapped_outside(scientific_name: str) -> Taxon:
        """A mapping to a name no authority lists (a new split, a local form): the operator's word for it."""
        parts = scientific_name.split()
        rank = {1: "genus", 2: "species", 3: "subspecies"}.get(len(parts), "species")
        return Taxon(scientific_name, None, rank, parts[0] if parts else None, None, None, "mapping", "")

    def resolve_all(self, labels: Iterable[str]) -> dict[str, Taxon | None]:
        return {label: self.resolve(label) for label in labels}

    def group_name(self, rank: str, name: str) -> str | None:
        """What people call the birds of a genus or family, from its species' common names: the last word most
        of them share ("sparrow" for Passer), or None when they share none (a genus has no common name in the
        authorities' lists)."""
        return _group_names().get((rank, name))

    def suggest(self, text: str, limit: int = SUGGESTIONS, context: Mapping[str, float] | None = None) -> list[Suggestion]:
        """Names for what was typed (common or scientific, any authority): the name itself, names it ends ("robin":
        European Robin, a robin), names that start with it (Robin Accentor), names with a word that starts with
        it, names that contain it, and for a typo the names of the closest words (rapidfuzz: "sparow" finds the
        sparrows). With `context` (scientific name -> weight: what the model scored for this sighting, what is
        recorded at its place and season, what the deployment knows), the names of the taxa it weighs come
        first, most weighed first; then by how they match, species before higher ranks, shorter names, by name."""
        key = name_key(text)
        if not key:
            return []
        keys = _sorted_keys()
        tiers: dict[str, int] = {key: 0} if key in _index().display else {}
        start = bisect_left(keys, key)
        while start < len(keys) and keys[start].startswith(key) and len(tiers) < MATCHES:
            tiers.setdefault(keys[start], 2)
            start += 1
        if len(key) >= 3:
            for k in keys:
                if key in k and k != key:  # its last word begins with what was typed: it is one ("a hoopoe")
                    head = " " in k and k.rsplit(" ", 1)[1].startswith(key)
                    tiers[k] = 1 if head else min(tiers.get(k, 9), 3 if f" {key}" in f" {k}" else 4)
        if not tiers and len(key) >= 4:  # a typo: the closest words of the names, then their names
            from rapidfuzz import fuzz, process

            for k, _, _ in process.extract(key, keys, scorer=fuzz.ratio, limit=limit, score_cutoff=FUZZY_CUTOFF):
                tiers[k] = 4  # the whole name misspelt ("hodded crow")
            words = _words()
            for word, _, _ in process.extract(key.split()[-1], list(words), scorer=fuzz.ratio, limit=3,
                                              score_cutoff=FUZZY_CUTOFF):  # one word misspelt ("sparow")
                for k in words[word]:
                    tiers.setdefault(k, 5 if k.endswith(f" {word}") else 6)
        return self._ranked(tiers, limit, context or {})

    @staticmethod
    def _ranked(tiers: dict[str, int], limit: int, context: Mapping[str, float]) -> list[Suggestion]:
        index = _index()
        rank_order = {rank: i for i, rank in enumerate(RANKS)}
        best: dict[tuple[str, str], tuple[tuple[float, int, int, int, str], Suggestion]] = {}
        for k, tier in tiers.items():
            written, scientific = index.display[k]
            taxon = index.taxa.get(scientific)
            if taxon is None:
                continue
            order = (-context.get(scientific, 0.0), tier, rank_order.get(taxon.rank, 9), len(written), written)
            if (written, scientific) not in best or order < best[(written, scientific)][0]:
                best[(written, scientific)] = (order, Suggestion(written, taxon))
        return [suggestion for _, suggestion in sorted(best.values(), key=lambda pair: pair[0])][:limit]


@functools.lru_cache(maxsize=1)
def _words() -> dict[str, list[str]]:
    """Every word of the names' keys, and the keys it is in."""
    words: dict[str, list[str]] = {}
    for k in _sorted_keys():
        for word in set(k.split()):
            words.setdefault(word, []).append(k)
    return words


def _head_word(common_name: str) -> str:
    """The word a common name is a kind of: "Pigeon" of eBird's "Common Wood-Pigeon" (a capital after the
    hyphen), but "bee-eater" of "European Bee-eater" (an eater is no bird)."""
    last = common_name.split()[-1]
    head, _, tail = last.rpartition("-")
    return (tail if head and tail[:1].isupper() else last).lower()


@functools.lru_cache(maxsize=1)
def _group_names() -> dict[tuple[str, str], str]:
    from collections import Counter

    words: dict[tuple[str, str], Counter[str]] = {}
    for taxon in _index().taxa.values():
        if taxon.rank != "species" or not taxon.common_name:
            continue
        last = _head_word(taxon.common_name)
        for rank, group in (("genus", taxon.genus), ("family", taxon.family), ("order", taxon.order)):
            if group:
                words.setdefault((rank, group), Counter())[last] += 1
    names: dict[tuple[str, str], str] = {}
    for key, counts in words.items():
        (word, count), *rest = counts.most_common(2)
        runner_up = rest[0][1] if rest else 0
        # most of them, or by far the most common name (385 hummingbirds: 85 "hummingbird", then 35 "hermit");
        # eagles and hawks (76 to 58) or ducks and geese are no one name
        if count * 2 >= sum(counts.values()) or (count * 5 >= sum(counts.values()) and count >= 2 * runner_up):
            names[key] = word
    return names


def group_name(rank: str, name: str) -> str | None:
    """Taxonomy.group_name without a Taxonomy: the names come from the authorities' lists alone."""
    return _group_names().get((rank, name))


@functools.lru_cache(maxsize=1)
def _sorted_keys() -> list[str]:
    return sorted(_index().display)
