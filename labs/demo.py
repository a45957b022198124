"""The README's demo: three workers share a queue, one of them crashes on every third message."""
from __future__ import annotations

import secrets
import threading

from labs.broker import Broker
from labs.scenario import Run, numbered, wait_all

COUNT, LENGTH = 12, 3
WORK = ("--acknowledge", "--prefetch", "1", "--seconds-per-char", "0.1", "--idle-exit", "2")


def demo(broker: Broker, url: str) -> bool:
    """Run the demo on `url`; print the live output and a final tally; True when no message was lost."""
    run = Run(url, queue=f"demo-{secrets.token_hex(3)}")
    try:
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
    finally:
        run.stop()
        broker.admin.request("DELETE", f"/api/queues/{broker.admin.quote(_vhost(url))}/{run.queue}")


def _vhost(url: str) -> str:
    import pika

    return pika.URLParameters(url).virtual_host
