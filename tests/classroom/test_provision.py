"""Per-student vhosts: each student works in their own vhost and is refused on every other one."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from labs.classroom.provision import (ClassLimits, assign_passwords, definitions, in_parts, password_hash,
                                     read_roster)
from tests.helpers import ROOT, require

SAMPLE_DEFINITIONS = ROOT / "labs" / "classroom" / "sample-definitions.json"
SAMPLE_PASSWORD = "labkit-sample"  # the initial password the sample definitions were generated with


def provision(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labs", "provision", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def login(broker, username: str, password: str, vhost: str) -> str:
    """'ok' when the user may open the vhost, else the kind of refusal."""
    try:
        pika.BlockingConnection(pika.URLParameters(broker.url(vhost, username, password))).close()
        return "ok"
    except pika.exceptions.ProbableAccessDeniedError:
        return "vhost refused"
    except pika.exceptions.ProbableAuthenticationError:
        return "login refused"


def read_csv(path: Path) -> dict[str, str]:
    with path.open() as handle:
        return {row["username"]: row["password"] for row in csv.DictReader(handle)}


@pytest.fixture
def roster(tmp_path: Path, request) -> list[str]:
    tag = f"{abs(hash(request.node.name)) % 10**6}"
    return [f"student{n}-{tag}" for n in range(1, 7)]


def test_each_student_works_in_their_own_vhost_and_is_refused_elsewhere(broker, roster, tmp_path, space):
    require(broker.local is not None, "applies accounts through the suite's own broker's management API")
    (tmp_path / "roster.txt").write_text("\n".join(["# class of six", *roster, ""]))
    passwords_csv = tmp_path / "passwords.csv"
    args = [str(tmp_path / "roster.txt"), "--passwords-csv", str(passwords_csv),
            "--definitions", str(tmp_path / "defs.json"), "--apply", broker.admin.base_url,
            "--default-queue-type", "quorum"]
    try:
        first = provision(*args)
        assert first.returncode == 0, first.stderr
        handed_out = read_csv(passwords_csv)
        again = provision(*args)  # re-running is safe: same passwords, nothing breaks
        assert again.returncode == 0, again.stderr
        passwords = read_csv(passwords_csv)
        assert passwords == handed_out, "a second run changed passwords already handed out"
        assert sorted(passwords) == sorted(roster) and len(set(passwords.values())) == len(roster)
        assert oct(passwords_csv.stat().st_mode & 0o777) == "0o600"

        for student in roster:  # with the passwords the first run handed out, after the second run applied again
            password = handed_out[student]
            own = space.send("--count", "2", "--quiet", env=space.env(AMQP_URL=broker.url(student, student, password)))
            assert "sent 2 messages" in own.stdout
            # The vhost's default queue type made the scripts' untyped queue a quorum queue.
            assert broker.admin.default_queue_type(student) == "quorum"
            assert broker.admin.queue(student, "hello")["type"] == "quorum"
            for other in roster:
                if other != student:
                    assert login(broker, student, password, other) == "vhost refused"
            assert login(broker, student, password, "/") == "vhost refused"
            assert login(broker, student, "wrong", student) == "login refused"
    finally:
        for student in roster:
            broker.admin.delete_vhost(student)
            broker.admin.delete_user(student)


def test_policymaker_students_get_their_limits_as_a_policy_on_their_own_vhost_only(broker, roster, tmp_path, space):
    require(broker.local is not None, "applies accounts through the suite's own broker's management API")
    students = roster[:2]
    (tmp_path / "roster.txt").write_text("\n".join(students) + "\n")
    result = provision(str(tmp_path / "roster.txt"), "--password", "class-pass", "--apply", broker.admin.base_url,
                       "--policymaker")
    try:
        assert result.returncode == 0, result.stderr
        first, second = students
        limits = ("--queue", "q", "--queue-type", "quorum", "--delivery-limit", "4", "job")
        sent = space.send(*limits, env=space.env(AMQP_URL=broker.url(first, first, "class-pass")))
        assert f"policy 'labkit-q' on vhost {first!r} gives queue 'q' delivery limit 4" in sent.stderr
        # The tag gives policies on the vhosts a student has permissions on: their own, no other.
        elsewhere = space.send(*limits, "--limits-by", "policy", check=False,
                               env=space.env(AMQP_URL=broker.url(second, first, "class-pass")))
        assert elsewhere.returncode == 14 and "cannot set policy 'labkit-q'" in elsewhere.stderr, elsewhere.stderr
        # None of the student's there: only the class's (a policy on 3.10; on 4 its cap is an operator policy alone).
        class_only = ["class-cap"] if broker.version()[0] < 4 else []
        assert [policy["name"] for policy in broker.admin.policies(second)] == class_only
    finally:
        for student in students:
            broker.admin.delete_vhost(student)
            broker.admin.delete_user(student)


def test_the_sample_definitions_that_compose_loads_give_working_accounts(broker):
    require(broker.local is not None, "imports definitions into the suite's own broker")
    document = json.loads(SAMPLE_DEFINITIONS.read_text())
    names = read_roster(ROOT / "labs" / "classroom" / "sample-roster.txt")
    assert [u["name"] for u in document["users"]] == names
    if broker.controllable:  # the instructor's way: rabbitmqctl import_definitions FILE
        broker.ctl("import_definitions", broker.local.readable_path(SAMPLE_DEFINITIONS))
    else:
        broker.admin.import_definitions(document)
    try:
        for name in names:
            assert login(broker, name, SAMPLE_PASSWORD, name) == "ok"
            assert login(broker, name, SAMPLE_PASSWORD, names[0] if name != names[0] else names[1]) == "vhost refused"
    finally:
        for name in names:
            broker.admin.delete_vhost(name)
            broker.admin.delete_user(name)


def test_password_hash_matches_rabbitmq_scheme():
    # A known vector: salt 908D C60A, password "test12" (from RabbitMQ's password hashing documentation).
    assert password_hash("test12", bytes.fromhex("908DC60A")) == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


@pytest.mark.parametrize("content, message", [("bad name!\n", "not a usable username"), ("a\na\n", "listed twice"),
                                              ("# nobody\n", "no usernames")])
def test_bad_rosters_are_refused_in_one_line(tmp_path, content, message):
    (tmp_path / "roster.txt").write_text(content)
    result = provision(str(tmp_path / "roster.txt"), "--definitions", str(tmp_path / "d.json"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_rerun_without_the_csv_never_changes_a_password_already_handed_out(broker, roster, tmp_path):
    """The CSV lost (or never kept): students who have an account keep their password, the run says who and how to
    give new ones, and only --reset-passwords changes them."""
    require(broker.local is not None, "applies accounts through the suite's own broker's management API")
    students = roster[:3]
    (tmp_path / "roster.txt").write_text("\n".join(students[:2]) + "\n")
    passwords_csv = tmp_path / "passwords.csv"
    args = ["--passwords-csv", str(passwords_csv), "--apply", broker.admin.base_url]
    try:
        assert provision(str(tmp_path / "roster.txt"), *args).returncode == 0
        handed_out = read_csv(passwords_csv)
        passwords_csv.unlink()
        (tmp_path / "roster.txt").write_text("\n".join(students) + "\n")  # a late joiner, and no CSV
        again = provision(str(tmp_path / "roster.txt"), *args)
        assert again.returncode == 0, again.stderr
        assert "kept the passwords of 2 students" in again.stdout and "--reset-passwords" in again.stdout
        for student in students[:2]:
            assert login(broker, student, handed_out[student], student) == "ok"
        late = read_csv(passwords_csv)
        assert list(late) == [students[2]] and login(broker, students[2], late[students[2]], students[2]) == "ok"

        reset = provision(str(tmp_path / "roster.txt"), *args[:2], "--apply", broker.admin.base_url,
                          "--reset-passwords")
        assert reset.returncode == 0, reset.stderr
        assert login(broker, students[0], handed_out[students[0]], students[0]) == "login refused"
    finally:
        for student in students:
            broker.admin.delete_vhost(student)
            broker.admin.delete_user(student)


def test_a_shared_initial_password_is_warned_about_in_one_line(tmp_path):
    (tmp_path / "roster.txt").write_text("ann\nben\n")
    result = provision(str(tmp_path / "roster.txt"), "--password", "1Password", "--definitions",
                       str(tmp_path / "d.json"))
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "log in as any other" in warning[0]


def test_a_class_is_applied_in_parts_that_together_hold_every_account_once():
    """A class of 200 in one import outlasted the client's 30 s and was left without permissions: parts of ten."""
    students = assign_passwords([f"s{n:03d}" for n in range(23)], "pw", {})
    document = definitions(students, keep_users=frozenset({"s007"}), limits=ClassLimits())
    parts = in_parts(document)
    assert [len(part["vhosts"]) for part in parts] == [10, 10, 3]
    for key in ("users", "vhosts", "permissions", "parameters", "policies"):
        assert [entry for part in parts for entry in part[key]] == document[key]
    for part in parts:  # a student's user, vhost and permissions travel together
        names = {vhost["name"] for vhost in part["vhosts"]}
        for key in ("permissions", "parameters", "policies"):  # and their limits and cap
            assert {each["vhost"] for each in part[key]} == names
        assert {user["name"] for user in part["users"]} == names - {"s007"}


def test_the_cap_is_the_operator_policy_alone_where_the_broker_takes_overflow_there():
    """RabbitMQ 4 takes `overflow` in an operator policy: the document then gives each vhost that alone, since a
    class-cap policy beside it would tie with the instructor's own policies at priority 0. For 3.10 (and a definitions
    file, which every version imports) the refusal is a policy of its own."""
    students = assign_passwords(["ann", "ben"], "pw", {})
    on_4 = definitions(students, limits=ClassLimits(), operator_overflow=True)
    assert "policies" not in on_4
    assert [p["value"]["definition"]["overflow"] for p in on_4["parameters"] if p["component"] == "operator_policy"] \
        == ["reject-publish", "reject-publish"]
    on_3 = definitions(students, limits=ClassLimits(), operator_overflow=False)
    assert [(p["vhost"], p["definition"]) for p in on_3["policies"]] == \
        [("ann", {"overflow": "reject-publish"}), ("ben", {"overflow": "reject-publish"})]
