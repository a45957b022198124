"""python -m bench: sender.py and qprocessor.py against plain pika, on one broker (or each one asked for), in one run.

Every program runs as a whole process (start-up included), several rounds each, ours and its peer taking turns in
each round; the table shows the median and best rate of each, the ratio of the medians and the spread of the
round-by-round ratios, all measured in the same run. --chart draws the ratios as an SVG. The publishing and
consuming targets are measured on a classic queue and again on a quorum queue.

--cluster adds, for each broker, a three-node cluster of its version (labs.brokers.cluster, ports 5901-5903): sender.py
and qprocessor.py on a quorum queue there against the same on the single broker, and failover: SIGKILL of the node
holding the queue's leader while workers consume, to the next acknowledged message, with messages lost and
duplicated.

--jobs N measures instead the Jobs API (lab 10) end to end against python-rq doing the same jobs: N jobs a round
from POST to "complete", jobs/s and p50/p99 latency (bench/jobs_api.py).

This module is the command line; the measuring is in modules by role: bench/harness.py (a vhost, timed processes, two
programs in turns), bench/scripts.py (the scripts' rows on one broker), bench/cluster.py (--cluster),
bench/jobs_api.py (--jobs), bench/rows.py (the rows: how each prints and is stored), bench/chart.py (the SVG), and
bench/peers/ (the plain pika and python-rq programs ours are measured against).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import click

from bench import scripts
from bench.chart import svg
from bench.rows import JobsResults, ScriptsResults
from labs.brokers.broker import VERSIONS
from labs.exit_codes import one_line_errors
from labs.settings import settings


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--messages", type=click.IntRange(10), default=5000, show_default=True, help="Messages per round.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Rounds per measurement (median).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results.json"), show_default=True, help="Where to write the results.")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the ratios to the peers as an SVG chart here (the README's is docs/bench.svg).")
@click.option("--smoke", is_flag=True, help="A quick run that only checks the benchmark works (200 messages, 1 round).")
@click.option("--rabbitmq", "versions", type=click.Choice(VERSIONS), multiple=True,
              help="Start a private broker of this RabbitMQ version (3.10 default, 4.3 in Docker); not with AMQP_URL. "
                   "Repeat it to measure on each version in one run.")
@click.option("--cluster", is_flag=True,
              help="Also start a three-node cluster of each broker's version (ports 5901-5903, taken down after): "
                   "quorum-queue throughput there against the single broker, and failover when the leader's node "
                   "is killed.")
@click.option("--jobs", type=click.IntRange(10), metavar="N",
              help="Instead of the scripts' rows: the Jobs API (labs/jobs, 4 workers, zero work) against python-rq "
                   "doing the same jobs, N jobs a round from POST to complete (jobs/s, p50/p99 latency).")
def main(messages: int, rounds: int, json_path: Path, chart_path: Optional[Path], smoke: bool,
         versions: tuple[str, ...], cluster: bool, jobs: Optional[int]) -> None:
    """Measure sender.py and qprocessor.py against plain pika on AMQP_URL or an embedded broker (with --jobs, the
    Jobs API against python-rq)."""
    if smoke:
        messages, rounds = 200, 1
    with one_line_errors():
        if versions and settings().amqp_url:
            raise click.UsageError(f"--rabbitmq {versions[0]} starts a broker of its own: unset AMQP_URL, or leave it "
                                   "out")
        results: Union[ScriptsResults, JobsResults]
        if jobs:
            if cluster:
                raise click.UsageError("--jobs measures the Jobs API on a single broker: leave out --cluster")
            # Imported here: rq and redis take a second to import on a busy machine, and only --jobs needs them
            from bench import jobs_api

            results = jobs_api.run(versions, jobs, rounds)
        else:
            results = scripts.run(versions, messages, rounds, cluster)
    report(results, json_path, chart_path)


def report(results: Union[ScriptsResults, JobsResults], json_path: Path, chart_path: Optional[Path]) -> None:
    """Store the results at `json_path`, print them as a table, and draw them at `chart_path` if given."""
    stored = results.to_json()
    json_path.write_text(json.dumps(stored, indent=2) + "\n")
    click.echo(results.header())
    click.echo(results.table())
    click.echo(f"\nwritten to {json_path}")
    if chart_path:
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path.write_text(svg(stored), encoding="utf-8")
        click.echo(f"chart drawn in {chart_path}")


if __name__ == "__main__":
    main()
