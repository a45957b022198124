#!/usr/bin/env python3
"""How long `python -m labs class status --json` takes for a whole class: a measurement, not a test.

Starts a private RabbitMQ 3.10 node (as the test suite does), provisions N students with `class provision --apply`
(definitions imports of ten students each), gives each two queues (one with a few messages nobody reads, one with a consumer holding a
message unacked) and one open connection, then times the command as an instructor runs it, and each management API call it makes on its own.

    .venv/bin/python tools/class_bench.py                  # 200 students, 7 runs
    .venv/bin/python tools/class_bench.py --students 50 --runs 3
"""
from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labs.brokers.broker import local_broker  # noqa: E402
from labs.classroom.provision import STUDENTS_PER_IMPORT, Student  # noqa: E402
from labs.classroom.status import class_paths, read_class, student_rows  # noqa: E402
from labs.settings import child_environment  # noqa: E402


def provision(broker, roster: Path, folder: Path) -> tuple[float, list]:
    """`class provision ROSTER --apply URL`, as an instructor runs it: (seconds, the accounts from its CSV)."""
    passwords_csv = folder / "passwords.csv"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "labs", "class", "provision", str(roster), "--passwords-csv",
                             str(passwords_csv), "--apply", broker.admin.base_url], capture_output=True, text=True,
                            cwd=ROOT, env=admin_environment(broker), timeout=900)
    elapsed = time.perf_counter() - started
    if result.returncode:
        raise click.ClickException(f"class provision failed ({result.returncode}): {result.stderr.strip()}")
    with passwords_csv.open() as handle:
        return elapsed, [Student(row["username"], row["password"]) for row in csv.DictReader(handle)]


def admin_environment(broker) -> dict:
    return child_environment(RABBITMQ_MANAGEMENT_URL=broker.admin.base_url, RABBITMQ_ADMIN_USER="guest",
                             RABBITMQ_ADMIN_PASSWORD="guest")


def populate(broker, students, messages: int) -> list[pika.BlockingConnection]:
    """Two queues a student: 'tasks' with a backlog, 'hello' with this connection's consumer holding one message."""
    connections = []
    for student in students:
        params = pika.URLParameters(broker.url(student.username, student.username, student.password))
        params.heartbeat = 0  # held open without I/O while the command is timed
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        for queue in ("tasks", "hello"):
            channel.queue_declare(queue, durable=True)
        for number in range(messages):
            channel.basic_publish("", "tasks", f"task {number}".encode())
            channel.basic_publish("", "hello", f"hello {number}".encode())
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume("hello", lambda *args: None)
        connection.process_data_events(0)
        connections.append(connection)
    return connections


def timed_command(broker, roster: Path) -> tuple[float, dict]:
    env = admin_environment(broker)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "labs", "class", "status", "--roster", str(roster), "--json"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    elapsed = time.perf_counter() - started
    if result.returncode:
        raise click.ClickException(f"class status failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed, json.loads(result.stdout)


def timed_calls(broker) -> dict[str, tuple[float, int]]:
    """Each call of class status alone: (seconds, bytes of the answer)."""
    labels = {"queues": "/api/queues (figures)", "window": "/api/queues (window)"}
    paths = {labels.get(key, f"/api/{key}"): path for key, path in class_paths().items()}
    found = {}
    for label, path in paths.items():
        started = time.perf_counter()
        answer = broker.admin.request("GET", path)
        found[label] = (time.perf_counter() - started, len(json.dumps(answer)))
    return found


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--students", type=click.IntRange(1, 1000), default=200, show_default=True, help="Class size.")
@click.option("--runs", type=click.IntRange(1, 50), default=7, show_default=True, help="Timed runs of the command.")
@click.option("--messages", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Messages in each of a student's two queues.")
def main(students: int, runs: int, messages: int) -> None:
    """Provision a class on a private 3.10 node and time `class status --json` for it."""
    with tempfile.TemporaryDirectory(prefix="labkit-class-bench-") as scratch, local_broker(Path(scratch)) as broker:
        names = [f"student{number:03d}" for number in range(1, students + 1)]
        roster = Path(scratch) / "roster.txt"
        roster.write_text("\n".join(names) + "\n")
        imported, accounts = provision(broker, roster, Path(scratch))
        reading = []
        started = time.perf_counter()
        connections = populate(broker, accounts, messages)
        populated = time.perf_counter() - started
        time.sleep(3)  # a few statistics intervals, so the figures are in
        try:
            elapsed, document = zip(*(timed_command(broker, roster) for _ in range(runs)))
            calls = timed_calls(broker)
            for _ in range(runs):  # the reading alone, without the command's Python start-up
                started = time.perf_counter()
                student_rows(names, read_class(broker.admin))
                reading.append(time.perf_counter() - started)
        finally:
            for connection in connections:
                connection.close()
        last = document[-1]
        flagged = sum(bool(student["flags"]) for student in last["students"])
        click.echo(f"date {time.strftime('%Y-%m-%d')}, machine {platform.node()} ({os.cpu_count()} cores, "
                   f"{platform.machine()}, Python {platform.python_version()}), RabbitMQ "
                   f"{broker.admin.overview()['rabbitmq_version']} (statistics every 0.5 s)")
        click.echo(f"class provision --apply for {students} students ({-(-students // STUDENTS_PER_IMPORT)} "
                   f"definitions imports): {imported:.1f} s")
        click.echo(f"{students * 2} queues, {students} connections and consumers made in {populated:.1f} s")
        click.echo(f"class status --json, {runs} runs (the whole command: Python start, 7 calls, the rows): "
                   f"median {statistics.median(elapsed):.2f} s, min {min(elapsed):.2f} s, max {max(elapsed):.2f} s; "
                   f"{len(last['students'])} rows, {flagged} flagged (each has a backlog on purpose)")
        click.echo(f"the reading alone (7 calls at once and the rows, in-process): median "
                   f"{statistics.median(reading) * 1000:.0f} ms, max {max(reading) * 1000:.0f} ms; each call alone:")
        for label, (seconds, size) in calls.items():
            click.echo(f"  {label:<24} {seconds * 1000:6.0f} ms  {size / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
