"""Students provisioned as an instructor does it (`python -m labs class provision --apply`), for the tests that need
a class's accounts: the command, the passwords it hands out, a student's connection settings, and the `students`
fixture (tests/conftest.py makes it every test's)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, require


def provision(broker, roster: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "labs", "class", "provision", str(roster), "--apply",
                             broker.admin.base_url, "--passwords-csv", str(roster.with_suffix(".csv")), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def passwords(roster: Path) -> dict[str, str]:
    with roster.with_suffix(".csv").open() as handle:
        return {row["username"]: row["password"] for row in csv.DictReader(handle)}


def as_student(space, broker, name: str, password: str) -> dict:
    return space.env(AMQP_URL=broker.url(name, name, password))


@pytest.fixture
def students(broker, tmp_path, request):
    """Two students of a fresh class, provisioned by each test as it needs (removed afterwards): (names, roster)."""
    require(broker.local is not None, "provisions accounts through the suite's own broker's management API")
    tag = f"{abs(hash(request.node.name)) % 10**6}"
    names = [f"ann-{tag}", f"ben-{tag}"]
    roster = tmp_path / "roster.txt"
    roster.write_text("\n".join(names) + "\n")
    yield names, roster
    for name in names:
        broker.admin.delete_vhost(name)
        broker.admin.delete_user(name)
