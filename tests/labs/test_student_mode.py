"""`python -m labs run --as-student`: the labs as one student of a class lives them, in order, in one vhost that every
lab shares, with the account `class provision` gives a student (its limits, the class's cap, the management tag).
What one lab leaves is there for the next, as in a student's vhost; the runner's own fresh vhost per lab hides that."""
from __future__ import annotations

import re

import pytest

from labs.exit_codes import EXIT_OK
from labs.scenarios.registry import LABS
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
    assert set(broker.admin.users()) == before, "the student is removed afterwards"
