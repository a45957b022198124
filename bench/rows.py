"""The bench's rows: one small frozen dataclass per kind of measurement, each printing its own line of the table
(`line()`) and storing itself as a row of docs/bench.json or docs/bench-jobs.json (`to_json()`, whose keys are the
ones the chart and tests/kit/test_bench.py read). A run's results (ScriptsResults, JobsResults) print the header and the
table, and store the whole file.

To add a field to a kind of row (which publish path the sender used, say): a field with a default in its class, and
its key in that class's to_json(); nothing else decides what a row is.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional, Union


def fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return ""
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.3f}{unit}" if value < 10 else f"{value:.1f}{unit}"


@dataclass(frozen=True)
class Rounds:
    """Two programs' rates round by round, measured in turns: ours and its peer. The ratio of the medians is the
    headline; the round-by-round ratios give its spread, which on a shared machine says more than any one figure."""

    ours: tuple[float, ...]
    peer: tuple[float, ...]

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def peer_median(self) -> float:
        return statistics.median(self.peer)

    @property
    def ratio(self) -> float:
        return self.ours_median / self.peer_median

    @property
    def best_ratio(self) -> float:
        return max(self.ours) / max(self.peer)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.peer)]

    @property
    def spread(self) -> list[float]:
        return [min(self.ratios), max(self.ratios)]

    def spread_text(self) -> str:
        low, high = self.spread
        return f"{low:.2f}x to {high:.2f}x"


# --- python -m bench: the scripts against plain pika ---

@dataclass(frozen=True)
class ThroughputRow:
    """A script (`ours`: sender.py or qprocessor.py) against a plain pika peer in the same rounds, in msg/s."""

    what: str
    ours: str
    peer: str  # the peer program, as the table names it
    rounds: Rounds
    queue_type: str  # as the broker has the queue
    rabbitmq: str = ""
    publish_path: Optional[str] = None  # sender.py's rows: its guarded fast path, or basic_publish

    def to_json(self) -> dict:
        r = self.rounds
        path = {"publish path": self.publish_path} if self.publish_path else {}
        return {"what": self.what, f"{self.ours} msg/s": r.ours_median, "plain pika msg/s": r.peer_median,
                "ratio": r.ratio, "peer": self.peer, "rabbitmq": self.rabbitmq, "queue type": self.queue_type,
                "ours best msg/s": max(r.ours), "peer best msg/s": max(r.peer), "best ratio": r.best_ratio,
                "round ratios": r.ratios, "spread": r.spread,
                "ours rounds msg/s": list(r.ours), "peer rounds msg/s": list(r.peer), **path}

    def line(self) -> str:
        r = self.rounds
        path = f" ({self.publish_path})" if self.publish_path else ""
        return (f"| {self.rabbitmq} | {self.what} | {fmt(r.ours_median)} / {fmt(max(r.ours))} msg/s{path} | "
                f"{fmt(r.peer_median)} / {fmt(max(r.peer))} msg/s ({self.peer}) | {r.ratio:.2f}x | "
                f"{r.spread_text()} |")


@dataclass(frozen=True)
class CrossRow:
    """Two medians from different rows set side by side (sender.py confirmed against plain pika unconfirmed)."""

    what: str
    ours: float  # sender.py msg/s
    peer: float  # plain pika msg/s
    queue_type: str
    rabbitmq: str = ""

    def to_json(self) -> dict:
        return {"what": self.what, "sender.py msg/s": self.ours, "plain pika msg/s": self.peer,
                "ratio": self.ours / self.peer, "queue type": self.queue_type, "rabbitmq": self.rabbitmq}

    def line(self) -> str:
        return (f"| {self.rabbitmq} | {self.what} | {fmt(self.ours)} msg/s | {fmt(self.peer)} msg/s | "
                f"{self.ours / self.peer:.2f}x |  |")


@dataclass(frozen=True)
class ClusterRow:
    """One script on a quorum queue of a 3-node cluster (ours) against the same on the single broker (its peer)."""

    what: str
    program: str  # sender.py or qprocessor.py, on both sides
    rounds: Rounds
    leader: str  # the cluster node holding the queue's leader
    members: int
    queue_type: str = "quorum"
    rabbitmq: str = ""

    def to_json(self) -> dict:
        r = self.rounds
        return {"what": self.what, "3-node cluster msg/s": r.ours_median, "single node msg/s": r.peer_median,
                "ratio": r.ratio, "peer": self.program, "rabbitmq": self.rabbitmq, "queue type": self.queue_type,
                "ours best msg/s": max(r.ours), "peer best msg/s": max(r.peer), "best ratio": r.best_ratio,
                "round ratios": r.ratios, "spread": r.spread,
                "ours rounds msg/s": list(r.ours), "peer rounds msg/s": list(r.peer),
                "cluster leader": self.leader, "cluster members": self.members}

    def line(self) -> str:
        r = self.rounds
        return (f"| {self.rabbitmq} | {self.what} | {fmt(r.ours_median)} / {fmt(max(r.ours))} msg/s (3-node cluster)"
                f" | {fmt(r.peer_median)} / {fmt(max(r.peer))} msg/s (single node) | {r.ratio:.2f}x | "
                f"{r.spread_text()} |")


@dataclass(frozen=True)
class SpanRow:
    """The time some workers took for a batch of work, against the ideal share (fair dispatch)."""

    what: str
    seconds: float
    ideal: float
    rabbitmq: str = ""

    def to_json(self) -> dict:
        return {"what": self.what, "seconds": self.seconds, "ideal": self.ideal, "ratio": self.seconds / self.ideal,
                "rabbitmq": self.rabbitmq}

    def line(self) -> str:
        return (f"| {self.rabbitmq} | {self.what} | {self.seconds:.2f} s | {self.ideal:.2f} s (ideal) | "
                f"{self.seconds / self.ideal:.2f}x | |")


@dataclass(frozen=True)
class TimeRow:
    """A latency: start-up to the first message, or a redelivery after SIGKILL."""

    what: str
    seconds: float
    rabbitmq: str = ""

    def to_json(self) -> dict:
        return {"what": self.what, "seconds": self.seconds, "rabbitmq": self.rabbitmq}

    def line(self) -> str:
        return f"| {self.rabbitmq} | {self.what} | {self.seconds * 1000:.0f} ms | | | |"


@dataclass(frozen=True)
class FailoverRow:
    """The leader's node killed under consuming workers: to the next acknowledged message, with what was lost."""

    what: str
    seconds: float
    lost: int
    duplicates: int
    held: int  # messages that came back only once the killed node returned
    messages: int
    workers: int
    prefetch: int
    killed_leader: str
    new_leader: str
    queue_type: str = "quorum"
    rabbitmq: str = ""

    def to_json(self) -> dict:
        return {"what": self.what, "seconds": self.seconds, "lost": self.lost, "duplicates": self.duplicates,
                "held until the node returned": self.held, "messages": self.messages, "workers": self.workers,
                "prefetch": self.prefetch, "killed leader": self.killed_leader, "new leader": self.new_leader,
                "queue type": self.queue_type, "rabbitmq": self.rabbitmq}

    def line(self) -> str:
        return (f"| {self.rabbitmq} | {self.what} | {self.seconds:.2f} s | {self.lost} lost, {self.duplicates} "
                f"duplicates, {self.held} held until the node returned ({self.messages:,} messages) | | |")


@dataclass(frozen=True)
class MemoryRow:
    """A program's peak resident memory over the run (stored in the results' "peak_rss_mb", by label)."""

    label: str
    mb: float

    def line(self) -> str:
        return f"| | peak RSS, {self.label} | {self.mb:.1f} MB | | | |"


Row = Union[ThroughputRow, CrossRow, ClusterRow, SpanRow, TimeRow, FailoverRow]


@dataclass(frozen=True)
class ScriptsResults:
    """A run of python -m bench: the machine, the rows of every broker, the programs' peak memory."""

    machine: dict
    date: str
    messages: int
    rounds: int
    rows: tuple[Row, ...]
    memory: tuple[MemoryRow, ...]

    def to_json(self) -> dict:
        return {"machine": self.machine, "date": self.date, "messages": self.messages, "rounds": self.rounds,
                "rows": [row.to_json() for row in self.rows],
                "peak_rss_mb": {memory.label: memory.mb for memory in self.memory}}

    def header(self) -> str:
        m = self.machine
        return (f"{m['cores']} cores, {m['cpu']}; Python {m['python']}, pika {m['pika']}, RabbitMQ {m['rabbitmq']}; "
                f"{self.messages} messages, median of {self.rounds} rounds\n")

    def table(self) -> str:
        lines = ["| RabbitMQ | measurement | ours (median / best) | peer (median / best) | ratio | round ratios |",
                 "| --- | --- | ---: | ---: | ---: | --- |"]
        lines += [row.line() for row in self.rows]
        lines += [memory.line() for memory in sorted(self.memory, key=lambda memory: memory.label)]
        return "\n".join(lines)


# --- python -m bench --jobs: the Jobs API against python-rq ---

@dataclass(frozen=True)
class Drive:
    """Jobs POSTed and waited for until complete: jobs/s, latencies (seconds), and how many processes ran them."""

    rate: float
    p50: float
    p99: float
    worker_processes: int


@dataclass(frozen=True)
class JobsRound:
    """One side's round: its jobs posted flat out, then a tenth as many at a pace every side keeps up with."""

    flat: Drive
    paced: Drive


@dataclass(frozen=True)
class JobsRow:
    """The Jobs API (ours) against one python-rq worker class (the peer), the same rounds of ours for every peer."""

    what: str
    peer: str  # python-rq's version and worker class
    ours: tuple[JobsRound, ...]
    peers: tuple[JobsRound, ...]
    jobs: int
    clients: int
    workers: int
    paced_jobs: int
    paced_rate: int
    queue_type: str = "quorum"  # the lab's queue, as rabbitqueue declares it
    rabbitmq: str = ""

    @property
    def rounds(self) -> Rounds:
        return Rounds(tuple(run.flat.rate for run in self.ours), tuple(run.flat.rate for run in self.peers))

    def latency_ms(self, who: str, name: str) -> float:
        """The median over the rounds of `who`'s (ours, peer) latency `name` (p50, p99, paced p50, paced p99)."""
        return statistics.median(self._latencies(who, name))

    def _latencies(self, who: str, name: str) -> list[float]:
        runs = self.ours if who == "ours" else self.peers
        drives = [run.paced if name.startswith("paced ") else run.flat for run in runs]
        return [getattr(drive, name.split()[-1]) * 1000 for drive in drives]

    def to_json(self) -> dict:
        r = self.rounds
        row = {"what": self.what, "ours jobs/s": r.ours_median, "peer jobs/s": r.peer_median, "ratio": r.ratio,
               "peer": self.peer, "rabbitmq": self.rabbitmq, "queue type": self.queue_type,
               "ours best jobs/s": max(r.ours), "peer best jobs/s": max(r.peer),
               "round ratios": r.ratios, "spread": r.spread,
               "ours rounds jobs/s": list(r.ours), "peer rounds jobs/s": list(r.peer)}
        for who, runs in (("ours", self.ours), ("peer", self.peers)):
            for name in ("p50", "p99", "paced p50", "paced p99"):
                row[f"{who} {name} ms"] = self.latency_ms(who, name)
                row[f"{who} rounds {name} ms"] = self._latencies(who, name)
            row[f"{who} worker processes"] = max(run.flat.worker_processes for run in runs)
        row.update({"jobs": self.jobs, "clients": self.clients, "workers": self.workers, "paced jobs": self.paced_jobs,
                    "paced jobs/s": self.paced_rate})
        return row

    def line(self) -> str:
        r, ms = self.rounds, self.latency_ms
        return (f"| {self.rabbitmq} | {self.peer} | {r.ours_median:,.0f} / {max(r.ours):,.0f} | "
                f"{r.peer_median:,.0f} / {max(r.peer):,.0f} | {r.ratio:.2f}x | {r.spread_text()} | "
                f"{ms('ours', 'p50'):.1f} / {ms('peer', 'p50'):.1f} ms | "
                f"{ms('ours', 'p99'):.1f} / {ms('peer', 'p99'):.1f} ms | "
                f"{ms('ours', 'paced p50'):.1f} / {ms('peer', 'paced p50'):.1f} ms | "
                f"{ms('ours', 'paced p99'):.1f} / {ms('peer', 'paced p99'):.1f} ms |")


@dataclass(frozen=True)
class JobsResults:
    """A run of python -m bench --jobs: the machine (with Redis' and rq's versions) and the rows of every broker."""

    machine: dict
    date: str
    jobs: int
    rounds: int
    clients: int
    workers: int
    paced_rate: int  # stored with each row ("paced jobs/s"), shown in the table's header
    rows: tuple[JobsRow, ...]

    def to_json(self) -> dict:
        return {"machine": self.machine, "date": self.date, "jobs": self.jobs, "rounds": self.rounds,
                "clients": self.clients, "workers": self.workers, "rows": [row.to_json() for row in self.rows]}

    def header(self) -> str:
        m = self.machine
        return (f"{m['cores']} cores, {m['cpu']}; Python {m['python']}, pika {m['pika']}, RabbitMQ {m['rabbitmq']}, "
                f"Redis {m['redis']}, rq {m['rq']}; {self.jobs} jobs from {self.clients} clients to {self.workers} "
                f"workers, median of {self.rounds} rounds\n")

    def table(self) -> str:
        lines = ["| RabbitMQ | peer | ours jobs/s (median / best) | peer jobs/s (median / best) | ratio | "
                 f"round ratios | p50 ours / peer | p99 ours / peer | at {self.paced_rate} jobs/s: p50 ours / peer | "
                 "p99 ours / peer |",
                 "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
        lines += [row.line() for row in self.rows]
        return "\n".join(lines)
