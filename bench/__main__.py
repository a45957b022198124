"""python -m bench: sender.py and qprocessor.py against plain pika, on one broker (or each one asked for), in one run.

Every program runs as a whole process (start-up included), several rounds each, ours and its peer taking turns in
each round; the table shows the median and best rate of each, the ratio of the medians and the spread of the
round-by-round ratios, all measured in the same run. --chart draws the ratios as an SVG. The publishing and
consuming targets are measured on a classic queue and again on a quorum queue.

--cluster adds, for each broker, a three-node cluster of its version (labs.cluster, ports 5901-5903): sender.py
and qprocessor.py on a quorum queue there against the same on the single broker, and failover: SIGKILL of the node
holding the queue's leader while workers consume, to the next acknowledged message, with messages lost and
duplicated.

--jobs N measures instead the Jobs API (lab 10) end to end against python-rq doing the same jobs: N jobs a round
from POST to "complete", jobs/s and p50/p99 latency (bench/jobs_api.py).
"""
from __future__ import annotations

import collections
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import click
import pika

from labs.broker import VERSIONS, Broker, broker_from_environment
from labs.cluster import Cluster
from labs.event_log import EventLog, EventTally, read_events
from labs.exit_codes import one_line_errors
from labs.processes import stop_when, wait_for_consumers
from labs.settings import child_environment, settings

ROOT = Path(__file__).resolve().parent.parent
SENDER, QPROCESSOR = ROOT / "sender.py", ROOT / "qprocessor.py"
PLAIN_PUBLISH, PLAIN_CONSUME = ROOT / "bench" / "plain_publish.py", ROOT / "bench" / "plain_consume.py"
PIPELINED_PUBLISH = ROOT / "bench" / "pipelined_publish.py"
PIPELINED_WINDOW = 1000  # unconfirmed messages the pipelined peer keeps in flight
SETTLE_SECONDS = 1.0  # idle time for the broker before each timed run (not for tiny smoke runs)
CLUSTER_BASE_PORT = 5900  # the bench's own cluster ports (5901-5903): never a class's (5700) or the tests' (free)
# The failover stream: 1,500 4-character messages at 20 ms each over 3 workers, about 10 s of steady work, so it goes
# on well past the kill (a second or two for Cluster.kill itself) whatever --messages is.
FAILOVER_MESSAGES, FAILOVER_WORKERS, FAILOVER_PREFETCH, FAILOVER_SECONDS_PER_CHAR = 1500, 3, 1, 0.005


class Bench:
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

    def close(self) -> None:
        self.connection.close()
        self.broker.admin.delete_vhost(self.vhost)

    def env(self) -> dict:
        return child_environment(AMQP_URL=self.url)

    def timed(self, label: str, command: list[str]) -> float:
        """Wall time of one whole process; also records its peak RSS under `label`."""
        started = time.perf_counter()
        process = subprocess.Popen(command, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL)
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
            raise RuntimeError(f"{label} failed with exit code {process.returncode}: {' '.join(command)}")
        self.peak_rss_kb[label] = max(self.peak_rss_kb.get(label, 0), peak_kb)
        return elapsed

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

    def compare(self, what: str, ours: tuple[str, list[str]], peer: tuple[str, list[str]],
                prepare: Callable[[], None], queue: str,
                keys: Optional[tuple[str, str]] = None, prepare_peer: Optional[Callable[[], None]] = None) -> dict:
        """Both programs once per round, in turns (the first alternates), each on a freshly prepared queue.

        The headline ratio is ours / peer of the medians; the round-by-round ratios give its spread, which on a
        shared machine says more than any single figure. After each prepare() the broker gets a moment to settle:
        deleting a queue of persistent messages leaves it work (message store clean-up) that otherwise slows
        whichever program runs next. `keys` names the two rates in the row (ours' label and "plain pika" unless
        given: the cluster rows compare one program on two brokers); `prepare_peer`, when given, prepares the
        peer's runs (its queue on another broker). The row names the type of `queue` as this broker has it."""
        ours_key, peer_key = keys or (ours[0], "plain pika")
        rates: dict[str, list[float]] = {"ours": [], "peer": []}
        settle = SETTLE_SECONDS if self.messages >= 1000 else 0
        for round_number in range(self.rounds):
            turns = [("ours", ours), ("peer", peer)]
            for side, (label, command) in turns if round_number % 2 == 0 else reversed(turns):
                (prepare_peer or prepare)() if side == "peer" else prepare()
                time.sleep(settle)
                rates[side].append(self.messages / self.timed(label, command))
        ratios = [a / b for a, b in zip(rates["ours"], rates["peer"])]
        ours_median, peer_median = statistics.median(rates["ours"]), statistics.median(rates["peer"])
        return {"what": what, f"{ours_key} msg/s": ours_median, f"{peer_key} msg/s": peer_median,
                "ratio": ours_median / peer_median, "peer": peer[0], "rabbitmq": self.version,
                "queue type": self.broker.admin.queue(self.vhost, queue)["type"],
                "ours best msg/s": max(rates["ours"]), "peer best msg/s": max(rates["peer"]),
                "best ratio": max(rates["ours"]) / max(rates["peer"]),
                "round ratios": ratios, "spread": [min(ratios), max(ratios)],
                "ours rounds msg/s": rates["ours"], "peer rounds msg/s": rates["peer"]}

    # --- the measurements ---

    def publishing(self) -> list[dict]:
        n = str(self.messages)
        rows = []
        for mode, options in (("unconfirmed", ["--no-confirm"]), ("confirmed", []),
                              ("persistent", ["--persistent"])):
            queue = f"publish-{mode}"
            rows.append(self.compare(
                f"publish {mode}",
                ("sender.py", [sys.executable, str(SENDER), "--queue", queue, "--count", n, "--quiet", *options]),
                (f"plain publish ({mode})", [sys.executable, str(PLAIN_PUBLISH), self.url, queue, n, mode]),
                lambda: self.reset(queue), queue))  # noqa: B023 (called within this iteration)
        path = self.publish_path()
        for row in rows:
            row["publish path"] = path
        confirmed = rows[1]["sender.py msg/s"]
        rows.append({"what": "sender.py confirmed vs plain unconfirmed", "sender.py msg/s": confirmed,
                     "plain pika msg/s": rows[0]["plain pika msg/s"], "ratio": confirmed / rows[0]["plain pika msg/s"],
                     "queue type": rows[1]["queue type"], "rabbitmq": self.version})
        rows.append(self.pipelined())
        return rows

    def publish_path(self) -> str:
        """Which way sender.py publishes with this pika and environment: its fast path's batches, or basic_publish
        when its guard (or LABKIT_PLAIN_PUBLISH=1) turns the fast path off, which it says on stderr."""
        self.reset("publish-path")
        result = subprocess.run([sys.executable, str(SENDER), "--queue", "publish-path", "probe"], env=self.env(),
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        said = re.search(r"publishing through pika's basic_publish, one write a frame \((.*)\)", result.stderr)
        return f"basic_publish ({said.group(1)})" if said else "hand-framed batches"

    def pipelined(self, queue_type: str = "classic") -> dict:
        """The strongest peer: what a careful pika programmer writes for confirmed, persistent publishing."""
        n, queue = str(self.messages), f"publish-pipelined-{queue_type}"
        peer_type = [queue_type] if queue_type != "classic" else []  # classic: declared without x-queue-type
        return self.compare(
            f"publish persistent vs pipelined pika (window {PIPELINED_WINDOW}){queue_suffix(queue_type)}",
            ("sender.py", [sys.executable, str(SENDER), "--queue", queue, "--count", n, "--quiet", "--persistent",
                           *queue_options(queue_type)]),
            ("pipelined publish", [sys.executable, str(PIPELINED_PUBLISH), self.url, queue, n,
                                   str(PIPELINED_WINDOW), *peer_type]),
            lambda: self.reset(queue, queue_type if peer_type else None), queue)

    def consuming(self, prefetch: int, queue_type: str = "classic") -> dict:
        """qprocessor.py printing its two lines a message (to /dev/null) against the plain consume + ack loop."""
        n, queue = str(self.messages), f"consume-{prefetch}-{queue_type}"
        peer_type = [queue_type] if queue_type != "classic" else []
        row = self.compare(
            f"consume + ack, prefetch {prefetch}{queue_suffix(queue_type)}",
            ("qprocessor.py", [sys.executable, str(QPROCESSOR), "--queue", queue, "--acknowledge", "--prefetch",
                               str(prefetch), "--seconds-per-char", "0", "--max-messages", n,
                               *queue_options(queue_type)]),
            ("plain consume", [sys.executable, str(PLAIN_CONSUME), self.url, queue, n, str(prefetch), *peer_type]),
            lambda: self.fill(queue, self.messages, queue_type if peer_type else None), queue)
        return {"what": row.pop("what"), "sender.py msg/s": None, **row}

    def fair_dispatch(self, seconds_per_char: float = 0.01) -> list[dict]:
        # Uneven work: every third message is eight times longer, so round-robin hands all long ones to one worker.
        bodies = [("L" * 80 if n % 3 == 1 else "s" * 10) + f"{n:02d}" for n in range(1, 25)]
        ideal = sum(len(b) for b in bodies) * seconds_per_char / 3
        rows = []
        for label, options in (("no prefetch", []), ("prefetch 1", ["--prefetch", "1"])):
            spans = []
            for round_number in range(self.rounds):
                queue, events = f"fair-{label[:2]}-{round_number}", self.workdir / f"fair-{label[:2]}-{round_number}.jsonl"
                self.reset(queue)
                # No idle exit: on a busy machine the sender's start alone outlasted a short one, and every worker
                # left before the first message. They stop once the log shows every message done.
                workers = [subprocess.Popen(
                    [sys.executable, str(QPROCESSOR), "--queue", queue, "--acknowledge", "--seconds-per-char",
                     str(seconds_per_char), "--name", f"w{w}", "--events", str(events), "--quiet", *options],
                    env=self.env(), stdout=subprocess.DEVNULL) for w in range(3)]
                wait_for_consumers(self.url, queue, 3)
                subprocess.run([sys.executable, str(SENDER), "--queue", queue, "--quiet", *bodies], env=self.env(),
                               check=True, stdout=subprocess.DEVNULL)
                if not self.stop_when_done(workers, events, bodies):
                    raise RuntimeError(f"fair dispatch: messages not processed within a minute; see {events}")
                spans.append(EventTally(bodies, read_events(events)).makespan)
            span = statistics.median(spans)
            rows.append({"what": f"fair dispatch makespan, 3 workers, {label}", "seconds": span, "ideal": ideal,
                         "ratio": span / ideal})
        return rows

    def redelivery_latency(self) -> dict:
        """From SIGKILL of the worker holding a message to another worker receiving it, redelivered."""
        latencies = []
        for round_number in range(self.rounds):
            queue = f"redeliver-{round_number}"
            self.reset(queue)
            events = {name: self.workdir / f"{queue}-{name}.jsonl" for name in ("holder", "spare")}
            common = ["--queue", queue, "--acknowledge", "--prefetch", "1", "--quiet"]
            subprocess.run([sys.executable, str(SENDER), "--queue", queue, "--quiet", "held"], env=self.env(),
                           check=True, stdout=subprocess.DEVNULL)
            holder = subprocess.Popen([sys.executable, str(QPROCESSOR), *common, "--seconds-per-char", "100",
                                       "--name", "holder", "--events", str(events["holder"])],
                                      env=self.env(), stdout=subprocess.DEVNULL)
            self.wait_for(lambda: first_received(events["holder"]))
            spare = subprocess.Popen([sys.executable, str(QPROCESSOR), *common, "--seconds-per-char", "0",
                                      "--max-messages", "1", "--name", "spare", "--events", str(events["spare"])],
                                     env=self.env(), stdout=subprocess.DEVNULL)
            wait_for_consumers(self.url, queue, 2)
            killed_at = time.time()
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            spare.wait(30)
            received = first_received(events["spare"])
            if not (received and received["body"] == "held" and received["redelivered"]):
                raise RuntimeError(f"redelivery: the spare worker did not get the held message back: {received}")
            latencies.append(received["time"] - killed_at)
        return {"what": "redelivery after SIGKILL", "seconds": statistics.median(latencies)}

    def startup(self) -> list[dict]:
        """Spawn to first message handled: the worker's first 'received' event; the sender's whole one-message run."""
        worker_times, sender_times = [], []
        for round_number in range(self.rounds):
            queue = f"startup-{round_number}"
            self.reset(queue)
            sender_times.append(self.timed("sender.py", [sys.executable, str(SENDER), "--queue", queue, "first"]))
            events = self.workdir / f"{queue}.jsonl"
            started = time.time()
            self.timed("qprocessor.py", [sys.executable, str(QPROCESSOR), "--queue", queue, "--seconds-per-char", "0",
                                         "--max-messages", "1", "--events", str(events)])
            worker_times.append(first_received(events)["time"] - started)
        return [{"what": "start-up to first message, qprocessor.py", "seconds": statistics.median(worker_times)},
                {"what": "start-up to one confirmed message and exit, sender.py", "seconds": statistics.median(sender_times)}]

    # --- on a three-node cluster (--cluster) ---

    def on_cluster(self, version: str) -> list[dict]:
        """The cluster rows, on a cluster of this broker's version started for them and always taken down."""
        cluster = Cluster(version, self.workdir / "cluster", CLUSTER_BASE_PORT)
        try:
            cluster.up()
            return self.cluster_throughput(cluster) + [self.failover(cluster)]
        finally:
            cluster.down()

    def cluster_throughput(self, cluster: Cluster) -> list[dict]:
        """sender.py (confirmed, persistent) and qprocessor.py (prefetch 100) on a quorum queue of the cluster against
        the same on this single broker, the same message count, in turns. Both connect to node 1, where the queue's
        leader is (it was declared from there: client-local), so the difference is the replication to two followers."""
        n, node_url, queue = str(self.messages), cluster.urls()[0], "cluster-quorum"
        keys = ("3-node cluster", "single node")

        def publish(url: str) -> list[str]:
            return [sys.executable, str(SENDER), "--url", url, "--queue", queue, "--count", n, "--quiet",
                    "--persistent", *queue_options("quorum")]

        def consume(url: str) -> list[str]:
            return [sys.executable, str(QPROCESSOR), "--url", url, "--queue", queue, "--acknowledge", "--prefetch",
                    "100", "--seconds-per-char", "0", "--max-messages", n, *queue_options("quorum")]

        rows = [self.compare("publish persistent, quorum queue: 3-node cluster vs single node",
                             ("sender.py", publish(node_url)), ("sender.py", publish(self.url)),
                             lambda: self.reset(queue, "quorum", node_url), queue, keys,
                             lambda: self.reset(queue, "quorum")),
                self.compare("consume + ack, prefetch 100, quorum queue: 3-node cluster vs single node",
                             ("qprocessor.py", consume(node_url)), ("qprocessor.py", consume(self.url)),
                             lambda: self.fill(queue, self.messages, "quorum", node_url), queue, keys,
                             lambda: self.fill(queue, self.messages, "quorum"))]
        self.fill(queue, 1, "quorum", node_url)
        leader, members = cluster.leader("/", queue), cluster.queue("/", queue).get("members") or []
        for row in rows:
            row.update({"cluster leader": leader, "cluster members": len(members)})
        return rows

    def failover(self, cluster: Cluster) -> dict:
        """Three workers given all three nodes consume a quorum queue at a steady pace (20 ms a message, prefetch 1);
        the node holding the queue's leader is killed (SIGKILL). Failover is the time from the kill to the next
        acknowledged message: the first 'done' (logged just before its ack) of a message the new leader delivered.
        At prefetch 1 a worker gets its next message only once the queue has its previous ack, so a message received
        after a 'done' logged after the kill, or after a reconnect, came from the new leader. Then the killed node
        comes back (RabbitMQ 4 keeps the messages its consumers held until it does), a last worker sweeps the queue,
        and the event logs count the messages lost (never processed) and processed twice."""
        count, queue, events = FAILOVER_MESSAGES, "failover", self.workdir / "failover.jsonl"
        urls = [option for url in cluster.urls() for option in ("--url", url)]
        self.reset(queue, "quorum", cluster.urls()[0])
        subprocess.run([sys.executable, str(SENDER), *urls, "--queue", queue, "--count", str(count), "--length", "4",
                        "--quiet", *queue_options("quorum")], env=self.env(), check=True, stdout=subprocess.DEVNULL)

        def worker(name: str, idle_exit: tuple[str, ...] = ("--idle-exit", "10")) -> subprocess.Popen:
            # --idle-exit outlasts the failover pause (seconds), so no worker leaves during it
            return subprocess.Popen([sys.executable, str(QPROCESSOR), *urls, "--name", name, "--queue", queue,
                                     "--acknowledge", "--prefetch", str(FAILOVER_PREFETCH), "--seconds-per-char",
                                     str(FAILOVER_SECONDS_PER_CHAR), *idle_exit, "--retry-for", "60",
                                     "--events", str(events), "--quiet", *queue_options("quorum")],
                                    env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def finish(processes: list[subprocess.Popen]) -> None:
            codes = [process.wait(300) for process in processes]
            if any(codes):
                raise RuntimeError(f"failover: a worker failed (exit codes {codes}); its log is {events}")

        workers = [worker(f"w{number}") for number in range(1, FAILOVER_WORKERS + 1)]
        # Counted in the text: a line being appended may be incomplete JSON
        self.wait_for(lambda: events.exists() and events.read_text().count('"event": "done"') >= count // 5, 120)
        old_leader = cluster.leader("/", queue)
        killed_at = self.kill_node(cluster, cluster.number_of(old_leader))
        finish(workers)
        new_leader = cluster.leader("/", queue)
        done_before_return = processed(events)
        cluster.start(cluster.number_of(old_leader))
        cluster.wait_formed()
        self.wait_for(lambda: len(cluster.queue("/", queue).get("members") or []) == 3, 120)
        sent = {str(number).ljust(4, ".") for number in range(1, count + 1)}
        # What the dead node's consumers held comes back on 4.x only once the queue has noticed, after the node's
        # return, that they are gone: the sweeper stays until every message is done (or 2 minutes have passed, and
        # the row counts what never came back as lost).
        if not sent <= processed(events):
            self.stop_when_done([worker("sweeper", idle_exit=())], events, sent, timeout=120)
        logged = read_events(events)
        done = collections.Counter(e["body"] for e in logged if e["event"] == "done")
        seconds = failover_seconds(logged, killed_at)
        if seconds is None:
            raise RuntimeError(f"failover: no message was acknowledged after the kill; see {events}")
        return {"what": "failover: leader's node killed, to the next acknowledged message, quorum queue",
                "seconds": seconds, "lost": len(sent - set(done)), "duplicates": sum(done.values()) - len(done),
                "held until the node returned": len(sent - done_before_return), "messages": count,
                "workers": FAILOVER_WORKERS, "prefetch": FAILOVER_PREFETCH, "killed leader": old_leader,
                "new leader": new_leader, "queue type": "quorum"}

    @staticmethod
    def kill_node(cluster: Cluster, number: int) -> float:
        """Cluster.kill(number), returning when the node died as a client connected to it sees it: the connection
        drops. The time kill() is called would be early: on 3.10 it first asks rabbitmqctl for the pid (a second)."""
        witness = pika.BlockingConnection(pika.URLParameters(cluster.urls()[number - 1]))
        killer = threading.Thread(target=cluster.kill, args=(number,))
        killer.start()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                witness.process_data_events(time_limit=0.005)
            raise RuntimeError(f"node {number} was killed but its connections stayed open")
        except pika.exceptions.AMQPConnectionError:
            died_at = time.time()
        killer.join()
        return died_at

    @staticmethod
    def stop_when_done(workers: list[subprocess.Popen], events: Path, bodies, timeout: float = 60) -> bool:
        """Stop the workers once the event log shows every body done (labs.processes.stop_when: at most `timeout`
        seconds), and fail if one of them failed. Return whether all were done."""
        wanted, log = set(bodies), EventLog(events)  # polled every 0.1 s while the workers append: read as it grows
        all_done = stop_when(workers, lambda: wanted <= EventTally([], log.read()).processed, timeout)
        codes = [worker.wait(60) for worker in workers]
        if any(code not in (0, -signal.SIGTERM) for code in codes):  # -SIGTERM: stopped before its handler was set
            raise RuntimeError(f"a worker failed (exit codes {codes}); its log is {events}")
        return all_done

    @staticmethod
    def wait_for(condition: Callable[[], object], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark setup timed out")
            time.sleep(0.02)


def first_received(events: Path) -> Optional[dict]:
    """The first message an event log shows received (before it, the worker logs where it connected), if any."""
    return next((e for e in read_events(events) if e["event"] == "received"), None)


def processed(events: Path) -> set[str]:
    """The bodies an event log shows done."""
    return EventTally([], read_events(events)).processed


def queue_options(queue_type: Optional[str]) -> list[str]:
    """The scripts' options for a queue type: none for classic, the vhost's default as before these rows."""
    return ["--queue-type", queue_type] if queue_type and queue_type != "classic" else []


def queue_suffix(queue_type: str) -> str:
    return "" if queue_type == "classic" else f", {queue_type} queue"


def failover_seconds(events: list[dict], killed_at: float) -> Optional[float]:
    """From the kill to the first 'done' of a message the new leader delivered (see Bench.failover); None if none.

    The event log is in order for each worker (appends of whole lines, one file for all)."""
    new_deliveries_next: set[str] = set()  # workers whose next delivery must come from the new leader
    delivered_by_new_leader: set[tuple[str, str]] = set()
    finished: list[float] = []
    for event in events:
        worker, kind = event["worker"], event["event"]
        if kind == "received" and worker in new_deliveries_next:
            delivered_by_new_leader.add((worker, event["body"]))
        elif kind == "done":
            if (worker, event["body"]) in delivered_by_new_leader:
                finished.append(event["time"])
            if event["time"] > killed_at:  # its ack went out after the kill: only a new leader can take it
                new_deliveries_next.add(worker)
        elif kind == "disconnected" and event["time"] > killed_at:  # consuming again needs a leader
            new_deliveries_next.add(worker)
    return min(finished) - killed_at if finished else None


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "pika": pika.__version__,
            "system": f"{platform.system()} {platform.release()}"}


def fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return ""
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.3f}{unit}" if value < 10 else f"{value:.1f}{unit}"


def table(results: dict) -> str:
    lines = ["| RabbitMQ | measurement | ours (median / best) | peer (median / best) | ratio | round ratios |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in results["rows"]:
        ours = row.get("sender.py msg/s") or row.get("qprocessor.py msg/s")
        where = row.get("rabbitmq", "")
        if "3-node cluster msg/s" in row:
            lines.append(f"| {where} | {row['what']} | {fmt(row['3-node cluster msg/s'])} / "
                         f"{fmt(row['ours best msg/s'])} msg/s (3-node cluster) | {fmt(row['single node msg/s'])} / "
                         f"{fmt(row['peer best msg/s'])} msg/s (single node) | {row['ratio']:.2f}x | "
                         f"{row['spread'][0]:.2f}x to {row['spread'][1]:.2f}x |")
        elif "lost" in row:
            lines.append(f"| {where} | {row['what']} | {row['seconds']:.2f} s | {row['lost']} lost, "
                         f"{row['duplicates']} duplicates, {row['held until the node returned']} held until the node "
                         f"returned ({row['messages']:,} messages) | | |")
        elif ours is not None:
            best = f" / {fmt(row['ours best msg/s'])}" if "ours best msg/s" in row else ""
            peer_best = f" / {fmt(row['peer best msg/s'])}" if "peer best msg/s" in row else ""
            spread = f"{row['spread'][0]:.2f}x to {row['spread'][1]:.2f}x" if "spread" in row else ""
            peer = f" ({row['peer']})" if "peer" in row else ""
            path = f" ({row['publish path']})" if "publish path" in row else ""
            lines.append(f"| {where} | {row['what']} | {fmt(ours)}{best} msg/s{path} | {fmt(row['plain pika msg/s'])}"
                         f"{peer_best} msg/s{peer} | {row['ratio']:.2f}x | {spread} |")
        elif "ideal" in row:
            lines.append(f"| {where} | {row['what']} | {row['seconds']:.2f} s | {row['ideal']:.2f} s (ideal) | "
                         f"{row['ratio']:.2f}x | |")
        else:
            lines.append(f"| {where} | {row['what']} | {row['seconds'] * 1000:.0f} ms | | | |")
    for label, mb in sorted(results["peak_rss_mb"].items()):
        lines.append(f"| | peak RSS, {label} | {mb:.1f} MB | | | |")
    return "\n".join(lines)


def measure(version: Optional[str], messages: int, rounds: int,
            cluster: bool = False) -> tuple[list[dict], dict[str, int], str]:
    """Every row on one broker: the one AMQP_URL names, or a private one of `version`; with `cluster`, the cluster
    rows on a cluster of the broker's version too."""
    import tempfile

    with broker_from_environment(version) as broker, tempfile.TemporaryDirectory(prefix="labkit-bench-") as workdir:
        broker.admin.overview()  # unreachable or refused: one line, before any measurement
        bench = Bench(broker, messages, rounds, Path(workdir))
        try:
            rows = bench.publishing()
            rows += [bench.consuming(1), bench.consuming(100)]
            rows += [bench.pipelined("quorum"), bench.consuming(100, "quorum")]
            rows += bench.fair_dispatch()
            rows.append(bench.redelivery_latency())
            rows += bench.startup()
            if cluster:
                rows += bench.on_cluster(cluster_version(bench.version))
        finally:
            bench.close()
        actual = broker.admin.overview().get("rabbitmq_version")
    for row in rows:
        row["rabbitmq"] = actual
    return rows, bench.peak_rss_kb, actual


def measure_jobs(version: Optional[str], jobs: int, rounds: int) -> tuple[list[dict], str, str]:
    """The Jobs API rows on one broker (as measure() finds it) and a private Redis; the rows, RabbitMQ's and Redis'
    versions."""
    import tempfile

    from bench.jobs_api import JobsBench
    from labs.redis_server import running_redis

    with broker_from_environment(version) as broker, tempfile.TemporaryDirectory(prefix="labkit-bench-") as workdir:
        actual = broker.admin.overview().get("rabbitmq_version")
        vhost = f"bench-{secrets.token_hex(3)}"  # no connection of the bench's own: minutes idle would lose it
        broker.admin.add_vhost(vhost)
        broker.admin.grant(broker.username, vhost)
        try:
            with running_redis(Path(workdir) / "redis") as redis_server:
                redis_version = redis_server.client().info()["redis_version"]
                rows = JobsBench(broker.url(vhost), redis_server, jobs, rounds, Path(workdir), actual).measure()
        finally:
            broker.admin.delete_vhost(vhost)
    return rows, actual, redis_version


def cluster_version(version: str) -> str:
    """The cluster kind for a broker's version: 3.10.8 -> 3.10 (local nodes), 4.3.6 -> 4.3 (containers)."""
    kind = ".".join(version.split(".")[:2])
    if kind not in VERSIONS:
        raise click.UsageError(f"--cluster starts nodes of RabbitMQ {' or '.join(VERSIONS)}; this broker is {version}")
    return kind


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--messages", type=click.IntRange(10), default=5000, show_default=True, help="Messages per round.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Rounds per measurement (median).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results.json"), show_default=True, help="Where to write the results.")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the ratios to the peers as an SVG chart here (the README's is docs/bench.svg).")
@click.option("--smoke", is_flag=True, help="A quick run that only checks the benchmark works (200 messages, 1 round).")
@click.option("--rabbitmq", "versions", type=click.Choice(VERSIONS), multiple=True,
              help="Start a private broker of this RabbitMQ version (3.10 default, 4.3 in Docker); not with AMQP_URL. "
                   "Repeat it to measure on each version in one run.")
@click.option("--cluster", is_flag=True,
              help="Also start a three-node cluster of each broker's version (ports 5901-5903, taken down after): "
                   "quorum-queue throughput there against the single broker, and failover when the leader's node "
                   "is killed.")
@click.option("--jobs", type=click.IntRange(10), metavar="N",
              help="Instead of the scripts' rows: the Jobs API (labs/jobs, 4 workers, zero work) against python-rq "
                   "doing the same jobs, N jobs a round from POST to complete (jobs/s, p50/p99 latency).")
def main(messages: int, rounds: int, json_path: Path, chart_path: Optional[Path], smoke: bool,
         versions: tuple[str, ...], cluster: bool, jobs: Optional[int]) -> None:
    """Measure sender.py and qprocessor.py against plain pika on AMQP_URL or an embedded broker (with --jobs, the
    Jobs API against python-rq)."""
    if smoke:
        messages, rounds = 200, 1
    with one_line_errors():
        if versions and settings().amqp_url:
            raise click.UsageError(f"--rabbitmq {versions[0]} starts a broker of its own: unset AMQP_URL, or leave it "
                                   "out")
        if jobs:
            if cluster:
                raise click.UsageError("--jobs measures the Jobs API on a single broker: leave out --cluster")
            return jobs_main(jobs, rounds, json_path, chart_path, versions)
        rows, peak_kb, measured = [], {}, []
        for version in dict.fromkeys(versions) or (None,):
            version_rows, version_peak_kb, actual = measure(version, messages, rounds, cluster)
            rows += version_rows
            measured.append(actual)
            for label, kb in version_peak_kb.items():
                peak_kb[label] = max(peak_kb.get(label, 0), kb)
    keep = ("sender.py", "qprocessor.py", "plain publish (persistent)", "pipelined publish", "plain consume")
    results = {"machine": {**machine(), "rabbitmq": ", ".join(measured)}, "date": time.strftime("%Y-%m-%d"),
               "messages": messages, "rounds": rounds, "rows": rows,
               "peak_rss_mb": {k: v / 1024 for k, v in peak_kb.items() if k in keep}}
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    click.echo(f"{m['cores']} cores, {m['cpu']}; Python {m['python']}, pika {m['pika']}, RabbitMQ {m['rabbitmq']}; "
               f"{messages} messages, median of {rounds} rounds\n")
    click.echo(table(results))
    click.echo(f"\nwritten to {json_path}")
    if chart_path:
        from bench.chart import svg

        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path.write_text(svg(results), encoding="utf-8")
        click.echo(f"chart drawn in {chart_path}")


def jobs_main(jobs: int, rounds: int, json_path: Path, chart_path: Optional[Path], versions: tuple[str, ...]) -> None:
    import redis
    import rq

    from bench.jobs_api import CLIENTS, WORKERS, jobs_table

    rows, measured, redis_versions = [], [], set()
    for version in dict.fromkeys(versions) or (None,):
        version_rows, actual, redis_version = measure_jobs(version, jobs, rounds)
        rows += version_rows
        measured.append(actual)
        redis_versions.add(redis_version)
    results = {"machine": {**machine(), "rabbitmq": ", ".join(measured), "redis": ", ".join(sorted(redis_versions)),
                           "rq": rq.__version__, "redis-py": redis.__version__},
               "date": time.strftime("%Y-%m-%d"), "jobs": jobs, "rounds": rounds, "clients": CLIENTS,
               "workers": WORKERS, "rows": rows}
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    click.echo(f"{m['cores']} cores, {m['cpu']}; Python {m['python']}, pika {m['pika']}, RabbitMQ {m['rabbitmq']}, "
               f"Redis {m['redis']}, rq {m['rq']}; {jobs} jobs from {CLIENTS} clients to {WORKERS} workers, median of "
               f"{rounds} rounds\n")
    click.echo(jobs_table(results))
    click.echo(f"\nwritten to {json_path}")
    if chart_path:
        from bench.chart import svg

        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path.write_text(svg(results), encoding="utf-8")
        click.echo(f"chart drawn in {chart_path}")


if __name__ == "__main__":
    main()
