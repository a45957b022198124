"""The benchmark runs end to end (a smoke run: tiny counts, no thresholds) and its figures hang together."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
import rq

from bench.chart import svg
from bench.rows import (ClusterRow, CrossRow, Drive, FailoverRow, JobsResults, JobsRound, JobsRow, MemoryRow, Rounds,
                        ScriptsResults, SpanRow, ThroughputRow, TimeRow)
from labs.amqp.admin import AdminAPI
from labs.brokers.redis_server import redis_installed
from labs.settings import child_environment
from tests.helpers import ROOT, require

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
# bench.scripts.fair_dispatch's uneven bodies at 0.01 s per character, shared by 3 workers
FAIR_IDEAL = (8 * 82 + 16 * 12) * 0.01 / 3


@pytest.mark.slow(seconds=36)
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
    as_admin = AdminAPI(broker.admin.base_url, username, password)  # guest is refused meanwhile
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


JOBS_SMOKE = 40
JOBS_ROWS = {"Jobs API end to end vs rq Worker (forks per job)": "rq.Worker",
             "Jobs API end to end vs rq SimpleWorker (no fork)": "rq.SimpleWorker"}


@pytest.mark.slow(seconds=10)
def test_jobs_mode_measures_the_jobs_api_and_python_rq_end_to_end(broker, administrator, tmp_path):
    """Given the lab's Jobs API and an rq API with the same routes, each with 4 workers and zero work, when the bench
    POSTs the same jobs to both, then every job completes and each row has jobs/s and latencies that hang together."""
    require(redis_installed(), "the Jobs API needs Redis: apt-get install redis-server (./kit test does)")
    username, password = administrator
    env = child_environment(AMQP_URL=broker.url("/", username, password), RABBITMQ_MANAGEMENT_URL=broker.admin.base_url)
    out, chart = tmp_path / "bench-jobs.json", tmp_path / "bench-jobs.svg"
    result = subprocess.run([sys.executable, "-m", "bench", "--jobs", str(JOBS_SMOKE), "--rounds", "1", "--json",
                             str(out), "--chart", str(chart)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    version = AdminAPI(broker.admin.base_url, username, password).overview()["rabbitmq_version"]
    assert (results["jobs"], results["rounds"], results["clients"], results["workers"]) == (JOBS_SMOKE, 1, 4, 4)
    assert all((row["paced jobs"], row["paced jobs/s"]) == (8, 20) for row in results["rows"])
    assert results["machine"]["rabbitmq"] == version and results["machine"]["rq"] == rq.__version__
    assert results["machine"]["redis"], "the Redis server's version is named"
    rows = {row["what"]: row for row in results["rows"]}
    assert list(rows) == list(JOBS_ROWS)
    for what, worker_class in JOBS_ROWS.items():
        row = rows[what]
        assert row["peer"] == f"python-rq {rq.__version__}, {worker_class}" and row["rabbitmq"] == version
        assert row["queue type"] == "quorum"  # the lab's queue, as rabbitqueue declares it
        for who in ("ours", "peer"):
            # 40 jobs through HTTP, a queue and a worker cannot take under 20 ms; complete at all within minutes
            assert 0.1 < row[f"{who} jobs/s"] < JOBS_SMOKE / 0.02, (what, who, row[f"{who} jobs/s"])
            assert row[f"{who} best jobs/s"] == max(row[f"{who} rounds jobs/s"])
            assert 0 < row[f"{who} p50 ms"] <= row[f"{who} p99 ms"] < 300_000, (what, who)
            # no job can complete sooner than the whole run's average share of it, nor later than the whole run
            assert row[f"{who} p99 ms"] <= 1000 * JOBS_SMOKE / row[f"{who} jobs/s"] * 1.01, (what, who)
            # and sent at 20 jobs/s (a tenth as many, 8 at least), with no backlog to wait behind
            assert 0 < row[f"{who} paced p50 ms"] <= row[f"{who} paced p99 ms"] < 30_000, (what, who)
        assert row["ratio"] == pytest.approx(row["ours jobs/s"] / row["peer jobs/s"])
        assert row["round ratios"] == pytest.approx([row["ratio"]]) and row["spread"] == [row["ratio"]] * 2
        assert 1 <= row["ours worker processes"] <= 4, "the lab's 4 workers ran every job"
    # rq's default worker forks a work horse for every job; SimpleWorker runs them in the 4 workers themselves
    assert rows["Jobs API end to end vs rq Worker (forks per job)"]["peer worker processes"] > 4
    assert 1 <= rows["Jobs API end to end vs rq SimpleWorker (no fork)"]["peer worker processes"] <= 4
    first, second = rows.values()
    assert first["ours rounds jobs/s"] == second["ours rounds jobs/s"], "both peers are compared with the same runs"
    assert "| p50 ours / peer |" in result.stdout and f"rq {rq.__version__}" in result.stdout

    drawing = ElementTree.parse(chart).getroot()
    texts = [text.text or "" for text in drawing.iter("{http://www.w3.org/2000/svg}text")]
    for what, row in rows.items():
        assert f"RabbitMQ {version}: {what}" in texts and f"{row['ratio']:.2f}x" in texts, what


SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("stored", ["bench.json", "bench-jobs.json"])
def test_the_results_stored_in_docs_still_draw_one_bar_per_rate_row(stored):
    """The chart reads the stored format: the figures in docs/ (written before the rows were dataclasses) still draw."""
    results = json.loads((ROOT / "docs" / stored).read_text())
    drawing = ElementTree.fromstring(svg(results))
    rate_rows = [row for row in results["rows"] if row.get("sender.py msg/s") or row.get("qprocessor.py msg/s")
                 or row.get("ours jobs/s")]
    assert len([rect for rect in drawing.iter(f"{SVG}rect") if rect.get("fill") != "white"]) == len(rate_rows) > 0


def stored_keys(stored: str, what: str) -> set[str]:
    """The keys of a row of that measurement in docs/, as the last full run stored them."""
    rows = json.loads((ROOT / "docs" / stored).read_text())["rows"]
    return set(next(row for row in rows if row["what"].startswith(what)))


def test_each_kind_of_row_prints_its_line_and_stores_the_keys_the_figures_in_docs_have():
    """Given one row of each kind, then its table line is the one the README's figures show, and its JSON has the
    keys of the same measurement in docs/bench.json (a consume row no longer stores a null sender.py msg/s)."""
    rounds = Rounds((1200.0, 1000.0, 1100.0), (1000.0, 1000.0, 1000.0))
    assert (rounds.ratio, rounds.spread, rounds.best_ratio) == (1.1, [1.0, 1.2], 1.2)
    publish = ThroughputRow("publish confirmed", "sender.py", "plain publish (confirmed)", rounds, "classic", "3.10.8")
    consume = ThroughputRow("consume + ack, prefetch 1", "qprocessor.py", "plain consume", rounds, "classic", "4.3.0")
    cross = CrossRow("sender.py confirmed vs plain unconfirmed", 113.0, 84.25, "classic", "3.10.8")
    cluster = ClusterRow("publish persistent, quorum queue: 3-node cluster vs single node", "sender.py", rounds,
                         "rabbit-1@localhost", 3, rabbitmq="3.10.8")
    span = SpanRow("fair dispatch makespan, 3 workers, prefetch 1", 3.12, 2.5, "3.10.8")
    time_row = TimeRow("redelivery after SIGKILL", 0.0251, "3.10.8")
    failover = FailoverRow("failover: leader's node killed", 2.5, 0, 3, 12, 1500, 3, 1, "rabbit-1", "rabbit-2",
                           rabbitmq="4.3.0")
    assert publish.line() == ("| 3.10.8 | publish confirmed | 1,100 / 1,200 msg/s | 1,000 / 1,000 msg/s (plain publish "
                              "(confirmed)) | 1.10x | 1.00x to 1.20x |")
    assert cross.line() == "| 3.10.8 | sender.py confirmed vs plain unconfirmed | 113 msg/s | 84.2 msg/s | 1.34x |  |"
    assert cluster.line().endswith("| 1,100 / 1,200 msg/s (3-node cluster) | 1,000 / 1,000 msg/s (single node) | "
                                   "1.10x | 1.00x to 1.20x |")
    assert span.line() == ("| 3.10.8 | fair dispatch makespan, 3 workers, prefetch 1 | 3.12 s | 2.50 s (ideal) | 1.25x "
                           "| |")
    assert time_row.line() == "| 3.10.8 | redelivery after SIGKILL | 25 ms | | | |"
    assert failover.line().endswith("| 2.50 s | 0 lost, 3 duplicates, 12 held until the node returned (1,500 "
                                    "messages) | | |")
    assert MemoryRow("sender.py", 28.65).line() == "| | peak RSS, sender.py | 28.6 MB | | | |"
    for row, what in ((publish, "publish confirmed"), (consume, "consume + ack, prefetch 1"), (cross, "sender.py conf"),
                      (cluster, "publish persistent, quorum queue: 3-node"), (span, "fair dispatch"),
                      (time_row, "redelivery"), (failover, "failover")):
        dropped = {"sender.py msg/s"} if row is consume else set()
        assert set(row.to_json()) == stored_keys("bench.json", what) - dropped, what
    assert consume.to_json()["qprocessor.py msg/s"] == 1100.0 and publish.to_json()["round ratios"] == [1.2, 1.0, 1.1]

    results = ScriptsResults({"cores": 2, "cpu": "AMD EPYC", "python": "3.11.7", "pika": "1.4.4", "rabbitmq": "3.10.8"},
                             "2026-12-05", 200, 3, (publish, span), (MemoryRow("sender.py", 28.65),
                                                                     MemoryRow("plain consume", 23.6)))
    assert results.header() == ("2 cores, AMD EPYC; Python 3.11.7, pika 1.4.4, RabbitMQ 3.10.8; 200 messages, median "
                                "of 3 rounds\n")
    assert results.table().splitlines()[-2:] == ["| | peak RSS, plain consume | 23.6 MB | | | |",
                                                 "| | peak RSS, sender.py | 28.6 MB | | | |"]
    assert list(results.to_json()["peak_rss_mb"]) == ["sender.py", "plain consume"]


def test_a_jobs_row_prints_its_latencies_and_stores_the_keys_of_docs_bench_jobs():
    ours = tuple(JobsRound(Drive(rate, 0.010, 0.030, 4), Drive(20.0, 0.005, 0.008, 4)) for rate in (400.0, 500.0))
    peer = tuple(JobsRound(Drive(rate, 0.020, 0.050, 90), Drive(20.0, 0.010, 0.020, 90)) for rate in (200.0, 250.0))
    row = JobsRow("Jobs API end to end vs rq Worker (forks per job)", "python-rq 2.0, rq.Worker", ours, peer, 2000, 4,
                  4, 200, 20, rabbitmq="3.10.8")
    stored = row.to_json()
    assert set(stored) == stored_keys("bench-jobs.json", "Jobs API end to end vs rq Worker")
    assert (stored["ratio"], stored["ours p99 ms"], stored["peer paced p50 ms"]) == (2.0, 30.0, 10.0)
    assert (stored["ours worker processes"], stored["peer worker processes"]) == (4, 90)
    assert row.line() == ("| 3.10.8 | python-rq 2.0, rq.Worker | 450 / 500 | 225 / 250 | 2.00x | 2.00x to 2.00x | "
                          "10.0 / 20.0 ms | 30.0 / 50.0 ms | 5.0 / 10.0 ms | 8.0 / 20.0 ms |")
    results = JobsResults({}, "2026-12-05", 2000, 2, 4, 4, 20, (row,))
    assert "| at 20 jobs/s: p50 ours / peer |" in results.table() and "paced_rate" not in results.to_json()
