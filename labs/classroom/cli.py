"""`python -m labs class ...`: the commands for a class on one broker: provision (also `python -m labs provision`,
where it was first), status, dashboard, remove."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import click

from labs.amqp.admin import AdminAPI, ManagementError
from labs.classroom.dashboard import (DEFAULT_PORT, DEFAULT_REFRESH, PASSWORD_VARIABLE, class_document,
                                      create_app, login_refusal, serve)
from labs.amqp.management import CLASS_CAP
from labs.classroom.redis_accounts import RedisRefused, RedisUnreachable, provision_redis, remove_redis
from labs.classroom.provision import (ClassLimits, assign_passwords, definitions, in_parts, limits_line,
                                     read_passwords, read_roster, users_to_keep, write_passwords)
from labs.classroom.remove import broker_accounts, plan_removal, remove
from labs.classroom.status import Thresholds, as_json as document, read_class, student_rows, table
from labs.exit_codes import (EXIT_CLAIM_FAILED, EXIT_MANAGEMENT_UNREACHABLE, EXIT_OK, EXIT_REDIS_REFUSED,
                             EXIT_REDIS_UNREACHABLE, EXIT_USAGE, KitError, one_line_errors)


@click.command()
@click.argument("roster", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--password", envvar="LABKIT_INITIAL_PASSWORD", show_envvar=True,
              help="One initial password for every student; without it each gets a random one.")
@click.option("--passwords-csv", type=click.Path(dir_okay=False, path_type=Path), default=Path("passwords.csv"),
              show_default=True, help="Where the random passwords go (mode 0600); re-runs keep those already there.")
@click.option("--definitions", "definitions_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a RabbitMQ definitions file (rabbitmqctl import_definitions FILE, or load it at boot).")
@click.option("--apply", "management_url", metavar="URL", envvar="RABBITMQ_MANAGEMENT_URL", show_envvar=True,
              help="Also apply to a running broker through its management API, e.g. http://localhost:15672.")
@click.option("--admin-user", envvar="RABBITMQ_ADMIN_USER", show_envvar=True, default="guest", show_default=True,
              help="Administrator for --apply.")
@click.option("--admin-password", envvar="RABBITMQ_ADMIN_PASSWORD", show_envvar=True, default="guest",
              help="Its password (prefer the environment variable).")
@click.option("--default-queue-type", type=click.Choice(["classic", "quorum"]),
              help="Each student's vhost gets this default queue type (quorum: the queues the scripts and the "
                   "tutorials declare without a type are replicated quorum queues). The handouts hold either way.")
@click.option("--max-queue-mb", type=click.IntRange(1), default=ClassLimits.queue_mb, show_default=True,
              help="Each student queue refuses new messages past this size (the sender is told; nothing is dropped); "
                   "no student can lift it.")
@click.option("--max-connections", type=click.IntRange(1), default=ClassLimits.connections, show_default=True,
              help="Connections a student may hold open at once (their vhost's limit and their user's).")
@click.option("--max-queues", type=click.IntRange(1), default=ClassLimits.queues, show_default=True,
              help="Queues a student's vhost may hold.")
@click.option("--no-limits", is_flag=True,
              help="No limits at all (with --apply, a re-run takes away those an earlier run set): one student's "
                   "flood or connection loop can then block the whole class.")
@click.option("--no-management", is_flag=True,
              help="Withhold the management tag, which lets students read their own vhost (only theirs) in the "
                   "management UI and HTTP API, as the handouts' observation steps do.")
@click.option("--policymaker", is_flag=True,
              help="Give the students the policymaker tag: on their own vhost they may set policies, so the scripts' "
                   "--delivery-limit and --dead-letter-queue become a policy (as RabbitMQ advises) instead of fixed "
                   "queue arguments.")
@click.option("--reset-passwords", is_flag=True,
              help="With --apply: give new random passwords also to students who already have an account but no row "
                   "in the CSV (without it they keep the password they have).")
@click.option("--redis", "redis_url", metavar="URL", envvar="LABKIT_CLASS_REDIS_URL", show_envvar=True,
              help="Also give each student an account on the class's Redis (lab 10's job store), with the same "
                   "password, for their own keys only; URL of an administrator, e.g. redis://default:PW@HOST:6379/0.")
def provision(roster: Path, password: Optional[str], passwords_csv: Path, definitions_path: Optional[Path],
              management_url: Optional[str], admin_user: str, admin_password: str,
              default_queue_type: Optional[str], max_queue_mb: int, max_connections: int, max_queues: int,
              no_limits: bool, no_management: bool, policymaker: bool, reset_passwords: bool,
              redis_url: Optional[str]) -> None:
    """Create a user, a vhost of the same name and permissions on it only, for each username in ROSTER.

    Unless told otherwise each student gets the management tag and limits no student can lift: a size cap on each
    queue that refuses new messages, and at most so many connections and queues (docs/classroom.md says why).

    Safe to re-run: existing users keep the passwords recorded in the CSV, and with --apply a student who already
    has an account but no row in the CSV keeps theirs too (--reset-passwords to give them new ones); the limits
    are set again as this run gives them.
    """
    try:
        names = read_roster(roster)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ROSTER") from None
    if not (definitions_path or management_url):
        raise click.UsageError("say where the accounts go: --definitions FILE, --apply URL, or both")
    context = click.get_current_context()
    set_limits = [f"--{name.replace('_', '-')}" for name in ("max_queue_mb", "max_connections", "max_queues")
                  if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
    if no_limits and set_limits:
        raise click.UsageError(f"--no-limits takes every limit away: leave out {', '.join(set_limits)}")
    limits = None if no_limits else ClassLimits(max_queue_mb, max_connections, max_queues)
    tags = tuple(tag for tag, wanted in (("management", not no_management), ("policymaker", policymaker)) if wanted)
    if password is not None:  # a line, not a prompt: provisioning runs unattended
        click.echo("warning: one password for every student lets each of them log in as any other, into any "
                   "classmate's vhost; leave out --password to hand out the CSV's random ones", err=True)
    known = read_passwords(passwords_csv)
    students = assign_passwords(names, password, known)
    api = AdminAPI(management_url, admin_user, admin_password) if management_url else None
    try:
        with one_line_errors():  # unreachable (21) or refusing (22), as for every command that needs the API
            on_broker = set(api.users()) if api else set()
            # RabbitMQ 4 takes `overflow` in an operator policy, so there not even a policymaker can lift the
            # refusal; a definitions file alone gets the form every version imports.
            operator_overflow = bool(api) and int(api.overview()["rabbitmq_version"].split(".")[0]) >= 4
    except OSError as exc:
        raise click.ClickException(f"could not read the users at {management_url}: {exc}") from None
    kept = users_to_keep(names, on_broker, known, password, reset_passwords)
    document = definitions(students, default_queue_type, tags, keep_users=kept, limits=limits,
                           operator_overflow=operator_overflow)
    if kept:
        click.echo(f"kept the passwords of {len(kept)} students who already have an account and no row in "
                   f"{passwords_csv}: {', '.join(sorted(kept))} (--reset-passwords gives them new ones)")
    if password is None:
        handed = [student for student in students if student.username not in kept]
        write_passwords(passwords_csv, handed)
        click.echo(f"passwords for {len(handed)} students in {passwords_csv} (readable by you only: keep it, re-runs "
                   "read it to keep every password as handed out)")
    if definitions_path:
        definitions_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {definitions_path}: {len(document['users'])} users, {len(students)} vhosts and "
                   "permissions")
    if management_url:
        try:
            with one_line_errors():
                for part in in_parts(document):  # a class of 200 in one import outlasts the client's timeout
                    api.import_definitions(part)
                for name in names:
                    if limits is None:
                        api.drop_limits(name, name, CLASS_CAP)  # a re-run with --no-limits takes them away
                    elif name in kept:  # left out of the import's users, so their user limits are set here
                        api.set_user_limits(name, limits.user_limits())
                if limits is not None and operator_overflow:
                    # A class provisioned on RabbitMQ 4 before the cap was the operator policy alone has the 3.10
                    # policy too, which ties with the instructor's own policies (ClassLimits.policy): one call for
                    # the whole broker, a deletion only where it is.
                    for policy in api.policies():
                        if policy["name"] == CLASS_CAP and policy["vhost"] in names:
                            api.delete_policy(policy["vhost"], CLASS_CAP)
        except OSError as exc:
            raise click.ClickException(f"could not apply to {management_url}: {exc}") from None
        click.echo(f"applied to {management_url}: {', '.join(names)}")
    if redis_url:
        with redis_errors():
            for line in provision_redis(redis_url, students, kept):
                click.echo(line)
    click.echo(limits_line(limits))


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """The class's Redis unreachable or refusing: one line and its exit code, as for the management API."""
    try:
        yield
    except RedisUnreachable as exc:
        raise KitError(str(exc), EXIT_REDIS_UNREACHABLE) from None
    except RedisRefused as exc:
        raise KitError(str(exc), EXIT_REDIS_REFUSED) from None


@click.group("class")
def class_group() -> None:
    """A class on one broker: provision the roster, watch every student at a glance (status in the terminal,
    dashboard as a web page to project), remove them at the end.

    The management API and its administrator come from RABBITMQ_MANAGEMENT_URL, RABBITMQ_ADMIN_USER and
    RABBITMQ_ADMIN_PASSWORD (or the options): unreachable is exit code 21, refused 22.
    """


class_group.add_command(provision)  # the same command as `python -m labs provision`, which keeps working


def management_options(command):
    """The management API and the administrator, as provisioning's --apply takes them."""
    command = click.option("--admin-password", envvar="RABBITMQ_ADMIN_PASSWORD", show_envvar=True, default="guest",
                           help="Its password (prefer the environment variable).")(command)
    command = click.option("--admin-user", envvar="RABBITMQ_ADMIN_USER", show_envvar=True, default="guest",
                           show_default=True, help="A user with the administrator tag.")(command)
    return click.option("--management-url", metavar="URL", envvar="RABBITMQ_MANAGEMENT_URL", show_envvar=True,
                        help="The broker's management API, e.g. http://localhost:15672.")(command)


def class_api(management_url: Optional[str], admin_user: str, admin_password: str):
    """The management API client, or one line and exit code 21 when no URL is given."""
    if not management_url:
        raise KitError("no management API given: set RABBITMQ_MANAGEMENT_URL or --management-url, e.g. "
                       "http://localhost:15672", EXIT_MANAGEMENT_UNREACHABLE)
    return AdminAPI(management_url, admin_user, admin_password)


def roster_names(roster: Path) -> list[str]:

    try:
        return read_roster(roster)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ROSTER") from None


@class_group.command("status", epilog="""\b
Examples:
  python -m labs class status --roster roster.txt
  python -m labs class status --roster roster.txt --watch        # redraw every 5 s until Ctrl-C
  python -m labs class status --roster roster.txt --json | jq '.students[] | select(.flags != [])'
""")
@click.option("--roster", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The class: one username (and vhost) per line, as for provision.")
@click.option("--json", "as_json", is_flag=True, help='Print {"students": [...], "alarms": [...]} instead of a table.')
@click.option("--watch", type=click.FloatRange(1), is_flag=False, flag_value=5.0, default=None, metavar="[SECONDS]",
              help="Read again every SECONDS (5 without a value) until Ctrl-C.")
@click.option("--window", type=click.IntRange(10, 600), default=60, show_default=True,
              help="Seconds the flags look back over: unacked with no ack all that time, redeliveries within it.")
@click.option("--poison-after", type=click.IntRange(1), default=5, show_default=True,
              help="Redeliveries within the window (and more than its acks) that flag a poison message.")
@management_options
def class_status(roster: Path, as_json: bool, watch: Optional[float], window: int, poison_after: int,
                 management_url: Optional[str], admin_user: str, admin_password: str) -> None:
    """One row per student on the roster: connections, consumers, queues, ready, unacked, publish/deliver/ack rates,
    redeliveries, last activity, and flags (backlog with no consumer, unacked for long, poison message, limit
    reached, no vhost); the node's memory and disk alarms on top. A few whole-broker calls, never one per student.
    """


    names = roster_names(roster)
    api = class_api(management_url, admin_user, admin_password)
    thresholds = Thresholds(window=window, poison_redeliveries=poison_after)

    def show() -> None:
        reading = read_class(api, thresholds.window)
        rows = student_rows(names, reading, thresholds)
        if as_json:
            click.echo(json.dumps(document(rows, reading)))
            return
        if watch:
            click.clear()
        click.echo(table(rows, reading))

    try:
        with one_line_errors():
            show()  # a wrong URL or password: one line and its code, before any watching
        while watch:
            time.sleep(watch)
            try:
                show()
            except ManagementError as exc:  # a broker restarting mid-class: say so and keep watching
                click.echo(f"{time.strftime('%H:%M:%S')} {exc}", err=True)
    except KeyboardInterrupt:
        if not watch:
            raise
        sys.exit(EXIT_OK)  # Ctrl-C is the way out of --watch, not a failure


@class_group.command("remove", epilog="""\b
Examples:
  python -m labs class remove roster.txt --dry-run    # what would go
  python -m labs class remove roster.txt
""")
@click.argument("roster", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--redis", "redis_url", metavar="URL", envvar="LABKIT_CLASS_REDIS_URL", show_envvar=True,
              help="Also remove the students' accounts on the class's Redis and their keys, as provision --redis "
                   "made them.")
@management_options
def class_remove(roster: Path, dry_run: bool, redis_url: Optional[str], management_url: Optional[str],
                 admin_user: str, admin_password: str) -> None:
    """Remove exactly the roster's users and vhosts (their queues, messages, policies and limits with them), nothing
    else. A name with no user or vhost on the broker is reported, not an error; an administrator is never removed.
    With --redis, also each student's Redis account and the keys under their name."""
    names = roster_names(roster)
    api = class_api(management_url, admin_user, admin_password)
    with one_line_errors():
        users, vhosts = broker_accounts(api)
        plan = plan_removal(names, users, vhosts, admin_user)
        if not dry_run:
            remove(api, plan)
    for removal in plan:
        click.echo(removal.describe(dry_run))
    if redis_url:
        with redis_errors():
            for line in remove_redis(redis_url, names, dry_run):
                click.echo(line)


@class_group.command("dashboard", epilog="""\b
Examples:
  python -m labs class dashboard --roster roster.txt                 # http://127.0.0.1:8000/ on this machine
  LABKIT_DASHBOARD_PASSWORD=... python -m labs class dashboard --roster roster.txt --bind 0.0.0.0 --port 8080
""")
@click.option("--roster", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The class: one username (and vhost) per line, as for provision.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="The port to serve on (0: any free one, said at start).")
@click.option("--bind", default="127.0.0.1", show_default=True, metavar="HOST",
              help=f"The address to serve on. Beyond loopback (e.g. 0.0.0.0) only with {PASSWORD_VARIABLE} set: "
                   "the page then asks for that password.")
@click.option("--refresh", type=click.FloatRange(1, 600), default=DEFAULT_REFRESH, show_default=True,
              metavar="SECONDS", help="How often the page reads the class again.")
@click.option("--window", type=click.IntRange(10, 600), default=60, show_default=True,
              help="Seconds the flags look back over, as for status.")
@click.option("--poison-after", type=click.IntRange(1), default=5, show_default=True,
              help="Redeliveries within the window (and more than its acks) that flag a poison message.")
@management_options
def class_dashboard(roster: Path, port: int, bind: str, refresh: float, window: int, poison_after: int,
                    management_url: Optional[str], admin_user: str, admin_password: str) -> None:
    """The class status as a web page to project: one row per student, flagged students first, the alarms in a
    banner on top, redrawn every few seconds without a reload (it reads /status.json, the same document as
    `status --json`). A management API that fails meanwhile is a time-stamped line on the page, which keeps trying.

    Served on 127.0.0.1 unless --bind says otherwise; beyond loopback only behind a login (HTTP basic auth, any user
    name, the password from LABKIT_DASHBOARD_PASSWORD), since the page shows who is in the class and what they do.
    """
    names = roster_names(roster)
    password = os.environ.get(PASSWORD_VARIABLE) or None
    refusal = login_refusal(bind, password)
    if refusal:
        raise KitError(refusal, EXIT_USAGE)
    api = class_api(management_url, admin_user, admin_password)
    thresholds = Thresholds(window=window, poison_redeliveries=poison_after)
    with one_line_errors():
        read_class(api, thresholds.window)  # a wrong URL or password: one line and its code now, not on the page
    app = create_app(lambda: class_document(api, names, thresholds), refresh, password)
    try:
        serve(app, bind, port, announce=lambda line: click.echo(line, err=True))
    except OSError as exc:
        raise KitError(f"cannot serve on {bind}:{port}: {exc.strerror or exc}", EXIT_CLAIM_FAILED) from None
    except KeyboardInterrupt:
        sys.exit(EXIT_OK)  # Ctrl-C is how the instructor stops it, not a failure
