"""Curators: the people who may review. Passwords are stored as Werkzeug scrypt hashes; API tokens are random
(256 bits) and stored as their SHA-256, so a leaked database holds neither passwords nor usable tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from identify.errors import IdentifyError
from identify.schema import Curator
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


class Curators:
    def __init__(self, store: Store) -> None:
        self.sessions = store.sessions

    def create(self, name: str, password: str, replace: bool = False) -> str:
        """Create (or with `replace`, reset) a curator; returns a new API token, shown once."""
        name = name.strip()
        if not name or len(name) > 200:
            raise IdentifyError("bad_curator", "the name must have 1 to 200 characters")
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
        if not check_password_hash(curator.password_hash, password):
            return None
        return CuratorInfo(curator.id, curator.name, curator.session_epoch)

    def check_token(self, token: str) -> CuratorInfo | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = _token_hash(token)
        with self.sessions() as session:
            curator = session.scalar(select(Curator).where(Curator.token_hash == digest))
        if curator is None or not hmac.compare_digest(curator.token_hash or "", digest):
            return None
        return CuratorInfo(curator.id, curator.name)

    def get(self, curator_id: int) -> CuratorInfo | None:
        with self.sessions() as session:
            curator = session.get(Curator, curator_id)
        return CuratorInfo(curator.id, curator.name, curator.session_epoch) if curator else None

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
