"""The README's demo: three workers share a queue, one of them crashes on every third message."""
from __future__ import annotations

import secrets
import sys
import threading

from typing import Optional

from labs.brokers.broker import Broker
from labs.drive.processes import Run, numbered
from labs.drive.tmux import Board
from labs.scenarios.report_html import Section
from labs.scenarios.runner import Claim

COUNT, LENGTH = 18, 3  # six each: w3 takes a third message, and crashes, even when the others run ahead
# The idle exit is only a backstop: the demo stops its workers (as with Ctrl-C) once every message is processed. Its
# clock starts when a worker connects, so it must outlast the sender's start on a busy machine (2 s did not).
WORK = ("--acknowledge", "--prefetch", "1", "--seconds-per-char", "0.1", "--idle-exit", "15")


def demo(broker: Broker, ran: Optional[list] = None, board: Optional[Board] = None,
         pace: Optional[float] = None) -> bool:
    """Run the demo in the broker's own vhost; print the live output and a final tally; True when nothing was lost.
    With `ran`, add the demo's section of the report page to it (its run, its event log kept). With a tmux board,
    the workers, the sender and each of w3's restarts get panes in "demo" windows, and the tally its last window.

    Removing the demo's queue afterwards never changes its outcome: a failure to clean up is printed, not raised.
    """
    run = Run(broker.url(), queue=f"demo-{secrets.token_hex(3)}", tmux=board.window("demo") if board else None,
              pace=pace)
    ok = False
    try:
        ok, tally = show(run)
        if board is not None:
            board.said.append(tally)
        return ok
    finally:
        clean_up(broker, run)
        if ran is not None:
            lost = len(run.tally().missing)
            ran.append(Section("The demo: three workers, w3 crashes on every third message",
                               [Claim("with --acknowledge, no message is lost", ok, f"{lost} of {COUNT} lost")],
                               [run], "demo"))


def show(run: Run) -> tuple[bool, str]:
    """The live scenario; whether nothing was lost, and the tally it printed."""
    print(f"Three workers on queue {run.queue!r}; 'w3' crashes on every third message it takes.\n")
    for name in ("w1", "w2"):
        run.worker(name, *WORK)
    crashes: list[int] = []
    supervisor = threading.Thread(
        target=lambda: crashes.append(run.supervise("w3", *WORK, "--lose-every", "3", "--lose-mode", "crash")))
    supervisor.start()
    run.wait_for_consumers(3)
    run.send("--count", str(COUNT), "--length", str(LENGTH), bodies=numbered(COUNT, LENGTH))
    run.finish()  # every message processed: the workers still running are stopped as with Ctrl-C
    supervisor.join(run.waited(120))
    tally = run.tally()
    ok = not tally.missing
    said = (f"Tally from the workers' event logs:\n{tally.report()}\n"
            f"  w3 crashed {sum(crashes)} times; each message it held came back flagged redelivered.\n\n"
            f"{'PASS' if ok else 'FAIL'}: with --acknowledge, {len(tally.missing)} of {COUNT} messages lost")
    print("\n" + said)
    return ok, said


def clean_up(broker: Broker, run: Run) -> None:
    """Stop the demo's processes and delete its queue; say so on stderr when that fails, and carry on."""
    try:
        run.stop()
        broker.admin.delete_queue(broker.vhost, run.queue)
    except Exception as exc:
        print(f"labkit: could not remove the demo's queue {run.queue!r}: {exc}", file=sys.stderr)
