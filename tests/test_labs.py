"""The lab runner proves every claim of every handout, and the handouts only show commands that exist."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from labs.broker import RABBITMQ_BIN
from labs.catalog import LABS
from labs.runner import HANDOUTS
from tests.helpers import ROOT


def labs_command(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labs", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def given_broker_env(broker) -> dict:
    """The suite's broker handed over as a classroom broker would be: AMQP_URL, management URL, rabbitmqctl."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "AMQP_"))}
    env.update(AMQP_URL=broker.url(), RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    if broker.local is not None:
        node = broker.local._envvars["RABBITMQ_NODENAME"]
        env["LABKIT_RABBITMQCTL"] = f"{RABBITMQ_BIN / 'rabbitmqctl'} -n {node}"
    return env


@pytest.mark.restart
def test_every_claim_of_every_lab_passes_on_a_broker_given_by_amqp_url(broker):
    if broker.local is None and "LABKIT_RABBITMQCTL" not in os.environ:
        pytest.skip("the labs restart the broker: give LABKIT_RABBITMQCTL with AMQP_URL")
    result = labs_command("run", "all", env=given_broker_env(broker))
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    claims = re.findall(r"^  (PASS|FAIL|SKIP): ", result.stdout, re.M)
    assert claims.count("PASS") >= 20 and set(claims) == {"PASS"}
    for lab in LABS:
        assert f"Lab {lab.number}: {lab.title}" in result.stdout
    assert re.search(r"w1 +processed +3 +busy", result.stdout)  # per-worker counts in the report
    assert "makespan" in result.stdout and re.search(r"redelivered [1-9]", result.stdout)


def test_a_lab_runs_on_the_embedded_broker_when_no_amqp_url_is_given():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "AMQP_"))}
    result = labs_command("run", "3", env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: auto-ack with --lose-every 3 loses 4 of 12" in result.stdout


def test_unknown_lab_is_a_usage_error():
    result = labs_command("run", "99", env=dict(os.environ), timeout=60)
    assert result.returncode == 2 and "give a lab number 1-8" in result.stderr


def test_list_names_every_handout_and_each_exists():
    result = labs_command("list", env=dict(os.environ), timeout=60)
    for lab in LABS:
        assert lab.handout.exists(), lab.handout
        assert lab.handout.name in result.stdout


def handout_commands() -> list[tuple[str, list[str]]]:
    """Every ./sender.py and ./qprocessor.py command line shown in a handout."""
    found = []
    for handout in sorted(HANDOUTS.glob("*.md")):
        text = handout.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            match = re.search(r"(\./(?:sender|qprocessor)\.py\b[^#`;]*)", line)
            if match and not line.lstrip().startswith(("[", "Error")):
                found.append((handout.name, shlex.split(match.group(1))))
    return found


@pytest.mark.parametrize("handout, command", handout_commands(), ids=lambda value: " ".join(value)
                         if isinstance(value, list) else value)
def test_every_script_command_in_a_handout_is_accepted(handout, command):
    """The runner runs each scenario; this catches a handout drifting from the scripts' real options."""
    script = ROOT / command[0].removeprefix("./")
    result = subprocess.run([sys.executable, str(script), *command[1:], "--help"], capture_output=True, text=True)
    assert result.returncode == 0, f"{handout}: {' '.join(command)}: {result.stderr}"


def test_tmux_mode_puts_each_worker_and_the_sender_in_a_pane(broker, tmp_path):
    """Lab 2 in tmux, on a private tmux server; read back each pane's screen as a person watching would see it."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is missing: ./kit test installs it")
    env = given_broker_env(broker)
    env["TMUX_TMPDIR"] = str(tmp_path)
    env.pop("TMUX", None)
    try:
        result = labs_command("run", "2", "--tmux", env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tmux attach -t labkit" in result.stderr
        panes = subprocess.run(["tmux", "list-panes", "-s", "-t", "labkit", "-F", "#{pane_id} #{pane_title}"],
                               env=env, capture_output=True, text=True).stdout.splitlines()
        titles = [line.split(" ", 1)[1] for line in panes if " " in line]
        assert {"w1", "w2", "w3", "sender"} <= set(titles), titles
        screens = {title: subprocess.run(["tmux", "capture-pane", "-p", "-t", pane_id], env=env, capture_output=True,
                                         text=True).stdout for pane_id, title in (l.split(" ", 1) for l in panes)}
        worker_screens = [screen for title, screen in screens.items() if title in ("w1", "w2", "w3")]
        assert len(worker_screens) == 3
        assert all("received" in screen and "summary: received 3" in screen for screen in worker_screens)
        assert any("sent 9 messages" in screen for screen in screens.values())
    finally:
        subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)


def handout_rabbitmqctl_commands() -> list[list[str]]:
    """The commands the handouts give for observing the broker (quoted pitfalls may wrap across lines)."""
    commands = set()
    for handout in sorted(HANDOUTS.glob("*.md")):
        text = re.sub(r"\n> ?", " ", handout.read_text())
        for match in re.finditer(r"`(rabbitmqctl [^`]+)`|^(rabbitmqctl [^#\n]+)", text, re.M):
            commands.add((match.group(1) or match.group(2)).strip())
    return [shlex.split(command) for command in sorted(commands)]


@pytest.mark.parametrize("command", handout_rabbitmqctl_commands(), ids=" ".join)
def test_every_rabbitmqctl_command_in_a_handout_runs_on_this_broker_version(broker, space, command):
    if not broker.controllable:
        pytest.skip("needs rabbitmqctl for this broker")
    space.send("--queue", "observed", "x")
    output = broker.ctl(*[space.vhost if arg == "alice" else arg for arg in command[1:]])
    if "list_queues" in command:
        assert "observed" in output
