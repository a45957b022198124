"""The mutation check's breakages still fit the code: each one's text is found exactly once in its file, and the
tests it names exist. A refactoring that moves the text would otherwise leave a mutant that cannot be applied, and
nobody would notice until the next full mutation run (two had gone stale that way)."""
from __future__ import annotations

import importlib.util
import re
import sys

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "tools" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(spec)
sys.modules["mutation_check"] = mutation_check  # its dataclasses look their module up there
spec.loader.exec_module(mutation_check)


def test_every_mutant_applies_to_exactly_one_place():
    stale = [f"{m.source}: {m.name!r} occurs {(ROOT / m.file).read_text(encoding='utf-8').count(m.find)} times "
             f"in {m.file}" for m in mutation_check.load_mutants()
             if (ROOT / m.file).read_text(encoding="utf-8").count(m.find) != 1]
    assert not stale, "\n".join(stale)


def test_every_test_a_mutant_names_exists():
    missing = []
    for mutant in mutation_check.load_mutants():
        for test in mutant.tests:
            path, _, name = test.partition("::")
            function = re.sub(r"\[.*\]$", "", name)
            source = ROOT / path
            if not source.exists():
                missing.append(f"{mutant.source}: {mutant.name!r} names {test}")
                continue
            # A test file alone (no ::name) stands for all its tests.
            named = not function or re.search(rf"^def {re.escape(function)}\(", source.read_text(), re.M)
            if not named:
                missing.append(f"{mutant.source}: {mutant.name!r} names {test}")
    assert not missing, "\n".join(missing)
