"""What the lab teaches, proven on a real broker with the scripts run as students run them."""
from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from labs.amqp.connection import Event
from tests.helpers import all_bodies, wait_until
from tests.proxy import CuttableProxy

FAST = ("--seconds-per-char", "0")


def test_hello_world_round_trip(space):
    sent = space.send("Hello World!")
    assert "sent 'Hello World!'" in sent.stdout
    assert re.search(r"sent 1 messages to queue 'hello' on vhost '[^']+' in [\d.]+s \([\d,]+ msg/s\)", sent.stdout)

    received = space.run_worker("--max-messages", "1", "--seconds-per-char", "0.01")

    assert "received 'Hello World!'" in received.stdout
    assert "summary: received 1, processed 1, lost 0" in received.stdout
    assert space.ready("hello") == 0


def test_every_message_carries_a_unique_id(space):
    space.send("--count", "50", "--length", "4")
    worker = space.start_worker("w", *FAST, "--max-messages", "50")
    assert worker.wait() == 0
    received = worker.events(Event.RECEIVED)
    assert [r["body"] for r in received] == [str(n).ljust(4, ".") for n in range(1, 51)]
    ids = [r["message_id"] for r in received]
    assert len(set(ids)) == 50 and all(ids)


def test_messages_from_standard_input_one_per_line(space):
    sent = space.send("--queue", "lines", input="first\n\nsecond\nthird\n")
    assert "sent 3 messages" in sent.stdout
    assert space.ready("lines") == 3


def test_large_counts_show_a_summary_instead_of_a_line_each(space):
    sent = space.send("--count", "2000", "--persistent", "--durable", "--queue", "bulk")
    assert "sent 2000 messages to queue 'bulk'" in sent.stdout
    assert "sent '1'" not in sent.stdout
    assert space.ready("bulk") == 2000


def test_three_workers_share_a_queue_round_robin(space):
    workers = [space.start_worker(f"w{n}", "--seconds-per-char", "0.01") for n in range(3)]
    space.wait_for_consumers("hello", 3)

    space.send("--count", "9")

    wait_until(lambda: len(all_bodies(workers, Event.DONE)) == 9, 30, "9 messages done")
    shares = sorted(sorted(int(body) for body in w.bodies(Event.DONE)) for w in workers)
    # The broker deals messages out in turn: each worker gets every third one.
    assert shares == [[1, 4, 7], [2, 5, 8], [3, 6, 9]]


def test_auto_ack_with_lose_every_3_loses_every_third_message_for_good(space):
    space.send("--count", "12")
    worker = space.start_worker("careless", *FAST, "--lose-every", "3", "--max-messages", "12")

    assert worker.wait() == 0
    assert worker.bodies(Event.LOST) == ["3", "6", "9", "12"]
    assert worker.bodies(Event.DONE) == ["1", "2", "4", "5", "7", "8", "10", "11"]
    assert "summary: received 12, processed 8, lost 4" in worker.output
    stats = wait_until(lambda: (s := space.queue_stats("hello")).get("messages") == 0 and s, 10, "empty queue")
    assert stats["messages_unacknowledged"] == 0  # gone for good: nothing will bring them back


@pytest.mark.parametrize("mode", ["drop", "crash", "requeue"])
def test_with_acknowledge_every_lost_message_comes_back(space, mode):
    space.send("--count", "12", "--length", "2")
    losers = [space.start_worker(f"{mode}{n}", "--acknowledge", "--seconds-per-char", "0.01",
                                 "--lose-every", "3", "--lose-mode", mode, "--idle-exit", "1") for n in range(3)]
    for loser in losers:
        loser.wait(60)
    # A steady worker finishes whatever the losers left: dropped messages return when their worker disconnects.
    steady = space.start_worker("steady", "--acknowledge", *FAST, "--idle-exit", "1")
    assert steady.wait(60) == 0
    workers = [*losers, steady]

    sent = [str(n).ljust(2, ".") for n in range(1, 13)]
    assert sorted(set(all_bodies(workers, Event.DONE))) == sorted(sent), "every message processed by some worker"
    lost = all_bodies(losers, Event.REQUEUED if mode == "requeue" else "lost")
    assert lost, "the losers lost nothing: the test proves nothing"
    redelivered = {r["body"] for w in workers for r in w.events(Event.RECEIVED) if r["redelivered"]}
    assert set(lost) <= redelivered, "each lost message came back flagged redelivered"
    if mode == "crash":
        assert any(w.process.returncode == -signal.SIGKILL for w in losers)
    assert space.ready("hello") == 0


def test_prefetch_1_spreads_uneven_work_where_no_prefetch_does_not(space):
    # Odd messages are long (41 chars: 1.23 s), even ones short (2 chars: 0.06 s). Round-robin hands every long one
    # to the same worker. With prefetch 1 the next message goes to whoever acks first: one worker takes L1, the
    # other s2 and, 0.06 s later, L3; L1's worker frees first and takes s4; then of L5/s6 and L7/s8 each worker
    # ends up with one long one, whichever of them wins the near-tie at 1.29 s. So 2 and 2, for any timing noise
    # under about 0.35 s per message (a simulation of random delays per delivery shows no other split below that).
    bodies = [("L" * 40 if n % 2 else "s") + str(n) for n in range(1, 9)]

    def long_ones_per_worker(*options: str, queue: str) -> list[int]:
        workers = [space.start_worker(f"{queue}{n}", "--queue", queue, "--acknowledge", "--seconds-per-char",
                                      "0.03", *options) for n in range(2)]
        space.wait_for_consumers(queue, 2)
        space.send("--queue", queue, *bodies)
        wait_until(lambda: len(all_bodies(workers, Event.DONE)) == len(bodies), 60, f"the work on {queue!r}")
        for worker in workers:
            worker.signal(signal.SIGTERM)
            assert worker.wait(20) == 0
        assert sorted(all_bodies(workers, Event.DONE)) == sorted(bodies)
        return sorted(sum(body.startswith("L") for body in w.bodies(Event.DONE)) for w in workers)

    assert long_ones_per_worker(queue="unfair") == [0, 4]
    assert long_ones_per_worker("--prefetch", "1", queue="fair") == [2, 2]


def test_a_long_message_under_a_short_heartbeat_completes(space):
    # 8 s of work against a 2 s heartbeat: the broker drops a silent connection after about 4 s.
    space.send("long-work")
    worker = space.start_worker("patient", "--acknowledge", "--heartbeat", "2", "--seconds-per-char", "0.9",
                                "--max-messages", "1")
    assert worker.wait(60) == 0
    assert worker.bodies(Event.DONE) == ["long-work"]
    assert " lost (" not in worker.output  # no "connection to ... lost (...)"
    assert not any(r["redelivered"] for r in worker.events(Event.RECEIVED))


def test_sigterm_abandons_the_current_message_which_goes_back_to_the_queue(space):
    space.send("a-very-long-task")
    worker = space.start_worker("stopper", "--acknowledge", "--seconds-per-char", "10")
    worker.wait_for_events(Event.RECEIVED, 1)

    worker.signal(signal.SIGTERM)

    assert worker.wait(20) == 0
    assert worker.bodies(Event.ABANDONED) == ["a-very-long-task"]
    assert "summary: received 1, processed 0" in worker.output
    wait_until(lambda: space.ready("hello") == 1, 10, "the abandoned message back in the queue")


def test_a_second_signal_exits_at_once(space, broker):
    # Behind a frozen network path the first signal's clean stop (reject, cancel, close) waits for broker replies
    # that never come: only the second signal can end the worker.
    proxy = CuttableProxy(broker.port, broker.host)
    try:
        space.send("another-long-task")
        through_proxy = space.env(AMQP_URL=space.url.replace(f":{broker.port}/", f":{proxy.port}/"))
        worker = space.start_worker("impatient", "--acknowledge", "--seconds-per-char", "10", env=through_proxy)
        worker.wait_for_events(Event.RECEIVED, 1)
        proxy.freeze()
        worker.signal(signal.SIGINT)
        wait_until(lambda: "stopping" in worker.output, 10, "the first signal to be noticed")
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(1.5)  # the graceful stop is stuck waiting for the broker, as it should be
        started = time.monotonic()
        worker.signal(signal.SIGINT)
        assert worker.wait(5) == 130
        assert time.monotonic() - started < 5
        assert "summary:" not in worker.output  # it quit at once, without the clean stop's summary
    finally:
        proxy.close()


def test_idle_exit_and_max_messages_end_the_worker(space):
    space.send("--count", "5")
    assert "received 3" in space.run_worker(*FAST, "--acknowledge", "--max-messages", "3").stdout
    idle = space.run_worker(*FAST, "--idle-exit", "0.5")
    assert "summary: received 2, processed 2" in idle.stdout


def test_auto_ack_worker_reports_pushed_messages_it_exits_without_processing(space):
    space.send("--count", "5")
    worker = space.start_worker("hasty", "--seconds-per-char", "0.05", "--max-messages", "2")
    assert worker.wait() == 0
    assert worker.bodies(Event.DONE) == ["1", "2"]
    assert worker.bodies(Event.LOST) == ["3", "4", "5"]
    assert "lost 3 messages already delivered to this worker" in worker.output
    assert space.ready("hello") == 0


def test_purge_removes_ready_messages(space):
    space.send("--count", "7", "--queue", "purgeme")
    assert "purged 7 messages from queue 'purgeme'" in space.send("--purge", "--queue", "purgeme").stdout
    assert space.ready("purgeme") == 0


def test_delete_refuses_a_queue_with_consumers_unless_forced(space):
    from tests.helpers import assert_one_line_error

    space.send("x", "--queue", "busy")
    worker = space.start_worker("holder", "--queue", "busy", "--seconds-per-char", "0.01")
    space.wait_for_consumers("busy", 1)

    assert_one_line_error(space.send("--delete-queue", "--queue", "busy", check=False), 8, "consumer", "--force")
    assert space.consumers("busy") == 1

    forced = space.send("--delete-queue", "--force", "--queue", "busy")
    assert "deleted queue 'busy'" in forced.stdout
    assert worker.wait(20) == 6  # the worker says its queue is gone rather than quietly recreating it
    assert "queue 'busy' was deleted while this worker consumed from it" in worker.output
    assert space.consumers("busy") == 0
