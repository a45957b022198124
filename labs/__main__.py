"""python -m labs: the lab kit's command line."""
from __future__ import annotations

import os
import sys

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


if __name__ == "__main__":
    cli()
