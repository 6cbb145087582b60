"""Settings: defaults, then `$IDENTIFY_DATA_DIR/identify.toml`, then `IDENTIFY_*` environment variables.

One place owns every tunable so the CLI, the index builder and the web app agree on them."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from identify.calibration import Calibration, FittedOn
from identify.errors import IdentifyError
from identify.images import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class FusionConfig:
    """Fusion (Jia et al. 2021) and decision thresholds; see identify.fusion for how each is used."""

    weight_knn: float = 0.5  # lambda: share of the kNN vote in the fused score
    k: int = 20  # neighbours that vote
    temperature: float = 0.07  # T on cosine similarity (DINO's value)
    confident_score: float = 0.5  # calibrated top-1 at or above this can be confident; also the roll-up's bar
    min_margin: float = 0.15  # top-1 minus top-2 below this needs review
    no_match_similarity: float = 0.5  # nearest reference below this cosine similarity is "far"
    no_match_classifier: float = 0.3  # classifier top-1 below this is "unsure"
    min_support: int = 2  # distinct references of the answer among the voters, at least, for confident
    same_photo_similarity: float = 0.97  # a reference this close is the query's own photo, not more evidence
    unreferenced_vote: float = 0.25  # the classifier's favourite at this, with no references: not confident
    contradicting_vote: float = 0.5  # the classifier's favourite at this, another species: not confident
    vouch_vote: float = 0.0  # a class of the classifier given less than this by it: not confident (0: off)
    spread_quantile: float = 0.0  # nearer the species' own references than this share of its photos (0: off)
    target_error: float = 0.05  # evaluate chooses confident_score so that confident answers err at most this often
    risk_confidence: float = 0.9  # ... with this confidence

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.weight_knn <= 1.0, "weight_knn must lie in [0, 1]"),
            (self.k >= 1, "k must be at least 1"),
            (self.temperature > 0, "temperature must be positive"),
            # Above 1 (evaluate writes 1.01): no threshold kept the stated risk, so nothing is confident.
            (0.0 <= self.confident_score <= 1.01, "confident_score must lie in [0, 1.01]"),
            (0.0 <= self.min_margin <= 1.0, "min_margin must lie in [0, 1]"),
            (-1.0 <= self.no_match_similarity <= 1.0, "no_match_similarity must lie in [-1, 1]"),
            (0.0 <= self.no_match_classifier <= 1.0, "no_match_classifier must lie in [0, 1]"),
            (self.min_support >= 1, "min_support must be at least 1"),
            (-1.0 <= self.same_photo_similarity <= 1.0, "same_photo_similarity must lie in [-1, 1]"),
            (0.0 <= self.unreferenced_vote <= 1.0, "unreferenced_vote must lie in [0, 1]"),
            (0.0 <= self.contradicting_vote <= 1.01, "contradicting_vote must lie in [0, 1.01]"),
            (0.0 <= self.vouch_vote <= 1.0, "vouch_vote must lie in [0, 1]"),
            (0.0 <= self.spread_quantile < 1.0, "spread_quantile must lie in [0, 1)"),
            (0.0 < self.target_error < 1.0, "target_error must lie in (0, 1)"),
            (0.0 < self.risk_confidence < 1.0, "risk_confidence must lie in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise IdentifyError("bad_config", message)

    def replace(self, **changes: Any) -> "FusionConfig":
        """A copy with the given fields changed; None values are ignored (unset CLI options)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# What a re-certification decides of the fusion settings (identify.certify); the rest stay as evaluate chose them.
CERTIFIED_SETTINGS = ("confident_score", "vouch_vote", "contradicting_vote", "spread_quantile")


# new_species: the species has no reference yet; first_record: the answer was never recorded at the place in
# its season (by the occurrences and confirmed sightings); all: every review that teaches.
SECOND_OPINIONS = ("new_species", "first_record", "all")


# A query parameter that holds a secret (redis-py takes `?password=`; others name theirs so): never shown.
SECRET_PARAMETER = re.compile(r"pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|credential|auth", re.I)
HIDDEN = "***"


def redacted(setting: str) -> str:
    """A setting as it may be shown or logged (/api/v1/status, start-up lines, error messages): a URL's
    password, in its user-info or in a query parameter named like one, replaced by ***. Any URL form parses,
    several hosts in one (`redis+sentinel://:pw@h1:26379,h2:26379/m`) too; what is no URL comes back as it is."""
    try:
        parts = urlsplit(setting)
    except ValueError:  # no URL a library would take either: shown as nothing
        return HIDDEN
    if not parts.scheme or "://" not in setting:
        return setting
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{HIDDEN}@{hosts}" if has_password else f"{userinfo}@{hosts}"
    query = "&".join(f"{quote(key, safe='')}={HIDDEN if SECRET_PARAMETER.search(key) else quote(value, safe='')}"
                     for key, value in parse_qsl(parts.query, keep_blank_values=True))
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return shown if netloc else shown.replace(":", "://", 1)  # memory:// stays memory:// (urlunsplit drops //)


@dataclass(frozen=True)
class ServiceConfig:
    """What the web app serves and its limits."""

    model: str | None = None  # birder pretrained name or .pt path
    index: str = "default"  # name of a published index
    max_upload_mb: float = 20.0  # bigger uploads get 413
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb guard
    refresh_seconds: float = 2.0  # how often a process looks in SQL for rows other processes added
    max_batch: int = 32  # concurrent uploads identified in one forward pass, at most
    # Similar sightings less similar than this (cosine) are not offered: a list of strangers helps nobody.
    similar_floor: float = 0.5
    # Similar sightings past a published snapshot are searched exactly beside it; at this many, a server publishes
    # a new snapshot (0: only `identify index-sightings` does). Past the budget (MB; 0: none) it is IVF-PQ.
    similar_snapshot_rows: int = 20_000
    similar_memory_budget_mb: float = 0.0
    secret_key: str | None = None  # signs session cookies; generated into <data dir>/secret_key when unset
    secure_cookies: bool = False  # set when served over HTTPS
    # Rate limits (Flask-Limiter notation; "off" for none). Failed logins count per account and per address.
    login_limit: str = "10 per minute"
    identify_limit: str = "300 per minute"  # uploads per address
    rate_limit_storage: str = "memory://"  # one process; redis://host:6379 when several workers serve
    # Reverse proxies in front that add X-Forwarded-For (0: none; the README's nginx: 1). Only these are believed:
    # limits then key on the real client instead of the proxy's address, which every client would share.
    proxy_hops: int = 0
    # The address the public reaches the web app at (https://birds.example.org/), for links in exports; never
    # taken from a request's Host header, which the client writes. Unset: exports link relative paths.
    public_url: str | None = None
    token_days: int = 90  # an API token is refused this many days after it was issued (0: never)
    audit_share: float = 0.05  # of confident answers, drawn at random for a blind audit by curators
    # Which reviews need a second curator before the photo teaches (comma-separated SECOND_OPINIONS, or off).
    second_opinion: str = "new_species,first_record"
    group_similarity: float = 0.9  # open sightings this alike, with the same answer, can be reviewed as a group
    # The bird in the frame (identify.detector): a birder detection checkpoint, its network and backbone when
    # the file name does not say them (birder names files NETWORK_BACKBONE[_EPOCH].pt), the classes that are
    # birds, and the score a box needs.
    detector: str | None = None
    detector_network: str | None = None
    detector_backbone: str | None = None
    detector_classes: str = "bird"
    detector_threshold: float = 0.5
    # Without a crop or a detector: also look at centre crops and pool them with the whole photo (measured in
    # BENCHMARKS.md: framing; off unless it helps the model served).
    auto_crop: bool = False
    # When the references move past the newest certification, certify them again in the background (a
    # calibrated deployment only). Off: only `identify certify` does, and the species a change touched stay held
    # back until someone runs it.
    auto_certify: bool = True

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.max_pixels <= 0 or self.max_batch < 1 or self.refresh_seconds < 0:
            raise IdentifyError("bad_config", "max_upload_mb, max_pixels and max_batch must be positive, "
                                "refresh_seconds >= 0")
        if self.similar_snapshot_rows < 0 or self.similar_memory_budget_mb < 0:
            raise IdentifyError("bad_config", "similar_snapshot_rows and similar_memory_budget_mb must be >= 0")
        if not 0 <= self.audit_share <= 1:
            raise IdentifyError("bad_config", "audit_share is a share, from 0 to 1")
        if not self.second_opinion_rules <= set(SECOND_OPINIONS) and self.second_opinion.strip() != "off":
            raise IdentifyError("bad_config", f"second_opinion is off, or any of {', '.join(SECOND_OPINIONS)} "
                                "(comma-separated)")
        if not 0 < self.detector_threshold < 1 or not self.detector_labels:
            raise IdentifyError("bad_config", "detector_threshold lies in (0, 1) and detector_classes names at "
                                "least one class")
        if not -1 <= self.group_similarity <= 1:
            raise IdentifyError("bad_config", "group_similarity is a cosine similarity, from -1 to 1")
        if not -1 <= self.similar_floor <= 1:
            raise IdentifyError("bad_config", "similar_floor is a cosine similarity, from -1 to 1")
        if not 0 <= self.proxy_hops <= 5 or self.token_days < 0:
            raise IdentifyError("bad_config", "proxy_hops lies in [0, 5] and token_days is >= 0")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise IdentifyError("bad_config", "public_url is an http:// or https:// address")

    @property
    def second_opinion_rules(self) -> frozenset[str]:
        """new_species, first_record, all: the reviews a second curator must agree with (off: none)."""
        rules = {rule.strip() for rule in self.second_opinion.split(",") if rule.strip()}
        return frozenset() if rules == {"off"} else frozenset(rules)

    @property
    def detector_labels(self) -> frozenset[str]:
        """The detector's class labels that are birds, compared without case."""
        return frozenset(label.strip().lower() for label in self.detector_classes.split(",") if label.strip())

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def similar_memory_budget(self) -> int | None:
        """Bytes, or None for no budget."""
        return int(self.similar_memory_budget_mb * 10**6) or None


# What each field of FusionConfig and ServiceConfig means, for the generated configuration reference
# (docs/reference/configuration.md; a test fails when a field has no entry here).
SETTING_DOCS: dict[str, str] = {
    "weight_knn": "λ: the kNN vote's share of the fused score",
    "k": "neighbours that vote",
    "temperature": "T on cosine similarity",
    "confident_score": "the confident threshold on the (calibrated) top score; `evaluate --write-config` chooses it",
    "min_margin": "top-1 minus top-2 below this needs review",
    "no_match_similarity": "nearest reference below this cosine similarity is far (with an unsure classifier: "
                           "`no_match`); `evaluate --write-config` chooses it",
    "no_match_classifier": "classifier top-1 below this is unsure; `evaluate --write-config` chooses it",
    "min_support": "distinct references of the answer among the k nearest, a near-copy of the photo not counted, "
                   "that a confident answer needs (thin evidence: `needs_review`, reason `thin_support`)",
    "same_photo_similarity": "a reference at or above this cosine similarity is the photo itself: the answer says "
                             "`same_photo_as` and it does not count as support",
    "unreferenced_vote": "the classifier's favourite at or above this share, with fewer than `min_support` "
                         "references, keeps the answer from confident (reason `named_species_unreferenced`): the "
                         "neighbours could not have spoken for it",
    "contradicting_vote": "the classifier's favourite at or above this share, another species than the answer, keeps it "
                          "from confident (reason `classifier_names_another`; 1.01: off)",
    "vouch_vote": "an answer that is one of the classifier's classes, given less than this share by it, is not "
                  "confident (reason `classifier_does_not_vouch`; 0: off); `evaluate --write-config` chooses it by "
                  "leave-one-species-out over the references",
    "spread_quantile": "an answer whose nearest reference is less similar than this share of its species' own "
                       "photos are to theirs is not confident (reason `outside_species_spread`; 0: off); "
                       "`evaluate --write-config` chooses it by leave-one-species-out over the references",
    "target_error": "the error `evaluate` allows among confident answers",
    "risk_confidence": "the confidence of that bound",
    "model": "the model the web app serves (birder name or `.pt`)",
    "index": "the published index the web app searches",
    "max_upload_mb": "bigger uploads get 413",
    "max_pixels": "decompression-bomb guard (413)",
    "refresh_seconds": "how often a worker catches up with SQL and follows newly published index versions",
    "max_batch": "concurrent uploads identified in one forward pass, at most",
    "similar_floor": "similar sightings below this cosine similarity are not offered",
    "similar_snapshot_rows": "sightings searched beside the similar-sightings snapshot before a worker publishes a "
                             "new one (0: only `identify index-sightings` does)",
    "similar_memory_budget_mb": "past this (MB), the similar-sightings snapshot is IVF-PQ (0: no budget)",
    "secret_key": "signs session cookies (generated into the data dir when unset)",
    "secure_cookies": "`Secure` cookies and HSTS (behind HTTPS)",
    "login_limit": "failed logins allowed per address, and per account from an address that has failed itself "
                   "(`off`: no limit)",
    "identify_limit": "forward passes per address: uploads (API and page) and similar-photo searches together "
                      "(`off`: no limit)",
    "rate_limit_storage": "where the rate-limit counters live: one process, or `redis://host:6379` for several "
                          "workers (unreachable: each process counts alone, and /api/v1/status says so)",
    "proxy_hops": "reverse proxies in front that set `X-Forwarded-For` (0-5); only then is it believed",
    "public_url": "the address the public reaches the app at, for `associatedMedia` in exports",
    "token_days": "days an API token is valid after it is issued (0: no end)",
    "group_similarity": "open sightings at least this similar (cosine) with the same answer form a group the "
                        "review queue confirms or corrects in one action",
    "second_opinion": "which reviews become references only once a second curator agrees: `new_species` (the "
                      "species has no reference yet), `first_record` (never recorded at the place in its season), "
                      "`all`, comma-separated, or `off`",
    "detector": "a birder detection checkpoint (`.pt`): the service finds the birds in a photo sent without a "
                "crop and identifies the best box (unset: no detector)",
    "detector_network": "the detector's birder network (`ssdlite`, `faster_rcnn`...) when its file name does not "
                        "say it (birder names files NETWORK_BACKBONE[_EPOCH].pt)",
    "detector_backbone": "the detector's backbone network when its file name does not say it",
    "detector_classes": "the detector's class labels that count as a bird (comma-separated)",
    "detector_threshold": "the score a detected box needs to count",
    "auto_crop": "without a crop or a detector, pool centre crops with the whole photo (BENCHMARKS.md: framing)",
    "auto_certify": "when the references change, re-certify the thresholds in the background from the deployment's "
                    "labelled data (`identify certify`; a calibrated deployment only); the species the change "
                    "touched are held back from confident until it finishes",
    "audit_share": "the share of confident answers drawn at random into the review queue as blind audits "
                   "(identify.audit: the deployment's own error among confident answers, with its bound)",
}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    fusion: FusionConfig = field(default_factory=FusionConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    taxonomy_mapping: Path | None = None  # CSV label,scientific_name: the operator's overrides of resolution
    calibration: Calibration = field(default_factory=Calibration)  # of the fused scores; fitted by evaluate

    @property
    def indexes_dir(self) -> Path:
        return self.data_dir / "indexes"


def parse_boolean(raw: Any) -> bool:
    """true/false, 1/0, yes/no, on/off (any case); an empty string is false. Raises ValueError otherwise."""
    if isinstance(raw, bool):
        return raw
    if str(raw).strip().lower() in ("1", "true", "yes", "on"):
        return True
    if str(raw).strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


def _coerce(name: str, raw: Any, kind: type) -> Any:
    try:
        return parse_boolean(raw) if kind is bool else kind(raw)
    except (TypeError, ValueError):
        raise IdentifyError("bad_config", f"{name}={raw!r} is not a valid {kind.__name__}") from None


KINDS = {"int": int, "float": float, "bool": bool, "str": str, "str | None": str}


def _section(cls: type, table_name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """`cls` from its [table] in identify.toml, each field overridden by IDENTIFY_<FIELD> in the environment."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = KINDS[f.type if isinstance(f.type, str) else f.type.__name__]
        if f.name in table:
            values[f.name] = _coerce(f"{table_name}.{f.name}", table[f.name], kind)
        env_name = f"IDENTIFY_{f.name.upper()}"
        if env.get(env_name, "") != "":
            values[f.name] = _coerce(env_name, env[env_name], kind)
    return cls(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise IdentifyError("bad_config", f"{path} is not valid TOML: {exc}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings for this process, read fresh from the environment each call."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("IDENTIFY_DATA_DIR", "var")).expanduser().resolve()
    file_config = _read_toml(data_dir / "identify.toml")
    default_url = f"sqlite:///{data_dir / 'identify.db'}"
    database_url = env.get("IDENTIFY_DATABASE_URL") or file_config.get("database_url") or default_url
    mapping = env.get("IDENTIFY_TAXONOMY_MAPPING") or file_config.get("taxonomy_mapping")
    default_mapping = data_dir / "taxonomy.csv"
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        fusion=_section(FusionConfig, "fusion", file_config.get("fusion", {}), env),
        service=_section(ServiceConfig, "service", file_config.get("service", {}), env),
        taxonomy_mapping=Path(mapping).expanduser() if mapping else (default_mapping if default_mapping.is_file() else None),
        calibration=_calibration(file_config.get("calibration", {}), env),
    )


def _calibration(table: Mapping[str, Any], env: Mapping[str, str]) -> Calibration:
    """[calibration] method, temperature, points; IDENTIFY_CALIBRATION=none switches it off."""
    method = env.get("IDENTIFY_CALIBRATION") or table.get("method", "none")
    temperature = _coerce("calibration.temperature", table.get("temperature", 1.0), float)
    try:
        points = tuple((float(x), float(y)) for x, y in table.get("points", []))
    except (TypeError, ValueError):
        raise IdentifyError("bad_config", "calibration.points must be [[score, probability], ...]") from None
    try:
        coefficients = tuple(float(c) for c in table.get("coefficients", []))
        intercept = float(table.get("intercept", 0.0))
    except (TypeError, ValueError):
        raise IdentifyError("bad_config", "calibration.coefficients must be numbers") from None
    try:
        thresholds = tuple(sorted((str(group), float(value)) for group, value in table.get("thresholds", {}).items()))
    except (AttributeError, TypeError, ValueError):
        raise IdentifyError("bad_config", "calibration.thresholds must be a table of group = threshold") from None
    try:
        target = table.get("target_error")
        fitted = table.get("fitted_on")
        fitted_on = FittedOn(int(fitted["references"]), int(fitted["species"]), float(fitted["median_per_species"]),
                             bool(fitted["prior"])) if fitted is not None else None
    except (KeyError, TypeError, ValueError):
        raise IdentifyError("bad_config", "calibration.fitted_on must have references, species, "
                            "median_per_species and prior") from None
    if env.get("IDENTIFY_CALIBRATION") and method != table.get("method", "none"):
        # switched to another calibration than the one evaluate fitted: its thresholds and risk do not apply
        thresholds, target, fitted_on = (), None, None
    fitted_at = table.get("fitted_at")
    return Calibration(str(method), temperature, points if method == "isotonic" else (),
                       coefficients if method == "confidence" else (), intercept, thresholds,
                       float(target) if target is not None else None, fitted_on,
                       str(fitted_at) if fitted_at is not None and target is not None else None)


def write_fusion_settings(data_dir: Path, values: Mapping[str, Any], calibration: Calibration | None = None) -> Path:
    """Store fusion settings in `<data dir>/identify.toml` ([fusion], and [calibration] when given), keeping
    everything else in the file."""
    import tomli_w

    path = data_dir / "identify.toml"
    content = _read_toml(path)
    content.setdefault("fusion", {}).update(values)
    _section(FusionConfig, "fusion", content["fusion"], {})  # refuse to write what would not load
    if calibration is not None:
        content["calibration"] = calibration.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(content), encoding="utf-8")
    os.replace(tmp, path)
    return path
