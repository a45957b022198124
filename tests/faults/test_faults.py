"""Nothing confirmed is lost when workers are killed, the broker restarts and the network is cut.

The oracle is RabbitMQ's own guarantee: a confirmed persistent message in a durable queue survives all of these,
so with acknowledgements after the work every one of them must be processed at least once.
"""
from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from labs.amqp.connection import Event
from tests.helpers import SENDER, wait_until
from tests.proxy import CuttableProxy

pytestmark = [pytest.mark.faults, pytest.mark.restart, pytest.mark.slow]

MESSAGES = 5000
WORKER = ("--queue", "jobs", "--durable", "--acknowledge", "--prefetch", "10", "--seconds-per-char", "0.001",
          "--retry-for", "90", "--quiet")


@pytest.mark.slow(seconds=45)
def test_no_confirmed_message_is_lost_under_kills_restarts_and_cuts(space, restartable):
    rng = random.Random(20261122)
    sent = space.send("--queue", "jobs", "--durable", "--persistent", "--count", str(MESSAGES), "--length", "10",
                      "--quiet")
    assert f"sent {MESSAGES} messages" in sent.stdout  # every one confirmed by the broker
    bodies = {str(n).ljust(10, ".") for n in range(1, MESSAGES + 1)}

    proxy = CuttableProxy(restartable.port)
    through_proxy = space.env(AMQP_URL=space.url.replace(f":{restartable.port}/", f":{proxy.port}/"))
    workers = {name: None for name in ("w1", "w2", "w3")}
    incarnations: list = []

    def start(name: str):
        env = through_proxy if name == "w3" else None
        worker = space.start_worker(f"{name}-{len(incarnations)}", *WORKER, env=env)
        incarnations.append(worker)
        workers[name] = worker

    def done() -> set[str]:
        return {body for worker in incarnations for body in worker.bodies(Event.DONE)}

    try:
        for name in workers:
            start(name)
        kills = restarts = 0
        while kills < 10 or restarts < 1 or proxy.cuts < 3:
            progress = len(done())
            wait_until(lambda: len(done()) > progress + rng.randint(20, 120), 120, "workers to make progress")
            if kills == 5 and restarts == 0:
                wait_until(lambda: all(consuming(worker, proxy) for worker in workers.values()), 60,
                           "every worker to consume")
                restartable.restart()
                restarts += 1
            elif kills in (2, 4, 7) and proxy.cuts < (2, 4, 7).index(kills) + 1:
                wait_until(lambda: consuming(workers["w3"], proxy) and proxy.open_connections > 0, 60,
                           "the proxied worker to consume")
                proxy.cut()
            else:
                victim = rng.choice(list(workers))
                workers[victim].signal(signal.SIGKILL)
                workers[victim].wait(10)
                kills += 1
                start(victim)
        wait_until(lambda: done() >= bodies, 240, "every confirmed message to be processed")
    finally:
        for worker in incarnations:
            worker.signal(signal.SIGTERM)
        proxy.close()

    processed = [body for worker in incarnations for body in worker.bodies(Event.DONE)]
    duplicates = len(processed) - len(set(processed))
    lost = len(bodies - set(processed))
    print(f"\nfault injection: {MESSAGES} messages, {kills} kills, {restarts} broker restart(s), {proxy.cuts} cuts, "
          f"{lost} lost, {duplicates} duplicates, {len(incarnations)} worker processes")
    assert lost == 0
    cut_off = [w.events(Event.DISCONNECTED) for w in incarnations if w.name.startswith("w3")]
    assert sum(map(len, cut_off)) >= proxy.cuts + restarts, "the proxied worker saw each cut and the restart"


def consuming(worker, proxy: CuttableProxy) -> bool:
    """Whether the worker is consuming on its connection: it received a message since it last lost one.

    A worker started a moment ago may still be in its first AMQP handshake; a restart or a cut then is no fault of a
    working connection: the worker takes the reset for a port that does not speak AMQP (exit code 9), and one that
    reconnects logs no disconnection. Fails at once, saying why, if the worker has exited or the proxy stopped."""
    if worker.process.poll() is not None:
        raise AssertionError(f"worker {worker.name} exited ({worker.process.returncode}): {worker.output[-2000:]}; "
                             f"the proxy's last connections to the broker that failed or ended: "
                             f"{proxy.broker_side[-5:] or 'none'}")
    if not proxy.serving:
        raise AssertionError(f"the proxy stopped serving: {proxy.failure!r}")
    kinds = [event["event"] for event in worker.events()]
    since_lost = kinds[len(kinds) - kinds[::-1].index("disconnected"):] if "disconnected" in kinds else kinds
    return "received" in since_lost


def recovery_lines(node, vhost: str) -> str:
    """What a node logged about a vhost's queues and their recovery: why a queue came back short, if it did."""
    lines = [line for line in node.log_lines()
             if vhost in line or re.search(r"unclean|crash|[Rr]ecover|dropped|deleting", line)]
    return "\n".join(lines[-40:]) or "(nothing)"


@pytest.mark.slow(seconds=25)
def test_sender_resends_what_was_unconfirmed_when_the_broker_is_killed_mid_send(space, restartable):
    """Lines keep arriving on the sender's standard input (as from `tail -f log | sender.py`) at a steady pace until
    the broker has been killed, so the kill lands mid-send however fast the sender and the broker are.

    A clean stop confirms everything before it closes: nothing is left to resend, and a test built on one proves no
    resending. Here the node is killed (SIGKILL, or docker kill), and just before that the network path to it
    stalls: what the sender publishes meanwhile never reaches the broker and is never confirmed. Only a resend
    brings those messages into the queue."""
    if restartable.local is None:
        pytest.skip("kills the broker hard: needs a node this suite started (rabbitmqctl can only stop it cleanly)")
    chunk, pause = 60, 0.02  # 3,000 lines a second
    # Twice under CI load (stop 28's run, and one on 7 December) a 3.10 node killed here came back without the queue
    # itself ("Recovering 0 queues" in its log), declared some seconds before the kill; the sender then rightly
    # resent only what it had no confirm for, into a new empty queue. Our guess, unproven: Mnesia's log had not yet
    # written the declaration out. This test is about the sender's resend, so the queue exists before the send (as
    # a student's from an earlier step does) and, on 3.10, Mnesia's log is written out first.
    space.send("--queue", "bulk", "--durable", "--count", "1")
    space.send("--queue", "bulk", "--purge")
    if restartable.version()[0] < 4:
        restartable.local.ctl("eval", "mnesia:dump_log().")
    proxy = CuttableProxy(restartable.port)
    output = space.folder / "sender.out"
    with output.open("wb") as sink:
        sender = subprocess.Popen([sys.executable, str(SENDER), "--queue", "bulk", "--durable", "--persistent",
                                   "--quiet", "--retry-for", "90"], stdin=subprocess.PIPE, stdout=sink,
                                  stderr=subprocess.STDOUT, text=True,
                                  env=space.env(AMQP_URL=space.url.replace(f":{restartable.port}/",
                                                                           f":{proxy.port}/")))
    space.children.adopt(sender)
    killed = threading.Event()
    fed: list[int] = []

    def feed() -> None:
        """Until a moment after the kill: the lines that arrive while the node is down wait in the sender."""
        count = 0
        while not killed.is_set():
            sender.stdin.write("".join(f"{n}\n" for n in range(count + 1, count + chunk + 1)))
            sender.stdin.flush()
            count += chunk
            time.sleep(pause)
        sender.stdin.close()
        fed.append(count)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: space.ready_or_zero("bulk") > 2000, 60, "the send to be under way")
        proxy.freeze()
        time.sleep(0.3)  # some 900 lines: the sender publishes them into the stalled path, unconfirmed
        restartable.local.crash()
        killed.set()
        proxy.release()  # the sender now finds its connection dead, as the crash left it
        restartable.local.start()
        feeder.join(30)
        assert sender.wait(180) == 0, output.read_text()
    finally:
        killed.set()
        proxy.close()
    count, = fed
    said = output.read_text()
    assert f"sent {count} messages" in said  # every message confirmed once, after resending
    assert re.search(r"connection to 127.0.0.1:\d+ lost", said)
    assert "reconnected to 127.0.0.1:" in said
    resent = re.search(r"; (\d+) resent after a lost connection", said)
    assert resent and int(resent.group(1)) > 0, said
    # The durability oracle: the sender resends only what it has no confirm for, so a confirmed message the kill
    # had lost would be missing here; the resent ones must all be here too.
    worker = space.start_worker("drain", "--queue", "bulk", "--durable", "--acknowledge", "--prefetch", "500",
                                "--seconds-per-char", "0", "--quiet", "--idle-exit", "2")
    assert worker.wait(180) == 0
    received = worker.bodies(Event.DONE)
    missing = sorted({n for n in range(1, count + 1)} - {int(body) for body in received})
    assert not missing, (f"{len(missing)} of {count} confirmed messages missing after the kill "
                         f"({missing[0]} to {missing[-1]}); the sender said:\n{said}\n"
                         f"the node's log on recovery:\n{recovery_lines(restartable.local, space.vhost)}")
    assert len(received) >= count
    print(f"\nsender across a kill: {count} confirmed, {resent.group(1)} resent, "
          f"{len(received) - count} duplicates in the queue")


@pytest.mark.slow(seconds=10)
def test_sender_that_cannot_reconnect_reports_how_many_were_confirmed(space, restartable):
    if restartable.local is None:
        pytest.skip("keeps the broker down for a while: needs a node this suite started")
    sender = space.start_process("sender.py", "--queue", "halted", "--durable", "--persistent", "--count", "200000",
                                 "--quiet", "--retry-for", "2")
    wait_until(lambda: space.ready_or_zero("halted") > 2000, 60, "the send to be under way")
    restartable.local.stop()
    try:
        assert sender.wait(60) == 3
    finally:
        restartable.local.start()
    summary = [line for line in sender.output.splitlines() if line.startswith("sent ")][-1]
    confirmed = int(summary.split()[1])
    assert confirmed >= 2000
    assert "Error: cannot reach a broker" in sender.output
    assert space.ready("halted") >= confirmed  # at least every confirmed one survived the stop
