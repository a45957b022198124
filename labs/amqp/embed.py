"""Embed the connection code into sender.py and qprocessor.py, as SQLite generates its one-file amalgamation.

    .venv/bin/python -m labs.amqp.embed            # rewrite the block between the marker lines of both scripts
    .venv/bin/python -m labs.amqp.embed --check    # change nothing; exit 1 with a unified diff when a copy differs

The block is the body of each module in SOURCES, from its embed line on, in that order: the modules' docstrings and
imports stay behind, since each script makes those imports at its top (check() also fails when a script lacks one).
"""
from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Optional

import click

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCES = ("errors.py", "management.py", "connection.py")  # in the order a script needs them defined
SCRIPTS = ("sender.py", "qprocessor.py")
EMBED_LINE = "# --- embedded from here on: the body of the scripts' connection code ---\n"
START = "# --- connection code: generated from labs/amqp/ by `python -m labs.amqp.embed`; edit it there, not here ---\n"
NOTE = ("# (each script carries its own copy so that it runs when copied alone; tests/standalone/test_embed.py fails when this copy\n"
        "# differs from what labs/amqp/ generates)\n")
END = "# --- end of the connection code ---\n"
FIRST_PARTY = re.compile(r"^from labs\.")  # the modules' imports of each other: one block in the script


def source_parts(source: str) -> tuple[str, str]:
    """A module's (header, body): what precedes its embed line, and what follows it."""
    if source.count(EMBED_LINE) != 1:
        raise click.ClickException(f"a module of labs/amqp/ must hold the embed line once: {EMBED_LINE.strip()}")
    header, body = source.split(EMBED_LINE)
    return header, body.strip("\n") + "\n"


def generated_block(root: Path = ROOT) -> str:
    """The block as the scripts must carry it, marker lines included."""
    parts = []
    for name in SOURCES:
        _header, body = source_parts((root / "labs" / "amqp" / name).read_text(encoding="utf-8"))
        parts.append(f"# -- from labs/amqp/{name} --\n\n{body}")
    return START + NOTE + "\n" + "\n\n".join(parts) + "\n" + END


def needed_imports(root: Path = ROOT) -> list[str]:
    """The import lines of the modules' headers that a script must make itself (not those of one another)."""
    lines: list[str] = []
    for name in SOURCES:
        header, _body = source_parts((root / "labs" / "amqp" / name).read_text(encoding="utf-8"))
        for line in header.splitlines():
            if line.startswith(("import ", "from ")) and not FIRST_PARTY.match(line) and line not in lines:
                lines.append(line)
    return lines


def embedded(script: str) -> tuple[str, str, str]:
    """A script's text before its block, the block (marker lines included), and the text after it."""
    starts = [m.start() for m in re.finditer(r"^# --- connection code:.*\n", script, re.M)]
    if len(starts) != 1 or script.count(END) != 1:
        raise click.ClickException("a script must mark its connection code once, with a '# --- connection code:' "
                                   f"line and a {END.strip()!r} line")
    start, end = starts[0], script.index(END) + len(END)
    return script[:start], script[start:end], script[end:]


def missing_imports(before: str, imports: list[str], block: str) -> list[str]:
    """The names the block uses from the modules' imports that a script's text does not import itself."""
    missing = []
    for line in imports:
        names = re.sub(r"^(from \S+ )?import ", "", line).split(",")
        for name in (each.strip().split(" as ")[-1] for each in names):
            used = re.search(rf"\b{re.escape(name)}\b", block)
            if used and not re.search(rf"^(from \S+ )?import .*\b{re.escape(name)}\b", before, re.M):
                missing.append(f"{line}  ({name})")
    return missing


def differences(root: Path = ROOT) -> dict[str, str]:
    """For each script whose block differs from the generated one, a unified diff (script's copy -> generated)."""
    block, imports, found = generated_block(root), needed_imports(root), {}
    for name in SCRIPTS:
        before, copy, _after = embedded((root / name).read_text(encoding="utf-8"))
        problems = []
        if copy != block:
            problems.append("".join(difflib.unified_diff(copy.splitlines(True), block.splitlines(True),
                                                         f"{name} (embedded copy)", "labs/amqp/ (generated)")))
        missing = missing_imports(before, imports, block)
        if missing:
            problems.append(f"{name} does not import what its connection code needs: " + "; ".join(missing) + "\n")
        if problems:
            found[name] = "".join(problems)
    return found


def write(root: Path = ROOT) -> list[str]:
    """Rewrite the block of each script whose copy differs; return their names."""
    block, written = generated_block(root), []
    for name in SCRIPTS:
        path = root / name
        before, copy, after = embedded(path.read_text(encoding="utf-8"))
        if copy != block:
            path.write_text(before + block + after, encoding="utf-8")
            written.append(name)
    return written


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--check", is_flag=True, help="Change nothing; exit 1 with a diff when an embedded copy differs.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The repository to work on [default: the one holding this module].")
def main(check: bool, root: Optional[Path]) -> None:
    """Embed labs/amqp/'s connection code into sender.py and qprocessor.py (or check that it is)."""
    root = root or ROOT
    if check:
        found = differences(root)
        for text in found.values():
            click.echo(text, nl=False)
        if found:
            click.echo(f"{', '.join(found)}: the embedded connection code differs from labs/amqp/; run "
                       "python -m labs.amqp.embed", err=True)
            sys.exit(1)
        click.echo(f"{' and '.join(SCRIPTS)} embed labs/amqp/'s connection code as generated")
        return
    written = write(root)
    missing = {name: text for name, text in differences(root).items()}
    click.echo(f"rewrote the connection code of {', '.join(written)}" if written else "nothing to rewrite")
    if missing:  # only imports can still be missing once the blocks are written
        for text in missing.values():
            click.echo(text, err=True, nl=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
