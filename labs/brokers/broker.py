"""The broker the kit runs against: where to reach it and as whom, its management API, and rabbitmqctl when we have
it. It is the one AMQP_URL names (with RABBITMQ_MANAGEMENT_URL and LABKIT_RABBITMQCTL), or a private local node."""
from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional

import pika

from labs.brokers.errors import BrokerUnavailable
from labs.amqp.admin import AdminAPI
from labs.brokers.rabbitmqctl import Rabbitmqctl
from labs.settings import Settings, settings

if TYPE_CHECKING:  # labs.brokers.local_node is imported where a node is started: it pulls in pytest (pytest-rabbitmq's
    from labs.brokers.local_node import LocalNode  # executor), 60 ms for each `python -m labs` that never starts one


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str  # the credentials the broker was given with: used for every URL unless others are asked for
    password: str
    vhost: str
    admin: AdminAPI
    control: Optional[Rabbitmqctl] = None  # rabbitmqctl, when the kit may change and restart this broker
    local: Optional[LocalNode] = None  # the node itself (a LocalNode or a ContainerNode), when the kit started it
    scheme: str = "amqp"

    @property
    def controllable(self) -> bool:
        """Whether this kit may restart the broker and change its settings."""
        return self.control is not None

    def version(self) -> tuple[int, int]:
        """The broker's RabbitMQ (major, minor), as its management API reports it: claims differ between versions."""
        major, minor = self.admin.overview()["rabbitmq_version"].split(".")[:2]
        return int(major), int(minor)

    def ctl(self, *args: str) -> str:
        if self.control is None:
            raise RuntimeError("no rabbitmqctl for this broker: set LABKIT_RABBITMQCTL")
        return self.control(*args)

    def restart(self) -> None:
        """Restart the broker: the whole node when it is ours, else the RabbitMQ application through rabbitmqctl."""
        if self.local is not None:
            self.local.restart()
            return
        self.ctl("stop_app")
        self.ctl("start_app")
        self.ctl("await_startup")

    def url(self, vhost: Optional[str] = None, username: Optional[str] = None, password: Optional[str] = None) -> str:
        """An AMQP URL for this broker: its own credentials and vhost unless others are given."""
        user = urllib.parse.quote(self.username if username is None else username, safe="")
        secret = urllib.parse.quote(self.password if password is None else password, safe="")
        path = urllib.parse.quote(self.vhost if vhost is None else vhost, safe="")
        return f"{self.scheme}://{user}:{secret}@{self.host}:{self.port}/{path}"

    @classmethod
    def from_url(cls, url: str, management_url: Optional[str] = None,
                 rabbitmqctl: Optional[tuple[str, ...]] = None) -> "Broker":
        """A broker given by URL; its management API is at `management_url`, by default http://HOST:15672."""
        params = pika.URLParameters(url)
        credentials = params.credentials
        return cls(params.host, params.port, credentials.username, credentials.password, params.virtual_host,
                   AdminAPI(management_url or f"http://{params.host}:15672", credentials.username,
                                 credentials.password),
                   control=Rabbitmqctl(rabbitmqctl) if rabbitmqctl else None,
                   scheme="amqps" if params.ssl_options else "amqp")

    @classmethod
    def of_cluster_node(cls, node) -> "Broker":
        """One node of a labs.brokers.cluster.Cluster, for what a whole cluster shares: vhosts, users, the version."""
        return cls("127.0.0.1", node.port, "guest", "guest", "/", node.admin)

    @classmethod
    def of_local_node(cls, node: LocalNode) -> "Broker":
        return cls("127.0.0.1", node.port, "guest", "guest", "/", node.admin, control=node.rabbitmqctl, local=node)


def from_settings(given: Settings) -> Broker:
    """The broker AMQP_URL, RABBITMQ_MANAGEMENT_URL and LABKIT_RABBITMQCTL describe."""
    assert given.amqp_url
    return Broker.from_url(given.amqp_url, given.management_url, given.rabbitmqctl)


@contextlib.contextmanager
def local_broker(workdir=None, tls=None) -> Iterator[Broker]:
    """A private local node for the duration of the block (see labs.brokers.local_node.running_local_node)."""
    from labs.brokers.local_node import rabbitmq_installed, running_local_node
    if not rabbitmq_installed():
        raise BrokerUnavailable(f"rabbitmq-server is not installed ({settings().rabbitmq_bin} has none): "
                                "apt-get install rabbitmq-server, or set AMQP_URL")
    with running_local_node(workdir, tls) as node:
        yield Broker.of_local_node(node)


LOCAL_VERSION = "3.10"  # the system package's RabbitMQ; other versions run in Docker (labs.brokers.container)
VERSIONS = (LOCAL_VERSION, "4.3")


def version_name(version: tuple[int, int]) -> str:
    """Which of VERSIONS a broker of this version stands for (its major version decides)."""
    return LOCAL_VERSION if version < (4, 0) else "4.3"


@contextlib.contextmanager
def broker_from_environment(version: Optional[str] = None) -> Iterator[Broker]:
    """AMQP_URL's broker when set, otherwise the embedded default, started and stopped here: a private local node
    (RabbitMQ 3.10, the system package), or with version 4.3 a container of the kit's RabbitMQ 4.3 image. With
    AMQP_URL the version is that broker's own (callers refuse --rabbitmq with it)."""
    given = settings()
    if given.amqp_url:
        yield from_settings(given)
        return
    if version in (None, LOCAL_VERSION):
        with local_broker() as broker:
            yield broker
        return
    from labs.brokers.container import docker_available, running_container_node

    if not docker_available():
        raise BrokerUnavailable(f"RabbitMQ {version} runs in Docker and no Docker engine answers: start dockerd "
                                "(./kit does), or set AMQP_URL")
    with running_container_node(version) as node:
        yield Broker.of_local_node(node)
