"""The class on one shared broker, safe by default: provisioning gives each student limits they cannot lift, and what
a student meets at a limit is one line that names it, with its own exit code, never "unreachable" or "no permission".
"""
from __future__ import annotations

import contextlib
import resource
import subprocess
import sys
import time
from typing import Iterator

import pika
import pytest

from labs.amqp.management import CLASS_CAP
from labs.brokers.broker import Broker
from labs.brokers.local_node import LocalNode
from labs.brokers.rabbitmqctl import memory_watermark, read_rabbit_env, restore_rabbit_env
from labs.classroom.provision import ClassLimits, Student, write_passwords
from labs.drive.wait import wait_until
from tests.classroom.accounts import as_student, passwords, provision
from tests.helpers import ROOT, assert_one_line_error, require

EXIT_NOT_CONFIRMED, EXIT_BLOCKED, EXIT_LIMIT_REACHED = 7, 10, 15
MIB = 1024 * 1024


def admin_get(broker, path: str):
    return broker.admin.request("GET", path)


def queue_holding(broker, vhost: str, queue: str, messages: int) -> dict:
    """The queue as the management API shows it once it counts `messages` (its statistics lag a moment), or as it
    last showed it."""
    def shown() -> dict:
        return broker.admin.queue(vhost, queue)
    wait_until(lambda: shown().get("messages") == messages, 15, "the queue's statistics", or_last=True)
    return shown()


def test_every_student_gets_the_class_limits_and_the_management_tag(broker, students):
    names, roster = students
    result = provision(broker, roster, "--max-queue-mb", "2", "--max-connections", "3", "--max-queues", "5")
    assert "queues refuse new messages past 2 MiB, at most 3 connections and 5 queues" in result.stdout
    major = broker.version()[0]
    for name in names:
        assert admin_get(broker, f"/api/vhost-limits/{name}")[0]["value"] == {"max-connections": 3, "max-queues": 5}
        assert admin_get(broker, f"/api/user-limits/{name}")[0]["value"] == {"max-connections": 3, "max-channels": 24}
        operator = admin_get(broker, f"/api/operator-policies/{name}/{CLASS_CAP}")
        assert operator["definition"]["max-length-bytes"] == 2 * MIB
        # RabbitMQ 4 takes the refusal into the operator policy itself; 3.10 refuses it there, so a policy says it.
        assert operator["definition"].get("overflow") == ("reject-publish" if major >= 4 else None)
        # 3.10 only: on 4 a policy beside the operator policy would tie with the instructor's own ones and hide them.
        assert [(p["name"], p["definition"]) for p in admin_get(broker, f"/api/policies/{name}")] == \
            ([] if major >= 4 else [(CLASS_CAP, {"overflow": "reject-publish"})])
        assert admin_get(broker, f"/api/users/{name}")["tags"] in (["management"], "management")

    # A re-run with other limits sets them again and keeps every password; --no-limits takes them all away.
    if major >= 4:  # as a class provisioned before the cap was the operator policy alone on 4 has it
        broker.admin.request("PUT", f"/api/policies/{names[0]}/{CLASS_CAP}", ClassLimits.policy())
    handed_out = passwords(roster)
    provision(broker, roster, "--max-connections", "7")
    assert passwords(roster) == handed_out
    assert [p["name"] for p in admin_get(broker, f"/api/policies/{names[0]}")] == ([] if major >= 4 else [CLASS_CAP])
    assert admin_get(broker, f"/api/vhost-limits/{names[0]}")[0]["value"]["max-connections"] == 7
    assert admin_get(broker, f"/api/user-limits/{names[0]}")[0]["value"]["max-connections"] == 7
    # A student with an account and no row in the CSV keeps their password, and gets the new limits all the same.
    roster.with_suffix(".csv").unlink()
    provision(broker, roster, "--max-connections", "9")
    assert admin_get(broker, f"/api/user-limits/{names[0]}")[0]["value"]["max-connections"] == 9
    pika.BlockingConnection(pika.URLParameters(broker.url(names[0], names[0], handed_out[names[0]]))).close()
    write_passwords(roster.with_suffix(".csv"), [Student(name, handed_out[name]) for name in names])
    provision(broker, roster, "--no-limits")
    assert passwords(roster) == handed_out
    assert admin_get(broker, f"/api/vhost-limits/{names[0]}") == []
    assert admin_get(broker, f"/api/user-limits/{names[0]}") == []
    assert admin_get(broker, f"/api/operator-policies/{names[0]}") == []
    assert admin_get(broker, f"/api/policies/{names[0]}") == []


def test_no_limits_and_a_limit_together_are_refused_in_one_line(tmp_path):
    roster = tmp_path / "roster.txt"
    roster.write_text("ann\n")
    result = subprocess.run([sys.executable, "-m", "labs", "class", "provision", str(roster), "--definitions",
                             str(tmp_path / "d.json"), "--no-limits", "--max-queues", "9"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert_one_line_error(result, 2, "--no-limits takes every limit away: leave out --max-queues")


def test_a_flood_is_refused_at_the_class_cap_and_the_sender_says_so(broker, students, space):
    """The cap refuses new messages (reject-publish): what is on the queue stays, the rest was never "sent"; a
    larger limit of the student's own cannot lift it, nor can the scripts' own policy for a queue's limits."""
    names, roster = students
    provision(broker, roster, "--max-queue-mb", "1", "--policymaker")
    ann = names[0]
    env = as_student(space, broker, ann, passwords(roster)[ann])
    flood = space.send("--queue", "flood", "--count", "300", "--length", "10000", "--quiet", check=False, env=env)
    assert flood.returncode == EXIT_NOT_CONFIRMED, flood.stderr
    confirmed = int(flood.stdout.split("sent ")[1].split()[0])
    assert 90 <= confirmed <= 110, flood.stdout  # 1 MiB of 10,000-byte messages
    assert f"{300 - confirmed} nacked by the broker" in flood.stdout
    assert (f"queue 'flood' is full at 1 MiB, the cap your instructor set on every queue of the class: the broker "
            f"refused {300 - confirmed} messages; those {300 - confirmed} were never sent, and nothing already on "
            "the queue was lost") in flood.stderr, flood.stderr
    assert "Traceback" not in flood.stderr
    assert flood.stderr.count("refused (nacked) message") == 1, "a flood's refusals are counted, not listed"
    held = queue_holding(broker, ann, "flood", confirmed)
    assert held.get("messages") == confirmed and held["message_bytes"] <= MIB, held
    connection = pika.BlockingConnection(pika.URLParameters(broker.url(ann, ann, passwords(roster)[ann])))
    try:
        first = connection.channel().basic_get("flood", auto_ack=False)[2]
        assert first.startswith(b"1."), first[:20]  # the oldest message is still there: nothing was dropped
        # A queue of the student's own with a far larger limit is still capped at the class's.
        channel = connection.channel()
        channel.queue_declare("mine", durable=True, arguments={"x-max-length-bytes": 10**9})
    finally:
        connection.close()
    mine = space.send("--queue", "mine", "--no-declare", "--count", "300", "--length", "10000", "--quiet", check=False, env=env)
    assert mine.returncode == EXIT_NOT_CONFIRMED and "is full at 1 MiB, the cap your instructor set" in mine.stderr
    # A policymaker's script sets a policy of its own for the queue's delivery limit: the cap holds on it too.
    # A quorum queue takes a moment to learn it is full (3.10 took in about 4 MB past a 1 MiB cap, the sender's
    # messages in flight): a 10 MB flood shows the cap, not the overshoot.
    # The queue is there before the flood, as a student's usually is: a new queue's policies reach the management
    # API with its statistics, which for a quorum queue took 8 s here, past the sender's wait to name the limit.
    limits = ("--queue", "limited", "--queue-type", "quorum", "--delivery-limit", "3")
    assert "policy 'labkit-limited'" in space.send(*limits, "first", env=env).stderr
    wait_until(lambda: broker.admin.queue(ann, "limited").get("operator_policy") == CLASS_CAP, 30, "the queue's policy")
    limited = space.send(*limits, "--count", "1000", "--length", "10000", "--quiet", check=False, env=env)
    assert limited.returncode == EXIT_NOT_CONFIRMED, limited.stderr
    assert "is full at 1 MiB, the cap your instructor set" in limited.stderr
    # Its statistics may lag the sender's last confirm (a quorum queue's showed none for a moment under CI load).
    counted = wait_until(lambda: broker.admin.queue(ann, "limited").get("messages"), 30, "the queue's statistics")
    assert counted <= 600


def test_a_connection_past_the_limit_is_refused_in_one_line_at_once(broker, students, space):
    names, roster = students
    provision(broker, roster, "--max-connections", "2")
    ann = names[0]
    url = broker.url(ann, ann, passwords(roster)[ann])
    held = [pika.BlockingConnection(pika.URLParameters(url)) for _ in range(2)]
    try:
        started = time.monotonic()
        worker = space.run_worker("--idle-exit=0.5", check=False, env=as_student(space, broker, ann,
                                                                                   passwords(roster)[ann]))
        took = time.monotonic() - started
    finally:
        for connection in held:
            connection.close()
    # The user's limit and the vhost's are equal here: either may be the one the broker names.
    assert_one_line_error(worker, EXIT_LIMIT_REACHED, "connection refused: ",
                          f"'{ann}' already has 2 connections open, the limit your instructor set")
    assert took < 5, f"refused at a limit, the worker retried for {took:.1f}s"
    # A classmate is not affected by ann's connections.
    ben = names[1]
    assert space.send("hi", env=as_student(space, broker, ben, passwords(roster)[ben])).returncode == 0


def test_a_queue_past_the_limit_is_refused_in_one_line(broker, students, space):
    names, roster = students
    provision(broker, roster, "--max-queues", "2")
    ann = names[0]
    env = as_student(space, broker, ann, passwords(roster)[ann])
    for queue in ("one", "two"):
        space.send("--queue", queue, "x", env=env)
    third = space.send("--queue", "three", "x", check=False, env=env)
    assert_one_line_error(third, EXIT_LIMIT_REACHED, f"cannot declare queue 'three': vhost '{ann}' already holds 2 "
                                                     "queues, the limit your instructor set")


def alarms(broker) -> set[str]:
    return {kind for node in broker.admin.request("GET", "/api/nodes")
            for kind, key in (("memory", "mem_alarm"), ("disk", "disk_free_alarm")) if node.get(key)}


def node_figure(broker, key: str) -> int:
    return wait_until(lambda: broker.admin.request("GET", "/api/nodes")[0].get(key), 30, f"the node's {key}")


@contextlib.contextmanager
def alarm_within(broker, room: int) -> Iterator[str]:
    """Bring the node's alarm threshold to `room` bytes past what it uses now, and back afterwards; yields which
    alarm that is. RabbitMQ 3.10's classic queues hold a queue's messages in memory, so a flood sets off the memory
    alarm; 4.x's keep them on disk, where a full disk sets off the disk alarm. Either blocks every publisher."""
    if broker.version()[0] < 4:
        # Paging off meanwhile: 3.10 pages a queue's messages out to disk from half the watermark on, which ended the
        # alarm within seconds on a loaded CI machine, before the test could see it block a classmate.
        paging = read_rabbit_env(broker.ctl, ("vm_memory_high_watermark_paging_ratio",),
                                 then="application:set_env(rabbit, vm_memory_high_watermark_paging_ratio, 10.0)")
        was = memory_watermark(broker.ctl, then=f"{{absolute, {node_figure(broker, 'mem_used') + room}}}")

        def restore() -> None:
            memory_watermark(broker.ctl, then=was)
            broker.ctl("eval", restore_rabbit_env(paging) + ".")
        kind = "memory"
    else:
        was = node_figure(broker, "disk_free_limit")
        broker.ctl("set_disk_free_limit", str(node_figure(broker, "disk_free") - room))
        restore = lambda: broker.ctl("set_disk_free_limit", str(was))  # noqa: E731
        kind = "disk"
    try:
        yield kind
    finally:
        restore()


def classmate_round_trip(space, env: dict) -> float:
    """Seconds for a classmate to send 20 messages and have a worker process them all (lab 2's first steps)."""
    started = time.monotonic()
    sent = space.send("--queue", "tasks", "--count", "20", "--quiet", "--blocked-timeout", "20", check=False, env=env)
    assert sent.returncode == 0, f"the classmate's sender: {sent.stderr}"
    worker = space.run_worker("--queue", "tasks", "--acknowledge", "--seconds-per-char", "0", "--max-messages", "20",
                              env=env)
    assert worker.returncode == 0, worker.stderr
    return time.monotonic() - started


@pytest.mark.slow(seconds=35)
def test_a_flood_at_the_cap_blocks_no_classmate_where_without_it_an_alarm_blocks_everyone(broker, students, space):
    """On a node with room for about 120 MB more, a 200 MB flood with no consumer sets off the
    node's alarm without the cap (every publisher of the node blocked, a classmate too), and with the cap is refused
    at 16 MiB while a classmate sends and works on as usual."""
    require(broker.controllable, "lowers the node's alarm threshold")
    names, roster = students
    ann = names[0]
    provision(broker, roster, "--max-queue-mb", "16")
    ann_env, ben_env = (as_student(space, broker, name, passwords(roster)[name]) for name in names)
    try:
        with alarm_within(broker, 120 * MIB) as kind:
            # Persistent messages for the disk; on 3.10 transient ones, which stay in memory (persistent ones were
            # paged out within seconds, and the alarm with them).
            flood = ("--queue", "flood", "--count", "20000", "--length", "10000", "--quiet", "--blocked-timeout", "5",
                     *(("--persistent",) if kind == "disk" else ()))
            capped = space.send(*flood, check=False, env=ann_env)
            assert capped.returncode == EXIT_NOT_CONFIRMED and "is full at 16 MiB" in capped.stderr, capped.stderr
            assert alarms(broker) == set(), "the capped flood set off an alarm"
            assert classmate_round_trip(space, ben_env) < 10

            provision(broker, roster, "--no-limits")  # the same flood without the cap
            space.send("--queue", "flood", "--purge", env=ann_env)
            uncapped = space.send(*flood, check=False, env=ann_env)
            assert wait_until(lambda: kind in alarms(broker), 30, "the alarm", or_last=True), (
                f"200 MB with no cap set off no {kind} alarm: {uncapped.stdout} {uncapped.stderr}")
            if kind == "memory":  # held on: with the flooder gone, a collection could bring 3.10's memory back under
                #                   the threshold (it did once on a loaded CI machine) before a classmate tried
                memory_watermark(broker.ctl, then=f"{{absolute, {node_figure(broker, 'mem_used') * 4 // 5}}}")
            blocked = space.send("--queue", "tasks", "one", "--blocked-timeout", "2", check=False, env=ben_env)
            assert blocked.returncode == EXIT_BLOCKED, f"a classmate was not blocked by the alarm: {blocked.stderr}"
    finally:
        broker.admin.delete_queue(ann, "flood")
        wait_until(lambda: not alarms(broker), 60, "the alarm to clear")


@contextlib.contextmanager
def open_files_limit(soft: int) -> Iterator[None]:
    """This process's soft limit on open files lowered, so that a node started meanwhile inherits it (as a broker
    started from a shell without systemd's tuning does: 1024 is common, lower shows the same sooner)."""
    was = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, was[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, was)


@pytest.mark.slow(seconds=25)
@pytest.mark.skipif("config.getoption('--rabbitmq') != '3.10'",
                    reason="starts a local node of its own (rabbitmq-server 3.10): the 4.3 run would repeat it")
def test_a_runaway_connection_loop_stops_at_the_limit_and_classmates_still_connect(tmp_path, space):
    """A broker with few sockets (open files limited to 400: about 270 sockets, its log says): one student's loop
    that opens connections and never closes them is refused at 32, and four classmates connect and finish."""
    with open_files_limit(400):
        node = LocalNode(tmp_path / "node").start()
    held: list = []
    try:
        roster = tmp_path / "roster.txt"
        names = ["runaway", "amy", "bo", "cy", "di"]
        roster.write_text("\n".join(names) + "\n")
        broker = Broker("127.0.0.1", node.port, "guest", "guest", "/", node.admin)
        provision(broker, roster)
        secret = passwords(roster)
        refusal = ""
        runaway = pika.URLParameters(broker.url("runaway", "runaway", secret["runaway"]))
        while len(held) < 300:
            try:
                held.append(pika.BlockingConnection(runaway))
            except pika.exceptions.AMQPConnectionError as exc:
                refusal = str(exc)
                break
        assert len(held) == 32 and "connection limit (32) is reached" in refusal, (len(held), refusal)
        for name in names[1:]:  # while the runaway's 32 are held
            env = space.env(AMQP_URL=broker.url(name, name, secret[name]))
            assert space.send("--queue", "tasks", "one", env=env).returncode == 0
            done = space.run_worker("--queue", "tasks", "--acknowledge", "--max-messages", "1", env=env)
            assert "processed 1" in done.stdout + done.stderr, done.stderr
    finally:
        for connection in held:
            connection.close()
        node.stop()
