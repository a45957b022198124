"""Several broker addresses (a cluster's nodes): both scripts connect to one, skip the ones that are down, and fail
over to another when theirs goes away. Here the "nodes" are proxies in front of the suite's broker, so a node can be
taken away at a chosen moment; tests/brokers/test_cluster.py does the same with a real cluster."""
from __future__ import annotations

import pytest

from labs.amqp.connection import Event
from tests.helpers import wait_until
from tests.proxy import CuttableProxy


@pytest.fixture
def nodes(broker):
    proxies = [CuttableProxy(broker.port, broker.host) for _ in range(2)]
    yield proxies
    for proxy in proxies:
        proxy.close()


def urls(space, ports) -> str:
    return " ".join(space.url.replace(f":{space.broker.port}/", f":{port}/") for port in ports)


def test_addresses_that_are_down_are_skipped(space, nodes):
    down = [nodes[0].port, nodes[1].port]
    for proxy in nodes:
        proxy.close()  # nothing listens there any more
    good = urls(space, [space.broker.port])
    env = space.env(AMQP_URL=f"{urls(space, down)} {good}")
    # Two of three addresses refuse; whichever order the shuffle picks, every run reaches the third.
    for run in range(4):
        result = space.send("--queue", "spread", f"m{run}", "--retry-for", "10", env=env)
        assert "sent 1 messages" in result.stdout
    assert space.ready("spread") == 4


def test_the_worker_fails_over_when_its_node_goes_away(space, nodes):
    space.send("--queue", "jobs", "--count", "8", "--length", "2")
    worker = space.start_worker("mover", "--queue", "jobs", "--acknowledge", "--prefetch", "1", "--seconds-per-char",
                                "0.2", "--idle-exit", "3", env=space.env(AMQP_URL=urls(space, [p.port for p in nodes])))
    worker.wait_for_events(Event.DONE, 2)
    used, other = (nodes[0], nodes[1]) if nodes[0].open_connections else (nodes[1], nodes[0])
    used.close()  # the node dies: its connections are cut and nothing answers there any more

    assert worker.wait(60) == 0
    assert f"reconnected to 127.0.0.1:{other.port}" in worker.output
    # The event log says the same: where the worker was, that it lost that node, and where it went on.
    moves = [(e["event"], e["node"]) for e in worker.events() if e["event"] in ("connected", "disconnected")]
    assert moves == [("connected", f"127.0.0.1:{used.port}"), ("disconnected", f"127.0.0.1:{used.port}"),
                     ("connected", f"127.0.0.1:{other.port}")], moves
    assert set(worker.bodies(Event.DONE)) == {str(n).ljust(2, ".") for n in range(1, 9)}  # every message, none lost
    wait_until(lambda: space.ready("jobs") == 0, 10, "an empty queue")


def test_the_sender_resends_its_unconfirmed_messages_through_another_node(space, nodes):
    env = space.env(AMQP_URL=urls(space, [p.port for p in nodes]))
    sender = space.start_process("sender.py", "--queue", "bulk", "--count", "20000", "--persistent", "--quiet", env=env)
    wait_until(lambda: nodes[0].open_connections or nodes[1].open_connections, 30, "the sender to connect")
    used, other = (nodes[0], nodes[1]) if nodes[0].open_connections else (nodes[1], nodes[0])
    wait_until(lambda: space.ready_or_zero("bulk") > 2000, 60, "publishing under way")
    used.close()

    assert sender.wait(120) == 0, sender.output
    assert f"reconnected to 127.0.0.1:{other.port}" in sender.output and "resend" in sender.output
    assert "sent 20000 messages" in sender.output
    assert space.ready("bulk") >= 20000  # every confirmed message is there (a resent one may be there twice)
