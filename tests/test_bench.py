"""The benchmark runs end to end (a smoke run: tiny counts, no thresholds), so it never rots."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import ROOT


def test_benchmark_smoke_run_measures_every_row(broker, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "AMQP_"))}
    env.update(AMQP_URL=broker.url(), RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    names = [row["what"] for row in results["rows"]]
    for expected in ("publish unconfirmed", "publish confirmed", "publish persistent",
                     "consume + ack, prefetch 1", "consume + ack, prefetch 100", "redelivery after SIGKILL",
                     "fair dispatch makespan, 3 workers, prefetch 1", "start-up to first message, qprocessor.py"):
        assert expected in names
    assert all(row.get("ratio", 1) > 0 for row in results["rows"])
    assert set(results["peak_rss_mb"]) >= {"sender.py", "qprocessor.py"}
    assert "| measurement |" in result.stdout
