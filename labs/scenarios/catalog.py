"""The labs: each scenario runs what its handout tells students to run (with short work times) and checks
each claim the handout makes. Handouts are in labs/handouts/, numbered like the labs here."""
from __future__ import annotations

import collections
import signal
import threading
import time
from typing import Optional

from labs.drive.event_log import EventTally
from labs.drive.jobs_service import JobsService
from labs.scenarios.runner import Context, Lab
from labs.drive.processes import numbered, wait_all, wait_for_consumers, wait_until
from labs.brokers.rabbitmqctl import read_rabbit_env, restore_rabbit_env
from labs.brokers.redis_server import redis_installed, running_redis

QUICK = ("--seconds-per-char", "0.05")  # the handouts use the real 1 s per character
# The runner stops its workers with Ctrl-C once the event log shows their work done (Run.finish); an idle exit is
# the backstop, for a worker that gets nothing.
IDLE = ("--idle-exit", "1.5")
# Workers started before the messages: their idle clock runs while the other workers start and the sender connects,
# which took over 1.5 s on a busy 2-core machine (lab 2's first worker left before the send and got nothing).
IDLE_UNTIL_SENT = ("--idle-exit", "5")


def settled(tally: EventTally) -> bool:
    """Every message sent is processed or was lost by a worker (dropped on purpose: --lose-every)."""
    accounted = tally.processed | set(tally.bodies("lost"))  # once, not once per body: labs poll this
    return all(body in accounted for body in tally.sent)


def hello_world(lab: Context) -> None:
    snippet = f"""
import pika
params = pika.URLParameters({lab.url!r})
params.heartbeat = 600
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.queue_declare(queue='hello', durable=True)
channel.queue_declare(queue='hello', durable=True)  # declaring again is harmless
for _ in range(3):
    channel.basic_publish(exchange='', routing_key='hello', body='Hello World!')
received = []
def callback(ch, method, properties, body):
    received.append(body)
    if len(received) == 3:
        ch.stop_consuming()
channel.basic_consume(queue='hello', auto_ack=True, on_message_callback=callback)
connection.call_later(10, channel.stop_consuming)
channel.start_consuming()
print(received)
"""
    result = lab.python(snippet)
    lab.claim("three messages published from ipython-style pika arrive at a pika consumer",
              result.stdout.strip() == str([b"Hello World!"] * 3), (result.stdout + result.stderr).strip()[-200:])
    run = lab.run("hello")
    run.send("Hello World!", bodies=["Hello World!"])
    worker = run.worker("w1", "--max-messages", "1", *QUICK)
    wait_all([worker], 30)
    lab.claim("qprocessor.py receives what sender.py sent", run.tally().bodies("done") == ["Hello World!"])
    lab.claim("the queue is empty afterwards", lab.ready("hello") == 0)


def work_queues(lab: Context) -> None:
    run = lab.run("tasks")
    for n in (1, 2, 3):
        run.worker(f"w{n}", *QUICK, *IDLE_UNTIL_SENT)
    run.wait_for_consumers(3)
    run.send("--count", "9", bodies=numbered(9))
    run.finish()
    shares = sorted(sorted(int(b) for b in run.tally().bodies("done", w)) for w in ("w1", "w2", "w3"))
    lab.claim("round-robin: 3 workers get 3 of 9 messages each, every third one",
              shares == [[1, 4, 7], [2, 5, 8], [3, 6, 9]], f"shares {shares}")

    later = lab.run("more-tasks")
    later.worker("w1", *QUICK, *IDLE_UNTIL_SENT)
    later.wait_for_consumers(1)
    later.send("--count", "6", "--length", "6", bodies=numbered(6, 6))
    later.worker("w2", *QUICK, *IDLE_UNTIL_SENT)
    later.wait_for_consumers(2)
    later.send("7", "8", "9", "10", "11", "12", bodies=[str(n) for n in range(7, 13)])
    later.finish()
    joined = later.tally().bodies("done", "w2")
    lab.claim("a worker added while work is running shares the messages sent after it joined",
              len(joined) == 3 and all(int(b.rstrip(".")) > 6 for b in joined), f"w2 processed {joined}")


def failures(lab: Context) -> None:
    run = lab.run("fragile")
    run.send("--count", "12", bodies=numbered(12))
    run.worker("w1", *QUICK, "--lose-every", "3", *IDLE)
    run.finish(until=settled)
    tally = run.tally()
    lab.claim("auto-ack with --lose-every 3 loses 4 of 12", tally.bodies("lost") == ["3", "6", "9", "12"],
              f"lost {tally.bodies('lost')}")
    # The management API samples its counts: wait for a sample taken after the worker finished.
    stats = lab.stats("fragile")
    deadline = time.monotonic() + 15
    while (stats.get("messages_ready"), stats.get("messages_unacknowledged")) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.5)
        stats = lab.stats("fragile", settle=0)
    lab.claim("the lost messages are gone for good: nothing ready or unacknowledged remains",
              stats.get("messages_ready") == 0 and stats.get("messages_unacknowledged") == 0,
              f"ready {stats.get('messages_ready')}, unacknowledged {stats.get('messages_unacknowledged')}")


def acknowledgements(lab: Context) -> None:
    run = lab.run("reliable")
    for n in (1, 2, 3):
        run.worker(f"w{n}", "--acknowledge", *QUICK, "--lose-every", "3", *IDLE_UNTIL_SENT)
    run.wait_for_consumers(3)
    run.send("--count", "12", bodies=numbered(12))
    run.finish(until=settled)  # what the losers dropped comes back as they stop
    run.worker("steady", "--acknowledge", *QUICK, *IDLE)
    run.finish()
    tally = run.tally()
    lost = tally.bodies("lost")
    lab.claim(f"with --acknowledge, {len(tally.missing)} of 12 lost, {tally.redelivered} redelivered",
              not tally.missing and lost and tally.redelivered >= len(lost), f"dropped {len(lost)} on purpose")

    crashing = lab.run("supervised")
    crashes: list[int] = []
    supervisor = threading.Thread(target=lambda: crashes.append(crashing.supervise(
        "w1", "--acknowledge", "--prefetch", "1", *QUICK, "--lose-every", "3", "--lose-mode", "crash", *IDLE)))
    supervisor.start()
    # The worker declares the queue first: on RabbitMQ 3.10 a quorum queue that two clients declare at the same
    # moment can nack a publish that races its start (all 12, seen once on a vhost whose default type is quorum).
    crashing.wait_for_consumers(1)
    crashing.send("--count", "12", bodies=numbered(12))
    supervisor.join(120)
    tally = crashing.tally()
    lab.claim("a worker restarted after each crash still processes all 12",
              not tally.missing and sum(crashes) >= 3, f"{sum(crashes)} crashes, {tally.redelivered} redelivered")

    if lab.broker.version() >= (4, 3):
        consumer_timeout_on_43(lab)
    else:
        consumer_timeout_before_43(lab)


def consumer_timeout_on_43(lab: Context) -> None:
    """RabbitMQ 4.3: quorum queues cancel a consumer that holds a delivery too long; classic ones no longer check."""
    lab.broker.admin.set_policy(lab.vhost, "short-consumer-timeout", "^slow", {"consumer-timeout": 2000})
    # The two queues side by side: the same policy matches both, and neither worker waits for the other.
    slow, classic = lab.run("slow"), lab.run("slow-classic")
    slow.send("--queue-type", "quorum", "x" * 100, bodies=["x" * 100])
    classic.send("--queue-type", "classic", "xxxx", bodies=["xxxx"])
    holder = slow.worker("holder", "--queue-type", "quorum", "--acknowledge", "--seconds-per-char", "1",
                         "--max-messages", "2")
    finisher = classic.worker("finisher", "--queue-type", "classic", "--acknowledge", "--seconds-per-char", "1",
                              "--max-messages", "1")
    wait_all([holder, finisher], 60)
    tally = slow.tally()
    cancelled = [e for e in tally.events if e["event"] == "abandoned" and e.get("reason") == "consumer cancelled"]
    redelivered = [e for e in tally.events if e["event"] == "received" and e["redelivered"]]
    lab.claim("4.3, quorum queue: a worker holding a message past the consumer timeout has its consumer cancelled; "
              "it abandons the job without acking and the message is redelivered",
              bool(cancelled) and bool(redelivered) and not tally.bodies("done"),
              f"{len(cancelled)} cancelled, {len(redelivered)} redelivered")

    tally = classic.tally()
    lab.claim("4.3, classic queue: the same timeout is not enforced; the 4 s job finishes and is acked once",
              tally.bodies("done") == ["xxxx"] and tally.redelivered == 0 and not tally.bodies("abandoned"))


def consumer_timeout_before_43(lab: Context) -> None:
    """RabbitMQ 3.x to 4.2: the broker closes the channel of a consumer that holds a delivery too long."""
    if not lab.broker.controllable:
        lab.skip("a worker holding a message past the delivery acknowledgement timeout loses its channel",
                 "needs a broker the runner started, or LABKIT_RABBITMQCTL, to shorten consumer_timeout")
        return
    node = lab.broker
    # What the broker has now, read before anything changes (in the same call), so it gets exactly that back.
    originals = read_rabbit_env(node.ctl, ("consumer_timeout", "channel_tick_interval"),
                                then="application:set_env(rabbit, consumer_timeout, 2000), "
                                     "application:set_env(rabbit, channel_tick_interval, 500)")
    try:
        slow = lab.run("slow")
        slow.send("x" * 100, bodies=["x" * 100])
        holder = slow.worker("holder", "--acknowledge", "--seconds-per-char", "1", "--max-messages", "2")
        wait_all([holder], 60)
    finally:
        node.ctl("eval", restore_rabbit_env(originals) + ".")
    redelivered = [e for e in slow.tally().events if e["event"] == "received" and e["redelivered"]]
    lab.claim("a worker holding a message past the delivery acknowledgement timeout loses its channel; "
              "the message is redelivered", bool(slow.tally().bodies("abandoned")) and bool(redelivered))


def fair_dispatch(lab: Context) -> None:
    bodies = [("L" * 30 if n % 2 else "s") + str(n) for n in range(1, 9)]
    total_work = sum(len(b) for b in bodies) * 0.02
    results = {}
    for label, options in (("no prefetch", ()), ("prefetch 1", ("--prefetch", "1"))):
        run = lab.run(label.replace(" ", "-"))
        for n in (1, 2):
            run.worker(f"{label[:2]}{n}", "--acknowledge", "--seconds-per-char", "0.02", *IDLE_UNTIL_SENT, *options)
        run.wait_for_consumers(2)
        run.send(*bodies, bodies=bodies)
        run.finish()
        tally = run.tally()
        longs = sorted(sum(b.startswith("L") for b in tally.bodies("done", w)) for w in tally.per_worker())
        results[label] = (longs, tally.makespan)
    ideal = total_work / 2
    (unfair_longs, unfair_span), (fair_longs, fair_span) = results["no prefetch"], results["prefetch 1"]
    lab.claim("without prefetch, round-robin gives one worker all 4 long messages", unfair_longs == [0, 4])
    lab.claim("with prefetch 1, both workers take long messages", min(fair_longs) >= 1, f"long ones {fair_longs}")
    lab.claim("prefetch 1 finishes sooner", fair_span < unfair_span,
              f"makespan {fair_span:.2f}s vs {unfair_span:.2f}s; ideal {ideal:.2f}s")


def durability(lab: Context) -> None:
    lab.run("kept").send("--queue-type", "classic", "--persistent", "--count", "5")  # durable: the default
    lab.run("kept-but-not-persistent").send("--queue-type", "classic", "--count", "5")
    lab.run("quorum").send("--queue-type", "quorum", "--count", "5")
    mismatch = lab.run("kept").send("--queue-type", "classic", "--transient", "--count", "1", check=False)
    lab.claim("redeclaring a durable queue as transient is refused with exit code 6 and a hint",
              mismatch.returncode == 6 and "leave out --transient" in mismatch.stderr, mismatch.stderr.strip())
    transient = lab.run("forgotten").send("--transient", "--persistent", "--count", "5", check=False)
    permitted = transient.returncode == 0
    if not permitted:
        lab.claim("this broker refuses transient queues: exit code 12 and the reason in one line",
                  transient.returncode == 12 and "does not permit transient (non-durable) queues" in transient.stderr,
                  transient.stderr.strip())
    if not lab.broker.controllable:
        lab.skip("a durable queue with persistent messages survives a broker restart",
                 "needs a broker the runner started, or LABKIT_RABBITMQCTL")
        return
    lab.broker.restart()
    lab.claim("a durable queue with persistent messages survives a broker restart: 5 of 5 there",
              lab.ready("kept") == 5)
    lab.claim("a durable queue survives, but its non-persistent messages do not: 0 of 5",
              lab.ready("kept-but-not-persistent") == 0)
    lab.claim("a quorum queue keeps every message, persistent or not: 5 of 5", lab.ready("quorum") == 5)
    if permitted:
        lab.claim("a transient queue is gone after the restart, persistent messages and all",
                  lab.ready("forgotten") is None)


def purge_and_delete(lab: Context) -> None:
    run = lab.run("scratch")
    run.send("--count", "5")
    purged = run.send("--purge")
    lab.claim("--purge removes the 5 ready messages", "purged 5 messages" in purged.stdout and lab.ready("scratch") == 0)
    holder = run.worker("holder", *QUICK)
    run.wait_for_consumers(1)
    refused = run.send("--delete-queue", check=False)
    lab.claim("--delete-queue refuses a queue with a consumer (exit code 8)",
              refused.returncode == 8 and lab.ready("scratch") == 0)
    forced = run.send("--delete-queue", "--force")
    holder.kill()
    lab.claim("--delete-queue --force deletes it", "deleted queue" in forced.stdout and lab.ready("scratch") is None)


def heartbeats(lab: Context) -> None:
    snippet = f"""
import time, pika
params = pika.URLParameters({lab.url!r})
params.heartbeat = 2
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.queue_declare(queue='slow', durable=True)
channel.basic_publish(exchange='', routing_key='slow', body='slow work')
method, properties, body = next(channel.consume('slow'))
time.sleep(8)  # blocking work: pika cannot answer heartbeats meanwhile
try:
    channel.basic_ack(method.delivery_tag)
    connection.process_data_events(1)
    print('survived')
except Exception as exc:
    print(type(exc).__name__)
"""
    result = lab.python(snippet)
    outcome = result.stdout.strip()
    lab.claim("plain pika blocked for 8 s under a 2 s heartbeat loses its connection",
              outcome in ("StreamLostError", "ConnectionResetError", "ConnectionClosedByBroker",
                          "AMQPHeartbeatTimeout", "ChannelWrongStateError"), outcome or result.stderr[-200:])
    run = lab.run("slow")
    worker = run.worker("patient", "--acknowledge", "--heartbeat", "2", "--seconds-per-char", "0.8",
                        "--max-messages", "1", "--idle-exit", "15")
    wait_all([worker], 60)
    tally = run.tally()
    lab.claim("qprocessor.py finishes the same 8 s of work under the same heartbeat",
              tally.bodies("done") == ["slow work"] and tally.redelivered == 1,
              f"processed {tally.bodies('done')}, redelivered {tally.redelivered} time(s) after the plain consumer "
              f"lost it, lost {len(tally.bodies('lost'))}")


POISON = ("--fail-on", "poison")
LIMITED = ("--queue-type", "quorum", "--delivery-limit", "3", "--dead-letter-queue", "tasks-dead")


def poison_messages(lab: Context) -> None:
    good = [f"job{n}" for n in range(1, 6)]
    bodies = [*good[:2], "poison", *good[2:]]

    looping = lab.run("looping")
    looping.send("--queue-type", "classic", *bodies, bodies=bodies)
    wait_all([looping.worker("w1", "--queue-type", "classic", "--acknowledge", "--prefetch", "1", "--seconds-per-char",
                             "0", *POISON, "--max-messages", "40")], 60)
    tally = looping.tally()
    failures, waiting = len(tally.bodies("failed")), lab.ready("looping")
    # A requeued message goes back to the head of a classic queue: the same worker gets it again at once.
    lab.claim("classic queue, requeue: the poison message comes straight back, 38 of 40 deliveries, and the 3 good "
              "messages behind it starve", failures == 38 and tally.bodies("done") == good[:2] and waiting == 4,
              f"{failures} failures; processed {tally.bodies('done')}; still queued {waiting}")

    limited = lab.run("tasks")
    limited.send(*LIMITED, *bodies, bodies=bodies)
    for n in (1, 2):
        limited.worker(f"w{n}", *LIMITED, "--acknowledge", "--prefetch", "1", *QUICK, *POISON, *IDLE)
    limited.finish(until=lambda tally: len(tally.bodies("done")) == len(good) and tally.bodies("dead-lettered"),
                   timeout=60)
    tally = limited.tally()
    dead = wait_for_count(lab, "tasks-dead", 1, timeout=5)  # dead-lettering is asynchronous: it may trail the reject
    tries = sum(1 for e in tally.events if e["event"] == "received" and e["body"] == "poison")
    lab.claim("quorum queue with --delivery-limit 3: the poison message is tried 4 times, then dead-lettered into "
              "tasks-dead", tries == 4 and tally.bodies("dead-lettered") == ["poison"] and dead == 1,
              f"tried {tries} times; dead-lettered {tally.bodies('dead-lettered')}; tasks-dead holds {dead}")
    lab.claim("every good message is processed exactly once and nothing is lost",
              sorted(tally.bodies("done")) == good and not tally.bodies("lost") and lab.ready("tasks") == 0)

    inspect = lab.python(f"""
import json, pika
connection = pika.BlockingConnection(pika.URLParameters({lab.url!r}))
channel = connection.channel()
method, properties, body = channel.basic_get('tasks-dead')
death = properties.headers['x-death'][0]
print(json.dumps([body.decode(), death['queue'], death['reason']]))
channel.basic_nack(method.delivery_tag)  # back onto tasks-dead, for the fixed worker
connection.close()
""")
    seen = inspect.stdout.strip()
    lab.claim("the dead-lettered message says where it came from and why (x-death: queue tasks, reason "
              "delivery_limit)", seen == '["poison", "tasks", "delivery_limit"]', seen or inspect.stderr[-200:])

    fixed = lab.run("tasks-dead")
    fixed.sent.append("poison")
    wait_all([fixed.worker("fixed", "--queue-type", "quorum", "--acknowledge", *QUICK, "--max-messages", "1")], 30)
    lab.claim("after the fix, a worker on tasks-dead processes it: nothing was lost",
              fixed.tally().bodies("done") == ["poison"] and lab.ready("tasks-dead") == 0)

    limits_where(lab)

    if lab.broker.version() >= (4, 0):
        dropped = lab.run("no-dead-letter")
        dropped.send("--queue-type", "quorum", "poison", bodies=["poison"])
        dropped.worker("w1", "--queue-type", "quorum", "--acknowledge", "--seconds-per-char", "0", *POISON,
                       "--idle-exit", "3")
        dropped.finish(until=lambda tally: tally.bodies("lost"), timeout=60)
        tally = dropped.tally()
        tries = sum(1 for e in tally.events if e["event"] == "received")
        lab.claim("RabbitMQ 4: with no dead-letter queue, a quorum queue drops the poison message after 20 failed "
                  "deliveries (21 tries); the worker counts it as lost", tries == 21 and tally.bodies("lost") ==
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


HANDOUT_BAD_JOBS = [b"oops", b'{"start": 1}', b'{"start": "1", "end": 2}', b'{"start": 9, "end": 2}']


def jobs_api(lab: Context) -> None:
    if not redis_installed():
        lab.skip("the Jobs API's claims", "needs redis-server for the job records: apt-get install redis-server "
                                         "(./kit installs it)")
        return
    with running_redis() as redis_server, JobsService(lab.url, redis_server.url) as service:
        service.start_api()
        status, job = service.post(b'{"start": 1, "end": 10}')
        submitted = status == 201 and job.get("status") == "submitted"
        first = service.start_worker("w1", seconds=0.5)
        done = service.wait_for(job["id"], "complete") if submitted else {}
        lab.claim("POST /jobs answers 201 with the job \"submitted\"; a worker takes it to \"complete\"",
                  submitted and done.get("status") == "complete", f"{status} {job}")

        answers = [service.post(body) for body in HANDOUT_BAD_JOBS]
        listed = service.request("GET", "/jobs")[1]
        lab.claim("each bad body the handout suggests is a 400 with a JSON error, and nothing is recorded",
                  all(code == 400 and answer.get("error") for code, answer in answers) and len(listed) == 1,
                  "; ".join(f"{code} {answer}" for code, answer in answers))

        service.stop(first)  # idle: the next job goes to the slow worker alone
        slow = service.start_worker("slow", seconds=60)
        jid = service.post(b'{"start": 2, "end": 3}')[1]["id"]
        service.wait_for(jid, "in progress")
        slow.send_signal(signal.SIGKILL)
        rescuer = service.start_worker("rescuer", seconds=0)
        finished = service.wait_for(jid, "complete")
        lab.claim("a worker killed mid-job (SIGKILL) leaves the job to another worker, which completes it",
                  finished["worker"].endswith(f":{rescuer.pid}"), f"completed by {finished['worker']}")

        service.stop(rescuer)
        service.start_worker("fragile", seconds=0, JOB_FAIL_START="13")
        bad = service.post(b'{"start": 13, "end": 20}')[1]["id"]
        failed = service.wait_for(bad, "failed")
        dead = wait_for_count(lab, "jobs.dead", 1)
        lab.claim("a job whose work raises ends \"failed\" with its error after 3 attempts, its id dead-lettered "
                  "to jobs.dead", failed.get("error", "").startswith("RuntimeError") and dead == 1,
                  f"error {failed.get('error')!r}; jobs.dead holds {dead}")


def wait_for_count(lab: Context, queue: str, count: int, timeout: float = 15) -> Optional[int]:
    deadline = time.monotonic() + timeout
    while (found := lab.ready(queue)) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


CLUSTER_JOBS = 1500
CLUSTER_PREFETCH = 10
# 20 ms a message: 1,500 take three workers about 10 s, so the kill, right after the sender's run (which the workers
# overlap), still finds most of the work ahead.
CLUSTER_WORK = ("--queue-type", "quorum", "--acknowledge", "--prefetch", str(CLUSTER_PREFETCH), "--seconds-per-char",
                "0.005", "--retry-for", "60")
CLUSTER_IDLE = ("--idle-exit", "10")  # outlasts the set-up below and the sender's start


def node_dies(lab: Context) -> None:
    cluster = lab.cluster
    assert cluster, "lab 11 runs on a cluster"
    version = lab.broker.version()  # asked of node 1 now: it may be the node that dies
    jobs = lab.run("jobs", url=lab.every_node_url())
    # As in the handout: the workers first (the first to declare the queue places its leader on its own node).
    workers = {name: jobs.worker(name, *CLUSTER_WORK, *CLUSTER_IDLE) for name in ("w1", "w2", "w3")}
    wait_for_consumers(lab.node_url(1), "jobs", 3, timeout=60)
    members = cluster.queue(lab.vhost, "jobs").get("members") or []
    lab.claim("the quorum queue has a member on each of the three nodes", len(members) == 3, f"members {members}")

    leader = cluster.leader(lab.vhost, "jobs")
    doomed = cluster.number_of(leader)
    doomed_node = lab.node_address(doomed)
    # The claims on failover need a worker on the node that dies. Each picks its node at random: while none is there,
    # stop one and start it again, as the handout tells students to (nothing is sent yet, so nothing is disturbed).
    restarts = 0
    while doomed_node not in connected_nodes(jobs.tally()).values():
        if restarts == 5 or any(process.poll() is not None for process in workers.values()):
            raise RuntimeError(f"no worker connected to node {doomed} after {restarts} restarts of w3")
        incarnations = connected_count(jobs.tally(), "w3")
        workers["w3"].send_signal(signal.SIGTERM)
        wait_all([workers["w3"]], 30)
        workers["w3"] = jobs.worker("w3", *CLUSTER_WORK, *CLUSTER_IDLE)
        wait_until(lambda: connected_count(jobs.tally(), "w3") > incarnations, 60, "w3 to connect again")
        restarts += 1
    on_doomed = sorted(worker for worker, node in connected_nodes(jobs.tally()).items() if node == doomed_node)

    survivor = lab.node_url(next(n.number for n in cluster.nodes if n.number != doomed))
    # A classic queue lives on the node of the connection that declared it (the default queue leader locator).
    lab.run("jobs-classic", url=lab.node_url(doomed)).send("--queue-type", "classic", "--persistent", "--count", "5")
    lab.claim(f"a classic queue declared through node {doomed} lives on that node only",
              cluster.leader(lab.vhost, "jobs-classic") == leader and
              not cluster.queue(lab.vhost, "jobs-classic").get("members"))

    jobs.send("--queue-type", "quorum", "--persistent", "--count", str(CLUSTER_JOBS), "--length", "4", "--quiet",
              bodies=numbered(CLUSTER_JOBS, 4))
    wait_until(lambda: len(jobs.tally().bodies("done")) >= CLUSTER_JOBS // 10, 90, "the workers under way")
    killed_at = time.time()
    cluster.kill(doomed)
    left = CLUSTER_JOBS - len(jobs.tally().bodies("done"))  # at most what the kill left: read just after it

    asked = time.monotonic()
    refused = lab.run("jobs-classic", url=survivor).send("--queue-type", "classic", "--count", "1", check=False)
    answered_in = time.monotonic() - asked  # 4.x retries for 60 s before it answers
    named = leader in refused.stderr or version >= (4, 0)  # 4.x does not tell clients the node
    lab.claim(f"the classic queue is unavailable while node {doomed} is down: sender.py through another node exits "
              "with code 13 and says the queue's node is down", refused.returncode == 13 and named and
              "down or unreachable" in refused.stderr, f"after {answered_in:.0f} s: {refused.stderr.strip()}")
    wait_all(list(workers.values()), 240)
    tally = jobs.tally()
    after = sorted(e["time"] for e in tally.events if e["event"] == "done" and e["time"] > killed_at)
    pause = max((later - earlier for earlier, later in zip([killed_at, *after], after)), default=float("inf"))
    new_leader = cluster.leader(lab.vhost, "jobs")
    # Everything left at the kill is processed by the survivors, but what the dead node's workers held (on 4.x).
    lab.claim("the quorum queue elects a new leader on a surviving node and its work goes on",
              new_leader not in (None, leader) and left >= CLUSTER_JOBS // 3 and
              len(after) >= left - 3 * CLUSTER_PREFETCH,
              f"leader {leader} -> {new_leader}; {len(after)} of the {left} left processed after the kill; "
              f"longest pause {pause:.1f}s")
    held = set(jobs.sent) - tally.processed  # 4.x keeps these with the dead node's consumers until it returns
    went_on = [worker for worker in on_doomed if failed_over(tally, worker, doomed_node, killed_at)]
    lab.claim("a worker whose node died reconnected through another node and went on working",
              bool(on_doomed) and went_on == on_doomed,
              f"on node {doomed}: {on_doomed or 'none'} ({restarts} restarts of w3 to get one there); "
              f"lost node {doomed}, connected to another and worked there: {went_on or 'none'}")
    if version < (4, 0):
        lab.claim("RabbitMQ 3.x gives back at once what the dead node's consumers held: all done before it returns",
                  not held, f"{len(held)} waiting for the node")
    else:
        lab.claim(f"RabbitMQ 4.x keeps what the dead node's consumers held until the node returns (it cannot tell a "
                  f"crash from a partition): at most their prefetch windows, 3 x {CLUSTER_PREFETCH}",
                  len(held) <= 3 * CLUSTER_PREFETCH, f"{len(held)} waiting for the node")

    cluster.start(doomed)
    cluster.wait_formed()
    wait_until(lambda: len(cluster.queue(lab.vhost, "jobs").get("members") or []) == 3, 90, "three members again")
    lab.claim(f"node {doomed} comes back and rejoins: the quorum queue has three members again", True)
    back = lab.ready("jobs-classic", survivor)
    lab.claim("the classic queue is back with its node, with its 5 persistent messages", back == 5, f"{back} ready")

    # No idle exit: on 4.x what the dead node's consumers held comes back only once the queue has noticed, after the
    # node's return, that they are gone, which took over 5 s on a busy machine. Stopped once everything is processed.
    jobs.worker("sweeper", *CLUSTER_WORK)
    jobs.finish(timeout=120)
    tally = jobs.tally()
    done = collections.Counter(tally.bodies("done"))
    duplicates = sum(done.values()) - len(done)
    lab.claim(f"every confirmed message is processed: {len(tally.missing)} of {CLUSTER_JOBS} lost", not tally.missing,
              f"{len(held)} of them waited for the node to return")
    lab.claim(f"{duplicates} processed twice: work whose ack was lost with the node, at most what the workers held "
              f"unacknowledged (3 x prefetch {CLUSTER_PREFETCH})", duplicates <= 3 * CLUSTER_PREFETCH)



def connected_nodes(tally: EventTally) -> dict[str, str]:
    """The node each worker connected to last, from the 'connected' events of the run's log."""
    return {e["worker"]: e["node"] for e in tally.events if e["event"] == "connected"}


def failed_over(tally: EventTally, worker: str, lost: str, since: float) -> bool:
    """Whether the worker's log shows, after `since`, the connection to node `lost` lost, then a connection to
    another node, then work done there."""
    steps = iter(e for e in tally.events if e["worker"] == worker and e["time"] >= since)
    return (any(e["event"] == "disconnected" and e["node"] == lost for e in steps)
            and any(e["event"] == "connected" and e["node"] != lost for e in steps)
            and any(e["event"] == "done" for e in steps))


def connected_count(tally: EventTally, worker: str) -> int:
    return sum(1 for e in tally.events if e["event"] == "connected" and e["worker"] == worker)


LABS = [
    Lab(1, "hello-world", "Hello world from ipython and from the scripts", hello_world),
    Lab(2, "work-queues", "Several workers share one queue", work_queues),
    Lab(3, "failures", "Workers that lose messages, with auto-ack", failures),
    Lab(4, "acknowledgements", "Acknowledgements bring lost messages back", acknowledgements,
        sets_broker_settings=True),
    Lab(5, "fair-dispatch", "Prefetch 1 against uneven work", fair_dispatch),
    Lab(6, "durability", "Durable queues and persistent messages across a restart", durability),
    Lab(7, "purge-and-delete", "Purging and deleting queues", purge_and_delete),
    Lab(8, "heartbeats", "Heartbeats, long work and StreamLostError", heartbeats),
    Lab(9, "poison-messages", "Poison messages, delivery limits and dead letters", poison_messages),
    Lab(10, "jobs-api", "A task queue behind a web API", jobs_api),
    Lab(11, "node-dies", "When a node dies: a quorum queue on a three-node cluster", node_dies, on_cluster=True),
]
