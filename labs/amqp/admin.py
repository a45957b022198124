"""The kit's calls of RabbitMQ's management HTTP API, as the administrator: vhosts, users, permissions, queues,
definitions. The HTTP request itself is the scripts' own (labs.amqp.management.api_request), written once."""
from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
from typing import Optional

from labs.amqp.management import api_headers, api_request


class ManagementError(OSError):
    """The management API cannot do what the kit needs; the message is one line saying what to do."""


class ManagementUnreachable(ManagementError):
    """Nothing answers at the management URL (the plugin is off, or the URL is wrong)."""


class ManagementRefused(ManagementError):
    """The management API refuses the user or the request (the user needs the administrator tag)."""


class AdminAPI:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._headers = api_headers(username, password)

    def request(self, method: str, path: str, body: Optional[dict] = None) -> object:
        """One call through the scripts' own management API request (labs.amqp.management), as the administrator:
        a refusal or silence becomes the kit's one-line errors (exit codes 22 and 21)."""
        try:
            return api_request(self.base_url + path, self._headers, method, body, timeout=30)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise ManagementRefused(
                    f"the management API at {self.base_url} refuses user {self.username!r} ({exc.code} for "
                    f"{method} {path}): give a user with the administrator tag") from None
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementUnreachable(
                f"no RabbitMQ management API at {self.base_url} ({reason}): enable the management plugin "
                "(rabbitmq-plugins enable rabbitmq_management) or set RABBITMQ_MANAGEMENT_URL") from None

    @staticmethod
    def quote(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def _delete_if_there(self, path: str) -> None:
        try:
            self.request("DELETE", path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def overview(self) -> dict:
        return self.request("GET", "/api/overview")  # type: ignore[return-value]

    def add_vhost(self, vhost: str, default_queue_type: Optional[str] = None) -> None:
        """Create a vhost; with a default queue type, queues declared there without x-queue-type get that type."""
        # RabbitMQ before 3.12 reads the field as "defaultqueuetype", later ones as "default_queue_type": send both.
        settings = {"defaultqueuetype": default_queue_type, "default_queue_type": default_queue_type} \
            if default_queue_type else {}
        self.request("PUT", f"/api/vhosts/{self.quote(vhost)}", settings)

    def default_queue_type(self, vhost: str) -> Optional[str]:
        """The vhost's default queue type, or None when it has none."""
        found = self.request("GET", f"/api/vhosts/{self.quote(vhost)}")
        value = found.get("default_queue_type") if isinstance(found, dict) else None
        return value if value not in (None, "undefined") else None

    def delete_vhost(self, vhost: str) -> None:
        self._delete_if_there(f"/api/vhosts/{self.quote(vhost)}")

    def add_user(self, username: str, password: str, tags: str = "") -> None:
        self.request("PUT", f"/api/users/{self.quote(username)}", {"password": password, "tags": tags})

    def delete_user(self, username: str) -> None:
        self._delete_if_there(f"/api/users/{self.quote(username)}")

    def grant(self, username: str, vhost: str, configure: str = ".*", write: str = ".*", read: str = ".*") -> None:
        """Permissions on one vhost (full by default), and nothing elsewhere."""
        self.request("PUT", f"/api/permissions/{self.quote(vhost)}/{self.quote(username)}",
                     {"configure": configure, "write": write, "read": read})

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict, apply_to: str = "queues") -> None:
        """A policy on the queues of one vhost whose names match `pattern` (e.g. {"consumer-timeout": 2000})."""
        self.request("PUT", f"/api/policies/{self.quote(vhost)}/{self.quote(name)}",
                     {"pattern": pattern, "definition": definition, "apply-to": apply_to})

    def delete_policy(self, vhost: str, name: str) -> None:
        self.request("DELETE", f"/api/policies/{self.quote(vhost)}/{self.quote(name)}")

    def policies(self, vhost: Optional[str] = None) -> list[dict]:
        """The vhost's policies (every vhost's without one), each with its vhost, name, pattern, apply-to, priority
        and definition."""
        where = f"/{self.quote(vhost)}" if vhost is not None else ""
        return self.request("GET", f"/api/policies{where}")  # type: ignore[return-value]

    def queue(self, vhost: str, name: str) -> dict:
        return self.request("GET", f"/api/queues/{self.quote(vhost)}/{self.quote(name)}")  # type: ignore[return-value]

    def delete_queue(self, vhost: str, name: str) -> None:
        self._delete_if_there(f"/api/queues/{self.quote(vhost)}/{self.quote(name)}")

    def set_user_limits(self, username: str, limits: dict) -> None:
        """User limits (max-connections, max-channels), each replacing the one it names."""
        for name, value in limits.items():
            self.request("PUT", f"/api/user-limits/{self.quote(username)}/{name}", {"value": value})

    def drop_limits(self, username: str, vhost: str, policy: str) -> None:
        """Take away a student's limits: the user's and the vhost's, and the operator policy and the policy named."""
        for path in (f"/api/user-limits/{self.quote(username)}/max-connections",
                     f"/api/user-limits/{self.quote(username)}/max-channels",
                     f"/api/vhost-limits/{self.quote(vhost)}/max-connections",
                     f"/api/vhost-limits/{self.quote(vhost)}/max-queues",
                     f"/api/operator-policies/{self.quote(vhost)}/{self.quote(policy)}",
                     f"/api/policies/{self.quote(vhost)}/{self.quote(policy)}"):
            self._delete_if_there(path)

    def users(self) -> list[str]:
        """The names of the broker's users."""
        return [user["name"] for user in self.request("GET", "/api/users?columns=name")]  # type: ignore[union-attr]

    def import_definitions(self, definitions: dict) -> None:
        self.request("POST", "/api/definitions", definitions)
