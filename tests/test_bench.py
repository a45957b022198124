"""The benchmark runs end to end (a smoke run: tiny counts, no thresholds) and its figures hang together."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from labs.management import ManagementAPI
from labs.settings import child_environment
from tests.helpers import ROOT

SMOKE_MESSAGES, SMOKE_ROUNDS = 200, 1
PIPELINED = "publish persistent vs pipelined pika (window 1000)"
QUORUM_ROWS = [f"{PIPELINED}, quorum queue", "consume + ack, prefetch 100, quorum queue"]
RATE_ROWS = ["publish unconfirmed", "publish confirmed", "publish persistent",
             "sender.py confirmed vs plain unconfirmed", PIPELINED, "consume + ack, prefetch 1",
             "consume + ack, prefetch 100", *QUORUM_ROWS]
# Rows measured against a peer in the same rounds: best, median and the spread of the round-by-round ratios
PAIRED_ROWS = [what for what in RATE_ROWS if what != "sender.py confirmed vs plain unconfirmed"]
SPAN_ROWS = ["fair dispatch makespan, 3 workers, no prefetch", "fair dispatch makespan, 3 workers, prefetch 1"]
TIME_ROWS = ["redelivery after SIGKILL", "start-up to first message, qprocessor.py",
             "start-up to one confirmed message and exit, sender.py"]
# bench.fair_dispatch's uneven bodies at 0.01 s per character, shared by 3 workers
FAIR_IDEAL = (8 * 82 + 16 * 12) * 0.01 / 3


def test_benchmark_smoke_run_as_a_non_guest_administrator_measures_every_row(broker, administrator, tmp_path):
    username, password = administrator
    env = child_environment(AMQP_URL=broker.url("/", username, password), RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    out, chart = tmp_path / "bench.json", tmp_path / "docs" / "bench.svg"
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(out), "--chart", str(chart)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    rows = {row["what"]: row for row in results["rows"]}
    assert list(rows) == RATE_ROWS[:4] + RATE_ROWS[4:] + SPAN_ROWS + TIME_ROWS[:1] + TIME_ROWS[1:]
    assert (results["messages"], results["rounds"]) == (SMOKE_MESSAGES, SMOKE_ROUNDS)
    as_admin = ManagementAPI(broker.admin.base_url, username, password)  # guest is refused meanwhile
    version = as_admin.overview()["rabbitmq_version"]
    assert results["machine"]["rabbitmq"] == version
    assert all(row["rabbitmq"] == version for row in rows.values()), "every figure names its broker version"
    assert rows[PIPELINED]["peer"] == "pipelined publish" and rows["consume + ack, prefetch 100"]["peer"] == "plain consume"
    assert [rows[what]["peer"] for what in QUORUM_ROWS] == ["pipelined publish", "plain consume"]
    for what in RATE_ROWS:  # every throughput row names the queue type it was measured on
        assert rows[what]["queue type"] == ("quorum" if what in QUORUM_ROWS else "classic"), what

    for what in RATE_ROWS:
        row = rows[what]
        ours = row.get("sender.py msg/s") or row.get("qprocessor.py msg/s")
        plain = row["plain pika msg/s"]
        # Rates of whole processes moving 200 messages: positive, and below 200 messages in 50 ms (a Python
        # process that imports pika and connects takes longer than that alone).
        for rate in (ours, plain):
            assert 0 < rate < SMOKE_MESSAGES / 0.05, (what, rate)
        assert row["ratio"] == pytest.approx(ours / plain), what
    for what in PAIRED_ROWS:
        row = rows[what]
        ours = row.get("sender.py msg/s") or row.get("qprocessor.py msg/s")
        assert len(row["ours rounds msg/s"]) == len(row["peer rounds msg/s"]) == len(row["round ratios"]) == SMOKE_ROUNDS
        assert row["ours best msg/s"] == max(row["ours rounds msg/s"]) >= ours, what
        assert row["peer best msg/s"] == max(row["peer rounds msg/s"]) >= row["plain pika msg/s"], what
        assert row["spread"] == [min(row["round ratios"]), max(row["round ratios"])], what
        assert row["round ratios"] == pytest.approx([a / b for a, b in zip(row["ours rounds msg/s"],
                                                                           row["peer rounds msg/s"])]), what
    mixed = rows["sender.py confirmed vs plain unconfirmed"]
    assert mixed["sender.py msg/s"] == rows["publish confirmed"]["sender.py msg/s"]
    assert mixed["plain pika msg/s"] == rows["publish unconfirmed"]["plain pika msg/s"]

    for what in SPAN_ROWS:
        row = rows[what]
        assert row["ideal"] == pytest.approx(FAIR_IDEAL)
        assert row["seconds"] >= 0.9 * row["ideal"], row  # three workers cannot beat a perfect share
        assert row["ratio"] == pytest.approx(row["seconds"] / row["ideal"])
    for what in TIME_ROWS:
        assert 0 < rows[what]["seconds"] < 30, rows[what]

    assert set(results["peak_rss_mb"]) >= {"sender.py", "qprocessor.py"}
    assert all(mb > 5 for mb in results["peak_rss_mb"].values()), results["peak_rss_mb"]
    assert "| measurement |" in result.stdout and f"RabbitMQ {results['machine']['rabbitmq']}" in result.stdout

    # The chart: one bar per throughput row, labelled with its broker version and its ratio.
    drawing = ElementTree.parse(chart).getroot()
    texts = [text.text or "" for text in drawing.iter("{http://www.w3.org/2000/svg}text")]
    for what in RATE_ROWS:
        assert f"RabbitMQ {version}: {what}" in texts, what
        assert f"{rows[what]['ratio']:.2f}x" in texts, what
    bars = [rect for rect in drawing.iter("{http://www.w3.org/2000/svg}rect") if rect.get("height") != drawing.get("height")]
    assert len(bars) == len(RATE_ROWS)
