"""Curators: the people who may review. Passwords are stored as Werkzeug scrypt hashes; API tokens are random
(256 bits) and stored as their SHA-256, so a leaked database holds neither passwords nor usable tokens. A token
ends `token_days` after it was issued; a disabled curator can neither log in nor use a token, and every session
of theirs ends at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from identify.errors import IdentifyError
from identify.metadata import as_utc
from identify.rules import MAX_NAME
from identify.schema import Curator, utcnow
from identify.storage import Store

TOKEN_PREFIX = "idt_"
MIN_PASSWORD_LENGTH = 8
# Checked against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a password")


@dataclass(frozen=True)
class CuratorInfo:
    id: int
    name: str
    session_epoch: int = 0  # a login session is valid only while the curator's epoch is the one it began in


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CuratorAccount:
    """What `identify curators list` shows of a curator."""

    name: str
    disabled: bool
    token_expires_at: datetime | None
    created_at: datetime


class Curators:
    def __init__(self, store: Store, token_days: int = 90) -> None:
        self.sessions = store.sessions
        self.token_days = token_days  # 0: tokens never end

    def _token_end(self) -> datetime | None:
        return utcnow() + timedelta(days=self.token_days) if self.token_days else None

    def create(self, name: str, password: str, replace: bool = False) -> str:
        """Create (or with `replace`, reset) a curator; returns a new API token, shown once."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise IdentifyError("bad_curator", f"the name must have 1 to {MAX_NAME} characters")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise IdentifyError("weak_password", f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
        token = new_token()
        try:
            with self.sessions.begin() as session:
                curator = session.scalar(select(Curator).where(Curator.name == name))
                if curator is not None and not replace:
                    raise IdentifyError("curator_exists", f"curator {name!r} exists (use --reset to set a new password)", 409)
                if curator is None:
                    curator = Curator(name=name, password_hash="")
                    session.add(curator)
                curator.password_hash = generate_password_hash(password)
                curator.token_hash = _token_hash(token)
                curator.token_expires_at = self._token_end()
                curator.session_epoch = (curator.session_epoch or 0) + 1  # a reset ends every session
        except IntegrityError:  # created by someone else between our read and our write
            raise IdentifyError("curator_exists", f"curator {name!r} exists", 409) from None
        return token

    def check_password(self, name: str, password: str) -> CuratorInfo | None:
        with self.sessions() as session:
            curator = session.scalar(select(Curator).where(Curator.name == name.strip()))
        if curator is None:
            check_password_hash(_DUMMY_HASH, password)
            return None
        if not check_password_hash(curator.password_hash, password) or curator.disabled_at is not None:
            return None
        return CuratorInfo(curator.id, curator.name, curator.session_epoch)

    def check_token(self, token: str) -> CuratorInfo | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = _token_hash(token)
        with self.sessions() as session:
            curator = session.scalar(select(Curator).where(Curator.token_hash == digest))
        if curator is None or not hmac.compare_digest(curator.token_hash or "", digest) or \
                curator.disabled_at is not None:
            return None
        ends = as_utc(curator.token_expires_at)
        if ends is not None and ends <= utcnow():
            return None
        return CuratorInfo(curator.id, curator.name)

    def get(self, curator_id: int) -> CuratorInfo | None:
        """The curator, unless there is none or they are disabled."""
        with self.sessions() as session:
            curator = session.get(Curator, curator_id)
        if curator is None or curator.disabled_at is not None:
            return None
        return CuratorInfo(curator.id, curator.name, curator.session_epoch)

    def new_token(self, name: str) -> str:
        """A new API token for `name` (the old one stops working); returns it, shown once."""
        token = new_token()
        with self.sessions.begin() as session:
            curator = self._named(session, name)
            curator.token_hash = _token_hash(token)
            curator.token_expires_at = self._token_end()
        return token

    def set_disabled(self, name: str, disabled: bool) -> None:
        """Disable (no login, no token, every session ended) or enable a curator again; the reviews stay theirs.
        Disabling revokes the API token for good: enabling again does not revive it (a token that leaked is why
        a curator is often disabled), so an enabled curator asks for a new one."""
        with self.sessions.begin() as session:
            curator = self._named(session, name)
            curator.disabled_at = utcnow() if disabled else None
            if disabled:
                curator.token_hash, curator.token_expires_at = None, None
            curator.session_epoch = (curator.session_epoch or 0) + 1

    def enabled_count(self) -> int:
        """How many curators may review now: the second-opinion rule asks for a second one only where there is."""
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Curator).where(Curator.disabled_at.is_(None))) or 0

    def accounts(self) -> list[CuratorAccount]:
        with self.sessions() as session:
            return [CuratorAccount(c.name, c.disabled_at is not None, as_utc(c.token_expires_at), as_utc(c.created_at))
                    for c in session.scalars(select(Curator).order_by(Curator.name))]

    def id_of(self, name: str) -> int:
        """The SQL key of curator `name` (unknown_curator otherwise): what a change made from the command line
        records as its author."""
        with self.sessions() as session:
            return self._named(session, name).id

    @staticmethod
    def _named(session: Session, name: str) -> Curator:
        curator = session.scalar(select(Curator).where(Curator.name == name.strip()))
        if curator is None:
            raise IdentifyError("unknown_curator", f"no curator named {name!r}", 404)
        return curator

    def in_session(self, curator_id: int, epoch: int) -> CuratorInfo | None:
        """The curator of a login session begun in `epoch`; None once they logged out or were reset since."""
        curator = self.get(curator_id)
        return curator if curator is not None and curator.session_epoch == epoch else None

    def end_sessions(self, curator_id: int) -> None:
        """End every login session of this curator, in every browser and on every worker."""
        with self.sessions.begin() as session:
            curator = session.get(Curator, curator_id)
            if curator is not None:
                curator.session_epoch = (curator.session_epoch or 0) + 1
