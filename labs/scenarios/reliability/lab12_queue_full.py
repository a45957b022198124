"""Lab 12, When the queue is full: a sender faster than its workers against a length limit that refuses new messages
(reject-publish) or drops the oldest (drop-head), a dead-letter queue that keeps what either sets aside, and a
publisher blocked by the memory alarm until the instructor lifts it."""
from __future__ import annotations

import re
import sys
import time
from typing import Optional

from labs.amqp.connection import Event
from labs.amqp.management import CLASS_CAP
from labs.brokers.rabbitmqctl import memory_watermark
from labs.classroom.provision import MIB, ClassLimits, cap_queues
from labs.drive.processes import Run, numbered
from labs.drive.wait import wait_until
from labs.paths import SENDER
from labs.scenarios.helpers import IDLE, wait_for_count
from labs.scenarios.runner import Context

EXIT_NOT_CONFIRMED = 7  # sender.py: some messages were nacked (refused), so they are not on the queue
BURST = numbered(20)  # `--count 20`: what the sender sends in a few milliseconds, while no worker takes any
# Classic queues, named: on a vhost whose default type is quorum the limits behave the same except reject-publish-dlx,
# which a quorum queue takes as drop-head (tests/scripts/test_queue_length.py).
REFUSING = ("--queue-type", "classic", "--max-length", "5", "--overflow", "reject-publish")
DROPPING = ("--queue-type", "classic", "--max-length", "5", "--overflow", "drop-head")
WORK = ("--seconds-per-char", "0.02", *IDLE)
FLOOD, FLOODED_BYTES = 700, 100_000  # the handout's flood: 70 MB nobody reads, against the class's cap


def queue_full(lab: Context) -> None:
    """reject-publish against drop-head on the same burst, each then with a dead-letter queue; then the alarm."""
    refused(lab)
    dropped(lab)
    dead_lettered(lab)
    blocked(lab)
    class_cap(lab)


def counted_sent(output: str) -> Optional[int]:
    """The count of sender.py's summary line ("sent 5 messages to queue ..."), None when there is none."""
    found = re.search(r"\bsent (\d+) messages", output)
    return int(found.group(1)) if found else None


def burst_then_worker(lab: Context, queue: str, limits: tuple[str, ...]) -> tuple[Run, int, Optional[int], int]:
    """The burst into a capped queue with no worker yet, then a worker draining it: the run, the sender's exit code,
    how many it counted sent, and how many the queue held after the burst (the broker's own count). The run expects
    processed what the sender counted sent, in order from the first."""
    run = lab.run(queue)  # no depth chart: the report derives it from event logs, where a dropped message never ends
    result = run.send("--queue", queue, *limits, "--count", str(len(BURST)), check=False)
    sent = counted_sent(result.stdout + result.stderr)
    held = lab.ready(queue) or 0
    run.sent.extend(BURST[:sent or 0])
    run.worker("w1", "--queue", queue, *limits, "--acknowledge", *WORK)
    run.finish(until=lambda tally: len(tally.processed) >= held, timeout=30)
    return run, result.returncode, sent, held


def refused(lab: Context) -> None:
    run, code, sent, held = burst_then_worker(lab, "uploads", REFUSING)
    done = run.tally().bodies(Event.DONE)
    lab.claim("reject-publish: the queue takes the first 5 of 20 and the broker refuses 15; the sender exits 7 and "
              "counts only those 5 sent", code == EXIT_NOT_CONFIRMED and sent == 5 and held == 5,
              f"exit {code}, counted {sent} sent, the queue held {held}")
    lab.claim("nothing is lost: the worker processes exactly the 5 the broker took, once each (5 processed + 15 "
              "refused = 20)", done == BURST[:5] and not run.tally().missing and lab.ready("uploads") == 0,
              f"processed {', '.join(done)}; counted sent and never processed: {len(run.tally().missing)}")


def dropped(lab: Context) -> None:
    run, code, sent, held = burst_then_worker(lab, "thumbnails", DROPPING)
    tally = run.tally()
    gone = tally.missing
    lab.claim("drop-head: the sender is told nothing (exit 0, 20 sent), the queue holds 5 and the worker gets only "
              "the newest, 16 to 20", code == 0 and sent == 20 and held == 5 and tally.bodies(Event.DONE) == BURST[15:],
              f"exit {code}, counted {sent} sent, the queue held {held}, processed {', '.join(tally.bodies('done'))}")
    lab.claim("the 15 oldest, 1 to 15, were dropped without a word: the event log never saw them",
              gone == BURST[:15] and not any(e.get("body") in gone for e in tally.events),
              f"never processed {len(gone)}: {', '.join(gone)}")


def dead_lettered(lab: Context) -> None:
    """The same two limits with a dead-letter queue: drop-head's oldest, reject-publish-dlx's refused, kept."""
    kept = ("--dead-letter-queue", "thumbnails-dropped")
    run, code, sent, _ = burst_then_worker(lab, "thumbnails-kept", (*DROPPING, *kept))
    rescued = lab.run("thumbnails-dropped")
    rescued.sent.extend(BURST[:15])
    rescued.worker("rescue", "--queue", "thumbnails-dropped", "--queue-type", "classic", "--acknowledge", *WORK)
    rescued.finish(timeout=30)
    lab.claim("drop-head with --dead-letter-queue: the 15 oldest land in thumbnails-dropped, where a worker processes "
              "1 to 15 in order; all 20 processed", sent == 20 and run.tally().bodies(Event.DONE) == BURST[15:]
              and rescued.tally().bodies(Event.DONE) == BURST[:15],
              f"the dead-letter queue's worker processed {', '.join(rescued.tally().bodies('done'))}")

    refusing_kept = ("--queue-type", "classic", "--max-length", "5", "--overflow", "reject-publish-dlx",
                     "--dead-letter-queue", "uploads-refused")
    run, code, sent, _ = burst_then_worker(lab, "uploads-kept", refusing_kept)
    waiting = wait_for_count(lab, "uploads-refused", 15, timeout=5)  # dead-lettering trails the nack
    lab.claim("reject-publish-dlx: the sender is still refused (exit 7, 5 sent), and the 15 refused wait in "
              "uploads-refused", code == EXIT_NOT_CONFIRMED and sent == 5 and waiting == 15
              and run.tally().bodies(Event.DONE) == BURST[:5], f"exit {code}, {sent} sent, {waiting} dead-lettered")


def blocked(lab: Context) -> None:
    """The instructor's memory alarm (watermark 0) blocks every publisher on the node; lifted, they resume."""
    text = ("with the memory alarm on, the sender is blocked: it waits, nothing reaches the queue; once the "
            "instructor lifts the alarm it resumes and all 10 are sent (exit 0)")
    if not lab.broker.controllable:
        lab.skip(text, "needs a broker the runner started, or LABKIT_RABBITMQCTL, to set the memory watermark")
        return
    run = lab.run("reports")
    before = memory_watermark(lab.broker.ctl, then="0.0")  # kept to give back exactly: the default differs by version
    try:
        sender = run.children.start([sys.executable, str(SENDER), "--queue", "reports", "--count", "10"], "sender")
        output = run.children.output("sender")
        # The sender's own notice that the broker blocked it (connection.blocked), then a moment more to be sure.
        wait_until(lambda: "blocking publishers" in output.read_text() or sender.poll() is not None, 30,
                   "the sender to be blocked", or_last=True)
        time.sleep(1)
        waiting = sender.poll() is None
        held = lab.ready("reports")
    finally:
        lab.broker.ctl("eval", f"vm_memory_monitor:set_vm_memory_high_watermark({before}).")
    code = sender.wait(60)
    lab.saw(output.read_text())
    after = lab.ready("reports")
    lab.claim(text, waiting and held in (0, None) and code == 0 and after == 10
              and counted_sent(output.read_text()) == 10,
              f"queue held {held} while blocked, then {after}; sender exit {code}")
    now = memory_watermark(lab.broker.ctl)
    lab.claim("the node has its memory watermark back", now == before, f"{before} before, {now} after")


def class_cap(lab: Context) -> None:
    """The cap `./kit class provision` puts on every queue of a student (64 MiB by default): the handout's flood of
    70 MB is refused at it, and said so; then the handout's purge. A class-provisioned student's vhost has the cap
    already, and the lab uses it as it is; the lab's own vhost gets it as provisioning sets it, for the lab only."""
    limits = ClassLimits()
    own = not cap_policies(lab)
    if own:
        cap_queues(lab.broker.admin, lab.vhost, limits, operator_overflow=lab.broker.version()[0] >= 4)
    try:
        run = lab.run("photos")
        result = run.send("--queue", "photos", "--queue-type", "classic", "--count", str(FLOOD), "--length",
                          str(FLOODED_BYTES), "--quiet", check=False)
        sent = counted_sent(result.stdout)
        first = lab.first_body("photos")
        purged = run.send("--queue", "photos", "--purge")
    finally:
        if own:
            for kind in cap_policies(lab):
                lab.broker.admin.request("DELETE", f"/api/{kind}/{lab.broker.admin.quote(lab.vhost)}/{CLASS_CAP}")
    fits = limits.queue_mb * MIB // FLOODED_BYTES  # the messages whose bodies fit under the cap
    lab.claim(f"the class's cap ({limits.queue_mb} MiB) refuses a flood of {FLOOD} messages of {FLOODED_BYTES:,} "
              f"bytes after the {fits} that fit: the sender exits 7 and says the queue is full at the cap your "
              f"instructor set, the oldest message is still first in the queue, and --purge empties it",
              result.returncode == EXIT_NOT_CONFIRMED and sent == fits
              and f"refused {FLOOD - fits} messages" in result.stderr
              and f"is full at {limits.queue_mb} MiB, the cap your instructor set" in result.stderr
              and first == BURST[0] + "." * (FLOODED_BYTES - 1) and f"purged {fits} messages" in purged.stdout,
              f"exit {result.returncode}, {sent} sent; {result.stderr.strip().splitlines()[-1:]}")


def cap_policies(lab: Context) -> dict[str, dict]:
    """The class's cap on the lab's vhost as it is now: its operator policy and (RabbitMQ 3.10) policy, by kind."""
    admin = lab.broker.admin
    return {kind: policy for kind in ("operator-policies", "policies")
            for policy in admin.request("GET", f"/api/{kind}/{admin.quote(lab.vhost)}") if policy["name"] == CLASS_CAP}
