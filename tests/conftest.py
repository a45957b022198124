"""A real broker per session and a vhost of its own per test, like the lab's per-student vhosts."""
from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from labs.brokers.broker import VERSIONS, Broker, from_settings, local_broker
from labs.brokers.container import docker_available, running_container_node
from labs.amqp.admin import AdminAPI
from labs.brokers.local_node import LocalNode, rabbitmq_installed
from labs.settings import settings
from tests.helpers import Space, require
from tests.tls import make_certificates

# Fixtures defined beside their helpers: a provisioned class's two students (tests/classroom, tests/scripts), the
# suite's three-node cluster (tests/brokers, tests/classroom).
pytest_plugins = ["tests.classroom.accounts", "tests.brokers.shared_cluster"]




def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rabbitmq", choices=VERSIONS, default=os.environ.get("LABKIT_RABBITMQ", "3.10"),
                     help="the RabbitMQ version of the broker the suite starts: 3.10 (the system package, a local "
                          "node) or 4.3 (a Docker container through testcontainers). Ignored when AMQP_URL is set.")


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected: the blocks below must match what is run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Spread the long scenarios over the test processes, at the heads of the blocks pytest-xdist first deals out.

    pytest-xdist (work stealing) first deals the collected tests out in contiguous blocks, one per process, then lets
    an idle process take the tail of the longest queue. A long scenario at the head of a block starts at once and stays
    there; the quick tests behind it are stolen by the others. The long ones go to the blocks longest first, each to
    the block with the least long work so far, so no process runs two of them back to back while others sit idle.
    Long tests in one `xdist_group` (a costly shared fixture, e.g. a cluster) stay together, set up once, unless so
    few tests are selected that no block has room for them all; a group's `last_in_group` tests (those that take the
    shared fixture down) come after its others. Without xdist the long scenarios simply come first.
    """
    processes = getattr(config, "workerinput", {}).get("workercount", 1)
    units: dict[str, list[pytest.Item]] = {}
    quick = []
    for item in items:
        if item.get_closest_marker("slow") is None:
            quick.append(item)
        else:
            group = item.get_closest_marker("xdist_group")
            name = (group.args[0] if group.args else group.kwargs.get("name", "default")) if group else item.nodeid
            units.setdefault(name, []).append(item)
    sizes, left = [], len(items)
    for index in range(processes):  # the block sizes pytest-xdist's work stealing hands out at the start
        sizes.append(left // (processes - index))
        left -= sizes[-1]
    blocks: list[list[pytest.Item]] = [[] for _ in range(processes)]
    load = [0.0] * processes
    for unit in units.values():  # a test that takes the group's shared fixture down runs after the others
        unit.sort(key=lambda item: item.get_closest_marker("last_in_group") is not None)
    for unit in sorted(units.values(), key=lambda unit: -sum(map(estimated_seconds, unit))):
        # The block with the least long work among those with room for the whole unit (a few tests selected: the
        # one with the most room), so that the blocks keep the sizes pytest-xdist deals them in.
        room = [index for index in range(processes) if sizes[index] - len(blocks[index]) >= len(unit)]
        chosen = min(room, key=lambda index: load[index]) if room else \
            max(range(processes), key=lambda index: sizes[index] - len(blocks[index]))
        blocks[chosen] += unit
        load[chosen] += sum(map(estimated_seconds, unit))
    for block, size in zip(blocks, sizes):
        filling = max(size - len(block), 0)
        block += quick[:filling]
        del quick[:filling]
    items[:] = [item for block in blocks for item in block] + quick


def estimated_seconds(item: pytest.Item) -> float:
    """What a `slow` marker says the test takes (on two busy cores), for spreading the long ones."""
    marker = item.get_closest_marker("slow")
    return float(marker.kwargs.get("seconds", 30)) if marker else 1.0


def pytest_report_header(config: pytest.Config) -> str:
    if settings().amqp_url:
        return "broker: AMQP_URL"
    return f"broker: RabbitMQ {config.getoption('--rabbitmq')}, started by the suite"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Broker]:
    """AMQP_URL when set; else the version --rabbitmq asks for, started by the suite with an amqps:// listener:
    3.10 a private rabbitmq-server node (pytest-rabbitmq), 4.3 a container (testcontainers) of RABBITMQ_IMAGE or
    the image images/build makes."""
    if settings().amqp_url:
        yield from_settings(settings())
        return
    version = pytestconfig.getoption("--rabbitmq")
    tls = make_certificates(tmp_path_factory.mktemp("tls"))
    if version == "3.10":
        require(rabbitmq_installed(), "RabbitMQ 3.10 is the system package: apt-get install rabbitmq-server")
        with local_broker(tmp_path_factory.mktemp("broker"), tls=tls) as started:
            yield started
    else:
        require(docker_available(), f"RabbitMQ {version} runs in Docker: start dockerd (./kit test does)")
        with running_container_node(version, tmp_path_factory.mktemp("broker"), tls=tls) as node:
            yield Broker.of_local_node(node)


@pytest.fixture
def space(broker: Broker, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Space]:
    """A fresh vhost with a non-guest user allowed on it only; removed, with any process left, afterwards."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40] + "-" + secrets.token_hex(3)
    password = secrets.token_urlsafe(12)
    broker.admin.add_vhost(name)
    broker.admin.add_user(name, password)
    broker.admin.grant(name, name)
    created = Space(broker, name, name, password, tmp_path)
    yield created
    created.kill_all()
    broker.admin.delete_vhost(name)
    broker.admin.delete_user(name)


@pytest.fixture(scope="session")
def rabbitmq_version(broker: Broker) -> tuple[int, int]:
    """The broker's (major, minor) version, for claims that differ between versions."""
    return broker.version()


@pytest.fixture
def restartable(broker: Broker) -> Broker:
    """The broker, when this suite may restart it and change its settings (skipped, or under CI=true failed, if not)."""
    require(broker.controllable, "restarting needs a broker this suite started, or LABKIT_RABBITMQCTL with AMQP_URL")
    return broker


@pytest.fixture
def local_node(broker: Broker) -> LocalNode:
    """The node this suite started itself (its ports, TLS listener, files), for tests that need more than AMQP_URL."""
    require(broker.local is not None, "needs the broker this suite starts itself, not one given by AMQP_URL")
    return broker.local


@pytest.fixture
def tls_node(local_node: LocalNode) -> LocalNode:
    """The suite's own node with its amqps:// listener (tls_port, ca_cert)."""
    require(local_node.tls_port is not None, "the node has no TLS listener: install openssl")
    return local_node


@pytest.fixture
def administrator(broker: Broker) -> Iterator[tuple[str, str]]:
    """A user other than guest with the administrator tag and full permissions on "/": (username, password).

    Meanwhile guest cannot log in, as on a classroom broker, so whatever falls back to guest:guest fails.
    """
    username, password = f"admin-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    broker.admin.add_user(username, password, tags="administrator")
    broker.admin.grant(username, "/")
    as_admin = AdminAPI(broker.admin.base_url, username, password)
    as_admin.add_user(broker.username, secrets.token_urlsafe(12), tags="administrator")
    try:
        yield username, password
    finally:
        as_admin.add_user(broker.username, broker.password, tags="administrator")
        broker.admin.delete_user(username)


@pytest.fixture
def alone(tmp_path: Path) -> Path:
    """An empty folder holding only copies of the two scripts, as a student uploads them."""
    folder = tmp_path / "upload"
    folder.mkdir()
    root = Path(__file__).resolve().parent.parent
    for script in ("sender.py", "qprocessor.py"):
        shutil.copy2(root / script, folder / script)
    return folder
