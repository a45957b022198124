"""The two scripts repeat their connection code by design (each runs alone); these tests keep the twins equal."""
from __future__ import annotations

import difflib
import re
from dataclasses import fields

import pytest

import qprocessor
import sender
from tests.helpers import QPROCESSOR, SENDER

START = "# --- connection code:"
END = "# --- end of the connection code ---"


def connection_block(path) -> str:
    text = path.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, f"{path.name} must mark its connection code once"
    return text[text.index(START):text.index(END) + len(END)]


def test_the_connection_code_is_the_same_in_both_scripts():
    ours, theirs = connection_block(SENDER), connection_block(QPROCESSOR)
    difference = "".join(difflib.unified_diff(ours.splitlines(True), theirs.splitlines(True), "sender.py",
                                              "qprocessor.py"))
    assert ours == theirs, "the twin blocks drifted apart:\n" + difference


def test_the_block_names_no_script_as_its_only_home():
    """A comment copied from one twin must not claim the code lives in the other script only."""
    block = connection_block(SENDER)
    assert not re.search(r"repeated in (sender|qprocessor)\.py", block)


@pytest.mark.parametrize("script, own", [(sender, sender.SenderSettings), (qprocessor, qprocessor.WorkerSettings)])
def test_every_option_of_a_script_lands_in_a_settings_object(script, own):
    """An option that no settings class declares would be parsed by click and then silently ignored."""
    declared = {script.option_name(group, each.name)
                for group in (script.ConnectionSettings, script.QueueSettings, own) for each in fields(group)}
    options = {param.name for param in script.main.params if param.param_type_name == "option"} - {"help"}
    assert options == declared


@pytest.mark.parametrize("script", [sender, qprocessor])
def test_settings_are_frozen_and_keep_the_password_out_of_repr(script):
    settings = script.ConnectionSettings(password="s3cret-value")
    assert "s3cret-value" not in repr(settings)
    with pytest.raises(Exception):
        settings.host = "elsewhere"  # type: ignore[misc]
