"""--delivery-limit and --dead-letter-queue set the way RabbitMQ advises: a policy when the user may set one (the
policymaker tag), the queue's arguments otherwise, with a line saying which and why; and a worker that knows the
limit a policy sets, so that a message the broker drops is counted lost, not requeued."""
from __future__ import annotations

import socket

import pytest

from labs.amqp.connection import Event
from tests.helpers import assert_one_line_error

LIMITS = ("--queue-type", "quorum", "--delivery-limit", "2", "--dead-letter-queue", "q-dead")
EXIT_QUEUE_MISMATCH, EXIT_POLICY_REFUSED = 6, 14


def tag(space, tags: str) -> None:
    """Give the space's user these management tags (a PUT of the user replaces its tags, same password)."""
    space.broker.admin.add_user(space.username, space.password, tags=tags)


def policies(space) -> dict:
    return {each["name"]: each for each in space.broker.admin.policies(space.vhost)}


def arguments(space, queue: str) -> dict:
    return space.queue_stats(queue).get("arguments", {})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("script", ["send", "run_worker"])
def test_a_policymaker_gets_a_policy_and_a_queue_without_limit_arguments(space, script):
    tag(space, "policymaker")
    result = getattr(space, script)("--queue", "q", *LIMITS, "job" if script == "send" else "--idle-exit=0.5")
    assert "policy 'labkit-q' on vhost" in result.stderr
    assert "gives queue 'q' delivery limit 2 and dead-letter queue 'q-dead'" in result.stderr
    policy = policies(space)["labkit-q"]
    assert policy["pattern"] == "^q$" and policy["apply-to"] == "queues"
    assert policy["definition"] == {"delivery-limit": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "q-dead"}
    assert arguments(space, "q") == {"x-queue-type": "quorum"}  # the policy carries the limits, not the queue


def test_the_policy_dead_letters_a_poison_message_after_its_limit(space):
    tag(space, "policymaker")
    space.send("--queue", "q", *LIMITS, "good", "poison")
    worker = space.start_worker("w", "--queue", "q", *LIMITS, "--acknowledge", "--prefetch", "1",
                                "--seconds-per-char", "0", "--fail-on", "poison", "--idle-exit", "2")
    assert worker.process.wait(60) == 0
    assert worker.bodies(Event.DONE) == ["good"]
    assert worker.bodies(Event.DEAD_LETTERED) == ["poison"]  # tried 3 times: the first delivery and 2 more
    assert len(worker.bodies(Event.REQUEUED)) == 2
    assert space.ready("q-dead") == 1 and space.ready("q") == 0


@pytest.mark.parametrize("script", ["send", "run_worker"])
def test_a_student_without_the_tag_gets_arguments_and_is_told_why(space, script):
    result = getattr(space, script)("--queue", "q", *LIMITS, "job" if script == "send" else "--idle-exit=0.5")
    line = next(each for each in result.stderr.splitlines() if "as arguments instead" in each)
    assert f"the management API refused user {space.username!r} on vhost {space.vhost!r}" in line
    assert "needs the policymaker tag" in line
    assert "queue 'q' gets its delivery limit 2 and dead-letter queue 'q-dead' as arguments instead" in line
    assert arguments(space, "q") == {"x-queue-type": "quorum", "x-delivery-limit": 2, "x-dead-letter-exchange": "",
                                     "x-dead-letter-routing-key": "q-dead"}
    assert "labkit-q" not in policies(space)


@pytest.mark.parametrize("script", ["send", "run_worker"])
def test_limits_by_policy_refused_is_one_line_and_exit_14(space, script):
    result = getattr(space, script)("--queue", "q", *LIMITS, "--limits-by", "policy",
                                    "job" if script == "send" else "--idle-exit=0.5", check=False)
    assert_one_line_error(result, EXIT_POLICY_REFUSED, "cannot set policy 'labkit-q'",
                          f"the management API refused user {space.username!r}", "needs the policymaker tag")


def test_no_management_api_is_said_as_such_and_never_as_a_refusal(space):
    tag(space, "policymaker")
    nowhere = f"http://127.0.0.1:{closed_port()}"
    env = space.env(RABBITMQ_MANAGEMENT_URL=nowhere)
    refused = space.send("--queue", "q", *LIMITS, "--limits-by", "policy", "job", check=False, env=env)
    assert_one_line_error(refused, EXIT_POLICY_REFUSED, f"no management API answers at {nowhere}",
                          "--management-url")
    assert "refused user" not in refused.stderr and "policymaker" not in refused.stderr
    result = space.send("--queue", "q", *LIMITS, "job", env=env)  # auto: the arguments, saying why
    assert f"no management API answers at {nowhere}" in result.stderr and "as arguments instead" in result.stderr
    assert arguments(space, "q")["x-delivery-limit"] == 2


def test_a_queue_holding_its_limits_as_arguments_keeps_them(space):
    space.send("--queue", "q", *LIMITS, "--limits-by", "argument", "job")
    tag(space, "policymaker")
    again = space.send("--queue", "q", *LIMITS, "job")  # auto: a policy could not replace them, so no policy
    assert "queue 'q' already holds its limits as arguments" in again.stderr
    assert "labkit-q" not in policies(space)
    forced = space.send("--queue", "q", *LIMITS, "--limits-by", "policy", "job", check=False)
    assert_one_line_error(forced, EXIT_QUEUE_MISMATCH, "queue 'q' holds its limits as queue arguments",
                          "--limits-by argument")


def test_our_policy_outranks_the_instructors_and_keeps_its_other_settings(space):
    admin = space.broker.admin
    admin.set_policy(space.vhost, "teacher", ".*", {"max-length": 1000, "delivery-limit": 9})
    tag(space, "policymaker")
    space.send("--queue", "q", *LIMITS, "job")
    ours, theirs = policies(space)["labkit-q"], policies(space)["teacher"]
    assert ours["priority"] > theirs["priority"]
    assert ours["definition"] == {"max-length": 1000, "delivery-limit": 2, "dead-letter-exchange": "",
                                  "dead-letter-routing-key": "q-dead"}


def test_the_worker_counts_a_message_past_an_instructors_limit_as_lost(space):
    """The instructor's policy limits the queue; the worker was given no limit but reads the policy (a management
    tag lets it), so the message the broker drops after 2 requeues is reported lost, not requeued."""
    space.broker.admin.set_policy(space.vhost, "teacher", "^q$", {"delivery-limit": 2})
    tag(space, "management")
    space.send("--queue", "q", "--queue-type", "quorum", "poison")
    worker = space.start_worker("w", "--queue", "q", "--queue-type", "quorum", "--acknowledge", "--prefetch", "1",
                                "--seconds-per-char", "0", "--fail-on", "poison", "--idle-exit", "2")
    assert worker.process.wait(60) == 0
    assert len(worker.bodies(Event.REQUEUED)) == 2
    lost = worker.events(Event.LOST)
    assert [each["body"] for each in lost] == ["poison"] and lost[0]["mode"] == "delivery limit"
    assert "it reached the delivery limit of 2" in worker.output
    summary = worker.output.splitlines()[-1]
    assert "lost 1" in summary, summary


def test_deleting_the_queue_deletes_the_policy_that_set_its_limits(space):
    tag(space, "policymaker")
    space.send("--queue", "q", *LIMITS, "job")
    space.broker.admin.set_policy(space.vhost, "teacher", "^other$", {"max-length": 5})
    deleted = space.send("--queue", "q", "--delete-queue", "--force")
    assert "deleted policy 'labkit-q', which set its limits" in deleted.stdout
    assert set(policies(space)) == {"teacher"}  # only the kit's own policy for that queue goes
    again = space.send("--queue", "q", "--queue-type", "quorum", "job")  # made again without limits: none apply
    assert "polic" not in again.stderr and "labkit-q" not in policies(space)
