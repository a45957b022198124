"""The exit codes of python -m labs (and python -m bench), and the one-line errors that end with them.

The kit's own failures have numbers from 20 up, apart from every code sender.py and qprocessor.py use (2 to 17, 130,
137), so that a number in a log means one thing whichever tool printed it. 0, 1 and 2 mean what they mean everywhere:
done, failed (a claim), and a bad command line (click's own code).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import click

from labs.brokers.errors import BrokerUnavailable
from labs.brokers.cluster import ClusterError
from labs.amqp.admin import ManagementRefused, ManagementUnreachable

EXIT_OK = 0  # every claim passed (run, demo), or the command did what it was asked
EXIT_CLAIM_FAILED = 1  # at least one claim failed (or the demo lost a message); other one-line errors
EXIT_USAGE = 2  # a bad command line: unknown lab, bad option (click's own code)
EXIT_NO_BROKER = 20  # no AMQP_URL and no rabbitmq-server installed to start a local node with; a cluster (a cluster
#                     lab's, `cluster up`'s) could not be started or reached: e.g. another broker holds its ports
EXIT_MANAGEMENT_UNREACHABLE = 21  # nothing answers at the management API (RABBITMQ_MANAGEMENT_URL, the plugin)
EXIT_MANAGEMENT_REFUSED = 22  # the management API refuses the user or a request (needs the administrator tag)
EXIT_REDIS_UNREACHABLE = 23  # nothing answers at the class's Redis (class provision/remove --redis)
EXIT_REDIS_REFUSED = 24  # the class's Redis refuses the URL's account or its ACL commands


class KitError(click.ClickException):
    """One line on stderr ("Error: ...") and the exit code it was given."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn what keeps the kit from reaching its broker into one line and its documented exit code."""
    try:
        yield
    except (BrokerUnavailable, ClusterError) as exc:
        raise KitError(str(exc), EXIT_NO_BROKER) from None
    except ManagementUnreachable as exc:
        raise KitError(str(exc), EXIT_MANAGEMENT_UNREACHABLE) from None
    except ManagementRefused as exc:
        raise KitError(str(exc), EXIT_MANAGEMENT_REFUSED) from None
