"""The calls of RabbitMQ's management HTTP API that queue policies need, and settling a queue's limits by policy.

Part of the scripts' connection code: embedded into sender.py and qprocessor.py from this file's embed line on by
`python -m labs.amqp.embed` (see labs/amqp/connection.py).
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Optional

import pika

from labs.amqp.errors import EXIT_POLICY_REFUSED, EXIT_QUEUE_MISMATCH, BrokerError

if TYPE_CHECKING:
    from labs.amqp.connection import QueueSettings

# --- embedded from here on: the body of the scripts' connection code ---

POLICY_PREFIX = "labkit-"  # the policy settle_limits() sets for queue Q is named labkit-Q
CLASS_CAP = "class-cap"  # the instructor's operator policy (and policy) capping each queue: labs.classroom.provision
MANAGEMENT_TIMEOUT = 5  # seconds: the management API answers at once or not at all


class ManagementError(Exception):
    """The management API refused a call or did not answer; the message says which, in one line."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused  # the API answered, and said no (not: nothing answered)


def api_headers(username: str, password: str) -> dict:
    """The headers of every management API request: HTTP basic authentication as this user, and JSON."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def api_request(url: str, headers: dict, method: str = "GET", body: Optional[dict] = None,
                timeout: float = MANAGEMENT_TIMEOUT):
    """One request to the management HTTP API: its decoded JSON answer, or None when it answers nothing.

    The one HTTP call of the scripts and of the kit (labs.brokers.management): urllib's own errors go up, since what
    a refusal or silence means differs between a student's script and the instructor's kit.
    """
    import urllib.request  # imported here: most runs never call the API, and urllib.request costs start-up time

    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=timeout) as answer:
        payload = answer.read()
    return json.loads(payload) if payload else None


class ManagementAPI:
    """The calls of RabbitMQ's management HTTP API that queue policies and sender.py --list-queues need, made as the
    connecting user."""

    def __init__(self, node: pika.ConnectionParameters, url: Optional[str] = None) -> None:
        self.vhost, self.username = node.virtual_host, node.credentials.username
        self.url = (url or f"http://{node.host}:15672").rstrip("/")
        self.headers = api_headers(self.username, node.credentials.password)

    def queue(self, name: str) -> Optional[dict]:
        return self.call("GET", "queues", name)

    def queues(self) -> list:
        """Every queue of the user's vhost, and only of it (a user with more vhosts sees the others elsewhere)."""
        return self.call("GET", "queues") or []

    def policies(self, kind: str = "policies") -> list:
        return self.call("GET", kind) or []

    def set_policy(self, name: str, policy: dict) -> None:
        self.call("PUT", "policies", name, policy)

    def call(self, method: str, kind: str, name: Optional[str] = None, body: Optional[dict] = None):
        """One request on the user's vhost: the decoded answer, or None for 404."""
        import urllib.error  # imported here: most runs never call the API, and urllib costs start-up time
        import urllib.parse

        path = "/".join(urllib.parse.quote(part, safe="") for part in (kind, self.vhost, name) if part is not None)
        try:
            return api_request(f"{self.url}/api/{path}", self.headers, method, body)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "GET":
                return None
            try:  # RabbitMQ says why: "Not management user", "Not administrator user", "Login failed", ...
                reason = json.loads(exc.read()).get("reason", "")
            except (ValueError, AttributeError, OSError):
                reason = ""
            reason = " ".join(str(reason).split()) or exc.reason
            if exc.code in (401, 403, 404):  # 404: some versions hide a vhost the user has no permissions on
                raise ManagementError(f"the management API refused user {self.username!r} on vhost {self.vhost!r} "
                                      f"({reason})", refused=True) from None
            raise ManagementError(f"the management API answered {exc.code} to {method} {kind} ({reason})",
                                  refused=True) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ManagementError(f"no management API answers at {self.url} ({getattr(exc, 'reason', exc)}); "
                                  "give --management-url", refused=False) from None


def policy_applies(policy: dict, queue: str) -> bool:
    """Whether a policy (as the management API lists it) matches a queue of this name, as RabbitMQ matches it."""
    try:
        matches = re.search(policy.get("pattern", ""), queue) is not None
    except re.error:  # Erlang's regular expressions are PCRE: the rare pattern Python cannot read is taken as no match
        return False
    return matches and policy.get("apply-to", "all") in ("all", "queues", "quorum_queues")


def ruling_policy(policies: list, queue: str, ignore: str = "") -> Optional[dict]:
    """The policy RabbitMQ applies to the queue: of those matching it, the one of highest priority."""
    matching = [each for each in policies if each.get("name") != ignore and policy_applies(each, queue)]
    return max(matching, key=lambda each: each.get("priority", 0), default=None)


def length_limit(queue: dict) -> Optional[tuple[str, bool]]:
    """The length limit of a queue as the management API shows it ('64 MiB', '10 messages'), and whether it is the
    class's cap (the instructor's operator policy) rather than the queue's own; None without one.

    Arguments and policies may both set a limit: the lower one applies, as RabbitMQ applies it."""
    arguments, policy = queue.get("arguments") or {}, queue.get("effective_policy_definition") or {}
    found = []
    for key, unit in (("max-length-bytes", "bytes"), ("max-length", "messages")):
        own, ruled = arguments.get("x-" + key), policy.get(key)
        values = [value for value in (own, ruled) if isinstance(value, int)]
        if values:
            limit = min(values)
            by_class = queue.get("operator_policy") == CLASS_CAP and limit == ruled and (own is None or ruled < own)
            shown = f"{limit // 1048576} MiB" if unit == "bytes" and limit % 1048576 == 0 else f"{limit:,} {unit}"
            found.append((shown, by_class))
    if not found:
        return None
    return " and ".join(shown for shown, _ in found), any(by_class for _, by_class in found)


def settle_limits(queue: "QueueSettings", node: pika.ConnectionParameters, management_url: Optional[str],
                  note: Callable[[str], None]) -> "QueueSettings":
    """Decide how the delivery limit and dead-letter target reach the queue, and set the policy if that is the way.

    RabbitMQ advises a policy: it can change without deleting the queue, where arguments are fixed for its life. A
    policy takes the policymaker tag, which the classroom's student accounts lack: then (--limits-by auto) they go
    into the queue's arguments and `note` says why. A queue that holds them as arguments already keeps them there,
    since the broker refuses a redeclaration without them. Only one policy applies to a queue: ours copies the
    definition of the one it outranks, so an instructor's other settings stay.
    """
    ours = queue.limit_arguments()
    if not ours or queue.limits_by == "argument":
        return replace(queue, limits_by="argument")
    api, name = ManagementAPI(node, management_url), POLICY_PREFIX + queue.name
    try:
        existing = api.queue(queue.name)
        if existing is not None and any(arg in ours for arg in existing.get("arguments") or {}):
            if queue.limits_by == "policy":
                raise BrokerError(f"queue {queue.name!r} holds its limits as queue arguments, which no policy can "
                                  "replace: give --limits-by argument, or delete the queue first", EXIT_QUEUE_MISMATCH)
            note(f"queue {queue.name!r} already holds its limits as arguments, so its {queue.limits_phrase()} "
                 "go there too")
            return replace(queue, limits_by="argument")
        outranked = ruling_policy(api.policies(), queue.name, ignore=name)
        definition = {**(outranked or {}).get("definition", {}), **{arg[2:]: value for arg, value in ours.items()}}
        api.set_policy(name, {"pattern": f"^{re.escape(queue.name)}$", "apply-to": "queues",
                              "priority": (outranked or {}).get("priority", 0) + 1, "definition": definition})
    except ManagementError as exc:
        why = f"{exc}: a policy needs the policymaker tag" if exc.refused else str(exc)
        if queue.limits_by == "policy":
            raise BrokerError(f"cannot set policy {name!r}: {why}", EXIT_POLICY_REFUSED) from None
        note(f"{why}; queue {queue.name!r} gets its {queue.limits_phrase()} as arguments instead")
        return replace(queue, limits_by="argument")
    note(f"policy {name!r} on vhost {api.vhost!r} gives queue {queue.name!r} {queue.limits_phrase()}")
    return replace(queue, limits_by="policy")
