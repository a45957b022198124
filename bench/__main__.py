"""python -m bench: sender.py and qprocessor.py against plain pika, on one broker (or each one asked for), in one run.

Every program runs as a whole process (start-up included), several rounds each, ours and its peer taking turns in
each round; the table shows the median and best rate of each, the ratio of the medians and the spread of the
round-by-round ratios, all measured in the same run. --chart draws the ratios as an SVG.
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import click
import pika

from labs.broker import VERSIONS, Broker, broker_from_environment
from labs.event_log import EventTally, read_events
from labs.exit_codes import one_line_errors
from labs.processes import wait_for_consumers
from labs.settings import child_environment, settings

ROOT = Path(__file__).resolve().parent.parent
SENDER, QPROCESSOR = ROOT / "sender.py", ROOT / "qprocessor.py"
PLAIN_PUBLISH, PLAIN_CONSUME = ROOT / "bench" / "plain_publish.py", ROOT / "bench" / "plain_consume.py"
PIPELINED_PUBLISH = ROOT / "bench" / "pipelined_publish.py"
PIPELINED_WINDOW = 1000  # unconfirmed messages the pipelined peer keeps in flight
SETTLE_SECONDS = 1.0  # idle time for the broker before each timed run (not for tiny smoke runs)


class Bench:
    """Runs processes against one vhost of the broker and measures them."""

    def __init__(self, broker: Broker, messages: int, rounds: int, workdir: Path) -> None:
        self.broker, self.messages, self.rounds, self.workdir = broker, messages, rounds, workdir
        self.version = broker.admin.overview().get("rabbitmq_version")
        self.vhost = f"bench-{secrets.token_hex(3)}"
        broker.admin.add_vhost(self.vhost)
        broker.admin.grant(broker.username, self.vhost)
        self.url = broker.url(self.vhost)
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.peak_rss_kb: dict[str, int] = {}

    def close(self) -> None:
        self.connection.close()
        self.broker.admin.delete_vhost(self.vhost)

    def env(self) -> dict:
        return child_environment(AMQP_URL=self.url)

    def timed(self, label: str, command: list[str]) -> float:
        """Wall time of one whole process; also records its peak RSS under `label`."""
        started = time.perf_counter()
        process = subprocess.Popen(command, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL)
        # ru_maxrss would count the parent's pages copied at fork; the child's own high-water mark is VmHWM.
        peak_kb = 0
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
                peak_kb = max(peak_kb, int(hwm.split()[1]))
            except (OSError, StopIteration):
                pass
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        if process.returncode:
            raise RuntimeError(f"{label} failed with exit code {process.returncode}: {' '.join(command)}")
        self.peak_rss_kb[label] = max(self.peak_rss_kb.get(label, 0), peak_kb)
        return elapsed

    def reset(self, queue: str) -> None:
        """An empty durable classic queue: the scripts' default (RabbitMQ 4 refuses or deprecates transient ones)."""
        channel = self.connection.channel()
        channel.queue_delete(queue)
        channel.queue_declare(queue, durable=True)
        channel.close()

    def fill(self, queue: str, count: int) -> None:
        self.reset(queue)
        self.timed("fill", [sys.executable, str(SENDER), "--queue", queue, "--count", str(count), "--quiet"])

    def compare(self, what: str, ours: tuple[str, list[str]], peer: tuple[str, list[str]],
                prepare: Callable[[], None]) -> dict:
        """Both programs once per round, in turns (the first alternates), each on a freshly prepared queue.

        The headline ratio is ours / peer of the medians; the round-by-round ratios give its spread, which on a
        shared machine says more than any single figure. After each prepare() the broker gets a moment to settle:
        deleting a queue of persistent messages leaves it work (message store clean-up) that otherwise slows
        whichever program runs next."""
        rates: dict[str, list[float]] = {"ours": [], "peer": []}
        settle = SETTLE_SECONDS if self.messages >= 1000 else 0
        for round_number in range(self.rounds):
            turns = [("ours", ours), ("peer", peer)]
            for side, (label, command) in turns if round_number % 2 == 0 else reversed(turns):
                prepare()
                time.sleep(settle)
                rates[side].append(self.messages / self.timed(label, command))
        ratios = [a / b for a, b in zip(rates["ours"], rates["peer"])]
        ours_median, peer_median = statistics.median(rates["ours"]), statistics.median(rates["peer"])
        return {"what": what, f"{ours[0]} msg/s": ours_median, "plain pika msg/s": peer_median,
                "ratio": ours_median / peer_median, "peer": peer[0], "rabbitmq": self.version,
                "ours best msg/s": max(rates["ours"]), "peer best msg/s": max(rates["peer"]),
                "best ratio": max(rates["ours"]) / max(rates["peer"]),
                "round ratios": ratios, "spread": [min(ratios), max(ratios)],
                "ours rounds msg/s": rates["ours"], "peer rounds msg/s": rates["peer"]}

    # --- the measurements ---

    def publishing(self) -> list[dict]:
        n = str(self.messages)
        rows = []
        for mode, options in (("unconfirmed", ["--no-confirm"]), ("confirmed", []),
                              ("persistent", ["--persistent"])):
            queue = f"publish-{mode}"
            rows.append(self.compare(
                f"publish {mode}",
                ("sender.py", [sys.executable, str(SENDER), "--queue", queue, "--count", n, "--quiet", *options]),
                (f"plain publish ({mode})", [sys.executable, str(PLAIN_PUBLISH), self.url, queue, n, mode]),
                lambda: self.reset(queue)))  # noqa: B023 (called within this iteration)
        confirmed = rows[1]["sender.py msg/s"]
        rows.append({"what": "sender.py confirmed vs plain unconfirmed", "sender.py msg/s": confirmed,
                     "plain pika msg/s": rows[0]["plain pika msg/s"], "ratio": confirmed / rows[0]["plain pika msg/s"],
                     "rabbitmq": self.version})
        # The strongest peer: what a careful pika programmer writes for confirmed, persistent publishing.
        queue = "publish-pipelined"
        rows.append(self.compare(
            f"publish persistent vs pipelined pika (window {PIPELINED_WINDOW})",
            ("sender.py", [sys.executable, str(SENDER), "--queue", queue, "--count", n, "--quiet", "--persistent"]),
            ("pipelined publish", [sys.executable, str(PIPELINED_PUBLISH), self.url, queue, n,
                                   str(PIPELINED_WINDOW)]),
            lambda: self.reset(queue)))
        return rows

    def consuming(self, prefetch: int) -> dict:
        """qprocessor.py printing its two lines a message (to /dev/null) against the plain consume + ack loop."""
        n, queue = str(self.messages), f"consume-{prefetch}"
        row = self.compare(
            f"consume + ack, prefetch {prefetch}",
            ("qprocessor.py", [sys.executable, str(QPROCESSOR), "--queue", queue, "--acknowledge", "--prefetch",
                               str(prefetch), "--seconds-per-char", "0", "--max-messages", n]),
            ("plain consume", [sys.executable, str(PLAIN_CONSUME), self.url, queue, n, str(prefetch)]),
            lambda: self.fill(queue, self.messages))
        return {"what": row.pop("what"), "sender.py msg/s": None, **row}

    def fair_dispatch(self, seconds_per_char: float = 0.01) -> list[dict]:
        # Uneven work: every third message is eight times longer, so round-robin hands all long ones to one worker.
        bodies = [("L" * 80 if n % 3 == 1 else "s" * 10) + f"{n:02d}" for n in range(1, 25)]
        ideal = sum(len(b) for b in bodies) * seconds_per_char / 3
        rows = []
        for label, options in (("no prefetch", []), ("prefetch 1", ["--prefetch", "1"])):
            spans = []
            for round_number in range(self.rounds):
                queue, events = f"fair-{label[:2]}-{round_number}", self.workdir / f"fair-{label[:2]}-{round_number}.jsonl"
                self.reset(queue)
                workers = [subprocess.Popen(
                    [sys.executable, str(QPROCESSOR), "--queue", queue, "--acknowledge", "--seconds-per-char",
                     str(seconds_per_char), "--idle-exit", "1", "--name", f"w{w}", "--events", str(events), "--quiet",
                     *options], env=self.env(), stdout=subprocess.DEVNULL) for w in range(3)]
                wait_for_consumers(self.url, queue, 3)
                subprocess.run([sys.executable, str(SENDER), "--queue", queue, "--quiet", *bodies], env=self.env(),
                               check=True, stdout=subprocess.DEVNULL)
                for worker in workers:
                    worker.wait(120)
                spans.append(EventTally(bodies, read_events(events)).makespan)
            span = statistics.median(spans)
            rows.append({"what": f"fair dispatch makespan, 3 workers, {label}", "seconds": span, "ideal": ideal,
                         "ratio": span / ideal})
        return rows

    def redelivery_latency(self) -> dict:
        """From SIGKILL of the worker holding a message to another worker receiving it, redelivered."""
        latencies = []
        for round_number in range(self.rounds):
            queue = f"redeliver-{round_number}"
            self.reset(queue)
            events = {name: self.workdir / f"{queue}-{name}.jsonl" for name in ("holder", "spare")}
            common = ["--queue", queue, "--acknowledge", "--prefetch", "1", "--quiet"]
            subprocess.run([sys.executable, str(SENDER), "--queue", queue, "--quiet", "held"], env=self.env(),
                           check=True, stdout=subprocess.DEVNULL)
            holder = subprocess.Popen([sys.executable, str(QPROCESSOR), *common, "--seconds-per-char", "100",
                                       "--name", "holder", "--events", str(events["holder"])],
                                      env=self.env(), stdout=subprocess.DEVNULL)
            self.wait_for(lambda: events["holder"].exists() and events["holder"].read_text().strip())
            spare = subprocess.Popen([sys.executable, str(QPROCESSOR), *common, "--seconds-per-char", "0",
                                      "--max-messages", "1", "--name", "spare", "--events", str(events["spare"])],
                                     env=self.env(), stdout=subprocess.DEVNULL)
            wait_for_consumers(self.url, queue, 2)
            killed_at = time.time()
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            spare.wait(30)
            received = json.loads(events["spare"].read_text().splitlines()[0])
            latencies.append(received["time"] - killed_at)
        return {"what": "redelivery after SIGKILL", "seconds": statistics.median(latencies)}

    def startup(self) -> list[dict]:
        """Spawn to first message handled: the worker's first 'received' event; the sender's whole one-message run."""
        worker_times, sender_times = [], []
        for round_number in range(self.rounds):
            queue = f"startup-{round_number}"
            self.reset(queue)
            sender_times.append(self.timed("sender.py", [sys.executable, str(SENDER), "--queue", queue, "first"]))
            events = self.workdir / f"{queue}.jsonl"
            started = time.time()
            self.timed("qprocessor.py", [sys.executable, str(QPROCESSOR), "--queue", queue, "--seconds-per-char", "0",
                                         "--max-messages", "1", "--events", str(events)])
            worker_times.append(json.loads(events.read_text().splitlines()[0])["time"] - started)
        return [{"what": "start-up to first message, qprocessor.py", "seconds": statistics.median(worker_times)},
                {"what": "start-up to one confirmed message and exit, sender.py", "seconds": statistics.median(sender_times)}]

    @staticmethod
    def wait_for(condition: Callable[[], object], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark setup timed out")
            time.sleep(0.02)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "pika": pika.__version__,
            "system": f"{platform.system()} {platform.release()}"}


def fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return ""
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.3f}{unit}" if value < 10 else f"{value:.1f}{unit}"


def table(results: dict) -> str:
    lines = ["| RabbitMQ | measurement | ours (median / best) | peer (median / best) | ratio | round ratios |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in results["rows"]:
        ours = row.get("sender.py msg/s") or row.get("qprocessor.py msg/s")
        where = row.get("rabbitmq", "")
        if ours is not None:
            best = f" / {fmt(row['ours best msg/s'])}" if "ours best msg/s" in row else ""
            peer_best = f" / {fmt(row['peer best msg/s'])}" if "peer best msg/s" in row else ""
            spread = f"{row['spread'][0]:.2f}x to {row['spread'][1]:.2f}x" if "spread" in row else ""
            peer = f" ({row['peer']})" if "peer" in row else ""
            lines.append(f"| {where} | {row['what']} | {fmt(ours)}{best} msg/s | {fmt(row['plain pika msg/s'])}"
                         f"{peer_best} msg/s{peer} | {row['ratio']:.2f}x | {spread} |")
        elif "ideal" in row:
            lines.append(f"| {where} | {row['what']} | {row['seconds']:.2f} s | {row['ideal']:.2f} s (ideal) | "
                         f"{row['ratio']:.2f}x | |")
        else:
            lines.append(f"| {where} | {row['what']} | {row['seconds'] * 1000:.0f} ms | | | |")
    for label, mb in sorted(results["peak_rss_mb"].items()):
        lines.append(f"| | peak RSS, {label} | {mb:.1f} MB | | | |")
    return "\n".join(lines)


def measure(version: Optional[str], messages: int, rounds: int) -> tuple[list[dict], dict[str, int], str]:
    """Every row on one broker: the one AMQP_URL names, or a private one of `version`."""
    import tempfile

    with broker_from_environment(version) as broker, tempfile.TemporaryDirectory(prefix="labkit-bench-") as workdir:
        broker.admin.overview()  # unreachable or refused: one line, before any measurement
        bench = Bench(broker, messages, rounds, Path(workdir))
        try:
            rows = bench.publishing()
            rows += [bench.consuming(1), bench.consuming(100)]
            rows += bench.fair_dispatch()
            rows.append(bench.redelivery_latency())
            rows += bench.startup()
        finally:
            bench.close()
        actual = broker.admin.overview().get("rabbitmq_version")
    for row in rows:
        row["rabbitmq"] = actual
    return rows, bench.peak_rss_kb, actual


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
def main(messages: int, rounds: int, json_path: Path, chart_path: Optional[Path], smoke: bool,
         versions: tuple[str, ...]) -> None:
    """Measure sender.py and qprocessor.py against plain pika on AMQP_URL or an embedded broker."""
    if smoke:
        messages, rounds = 200, 1
    with one_line_errors():
        if versions and settings().amqp_url:
            raise click.UsageError(f"--rabbitmq {versions[0]} starts a broker of its own: unset AMQP_URL, or leave it "
                                   "out")
        rows, peak_kb, measured = [], {}, []
        for version in dict.fromkeys(versions) or (None,):
            version_rows, version_peak_kb, actual = measure(version, messages, rounds)
            rows += version_rows
            measured.append(actual)
            for label, kb in version_peak_kb.items():
                peak_kb[label] = max(peak_kb.get(label, 0), kb)
    keep = ("sender.py", "qprocessor.py", "plain publish (persistent)", "pipelined publish", "plain consume")
    results = {"machine": {**machine(), "rabbitmq": ", ".join(measured)}, "date": time.strftime("%Y-%m-%d"),
               "messages": messages, "rounds": rounds, "rows": rows,
               "peak_rss_mb": {k: v / 1024 for k, v in peak_kb.items() if k in keep}}
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    click.echo(f"{m['cores']} cores, {m['cpu']}; Python {m['python']}, pika {m['pika']}, RabbitMQ {m['rabbitmq']}; "
               f"{messages} messages, median of {rounds} rounds\n")
    click.echo(table(results))
    click.echo(f"\nwritten to {json_path}")
    if chart_path:
        from bench.chart import svg

        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path.write_text(svg(results), encoding="utf-8")
        click.echo(f"chart drawn in {chart_path}")


if __name__ == "__main__":
    main()
