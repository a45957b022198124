"""The scripts' connection code has one source, labs/amqp/, embedded into each script by `python -m labs.amqp.embed`
(as SQLite ships one generated amalgamation): these tests fail when an embedded copy differs from what it generates,
and keep what the two scripts share honest."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import fields

import pytest

import qprocessor
import sender
from labs.amqp import embed
from tests.helpers import ROOT


def test_each_script_embeds_the_connection_code_as_generated():
    found = embed.differences()
    assert not found, ("the embedded connection code differs from labs/amqp/ (edit it there, then run "
                       "python -m labs.amqp.embed):\n" + "".join(found.values()))


def test_the_check_fails_with_a_diff_and_the_generator_mends_both_scripts(tmp_path):
    # Given a copy whose source changed after the scripts were generated
    for name in embed.SCRIPTS:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "labs" / "amqp", tmp_path / "labs" / "amqp")
    source = tmp_path / "labs" / "amqp" / "errors.py"
    source.write_text(source.read_text().replace("cannot resolve host", "cannot resolve the host name"))
    command = [sys.executable, "-m", "labs.amqp.embed", "--root", str(tmp_path)]

    # When checked, then it fails and shows the difference in each script
    checked = subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert checked.stdout.count("+        return BrokerError(f\"cannot resolve the host name") == 2, checked.stdout

    # When generated, then both scripts carry the change and the check passes
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=60)
    assert all("cannot resolve the host name" in (tmp_path / name).read_text() for name in embed.SCRIPTS)
    assert subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, timeout=60).returncode == 0


def test_a_script_that_lacks_an_import_of_the_block_fails_the_check(tmp_path):
    for name in embed.SCRIPTS:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "labs" / "amqp", tmp_path / "labs" / "amqp")
    script = tmp_path / "sender.py"
    script.write_text(script.read_text().replace("import tenacity\n", "", 1))
    assert "sender.py does not import what its connection code needs: import tenacity" in \
        embed.differences(tmp_path).get("sender.py", "")


def test_the_kit_imports_the_code_the_scripts_embed():
    from labs.amqp.connection import Event, QueueSettings
    from labs.amqp.errors import explain  # noqa: F401 (importable is the point)
    from labs.amqp.management import ManagementAPI  # noqa: F401

    assert QueueSettings(name="q").declarations()[-1]["queue"] == "q"
    assert Event("dead-lettered") is Event.DEAD_LETTERED and Event.DONE == "done"


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
