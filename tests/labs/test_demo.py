"""./kit demo itself, as the README's quickstart runs it: its own private broker, three workers, one crashing."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.helpers import IN_THE_310_SUITE, ROOT


@pytest.fixture
def demo_output() -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMQP_", "RABBITMQ_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([str(ROOT / "kit"), "demo", "--live-only"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.slow(seconds=10)
@IN_THE_310_SUITE
def test_kit_demo_live_only_passes_and_shows_the_crash_and_the_redeliveries(demo_output):
    out = demo_output.stdout
    assert demo_output.returncode == 0, demo_output.stdout[-3000:] + demo_output.stderr[-3000:]
    assert "PASS: with --acknowledge, 0 of 18 messages lost" in out
    tally = re.search(r"sent 18, processed 18, lost by workers (\d+), requeued 0, failed 0, dead-lettered 0, "
                      r"redelivered (\d+), "
                      r"never processed 0", out)
    assert tally, out[-3000:]
    lost, redelivered = map(int, tally.groups())
    crashes = int(re.search(r"w3 crashed (\d+) times", out).group(1))
    assert crashes >= 1 and lost == crashes  # each crash loses the message w3 held ...
    assert redelivered >= crashes  # ... and each comes back flagged redelivered
    assert re.search(r"w3.*crashing while holding", out)
    assert re.search(r"received '[^']+' \(redelivered\)", out)
    for worker in ("w1", "w2", "w3"):
        assert re.search(rf"^\s+{worker}\s+processed\s+\d+", out, re.M), f"no tally line for {worker}"
