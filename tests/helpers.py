"""Run sender.py and qprocessor.py as a student does, and read what they and the broker report."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pika
import pytest

from labs.brokers.broker import Broker
from labs.drive.event_log import EventLog
from labs.drive.processes import ProcessGroup
from labs.drive.wait import wait_until
from labs.paths import QPROCESSOR, ROOT, SENDER
from labs.settings import child_environment



# Tests of the embedded default (`./kit demo`, `labs run` without AMQP_URL, the local node's own life) start a private
# RabbitMQ 3.10 node whatever --rabbitmq says: they are the same test in either suite, so the 3.10 suite runs them and
# the 4.3 suite reports them skipped (as the Compose tests run in the 4.3 suite only).
IN_THE_310_SUITE = pytest.mark.skipif("config.getoption('--rabbitmq') != '3.10'",
                                      reason="exercises the embedded default, a private RabbitMQ 3.10 node, not the "
                                             "suite's broker: run in the 3.10 suite")


def require(condition: object, reason: str) -> None:
    """Skip the test when `condition` is false, with `reason`; under CI=true fail it instead, since CI must have
    every part (a broker it controls, TLS, Docker Compose...) and a skip there would hide a missing one."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing part is a failure, not a skip)")
    pytest.skip(reason)


@dataclass
class WorkerProcess:
    """A running qprocessor.py with its output and JSON event log in files."""

    process: subprocess.Popen
    name: str
    events_path: Path
    output_path: Path
    log: EventLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = EventLog(self.events_path)

    def events(self, kind: Optional[str] = None) -> list[dict]:
        return [r for r in self.log.read() if kind is None or r["event"] == kind]

    def bodies(self, kind: str) -> list[str]:
        return [r["body"] for r in self.events(kind)]

    @property
    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_events(self, kind: str, count: int, timeout: float = 30) -> list[dict]:
        wait_until(lambda: len(self.events(kind)) >= count, timeout, f"{count} {kind!r} events from {self.name}")
        return self.events(kind)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)


@dataclass
class Space:
    """One test's vhost and user on the shared broker, and the processes it started there."""

    broker: Broker
    vhost: str
    username: str
    password: str
    folder: Path
    connection: Optional[pika.BlockingConnection] = None
    children: ProcessGroup = field(init=False, repr=False)  # what the test started here, killed when it ends

    def __post_init__(self) -> None:
        self.children = ProcessGroup(self.folder, self.env())

    @property
    def url(self) -> str:
        return self.broker.url(self.vhost, self.username, self.password)

    def env(self, **extra: str) -> dict:
        """The URL travels in AMQP_URL, so no password shows in the process list."""
        return child_environment(**{"AMQP_URL": self.url, "RABBITMQ_MANAGEMENT_URL": self.broker.admin.base_url,
                                    "PYTHONUNBUFFERED": "1", **extra})

    def send(self, *args: str, input: Optional[str] = None, check: bool = True,
             script: Path = SENDER, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        result = self.children.run([sys.executable, str(script), *args], input=input, env=env, timeout=120)
        if check:
            assert result.returncode == 0, f"sender.py {args} failed ({result.returncode}): {result.stderr}"
        return result

    def run_worker(self, *args: str, check: bool = True, env: Optional[dict] = None,
                   script: Path = QPROCESSOR) -> subprocess.CompletedProcess:
        result = self.children.run([sys.executable, str(script), *args], env=env, timeout=120)
        if check:
            assert result.returncode == 0, f"qprocessor.py {args} failed ({result.returncode}): {result.stderr}"
        return result

    def start_worker(self, name: str, *args: str, env: Optional[dict] = None) -> WorkerProcess:
        events = self.folder / f"{name}.events.jsonl"
        return self.start_process("qprocessor.py", "--name", name, "--events", str(events), *args, env=env,
                                  label=name, events=events)

    def start_process(self, script: str, *args: str, env: Optional[dict] = None, label: Optional[str] = None,
                      events: Optional[Path] = None) -> WorkerProcess:
        """Start sender.py or qprocessor.py in the background, its stdout and stderr going to one file."""
        label = label or f"{Path(script).stem}-{len(self.children.processes)}"
        process = self.children.start([sys.executable, str(ROOT / script), *args], label, env=env)
        return WorkerProcess(process, label, events or self.folder / f"{label}.events.jsonl",
                             self.children.output(label))

    def channel(self):
        """A new channel on this space's own connection (opened again after a broker restart)."""
        if self.connection is not None and self.connection.is_open:
            try:
                return self.connection.channel()
            except pika.exceptions.AMQPConnectionError:
                pass  # the broker restarted since: pika only finds out on use
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return self.connection.channel()

    def ready(self, queue: str) -> int:
        """Messages ready in the queue, straight from the broker (passive declare)."""
        return self.channel().queue_declare(queue, passive=True).method.message_count

    def ready_or_zero(self, queue: str) -> int:
        """Like ready(), but 0 while the queue does not exist yet or the broker is unreachable."""
        try:
            return self.ready(queue)
        except pika.exceptions.AMQPError:
            self.connection = None
            return 0

    def consumers(self, queue: str) -> int:
        """Consumers attached to the queue; 0 while it does not exist yet."""
        try:
            return self.channel().queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return 0
            raise

    def queue_stats(self, queue: str) -> dict:
        """The management API's view, including unacknowledged messages (refreshed every 0.5 s)."""
        return self.broker.admin.queue(self.vhost, queue)

    def wait_for_consumers(self, queue: str, count: int, timeout: float = 30) -> None:
        wait_until(lambda: self.consumers(queue) >= count, timeout, f"{count} consumers on {queue!r}")

    def kill_all(self) -> None:
        self.children.kill_all()
        if self.connection is not None and self.connection.is_open:
            try:
                self.connection.close()
            except pika.exceptions.AMQPError:
                pass


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int, *fragments: str) -> None:
    """A user's mistake gives its documented exit code and one clear line on stderr, never a traceback."""
    stderr = result.stderr.strip()
    assert result.returncode == exit_code, f"exit {result.returncode}, expected {exit_code}: {stderr}"
    assert "Traceback" not in result.stderr, stderr
    last = stderr.splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, f"{fragment!r} not in {last!r}"


def all_bodies(workers: Sequence[WorkerProcess], kind: str) -> list[str]:
    return [body for worker in workers for body in worker.bodies(kind)]


def processes_with(command: str, environment_entry: str) -> list[int]:
    """The pids of the processes running `command` (their comm) with `environment_entry` ("KEY=value") set."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == command and \
                    environment_entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile
    return found


def erlang_vm_of(node_name: str) -> Optional[int]:
    """The pid of the Erlang VM running this RabbitMQ node here, if any: the one that boots rabbit, not a rabbitmqctl
    VM run for the node, which has the node's name in its environment too."""
    for pid in processes_with("beam.smp", f"RABBITMQ_NODENAME={node_name}"):
        try:
            if b"\0-s\0rabbit\0boot\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue  # gone meanwhile
    return None


def node_working_directory(node_name: str) -> Path:
    """Where the Erlang VM of this RabbitMQ node runs: its crash dumps land there."""
    pid = erlang_vm_of(node_name)
    assert pid is not None, f"no Erlang VM runs node {node_name}"
    return Path(f"/proc/{pid}/cwd").resolve()
