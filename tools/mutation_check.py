#!/usr/bin/env python3
"""The mutation check: break the kit on purpose, one breakage at a time, and see the tests named for it fail.

Each breakage (a "mutant") lives in tools/mutants/*.toml:

    [[mutant]]
    name = "the worker acks before its work"
    file = "qprocessor.py"
    find = "exact text, found exactly once in the file"
    replace = "the broken text"
    tests = ["tests/scripts/test_work_queue.py::test_..."]
    pytest_args = ["--rabbitmq", "4.3"]     # optional: for a behaviour only one broker version has

The repository is copied (as the working tree has it) into a scratch folder, the breakage applied there (a breakage
of labs/amqp/ is then embedded into both scripts by `python -m labs.amqp.embed`, as a real edit would be), and the
named tests run with the project's own interpreter. A mutant "survives" when those tests still pass: the tests would
not notice that behaviour breaking, which is a defect in the tests. Exit status: 0 when every mutant was caught,
1 when any survived, 2 when a mutant cannot be applied (its text is missing or not unique).

    .venv/bin/python tools/mutation_check.py                 # every mutant
    .venv/bin/python tools/mutation_check.py -k signal       # those whose name contains "signal"
    .venv/bin/python tools/mutation_check.py --list
    .venv/bin/python tools/mutation_check.py --jobs 2        # two mutants at a time, each in a copy of its own

With --jobs, mutants run side by side, each in its own copy with brokers of its own (the tests start theirs): most
tests wait on a broker most of the time, so two at a time on two cores finish sooner, though each takes longer.
"""
from __future__ import annotations

import concurrent.futures
import queue
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "tools" / "mutants"
IGNORED = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", "*.pyc")
EMBEDDED_SOURCES = "labs/amqp/"  # the modules embedded into sender.py and qprocessor.py (labs/amqp/embed.py)


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    source: str  # the .toml it came from
    pytest_args: tuple[str, ...] = ()  # e.g. ("--rabbitmq", "4.3")

    def apply(self, copy: Path) -> None:
        target = copy / self.file
        text = target.read_text(encoding="utf-8")
        found = text.count(self.find)
        if found != 1:
            raise click.ClickException(f"{self.source}: mutant {self.name!r}: its text occurs {found} times "
                                       f"in {self.file} (must be exactly once)")
        target.write_text(text.replace(self.find, self.replace), encoding="utf-8")
        if self.file.startswith(EMBEDDED_SOURCES):
            # The scripts carry the connection code as generated from labs/amqp/: regenerate their copies, so that
            # the breakage reaches both scripts as a real edit would (a mutant of a script's own copy is not
            # regenerated: it stands for a hand edit that the embed check must catch).
            generated = subprocess.run([sys.executable, "-m", "labs.amqp.embed"], cwd=copy, capture_output=True,
                                       text=True, stdin=subprocess.DEVNULL)
            if generated.returncode != 0:
                raise click.ClickException(f"{self.source}: mutant {self.name!r}: regenerating the scripts failed: "
                                           f"{(generated.stdout + generated.stderr).strip()}")


def load_mutants() -> list[Mutant]:
    mutants = []
    for path in sorted(MUTANTS.glob("*.toml")):
        for entry in tomllib.loads(path.read_text(encoding="utf-8")).get("mutant", []):
            mutants.append(Mutant(entry["name"], entry["file"], entry["find"], entry["replace"],
                                  tuple(entry["tests"]), path.name, tuple(entry.get("pytest_args", ()))))
    return mutants


def fresh_copy(workdir: Path) -> Path:
    copy = workdir / "repo"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(ROOT, copy, ignore=IGNORED)
    return copy


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float, source: str,
              pytest_args: tuple[str, ...] = ()) -> tuple[bool, str]:
    """Run the tests in the copy; (passed, pytest's last line)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *pytest_args, *tests]
    try:
        result = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, "timed out: the tests did not pass"
    if result.returncode in (4, 5):  # usage error or no test collected: a wrong test id proves nothing
        raise click.ClickException(f"{source}: pytest could not run {' '.join(tests)}: "
                                   f"{(result.stdout + result.stderr).strip().splitlines()[-1]}")
    last = (result.stdout.strip().splitlines() or [""])[-1]
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    if failed:
        last += f" [failed: {', '.join(failed)}]"
    if result.returncode == 0 and " passed" not in last:  # all skipped (e.g. a 4.3-only test without --rabbitmq 4.3)
        raise click.ClickException(f"{source}: {' '.join(tests)} ran nothing ({last}): a skipped test proves nothing; "
                                   "give the mutant the pytest_args its tests need")
    return result.returncode == 0, last


def survives(mutant: Mutant, workdir: Path, timeout: float) -> tuple[bool, str]:
    """Apply the mutant to a fresh copy and run its tests; True when they all still pass."""
    copy = fresh_copy(workdir)
    mutant.apply(copy)
    return run_tests(copy, mutant.tests, timeout, f"{mutant.source}: mutant {mutant.name!r}", mutant.pytest_args)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-k", "keyword", help="Only the mutants whose name contains this text.")
@click.option("--list", "list_only", is_flag=True, help="List the mutants and their tests, and run nothing.")
@click.option("--timeout", type=click.FloatRange(1), default=900, show_default=True,
              help="Seconds one mutant's tests may take.")
@click.option("--jobs", type=click.IntRange(1, 8), default=1, show_default=True,
              help="How many mutants to check at a time, each in a copy of its own.")
def main(keyword: str | None, list_only: bool, timeout: float, jobs: int) -> None:
    """Apply each breakage in tools/mutants/*.toml to a copy and check that its tests fail."""
    mutants = [m for m in load_mutants() if not keyword or keyword in m.name]
    if not mutants:
        raise click.ClickException(f"no mutant's name contains {keyword!r}: see --list")
    if list_only:
        for mutant in mutants:
            click.echo(f"{mutant.source}: {mutant.name}  ->  {' '.join(mutant.tests)}")
        return
    survivors = []
    with tempfile.TemporaryDirectory(prefix="labkit-mutants-") as scratch:
        # A test that already fails would "catch" every breakage: first the named tests must pass unbroken.
        copy = fresh_copy(Path(scratch))
        for args in dict.fromkeys(mutant.pytest_args for mutant in mutants):
            named = tuple(dict.fromkeys(test for mutant in mutants if mutant.pytest_args == args
                                        for test in mutant.tests))
            passed, detail = run_tests(copy, named, timeout * 2, "the unbroken code", args)
            if not passed and "[failed: " in detail:
                # Once more for the tests that failed (-x stopped at the first), from there on: a test that fails
                # only sometimes on a busy machine is said, not taken for a broken baseline.
                first = detail.split("[failed: ", 1)[1].rstrip("]").split(", ")[0]
                rest = named[named.index(first):] if first in named else named
                click.echo(f"unbroken: {first} failed once ({detail}); running from it again")
                passed, detail = run_tests(copy, rest, timeout * 2, "the unbroken code", args)
            if not passed:
                raise click.ClickException(f"the named tests fail without any breakage ({detail}): fix them first")
            click.echo(f"unbroken{' ' + ' '.join(args) if args else ''}: {len(named)} named tests pass ({detail})")

        lanes: queue.Queue[Path] = queue.Queue()  # a scratch folder per mutant under way, never two at once
        for index in range(jobs):
            (Path(scratch) / f"lane{index}").mkdir()
            lanes.put(Path(scratch) / f"lane{index}")

        def check(mutant: Mutant) -> tuple[bool, str, float]:
            lane = lanes.get()
            started = time.monotonic()
            try:
                alive, detail = survives(mutant, lane, timeout)
            finally:
                lanes.put(lane)
            return alive, detail, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(check, mutant): (number, mutant) for number, mutant in enumerate(mutants, 1)}
            for future in concurrent.futures.as_completed(futures):
                number, mutant = futures[future]
                alive, detail, seconds = future.result()
                verdict = "SURVIVED" if alive else "caught"
                click.echo(f"[{number}/{len(mutants)}] {verdict:<8} {mutant.name} ({seconds:.0f}s; {detail})")
                if alive:
                    survivors.append(mutant)
    click.echo(f"{len(mutants) - len(survivors)} of {len(mutants)} mutants caught"
               + (": survivors: " + "; ".join(m.name for m in survivors) if survivors else ""))
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
