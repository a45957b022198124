"""The lab runner proves every claim of every handout, the handouts' commands really run, and the runner says in one
line, with its own exit code, when the broker it was given cannot be used."""
from __future__ import annotations

import dataclasses
import inspect
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path
from typing import Optional

import pika
import port_for
import pytest

from labs.brokers import local_node as local_node_module
from labs.brokers.broker import Broker, local_broker
from labs.scenarios.demo import demo
from labs.scenarios.registry import LABS, Lab
from labs.scenarios.runner import run_lab
from labs.drive.event_log import read_events
from labs.exit_codes import (EXIT_MANAGEMENT_REFUSED, EXIT_MANAGEMENT_UNREACHABLE, EXIT_NO_BROKER, EXIT_OK,
                             EXIT_USAGE)
from labs.brokers.management import ManagementAPI
from labs.drive.processes import Run, wait_for_consumers
from labs.brokers.rabbitmqctl import RabbitmqctlFailed, read_rabbit_env, restore_rabbit_env
from labs.paths import HANDOUTS, SNIPPETS
from labs.scenarios.runner import report
from labs.settings import child_environment
from tests.helpers import IN_THE_310_SUITE, ROOT, assert_one_line_error, require, wait_until



def labs_command(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labs", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def given_broker_env(broker: Broker, **extra: str) -> dict:
    """The suite's broker handed over as a classroom broker would be: AMQP_URL, management URL, rabbitmqctl."""
    env = child_environment(AMQP_URL=broker.url(), RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    if broker.control is not None:
        env["LABKIT_RABBITMQCTL"] = broker.control.command_line()
    env.update(extra)
    return env


def claims(stdout: str) -> list[str]:
    return re.findall(r"^  (PASS|FAIL|SKIP): ", stdout, re.M)


SETTINGS_A_LAB_GIVES_BACK = ("channel_tick_interval", "consumer_timeout")  # those lab 4 shortens on 3.x


ONE_BROKER_LABS = [lab for lab in LABS if not lab.on_cluster]  # a cluster lab: tests/test_cluster.py
# Labs that wait on the broker's clocks (lab 4 the consumer timeout, lab 8 two heartbeat timeouts): about 16 s each,
# handed out among the first tests (tests/conftest.py) so none of them starts last and runs on alone.
LONG_LABS = {4: 16, 8: 16}


def lab_param(lab: Lab, default_queue_type: Optional[str], id: str):
    long = [pytest.mark.slow(seconds=LONG_LABS[lab.number])] if lab.number in LONG_LABS else []
    return pytest.param(lab, default_queue_type, id=id, marks=long)


@pytest.mark.restart
@pytest.mark.parametrize("lab, default_queue_type",
                         [lab_param(lab, None, str(lab.number)) for lab in ONE_BROKER_LABS]
                         + [lab_param(lab, "quorum", f"{lab.number}-quorum-vhost") for lab in ONE_BROKER_LABS])
def test_lab_claims(broker, lab, default_queue_type, tmp_path):
    """Every claim of the lab passes, none skipped, on a broker given as AMQP_URL + management URL + rabbitmqctl,
    also on a vhost whose default queue type is quorum (as `labs provision --default-queue-type quorum` makes);
    a lab that changes the broker's settings gives it back exactly what it had; and the run leaves nothing in the
    temporary folder (event logs, the Jobs API's output): a class runs the labs again and again."""
    require(broker.controllable, "the labs restart the broker: give LABKIT_RABBITMQCTL with AMQP_URL")
    typed = ("--default-queue-type", default_queue_type) if default_queue_type else ()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = given_broker_env(broker, TMPDIR=str(scratch))
    if lab.sets_broker_settings:
        # An odd value, not the default, so that putting back a fixed default is caught. Read, set, read again and
        # put back in two rabbitmqctl calls: each boots an Erlang VM, about a second of each lab's test.
        original = read_rabbit_env(broker.ctl, SETTINGS_A_LAB_GIVES_BACK,
                                   then="application:set_env(rabbit, channel_tick_interval, 59000)")
        try:
            result = labs_command("run", str(lab.number), *typed, env=env)
        finally:
            after = read_rabbit_env(broker.ctl, SETTINGS_A_LAB_GIVES_BACK, then=restore_rabbit_env(original))
        assert after == {"channel_tick_interval": "{ok,59000}", "consumer_timeout": original["consumer_timeout"]}
    else:
        result = labs_command("run", str(lab.number), *typed, env=env)
    print(result.stdout)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    found = claims(result.stdout)
    assert len(found) >= 2 and set(found) == {"PASS"}, result.stdout
    assert f"Lab {lab.number}: {lab.title}" in result.stdout
    assert not list(scratch.iterdir()), "left behind in the temporary folder"
    if default_queue_type:
        assert f"PASS: the lab's vhost has default queue type {default_queue_type}" in result.stdout
    if lab.number == 2:
        assert re.search(r"w1 +processed +3 +busy", result.stdout)  # per-worker counts in the report
    if lab.number == 4:
        assert "makespan" in result.stdout and re.search(r"redelivered [1-9]", result.stdout)
    if lab.number == 8:  # the detail is what was measured, not a fixed sentence
        assert "processed ['slow work'], redelivered 1 time(s)" in result.stdout


def test_read_rabbit_env_gives_the_settings_back_when_its_call_goes_wrong(restartable):
    """read_rabbit_env changes settings in the call that reads them (`then`): when that call's printout does not parse
    (here a setting whose value is a list of tuples, which the parser does not take), or the call fails after `then`
    changed a setting, it raises without the values the caller would restore; so it gives them back itself."""
    read = ("channel_tick_interval",)
    before = read_rabbit_env(restartable.ctl, read)
    change = "application:set_env(rabbit, channel_tick_interval, 59000)"
    try:
        with pytest.raises(RabbitmqctlFailed, match="not one setting per key.*given back what they had"):
            read_rabbit_env(restartable.ctl, (*read, "tcp_listen_options"), then=change)
        assert read_rabbit_env(restartable.ctl, read) == before
        with pytest.raises(RabbitmqctlFailed, match="given back what they had"):
            read_rabbit_env(restartable.ctl, read, then=change + ", erlang:error(a_later_step_fails)")
        assert read_rabbit_env(restartable.ctl, read) == before
    finally:  # never leave the suite's broker with the changed setting, whatever failed above
        restartable.ctl("eval", restore_rabbit_env(before) + ".")


def scenario_code_of(function) -> str:
    """A scenario's source with that of every function of labs/scenarios/ it calls, however deep (its own module's,
    the shared helpers')."""
    seen, sources, todo = set(), [], [function]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        sources.append(inspect.getsource(current))
        todo += [value for name in current.__code__.co_names
                 if inspect.isfunction(value := current.__globals__.get(name))
                 and value.__module__.startswith("labs.scenarios.")]
    return "\n".join(sources)


def test_a_lab_that_changes_the_brokers_settings_says_so():
    """test_lab_claims checks that such a lab gives the settings back; only the labs marked are checked."""
    for lab in LABS:
        assert ("set_env" in scenario_code_of(lab.scenario)) == lab.sets_broker_settings, lab.number


@IN_THE_310_SUITE
def test_a_lab_runs_on_the_embedded_broker_when_no_amqp_url_is_given():
    result = labs_command("run", "3", env=child_environment(), timeout=300)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert "PASS: auto-ack with --lose-every 3 loses 4 of 12" in result.stdout


def test_a_lab_runs_for_a_non_guest_administrator(broker, administrator):
    """AMQP_URL's own user is used throughout, never guest:guest."""
    username, password = administrator
    env = child_environment(AMQP_URL=broker.url("/", username, password),
                            RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    result = labs_command("run", "1", env=env, timeout=300)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert set(claims(result.stdout)) == {"PASS"}, result.stdout


def test_no_broker_is_its_own_exit_code_in_one_line(tmp_path):
    env = child_environment(RABBITMQ_BIN=str(tmp_path / "nowhere"))
    result = labs_command("run", "1", env=env, timeout=60)
    assert_one_line_error(result, EXIT_NO_BROKER, "rabbitmq-server is not installed", "AMQP_URL")


def test_an_unreachable_management_api_is_its_own_exit_code_in_one_line(broker):
    nowhere = f"http://127.0.0.1:{port_for.select_random()}"
    result = labs_command("run", "1", env=given_broker_env(broker, RABBITMQ_MANAGEMENT_URL=nowhere), timeout=120)
    assert_one_line_error(result, EXIT_MANAGEMENT_UNREACHABLE, nowhere, "RABBITMQ_MANAGEMENT_URL",
                          "management plugin")
    assert "PASS" not in result.stdout and "FAIL" not in result.stdout


def test_a_user_the_management_api_refuses_is_its_own_exit_code_in_one_line(broker, space):
    """A user without the management tag: 401 on the first call."""
    result = labs_command("run", "1", env=given_broker_env(broker, AMQP_URL=space.url), timeout=120)
    assert_one_line_error(result, EXIT_MANAGEMENT_REFUSED, f"refuses user {space.username!r}", "administrator")


def test_a_lab_never_falls_back_to_the_given_vhost_when_it_may_not_create_one(broker, space):
    """A user with the management tag but not administrator may read the API but not create vhosts."""
    broker.admin.add_user(space.username, space.password, tags="management")
    result = labs_command("run", "1", env=given_broker_env(broker, AMQP_URL=space.url), timeout=120)
    assert_one_line_error(result, EXIT_MANAGEMENT_REFUSED, "would not create vhost", "administrator")
    assert "PASS" not in result.stdout


REPORT_COUNTS = re.compile(r"sent (?P<sent>\d+), processed (?P<processed>\d+), lost by workers (?P<lost>\d+), "
                           r"requeued (?P<requeued>\d+), failed (?P<failed>\d+), "
                           r"dead-lettered (?P<dead_lettered>\d+), redelivered (?P<redelivered>\d+), "
                           r"never processed (?P<never_processed>\d+), makespan")


def test_lab_3s_report_counts_what_its_event_log_shows(broker):
    """The report's counts are what a class reads off the screen, and no claim checks them: each one must be what
    the run's own event log shows. run_lab and report are what `python -m labs run 3` runs and prints; in-process,
    the run's event records stay readable after the run (its folder is removed)."""
    lab = next(lab for lab in LABS if lab.number == 3)
    context = run_lab(lab, broker)
    printed = report(lab, context)
    assert set(claims(printed)) == {"PASS"}, printed
    run, = context.runs
    events = run.log.read()
    kinds = [e["event"] for e in events]
    done = {e["body"] for e in events if e["event"] == "done"}
    logged = {"sent": len(run.sent), "processed": len(done), "lost": kinds.count("lost"),
              "requeued": kinds.count("requeued"), "failed": kinds.count("failed"),
              "dead_lettered": kinds.count("dead-lettered"),
              "redelivered": sum(1 for e in events if e["event"] == "received" and e["redelivered"]),
              "never_processed": sum(1 for body in run.sent if body not in done)}
    found = REPORT_COUNTS.search(printed)
    assert found, printed
    assert {key: int(value) for key, value in found.groupdict().items()} == logged, printed
    # What the handout teaches, in the log itself: 12 sent, every third lost for good, the rest processed once.
    assert (logged["sent"], logged["processed"], logged["lost"], logged["never_processed"]) == (12, 8, 4, 4)
    for worker in {e["worker"] for e in events}:
        per_worker = re.search(rf"^ +{re.escape(worker)} +processed +(\d+) ", printed, re.M)
        assert per_worker and int(per_worker.group(1)) == sum(
            1 for e in events if e["event"] == "done" and e["worker"] == worker), printed


def test_unknown_lab_is_a_usage_error():
    result = labs_command("run", "99", env=child_environment(), timeout=60)
    assert result.returncode == EXIT_USAGE and "give a lab number (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)" in result.stderr


def test_list_names_every_handout_and_each_exists():
    result = labs_command("list", env=child_environment(), timeout=60)
    for lab in LABS:
        assert lab.handout.exists(), lab.handout
        assert lab.handout.name in result.stdout


def test_waiting_for_consumers_raises_a_refusal_at_once(broker, space):
    """Only 404 means the queue is not declared yet; anything else (here 405: another connection's exclusive queue)
    is raised at once, not waited out."""
    space.channel().queue_declare("guarded", exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        wait_for_consumers(space.url, "guarded", 1, timeout=20)
    assert refused.value.reply_code == 405


def test_the_demos_cleanup_cannot_replace_its_outcome(broker, space, monkeypatch, capsys):
    def refuse(*args):
        raise OSError("injected: the management API went away")

    monkeypatch.setattr(ManagementAPI, "delete_queue", refuse)
    mine = dataclasses.replace(broker, vhost=space.vhost, username=space.username, password=space.password)
    assert demo(mine) is True
    captured = capsys.readouterr()
    assert "PASS: with --acknowledge, 0 of 12 messages lost" in captured.out
    assert "could not remove the demo's queue" in captured.err and "injected" in captured.err


def test_every_run_is_stopped_and_the_vhost_removed_even_when_one_stop_fails(broker):
    """One run's stop() raising must not leave the next run's worker running nor the lab's vhost behind; the failure
    is reported as a failed claim, after the rest is cleaned up."""
    workers: list[subprocess.Popen] = []

    def scenario(lab) -> None:
        first, second = lab.run("first"), lab.run("second")
        for run in (first, second):
            workers.append(run.worker("w1", "--acknowledge"))  # no idle exit: it runs until it is stopped
            run.wait_for_consumers(1)
        stop = first.stop

        def failing_stop() -> None:
            stop()
            raise RuntimeError("injected: the first run's stop failed")

        first.stop = failing_stop

    try:
        context = run_lab(Lab(99, "stop-check", "Stop every run", scenario), broker)
        assert [process.poll() is not None for process in workers] == [True, True], "a worker was left running"
        failed = [claim for claim in context.claims if claim.ok is False]
        assert [claim.text for claim in failed] == ["lab 99 stopped every process it started"], context.claims
        assert "injected: the first run's stop failed" in failed[0].detail
        with pytest.raises(urllib.error.HTTPError) as gone:
            broker.admin.request("GET", f"/vhosts/{broker.admin.quote(context.vhost)}")
        assert gone.value.code == 404, "the lab's vhost was left behind"
    finally:
        for process in workers:
            process.kill()
            process.wait()


def test_a_supervised_worker_is_not_restarted_once_its_run_is_stopped(broker, space):
    """The demo's w3 (and lab 4's) runs under a supervisor that restarts it after each crash. When the demo gives up
    waiting and cleans up, the clean-up's kill looks like a crash: nothing may start again after it."""
    run = Run(space.url, "supervised", echo=False)
    supervisor = threading.Thread(target=run.supervise, args=("w3", "--acknowledge"), daemon=True)
    try:
        supervisor.start()
        run.wait_for_consumers(1)
        run.stop()  # the demo's clean_up, as after its join of the supervisor timed out
        supervisor.join(30)
        assert not supervisor.is_alive() and len(run.processes) == 1, f"started again: {run.processes}"
        assert space.consumers("supervised") == 0
    finally:
        for process in run.processes:
            process.kill()
            process.wait()


@IN_THE_310_SUITE
def test_a_local_node_that_fails_to_start_is_stopped_and_its_error_raised(tmp_path, monkeypatch):
    started: list = []

    def never_ready(node, timeout: float = 0) -> None:
        started.append(node)
        wait_until(lambda: node.running(), 60, "the node's process")
        raise RuntimeError("injected: the node never got ready")

    monkeypatch.setattr(local_node_module.LocalNode, "wait_until_ready", never_ready)
    try:
        with pytest.raises(RuntimeError, match="injected: the node never got ready"):
            with local_broker(tmp_path / "node"):
                pass
        assert started and not started[0].running(), "the node that failed to start was left running"
    finally:
        for node in started:
            node.stop()


def test_a_local_node_that_fails_to_stop_says_so(tmp_path, monkeypatch):
    def fail(node) -> None:
        raise RuntimeError("injected: stop failed")

    monkeypatch.setattr(local_node_module.LocalNode, "start", lambda node: node)
    monkeypatch.setattr(local_node_module.LocalNode, "stop", fail)
    with pytest.raises(RuntimeError, match="injected: stop failed"):
        with local_broker(tmp_path / "node"):
            pass


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
}
# Where the exit code depends on the broker: the suite's 3.10 permits transient queues, its 4.3 refuses them.
EXIT_BY_VERSION = {
    ("06-durability.md", "./sender.py --queue forgotten --transient --count 5"): {(3, 10): 0, (4, 3): 12},
}
CRASHED = -9  # --lose-mode crash: the worker SIGKILLs itself, as a real crash would (a shell shows 137)
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


# Handouts whose commands are not the two scripts (python, curl), and the test module that runs them as shown.
PROVEN_ELSEWHERE = {"10-jobs-api": "test_jobs_api.py"}
SCRIPT_HANDOUTS = [path for path in sorted(HANDOUTS.glob("*.md")) if path.stem not in PROVEN_ELSEWHERE]


def test_a_handout_without_script_commands_is_run_by_its_own_tests():
    without = {path.stem for path in HANDOUTS.glob("*.md") if not handout_commands(path)}
    assert without == set(PROVEN_ELSEWHERE)
    for module in PROVEN_ELSEWHERE.values():
        assert "HANDOUT" in (Path(__file__).parent / module).read_text()


@pytest.mark.parametrize("handout", SCRIPT_HANDOUTS, ids=lambda path: path.stem)
def test_every_script_command_in_a_handout_runs_as_shown(broker, space, handout, rabbitmq_version):
    """Each command runs for real, in order, connected through lab 0's RABBITMQ_* variables, and ends with the exit
    code the handout implies: workers in the background (as in their own shell), `while true` loops restarted after
    each crash, senders in the foreground."""
    env = child_environment(RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(broker.port), RABBITMQ_VHOST=space.vhost,
                            RABBITMQ_USERNAME=space.username, RABBITMQ_PASSWORD=space.password, PYTHONUNBUFFERED="1")
    commands = handout_commands(handout)
    assert commands, f"{handout.name} shows no command"
    background: list[tuple[HandoutCommand, threading.Thread, list[int]]] = []
    running: dict[str, subprocess.Popen] = {}  # each background command's process of the moment

    def start(command: HandoutCommand) -> subprocess.Popen:
        events = space.folder / f"events-{len(space.processes)}.jsonl"  # where the test sees it work, not the student
        process = subprocess.Popen([sys.executable, str(ROOT / command.script), *for_space(command.args, space)[1:],
                                    "--events", str(events)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL)
        process.events = events
        space.processes.append(process)
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
    finish_drained_workers(space, [command for command, thread, _ in background
                                   if thread.is_alive() and expected_exit(command) == 0], running)
    for command, thread, codes in background:
        thread.join(200)
        expected = expected_exit(command)
        if command.loop:  # restarted after each crash until, its work done, it ends on its own
            assert codes and set(codes[:-1]) == {CRASHED} and codes[-1] == expected, f"{command.text}: {codes}"
        else:
            assert codes == [expected], f"{handout.name}: {command.text}: exit codes {codes}"


def finish_drained_workers(space, commands: list[HandoutCommand], running: dict[str, subprocess.Popen]) -> None:
    """Every command has run: once these workers' queues hold nothing ready and no worker is in the middle of a
    message (its event log does not end with "received"), twice 0.3 s apart, stop them as a student would, with
    Ctrl-C, which they take as a clean stop (exit code 0), instead of waiting out their idle exit."""
    queues = {queue_of(command.args) for command in commands}

    def idle() -> bool:
        if any(space.ready_or_zero(queue) for queue in queues):
            return False
        for command in commands:
            events = read_events(running[command.text].events)  # skips a line still being written
            if events and events[-1]["event"] == "received":
                return False
        return True

    def any_running() -> bool:
        return any(running[command.text].poll() is None for command in commands)

    streak = 0
    while commands and streak < 2 and any_running():
        streak = streak + 1 if idle() else 0
        time.sleep(0.3)
    if streak == 2:
        for command in commands:
            if running[command.text].poll() is None:
                running[command.text].send_signal(signal.SIGINT)  # Ctrl-C: each has attached, its handler is set


def test_tmux_mode_puts_each_worker_and_the_sender_in_a_pane(broker, tmp_path):
    """Lab 2 in tmux, on a private tmux server; read back each pane's screen as a person watching would see it."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is missing: ./kit test installs it")
    env = given_broker_env(broker, TMUX_TMPDIR=str(tmp_path))
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


# Commands a handout gives for one RabbitMQ version on: (the version, what an older broker answers).
SINCE = {"consumer-timeout": ((4, 3), "not recognised policy settings")}


@pytest.mark.parametrize("command", handout_rabbitmqctl_commands(), ids=" ".join)
def test_every_rabbitmqctl_command_in_a_handout_runs_on_this_broker_version(broker, space, command, rabbitmq_version):
    require(broker.controllable, "needs rabbitmqctl for this broker")
    space.send("--queue", "observed", "x")
    args = [space.vhost if arg == "alice" else arg for arg in command[1:]]
    since = next((value for key, value in SINCE.items() if key in " ".join(command)), None)
    if since and rabbitmq_version < since[0]:  # the handout says it is for newer brokers: this one refuses it
        with pytest.raises(RabbitmqctlFailed, match=since[1]):
            broker.ctl(*args)
        return
    output = broker.ctl(*args)
    if "list_queues" in command:
        assert "observed" in output
