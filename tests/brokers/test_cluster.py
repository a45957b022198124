"""A real three-node cluster (labs.brokers.cluster: local nodes on 3.10, containers on 4.3): lab 11 run on it as an instructor
runs it (workers keep a quorum queue's work going when the node holding its leader is killed, 0 lost), and every node
killed in turn with a network cut besides, nothing confirmed lost. The cluster is the suite's
(tests/brokers/shared_cluster.py): its tests run one after the other on one test process (their xdist_group)."""
from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from typing import Optional

import pytest

from labs.amqp.connection import Event
from labs.drive.event_log import EventLog
from labs.settings import child_environment
from tests.helpers import QPROCESSOR, ROOT, SENDER, node_working_directory, wait_until
from tests.proxy import CuttableProxy

MESSAGES = 3000


pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]


def start_worker(env, name: str, events, queue: str = "jobs", seconds_per_char: str = "0.002") -> subprocess.Popen:
    """A worker with no idle exit (it outlives node restarts however long they take; stop it with SIGTERM), its
    output in NAME.out beside the events: a pipe nobody reads meanwhile fills up and stalls the worker."""
    with (events.parent / f"{name}.out").open("w") as output:
        return subprocess.Popen([sys.executable, str(QPROCESSOR), "--name", name, "--queue", queue, "--queue-type",
                                 "quorum", "--acknowledge", "--prefetch", "10", "--seconds-per-char", seconds_per_char,
                                 "--retry-for", "60", "--events", str(events)],
                                env=env, stdout=output, stderr=subprocess.STDOUT, text=True)


def done_counts(events: EventLog) -> collections.Counter:
    return collections.Counter(e["body"] for e in events.read() if e["event"] == Event.DONE)


@pytest.mark.slow(seconds=100)  # 60 s of it RabbitMQ 4.x's own wait before it refuses the classic queue
def test_lab_11_passes_on_the_cluster(cluster):
    """`labs run 11` as an instructor runs it on the cluster `./kit cluster up` started: every claim of the handout
    (quorum queue on three nodes, leader killed, a new leader, the classic queue out of reach with exit 13, the node
    back, 0 lost, duplicates bounded)."""
    env = child_environment(LABKIT_CACHE=str(cluster.folder.parent), PYTHONUNBUFFERED="1")
    env.pop("AMQP_URL", None)
    result = subprocess.run([sys.executable, "-m", "labs", "run", "11", "--rabbitmq", cluster.version, "--base-port",
                             str(cluster.base_port)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the RabbitMQ" in result.stderr  # this cluster, not one of its own
    claims = [line.split(":", 1)[0].strip() for line in result.stdout.splitlines() if line.startswith("  PASS") or
              line.startswith("  FAIL") or line.startswith("  SKIP")]
    assert len(claims) >= 8 and set(claims) == {"PASS"}, result.stdout
    assert cluster.running_nodes() == {node.name for node in cluster.nodes}  # the killed node is back
    if cluster.version == "3.10":  # local nodes: a crash dump (MnesiaCore.*) lands in the node's folder
        for node in cluster.nodes:
            assert node_working_directory(node.name) == (cluster.folder / f"c{node.number}").resolve()


@pytest.mark.slow(seconds=45)
def test_each_node_killed_in_turn_and_a_network_cut_lose_nothing_confirmed(cluster, tmp_path):
    """Thousands of confirmed persistent messages; workers spread over the nodes, one of them reaching node 1 through
    a cable that is cut first; then every node SIGKILLed in turn (and brought back before the next): every
    confirmed message is processed, and duplicates stay within what the workers held unacknowledged at each fault."""
    proxy = CuttableProxy(cluster.nodes[0].port)
    env = child_environment(AMQP_URL=" ".join(cluster.urls()), PYTHONUNBUFFERED="1")

    def send(*args: str, lines: Optional[str] = None) -> None:
        sent = subprocess.run([sys.executable, str(SENDER), "--queue", "faults", "--queue-type", "quorum",
                               "--persistent", "--quiet", *args], input=lines, env=env, capture_output=True, text=True,
                              timeout=120)
        count = len(lines.split()) if lines else MESSAGES
        assert sent.returncode == 0 and f"sent {count} messages" in sent.stdout, sent.stderr  # each one confirmed

    send("--count", str(MESSAGES), "--length", "4")
    bodies = {str(n).ljust(4, ".") for n in range(1, MESSAGES + 1)}

    events_path = tmp_path / "events.jsonl"
    events = EventLog(events_path)  # polled below: read as it grows
    slow = dict(queue="faults", seconds_per_char="0.006")
    workers = [start_worker(env, f"w{n}", events_path, **slow) for n in (1, 2, 3)]
    proxied = {**env, "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/"}
    workers.append(start_worker(proxied, "through-the-proxy", events_path, **slow))

    began = time.monotonic()

    def phase(what: str) -> None:  # shown when the test fails: which step took the time
        print(f"{time.monotonic() - began:6.1f}s {what}")

    def processed() -> int:
        return sum(done_counts(events).values())

    def received_by(worker: str) -> bool:
        return any(e["event"] == Event.RECEIVED and e["worker"] == worker for e in events.read())

    try:
        # Cut only a working connection: one still in its first handshake would be a reset the worker takes for a
        # port that does not speak AMQP (exit code 9), not a network failure under way.
        wait_until(lambda: proxy.open_connections > 0 and processed() > 100 and received_by("through-the-proxy"), 60,
                   "work through the proxy")
        before = processed()
        assert proxy.cut() >= 1  # the network path to node 1 fails; the worker behind it reconnects
        wait_until(lambda: processed() >= before + 150, 60, "the work to go on after the cut")
        for number in (1, 2, 3):
            before = processed()
            if len(bodies) - before < 1500:  # nodes slow to come back (a busy machine): keep work queued for the fault
                more = [f"n{number}-{n}" for n in range(1500)]
                send(lines="\n".join(more))
                bodies.update(more)
            phase(f"kill node {number}, {before} of {len(bodies)} processed")
            cluster.kill(number)
            wait_until(lambda: processed() >= before + 150, 60, f"the work to go on without node {number}")
            phase(f"start node {number}, {processed()} processed")
            cluster.start(number)
            cluster.wait_formed()
            wait_until(lambda: len(cluster.queue("/", "faults").get("members") or []) == 3, 90,
                       f"node {number} back among the queue's members")
        phase(f"wait for the rest, {processed()} processed")
        wait_until(lambda: set(done_counts(events)) >= bodies, 240, "every confirmed message to be processed")
        for worker in workers:
            worker.send_signal(signal.SIGTERM)  # the first signal: stop taking work, close cleanly, exit 0
        for worker in workers:
            worker.wait(60)
    finally:
        proxy.close()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [worker.returncode for worker in workers] == [0] * 4, \
        [path.read_text()[-1500:] for path in sorted(tmp_path.glob("*.out"))]
    done = done_counts(events)
    assert set(done) == bodies  # 0 confirmed lost
    duplicates = sum(done.values()) - len(done)
    print(f"4 faults: {duplicates} duplicates")
    assert duplicates <= 4 * 4 * 10  # per fault, at most what four workers held (prefetch 10 each)
