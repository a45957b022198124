"""The --cluster rows: a three-node cluster of the broker's version (labs.brokers.cluster, ports 5901-5903), with
sender.py and qprocessor.py on a quorum queue there against the same on the single broker, and failover: SIGKILL of
the node holding the queue's leader while workers consume, to the next acknowledged message, with messages lost and
duplicated."""
from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from typing import Optional

import click
import pika

from bench.harness import Harness, processed, queue_options
from bench.rows import ClusterRow, FailoverRow, Row
from labs.amqp.connection import Event
from labs.brokers.broker import VERSIONS
from labs.brokers.cluster import Cluster
from labs.drive.event_log import read_events
from labs.drive.wait import wait_until
from labs.paths import QPROCESSOR, SENDER

CLUSTER_BASE_PORT = 5900  # the bench's own cluster ports (5901-5903): never a class's (5700) or the tests' (free)
# The failover stream: 1,500 4-character messages at 20 ms each over 3 workers, about 10 s of steady work, so it goes
# on well past the kill (a second or two for Cluster.kill itself) whatever --messages is.
FAILOVER_MESSAGES, FAILOVER_WORKERS, FAILOVER_PREFETCH, FAILOVER_SECONDS_PER_CHAR = 1500, 3, 1, 0.005


def cluster_version(version: str) -> str:
    """The cluster kind for a broker's version: 3.10.8 -> 3.10 (local nodes), 4.3.6 -> 4.3 (containers)."""
    kind = ".".join(version.split(".")[:2])
    if kind not in VERSIONS:
        raise click.UsageError(f"--cluster starts nodes of RabbitMQ {' or '.join(VERSIONS)}; this broker is {version}")
    return kind


def on_cluster(h: Harness, version: str) -> list[Row]:
    """The cluster rows, on a cluster of this broker's version started for them and always taken down."""
    cluster = Cluster(version, h.workdir / "cluster", CLUSTER_BASE_PORT)
    try:
        cluster.up()
        return [*cluster_throughput(h, cluster), failover(h, cluster)]
    finally:
        cluster.down()


def cluster_throughput(h: Harness, cluster: Cluster) -> list[ClusterRow]:
    """sender.py (confirmed, persistent) and qprocessor.py (prefetch 100) on a quorum queue of the cluster against
    the same on this single broker, the same message count, in turns. Both connect to node 1, where the queue's
    leader is (it was declared from there: client-local), so the difference is the replication to two followers."""
    n, node_url, queue = str(h.messages), cluster.urls()[0], "cluster-quorum"

    def publish(url: str) -> list[str]:
        return [sys.executable, str(SENDER), "--url", url, "--queue", queue, "--count", n, "--quiet",
                "--persistent", *queue_options("quorum")]

    def consume(url: str) -> list[str]:
        return [sys.executable, str(QPROCESSOR), "--url", url, "--queue", queue, "--acknowledge", "--prefetch",
                "100", "--seconds-per-char", "0", "--max-messages", n, *queue_options("quorum")]

    measured = [("publish persistent, quorum queue: 3-node cluster vs single node", "sender.py",
                 h.compare(("sender.py", publish(node_url)), ("sender.py", publish(h.url)),
                           lambda: h.reset(queue, "quorum", node_url), lambda: h.reset(queue, "quorum")),
                 h.queue_type(queue)),
                ("consume + ack, prefetch 100, quorum queue: 3-node cluster vs single node", "qprocessor.py",
                 h.compare(("qprocessor.py", consume(node_url)), ("qprocessor.py", consume(h.url)),
                           lambda: h.fill(queue, h.messages, "quorum", node_url),
                           lambda: h.fill(queue, h.messages, "quorum")),
                 h.queue_type(queue))]
    h.fill(queue, 1, "quorum", node_url)
    leader, members = cluster.leader("/", queue), cluster.queue("/", queue).get("members") or []
    return [ClusterRow(what, program, rounds, leader, len(members), queue_type)
            for what, program, rounds, queue_type in measured]


def failover(h: Harness, cluster: Cluster) -> FailoverRow:
    """Three workers given all three nodes consume a quorum queue at a steady pace (20 ms a message, prefetch 1);
    the node holding the queue's leader is killed (SIGKILL). Failover is the time from the kill to the next
    acknowledged message: the first 'done' (logged just before its ack) of a message the new leader delivered.
    At prefetch 1 a worker gets its next message only once the queue has its previous ack, so a message received
    after a 'done' logged after the kill, or after a reconnect, came from the new leader. Then the killed node
    comes back (RabbitMQ 4 keeps the messages its consumers held until it does), a last worker sweeps the queue,
    and the event logs count the messages lost (never processed) and processed twice."""
    count, queue, events = FAILOVER_MESSAGES, "failover", h.workdir / "failover.jsonl"
    urls = [option for url in cluster.urls() for option in ("--url", url)]
    h.reset(queue, "quorum", cluster.urls()[0])
    h.send(*urls, "--queue", queue, "--count", str(count), "--length", "4", "--quiet", *queue_options("quorum"))

    def worker(name: str, idle_exit: tuple[str, ...] = ("--idle-exit", "10")) -> subprocess.Popen:
        # --idle-exit outlasts the failover pause (seconds), so no worker leaves during it
        return h.worker(f"failover-{name}", *urls, "--name", name, "--queue", queue, "--acknowledge", "--prefetch",
                        str(FAILOVER_PREFETCH), "--seconds-per-char", str(FAILOVER_SECONDS_PER_CHAR), *idle_exit,
                        "--retry-for", "60", "--events", str(events), "--quiet", *queue_options("quorum"))

    def finish(processes: list[subprocess.Popen]) -> None:
        codes = [process.wait(300) for process in processes]
        if any(codes):
            raise RuntimeError(f"failover: a worker failed (exit codes {codes}); its log is {events}")

    workers = [worker(f"w{number}") for number in range(1, FAILOVER_WORKERS + 1)]
    # Counted in the text: a line being appended may be incomplete JSON
    wait_until(lambda: events.exists() and events.read_text().count('"event": "done"') >= count // 5, 120,
               "a fifth of the work done before the kill", interval=0.02)
    old_leader = cluster.leader("/", queue)
    killed_at = kill_node(cluster, cluster.number_of(old_leader))
    finish(workers)
    new_leader = cluster.leader("/", queue)
    done_before_return = processed(events)
    cluster.start(cluster.number_of(old_leader))
    cluster.wait_formed()
    wait_until(lambda: len(cluster.queue("/", queue).get("members") or []) == 3, 120,
               "the quorum queue's three members", interval=0.02)
    sent = {str(number).ljust(4, ".") for number in range(1, count + 1)}
    # What the dead node's consumers held comes back on 4.x only once the queue has noticed, after the node's
    # return, that they are gone: the sweeper stays until every message is done (or 2 minutes have passed, and
    # the row counts what never came back as lost).
    if not sent <= processed(events):
        h.stop_when_done([worker("sweeper", idle_exit=())], events, sent, timeout=120)
    logged = read_events(events)
    done = collections.Counter(e["body"] for e in logged if e["event"] == Event.DONE)
    seconds = failover_seconds(logged, killed_at)
    if seconds is None:
        raise RuntimeError(f"failover: no message was acknowledged after the kill; see {events}")
    return FailoverRow("failover: leader's node killed, to the next acknowledged message, quorum queue", seconds,
                       lost=len(sent - set(done)), duplicates=sum(done.values()) - len(done),
                       held=len(sent - done_before_return), messages=count, workers=FAILOVER_WORKERS,
                       prefetch=FAILOVER_PREFETCH, killed_leader=old_leader, new_leader=new_leader)


def kill_node(cluster: Cluster, number: int) -> float:
    """Cluster.kill(number), returning when the node died as a client connected to it sees it: the connection
    drops. The time kill() is called would be early: on 3.10 it first asks rabbitmqctl for the pid (a second)."""
    witness = pika.BlockingConnection(pika.URLParameters(cluster.urls()[number - 1]))
    killer = threading.Thread(target=cluster.kill, args=(number,))
    killer.start()

    def dropped() -> bool:
        try:
            witness.process_data_events(time_limit=0.005)
        except pika.exceptions.AMQPConnectionError:
            return True
        return False

    if not wait_until(dropped, 60, f"node {number}'s connections to drop", interval=0, or_last=True):
        raise RuntimeError(f"node {number} was killed but its connections stayed open")
    died_at = time.time()
    killer.join()
    return died_at


def failover_seconds(events: list[dict], killed_at: float) -> Optional[float]:
    """From the kill to the first 'done' of a message the new leader delivered (see failover); None if none.

    The event log is in order for each worker (appends of whole lines, one file for all)."""
    new_deliveries_next: set[str] = set()  # workers whose next delivery must come from the new leader
    delivered_by_new_leader: set[tuple[str, str]] = set()
    finished: list[float] = []
    for event in events:
        worker, kind = event["worker"], event["event"]
        if kind == Event.RECEIVED and worker in new_deliveries_next:
            delivered_by_new_leader.add((worker, event["body"]))
        elif kind == Event.DONE:
            if (worker, event["body"]) in delivered_by_new_leader:
                finished.append(event["time"])
            if event["time"] > killed_at:  # its ack went out after the kill: only a new leader can take it
                new_deliveries_next.add(worker)
        elif kind == Event.DISCONNECTED and event["time"] > killed_at:  # consuming again needs a leader
            new_deliveries_next.add(worker)
    return min(finished) - killed_at if finished else None
