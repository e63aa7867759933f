"""The documentation keeps step with the code: settings, system checks, pages.

A setting or check id added without its docs section, a page left out of the
MkDocs nav, or a nav entry whose page is gone fails here, in the suite,
before ``mkdocs build --strict`` (the ``docs`` tox environment) even runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from branching_ops.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "branching_ops"

CHECK_ID_RE = re.compile(r"""\bid=["'](branching_ops\.[A-Z]\d{3})["']""")
# "### `KEY`" or "### KEY", with or without the backticks.
H3_RE = re.compile(r"^### `?([^`\n]+?)`?\s*$", re.MULTILINE)
NAV_PAGE_RE = re.compile(r"([\w./-]+\.md)\s*$", re.MULTILINE)


def h3_sections(page: str) -> dict[str, str]:
    """Each ``###`` heading of a docs page with the text up to the next heading."""
    text = (DOCS / page).read_text()
    matches = list(H3_RE.finditer(text))
    sections = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[match.end() : end]
        sections[match[1]] = re.split(r"^#", body, maxsplit=1, flags=re.MULTILINE)[0]
    return sections


def check_ids_in_source() -> set[str]:
    return {
        check_id
        for path in PACKAGE.rglob("*.py")
        for check_id in CHECK_ID_RE.findall(path.read_text())
    }


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's ``nav`` names, in order."""
    config = (ROOT / "mkdocs.yml").read_text()
    nav = re.search(r"^nav:\n((?:[ \t]+.*\n|\n)*)", config, re.MULTILINE)
    assert nav is not None, "mkdocs.yml has no nav"
    return NAV_PAGE_RE.findall(nav[1])


def difference(documented: set[str], expected: set[str]) -> dict[str, list[str]]:
    return {
        "undocumented": sorted(expected - documented),
        "documented but gone": sorted(documented - expected),
    }


NO_DIFFERENCE: dict[str, list[str]] = {"undocumented": [], "documented but gone": []}


def docs_pages() -> set[str]:
    return {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}


def test_every_setting_has_its_section_on_configuration() -> None:
    documented = set(h3_sections("configuration.md"))
    assert difference(documented, set(DEFAULTS)) == NO_DIFFERENCE


def test_every_setting_section_gives_type_default_and_example() -> None:
    incomplete = {
        key: [label for label in ("Type", "Default", "Example") if f"**{label}:**" not in body]
        for key, body in h3_sections("configuration.md").items()
    }
    assert {key: missing for key, missing in incomplete.items() if missing} == {}


def test_every_check_id_has_its_section_on_checks() -> None:
    ids = check_ids_in_source()
    assert "branching_ops.E001" in ids  # the pattern still finds the ids
    assert difference(set(h3_sections("checks.md")), ids) == NO_DIFFERENCE


def test_every_check_section_says_how_to_fix() -> None:
    sections = h3_sections("checks.md")
    assert [check_id for check_id, body in sections.items() if "**Fix:**" not in body] == []


def test_every_page_is_in_the_nav() -> None:
    assert sorted(docs_pages() - set(nav_pages())) == []


def test_every_nav_entry_is_a_page_listed_once() -> None:
    pages = nav_pages()
    assert "index.md" in pages  # the pattern still finds the entries
    assert sorted(set(pages) - docs_pages()) == []
    assert len(pages) == len(set(pages))


def test_readme_is_short_and_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\(docs/([\w./-]+\.md)", readme))
    if "](CHANGELOG.md)" in readme:
        linked.add("changelog.md")
    assert sorted(docs_pages() - linked) == []


def package_map() -> set[str]:
    """The paths the "How it works" page's package table lists, relative to the package."""
    text = (DOCS / "how-it-works.md").read_text()
    table = re.search(r"^## The package\n(.*?)^## ", text, re.MULTILINE | re.DOTALL)
    assert table is not None, "how-it-works.md has no package table"
    first_cells = re.findall(r"^\| ([^|]+) \|", table[1], re.MULTILINE)
    paths = {path for cell in first_cells for path in re.findall(r"`([\w./]+)`", cell)}
    return {path.removeprefix("branching_ops/").rstrip("/") for path in paths}


def test_the_package_map_lists_every_module() -> None:
    """A listed package covers what is inside it; an unlisted one must list its modules."""
    listed = package_map()

    def uncovered(path: Path) -> list[str]:
        name = path.relative_to(PACKAGE).as_posix()
        if name in listed:
            return []
        if path.is_file():
            return [name]
        children = [
            child
            for child in sorted(path.iterdir())
            if (child.suffix == ".py" and child.name != "__init__.py")
            or (child / "__init__.py").is_file()
        ]
        return [missing for child in children for missing in uncovered(child)]

    assert "databases.py" in listed  # the pattern still finds the table
    assert uncovered(PACKAGE) == []
    # A row outside branching_ops/ (the NetBox plugin's package) names a path from the root.
    stale = [path for path in listed if not any((d / path).exists() for d in (PACKAGE, ROOT))]
    assert sorted(stale) == []


def test_every_test_the_docs_name_exists() -> None:
    """Guarantees name the test that shows them: a renamed or moved test must be followed."""
    named = {
        (path, name)
        for page in DOCS.rglob("*.md")
        for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)", page.read_text())
    }
    assert ("tests/test_tracking.py", "test_cleanup_never_closes_inside_atomic") in named
    missing = sorted(
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).is_file() or f"def {name}(" not in (ROOT / path).read_text()
    )
    assert missing == []
