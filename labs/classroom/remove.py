"""The end of a course: remove exactly the roster's users and vhosts, and nothing else on the broker.

Deleting a vhost deletes everything in it (queues, messages, exchanges, policies, vhost limits, permissions), and
deleting a user its user limits and permissions: what provisioning and the kit's scripts made goes with them.
"""
from __future__ import annotations

from dataclasses import dataclass

from labs.amqp.admin import AdminAPI
from labs.classroom.status import get


@dataclass(frozen=True)
class Removal:
    """What goes for one name on the roster: its vhost, its user, either, both or neither."""

    name: str
    vhost: bool
    user: bool
    kept_because: str = ""  # a user left in place on purpose (the administrator doing the removal)

    def describe(self, dry_run: bool) -> str:
        parts = [part for part, there in (("vhost", self.vhost), ("user", self.user)) if there]
        verb = "would remove" if dry_run else "removed"
        said = f"{self.name}: {verb} {' and '.join(parts)}" if parts else \
            f"{self.name}: no user and no vhost of that name on the broker, nothing to remove"
        return f"{said}; kept user {self.name!r}: {self.kept_because}" if self.kept_because else said


def plan_removal(names: list[str], users: list[dict], vhosts: list[str], admin: str) -> list[Removal]:
    """For each roster name, what of it the broker has. The administrator doing the removal, or any user with the
    administrator tag, is never removed: a roster line must not lock the instructor out."""
    tags = {user["name"]: user.get("tags") for user in users}
    plan = []
    for name in names:
        found_tags = tags.get(name)
        tag_list = found_tags if isinstance(found_tags, list) else str(found_tags or "").split(",")
        kept = ""
        if name in tags and (name == admin or "administrator" in tag_list):
            kept = "it is an administrator (remove it by hand if you mean it)"
        plan.append(Removal(name, vhost=name in vhosts, user=name in tags and not kept, kept_because=kept))
    return plan


def broker_accounts(api: AdminAPI) -> tuple[list[dict], list[str]]:
    """The broker's users (name and tags) and vhost names: two calls for the whole roster."""
    users = get(api, "/api/users?columns=name,tags")
    vhosts = [vhost["name"] for vhost in get(api, "/api/vhosts?columns=name")]  # type: ignore[union-attr]
    return users, vhosts  # type: ignore[return-value]


def remove(api: AdminAPI, plan: list[Removal]) -> None:
    """Delete what the plan names: the vhost first, so no student connection outlives its account for long."""
    for removal in plan:
        if removal.vhost:
            api.delete_vhost(removal.name)
        if removal.user:
            api.delete_user(removal.name)
