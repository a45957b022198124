"""The two scripts carry the same connection code (embedded from labs/amqp/, see tests/test_embed.py) and declare
their options the same way; these tests keep what the twins share honest."""
from __future__ import annotations

import re
from dataclasses import fields

import pytest

import qprocessor
import sender
from labs.amqp import embed


def test_the_block_names_no_script_as_its_only_home():
    """Both scripts embed the block: a comment in it must not claim the code lives in one script only."""
    assert not re.search(r"repeated in (sender|qprocessor)\.py", embed.generated_block())


@pytest.mark.parametrize("script, own", [(sender, sender.SenderSettings), (qprocessor, qprocessor.WorkerSettings)])
def test_every_option_of_a_script_lands_in_a_settings_object(script, own):
    """An option that no settings class declares would be parsed by click and then silently ignored."""
    declared = {script.option_name(group, each.name)
                for group in (script.ConnectionSettings, script.QueueSettings, own) for each in fields(group)}
    options = {param.name for param in script.cli.params if param.param_type_name == "option"} - {"help"}
    assert options == declared


@pytest.mark.parametrize("script", [sender, qprocessor])
def test_settings_are_frozen_and_keep_the_password_out_of_repr(script):
    settings = script.ConnectionSettings(password="s3cret-value")
    assert "s3cret-value" not in repr(settings)
    with pytest.raises(Exception):
        settings.host = "elsewhere"  # type: ignore[misc]
