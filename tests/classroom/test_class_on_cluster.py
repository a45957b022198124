"""A class on the kit's three-node cluster: `class status` and `class dashboard` read the same figures from any node's
management API, and a node that dies is an alarm ("down") in both, not a failure of either."""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from labs.brokers.broker import Broker
from labs.drive.wait import wait_until
from tests.browser import chromium
from tests.classroom.test_class_status import Klass, admin_env, class_cli
from tests.classroom.test_dashboard import cell, dashboards, publish  # noqa: F401 - dashboards is a fixture

# The suite's three nodes (tests/brokers/shared_cluster.py): on the test process that runs every cluster test.
pytestmark = [pytest.mark.slow(seconds=20), pytest.mark.xdist_group("cluster")]


def status_from(node_broker: Broker, klass: Klass) -> dict:
    result = class_cli(node_broker, "status", "--roster", str(klass.roster), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_class_reads_the_same_from_every_node_and_a_node_down_is_an_alarm(cluster, dashboards, tmp_path):
    nodes = [Broker.of_cluster_node(node) for node in cluster.nodes]
    klass = Klass(nodes[0], tmp_path, ["ann", "ben"])
    ann, ben = klass.names
    # Given four messages in a quorum queue of Ben's (replicated on the three nodes) and nothing of Ann's,
    publish(nodes[0], ben, "jobs", 4, queue_type="quorum")

    # every node's management API tells the same class,
    def figures(document: dict) -> list[tuple]:
        return [(s["name"], s["queues"], s["ready"], s["unacked"], s["consumers"], s["flags"])
                for s in document["students"]]

    expected = [(ann, 0, 0, 0, 0, []), (ben, 1, 4, 0, 0, ["backlog"])]
    for node in nodes:
        found = wait_until(lambda: (lambda d: d if figures(d) == expected else None)(status_from(node, klass)), 30,
                           f"the class's figures from {node.admin.base_url}", or_last=True)
        assert found is not None and found["alarms"] == [], (node.admin.base_url, found)

    # and when node 3 dies, the others say so as an alarm and go on showing the class: in the JSON,
    cluster.kill(3)
    down = {"node": cluster.nodes[2].name, "alarm": "down"}
    document = wait_until(lambda: (lambda d: d if down in d["alarms"] else None)(status_from(nodes[0], klass)), 60,
                          "node 3 down in class status")
    assert figures(document) == expected
    # and on the page served from node 2's figures.
    dashboard = dashboards(klass.roster, admin_env(nodes[1]), "--refresh", "1")
    with chromium() as browser:
        view = browser.new_page(viewport={"width": 1600, "height": 900})
        view.goto(dashboard.url)
        banner = view.locator('[data-alarm="down"]')
        expect(banner).to_be_visible(timeout=30_000)
        expect(banner).to_have_attribute("data-node", cluster.nodes[2].name)
        expect(cell(view, ben, "ready")).to_have_text("4")
        expect(view.locator("#error")).to_be_hidden()
