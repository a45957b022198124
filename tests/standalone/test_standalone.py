"""Each script works when uploaded alone, and imports without side effects for ipython."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib

import pytest

SCRIPTS = ("sender.py", "qprocessor.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_executable_with_a_pep_723_block(alone, script):
    path = alone / script
    assert os.access(path, os.X_OK)
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    block = re.search(r"^# /// script\n((?:#.*\n)+?)^# ///$", text, re.M).group(1)
    metadata = tomllib.loads("".join(line[2:] + "\n" for line in block.splitlines()))
    assert {re.split(r"[<>=]", d)[0] for d in metadata["dependencies"]} == {"pika", "click", "tenacity"}


def test_scripts_copied_alone_into_an_empty_folder_send_and_receive(space, alone):
    env = space.env()
    env.pop("PYTHONPATH", None)
    sent = subprocess.run(["./sender.py", "from-an-upload"], cwd=alone, env={**env, "PATH": bin_path(env)},
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    got = subprocess.run(["./qprocessor.py", "--max-messages", "1", "--seconds-per-char", "0"], cwd=alone,
                         env={**env, "PATH": bin_path(env)}, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert "received 'from-an-upload'" in got.stdout


def bin_path(env: dict) -> str:
    """Put this interpreter first on PATH so the shebang's `env python3` finds pika, click and tenacity."""
    return os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")


def test_importing_connects_to_nothing_and_exposes_the_ipython_functions(alone):
    code = ("import sender, qprocessor; "
            "print(all(callable(f) for f in (sender.connect, sender.send, qprocessor.connect, qprocessor.receive)))")
    env = {**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}  # nothing listens: importing must not care
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=alone, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
    assert time.monotonic() - started < 10  # no connection attempt, no retry loop


def test_ipython_style_session_sends_and_receives(space, alone):
    code = f"""
import sender, qprocessor
out = sender.connect(url={space.url!r})
sender.declare_queue(out, "hello")
ids = [sender.send(out, "hello", text) for text in ("one", "two")]
inbox = qprocessor.connect(url={space.url!r})
print(qprocessor.receive(inbox, "hello"), qprocessor.receive(inbox, "hello"), qprocessor.receive(inbox, "hello"))
print(len(set(ids)))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=alone, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["b'one' b'two' None", "2"]
