"""The order conftest gives the collected tests, so that pytest-xdist's first blocks spread the long scenarios."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

from tests.conftest import pytest_collection_modifyitems


class Item:
    """What the ordering reads of a collected test: its id and its slow, xdist_group and last_in_group markers."""

    def __init__(self, nodeid: str, seconds: Optional[float] = None, group: Optional[str] = None,
                 last: bool = False) -> None:
        self.nodeid = nodeid
        self._markers = {"last_in_group": SimpleNamespace(args=(), kwargs={})} if last else {}
        if seconds is not None:
            self._markers["slow"] = SimpleNamespace(args=(), kwargs={"seconds": seconds})
        if group is not None:
            self._markers["xdist_group"] = SimpleNamespace(args=(group,), kwargs={})

    def get_closest_marker(self, name: str):
        return self._markers.get(name)

    def __repr__(self) -> str:
        return self.nodeid


def blocks_as_xdist_deals_them(items: list, processes: int) -> list[list]:
    """Work stealing's first distribution: contiguous blocks, the remainder going to the later ones."""
    blocks, left, start = [], len(items), 0
    for index in range(processes):
        size = left // (processes - index)
        blocks.append(items[start:start + size])
        left, start = left - size, start + size
    return blocks


def test_each_long_scenario_heads_a_block_and_a_shared_fixture_group_stays_together():
    quick = [Item(f"quick{n}") for n in range(40)]
    cluster = [Item("cluster-lab", 100, "cluster"), Item("cluster-kill", 45, "cluster")]
    long = [Item("faults", 45), Item("bench", 36), Item("compose", 38), Item("lab8", 16)]
    items = quick[:10] + [cluster[0]] + quick[10:30] + long + [cluster[1]] + quick[30:]
    collected = list(items)
    pytest_collection_modifyitems(SimpleNamespace(workerinput={"workercount": 4}), items)

    assert sorted(map(repr, items)) == sorted(map(repr, collected))  # the same tests, each once
    blocks = blocks_as_xdist_deals_them(items, 4)
    heads = [[item.nodeid for item in block if item.get_closest_marker("slow")] for block in blocks]
    # Longest first, each to the block with the least long work so far: the cluster pair (145 s) alone, the others
    # spread so that no block runs two long scenarios while another has none.
    assert heads == [["cluster-lab", "cluster-kill"], ["faults"], ["compose"], ["bench", "lab8"]]
    for block, names in zip(blocks, heads):
        assert [item.nodeid for item in block[:len(names)]] == names  # at the head: started at once, never stolen
    assert [item.nodeid for block in blocks for item in block if not item.get_closest_marker("slow")] == \
        [item.nodeid for item in quick]  # the quick ones keep their collection order


def test_without_xdist_the_long_scenarios_come_first():
    items = [Item("quick"), Item("long", 30), Item("other")]
    pytest_collection_modifyitems(SimpleNamespace(), items)
    assert [item.nodeid for item in items] == ["long", "quick", "other"]


def test_a_test_that_takes_its_groups_fixture_down_runs_after_the_rest_of_the_group():
    """The cluster command test takes the suite's cluster down: collected before the class-on-cluster test, it still
    runs after it, so the three nodes are not booted a second time."""
    group = [Item("cluster-lab", 100, "cluster"), Item("cluster-cli-down", 30, "cluster", last=True),
             Item("cluster-cli-ports", 30, "cluster"), Item("class-on-cluster", 20, "cluster")]
    items = [Item("quick0")] + group + [Item("quick1")]
    pytest_collection_modifyitems(SimpleNamespace(workerinput={"workercount": 2}), items)
    assert [item.nodeid for item in items if item.get_closest_marker("xdist_group")] == \
        ["cluster-lab", "cluster-cli-ports", "class-on-cluster", "cluster-cli-down"]
