"""sender.py's fast path frames AMQP by hand and batches pika's private writes (STYLE 24): it checks pika's internals
once a connection and falls back to basic_publish when they differ. Both paths, on the oldest pika the scripts'
header allows and on the pinned one, must deliver every message exactly once, with confirms.

The oldest pika lives in a virtualenv cached under ~/.cache/labkit (built once a machine, from PyPI); the machine
without PyPI skips those tests (CI fails them).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import QPROCESSOR, ROOT, SENDER, require

PLAIN_NOTE = "publishing through pika's basic_publish"
COUNT = 400


def oldest_pika() -> str:
    """The floor of the scripts' pika range, as pip names the release: "pika>=1.3,<2" gives 1.3.0."""
    floors = {re.search(r'"pika>=([\d.]+)', (ROOT / name).read_text()).group(1) for name in ("sender.py", "qprocessor.py")}
    assert len(floors) == 1, f"the scripts claim different pika floors: {floors}"
    parts = next(iter(floors)).split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def cache_folder() -> Path:
    base = Path(os.environ.get("LABKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "labkit")
    return base / f"pika-{oldest_pika()}-py{sys.version_info.major}.{sys.version_info.minor}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One builder at a time (pytest-xdist workers share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def oldest_python() -> Path:
    """A Python whose pika is the oldest the header allows, with click and tenacity; built once, then cached."""
    folder, version = cache_folder(), oldest_pika()
    python, ready = folder / "bin" / "python", folder / ".labkit-ready"
    with locked(folder.parent / f"{folder.name}.lock"):
        if not ready.exists():
            built = subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], capture_output=True,
                                   text=True, timeout=300)
            if built.returncode == 0:
                built = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                        f"pika=={version}", "click>=8.1,<9", "tenacity>=8.2,<10"],
                                       capture_output=True, text=True, timeout=600)
            require(built.returncode == 0, f"cannot build a virtualenv with pika {version}: {built.stderr[-500:]}")
            ready.write_text(version)
    found = subprocess.run([str(python), "-c", "import pika; print(pika.__version__)"], capture_output=True,
                           text=True, timeout=60)
    assert found.stdout.strip() == version, found.stderr
    return python


def send(space, python: Path, queue: str, env: dict, *wrapper: str) -> subprocess.CompletedProcess:
    """sender.py --count COUNT, persistent and confirmed, run by `python` (through `wrapper` code when given)."""
    command = [str(python), *wrapper, str(SENDER), "--queue", queue, "--count", str(COUNT), "--persistent", "--quiet"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert f"sent {COUNT} messages to queue {queue!r}" in result.stdout, result.stdout
    return result


def assert_each_message_once(space, queue: str, python: Path = Path(sys.executable)) -> None:
    """qprocessor.py (run by `python`) takes every message off the queue: each body exactly once, none left."""
    events = space.folder / f"{queue}.events.jsonl"
    worker = subprocess.run([str(python), str(QPROCESSOR), "--queue", queue, "--acknowledge", "--prefetch", "50",
                             "--seconds-per-char", "0", "--max-messages", str(COUNT), "--quiet", "--events",
                             str(events)], env=space.env(), capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert worker.returncode == 0, worker.stderr
    done = [line for line in events.read_text().splitlines() if '"event": "done"' in line]
    bodies = sorted(int(re.search(r'"body": "(\d+)"', line).group(1)) for line in done)
    assert bodies == list(range(1, COUNT + 1))
    assert space.ready(queue) == 0


def test_the_scripts_on_the_oldest_pika_deliver_each_message_once_by_the_fast_path(space, oldest_python):
    sent = send(space, oldest_python, "oldest", space.env())
    assert PLAIN_NOTE not in sent.stderr, sent.stderr  # the guard accepts the oldest pika's internals
    assert_each_message_once(space, "oldest", oldest_python)


def test_the_fast_path_runs_on_the_pinned_pika(space):
    sent = send(space, Path(sys.executable), "pinned", space.env())
    assert PLAIN_NOTE not in sent.stderr, sent.stderr
    assert_each_message_once(space, "pinned")


@pytest.mark.parametrize("python", ["pinned", "oldest"])
def test_with_the_fast_path_off_every_message_goes_through_basic_publish_once(space, python, request):
    interpreter = Path(sys.executable) if python == "pinned" else request.getfixturevalue("oldest_python")
    sent = send(space, interpreter, "plain", space.env(LABKIT_PLAIN_PUBLISH="1"))
    assert f"{PLAIN_NOTE}, one write a frame (LABKIT_PLAIN_PUBLISH=1)" in sent.stderr
    assert_each_message_once(space, "plain")


# A pika whose internals differ from what the fast path knows, made from the real one before sender.py runs: it
# keeps no count of the frames it sends (the check before any message finds it), or it writes its frames past
# _adapter_emit_data (only the first message's comparison finds it).
OTHER_PIKA = {
    "without a frame count": """
import pika.connection
Connection = pika.connection.Connection
init_state = Connection._init_connection_state
def _init_connection_state(self):
    init_state(self)
    del self.frames_sent
def _output_marshaled_frames(self, frames):
    for frame in frames:
        self.bytes_sent += len(frame)
        self._adapter_emit_data(frame)
Connection._init_connection_state = _init_connection_state
Connection._output_marshaled_frames = _output_marshaled_frames
""",
    "writing past _adapter_emit_data": """
import pika.connection
def _output_marshaled_frames(self, frames):
    for frame in frames:
        self.bytes_sent += len(frame)
        self.frames_sent += 1
        self._transport.write(frame)
pika.connection.Connection._output_marshaled_frames = _output_marshaled_frames
""",
}
RUN_SCRIPT = "\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"


@pytest.mark.parametrize("other", OTHER_PIKA)
def test_a_pika_whose_internals_differ_gets_the_plain_path_and_each_message_once(space, other):
    sent = send(space, Path(sys.executable), "other", space.env(), "-c", OTHER_PIKA[other] + RUN_SCRIPT)
    assert PLAIN_NOTE in sent.stderr, sent.stderr
    assert_each_message_once(space, "other")
