"""What the documentation says that the code decides: the error-code table, the configuration and the command-line
references are generated from the code, every code raised anywhere is registered (with the status it is raised
with), every setting is documented, and the README stays a door, not a manual."""

from __future__ import annotations

import ast
from pathlib import Path

from identify import docs
from identify.error_codes import CODES
from identify.web import HTTP_CODES

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((ROOT / "identify").rglob("*.py")), *sorted((ROOT / "index_builder").rglob("*.py"))]


def _constant(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def raised_codes() -> dict[str, set[int | None]]:
    """code -> the HTTP statuses it is raised with (None where the status is not a literal)."""
    found: dict[str, set[int | None]] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if called == "IdentifyError" and node.args and isinstance(_constant(node.args[0]), str):
                status = node.args[2] if len(node.args) > 2 else next(
                    (k.value for k in node.keywords if k.arg == "status"), ast.Constant(400))
                found.setdefault(str(_constant(node.args[0])), set()).add(_constant(status))  # type: ignore[arg-type]
            elif called == "parse_count" and len(node.args) > 4:  # its code argument: bad_k
                found.setdefault(str(_constant(node.args[4])), set()).add(400)
    for status, code in HTTP_CODES.items():
        found.setdefault(code, set()).add(status)
    return found


def test_every_raised_code_is_registered_and_every_registered_one_is_raised():
    raised = raised_codes()
    assert sorted(set(raised) - set(CODES)) == [], "raised but not in identify/error_codes.py"
    assert sorted(set(CODES) - set(raised)) == [], "registered but raised nowhere (a stale entry)"


def test_each_code_is_raised_with_its_registered_status():
    wrong = {code: statuses for code, statuses in raised_codes().items()
             if CODES[code].status is not None and statuses - {CODES[code].status, None}}
    assert wrong == {}


def test_the_generated_references_are_current_and_complete():
    assert docs.main(["--check"]) == 0, "run: python -m identify.docs"
    errors = (ROOT / "docs" / "reference" / "errors.md").read_text(encoding="utf-8")
    assert all(f"| `{code}` |" in errors for code in CODES)
    cli = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    for command in ("build-index", "predict", "evaluate", "serve", "curators disable", "db upgrade", "export"):
        assert f"### `identify {command}`" in cli, command
    assert "| `--check` |" in cli  # an option, as --help shows it


def test_every_setting_is_documented():
    import dataclasses

    from identify.config import SETTING_DOCS, FusionConfig, ServiceConfig

    fields = {f.name for cls in (FusionConfig, ServiceConfig) for f in dataclasses.fields(cls)}
    assert fields == set(SETTING_DOCS)
    configuration = (ROOT / "docs" / "reference" / "configuration.md").read_text(encoding="utf-8")
    assert all(f"`IDENTIFY_{name.upper()}`" in configuration for name in fields)


def test_the_readme_is_a_door_of_at_most_200_lines_and_every_link_resolves():
    import re

    readme = ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 200
    for page in (readme, *sorted((ROOT / "docs").rglob("*.md"))):
        for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), (page.name, target)


def test_no_install_line_can_fetch_another_projects_package():
    """PyPI's `identify` is an unrelated project: every install line installs this checkout (or names the
    distribution `identify-birds`). Before: the deployment guide said `pip install 'identify[deploy,postgres]'`."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for line in re.findall(r"pip install[^\n`]*", page.read_text(encoding="utf-8")):
            assert re.search(r"-e\s+'?\.|identify-birds|\.\[", line) or "identify" not in line, (page.name, line)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'name = "identify-birds"' in pyproject and '"identify[' not in pyproject


def test_the_tutorial_points_to_the_one_deployment_guide_rather_than_copying_it():
    """Before: the tutorial repeated 103 of the deployment guide's lines and 69 of the API reference's, which
    drift apart."""
    tutorial = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8").splitlines()
    for guide_path in (ROOT / "docs" / "how-to" / "deploy.md", ROOT / "docs" / "reference" / "api.md"):
        guide = {line for line in guide_path.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 40}
        shared = [line for line in tutorial if line in guide]
        assert len(shared) <= 5, (guide_path.name, shared)
    assert "how-to/deploy.md" in "\n".join(tutorial) and "reference/api.md" in "\n".join(tutorial)
