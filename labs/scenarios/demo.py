"""The README's demo: three workers share a queue, one of them crashes on every third message."""
from __future__ import annotations

import secrets
import sys
import threading

from typing import Optional

from labs.brokers.broker import Broker
from labs.drive.processes import Run, numbered, wait_all
from labs.scenarios.report_html import Section
from labs.scenarios.runner import Claim

COUNT, LENGTH = 12, 3
WORK = ("--acknowledge", "--prefetch", "1", "--seconds-per-char", "0.1", "--idle-exit", "2")


def demo(broker: Broker, ran: Optional[list] = None) -> bool:
    """Run the demo in the broker's own vhost; print the live output and a final tally; True when nothing was lost.
    With `ran`, add the demo's section of the report page to it (its run, its event log kept).

    Removing the demo's queue afterwards never changes its outcome: a failure to clean up is printed, not raised.
    """
    run = Run(broker.url(), queue=f"demo-{secrets.token_hex(3)}")
    ok = False
    try:
        ok = show(run)
        return ok
    finally:
        clean_up(broker, run)
        if ran is not None:
            lost = len(run.tally().missing)
            ran.append(Section("The demo: three workers, w3 crashes on every third message",
                               [Claim("with --acknowledge, no message is lost", ok, f"{lost} of {COUNT} lost")],
                               [run], "demo"))


def show(run: Run) -> bool:
    print(f"Three workers on queue {run.queue!r}; 'w3' crashes on every third message it takes.\n")
    steady = [run.worker(name, *WORK) for name in ("w1", "w2")]
    crashes: list[int] = []
    supervisor = threading.Thread(
        target=lambda: crashes.append(run.supervise("w3", *WORK, "--lose-every", "3", "--lose-mode", "crash")))
    supervisor.start()
    run.wait_for_consumers(3)
    run.send("--count", str(COUNT), "--length", str(LENGTH), bodies=numbered(COUNT, LENGTH))
    wait_all(steady, timeout=120)
    supervisor.join(120)
    tally = run.tally()
    print("\nTally from the workers' event logs:")
    print(tally.report())
    print(f"  w3 crashed {sum(crashes)} times; each message it held came back flagged redelivered.")
    ok = not tally.missing
    print(f"\n{'PASS' if ok else 'FAIL'}: with --acknowledge, {len(tally.missing)} of {COUNT} messages lost")
    return ok


def clean_up(broker: Broker, run: Run) -> None:
    """Stop the demo's processes and delete its queue; say so on stderr when that fails, and carry on."""
    try:
        run.stop()
        broker.admin.delete_queue(broker.vhost, run.queue)
    except Exception as exc:
        print(f"labkit: could not remove the demo's queue {run.queue!r}: {exc}", file=sys.stderr)
