"""The parts of the documentation that are generated from the code, so they cannot drift from it: today the
error-code table (identify.error_codes). `python -m identify.docs` rewrites each generated block of the README
between its markers; `python -m identify.docs --check` exits 1 when one is out of date (a test runs it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

from identify.error_codes import CODES

README = Path(__file__).resolve().parent.parent / "README.md"


def error_table() -> str:
    """Every registered code: its HTTP status (— for the command line) and when it happens."""
    rows = ["| code | HTTP | when |", "|---|---|---|"]
    rows += [f"| `{code}` | {entry.status or '—'} | {entry.when} |" for code, entry in CODES.items()]
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[], str]] = {"errors": error_table}


def _marked(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- /generated:{name} -->)", re.S)


def render(text: str) -> str:
    """`text` with every generated block made anew."""
    for name, make in BLOCKS.items():
        match = _marked(name).search(text)
        if match is None:
            raise ValueError(f"no generated:{name} block")
        text = text[:match.start(2)] + make() + "\n" + text[match.end(2):]
    return text


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    fresh = render(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{README} has generated blocks out of date: run python -m identify.docs", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
