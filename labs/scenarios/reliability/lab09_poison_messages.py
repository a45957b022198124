"""Lab 9, Poison messages: requeued forever on a classic queue, dead-lettered after a delivery limit on a quorum
queue, and where the limit is set (a policy or the queue's arguments)."""
from __future__ import annotations

import ast
import json
from typing import Optional

from labs.amqp.connection import Event
from labs.drive.processes import wait_all
from labs.scenarios.helpers import IDLE, QUICK, wait_for_count
from labs.scenarios.runner import Context

POISON = ("--fail-on", "poison")
LIMITED = ("--queue-type", "quorum", "--delivery-limit", "3", "--dead-letter-queue", "homework-dead")


def poison_messages(lab: Context) -> None:
    """A poison message requeued forever on a classic queue, dead-lettered after a delivery limit on a quorum queue,
    inspected with the handout's snippet and replayed; then where the limit lives (limits_where)."""
    good = [f"job{n}" for n in range(1, 6)]
    bodies = [*good[:2], "poison", *good[2:]]

    looping = lab.run("looping")
    looping.depth_chart = True  # the report: the good messages stay queued behind the poison one
    looping.send("--queue-type", "classic", *bodies, bodies=bodies)
    # The handout's worker, unnamed as typed there (its lines show worker-PID), without its 6 s of work a delivery.
    wait_all([looping.worker(None, "--queue-type", "classic", "--acknowledge", "--prefetch", "1", "--seconds-per-char",
                             "0", *POISON, "--max-messages", "20")], 60)
    tally = looping.tally()
    failures, waiting = len(tally.bodies(Event.FAILED)), lab.ready("looping")
    # A requeued message goes back to the head of a classic queue: the same worker gets it again at once.
    lab.claim("classic queue, requeue: the poison message comes straight back, 18 of 20 deliveries, and the 3 good "
              "messages behind it starve", failures == 18 and tally.bodies(Event.DONE) == good[:2] and waiting == 4,
              f"{failures} failures; processed {tally.bodies('done')}; still queued {waiting}")

    limited = lab.run("homework")
    limited.depth_chart = True  # the report: the queue drains once the poison message is dead-lettered
    limited.send(*LIMITED, *bodies, bodies=bodies)
    for _ in (1, 2):  # unnamed, as the handout types them
        limited.worker(None, *LIMITED, "--acknowledge", "--prefetch", "1", *QUICK, *POISON, *IDLE)
    limited.finish(until=lambda tally: len(tally.bodies(Event.DONE)) == len(good) and tally.bodies(Event.DEAD_LETTERED),
                   timeout=60)
    tally = limited.tally()
    dead = wait_for_count(lab, "homework-dead", 1, timeout=5)  # dead-lettering is asynchronous: it may trail the reject
    tries = sum(1 for e in tally.events if e["event"] == Event.RECEIVED and e["body"] == "poison")
    lab.claim("quorum queue with --delivery-limit 3: the poison message is tried 4 times, then dead-lettered into "
              "homework-dead", tries == 4 and tally.bodies(Event.DEAD_LETTERED) == ["poison"] and dead == 1,
              f"tried {tries} times; dead-lettered {tally.bodies('dead-lettered')}; homework-dead holds {dead}")
    lab.claim("every good message is processed exactly once and nothing is lost",
              sorted(tally.bodies(Event.DONE)) == good and not tally.bodies(Event.LOST) and lab.ready("homework") == 0)

    inspect = lab.snippet("09_dead_letter.py")  # the handout's look at the dead letter, which leaves it there
    seen = as_json(inspect.stdout.strip())
    lab.claim("the dead-lettered message says where it came from and why (x-death: queue homework, reason "
              "delivery_limit)", seen == '["poison", "homework", "delivery_limit"]', seen or inspect.stderr[-200:])

    fixed = lab.run("homework-dead")
    fixed.sent.append("poison")
    wait_all([fixed.worker("fixed", "--queue-type", "quorum", "--acknowledge", *QUICK, "--max-messages", "1")], 30)
    lab.claim("after the fix, a worker on homework-dead processes it: nothing was lost",
              fixed.tally().bodies(Event.DONE) == ["poison"] and lab.ready("homework-dead") == 0)

    limits_where(lab)

    if lab.broker.version() >= (4, 0):
        dropped = lab.run("no-dead-letter")
        dropped.send("--queue-type", "quorum", "poison", bodies=["poison"])
        dropped.worker("w1", "--queue-type", "quorum", "--acknowledge", "--seconds-per-char", "0", *POISON,
                       "--idle-exit", "3")
        dropped.finish(until=lambda tally: tally.bodies(Event.LOST), timeout=60)
        tally = dropped.tally()
        tries = sum(1 for e in tally.events if e["event"] == Event.RECEIVED)
        lab.claim("RabbitMQ 4: with no dead-letter queue, a quorum queue drops the poison message after 20 failed "
                  "deliveries (21 tries); the worker counts it as lost", tries == 21 and tally.bodies(Event.LOST) ==
                  ["poison"] and lab.ready("no-dead-letter") == 0, f"tried {tries} times, lost {tally.bodies('lost')}")


def limits_where(lab: Context) -> None:
    """A policy where the user may set one, the queue's arguments otherwise: what each means for changing a limit."""
    graded = ("--queue", "graded", "--queue-type", "quorum", "--dead-letter-queue", "graded-dead")
    run = lab.run("graded")

    def send(*args: str) -> tuple[str, dict, Optional[dict]]:
        result = run.send(*graded, *args, check=False)
        queue = lab.broker.admin.queue(lab.vhost, "graded")
        policies = lab.broker.admin.policies(lab.vhost)
        ours = next((each for each in policies if each["name"] == "labkit-graded"), None)
        output = (result.stdout + result.stderr).splitlines() if result.returncode == 0 else []
        said = next((line for line in output if "polic" in line), f"exit {result.returncode}")
        return said, queue.get("arguments", {}), ours

    said, arguments, policy = send("--delivery-limit", "3", "job1")
    lab.claim("a student without the policymaker tag gets the limits as queue arguments, and the sender says why",
              "a policy needs the policymaker tag" in said and "as arguments instead" in said
              and arguments.get("x-delivery-limit") == 3 and policy is None, said)
    lab.tag_user("policymaker")
    try:
        run.send("--queue", "graded", "--delete-queue", "--force")
        said, arguments, policy = send("--delivery-limit", "3", "job1")
        lab.claim("with the policymaker tag the same command sets policy labkit-graded, and the queue has no limit "
                  "arguments", "policy 'labkit-graded'" in said and "x-delivery-limit" not in arguments
                  and (policy or {}).get("definition", {}).get("delivery-limit") == 3, said)
        said, arguments, policy = send("--delivery-limit", "5", "job2")
        lab.claim("changing the limit is one more run: the policy now says 5, and the queue keeps its 2 messages",
                  (policy or {}).get("definition", {}).get("delivery-limit") == 5 and lab.ready("graded") == 2,
                  said)
    finally:
        lab.tag_user("")


def as_json(printed: str) -> str:
    """What the handout's snippet prints (`b'poison' homework delivery_limit`) as a JSON list of strings, the claim's
    detail; "" when it printed something else."""
    body, _, rest = printed.partition(" ")
    try:
        return json.dumps([ast.literal_eval(body).decode(), *rest.split(" ")])
    except (ValueError, SyntaxError, AttributeError):
        return ""
