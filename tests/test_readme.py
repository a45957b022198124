"""The README is the user's door: its CLI reference and exit-code table cover every option and exit code the two
scripts have, so neither can grow one that the README does not document."""
from __future__ import annotations

import re

import pytest

import qprocessor
import sender
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("script", [sender, qprocessor], ids=["sender", "qprocessor"])
def test_every_exit_code_of_a_script_has_a_row_in_the_exit_code_table(script):
    table = README[README.index("## Exit codes"):]
    table = table[:table.index("\n## ")]
    rows = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    codes = {value for name, value in vars(script).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert codes - rows == set(), f"exit codes of {script.__name__}.py missing from README's table"


@pytest.mark.parametrize("script", [sender, qprocessor], ids=["sender", "qprocessor"])
def test_every_option_of_a_script_is_in_the_readme(script):
    options = {opt for param in script.cli.params for opt in param.opts if opt.startswith("--")} - {"--help"}
    missing = sorted(opt for opt in options if not re.search(re.escape(opt) + r"(?![\w-])", README))
    assert not missing, f"options of {script.__name__}.py the README does not document: {missing}"
