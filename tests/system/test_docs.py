"""The README and docs/ stay true to the code and to each other: every relative link resolves (files and GitHub
anchors), the configuration page lists exactly the settings `Settings` reads with their real defaults, the API page
lists exactly the error codes, and the README stays a front door."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.errors import ErrorCode
from schemas.settings import Settings
from tests.support.settings_env import field_env_names, setting_env_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "deploy" / "README.md"]
COMMANDS = (
    "pip install -e . && synctrack dev",
    "pip install -e '.[test]' && python -m pytest",
)
SYNCTRACK_VAR = re.compile(r"\bSYNCTRACK_[A-Z0-9_]+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)
ONE_LITERAL = re.compile(r"^`([^`]+)`(?: \([^)]*\))?$")
NO_VALUE = ("(none)", "(any)")
PROSE_DEFAULTS = {"reconcile_every_seconds", "incident_auto_refresh"}
"""Fields whose documented default is a sentence: it depends on another setting (the Codat API key)."""


def prose(text: str) -> str:
    """The text links are read from: no fenced blocks, no code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> Iterator[str]:
    for target in LINK.findall(prose(path.read_text())):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
            yield target


def broken_link(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, does not resolve; None when it does."""
    file_part, _, anchor = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    if not destination.exists():
        return f"{file_part} does not exist"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"{file_part or page.name} has no heading #{anchor}"
    return None


def table_rows(text: str) -> Iterator[list[str]]:
    for line in FENCE.sub("", text).splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            yield [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def configuration_rows() -> Iterator[tuple[set[str], str]]:
    """(the variables named in a row's first cell, its default cell) for each setting row of the page."""
    for cells in table_rows((DOCS / "configuration.md").read_text()):
        names = set(SYNCTRACK_VAR.findall(cells[0]))
        if names:
            yield names, cells[1]


def test_github_slugs_are_computed_as_github_computes_them() -> None:
    assert github_slug("Freshness that follows Codat's schedule") == "freshness-that-follows-codats-schedule"
    assert github_slug("Scaling the live stream (SSE)") == "scaling-the-live-stream-sse"
    assert github_slug("JSON API (v1)") == "json-api-v1"
    assert github_slug('Redis: what makes "acknowledged = not lost" true') == (
        "redis-what-makes-acknowledged--not-lost-true"
    )
    assert github_slug("`GET /v1/stream` and `snake_case`") == "get-v1stream-and-snake_case"


def test_a_missing_file_or_heading_is_reported_as_broken(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section\n\n```\n## not a heading\n```\n")
    assert broken_link(page, "#a-section") is None
    assert broken_link(page, "#title") is None
    assert broken_link(page, "#not-a-heading") is not None
    assert broken_link(page, "other.md") is not None


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves_to_a_file_and_heading(page: Path) -> None:
    links = list(relative_links(page))
    broken = {target: why for target in links if (why := broken_link(page, target))}
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    unlinked = [path.name for path in DOCS.glob("*.md") if path.resolve() not in linked]
    assert not unlinked, f"the README's 'Where to go next' does not link {unlinked}"


def test_the_readme_is_a_front_door_with_the_two_commands_ci_runs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for command in COMMANDS:
        assert command in text
    assert COMMANDS[1] in (ROOT / ".ci" / "run").read_text()


def test_the_configuration_page_lists_exactly_the_settings_synctrack_reads() -> None:
    documented = [name for names, _ in configuration_rows() for name in names]
    duplicated = sorted({name for name in documented if documented.count(name) > 1})
    assert not duplicated, f"documented twice: {duplicated}"
    known = setting_env_names()
    assert set(documented) == known, (
        f"undocumented: {sorted(known - set(documented))}; not settings: {sorted(set(documented) - known)}"
    )


def test_every_field_is_one_row_of_the_configuration_page() -> None:
    rows = [names for names, _ in configuration_rows()]
    for name, field in Settings.model_fields.items():
        assert field_env_names(name, field) in rows, f"{name}: its variables are not one row"


def test_the_configuration_page_states_the_defaults_settings_has(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [key for key in os.environ if key.startswith("SYNCTRACK_")]:
        monkeypatch.delenv(variable)
    defaults = Settings()
    fields = {env: name for name, field in Settings.model_fields.items() for env in field_env_names(name, field)}
    unchecked = set()
    for names, default in configuration_rows():
        variable = sorted(names, key=len)[0]
        field = fields[variable]
        literal = ONE_LITERAL.match(default)
        if default in NO_VALUE:
            assert not getattr(defaults, field), f"{variable} is documented without a default"
        elif literal:
            with monkeypatch.context() as env:
                env.setenv(variable, literal.group(1))
                assert getattr(Settings(), field) == getattr(defaults, field), f"{variable}: documented {default}"
        else:
            unchecked.add(field)
    assert unchecked == PROSE_DEFAULTS


def test_every_synctrack_variable_the_docs_name_is_a_real_setting() -> None:
    known = setting_env_names()
    named = {(path.name, var) for path in PAGES for var in SYNCTRACK_VAR.findall(path.read_text())}
    unknown = sorted(f"{page}: {var}" for page, var in named if var not in known)
    assert not unknown, f"not settings: {unknown}"


def test_the_api_page_lists_exactly_the_error_codes() -> None:
    text = (DOCS / "api.md").read_text()
    section = text[text.index("## Error codes") :]
    documented = {cells[0].strip("`") for cells in table_rows(section) if cells[0].startswith("`")}
    assert documented == {code.value for code in ErrorCode}
