"""python -m labs: the lab kit's command line."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from labs.broker import BrokerUnavailable, broker_from_environment


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """RabbitMQ work-queue lab kit: demo, labs and provisioning.

    Runs against AMQP_URL when set, otherwise against a private local broker it starts and stops itself.
    """


@cli.command()
def demo() -> None:
    """Three workers share a queue; one crashes on every third message; nothing is lost."""
    from labs.demo import demo as run_demo

    try:
        with broker_from_environment() as broker:
            url = os.environ.get("AMQP_URL") or broker.url()
            ok = run_demo(broker, url)
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


@cli.command()
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
def provision(roster: Path, password: str | None, passwords_csv: Path, definitions_path: Path | None,
              management_url: str | None, admin_user: str, admin_password: str) -> None:
    """Create a user, a vhost of the same name and permissions on it only, for each username in ROSTER.

    Safe to re-run: existing users keep the passwords recorded in the CSV, and applying again changes nothing else.
    """
    from labs.broker import Admin
    from labs.provision import assign_passwords, definitions, read_passwords, read_roster, write_passwords

    try:
        names = read_roster(roster)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ROSTER") from None
    if not (definitions_path or management_url):
        raise click.UsageError("say where the accounts go: --definitions FILE, --apply URL, or both")
    students = assign_passwords(names, password, read_passwords(passwords_csv))
    document = definitions(students)
    if password is None:
        write_passwords(passwords_csv, students)
        click.echo(f"passwords for {len(students)} students in {passwords_csv} (hand them out, then delete it)")
    if definitions_path:
        definitions_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {definitions_path}: {len(students)} users, vhosts and permissions")
    if management_url:
        try:
            Admin(management_url, admin_user, admin_password).import_definitions(document)
        except OSError as exc:
            raise click.ClickException(f"could not apply to {management_url}: {exc}") from None
        click.echo(f"applied to {management_url}: {', '.join(names)}")


if __name__ == "__main__":
    cli()
