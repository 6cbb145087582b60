"""The one exception type users see: a stable code, a one-line message and the HTTP status it maps to."""

from __future__ import annotations

from typing import Any


class IdentifyError(Exception):
    """An error the user can act on. `code` is stable (clients branch on it); `message` is for people."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details: dict[str, Any] = {}  # more for the client, e.g. the current state on a 409

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
