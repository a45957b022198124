"""The scripts' rows on one broker: sender.py publishing and qprocessor.py consuming against the plain pika peers
(bench/peers/, on a classic queue and again on a quorum one), fair dispatch, redelivery after SIGKILL and start-up;
measure() runs them all on a broker (and the cluster's rows, bench/cluster.py), run() on each broker asked for."""
from __future__ import annotations

import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from bench.cluster import cluster_version, on_cluster
from bench.harness import Harness, first_received, machine, queue_options, queue_suffix
from bench.peers import PIPELINED_PUBLISH, PLAIN_CONSUME, PLAIN_PUBLISH
from bench.rows import CrossRow, MemoryRow, Row, ScriptsResults, SpanRow, ThroughputRow, TimeRow
from labs.brokers.broker import broker_from_environment
from labs.drive.event_log import EventTally, read_events
from labs.drive.processes import wait_for_consumers
from labs.drive.wait import wait_until
from labs.paths import QPROCESSOR, SENDER

PIPELINED_WINDOW = 1000  # unconfirmed messages the pipelined peer keeps in flight
# The programs whose peak memory the results keep (not the bench's fill runs, nor the weaker peers)
MEMORY_OF = ("sender.py", "qprocessor.py", "plain publish (persistent)", "pipelined publish", "plain consume")


def publishing(h: Harness) -> list[Row]:
    n = str(h.messages)
    rows: list[Row] = []
    path = publish_path(h)
    for mode, options in (("unconfirmed", ["--no-confirm"]), ("confirmed", []), ("persistent", ["--persistent"])):
        queue, peer = f"publish-{mode}", f"plain publish ({mode})"
        rounds = h.compare(
            ("sender.py", [sys.executable, str(SENDER), "--queue", queue, "--count", n, "--quiet", *options]),
            (peer, [sys.executable, str(PLAIN_PUBLISH), h.url, queue, n, mode]),
            lambda: h.reset(queue))  # noqa: B023 (called within this iteration)
        rows.append(ThroughputRow(f"publish {mode}", "sender.py", peer, rounds, h.queue_type(queue),
                                  publish_path=path))
    unconfirmed, confirmed = rows[0], rows[1]
    rows.append(CrossRow("sender.py confirmed vs plain unconfirmed", confirmed.rounds.ours_median,
                         unconfirmed.rounds.peer_median, confirmed.queue_type))
    rows.append(pipelined(h))
    return rows


def publish_path(h: Harness) -> str:
    """Which way sender.py publishes with this pika and environment: its fast path's batches, or basic_publish when
    its guard (or LABKIT_PLAIN_PUBLISH=1) turns the fast path off, which it says on stderr."""
    h.reset("publish-path")
    result = h.children.run([sys.executable, str(SENDER), "--queue", "publish-path", "probe"], timeout=120)
    said = re.search(r"publishing through pika's basic_publish, one write a frame \((.*)\)", result.stderr)
    return f"basic_publish ({said.group(1)})" if said else "hand-framed batches"


def pipelined(h: Harness, queue_type: str = "classic") -> ThroughputRow:
    """The strongest peer: what a careful pika programmer writes for confirmed, persistent publishing."""
    n, queue = str(h.messages), f"publish-pipelined-{queue_type}"
    peer_type = [queue_type] if queue_type != "classic" else []  # classic: declared without x-queue-type
    rounds = h.compare(
        ("sender.py", [sys.executable, str(SENDER), "--queue", queue, "--count", n, "--quiet", "--persistent",
                       *queue_options(queue_type)]),
        ("pipelined publish", [sys.executable, str(PIPELINED_PUBLISH), h.url, queue, n, str(PIPELINED_WINDOW),
                               *peer_type]),
        lambda: h.reset(queue, queue_type if peer_type else None))
    return ThroughputRow(f"publish persistent vs pipelined pika (window {PIPELINED_WINDOW}){queue_suffix(queue_type)}",
                         "sender.py", "pipelined publish", rounds, h.queue_type(queue))


def consuming(h: Harness, prefetch: int, queue_type: str = "classic") -> ThroughputRow:
    """qprocessor.py printing its two lines a message (to /dev/null) against the plain consume + ack loop."""
    n, queue = str(h.messages), f"consume-{prefetch}-{queue_type}"
    peer_type = [queue_type] if queue_type != "classic" else []
    rounds = h.compare(
        ("qprocessor.py", [sys.executable, str(QPROCESSOR), "--queue", queue, "--acknowledge", "--prefetch",
                           str(prefetch), "--seconds-per-char", "0", "--max-messages", n, *queue_options(queue_type)]),
        ("plain consume", [sys.executable, str(PLAIN_CONSUME), h.url, queue, n, str(prefetch), *peer_type]),
        lambda: h.fill(queue, h.messages, queue_type if peer_type else None))
    return ThroughputRow(f"consume + ack, prefetch {prefetch}{queue_suffix(queue_type)}", "qprocessor.py",
                         "plain consume", rounds, h.queue_type(queue))


def fair_dispatch(h: Harness, seconds_per_char: float = 0.01) -> list[SpanRow]:
    # Uneven work: every third message is eight times longer, so round-robin hands all long ones to one worker.
    bodies = [("L" * 80 if n % 3 == 1 else "s" * 10) + f"{n:02d}" for n in range(1, 25)]
    ideal = sum(len(b) for b in bodies) * seconds_per_char / 3
    rows = []
    for label, options in (("no prefetch", []), ("prefetch 1", ["--prefetch", "1"])):
        spans = []
        for round_number in range(h.rounds):
            queue, events = f"fair-{label[:2]}-{round_number}", h.workdir / f"fair-{label[:2]}-{round_number}.jsonl"
            h.reset(queue)
            # No idle exit: on a busy machine the sender's start alone outlasted a short one, and every worker
            # left before the first message. They stop once the log shows every message done.
            workers = [h.worker(f"{queue}-w{w}", "--queue", queue, "--acknowledge", "--seconds-per-char",
                                str(seconds_per_char), "--name", f"w{w}", "--events", str(events), "--quiet",
                                *options) for w in range(3)]
            wait_for_consumers(h.url, queue, 3)
            h.send("--queue", queue, "--quiet", *bodies)
            if not h.stop_when_done(workers, events, bodies):
                raise RuntimeError(f"fair dispatch: messages not processed within a minute; see {events}")
            spans.append(EventTally(bodies, read_events(events)).makespan)
        rows.append(SpanRow(f"fair dispatch makespan, 3 workers, {label}", statistics.median(spans), ideal))
    return rows


def redelivery_latency(h: Harness) -> TimeRow:
    """From SIGKILL of the worker holding a message to another worker receiving it, redelivered."""
    latencies = []
    for round_number in range(h.rounds):
        queue = f"redeliver-{round_number}"
        h.reset(queue)
        events = {name: h.workdir / f"{queue}-{name}.jsonl" for name in ("holder", "spare")}
        common = ["--queue", queue, "--acknowledge", "--prefetch", "1", "--quiet"]
        h.send("--queue", queue, "--quiet", "held")
        holder = h.worker(f"{queue}-holder", *common, "--seconds-per-char", "100", "--name", "holder",
                          "--events", str(events["holder"]))
        wait_until(lambda: first_received(events["holder"]), 30, "the holder's first delivery",  # noqa: B023
                   interval=0.02)
        spare = h.worker(f"{queue}-spare", *common, "--seconds-per-char", "0", "--max-messages", "1",
                         "--name", "spare", "--events", str(events["spare"]))
        wait_for_consumers(h.url, queue, 2)
        killed_at = time.time()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        spare.wait(30)
        received = first_received(events["spare"])
        if not (received and received["body"] == "held" and received["redelivered"]):
            raise RuntimeError(f"redelivery: the spare worker did not get the held message back: {received}")
        latencies.append(received["time"] - killed_at)
    return TimeRow("redelivery after SIGKILL", statistics.median(latencies))


def startup(h: Harness) -> list[TimeRow]:
    """Spawn to first message handled: the worker's first 'received' event; the sender's whole one-message run."""
    worker_times, sender_times = [], []
    for round_number in range(h.rounds):
        queue = f"startup-{round_number}"
        h.reset(queue)
        sender_times.append(h.timed("sender.py", [sys.executable, str(SENDER), "--queue", queue, "first"]))
        events = h.workdir / f"{queue}.jsonl"
        started = time.time()
        h.timed("qprocessor.py", [sys.executable, str(QPROCESSOR), "--queue", queue, "--seconds-per-char", "0",
                                  "--max-messages", "1", "--events", str(events)])
        worker_times.append(first_received(events)["time"] - started)
    return [TimeRow("start-up to first message, qprocessor.py", statistics.median(worker_times)),
            TimeRow("start-up to one confirmed message and exit, sender.py", statistics.median(sender_times))]


def measure(version: Optional[str], messages: int, rounds: int,
            cluster: bool = False) -> tuple[list[Row], dict[str, int], str]:
    """Every row on one broker: the one AMQP_URL names, or a private one of `version`; with `cluster`, the cluster
    rows on a cluster of the broker's version too. The rows, the programs' peak RSS (kB) and the broker's version."""
    with broker_from_environment(version) as broker, tempfile.TemporaryDirectory(prefix="labkit-bench-") as workdir:
        broker.admin.overview()  # unreachable or refused: one line, before any measurement
        h = Harness(broker, messages, rounds, Path(workdir))
        try:
            rows = publishing(h)
            rows += [consuming(h, 1), consuming(h, 100)]
            rows += [pipelined(h, "quorum"), consuming(h, 100, "quorum")]
            rows += fair_dispatch(h)
            rows.append(redelivery_latency(h))
            rows += startup(h)
            if cluster:
                rows += on_cluster(h, cluster_version(h.version))
        finally:
            h.close()
        actual = broker.admin.overview().get("rabbitmq_version")
    return [replace(row, rabbitmq=actual) for row in rows], h.peak_rss_kb, actual


def run(versions: tuple[str, ...], messages: int, rounds: int, cluster: bool) -> ScriptsResults:
    """Every row on each broker asked for (or the one AMQP_URL names), with the machine and the peak memory."""
    rows: list[Row] = []
    peak_kb: dict[str, int] = {}
    measured = []
    for version in dict.fromkeys(versions) or (None,):
        version_rows, version_peak_kb, actual = measure(version, messages, rounds, cluster)
        rows += version_rows
        measured.append(actual)
        for label, kb in version_peak_kb.items():
            peak_kb[label] = max(peak_kb.get(label, 0), kb)
    return ScriptsResults({**machine(), "rabbitmq": ", ".join(measured)}, time.strftime("%Y-%m-%d"), messages, rounds,
                          tuple(rows), tuple(MemoryRow(label, kb / 1024) for label, kb in peak_kb.items()
                                             if label in MEMORY_OF))
