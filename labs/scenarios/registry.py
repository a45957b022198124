"""The labs in course order: the one list `python -m labs`, the demo and the tests read. Each lab's scenario lives in a
module of its own, grouped by part of the course (basics/, reliability/, systems/); its handout is
labs/handouts/NN-slug.md."""
from __future__ import annotations

from labs.scenarios.basics.lab01_hello_world import hello_world
from labs.scenarios.basics.lab02_work_queues import work_queues
from labs.scenarios.basics.lab03_failures import failures
from labs.scenarios.basics.lab04_acknowledgements import acknowledgements
from labs.scenarios.basics.lab05_fair_dispatch import fair_dispatch
from labs.scenarios.reliability.lab06_durability import durability
from labs.scenarios.reliability.lab07_purge_and_delete import purge_and_delete
from labs.scenarios.reliability.lab08_heartbeats import heartbeats
from labs.scenarios.reliability.lab09_poison_messages import poison_messages
from labs.scenarios.reliability.lab12_queue_full import queue_full
from labs.scenarios.runner import Lab
from labs.scenarios.systems.lab10_jobs_api import jobs_api
from labs.scenarios.systems.lab11_node_dies import node_dies

__all__ = ["LABS", "Lab"]  # Lab is defined beside the runner that runs it, and re-exported for the list's readers

LABS = [
    Lab(1, "hello-world", "Hello world from ipython and from the scripts", hello_world),
    Lab(2, "work-queues", "Several workers share one queue", work_queues),
    Lab(3, "failures", "Workers that lose messages, with auto-ack", failures),
    Lab(4, "acknowledgements", "Acknowledgements bring lost messages back", acknowledgements,
        sets_broker_settings=True, instructor="shortens the consumer timeout (a policy on RabbitMQ 4.3, the "
        "broker's setting before), then gives it back"),
    Lab(5, "fair-dispatch", "Prefetch 1 against uneven work", fair_dispatch),
    Lab(6, "durability", "Durable queues and persistent messages across a restart", durability,
        instructor="restarts the broker"),
    Lab(7, "purge-and-delete", "Purging and deleting queues", purge_and_delete),
    Lab(8, "heartbeats", "Heartbeats, long work and StreamLostError", heartbeats),
    Lab(9, "poison-messages", "Poison messages, delivery limits and dead letters", poison_messages,
        instructor="gives the student the policymaker tag, then takes it back"),
    Lab(10, "jobs-api", "A task queue behind a web API", jobs_api),
    Lab(11, "node-dies", "When a node dies: a quorum queue on a three-node cluster", node_dies, on_cluster=True),
    Lab(12, "queue-full", "When the queue is full: length limits, overflow and a blocked publisher", queue_full,
        instructor="sets off the memory alarm and lifts it"),
]
