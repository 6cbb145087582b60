"""The one exception type users see: a stable code, a one-line message and the HTTP status it maps to."""

from __future__ import annotations

from typing import Any


class IdentifyError(Exception):
    """An error the user can act on. `code` is stable (clients branch on it); `message` is for people."""

    def __init__(self, code: str, message: str, status: int = 400, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after  # seconds, for a fault worth retrying (503): sent as Retry-After
        self.details: dict[str, Any] = {}  # more for the client, e.g. the current state on a 409

    @classmethod
    def all_of(cls, problems: list["IdentifyError"]) -> "IdentifyError":
        """One error for several problems of one request, each kept under `problems` (a form shows them all at
        once); its code and status are the first problem's."""
        if len(problems) == 1:
            return problems[0]
        error = cls(problems[0].code, "; ".join(p.message for p in problems), problems[0].status)
        error.problems = problems
        return error

    def led_by(self, which: str) -> "IdentifyError":
        """The same error, its message led by what it is about ("“a.jpg” (photo 2 of 3): ..."); itself when
        `which` is empty."""
        return IdentifyError(self.code, f"{which}: {self.message}", self.status) if which else self

    @property
    def problems(self) -> list["IdentifyError"]:
        return self.details.get("problems", [self])

    @problems.setter
    def problems(self, problems: list["IdentifyError"]) -> None:
        self.details["problems"] = problems

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if len(self.problems) > 1:
            body["problems"] = [{"code": p.code, "message": p.message} for p in self.problems]
        return {"error": body}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
