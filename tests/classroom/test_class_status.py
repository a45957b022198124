"""A class on one broker, as the instructor sees it: `python -m labs class status` shows each student's figures as the
broker counts them, flags what needs a look, and `class remove` takes away exactly the roster's accounts."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labs.__main__ import class_group, cli
from labs.classroom.status import Reading, Thresholds, alarms, student_rows
from labs.drive.wait import wait_until
from labs.settings import child_environment
from tests.helpers import ROOT, require
from tests.scripts.test_sender_options import ctrl_c_as_in_a_terminal

STUDENT_KEYS = {"name", "connections", "consumers", "queues", "ready", "unacked", "publish_rate", "deliver_rate",
                "ack_rate", "redelivered", "redeliver_rate", "last_activity", "flags", "notes"}


def admin_env(broker, **extra: str) -> dict:
    return child_environment(RABBITMQ_MANAGEMENT_URL=broker.admin.base_url, RABBITMQ_ADMIN_USER=broker.admin.username,
                             RABBITMQ_ADMIN_PASSWORD=broker.password, **extra)


def class_cli(broker, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labs", "class", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or admin_env(broker), timeout=60)


def status(broker, roster: Path, *args: str) -> dict:
    result = class_cli(broker, "status", "--roster", str(roster), "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_name(document: dict) -> dict[str, dict]:
    return {student["name"]: student for student in document["students"]}


class Klass:
    """A roster provisioned with `class provision --apply`, the passwords from its CSV; removed afterwards."""

    def __init__(self, broker, folder: Path, names: list[str]) -> None:
        self.broker, self.names = broker, names
        self.roster = folder / "roster.txt"
        self.roster.write_text("\n".join(["# a small class", *names, ""]))
        passwords_csv = folder / "passwords.csv"
        result = class_cli(broker, "provision", str(self.roster), "--passwords-csv", str(passwords_csv), "--apply",
                           broker.admin.base_url)
        assert result.returncode == 0, result.stderr
        with passwords_csv.open() as handle:
            self.passwords = {row["username"]: row["password"] for row in csv.DictReader(handle)}

    def env(self, space, name: str) -> dict:
        return space.env(AMQP_URL=self.broker.url(name, name, self.passwords[name]))

    def remove(self) -> None:
        for name in self.names:
            self.broker.admin.delete_vhost(name)
            self.broker.admin.delete_user(name)


@pytest.fixture
def klass(broker, tmp_path, request):
    """Three students (a backlog, a held message, an idle one), named for this test."""
    require(broker.local is not None, "provisions a class through the suite's own broker's management API")
    tag = f"{abs(hash(request.node.name)) % 10**6}"
    made = Klass(broker, tmp_path, [f"backlog-{tag}", f"holder-{tag}", f"idle-{tag}"])
    yield made
    made.remove()


def test_the_status_shows_each_students_figures_as_the_broker_counts_them_and_flags_what_needs_a_look(klass, space,
                                                                                                      broker):
    backlog, holder, idle = klass.names
    # Given a student who sent five messages and runs no worker, with a vhost limit of one queue,
    space.send("--count", "5", "--quiet", env=klass.env(space, backlog))
    broker.admin.request("PUT", f"/api/vhost-limits/{backlog}/max-queues", {"value": 1})
    # a student whose acknowledging worker is on a long job (8 characters at 30 s each) with another one waiting,
    space.send("--quiet", "holdthis", "andthis.", env=klass.env(space, holder))
    space.start_worker("slow", "--acknowledge", "--prefetch", "1", "--seconds-per-char", "30",
                       env=klass.env(space, holder))
    # and a student who has done nothing yet:
    # when the instructor asks (flags looking back 10 s), once the broker's statistics have caught up,
    settled = lambda: (lambda s: s if s[backlog]["ready"] == 5 and s[holder]["unacked"] == 1
                       and "unacked-long" in s[holder]["flags"] else None)(by_name(status(broker, klass.roster,
                                                                                           "--window", "10")))
    students = wait_until(settled, 60, "the backlog, the held message and its flag in class status")

    # then every figure is the broker's own,
    for name in (backlog, holder):
        queue = broker.admin.queue(name, "hello")
        row = students[name]
        assert (row["queues"], row["ready"], row["unacked"], row["consumers"], row["redelivered"]) == \
            (1, queue["messages_ready"], queue["messages_unacknowledged"], queue["consumers"],
             queue.get("message_stats", {}).get("redeliver", 0))
    assert (students[backlog]["ready"], students[holder]["ready"], students[holder]["consumers"]) == (5, 1, 1)
    assert students[holder]["connections"] == 1 and students[backlog]["connections"] == 0
    # and the flags say what needs a look: a backlog nobody reads (and the one-queue limit reached), a message held
    # for long, and nothing for the idle student.
    assert sorted(students[backlog]["flags"]) == ["backlog", "limit"]
    assert students[holder]["flags"] == ["unacked-long"]
    assert students[idle] == {"name": idle, "connections": 0, "consumers": 0, "queues": 0, "ready": 0, "unacked": 0,
                              "publish_rate": 0.0, "deliver_rate": 0.0, "ack_rate": 0.0, "redelivered": 0,
                              "redeliver_rate": 0.0, "last_activity": None, "flags": [], "notes": []}
    assert students[backlog]["last_activity"] is not None

    # The table says the same to a person.
    table = class_cli(broker, "status", "--roster", str(klass.roster), "--window", "10")
    assert table.returncode == 0, table.stderr
    assert "no alarms" in table.stdout and f"{backlog}: 5 ready in 'hello' and no consumer" in table.stdout
    assert f"{holder}: 1 unacked in 'hello', no ack for 10s" in table.stdout


def test_the_json_has_exactly_the_documented_shape(klass, broker):
    document = status(broker, klass.roster)
    assert set(document) == {"students", "alarms"} and document["alarms"] == []
    assert [student["name"] for student in document["students"]] == klass.names  # roster order
    for student in document["students"]:
        assert set(student) == STUDENT_KEYS
        assert all(isinstance(student[key], int) for key in ("connections", "consumers", "queues", "ready",
                                                              "unacked", "redelivered"))
        assert all(isinstance(student[key], float) for key in ("publish_rate", "deliver_rate", "ack_rate",
                                                                "redeliver_rate"))
        assert isinstance(student["flags"], list) and isinstance(student["notes"], list)


def test_a_message_redelivered_again_and_again_is_flagged_as_poison(broker, space, tmp_path):
    require(broker.local is not None, "provisions a class through the suite's own broker's management API")
    klass = Klass(broker, tmp_path, [f"poisoned-{abs(hash(tmp_path)) % 10**6}"])
    try:
        (name,) = klass.names
        space.send("--quiet", "poison", env=klass.env(space, name))
        space.start_worker("fails", "--acknowledge", "--fail-on", "poison", "--seconds-per-char", "0.03",
                           env=klass.env(space, name))
        row = wait_until(lambda: (lambda r: r if "poison" in r["flags"] else None)(
            status(broker, klass.roster, "--window", "10", "--poison-after", "5")["students"][0]), 60,
            "the poison flag")
        assert row["redelivered"] >= 5 and row["unacked"] + row["ready"] == 1
        assert row["redelivered"] <= broker.admin.queue(name, "hello")["message_stats"]["redeliver"]
    finally:
        klass.remove()


def test_the_nodes_alarms_are_on_top(klass, restartable):
    try:
        restartable.ctl("set_vm_memory_high_watermark", "0")
        restartable.ctl("set_disk_free_limit", "100000000GB")
        found = wait_until(lambda: (lambda a: a if len(a) == 2 else None)(status(restartable, klass.roster)["alarms"]),
                           30, "the memory and disk alarms in class status")
    finally:
        restartable.ctl("set_vm_memory_high_watermark", "0.4")
        restartable.ctl("set_disk_free_limit", "50MB")
    assert sorted(alarm["alarm"] for alarm in found) == ["disk", "memory"]
    assert {alarm["node"] for alarm in found} == {node["name"] for node in restartable.admin.request("GET",
                                                                                                   "/api/nodes")}


def test_remove_takes_exactly_the_rosters_users_and_vhosts(klass, space, broker):
    backlog, holder, idle = klass.names
    klass.roster.write_text(klass.roster.read_text() + "never-provisioned-student\n")
    broker.admin.set_policy(holder, "labkit-hello", "^hello$", {"delivery-limit": 3})
    broker.admin.request("PUT", f"/api/vhost-limits/{holder}/max-connections", {"value": 5})

    dry = class_cli(broker, "remove", str(klass.roster), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{backlog}: would remove vhost and user" in dry.stdout
    assert "never-provisioned-student: no user and no vhost" in dry.stdout
    assert set(klass.names) <= set(broker.admin.users()), "a dry run removed users"

    users_before, vhosts_before = set(broker.admin.users()), vhost_names(broker)
    done = class_cli(broker, "remove", str(klass.roster))
    assert done.returncode == 0, done.stderr
    assert f"{idle}: removed vhost and user" in done.stdout
    assert users_before - set(broker.admin.users()) == set(klass.names)
    assert vhosts_before - vhost_names(broker) == set(klass.names)
    assert {space.username, "guest"} <= set(broker.admin.users()) and {space.vhost, "/"} <= vhost_names(broker)
    limited = {entry["vhost"] for entry in broker.admin.request("GET", "/api/vhost-limits")}
    assert holder not in limited
    assert not [p for p in broker.admin.request("GET", "/api/policies") if p["vhost"] == holder]


def vhost_names(broker) -> set[str]:
    return {vhost["name"] for vhost in broker.admin.request("GET", "/api/vhosts?columns=name")}


@pytest.mark.parametrize("command", ["status", "remove", "dashboard"])
@pytest.mark.parametrize("wrong, code, says", [
    ({"RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:9"}, 21, "no RabbitMQ management API at http://127.0.0.1:9"),
    ({"RABBITMQ_MANAGEMENT_URL": ""}, 21, "no management API given"),
    ({"RABBITMQ_ADMIN_PASSWORD": "wrong"}, 22, "refuses user"),
], ids=["unreachable", "missing", "refused"])
def test_a_wrong_management_url_or_password_is_one_line_and_its_exit_code(broker, tmp_path, command, wrong, code,
                                                                          says):
    (tmp_path / "roster.txt").write_text("ann\n")
    env = {**admin_env(broker), **wrong}
    args = {"status": ["--roster", str(tmp_path / "roster.txt")], "remove": [str(tmp_path / "roster.txt")],
            "dashboard": ["--roster", str(tmp_path / "roster.txt"), "--port", "0"]}[command]  # checked before serving
    result = class_cli(broker, command, *args, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code and len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_watch_redraws_until_ctrl_c_and_then_exits_0(broker, tmp_path):
    (tmp_path / "roster.txt").write_text("ann\n")
    process = subprocess.Popen([sys.executable, "-m", "labs", "class", "status", "--roster",
                                str(tmp_path / "roster.txt"), "--json", "--watch", "1"], cwd=ROOT,
                               env=admin_env(broker, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        readings = [process.stdout.readline(), process.stdout.readline()]  # two drawings, a second apart
        assert all(json.loads(line)["students"][0]["name"] == "ann" for line in readings)
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_class_provision_is_the_provision_command_under_a_second_name():
    assert class_group.commands["provision"] is cli.commands["provision"]


def test_the_flags_from_the_api_answers_alone():
    """The pure part, on answers as the API sends them (message_stats [] when empty, samples newest first): the
    counters now against the oldest sample of the window."""
    def samples(*values: int) -> dict:
        return {"samples": [{"sample": v, "timestamp": 0} for v in values]}

    reading = Reading(
        overview={}, nodes=[{"name": "n", "running": True, "mem_alarm": False, "disk_free_alarm": True}],
        vhosts=[{"name": "a"}, {"name": "c"}], limits=[{"vhost": "a", "value": {"max-connections": 2}}],
        connections=[{"vhost": "a"}, {"vhost": "a"}, {"vhost": "elsewhere"}],
        queues=[{"vhost": "a", "name": "q", "consumers": 1, "messages_ready": 0, "messages_unacknowledged": 2,
                 "message_stats": {"redeliver": 9, "ack": 4, "deliver_get": 12, "ack_details": {"rate": 0.5}}},
                {"vhost": "a", "name": "empty", "consumers": 0, "messages_ready": 0, "messages_unacknowledged": 0,
                 "idle_since": "2026-12-07 1:15:13", "message_stats": []},
                # Its delivery is not in the samples yet: not held for long.
                {"vhost": "c", "name": "young", "consumers": 1, "messages_ready": 0, "messages_unacknowledged": 1}],
        window=[{"vhost": "a", "name": "q", "message_stats": {"ack_details": samples(4, 4),
                                                               "deliver_get_details": samples(12, 12),
                                                               "redeliver_details": samples(6, 2)}},
                {"vhost": "c", "name": "young", "message_stats": {"deliver_get_details": samples(0, 0, 0)}}],
        taken_at=datetime.now(timezone.utc))
    (row, missing, young) = student_rows(["a", "b", "c"], reading, Thresholds(window=60, poison_redeliveries=5))
    assert (row.connections, row.consumers, row.queues, row.unacked, row.redelivered, row.ack_rate) == \
        (2, 1, 2, 2, 9, 0.5)
    assert row.flags == ("unacked-long", "poison", "limit")
    assert missing.flags == ("no-vhost",) and young.flags == ()
    assert alarms(reading.nodes) == [{"node": "n", "alarm": "disk"}]
