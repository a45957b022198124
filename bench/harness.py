"""What every measurement of the scripts stands on: a vhost of the bench's own, whole processes timed (with their peak
memory), queues emptied and filled as the scripts declare them, two programs measured in turns, and the waits for
workers and event logs."""
from __future__ import annotations

import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pika

from bench.rows import Rounds
from labs.amqp.connection import Event
from labs.brokers.broker import Broker
from labs.drive.event_log import EventLog, EventTally, read_events
from labs.drive.processes import ProcessGroup, stop_when
from labs.paths import QPROCESSOR, SENDER
from labs.settings import child_environment

SETTLE_SECONDS = 1.0  # idle time for the broker before each timed run (not for tiny smoke runs)

Command = tuple[str, list[str]]  # a program's label (as rows and peak memory name it) and its command line


class Harness:
    """Runs processes against one vhost of the broker and measures them."""

    def __init__(self, broker: Broker, messages: int, rounds: int, workdir: Path) -> None:
        self.broker, self.messages, self.rounds, self.workdir = broker, messages, rounds, workdir
        self.version = broker.admin.overview().get("rabbitmq_version")
        self.vhost = f"bench-{secrets.token_hex(3)}"
        broker.admin.add_vhost(self.vhost)
        broker.admin.grant(broker.username, self.vhost)
        self.url = broker.url(self.vhost)
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.peak_rss_kb: dict[str, int] = {}
        self.children = ProcessGroup(workdir, self.env())  # each one's output in the workdir, as LABEL.out

    def close(self) -> None:
        self.children.kill_all()
        self.connection.close()
        self.broker.admin.delete_vhost(self.vhost)

    def env(self) -> dict:
        return child_environment(AMQP_URL=self.url)

    def timed(self, label: str, command: list[str]) -> float:
        """Wall time of one whole process; also records its peak RSS under `label`."""
        started = time.perf_counter()
        process = self.children.start(command, label)
        # ru_maxrss would count the parent's pages copied at fork; the child's own high-water mark is VmHWM.
        peak_kb = 0
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
                peak_kb = max(peak_kb, int(hwm.split()[1]))
            except (OSError, StopIteration):
                pass
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        if process.returncode:
            raise RuntimeError(f"{label} failed with exit code {process.returncode}: {' '.join(command)}; "
                               f"see {self.children.output(label)}")
        self.peak_rss_kb[label] = max(self.peak_rss_kb.get(label, 0), peak_kb)
        return elapsed

    def send(self, *args: str) -> None:
        """Run sender.py on this vhost (or where its --url options say) to its end; raise with what it said if it
        failed."""
        result = self.children.run([sys.executable, str(SENDER), *args], timeout=300)
        if result.returncode:
            raise RuntimeError(f"sender.py {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")

    def worker(self, label: str, *args: str) -> subprocess.Popen:
        """Start qprocessor.py in the background; its output goes to LABEL.out in the workdir."""
        return self.children.start([sys.executable, str(QPROCESSOR), *args], label)

    def reset(self, queue: str, queue_type: Optional[str] = None, url: Optional[str] = None) -> None:
        """An empty durable queue, declared as the scripts declare it: classic by default (RabbitMQ 4 refuses or
        deprecates transient ones), or with x-queue-type as `--queue-type` sends it. On this broker, or at `url`
        (a cluster node: a quorum queue's leader goes to the node the declaring client is connected to)."""
        connection = pika.BlockingConnection(pika.URLParameters(url)) if url else self.connection
        channel = connection.channel()
        channel.queue_delete(queue)
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type} if queue_type else None)
        channel.close()
        if url:
            connection.close()

    def fill(self, queue: str, count: int, queue_type: Optional[str] = None, url: Optional[str] = None) -> None:
        self.reset(queue, queue_type, url)
        self.timed("fill", [sys.executable, str(SENDER), "--queue", queue, "--count", str(count), "--quiet",
                            *queue_options(queue_type), *(["--url", url] if url else [])])

    def queue_type(self, queue: str) -> str:
        """The type of `queue` as this broker has it."""
        return self.broker.admin.queue(self.vhost, queue)["type"]

    def compare(self, ours: Command, peer: Command, prepare: Callable[[], None],
                prepare_peer: Optional[Callable[[], None]] = None) -> Rounds:
        """Both programs once per round, in turns (the first alternates), each on a freshly prepared queue.

        After each prepare() the broker gets a moment to settle: deleting a queue of persistent messages leaves it
        work (message store clean-up) that otherwise slows whichever program runs next. `prepare_peer`, when given,
        prepares the peer's runs (its queue on another broker)."""
        rates: dict[str, list[float]] = {"ours": [], "peer": []}
        settle = SETTLE_SECONDS if self.messages >= 1000 else 0
        for round_number in range(self.rounds):
            turns = [("ours", ours), ("peer", peer)]
            for side, (label, command) in turns if round_number % 2 == 0 else reversed(turns):
                (prepare_peer or prepare)() if side == "peer" else prepare()
                time.sleep(settle)
                rates[side].append(self.messages / self.timed(label, command))
        return Rounds(tuple(rates["ours"]), tuple(rates["peer"]))

    @staticmethod
    def stop_when_done(workers: list[subprocess.Popen], events: Path, bodies, timeout: float = 60) -> bool:
        """Stop the workers once the event log shows every body done (labs.drive.processes.stop_when: at most
        `timeout` seconds), and fail if one of them failed. Return whether all were done."""
        wanted, log = set(bodies), EventLog(events)  # polled every 0.1 s while the workers append: read as it grows
        all_done = stop_when(workers, lambda: wanted <= EventTally([], log.read()).processed, timeout)
        codes = [worker.wait(60) for worker in workers]
        if any(code not in (0, -signal.SIGTERM) for code in codes):  # -SIGTERM: stopped before its handler was set
            raise RuntimeError(f"a worker failed (exit codes {codes}); its log is {events}")
        return all_done


def first_received(events: Path) -> Optional[dict]:
    """The first message an event log shows received (before it, the worker logs where it connected), if any."""
    return next((e for e in read_events(events) if e["event"] == Event.RECEIVED), None)


def processed(events: Path) -> set[str]:
    """The bodies an event log shows done."""
    return EventTally([], read_events(events)).processed


def queue_options(queue_type: Optional[str]) -> list[str]:
    """The scripts' options for a queue type: none for classic, the vhost's default as before these rows."""
    return ["--queue-type", queue_type] if queue_type and queue_type != "classic" else []


def queue_suffix(queue_type: str) -> str:
    return "" if queue_type == "classic" else f", {queue_type} queue"


def machine() -> dict:
    """What the figures were measured on, as the results' "machine" stores it."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "pika": pika.__version__,
            "system": f"{platform.system()} {platform.release()}"}
