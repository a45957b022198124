"""`./sender.py --list-queues`: what a student on the class server runs to observe their own queues, since
rabbitmqctl needs the node's Erlang cookie. Run as provisioned students (the management tag is theirs by default):
the figures are the broker's own, a student sees only their vhost, and a student without the tag gets one line."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from labs.paths import HANDOUTS
from labs.drive.wait import wait_until
from tests.classroom.accounts import as_student, passwords, provision
from tests.helpers import ROOT, assert_one_line_error

EXIT_USAGE, EXIT_API_UNREACHABLE, EXIT_API_REFUSED = 2, 16, 17
FIGURES = {"ready": "messages_ready", "unacked": "messages_unacknowledged", "consumers": "consumers"}


def listed(result: subprocess.CompletedProcess) -> dict[str, dict]:
    """The table --list-queues printed, by queue name: each row's cells under their header's names."""
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["queue", "type", "durable", "ready", "unacked", "consumers"], result.stdout
    return {cells[0]: dict(zip(header.split(), cells)) for cells in (row.split() for row in rows)}


def settled(broker, vhost: str, queue: str, **figures: int) -> dict:
    """The queue as the administrator's API shows it, once its statistics (0.5 s on the suite's nodes) say this."""
    def shown() -> dict:
        return broker.admin.queue(vhost, queue)
    wait_until(lambda: all(shown().get(FIGURES[key]) == value for key, value in figures.items()), 20,
               f"the statistics of {queue!r} to show {figures}")
    return shown()


def test_a_student_lists_their_queues_with_the_brokers_own_figures_and_no_one_elses(broker, students, space):
    names, roster = students
    provision(broker, roster)
    ann, ben = names
    secret = passwords(roster)
    as_ann, as_ben = as_student(space, broker, ann, secret[ann]), as_student(space, broker, ben, secret[ben])
    space.send("--queue", "waiting", "--count", "3", env=as_ann)
    space.send("--queue", "held", "--queue-type", "quorum", "--count", "2", env=as_ann)
    space.send("--queue", "bens-own", "--count", "4", env=as_ben)
    # A worker that takes one message at a time and works on it for minutes: 1 unacknowledged, 1 ready, 1 consumer.
    space.start_process("qprocessor.py", "--queue", "held", "--queue-type", "quorum", "--acknowledge",
                        "--prefetch", "1", "--seconds-per-char", "600", env=as_ann)
    truth = {"waiting": settled(broker, ann, "waiting", ready=3, unacked=0, consumers=0),
             "held": settled(broker, ann, "held", ready=1, unacked=1, consumers=1)}

    shown = listed(space.send("--list-queues", env=as_ann))
    assert set(shown) == {"waiting", "held"}  # not ben's, nor any other vhost's
    for name, queue in truth.items():
        row = shown[name]
        assert {key: int(row[key]) for key in FIGURES} == {key: queue[field] for key, field in FIGURES.items()}, row
        assert (row["type"], row["durable"]) == (queue["type"], "yes" if queue["durable"] else "no")

    # The instructor's account may see every vhost: listing ann's (as `--vhost ann`) still shows hers alone.
    broker.admin.grant(broker.username, ann)
    instructor = space.env(AMQP_URL=broker.url(ann, broker.username, broker.password))
    assert set(listed(space.send("--list-queues", env=instructor))) == {"waiting", "held"}
    assert set(listed(space.send("--list-queues", env=as_ben))) == {"bens-own"}


def test_a_student_without_the_management_tag_gets_one_line_saying_so(broker, students, space):
    names, roster = students
    provision(broker, roster, "--no-management")
    as_ann = as_student(space, broker, names[0], passwords(roster)[names[0]])
    result = space.send("--list-queues", env=as_ann, check=False)
    assert_one_line_error(result, EXIT_API_REFUSED, f"the management API refused user {names[0]!r}",
                          "Not management user", "the management tag")
    nothing = space.send("--list-queues", "--management-url", "http://127.0.0.1:1", env=as_ann, check=False)
    assert_one_line_error(nothing, EXIT_API_UNREACHABLE, "cannot list queues: no management API answers at "
                          "http://127.0.0.1:1", "give --management-url")


@pytest.mark.parametrize("other", [["hello"], ["--count", "3"], ["--purge"], ["--delete-queue"]],
                         ids=["message", "count", "purge", "delete-queue"])
def test_list_queues_with_something_to_do_is_a_usage_error(other):
    # No broker is asked: the command line alone is wrong.
    result = subprocess.run([sys.executable, str(ROOT / "sender.py"), "--list-queues", *other, "--port", "1"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert_one_line_error(result, EXIT_USAGE, "--list-queues lists and exits")


def shown_listing(handout: str) -> str:
    """The output block right after the handout's ./sender.py --list-queues command, without its `...` lines (the
    queues of a student's earlier labs, which this test's fresh vhost does not have)."""
    text = (HANDOUTS / handout).read_text()
    found = re.search(r"^\./sender\.py --list-queues[^\n]*\n```\n```\n(.*?)^```$", text, re.M | re.S)
    assert found, f"{handout} shows no output of ./sender.py --list-queues"
    return "".join(line for line in found.group(1).splitlines(keepends=True) if line.strip() != "...")


def test_lab_6s_listing_after_the_restart_is_what_the_command_prints(broker, space):
    """The handout shows the three queues after the restart: the non-persistent messages gone, which a purge makes
    here without one (the restart itself is lab 6's claim, `python -m labs run 6`)."""
    broker.admin.add_user(space.username, space.password, tags="management")  # as provisioning gives every student
    space.send("--queue", "kept", "--queue-type", "classic", "--persistent", "--count", "5")
    space.send("--queue", "kept-but-not-persistent", "--queue-type", "classic", "--count", "5")
    space.send("--queue", "kept-but-not-persistent", "--queue-type", "classic", "--purge")
    space.send("--queue", "quorum", "--queue-type", "quorum", "--count", "5")
    # The listing's format is the point here, not the statistics' lag (a loaded machine's quorum queue has shown none
    # for over the 6 s the command waits): wait until the broker has counted every queue.
    for queue in ("kept", "kept-but-not-persistent", "quorum"):
        settled(broker, space.vhost, queue, unacked=0)
    result = space.send("--list-queues")
    assert result.stdout == shown_listing("06-durability.md")
