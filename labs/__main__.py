"""python -m labs: list and run the labs, watch the demo, provision per-student vhosts."""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional

import click

from labs.brokers.broker import LOCAL_VERSION, VERSIONS, Broker, broker_from_environment, version_name
from labs.brokers.cluster import DEFAULT_BASE_PORT, Cluster, recorded_cluster, running_cluster, state_folder
from labs.classroom.cli import class_group, provision
from labs.drive.tmux import HANDOUT_PACE, Board
from labs.exit_codes import EXIT_CLAIM_FAILED, EXIT_OK, EXIT_USAGE, KitError, one_line_errors
from labs.scenarios.demo import demo as run_demo
from labs.scenarios.registry import LABS
from labs.scenarios.report_html import sections, write_report as write_page
from labs.scenarios.runner import Account, Claim, account_state, provisioned_student, report, run_lab
from labs.scenarios.setup import SettingsBlockFailed
from labs.settings import settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """RabbitMQ work-queue lab kit: labs, demo and provisioning.

    Runs against AMQP_URL when set, otherwise against a private local broker it starts and stops itself.

    \b
    Exit codes: 0 every claim passed; 1 a claim failed; 2 usage; 20 no broker (set AMQP_URL or install
    rabbitmq-server), or a cluster that cannot be started (its ports taken); 21 the management API is unreachable (RABBITMQ_MANAGEMENT_URL, the management plugin);
    22 the management API refuses the user (it needs the administrator tag).
    """


@cli.command("list")
def list_labs() -> None:
    """The labs, with their handouts."""
    for lab in LABS:
        click.echo(f"{lab.number}  {lab.title:<58} labs/handouts/{lab.handout.name}")


def tmux_options(command):
    """--tmux, --fast and --tmux-linger, for `run` and `demo`."""
    for option in reversed([
        click.option("--tmux", "use_tmux", is_flag=True,
                     help="Watch it in tmux: a window per scenario, a pane per worker and sender, the work at the "
                          "handouts' pace (1 s a character) and a last window of the claims. The session stays for "
                          "you to attach (tmux attach -t labkit) and scroll back, until you kill it or "
                          "--tmux-linger ends it."),
        click.option("--fast", is_flag=True, help="With --tmux: the runner's own quick pace instead of the handouts'."),
        click.option("--tmux-linger", "linger", type=click.FloatRange(min=1), metavar="SECONDS",
                     help="With --tmux: end the tmux session this many seconds after the claims are checked.")]):
        command = option(command)
    return command


@cli.command()
@click.argument("which", metavar="LAB...|all", nargs=-1, required=True)
@tmux_options
@click.option("--verbose", "-v", is_flag=True, help="Stream every process's output while the labs run.")
@click.option("--rabbitmq", "version", type=click.Choice(VERSIONS),
              help="Start a private broker of this RabbitMQ version: 3.10 (the system package, the default) or 4.3 "
                   "(a Docker container of the kit's image; ./kit builds it). Not with AMQP_URL.")
@click.option("--default-queue-type", type=click.Choice(["classic", "quorum"]),
              help="Give each lab's vhost this default queue type, as `labs provision --default-queue-type` does "
                   "for students: the handouts hold either way.")
@click.option("--base-port", type=click.IntRange(1024, 55000),
              help="A cluster lab's cluster: the one `./kit cluster up --base-port` started there, or else one started "
                   "there for the lab. Without it: the cluster on 5701-5703 if up, or one on free ports.")
@click.option("--as-student", is_flag=True,
              help="Run the labs as one student of a class lives them: a student provisioned as `class provision` "
                   "makes them (the class's limits and cap, the management tag), every lab in order in that one "
                   "vhost with that account, each lab after what the ones before left; the instructor's steps (a "
                   "restart, a tag, the memory alarm) run as the administrator, and each lab's report says which. "
                   "Before class, run it as a student.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write FILE.html: each lab's claims and a timeline of every run, drawn from the workers' "
                   "event logs (one self-contained page: no network, no JavaScript); FILE.svg: the timelines only.")
def run(which: tuple[str, ...], use_tmux: bool, fast: bool, linger: Optional[float], verbose: bool, version: Optional[str],
        default_queue_type: Optional[str], base_port: Optional[int], as_student: bool,
        report_path: Optional[Path]) -> None:
    """Run labs' scenarios (one, several in the order given, or all) on the broker and check each claim of their
    handouts.

    A cluster lab ("When a node dies") runs on a three-node cluster of the kit on this machine, never on AMQP_URL's
    broker: it kills a node.

    Prints a report per lab (messages sent, processed, lost, redelivered, per-worker counts and busy time, makespan)
    and a PASS or FAIL line per claim; exits 1 when any claim fails. With --report, also a page of the claims and a
    timeline of each run: python -m labs run all --report report.html
    """
    chosen = LABS if which == ("all",) else []
    for one in which if not chosen else ():  # in the order given, each once
        found = [lab for lab in LABS if one in (str(lab.number), lab.slug)]
        if not found:
            numbers = ", ".join(str(lab.number) for lab in LABS)
            raise click.BadParameter(f"{one!r}: give lab numbers ({numbers}), their names, or all", param_hint="LAB")
        chosen += [lab for lab in found if lab not in chosen]
    board = tmux_board(use_tmux, fast, linger)
    with one_line_errors(), contextlib.ExitStack() as stack:
        # Only a lab that uses it starts (or checks) the single broker: a cluster lab alone needs none.
        broker = stack.enter_context(running_broker(version)) if any(not lab.on_cluster for lab in chosen) else None
        ran: list = []
        student = None
        if as_student and broker is not None:
            try:
                student = provisioned_student(broker, default_queue_type)
            except SettingsBlockFailed as exc:  # handout 0 as the student follows it: the first claim, failed
                raise KitError(str(exc), EXIT_CLAIM_FAILED) from None
            stack.callback(student.remove)
            click.echo(f"as student {student.vhost!r}, provisioned as `class provision` makes a class's students: "
                       "every lab in order in their vhost, with their account")
        failed = run_labs(chosen, broker, board, verbose, default_queue_type, version, base_port, ran,
                          pace=None if fast or board is None else HANDOUT_PACE, student=student)
    if board is not None:
        board.finish(linger)
    if report_path:
        write_report(report_path, ran)
    sys.exit(EXIT_CLAIM_FAILED if failed else EXIT_OK)


def run_labs(chosen: list, broker: Optional[Broker], board: Optional[Board] = None, verbose: bool = False,
             default_queue_type: Optional[str] = None, version: Optional[str] = None,
             base_port: Optional[int] = None, ran: Optional[list] = None, pace: Optional[float] = None,
             student: Optional[Account] = None) -> int:
    """Run the labs one after another, print each report, and return how many claims failed; each lab and its
    context (its claims and runs, their event logs kept) are added to `ran`, for a report page. With a tmux board,
    each run gets windows of its own there, and the reports go to its last window too.

    A cluster lab runs on a cluster of the same RabbitMQ version as the broker (or `version`), in a vhost of its own:
    with a `student`, every other lab runs in the student's vhost, with their account."""
    failed = skipped = 0
    provisioned = account_state(broker, student) if student else None
    for lab in chosen:
        if lab.on_cluster:
            cluster_version = version or (version_name(broker.version()) if broker else LOCAL_VERSION)
            with running_cluster(cluster_version, base_port, announce=lambda line: click.echo(line, err=True)) as found:
                context = run_lab(lab, Broker.of_cluster_node(found.nodes[0]), echo=verbose, tmux=board,
                                  default_queue_type=default_queue_type, cluster=found, pace=pace)
        else:
            context = run_lab(lab, broker, echo=verbose, tmux=board, default_queue_type=default_queue_type,
                              pace=pace, student=student)
        text = report(lab, context)
        if student and lab.on_cluster:
            text = text.replace("\n", "\n  not as the student: on the kit's own three nodes, in a vhost of its own\n", 1)
        said(board, text + "\n")
        if ran is not None:
            ran.append((lab, context))
        failed += sum(claim.ok is False for claim in context.claims)
        skipped += sum(claim.ok is None for claim in context.claims)
    if student:
        now = account_state(broker, student)
        kept = Claim(f"student {student.vhost!r} ends as provisioned: the labs gave back the tags, the vhost's limits "
                     "and the instructor's policies (the class's cap)", now == provisioned, "" if now == provisioned else
                     f"provisioned {provisioned}, now {now}")
        said(board, kept.line() + "\n")
        failed += not kept.ok
    said(board, f"{'FAIL' if failed else 'PASS'}: {len(chosen)} labs, {failed} failed claims, {skipped} skipped")
    return failed


def tmux_board(use_tmux: bool, fast: bool, linger: Optional[float]) -> Optional[Board]:
    """The tmux windows --tmux asks for; --fast and --tmux-linger only with it."""
    if not use_tmux:
        if fast or linger is not None:
            raise click.UsageError(f"{'--fast' if fast else '--tmux-linger'} goes with --tmux")
        return None
    if not shutil.which("tmux"):
        raise click.UsageError("--tmux needs tmux: apt-get install tmux")
    return Board()


def said(board: Optional[Board], text: str) -> None:
    """Print a report, and keep it for the tmux board's last window."""
    click.echo(text)
    if board is not None:
        board.said.append(text)


def write_report(path: Path, ran: list) -> None:
    """The report page of what ran: the demo's run and each lab's claims and runs (labs/scenarios/report_html.py)."""
    write_page(path, sections(ran))
    click.echo(f"report: {path}", err=True)


@contextlib.contextmanager
def running_broker(version: Optional[str] = None) -> Iterator[Broker]:
    """AMQP_URL's broker or the embedded one, once its management API has answered us as an administrator would."""
    if version and settings().amqp_url:
        raise click.UsageError(f"--rabbitmq {version} starts a broker of its own: unset AMQP_URL, or leave out "
                               "--rabbitmq to use AMQP_URL's broker")
    with broker_from_environment(version) as broker:
        broker.admin.overview()  # unreachable or refused: one line now, not a failed claim later
        yield broker


@cli.command()
@click.option("--live-only", is_flag=True, help="Only the live three-worker scenario, not the labs after it.")
@click.option("--rabbitmq", "version", type=click.Choice(VERSIONS),
              help="The RabbitMQ version of the private broker: 3.10 (default) or 4.3 (Docker).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write FILE.html: each lab's claims and a timeline of every run, drawn from the workers' "
                   "event logs (one self-contained page: no network, no JavaScript); FILE.svg: the timelines only.")
@tmux_options
def demo(live_only: bool, version: Optional[str], report_path: Optional[Path], use_tmux: bool, fast: bool,
         linger: Optional[float]) -> None:
    """Watch three workers share a queue while one crashes on every third message, then prove every lab's claims."""
    ran: list = []
    board = tmux_board(use_tmux, fast, linger)
    pace = None if fast or board is None else HANDOUT_PACE
    with one_line_errors(), running_broker(version) as broker:
        ok = run_demo(broker, ran, board, pace)
        if not live_only:
            click.echo("\nNow every claim of every handout, on the same broker:\n")
            ok = run_labs(LABS, broker, board, ran=ran, pace=pace) == 0 and ok
    if board is not None:
        board.finish(linger)
    if report_path:
        write_report(report_path, ran)
    sys.exit(EXIT_OK if ok else EXIT_CLAIM_FAILED)


@cli.command()
@click.argument("action", type=click.Choice(["up", "down", "status", "kill", "start"]))
@click.argument("node", type=click.IntRange(1, 3), required=False)
@click.option("--rabbitmq", "version", type=click.Choice(VERSIONS),
              help="3.10: three local rabbitmq-server nodes; 4.3: three containers of the kit's image. Without it: "
                   "the cluster that is up (for up, down, status, kill, start alike), else 3.10.")
@click.option("--base-port", type=click.IntRange(1024, 55000),
              help="Nodes listen on 127.0.0.1 at BASE+1..BASE+3 (AMQP) and BASE+10001.. (management). Without it: "
                   "the port the cluster was started at, else 5700.")
def cluster(action: str, node: Optional[int], version: Optional[str], base_port: Optional[int]) -> None:
    """A three-node RabbitMQ cluster on this machine: up (formed before any queue exists), down, status; kill NODE
    (SIGKILL, as a machine that dies) and start NODE (it rejoins), NODE being 1, 2 or 3.

    Give the scripts every node, e.g. AMQP_URL="amqp://guest:guest@127.0.0.1:5701/ amqp://...:5702/ ...:5703/":
    they spread over the nodes and fail over when one dies.
    """
    with one_line_errors():  # a cluster that cannot be started (its ports taken, a node that does not boot): exit 20
        found = chosen_cluster(version, base_port)
        version = found.version
        if action == "up":
            found.up()
            click.echo(found.status())
            click.echo("AMQP_URL=" + json.dumps(" ".join(found.urls())))
        elif action in ("kill", "start"):
            if node is None:
                raise click.UsageError(f"which node? e.g. cluster {action} 2 (see cluster status)")
            found.kill(node) if action == "kill" else found.start(node)
            click.echo(found.status())
        elif action == "down":
            found.down()
            click.echo(f"the RabbitMQ {version} cluster is down and its data removed")
        else:
            click.echo(found.status())


def chosen_cluster(version: Optional[str], base_port: Optional[int]):
    """The cluster a `cluster` command acts on. Without --rabbitmq: the recorded cluster that is up (at --base-port
    if given), never the other version's by default while that one runs; with both versions up, a refusal asking to
    choose; with none up, 3.10. Without --base-port: the port the cluster was started at (its record), else 5700."""
    if version is None:
        up = [found for found in map(recorded_cluster, VERSIONS) if found is not None
              and base_port in (None, found.base_port) and found.is_up()]
        if len(up) > 1:
            which = " and ".join(f"RabbitMQ {found.version} on ports {found.nodes[0].port}-{found.nodes[-1].port}"
                                 for found in up)
            raise KitError(f"two clusters are up, {which}: choose one with --rabbitmq {' or '.join(VERSIONS)}",
                           EXIT_USAGE)
        if up:
            return up[0]
        version = LOCAL_VERSION
    if base_port is None:
        recorded = recorded_cluster(version)
        base_port = recorded.base_port if recorded else DEFAULT_BASE_PORT
    return Cluster(version, state_folder(version), base_port)


cli.add_command(provision)  # `python -m labs provision`, where provisioning first was; also `class provision`
cli.add_command(class_group)

if __name__ == "__main__":
    cli()
