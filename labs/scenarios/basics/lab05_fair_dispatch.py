"""Lab 5, Fair dispatch: prefetch 1 against uneven work."""
from __future__ import annotations

from labs.amqp.connection import Event
from labs.scenarios.helpers import IDLE_UNTIL_SENT
from labs.scenarios.runner import Context


def fair_dispatch(lab: Context) -> None:
    """Two workers on uneven work, without prefetch and with prefetch 1: who gets the long jobs, and the makespan."""
    bodies = [("L" * 30 if n % 2 else "s") + str(n) for n in range(1, 9)]
    total_work = sum(len(b) for b in bodies) * 0.02
    results = {}
    for label, options in (("no prefetch", ()), ("prefetch 1", ("--prefetch", "1"))):
        run = lab.run(label.replace(" ", "-"))
        run.ideal_makespan = total_work / 2  # the report draws the makespan against it
        for n in (1, 2):
            run.worker(f"{label[:2]}{n}", "--acknowledge", "--seconds-per-char", "0.02", *IDLE_UNTIL_SENT, *options)
        run.wait_for_consumers(2)
        run.send(*bodies, bodies=bodies)
        run.finish()
        tally = run.tally()
        longs = sorted(sum(b.startswith("L") for b in tally.bodies(Event.DONE, w)) for w in tally.per_worker())
        results[label] = (longs, tally.makespan)
    ideal = total_work / 2
    (unfair_longs, unfair_span), (fair_longs, fair_span) = results["no prefetch"], results["prefetch 1"]
    lab.claim("without prefetch, round-robin gives one worker all 4 long messages", unfair_longs == [0, 4])
    lab.claim("with prefetch 1, both workers take long messages", min(fair_longs) >= 1, f"long ones {fair_longs}")
    lab.claim("prefetch 1 finishes sooner", fair_span < unfair_span,
              f"makespan {fair_span:.2f}s vs {unfair_span:.2f}s; ideal {ideal:.2f}s")
