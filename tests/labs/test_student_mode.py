"""`python -m labs run --as-student`: the labs as one student of a class lives them, in order, in one vhost that every
lab shares, with the account `class provision` gives a student (its limits, the class's cap, the management tag).
What one lab leaves is there for the next, as in a student's vhost; the runner's own fresh vhost per lab hides that."""
from __future__ import annotations

import re

import pytest

from labs.exit_codes import EXIT_OK
from labs.scenarios.registry import LABS
from labs.scenarios.shown import line_pattern, printed_by, shown_blocks, unmatched
from tests.helpers import require
from tests.labs.runs import claims, given_broker_env, labs_command

# Lab 11 needs three nodes of its own (tests/brokers/test_cluster.py runs it); every other lab runs here, in order.
ONE_BROKER_LABS = [str(lab.number) for lab in LABS if not lab.on_cluster]
INSTRUCTORS = {lab.number for lab in LABS if lab.instructor and not lab.on_cluster}


@pytest.mark.restart
@pytest.mark.slow(seconds=150)
def test_every_lab_passes_in_order_in_one_provisioned_students_vhost(broker):
    require(broker.controllable, "lab 6 restarts the broker: give LABKIT_RABBITMQCTL with AMQP_URL")
    before = set(broker.admin.users())
    result = labs_command("run", *ONE_BROKER_LABS, "--as-student", env=given_broker_env(broker), timeout=900)
    print(result.stdout)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    found = claims(result.stdout)
    assert len(found) >= 40 and set(found) == {"PASS"}, result.stdout

    student = re.search(r"^as student '(student-[0-9a-f]+)'", result.stdout, re.M).group(1)
    reports = re.split(r"^(?=Lab \d+: )", result.stdout, flags=re.M)[1:]
    assert [int(re.match(r"Lab (\d+):", each).group(1)) for each in reports] == [int(n) for n in ONE_BROKER_LABS]
    for each in reports:  # every lab in the one student's vhost, and the instructor's steps said as such
        number = int(re.match(r"Lab (\d+):", each).group(1))
        assert f"  as student {student!r}, in their vhost" in each, each
        assert ("the instructor's step, run as the administrator:" in each) == (number in INSTRUCTORS), each
    # The processes ran as the student: the broker names the student's vhost in what it told them (lab 9).
    assert f"on vhost {student!r} gives queue 'graded'" in result.stdout
    assert f"PASS: student {student!r} ends as provisioned" in result.stdout
    # Each output block a handout shows on this version is checked against what the student's processes printed.
    shown = [block for lab in LABS if not lab.on_cluster for block in shown_blocks(lab.handout)
             if block.applies_to(broker.version())]
    assert result.stdout.count("PASS: the handout shows what the student saw: ") == len(shown) >= 15
    assert set(broker.admin.users()) == before, "the student is removed afterwards"


# --- the handouts' output blocks (labs/scenarios/shown.py), the matching on its own ---

def test_a_shown_line_stands_for_what_varies_between_runs_and_for_nothing_else():
    """Names, addresses, times, rates and message ids vary; counts, bodies and words are the handout's promise."""
    summary = line_pattern("[worker-4242] summary: received 1, processed 1, lost 0, requeued 0", "student-1a2b3c")
    assert summary.fullmatch("[worker-31337] summary: received 1, processed 1, lost 0, requeued 0")
    assert not summary.fullmatch("[worker-31337] summary: received 1, processed 1, lost 1, requeued 0")
    assert not summary.fullmatch("[w1] summary: received 1, processed 1, lost 0, requeued 0")
    sent = line_pattern("sent 1 messages to queue 'hello' on vhost 'alice' in 0.01s (95 msg/s)", "student-1a2b3c")
    assert sent.fullmatch("sent 1 messages to queue 'hello' on vhost 'student-1a2b3c' in 1.2s (3 msg/s)")
    assert sent.fullmatch("sent 1 messages to queue 'hello' on vhost 'student-1a2b3c' in 0.5s (1,210 msg/s)")
    assert not sent.fullmatch("sent 1 messages to queue 'hello' on vhost 'alice' in 1.2s (3 msg/s)")
    assert not sent.fullmatch("sent 2 messages to queue 'hello' on vhost 'student-1a2b3c' in 1.2s (3 msg/s)")
    waiting = line_pattern("[w1] waiting at localhost:5672 on 'xxxx...'", "s")
    assert waiting.fullmatch("[w1] waiting at 127.0.0.1:35672 on 'xxxxxxxxxxxx'")
    assert line_pattern("kept     classic  yes", "s").fullmatch("kept                  classic      yes")
    assert line_pattern("StreamLostError: lost", "s").fullmatch("pika.exceptions.StreamLostError: lost")
    assert line_pattern("...", "s") is None


def test_a_block_is_one_process_printing_its_lines_in_order(tmp_path):
    handout = tmp_path / "99-example.md"
    handout.write_text("text\n\n```sh\n./qprocessor.py\n```\n```\n[w1] received '7'\n...\n[w1] done '7'\n```\n\n"
                       "<!-- shown on RabbitMQ >= 4.3 -->\n```\nonly on 4.3\n```\n")
    block, newer = shown_blocks(handout)
    assert block.lines == ("[w1] received '7'", "...", "[w1] done '7'")
    assert block.applies_to((3, 10, 8)) and block.applies_to((4, 3, 6))
    assert not newer.applies_to((3, 10, 8)) and newer.applies_to((4, 3, 6))
    assert printed_by(block, ["[w1] received '7'", "[w1] working", "[w1] done '7'"], "s")
    assert not printed_by(block, ["[w1] done '7'", "[w1] received '7'"], "s")
    assert unmatched(block, [["[w1] received '7'"], ["[w1] done '7'"]], "s") == \
        "each line, but not in this order by one process"
    assert unmatched(block, [["[w1] received '8'", "[w1] done '7'"]], "s") == \
        "[w1] received '7'; the closest printed: \"[w1] received '8'\""
