"""The README is the door and docs/ the reference: these checks keep both true as the code moves under them.

docs/scripts.md covers every option, exit code and event kind the two scripts have, docs/labs.md every exit code of
the kit, the README's labs table exactly the handouts there are; the README stays short, every page links back to it,
and every link and every path the pages name leads somewhere. No broker is needed."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

import labs.exit_codes
import qprocessor
import sender
from labs.paths import HANDOUTS, QPROCESSOR
from labs.scenarios.registry import LABS
from tests.helpers import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 200


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def prose(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text(page).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def section(page: Path, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of that level or higher (or the end)."""
    lines = prose(page)
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"#{1,%d} " % heading.index(" "), lines[i])),
               len(lines))
    return "\n".join(lines[start:end])


def table_rows(body: str) -> list[list[str]]:
    """The cells of each table row in body, the header and separator rows left out."""
    rows = []
    for line in body.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s:|-]+\|$", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows[1:] if rows else rows


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    kept = "".join(c for c in heading if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(page):
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return [target for line in prose(page) for target in re.findall(r"\]\(([^)\s]+)\)", line)]


def exit_code_rows(page: Path) -> set[int]:
    return {int(row[0]) for row in table_rows(section(page, "## Exit codes")) if row and row[0].isdigit()}


SCRIPTS = ROOT / "docs" / "scripts.md"


@pytest.mark.parametrize("script", [sender, qprocessor], ids=["sender", "qprocessor"])
def test_every_exit_code_of_a_script_has_a_row_in_the_exit_code_table(script):
    codes = {value for name, value in vars(script).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert codes - exit_code_rows(SCRIPTS) == set(), f"exit codes of {script.__name__}.py missing from docs/scripts.md"


@pytest.mark.parametrize("script", [sender, qprocessor], ids=["sender", "qprocessor"])
def test_every_option_of_a_script_is_in_the_scripts_page(script):
    options = {opt for param in script.cli.params for opt in [*param.opts, *param.secondary_opts]
               if opt.startswith("--")} - {"--help"}
    page = text(SCRIPTS)
    missing = sorted(opt for opt in options if not re.search(re.escape(opt) + r"(?![\w-])", page))
    assert not missing, f"options of {script.__name__}.py that docs/scripts.md does not document: {missing}"


def test_every_event_the_worker_logs_has_a_row_in_the_event_table():
    # The kinds the worker writes: the members of its Event enum that qprocessor.py uses outside the enum itself.
    used = set(re.findall(r"\bEvent\.([A-Z_]+)\b", QPROCESSOR.read_text(encoding="utf-8")))
    kinds = {qprocessor.Event[name].value for name in used}
    assert kinds, "no Event.X in qprocessor.py: has the event log moved?"
    rows = {row[0].strip("`") for row in table_rows(section(SCRIPTS, "## The worker's event log"))}
    assert kinds == rows, f"events logged but not documented: {kinds - rows}; documented, never logged: {rows - kinds}"


def test_every_exit_code_of_the_kit_has_a_row_in_the_labs_page():
    codes = {value for name, value in vars(labs.exit_codes).items() if name.startswith("EXIT_")}
    assert exit_code_rows(ROOT / "docs" / "labs.md") == codes


def test_the_readme_is_a_door_of_at_most_200_lines():
    lines = len(text(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the reference into docs/"


def test_the_labs_table_lists_exactly_the_handouts():
    rows = table_rows(section(README, "## Labs"))
    listed = {}
    for number, handout, *_ in rows:
        target = re.fullmatch(r"\[[^\]]+\]\(([^)]+)\)", handout)
        assert target, f"lab {number}: the handout cell is not one link: {handout}"
        listed[int(number)] = (ROOT / target.group(1)).resolve()
    handouts = sorted(HANDOUTS.glob("*.md"))
    assert sorted(listed.values()) == [path.resolve() for path in handouts]
    for number, path in listed.items():
        assert path.name.startswith(f"{number:02d}-"), f"lab {number} links to {path.name}"
    for lab in LABS:  # each lab the runner proves is the row of its own number
        assert listed.get(lab.number) == lab.handout.resolve(), f"lab {lab.number}: {lab.handout}"


def test_the_readme_counts_the_labs_truly():
    words = {10: "ten", 11: "eleven", 12: "twelve", 13: "thirteen", 14: "fourteen", 15: "fifteen"}
    count = words.get(len(LABS), str(len(LABS)))
    assert re.search(rf"\b{count} labs\b", text(README), flags=re.I), f"the README should say {count} labs"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(target)
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(target)
    assert not broken, f"{page.name}: links that lead nowhere: {broken}"


# A path a page names in its prose: from one of the repository's folders, or one of its top-level files.
NAMED_PATH = re.compile(r"(?<![\w./:@-])((?:labs|tests|tools|bench|images|docs|\.ci)/[\w.*/-]*[\w*/]"
                        r"|(?:sender|qprocessor|rabbitqueue)\.py|compose\.yaml|requirements[\w-]*\.txt)")


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_path_a_page_names_exists(page):
    missing = sorted({path for path in NAMED_PATH.findall(text(page)) if not list(ROOT.glob(path.rstrip("/")))})
    assert not missing, f"{page.name} names paths the repository does not have: {missing}"


@pytest.mark.parametrize("page", DOCS, ids=[page.name for page in DOCS])
def test_each_docs_page_opens_with_a_summary_that_links_back_to_the_readme(page):
    title, blank, *rest = text(page).splitlines()
    assert title.startswith("# ") and blank == "", f"{page.name} should open with a title line"
    summary = " ".join(rest[:rest.index("")])
    assert "](../README.md)" in summary, f"{page.name}: its opening summary should link back to the README"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    assert {page.resolve() for page in DOCS} <= linked


def test_the_layout_names_only_files_its_folders_hold():
    missing = []
    for row in table_rows(section(ROOT / "docs" / "tests.md", "## Layout")):
        folders = [ROOT / name for name in re.findall(r"`([^`]+/)`", row[0])]
        for folder in folders:
            for name in re.findall(r"`([\w.-]+\.(?:py|conf|json|txt|toml))`", row[1]):
                if not (folder / name).exists():
                    missing.append(f"{folder.relative_to(ROOT)}/{name}")
    assert not missing, f"docs/tests.md's layout names files that are not there: {missing}"
