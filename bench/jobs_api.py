"""python -m bench --jobs N: the Jobs API end to end against python-rq, on the same machine in the same run.

Ours is lab 10 as it runs: labs/jobs/api.py under waitress and WORKERS `labs/jobs/worker.py` processes with
JOB_SECONDS=0, on the bench's broker (a vhost of its own) and a private redis-server. The peer is what a Flask user
reaches for today: bench/peers/rq_jobs.py (the same routes and job records, on rq's Redis queue) under waitress, with
WORKERS `rq worker` processes started as a user starts them: the default worker class, which forks a work horse for
every job, and again with rq's SimpleWorker, which runs jobs in its own process.

Each side gets its API and workers started afresh in every round, a few jobs to warm up, then the same HTTP driver:
CLIENTS threads POST N jobs between them, each waiting for its answer before the next (keep-alive connections).
A job is complete when its record in Redis says so; both sides store the time of that change with it (status_at),
so latency is from just before the POST was sent to the worker's "complete", and jobs/s is N over the time from the
first POST sent to the last job complete. Posted flat out, a side whose workers are slower than its API builds a
backlog, and its latency is mostly the wait behind it; so N/10 more jobs are then sent at PACED_RATE a second, which
every side keeps up with, for the latency of the machinery itself. The sides take turns, their order rotating each
round.
"""
from __future__ import annotations

import http.client
import json
import math
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import port_for
import redis
import rq

from bench.harness import machine
from bench.peers import RQ_API
from bench.rows import Drive, JobsResults, JobsRound, JobsRow
from labs.brokers.broker import broker_from_environment
from labs.brokers.redis_server import RedisServer, running_redis
from labs.drive.processes import ProcessGroup, wait_for_consumers
from labs.drive.wait import wait_until
from labs.paths import JOBS, ROOT
from labs.settings import child_environment

CLIENTS, WORKERS, WARM_UP = 4, 4, 8  # concurrent HTTP clients, worker processes, jobs before each timed run
PACED_RATE = 20  # jobs/s: latency without a backlog, a rate every side keeps up with (rq's forking Worker: ~40/s)
STALL_SECONDS = 30.0  # no job completing for this long: the side is broken, not slow
BODY = json.dumps({"start": 1, "end": 10}).encode()


@dataclass(frozen=True)
class Side:
    key: str  # "ours", or the peer's worker class
    label: str  # as the table and the JSON name it


OURS = Side("ours", "labs/jobs")
PEERS = (Side("rq.Worker", "rq Worker (forks per job)"), Side("rq.SimpleWorker", "rq SimpleWorker (no fork)"))


class JobsBench:
    """Both sides on one broker vhost (ours) and one private Redis (both), `jobs` jobs a round."""

    def __init__(self, amqp_url: str, redis_server: RedisServer, jobs: int, rounds: int, workdir: Path,
                 version: str) -> None:
        self.amqp_url, self.redis, self.jobs, self.rounds = amqp_url, redis_server, jobs, rounds
        self.workdir, self.version = workdir, version
        self.paced_jobs = max(WARM_UP, jobs // 10)
        self.rd = redis.Redis.from_url(redis_server.url, decode_responses=True)

    @contextmanager
    def service(self, side: Side, tag: str) -> Iterator[int]:
        """The side's API and WORKERS workers, started on an empty Redis and ready; yields the API's port."""
        self.rd.flushall()
        port = port_for.select_random()
        env = child_environment(AMQP_URL=self.amqp_url, REDIS_URL=self.redis.url, HOST="127.0.0.1",
                                PORT=str(port), JOB_SECONDS="0", PYTHONUNBUFFERED="1")
        children = ProcessGroup(self.workdir, env, cwd=ROOT)  # rq imports the jobs' code from the folder it runs in

        def start(command: list[str], name: str) -> subprocess.Popen:
            return children.start(command, f"{tag}-{name}")

        try:
            if side is OURS:
                api = start([sys.executable, str(JOBS / "api.py")], "api")
                for number in range(WORKERS):
                    start([sys.executable, str(JOBS / "worker.py")], f"worker{number}")
            else:
                api = start([sys.executable, str(RQ_API)], "api")
                rq_command = shutil.which("rq", path=str(Path(sys.executable).parent)) or "rq"
                worker_class = [] if side.key == "rq.Worker" else ["--worker-class", side.key]
                for number in range(WORKERS):  # as a user starts them, from the folder their code is in
                    start([rq_command, "worker", "--url", self.redis.url, *worker_class, "jobs"], f"worker{number}")
            self.wait_ready(side, api, port, children.processes, tag)
            self.drive(port, WARM_UP, tag)
            yield port
        finally:
            children.terminate_all()

    def wait_ready(self, side: Side, api: subprocess.Popen, port: int, processes: list[subprocess.Popen],
                   tag: str) -> None:
        if not wait_until(lambda: post_or_none(port, "GET", "/nothing") == 404, 30, "the API to answer",
                          give_up=lambda: None if api.poll() is None else "it exited", or_last=True):
            raise RuntimeError(f"{tag}: the API did not answer: {self.log_tail(tag, 'api')}")
        if side is OURS:
            try:
                wait_for_consumers(self.amqp_url, "jobs", WORKERS, timeout=60)
            except TimeoutError:  # say which workers are gone and what they said (once, in CI, no log to read)
                workers = processes[1:]
                gone = [f"worker{n} exited {p.returncode}: {self.log_tail(tag, f'worker{n}')}"
                        for n, p in enumerate(workers) if p.poll() is not None]
                raise RuntimeError(f"{tag}: {WORKERS} workers did not all consume from 'jobs' within 60 s; "
                                   + ("; ".join(gone) if gone else "all still running, worker0 said: "
                                      + self.log_tail(tag, "worker0"))) from None
            return
        if not wait_until(lambda: rq.Worker.count(connection=redis.Redis.from_url(self.redis.url)) >= WORKERS, 30,
                          "the rq workers", give_up=lambda: None if all(p.poll() is None for p in processes)
                          else "one exited", or_last=True):
            raise RuntimeError(f"{tag}: {WORKERS} rq workers did not start: {self.log_tail(tag, 'worker0')}")

    def drive(self, port: int, count: int, tag: str, rate: Optional[float] = None) -> Drive:
        """POST `count` jobs from CLIENTS threads, flat out or `rate` a second, wait for all of them to be complete;
        the rate achieved and the latencies."""
        sent: dict[str, float] = {}
        errors: list[str] = []
        tickets = iter(range(count))
        lock = threading.Lock()
        begin = time.time() + 0.05

        def client() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                while True:
                    with lock:
                        ticket = next(tickets, None)
                        if ticket is None or errors:
                            return
                    if rate:
                        time.sleep(max(0.0, begin + ticket / rate - time.time()))
                    at = time.time()
                    connection.request("POST", "/jobs", BODY, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    answer = response.read()
                    if response.status != 201:
                        errors.append(f"POST /jobs answered {response.status}: {answer[:200]!r}")
                        return
                    sent[json.loads(answer)["id"]] = at
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"POST /jobs failed: {type(exc).__name__} {exc}")
            finally:
                connection.close()

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(f"{tag}: {errors[0]}")
        done = self.completions(list(sent), tag)
        latencies = sorted(done[jid] - sent[jid] for jid in sent)
        pipe = self.rd.pipeline(transaction=False)
        for jid in sent:
            pipe.hget(f"job.{jid}", "worker")
        workers = set(pipe.execute())  # host:pid of the process that ran each job
        return Drive(count / (max(done.values()) - min(sent.values())), percentile(latencies, 50),
                     percentile(latencies, 99), len(workers))

    def completions(self, jids: list[str], tag: str) -> dict[str, float]:
        """When each job's record turned "complete" (its status_at); RuntimeError when they stop completing."""
        done: dict[str, float] = {}
        pending, last_progress = jids, time.monotonic()
        while pending:
            pipe = self.rd.pipeline(transaction=False)
            for jid in pending:
                pipe.hmget(f"job.{jid}", "status", "status_at")
            for jid, (status, at) in zip(pending, pipe.execute()):
                if status == "complete":
                    done[jid] = float(at)
            still = [jid for jid in pending if jid not in done]
            if len(still) < len(pending):
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_SECONDS:
                raise RuntimeError(f"{tag}: {len(still)} of {len(jids)} jobs never completed (none in "
                                   f"{STALL_SECONDS:.0f} s); a worker's log: {self.log_tail(tag, 'worker0')}")
            pending = still
            if pending:
                time.sleep(0.05)
        return done

    def log_tail(self, tag: str, name: str) -> str:
        """The end of a process's output (the work folder is removed when the bench ends)."""
        try:
            return (self.workdir / f"{tag}-{name}.out").read_text(errors="replace")[-600:]
        except OSError:
            return "(no output)"

    def measure(self) -> list[JobsRow]:
        sides = [OURS, *PEERS]
        runs: dict[str, list[JobsRound]] = {side.key: [] for side in sides}
        for round_number in range(self.rounds):
            shift = round_number % len(sides)
            for side in sides[shift:] + sides[:shift]:
                tag = f"{side.key}-{round_number}"
                with self.service(side, tag) as port:
                    flat = self.drive(port, self.jobs, tag)
                    paced = self.drive(port, self.paced_jobs, f"{tag}-paced", PACED_RATE)
                runs[side.key].append(JobsRound(flat, paced))
                print(f"RabbitMQ {self.version}, round {round_number + 1}, {side.key}: {flat.rate:.0f} jobs/s, "
                      f"p50 {flat.p50 * 1000:.1f} ms, p99 {flat.p99 * 1000:.1f} ms; at {PACED_RATE} jobs/s p50 "
                      f"{paced.p50 * 1000:.1f} ms, p99 {paced.p99 * 1000:.1f} ms", file=sys.stderr, flush=True)
        return [JobsRow(f"Jobs API end to end vs {peer.label}", f"python-rq {rq.__version__}, {peer.key}",
                        tuple(runs[OURS.key]), tuple(runs[peer.key]), self.jobs, CLIENTS, WORKERS, self.paced_jobs,
                        PACED_RATE, rabbitmq=self.version)
                for peer in PEERS]


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of them at or below it."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def post_or_none(port: int, method: str, path: str) -> int:
    """The status of one request, 0 when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def measure(version: Optional[str], jobs: int, rounds: int) -> tuple[list[JobsRow], str, str]:
    """The Jobs API rows on one broker (the one AMQP_URL names, or a private one of `version`) and a private Redis;
    the rows, RabbitMQ's and Redis' versions."""
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


def run(versions: tuple[str, ...], jobs: int, rounds: int) -> JobsResults:
    """The Jobs API rows on each broker asked for (or the one AMQP_URL names), with the machine and the versions of
    Redis, rq and redis-py."""
    rows: list[JobsRow] = []
    measured, redis_versions = [], set()
    for version in dict.fromkeys(versions) or (None,):
        version_rows, actual, redis_version = measure(version, jobs, rounds)
        rows += version_rows
        measured.append(actual)
        redis_versions.add(redis_version)
    return JobsResults({**machine(), "rabbitmq": ", ".join(measured), "redis": ", ".join(sorted(redis_versions)),
                        "rq": rq.__version__, "redis-py": redis.__version__},
                       time.strftime("%Y-%m-%d"), jobs, rounds, CLIENTS, WORKERS, PACED_RATE, tuple(rows))
