"""The broker the kit runs against: the one AMQP_URL names, or a private local node it starts itself.

The private node listens on loopback only, on free ports, with its data in a temporary folder, and has the
management plugin on so vhosts, users and queue counts can be managed over HTTP the same way on a local node
and on a classroom broker.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pika
import port_for
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

RABBITMQ_BIN = Path(os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
BOOT_TIMEOUT = 90  # seconds; a cold node on 2 busy cores takes about 10


class BrokerUnavailable(RuntimeError):
    """Neither AMQP_URL nor a rabbitmq-server installation is available."""


class Admin:
    """A small client for RabbitMQ's management HTTP API: vhosts, users, permissions, queues, definitions."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Optional[dict] = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=self._headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    @staticmethod
    def quote(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def add_vhost(self, vhost: str) -> None:
        self.request("PUT", f"/api/vhosts/{self.quote(vhost)}", {})

    def delete_vhost(self, vhost: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.request("DELETE", f"/api/vhosts/{self.quote(vhost)}")

    def add_user(self, username: str, password: str, tags: str = "") -> None:
        self.request("PUT", f"/api/users/{self.quote(username)}", {"password": password, "tags": tags})

    def delete_user(self, username: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.request("DELETE", f"/api/users/{self.quote(username)}")

    def grant(self, username: str, vhost: str) -> None:
        """Full configure, write and read permission on one vhost, and nothing elsewhere."""
        self.request("PUT", f"/api/permissions/{self.quote(vhost)}/{self.quote(username)}",
                     {"configure": ".*", "write": ".*", "read": ".*"})

    def queue(self, vhost: str, name: str) -> dict:
        return self.request("GET", f"/api/queues/{self.quote(vhost)}/{self.quote(name)}")  # type: ignore[return-value]

    def import_definitions(self, definitions: dict) -> None:
        self.request("POST", "/api/definitions", definitions)


@dataclass
class Broker:
    """Where to reach a broker: an AMQP URL prefix for any vhost, an admin client, and control when we have it."""

    host: str
    port: int
    admin: Admin
    local: Optional["LocalBroker"] = None
    ctl_command: Optional[list[str]] = None  # rabbitmqctl for a broker given by AMQP_URL (LABKIT_RABBITMQCTL)

    @property
    def controllable(self) -> bool:
        """Whether this kit may restart the broker and change its settings."""
        return self.local is not None or self.ctl_command is not None

    def ctl(self, *args: str) -> str:
        if self.local is not None:
            return self.local.ctl(*args)
        if self.ctl_command is None:
            raise RuntimeError("no rabbitmqctl for this broker: set LABKIT_RABBITMQCTL")
        return subprocess.run([*self.ctl_command, *args], check=True, capture_output=True, text=True).stdout

    def restart(self) -> None:
        """Restart the broker: the whole node when it is ours, else the RabbitMQ application through rabbitmqctl."""
        if self.local is not None:
            self.local.restart()
            return
        self.ctl("stop_app")
        self.ctl("start_app")
        self.ctl("await_startup")

    def url(self, vhost: str = "/", username: str = "guest", password: str = "guest") -> str:
        user = urllib.parse.quote(username, safe="")
        secret = urllib.parse.quote(password, safe="")
        return f"amqp://{user}:{secret}@{self.host}:{self.port}/{urllib.parse.quote(vhost, safe='')}"


class LocalBroker(RabbitMqExecutor):
    """A private rabbitmq-server node (pytest-rabbitmq's executor) with the management plugin on loopback."""

    def __init__(self, workdir: Path, tls: Optional[dict[str, Path]] = None) -> None:
        """`tls` (cacertfile, certfile, keyfile) adds an amqps:// listener on loopback, at `tls_port`."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "plugins").write_text("[rabbitmq_management].\n")
        self.workdir = workdir
        self.management_port = port_for.select_random()
        port = port_for.select_random(exclude_ports=[self.management_port])
        distribution_port = port_for.select_random(exclude_ports=[port, self.management_port])
        super().__init__(str(RABBITMQ_BIN / "rabbitmq-server"), "127.0.0.1", port, distribution_port,
                         str(RABBITMQ_BIN / "rabbitmqctl"), logpath=workdir / "logs", path=workdir,
                         plugin_path=workdir, node_name=f"labkit-{port}@localhost")
        self._envvars.update({
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_USE_LONGNAME": "false",
            # Queue counts in the management API refresh every 0.5 s instead of 5 s, so waits are short.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                f"-rabbitmq_management tcp_config [{{port,{self.management_port}}},{{ip,\"127.0.0.1\"}}] "
                "-rabbit collect_statistics_interval 500 -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        })
        self.tls_port: Optional[int] = None
        self.ca_cert = tls["cacertfile"] if tls else None
        if tls:
            self.tls_port = port_for.select_random(exclude_ports=[port, self.management_port, distribution_port])
            options = ",".join(f'{{{key},"{path}"}}' for key, path in tls.items())
            self._envvars["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] += (
                f' -rabbit ssl_listeners [{{"127.0.0.1",{self.tls_port}}}]'
                f" -rabbit ssl_options [{options},{{verify,verify_none}},{{fail_if_no_peer_cert,false}}]")
        self.admin = Admin(f"http://127.0.0.1:{self.management_port}", "guest", "guest")

    def start(self) -> "LocalBroker":
        super().start()
        self.wait_until_ready()
        return self

    def wait_until_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Ready means an AMQP handshake and a management API call both succeed, not just an open port."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port)).close()
                self.admin.request("GET", "/api/overview")
                return
            except (pika.exceptions.AMQPError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def restart(self) -> None:
        """Stop the node cleanly (durable queues and persistent messages are written out) and start it again."""
        self.stop()
        self.start()

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node."""
        return self.rabbitctl_output(*args)


def rabbitmq_installed() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists()


def from_url(url: str) -> Broker:
    """A broker given by AMQP_URL; its management API is at RABBITMQ_MANAGEMENT_URL or http://host:15672.

    LABKIT_RABBITMQCTL (e.g. "sudo rabbitmqctl -n rabbit@classroom") lets the labs restart it and shorten timeouts.
    """
    params = pika.URLParameters(url)
    management = os.environ.get("RABBITMQ_MANAGEMENT_URL", f"http://{params.host}:15672")
    credentials = params.credentials
    ctl = os.environ.get("LABKIT_RABBITMQCTL")
    return Broker(params.host, params.port, Admin(management, credentials.username, credentials.password),
                  ctl_command=shlex.split(ctl) if ctl else None)


@contextlib.contextmanager
def local_broker(workdir: Optional[Path] = None, tls: Optional[dict[str, Path]] = None) -> Iterator[Broker]:
    """Start a private node for the duration of the block; remove its data afterwards unless workdir was given."""
    if not rabbitmq_installed():
        raise BrokerUnavailable(f"rabbitmq-server is not installed ({RABBITMQ_BIN} is missing): "
                                "apt-get install rabbitmq-server, or set AMQP_URL")
    owned = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="labkit-broker-")) if owned else workdir
    node = LocalBroker(folder, tls)
    node.start()
    try:
        yield Broker("127.0.0.1", node.port, node.admin, node)
    finally:
        with contextlib.suppress(Exception):
            node.stop()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def broker_from_environment() -> Iterator[Broker]:
    """AMQP_URL when set, otherwise the embedded default: a private local node started and stopped here."""
    url = os.environ.get("AMQP_URL")
    if url:
        yield from_url(url)
        return
    with local_broker() as broker:
        yield broker
