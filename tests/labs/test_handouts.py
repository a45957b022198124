"""The handouts' commands really run as shown: the pika snippets are the files the labs run, each script command
ends as the handout says, tmux panes, and the rabbitmqctl commands on this broker version."""
from __future__ import annotations

import dataclasses
import json
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from labs.amqp.connection import Event
from labs.brokers.rabbitmqctl import RabbitmqctlFailed, memory_watermark
from labs.brokers.redis_server import redis_installed, running_redis
from labs.classroom.provision import ClassLimits, cap_queues
from labs.drive.event_log import read_events
from labs.paths import HANDOUTS, JOBS, SNIPPETS
from labs.scenarios.setup import LAB0_SETTINGS, typed_settings
from labs.settings import child_environment
from tests.classroom.accounts import passwords, provision
from tests.helpers import ROOT, require, wait_until

# --- the pika code a handout shows is the file its lab runs ---

def snippet_cells(path: Path) -> list[str]:
    """The cells of a snippet file: what follows each `# %%` line (the header above the first is not shown)."""
    return [cell.strip() for cell in re.split(r"^# %%$", path.read_text(), flags=re.M)[1:]]


def python_blocks(handout: Path) -> list[str]:
    """The ```python blocks of a handout, as shown."""
    return [block.strip() for block in re.findall(r"^```python\n(.*?)^```$", handout.read_text(), re.M | re.S)]


def test_every_snippet_a_lab_runs_is_shown_in_its_handout_word_for_word():
    """Each cell of labs/handouts/snippets/NN_*.py is a python block of a handout as is, its last (the lab's own
    work) in handout NN; and every python block of a handout whose lab runs snippets is such a cell. What a student
    types is what `python -m labs run` proves."""
    snippets = sorted(SNIPPETS.glob("*.py"))
    assert snippets, f"no snippets in {SNIPPETS}"
    shown = {block for handout in HANDOUTS.glob("*.md") for block in python_blocks(handout)}
    cells = set()
    for snippet in snippets:
        own = next(HANDOUTS.glob(f"{snippet.name[:2]}-*.md"))
        found = snippet_cells(snippet)
        assert found, f"{snippet.name} has no '# %%' cell"
        for cell in found:
            assert cell in shown, f"{snippet.name}: no handout shows this cell as is:\n{cell}"
        assert found[-1] in python_blocks(own), f"{own.name} does not show {snippet.name}'s last cell as is"
        cells.update(found)
    for handout in {next(HANDOUTS.glob(f"{snippet.name[:2]}-*.md")) for snippet in snippets}:
        for block in python_blocks(handout):
            assert block in cells, f"{handout.name} shows a python block no snippet runs:\n{block}"


# --- every command a handout shows, run for real in the test's own vhost ---

# The exit code a handout gives for a command (its "(exit code N)" or "fails the same way"); all others exit 0.
EXPECTED_EXIT = {
    ("06-durability.md", "./sender.py --queue kept --queue-type classic --transient --count 1"): 6,
    ("07-purge-and-delete.md", "./sender.py --queue scratch --delete-queue"): 8,
    ("07-purge-and-delete.md", "./qprocessor.py --queue scratch"): 6,  # its queue is deleted under it
    # A burst of 20 into a queue capped at 5 before any worker: 15 refused (nacked)
    ("12-queue-full.md", "./sender.py --queue uploads --queue-type classic --max-length 5 --overflow reject-publish "
                         "--count 20"): 7,
    ("12-queue-full.md", "./sender.py --queue uploads-kept --queue-type classic --max-length 5 --overflow "
                         "reject-publish-dlx --dead-letter-queue uploads-refused --count 20"): 7,
    # 70 MB at the class's 64 MiB cap: 29 refused
    ("12-queue-full.md", "./sender.py --queue photos --queue-type classic --count 700 --length 100000 --quiet"): 7,
}
# Handouts shown on a class's broker: the test's vhost gets the class's cap, as `class provision` sets it.
CAPPED = {"12-queue-full.md"}
# Where the exit code depends on the broker: the suite's 3.10 permits transient queues, its 4.3 refuses them.
EXIT_BY_VERSION = {
    ("06-durability.md", "./sender.py --queue forgotten --transient --count 5"): {(3, 10): 0, (4, 3): 12},
}
CRASHED = -9  # --lose-mode crash: the worker SIGKILLs itself, as a real crash would (a shell shows 137)
INTERRUPTED = -signal.SIGINT  # Ctrl-C: the worker stops cleanly, then ends by SIGINT (a shell shows 130)
QUICK = ("--seconds-per-char", "0.002")  # the handouts' pace is for watching; lab 11's 300 jobs took 12 s at 0.01
ENDS = ("--idle-exit", "30")  # a backstop: the test stops drained workers with Ctrl-C (finish_drained_workers)
# Short, a worker that finished its part early idled out just as the test sent it Ctrl-C, and the signal arrived
# while Python was exiting, which had given SIGINT back its default action (exit code -2).
CONNECTION_FLAGS = {"--host", "--port", "--vhost", "--username", "--password"}


@dataclasses.dataclass
class HandoutCommand:
    text: str  # as the handout shows it
    args: list[str]
    loop: bool = False  # inside `while true; do ...; done`

    @property
    def script(self) -> str:
        return self.args[0].removeprefix("./")

    @property
    def observes(self) -> bool:
        """An "observe it" step: what a student runs to look at their queues, with their own account."""
        return "--list-queues" in self.args


def handout_commands(handout: Path) -> list[HandoutCommand]:
    """The ./sender.py and ./qprocessor.py commands of a handout, in order: shell blocks and inline `code`."""
    found = []
    in_shell = False
    for line in handout.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            in_shell = line.strip() == "```sh"
            continue
        if in_shell:
            code = line.split("#", 1)[0].strip()
            loop = re.fullmatch(r"while true; do (.+); done", code)
            code = loop.group(1) if loop else code
            if re.match(r"\./(sender|qprocessor)\.py\b", code):
                found.append(HandoutCommand(code, shlex.split(code), loop=bool(loop)))
        else:
            for inline in re.findall(r"`(\./(?:sender|qprocessor)\.py [^`]+)`", line):
                found.append(HandoutCommand(inline, shlex.split(inline)))
    return found


def test_every_exit_code_a_handout_states_is_expected_of_a_command():
    for handout in sorted(HANDOUTS.glob("*.md")):
        stated = re.findall(r"\(exit code (\d+)\)", handout.read_text())
        expected = [code for (name, _), code in EXPECTED_EXIT.items() if name == handout.name]
        expected += [code for (name, _), codes in EXIT_BY_VERSION.items() if name == handout.name
                     for code in codes.values()]
        for code in stated:
            assert int(code) in expected, f"{handout.name} states exit code {code}: add its command to EXPECTED_EXIT"
        for (name, text) in [*EXPECTED_EXIT, *EXIT_BY_VERSION]:
            if name == handout.name:
                assert text in [c.text for c in handout_commands(handout)], f"{name} no longer shows {text!r}"


def for_space(args: list[str], space) -> list[str]:
    """The handout's own connection flags (e.g. --vhost alice) pointed at the test's space; shorter work."""
    mapped = {"--host": "127.0.0.1", "--port": str(space.broker.port), "--vhost": space.vhost,
              "--username": space.username, "--password": space.password}
    out: list[str] = []
    skip_next = False
    for index, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        if arg in CONNECTION_FLAGS:
            out += [arg, mapped[arg]]
            skip_next = True
        elif arg == "--seconds-per-char":
            skip_next = True  # replaced by QUICK below
        else:
            out.append(arg)
    if args[0].endswith("qprocessor.py"):
        out += [*QUICK, *ENDS]
    return out


def queue_of(args: list[str]) -> str:
    return args[args.index("--queue") + 1] if "--queue" in args else "hello"


# Handouts whose commands are not the two scripts (python, curl), and the test module that runs them as shown; their
# observation steps (./sender.py --list-queues) are run by test_every_observation_step_runs_as_a_provisioned_student.
PROVEN_ELSEWHERE = {"10-jobs-api": "jobs/test_jobs_api.py"}
SCRIPT_HANDOUTS = [path for path in sorted(HANDOUTS.glob("*.md")) if path.stem not in PROVEN_ELSEWHERE]


def test_a_handout_without_script_commands_is_run_by_its_own_tests():
    without = {path.stem for path in HANDOUTS.glob("*.md")
               if all(command.observes for command in handout_commands(path))}
    assert without == set(PROVEN_ELSEWHERE)
    for module in PROVEN_ELSEWHERE.values():
        assert "HANDOUT" in (Path(__file__).resolve().parents[1] / module).read_text()


@pytest.mark.parametrize("handout", SCRIPT_HANDOUTS, ids=lambda path: path.stem)
def test_every_script_command_in_a_handout_runs_as_shown(broker, space, handout, rabbitmq_version):
    """Each command runs for real, in order, connected through lab 0's RABBITMQ_* variables, and ends with the exit
    code the handout implies: workers in the background (as in their own shell), `while true` loops restarted after
    each crash, senders in the foreground."""
    # The space's user gets what provisioning gives every student, the management tag, so that the observation steps
    # (--list-queues) read the management API with the student's own account, as on the class server.
    broker.admin.add_user(space.username, space.password, tags="management")
    env = child_environment(RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(broker.port), RABBITMQ_VHOST=space.vhost,
                            RABBITMQ_USERNAME=space.username, RABBITMQ_PASSWORD=space.password,
                            RABBITMQ_MANAGEMENT_URL=broker.admin.base_url, PYTHONUNBUFFERED="1")
    commands = handout_commands(handout)
    assert commands, f"{handout.name} shows no command"
    if handout.name in CAPPED:
        cap_queues(broker.admin, space.vhost, ClassLimits(), operator_overflow=rabbitmq_version[0] >= 4)
    background: list[tuple[HandoutCommand, threading.Thread, list[int]]] = []
    running: dict[str, subprocess.Popen] = {}  # each background command's process of the moment

    def start(command: HandoutCommand) -> subprocess.Popen:
        events = space.folder / f"events-{len(space.children.processes)}.jsonl"  # where the test sees it work, not the student
        process = subprocess.Popen([sys.executable, str(ROOT / command.script), *for_space(command.args, space)[1:],
                                    "--events", str(events)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL)
        process.events = events
        space.children.adopt(process)
        return process

    def attached_or_ended(process: subprocess.Popen, queue: str, count: int) -> bool:
        return process.poll() is not None or space.consumers(queue) >= count

    def expected_exit(command: HandoutCommand) -> int:
        by_version = EXIT_BY_VERSION.get((handout.name, command.text))
        return by_version[rabbitmq_version] if by_version else EXPECTED_EXIT.get((handout.name, command.text), 0)

    for command in commands:
        expected = expected_exit(command)
        if command.script == "sender.py":
            result = subprocess.run([sys.executable, str(ROOT / command.script), *for_space(command.args, space)[1:]],
                                    env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert result.returncode == expected, f"{handout.name}: {command.text}: {result.stderr}"
            continue
        codes: list[int] = []
        first = start(command)
        queue = queue_of(command.args)
        live = sum(1 for c, thread, _ in background if thread.is_alive() and queue_of(c.args) == queue) + 1

        def keep_running(process: Optional[subprocess.Popen] = first, command: HandoutCommand = command,
                         codes: list[int] = codes) -> None:
            while True:
                process = process or start(command)
                running[command.text] = process
                codes.append(process.wait(180))
                if not (command.loop and codes[-1] == CRASHED and len(codes) < 30):
                    return
                process = None

        thread = threading.Thread(target=keep_running, daemon=True)
        thread.start()
        background.append((command, thread, codes))
        if "--help" not in command.args:
            wait_until(lambda: attached_or_ended(first, queue, live), 30, f"{command.text} to start consuming")
    interrupted = finish_drained_workers(space, [command for command, thread, _ in background
                                                 if thread.is_alive() and expected_exit(command) == 0], running)
    for command, thread, codes in background:
        thread.join(200)
        expected = INTERRUPTED if command.text in interrupted else expected_exit(command)
        if command.loop:  # restarted after each crash until, its work done, it ends on its own
            assert codes and set(codes[:-1]) == {CRASHED} and codes[-1] == expected, f"{command.text}: {codes}"
        else:
            assert codes == [expected], f"{handout.name}: {command.text}: exit codes {codes}"


def finish_drained_workers(space, commands: list[HandoutCommand], running: dict[str, subprocess.Popen]) -> set[str]:
    """Every command has run: once these workers' queues hold nothing ready and no worker is in the middle of a
    message (its event log does not end with "received"), twice 0.3 s apart, stop them as a student would, with
    Ctrl-C, which they take as a clean stop before ending by SIGINT, instead of waiting out their idle exit. Returns
    the commands it interrupted."""
    queues = {queue_of(command.args) for command in commands}

    def idle() -> bool:
        if any(space.ready_or_zero(queue) for queue in queues):
            return False
        for command in commands:
            events = read_events(running[command.text].events)  # skips a line still being written
            if events and events[-1]["event"] == Event.RECEIVED:
                return False
        return True

    def any_running() -> bool:
        return any(running[command.text].poll() is None for command in commands)

    streak = 0
    while commands and streak < 2 and any_running():
        streak = streak + 1 if idle() else 0
        time.sleep(0.3)
    interrupted = set()
    if streak == 2:
        for command in commands:
            if running[command.text].poll() is None:
                running[command.text].send_signal(signal.SIGINT)  # Ctrl-C: each has attached, its handler is set
                interrupted.add(command.text)
    return interrupted


def test_lab_0s_settings_typed_into_bash_give_every_later_lab_what_it_reads(broker, tmp_path):
    """Handout 0's block, typed into bash as shown (the password read from the keyboard) with a provisioned
    student's values, sets all a later lab reads: the scripts connect with RABBITMQ_* alone, --list-queues finds the
    management API, rabbitqueue.py finds the same account in AMQP_URL alone, and lab 10's Jobs API runs on the
    class's Redis with the student's own account (REDIS_URL) on their own port (PORT), where curl finds it."""
    require(broker.local is not None, "provisions a student through the suite's own broker's management API")
    require(redis_installed(), "lab 10's job store is a redis-server: apt-get install redis-server (./kit test does)")
    name = f"settings-{secrets.token_hex(3)}"
    roster = tmp_path / "roster.txt"
    roster.write_text(name + "\n")
    with running_redis(tmp_path / "redis") as class_redis:
        provision(broker, roster, "--redis", class_redis.url)
        try:
            set_there = typed_settings("127.0.0.1", broker.port, broker.admin.base_url, name, passwords(roster)[name],
                                       redis_address=f"127.0.0.1:{class_redis.port}")
            assert set(set_there) == {"RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_VHOST", "RABBITMQ_USERNAME",
                                      "RABBITMQ_PASSWORD", "RABBITMQ_MANAGEMENT_URL", "AMQP_URL", "REDIS_URL", "PORT"}
            base = {key: value for key, value in child_environment().items() if not key.startswith(LAB0_SETTINGS)}
            scripts = {**base, **{key: value for key, value in set_there.items() if key.startswith("RABBITMQ_")}}
            sent = subprocess.run([sys.executable, str(ROOT / "sender.py"), "--queue", "settled", "--count", "2"],
                                  env=scripts, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert sent.returncode == 0, sent.stderr
            listed = subprocess.run([sys.executable, str(ROOT / "sender.py"), "--list-queues"], env=scripts,
                                    capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert listed.returncode == 0 and re.search(r"^settled .* 2 ", listed.stdout, re.M), \
                listed.stdout + listed.stderr
            url_only = {**base, "AMQP_URL": set_there["AMQP_URL"]}
            counted = subprocess.run([sys.executable, str(ROOT / "rabbitqueue.py"), "settled"], env=url_only,
                                     capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert counted.stdout.strip() == "2", counted.stderr
            lab10 = {**base, **{key: set_there[key] for key in ("AMQP_URL", "REDIS_URL", "PORT")}}
            jid = posted_to_the_jobs_api(lab10, tmp_path)
            assert class_redis.client().hget(f"{name}:job.{jid}", "status") == "submitted"
        finally:
            broker.admin.delete_vhost(name)
            broker.admin.delete_user(name)


def posted_to_the_jobs_api(env: dict, folder: Path) -> str:
    """Lab 10's API started with `env` alone, a job posted with the handout's curl line to localhost:$PORT; its id."""
    log = folder / "api.log"
    with log.open("w") as output:
        api = subprocess.Popen([sys.executable, str(JOBS / "api.py")], env=env, stdout=output,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def posted() -> Optional[dict]:
            assert api.poll() is None, log.read_text()
            curl = subprocess.run(["bash", "-c", "curl -s -X POST localhost:$PORT/jobs -d '{\"start\": 1, \"end\": 10}'"],
                                  env=env, capture_output=True, text=True, timeout=30)
            return json.loads(curl.stdout) if curl.stdout else None

        job = wait_until(posted, 20, "the Jobs API to answer curl on $PORT")
        assert job["status"] == "submitted", job
        said = f"api INFO Serving on http://127.0.0.1:{env['PORT']}"  # as handout 10 shows it
        assert said in log.read_text().splitlines(), log.read_text()
        return job["id"]
    finally:
        api.terminate()
        api.wait(10)


def test_every_observation_step_runs_as_a_provisioned_student(broker, tmp_path):
    """Each "observe it" step of a handout, run as shown with the account provisioning gives a student (the
    management tag, the class's limits, no permission elsewhere) through lab 0's variables, lists the student's queue
    with the figures the broker has: what a student on the class server can run, where rabbitmqctl is not theirs."""
    require(broker.local is not None, "provisions a student through the suite's own broker's management API")
    steps = {(path.stem, command.text): command for path in sorted(HANDOUTS.glob("*.md"))
             for command in handout_commands(path) if command.observes}
    labs_observing = {stem[:2] for stem, _ in steps}
    assert labs_observing >= {"00", "01", "02", "03", "04", "05", "06", "07", "10"}, labs_observing
    name = f"observer-{secrets.token_hex(3)}"
    roster = tmp_path / "roster.txt"
    roster.write_text(name + "\n")
    provision(broker, roster)
    try:
        env = child_environment(RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(broker.port), RABBITMQ_VHOST=name,
                                RABBITMQ_USERNAME=name, RABBITMQ_PASSWORD=passwords(roster)[name],
                                RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)

        def run(args: list[str]) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, str(ROOT / args[0].removeprefix("./")), *args[1:]], env=env,
                                  capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

        assert run(["./sender.py", "--queue", "observed", "--count", "3"]).returncode == 0
        for (stem, text), command in steps.items():
            result = run(command.args)
            assert result.returncode == 0, f"{stem}: {text}: {result.stderr}"
            header, *rows = result.stdout.splitlines()
            assert header.split() == ["queue", "type", "durable", "ready", "unacked", "consumers"], result.stdout
            assert [row.split()[0::3] for row in rows] == [["observed", "3"]], f"{stem}: {text}: {result.stdout}"
    finally:
        broker.admin.delete_vhost(name)
        broker.admin.delete_user(name)


def test_one_ctrl_c_leaves_the_handouts_supervised_loop(space, tmp_path):
    """Handout 4's `while true; do ./qprocessor.py ...; done`, typed into a real shell in a tmux pane: one Ctrl-C
    stops the worker cleanly (its summary is printed) and the loop with it, and the prompt comes back. A worker that
    exited 0 after its clean stop would be started again by the loop, Ctrl-C after Ctrl-C."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is missing: ./kit test installs it")
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    worker = (f"AMQP_URL={shlex.quote(space.url)} {shlex.quote(sys.executable)} qprocessor.py --queue supervised "
              "--acknowledge --prefetch 1 --seconds-per-char 0")
    subprocess.run([*tmux, "new-session", "-d", "-x", "200", "-y", "50", "-c", str(ROOT), "bash --norc --noprofile"],
                   check=True, env=child_environment(TERM="xterm"))
    try:
        subprocess.run([*tmux, "send-keys", f"while true; do {worker}; done", "Enter"], check=True)
        space.wait_for_consumers("supervised", 1)
        subprocess.run([*tmux, "send-keys", "C-c"], check=True)

        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout

        wait_until(lambda: "summary:" in screen(), 20, "the worker's summary after Ctrl-C")
        # Typed at the prompt, the shell runs it; typed while a worker of the loop runs, it is that worker's input.
        subprocess.run([*tmux, "send-keys", "echo prompt-back-$((6 * 7))", "Enter"], check=True)
        wait_until(lambda: "prompt-back-42" in screen(), 10, "the prompt to come back after one Ctrl-C")
        assert "summary: received 0" in screen()
        time.sleep(1)  # a loop that went on would have started the worker again by now
        assert space.consumers("supervised") == 0 and screen().count("waiting for messages") == 1, screen()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def handout_rabbitmqctl_commands() -> list[list[str]]:
    """The commands the handouts give for observing the broker (quoted pitfalls may wrap across lines)."""
    commands = set()
    for handout in sorted(HANDOUTS.glob("*.md")):
        text = re.sub(r"\n> ?", " ", handout.read_text())
        for match in re.finditer(r"`(rabbitmqctl [^`]+)`|^(rabbitmqctl [^#\n]+)", text, re.M):
            commands.add((match.group(1) or match.group(2)).strip())
    return [shlex.split(command) for command in sorted(commands)]


def test_every_rabbitmqctl_command_in_a_handout_is_marked_as_the_instructors():
    """rabbitmqctl needs the node's Erlang cookie, which only the instructor has: a handout gives it only for the
    instructor to run, and says so next to it; a student's observation step is one they can run themselves."""
    for handout in sorted(HANDOUTS.glob("*.md")):
        text = handout.read_text()
        for line in re.findall(r"^rabbitmqctl .*$", text, re.M):  # a line of a shell block: its comment says so
            assert "# (instructor)" in line, f"{handout.name}: {line!r} is not marked (instructor)"
        prose = re.sub(r"\s*\n(?:> ?)?", " ", text)  # quoted pitfalls may wrap the mark onto the next line
        for found in re.finditer(r"`rabbitmqctl [^`]+`", prose):
            assert "(instructor)" in prose[found.end():found.end() + 20], \
                f"{handout.name}: {found.group(0)} is not marked (instructor)"


# Commands a handout gives for one RabbitMQ version on: (the version, what an older broker answers).
SINCE = {"consumer-timeout": ((4, 3), "not recognised policy settings")}


@pytest.mark.parametrize("command", handout_rabbitmqctl_commands(), ids=" ".join)
def test_every_rabbitmqctl_command_in_a_handout_runs_on_this_broker_version(broker, space, command, rabbitmq_version):
    require(broker.controllable, "needs rabbitmqctl for this broker")
    space.send("--queue", "observed", "x")
    args = [space.vhost if arg == "alice" else arg for arg in command[1:]]
    since = next((value for key, value in SINCE.items() if key in " ".join(command[2:]) and command[1] == "set_policy"),
                 None)
    if since and rabbitmq_version < since[0]:  # the handout says it is for newer brokers: this one refuses it
        with pytest.raises(RabbitmqctlFailed, match=since[1]):
            broker.ctl(*args)
        return
    if "set_vm_memory_high_watermark" in command:  # the instructor's alarm (lab 12): the node gets its own back
        before = memory_watermark(broker.ctl)
        try:
            broker.ctl(*args)
        finally:
            given = float(memory_watermark(broker.ctl, then=before))  # what the command set, and the node's own back
        assert given == float(args[-1]) and memory_watermark(broker.ctl) == before
        return
    if command[1] == "clear_policy":  # the instructor takes back a policy set earlier in the lab: set one to clear
        broker.admin.set_policy(space.vhost, args[-1], "^observed$", {"max-length": 1000})
        broker.ctl(*args)
        assert args[-1] not in {policy["name"] for policy in broker.admin.policies(space.vhost)}
        return
    output = broker.ctl(*args)
    if "list_queues" in command:
        assert "observed" in output
