"""Lab 7, Purging and deleting queues."""
from __future__ import annotations

from labs.scenarios.helpers import QUICK
from labs.scenarios.runner import Context


def purge_and_delete(lab: Context) -> None:
    """--purge, then --delete-queue refused while a consumer is attached, then forced."""
    run = lab.run("scratch")
    run.send("--count", "5")
    purged = run.send("--purge")
    lab.claim("--purge removes the 5 ready messages", "purged 5 messages" in purged.stdout and lab.ready("scratch") == 0)
    holder = run.worker("holder", *QUICK)
    run.wait_for_consumers(1)
    refused = run.send("--delete-queue", check=False)
    lab.claim("--delete-queue refuses a queue with a consumer (exit code 8)",
              refused.returncode == 8 and lab.ready("scratch") == 0)
    forced = run.send("--delete-queue", "--force")
    holder.kill()
    lab.claim("--delete-queue --force deletes it", "deleted queue" in forced.stdout and lab.ready("scratch") is None)
