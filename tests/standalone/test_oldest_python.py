"""The scripts run on the oldest Python they claim (requires-python in their PEP 723 header), not just on ours.

A student uploads sender.py and qprocessor.py to a server whose Python may be old (Debian 11: 3.9). These tests run
the real scripts with that Python, from a Debian root (see tests/old_python.py), against this suite's broker.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Iterator

import pytest

from labs.amqp.connection import Event
from tests.helpers import ROOT, Space, wait_until
from tests.old_python import OldPython, Unavailable, chroot_env, old_python, parse_floor, script_requirements

SCRIPTS = ("sender.py", "qprocessor.py")
# The first test here may build the Debian root (about a minute; longer on a slow mirror) in its fixture setup.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="session")
def oldest() -> OldPython:
    """Built once per machine (then cached), and looked up once per session."""
    requirements = script_requirements(ROOT / script for script in SCRIPTS)
    log: list[str] = []
    try:
        return old_python(requirements, log)
    except Unavailable as exc:
        reason = f"cannot run the scripts on their claimed oldest Python {'%d.%d' % requirements.floor}: {exc}"
    finally:
        print("\n".join(log))
    if os.environ.get("CI") == "true":  # CI must prove the floor, not skip it
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def upload(oldest: OldPython) -> Iterator[Path]:
    """A fresh folder in the root holding copies of the two scripts, as a student uploads them."""
    folder = oldest.root / "tmp" / f"upload-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    for script in SCRIPTS:
        shutil.copy2(ROOT / script, folder / script)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_old(oldest: OldPython, upload: Path, *args: str, env: dict | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(oldest.command(*args, cwd=oldest.inside(upload)), env=env or chroot_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def student_env(space: Space) -> dict:
    """The space's broker URL and nothing of this host's environment (its PATH, virtualenv, PYTHON* settings)."""
    env = space.env()
    return {**chroot_env(), "AMQP_URL": env["AMQP_URL"], "PYTHONUNBUFFERED": "1"}


def test_the_scripts_and_pyproject_claim_the_same_floor():
    requirements = script_requirements(ROOT / script for script in SCRIPTS)  # raises when the scripts differ
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert parse_floor(project["requires-python"], "pyproject.toml") == requirements.floor


def test_the_interpreter_is_the_claimed_oldest_python_with_the_dependencies(oldest):
    requirements = script_requirements(ROOT / script for script in SCRIPTS)
    assert tuple(map(int, oldest.version.split(".")[:2])) == requirements.floor
    result = run_old(oldest, oldest.root, "-c", "import sys; print(sys.version)")
    assert result.returncode == 0 and result.stdout.startswith(oldest.version), result.stderr
    assert set(oldest.packages) == {"pika", "click", "tenacity"}, oldest.packages


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_works_on_the_oldest_python(oldest, upload, script):
    result = run_old(oldest, upload, script, "--help")
    assert result.returncode == 0, f"{script} --help on Python {oldest.version}:\n{result.stderr}"
    assert result.stdout.startswith(f"Usage: {script} [OPTIONS]"), result.stdout
    assert "Traceback" not in result.stderr


def test_importing_both_works_on_the_oldest_python(oldest, upload):
    code = ("import sender, qprocessor; "
            "print(all(callable(f) for f in (sender.connect, sender.send, qprocessor.connect, qprocessor.receive)))")
    env = {**chroot_env(), "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}  # nothing listens: importing must not care
    result = run_old(oldest, upload, "-c", code, env=env, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "True", \
        f"importing the scripts on Python {oldest.version}:\n{result.stderr}"


def test_the_scripts_send_and_receive_on_the_oldest_python(space, oldest, upload):
    env = student_env(space)
    bodies = ["one", "two", "three"]
    sent = run_old(oldest, upload, "sender.py", "--queue", "old-python", *bodies, env=env)
    assert sent.returncode == 0, f"sender.py on Python {oldest.version}:\n{sent.stderr}"
    assert space.ready("old-python") == len(bodies)

    events = upload / "events.jsonl"
    got = run_old(oldest, upload, "qprocessor.py", "--queue", "old-python", "--acknowledge", "--seconds-per-char", "0",
                  "--max-messages", str(len(bodies)), "--events", oldest.inside(events), env=env)
    assert got.returncode == 0, f"qprocessor.py on Python {oldest.version}:\n{got.stderr}"
    for body in bodies:
        assert f"received {body!r}" in got.stdout, got.stdout
    done = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert [e["body"] for e in done if e["event"] == Event.DONE] == bodies, done
    # Acked, not merely delivered: an unacked message would be back in the queue once the worker's connection closed.
    wait_until(lambda: space.consumers("old-python") == 0, 10, "the worker's consumer to go")
    assert space.ready("old-python") == 0
    wait_until(lambda: space.queue_stats("old-python").get("messages") == 0, 10,
               "no message, ready or unacknowledged, in the management API's view of the queue")
