"""The class's Redis, lab 10's job store: `class provision --redis` gives each student an account for their own keys,
the Jobs API keeps each student's records there under their name, and `class remove --redis` takes it all away."""
from __future__ import annotations

from typing import Iterator

import pytest
import redis

from labs.brokers.redis_server import RedisServer, redis_installed, running_redis
from labs.drive.jobs_service import JobsService
from tests.classroom.accounts import passwords, provision
from tests.classroom.test_class_status import class_cli
from tests.helpers import require


@pytest.fixture
def class_redis(tmp_path) -> Iterator[RedisServer]:
    require(redis_installed(), "the class's Redis is a redis-server: apt-get install redis-server (./kit test does)")
    with running_redis(tmp_path / "redis") as server:
        yield server


def refusal(client: redis.Redis, *command: str) -> str:
    """'NOPERM' when Redis refuses the account the command, else what it answered."""
    try:
        return repr(client.execute_command(*command))
    except redis.exceptions.NoPermissionError:
        return "NOPERM"


def test_each_student_keeps_their_own_jobs_on_the_class_redis(broker, students, class_redis):
    """Two students' Jobs APIs on one Redis, each with the account provisioning made: a job is stored under its
    student's name, the classmate's API neither lists nor finds it, and the classmate's account may not read it,
    list every key, or wipe the database. A re-run keeps the Redis passwords as handed out."""
    (ann, ben), roster = students
    provision(broker, roster, "--redis", class_redis.url)
    handed = passwords(roster)
    urls = {name: class_redis.url_for(name, handed[name]) for name in (ann, ben)}
    with JobsService(broker.url(ann, ann, handed[ann]), urls[ann]) as ann_api, \
            JobsService(broker.url(ben, ben, handed[ben]), urls[ben]) as ben_api:
        ann_api.start_api()
        ben_api.start_api()
        status, job = ann_api.post(b'{"start": 1, "end": 2}')
        assert status == 201, job
        assert class_redis.client().exists(f"{ann}:job.{job['id']}")
        assert [each["id"] for each in ann_api.request("GET", "/jobs")[1]] == [job["id"]]
        assert ben_api.request("GET", "/jobs")[1] == []
        assert ben_api.request("GET", f"/jobs/{job['id']}")[0] == 404

    ben_client = redis.Redis.from_url(urls[ben], decode_responses=True)
    assert refusal(ben_client, "HGETALL", f"{ann}:job.{job['id']}") == "NOPERM"
    assert refusal(ben_client, "DEL", f"{ann}:job.{job['id']}") == "NOPERM"
    assert refusal(ben_client, "KEYS", "*") == "NOPERM"
    assert refusal(ben_client, "FLUSHALL") == "NOPERM"
    assert ben_client.hset(f"{ben}:mine", "a", "1") == 1  # their own keys are theirs to write

    again = provision(broker, roster, "--redis", class_redis.url)
    assert "Redis accounts for 2 students" in again.stdout, again.stdout
    assert redis.Redis.from_url(urls[ann]).ping()  # the password as handed out still logs in


def test_class_remove_takes_the_students_redis_accounts_and_their_keys(broker, students, class_redis):
    (ann, ben), roster = students
    provision(broker, roster, "--redis", class_redis.url)
    admin = class_redis.client()
    admin.set(f"{ann}:job.1", "x")
    admin.set("instructor:notes", "kept")
    dry = class_cli(broker, "remove", str(roster), "--dry-run", "--redis", class_redis.url)
    assert dry.returncode == 0 and f"would remove Redis account {ann} and its 1 keys" in dry.stdout, dry.stdout
    assert admin.exists(f"{ann}:job.1") and ann in admin.acl_users()
    removed = class_cli(broker, "remove", str(roster), "--redis", class_redis.url)
    assert removed.returncode == 0, removed.stderr
    assert f"removed Redis account {ben} and its 0 keys" in removed.stdout, removed.stdout
    assert not admin.exists(f"{ann}:job.1") and admin.get("instructor:notes") == "kept"
    assert set(admin.acl_users()) == {"default"}


def test_a_class_redis_unreachable_or_refusing_is_one_line_and_its_own_code(broker, students, class_redis):
    (_ann, _ben), roster = students
    unreachable = class_cli(broker, "provision", str(roster), "--apply", broker.admin.base_url, "--passwords-csv",
                            str(roster.with_suffix(".csv")), "--redis", "redis://127.0.0.1:1/0")
    assert unreachable.returncode == 23, unreachable.stderr
    assert unreachable.stderr.strip().splitlines() == [
        "Error: cannot reach Redis at redis://127.0.0.1:1/0: Error 111 connecting to 127.0.0.1:1. Connection refused."]
    class_redis.client().execute_command("ACL", "SETUSER", "helper", "on", ">helper-pw", "~*", "+@read")
    refused = class_cli(broker, "provision", str(roster), "--apply", broker.admin.base_url, "--passwords-csv",
                        str(roster.with_suffix(".csv")), "--redis", class_redis.url_for("helper", "helper-pw"))
    assert refused.returncode == 24, refused.stderr
    line, = refused.stderr.strip().splitlines()
    assert line.startswith(f"Error: Redis at redis://127.0.0.1:{class_redis.port}/0 refuses to manage accounts ("), \
        line
    assert "helper-pw" not in refused.stderr
