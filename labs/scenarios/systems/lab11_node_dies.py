"""Lab 11, When a node dies: a quorum queue on a three-node cluster fails over; a classic queue waits for its node."""
from __future__ import annotations

import collections
import signal
import time

from labs.amqp.connection import Event
from labs.drive.event_log import EventTally
from labs.drive.processes import numbered, wait_all, wait_for_consumers
from labs.drive.wait import wait_until
from labs.scenarios.runner import Context

CLUSTER_JOBS = 1500
CLUSTER_PREFETCH = 10
# 20 ms a message: 1,500 take three workers about 10 s, so the kill, right after the sender's run (which the workers
# overlap), still finds most of the work ahead.
CLUSTER_WORK = ("--queue-type", "quorum", "--acknowledge", "--prefetch", str(CLUSTER_PREFETCH), "--seconds-per-char",
                "0.005", "--retry-for", "60")
CLUSTER_IDLE = ("--idle-exit", "10")  # outlasts the set-up below and the sender's start


def node_dies(lab: Context) -> None:
    """Kill the node that leads the quorum queue under working workers: failover, the classic queue's outage, and
    nothing lost once the node is back."""
    cluster = lab.cluster
    assert cluster, "lab 11 runs on a cluster"
    version = lab.broker.version()  # asked of node 1 now: it may be the node that dies
    jobs = lab.run("jobs", url=lab.every_node_url(), paced=False)  # 1,500 jobs: a second a character would be hours
    jobs.depth_chart = True  # the report: the queue drains on through the kill
    # As in the handout: the workers first (the first to declare the queue places its leader on its own node).
    workers = {name: jobs.worker(name, *CLUSTER_WORK, *CLUSTER_IDLE) for name in ("w1", "w2", "w3")}
    wait_for_consumers(lab.node_url(1), "jobs", 3, timeout=60)
    members = cluster.queue(lab.vhost, "jobs").get("members") or []
    lab.claim("the quorum queue has a member on each of the three nodes", len(members) == 3, f"members {members}")

    leader = cluster.leader(lab.vhost, "jobs")
    doomed = cluster.number_of(leader)
    doomed_node = lab.node_address(doomed)
    # The claims on failover need a worker on the node that dies. Each picks its node at random: while none is there,
    # stop one and start it again, as the handout tells students to (nothing is sent yet, so nothing is disturbed).
    restarts = 0
    while doomed_node not in connected_nodes(jobs.tally()).values():
        if restarts == 5 or any(process.poll() is not None for process in workers.values()):
            raise RuntimeError(f"no worker connected to node {doomed} after {restarts} restarts of w3")
        incarnations = connected_count(jobs.tally(), "w3")
        workers["w3"].send_signal(signal.SIGTERM)
        wait_all([workers["w3"]], 30)
        workers["w3"] = jobs.worker("w3", *CLUSTER_WORK, *CLUSTER_IDLE)
        wait_until(lambda: connected_count(jobs.tally(), "w3") > incarnations, 60, "w3 to connect again")
        restarts += 1
    on_doomed = sorted(worker for worker, node in connected_nodes(jobs.tally()).items() if node == doomed_node)

    survivor = lab.node_url(next(n.number for n in cluster.nodes if n.number != doomed))
    # A classic queue lives on the node of the connection that declared it (the default queue leader locator).
    lab.run("jobs-classic", url=lab.node_url(doomed)).send("--queue-type", "classic", "--persistent", "--count", "5")
    lab.claim(f"a classic queue declared through node {doomed} lives on that node only",
              cluster.leader(lab.vhost, "jobs-classic") == leader and
              not cluster.queue(lab.vhost, "jobs-classic").get("members"))

    jobs.send("--queue-type", "quorum", "--persistent", "--count", str(CLUSTER_JOBS), "--length", "4", "--quiet",
              bodies=numbered(CLUSTER_JOBS, 4))
    wait_until(lambda: len(jobs.tally().bodies(Event.DONE)) >= CLUSTER_JOBS // 10, 90, "the workers under way")
    killed_at = time.time()
    cluster.kill(doomed)
    jobs.moments.append((killed_at, f"node {doomed} killed"))
    left = CLUSTER_JOBS - len(jobs.tally().bodies(Event.DONE))  # at most what the kill left: read just after it

    asked = time.monotonic()
    refused = lab.run("jobs-classic", url=survivor).send("--queue-type", "classic", "--count", "1", check=False)
    answered_in = time.monotonic() - asked  # 4.x retries for 60 s before it answers
    named = leader in refused.stderr or version >= (4, 0)  # 4.x does not tell clients the node
    lab.claim(f"the classic queue is unavailable while node {doomed} is down: sender.py through another node exits "
              "with code 13 and says the queue's node is down", refused.returncode == 13 and named and
              "down or unreachable" in refused.stderr, f"after {answered_in:.0f} s: {refused.stderr.strip()}")
    wait_all(list(workers.values()), 240)
    tally = jobs.tally()
    after = sorted(e["time"] for e in tally.events if e["event"] == Event.DONE and e["time"] > killed_at)
    pause = max((later - earlier for earlier, later in zip([killed_at, *after], after)), default=float("inf"))
    new_leader = cluster.leader(lab.vhost, "jobs")
    # Everything left at the kill is processed by the survivors, but what the dead node's workers held (on 4.x).
    lab.claim("the quorum queue elects a new leader on a surviving node and its work goes on",
              new_leader not in (None, leader) and left >= CLUSTER_JOBS // 3 and
              len(after) >= left - 3 * CLUSTER_PREFETCH,
              f"leader {leader} -> {new_leader}; {len(after)} of the {left} left processed after the kill; "
              f"longest pause {pause:.1f}s")
    held = set(jobs.sent) - tally.processed  # 4.x keeps these with the dead node's consumers until it returns
    went_on = [worker for worker in on_doomed if failed_over(tally, worker, doomed_node, killed_at)]
    lab.claim("a worker whose node died reconnected through another node and went on working",
              bool(on_doomed) and went_on == on_doomed,
              f"on node {doomed}: {on_doomed or 'none'} ({restarts} restarts of w3 to get one there); "
              f"lost node {doomed}, connected to another and worked there: {went_on or 'none'}")
    if version < (4, 0):
        lab.claim("RabbitMQ 3.x gives back at once what the dead node's consumers held: all done before it returns",
                  not held, f"{len(held)} waiting for the node")
    else:
        lab.claim(f"RabbitMQ 4.x keeps what the dead node's consumers held until the node returns (it cannot tell a "
                  f"crash from a partition): at most their prefetch windows, 3 x {CLUSTER_PREFETCH}",
                  len(held) <= 3 * CLUSTER_PREFETCH, f"{len(held)} waiting for the node")

    jobs.moments.append((time.time(), f"node {doomed} started again"))
    cluster.start(doomed)
    cluster.wait_formed()
    wait_until(lambda: len(cluster.queue(lab.vhost, "jobs").get("members") or []) == 3, 90, "three members again")
    lab.claim(f"node {doomed} comes back and rejoins: the quorum queue has three members again", True)
    back = lab.ready("jobs-classic", survivor)
    lab.claim("the classic queue is back with its node, with its 5 persistent messages", back == 5, f"{back} ready")

    # No idle exit: on 4.x what the dead node's consumers held comes back only once the queue has noticed, after the
    # node's return, that they are gone, which took over 5 s on a busy machine. Stopped once everything is processed.
    jobs.worker("sweeper", *CLUSTER_WORK)
    jobs.finish(timeout=120)
    tally = jobs.tally()
    done = collections.Counter(tally.bodies(Event.DONE))
    duplicates = sum(done.values()) - len(done)
    lab.claim(f"every confirmed message is processed: {len(tally.missing)} of {CLUSTER_JOBS} lost", not tally.missing,
              f"{len(held)} of them waited for the node to return")
    lab.claim(f"{duplicates} processed twice: work whose ack was lost with the node, at most what the workers held "
              f"unacknowledged (3 x prefetch {CLUSTER_PREFETCH})", duplicates <= 3 * CLUSTER_PREFETCH)



def connected_nodes(tally: EventTally) -> dict[str, str]:
    """The node each worker connected to last, from the 'connected' events of the run's log."""
    return {e["worker"]: e["node"] for e in tally.events if e["event"] == Event.CONNECTED}


def failed_over(tally: EventTally, worker: str, lost: str, since: float) -> bool:
    """Whether the worker's log shows, after `since`, the connection to node `lost` lost, then a connection to
    another node, then work done there."""
    steps = iter(e for e in tally.events if e["worker"] == worker and e["time"] >= since)
    return (any(e["event"] == Event.DISCONNECTED and e["node"] == lost for e in steps)
            and any(e["event"] == Event.CONNECTED and e["node"] != lost for e in steps)
            and any(e["event"] == Event.DONE for e in steps))


def connected_count(tally: EventTally, worker: str) -> int:
    return sum(1 for e in tally.events if e["event"] == Event.CONNECTED and e["worker"] == worker)
