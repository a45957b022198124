"""A whole class at a glance: one row per student from a handful of management API calls for the whole broker.

RabbitMQ advises reading a multi-tenant broker in a few whole-broker calls (/api/queues, /api/connections...), never
one per tenant: 200 students answer in one reading as fast as three. The calls are in read_class(); the rest are pure
functions from their answers to rows, flags and alarms, so a test can hand them any answer.
"""
from __future__ import annotations

import concurrent.futures
import enum
import urllib.error
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Optional

from labs.amqp.admin import AdminAPI, ManagementUnreachable

WINDOW_SECONDS = 60  # the span the "for long" and "again and again" flags look back over
SAMPLE_SECONDS = 5  # the management plugin keeps its message rate samples in 5 s buckets for the last 10 minutes
POISON_REDELIVERIES = 5  # redeliveries within the window (and more than acks in it) that make a poison message

# The columns each call asks for: the answers stay small however many students there are.
QUEUE_COLUMNS = ("vhost,name,consumers,messages_ready,messages_unacknowledged,idle_since,"
                 "message_stats.redeliver,message_stats.ack,message_stats.deliver_get,"
                 "message_stats.publish_details.rate,message_stats.deliver_get_details.rate,"
                 "message_stats.ack_details.rate,message_stats.redeliver_details.rate")
WINDOW_COLUMNS = ("vhost,name,message_stats.deliver_get_details.samples,message_stats.ack_details.samples,"
                  "message_stats.redeliver_details.samples")


class Flag(str, enum.Enum):
    """What the instructor should look at, named once: the JSON's "flags" hold these values."""

    NO_VHOST = "no-vhost"  # on the roster, but the broker has no vhost of that name
    BACKLOG = "backlog"  # messages ready in a queue that no consumer reads
    UNACKED_LONG = "unacked-long"  # messages held unacknowledged, no ack nor delivery for at least the window
    POISON = "poison"  # a message redelivered again and again: many redeliveries, fewer acks
    LIMIT = "limit"  # the vhost's max-connections or max-queues reached


@dataclass(frozen=True)
class Thresholds:
    """When a flag is raised, parsed once at the command line."""

    window: int = WINDOW_SECONDS
    poison_redeliveries: int = POISON_REDELIVERIES


@dataclass(frozen=True)
class Reading:
    """The management API's answers, as read at `taken_at`."""

    overview: dict
    nodes: list
    vhosts: list
    limits: list
    connections: list
    queues: list
    window: list
    taken_at: datetime


@dataclass(frozen=True)
class StudentRow:
    name: str
    connections: int = 0
    consumers: int = 0
    queues: int = 0
    ready: int = 0
    unacked: int = 0
    publish_rate: float = 0.0
    deliver_rate: float = 0.0
    ack_rate: float = 0.0
    redelivered: int = 0
    redeliver_rate: float = 0.0
    last_activity: Optional[str] = None  # ISO 8601 UTC: the latest idle_since, or the reading's time if active
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())  # one sentence per flag, for the table


def class_paths(window: int = WINDOW_SECONDS) -> dict[str, str]:
    """The calls, each trimmed to the columns the rows need.

    The second /api/queues call asks for the counters' samples one window apart: the older one, taken between one and
    two windows ago (the broker aligns samples to multiples of their spacing), against the counters of the first call
    (now) tells what changed for at least a window. Two samples a counter keep the answer small; samples 5 s apart
    would make it three times the size of the first call for 200 students."""
    window = -(-window // SAMPLE_SECONDS) * SAMPLE_SECONDS  # a whole number of the broker's 5 s buckets
    return {
        "overview": "/api/overview?columns=rabbitmq_version,cluster_name",
        "nodes": "/api/nodes?columns=name,running,mem_alarm,disk_free_alarm",
        "vhosts": "/api/vhosts?columns=name",
        "limits": "/api/vhost-limits",
        "connections": "/api/connections?columns=vhost",
        "queues": f"/api/queues?columns={QUEUE_COLUMNS}",
        "window": f"/api/queues?columns={WINDOW_COLUMNS}&msg_rates_age={window}&msg_rates_incr={window}",
    }


def read_class(api: AdminAPI, window: int = WINDOW_SECONDS) -> Reading:
    """The few calls, all at once: whole-broker answers for the whole class."""
    paths = class_paths(window)
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        futures = {key: pool.submit(get, api, path) for key, path in paths.items()}
        answers = {key: future.result() for key, future in futures.items()}
    return Reading(**answers, taken_at=datetime.now(timezone.utc))


def get(api: AdminAPI, path: str) -> object:
    """GET through the kit's client; an answer that is not the management API's is said as unreachable."""
    try:
        return api.request("GET", path)
    except urllib.error.HTTPError as exc:
        raise ManagementUnreachable(f"{api.base_url} answered {exc.code} for GET {path.split('?')[0]}: is it "
                                    "RabbitMQ's management API? (RABBITMQ_MANAGEMENT_URL, --management-url)") from None
    except ValueError as exc:  # not a URL at all, or not JSON
        raise ManagementUnreachable(f"no RabbitMQ management API at {api.base_url!r} ({exc}): set "
                                    "RABBITMQ_MANAGEMENT_URL or --management-url, e.g. http://host:15672") from None


def stats(queue: dict) -> dict:
    """A queue's message_stats: the API sends [] rather than {} when none of the asked columns has a value yet."""
    found = queue.get("message_stats")
    return found if isinstance(found, dict) else {}


def rate(queue: dict, stat: str) -> float:
    return float(stats(queue).get(f"{stat}_details", {}).get("rate", 0.0))


def window_start(windowed: dict, stat: str) -> int:
    """A counter at the window's start: the oldest sample (they come newest first); 0 without any, as before a queue
    existed."""
    samples = stats(windowed).get(f"{stat}_details", {}).get("samples") or []
    return samples[-1]["sample"] if samples else 0


def change_over_window(queue: dict, windowed: dict, stat: str) -> int:
    """How much a counter grew from the window's start to now."""
    return stats(queue).get(stat, 0) - window_start(windowed, stat)


def parse_time(value: str) -> datetime:
    """idle_since: "2026-12-07T01:15:13.576+00:00" (3.10 and later) or "2026-12-07 1:15:13" (older, UTC)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def queue_flags(queue: dict, windowed: Optional[dict], thresholds: Thresholds) -> list[tuple[Flag, str]]:
    """The flags one queue raises, each with its sentence."""
    name = queue["name"]
    ready, unacked = queue.get("messages_ready", 0), queue.get("messages_unacknowledged", 0)
    found = []
    if ready > 0 and queue.get("consumers", 0) == 0:
        found.append((Flag.BACKLOG, f"{ready} ready in {name!r} and no consumer"))
    if windowed is not None:
        acks, delivered = change_over_window(queue, windowed, "ack"), change_over_window(queue, windowed, "deliver_get")
        # Held since before the window: delivered before it began, nothing delivered or acked since. A delivery the
        # samples do not show yet (a young queue's start at 0) is not one held for long.
        if unacked > 0 and acks == 0 and delivered == 0 and window_start(windowed, "deliver_get") > 0:
            found.append((Flag.UNACKED_LONG, f"{unacked} unacked in {name!r}, no ack for {thresholds.window}s"))
        redelivered = change_over_window(queue, windowed, "redeliver")
        if redelivered >= thresholds.poison_redeliveries and redelivered > acks:
            found.append((Flag.POISON, f"{redelivered} redeliveries in {name!r} in {thresholds.window}s, "
                                       f"{acks} acks: a poison message?"))
    return found


def limit_flags(limits: dict, connections: int, queues: int) -> list[tuple[Flag, str]]:
    """max-connections and max-queues reached (a negative limit is none)."""
    found = []
    for key, count, what in (("max-connections", connections, "connections"), ("max-queues", queues, "queues")):
        limit = limits.get(key)
        if isinstance(limit, int) and 0 <= limit <= count:
            found.append((Flag.LIMIT, f"{count}/{limit} {what}: the vhost's {key} is reached"))
    return found


def student_rows(names: list[str], reading: Reading, thresholds: Thresholds = Thresholds()) -> list[StudentRow]:
    """One row per name on the roster, in roster order, from the whole class's answers."""
    wanted = set(names)
    connections = {name: 0 for name in names}
    for connection in reading.connections:
        if connection.get("vhost") in wanted:
            connections[connection["vhost"]] += 1
    queues: dict[str, list[dict]] = {name: [] for name in names}
    for queue in reading.queues:
        if queue.get("vhost") in wanted:
            queues[queue["vhost"]].append(queue)
    windows = {(q.get("vhost"), q.get("name")): q for q in reading.window if q.get("vhost") in wanted}
    limits = {entry["vhost"]: entry.get("value") or {} for entry in reading.limits}
    vhosts = {vhost["name"] for vhost in reading.vhosts}
    return [student_row(name, connections[name], queues[name], windows, limits.get(name, {}), name in vhosts,
                        reading.taken_at, thresholds) for name in names]


def student_row(name: str, connections: int, queues: list[dict], windows: dict, limits: dict, has_vhost: bool,
                taken_at: datetime, thresholds: Thresholds) -> StudentRow:
    flagged: list[tuple[Flag, str]] = []
    if not has_vhost:
        flagged.append((Flag.NO_VHOST, f"no vhost {name!r} on the broker: provision the roster"))
    for queue in queues:
        flagged += queue_flags(queue, windows.get((name, queue["name"])), thresholds)
    flagged += limit_flags(limits, connections, len(queues))
    return StudentRow(
        name=name, connections=connections, consumers=sum(q.get("consumers", 0) for q in queues), queues=len(queues),
        ready=sum(q.get("messages_ready", 0) for q in queues),
        unacked=sum(q.get("messages_unacknowledged", 0) for q in queues),
        publish_rate=round(float(sum(rate(q, "publish") for q in queues)), 2),
        deliver_rate=round(float(sum(rate(q, "deliver_get") for q in queues)), 2),
        ack_rate=round(float(sum(rate(q, "ack") for q in queues)), 2),
        redelivered=sum(stats(q).get("redeliver", 0) for q in queues),
        redeliver_rate=round(float(sum(rate(q, "redeliver") for q in queues)), 2),
        last_activity=last_activity(queues, taken_at),
        flags=tuple(dict.fromkeys(flag.value for flag, _ in flagged)), notes=tuple(note for _, note in flagged))


def last_activity(queues: list[dict], taken_at: datetime) -> Optional[str]:
    """When the student's queues last did anything: now if one is busy (no idle_since, or messages moving), else the
    latest idle_since; None without queues."""
    if not queues:
        return None
    busy = any("idle_since" not in q or any(rate(q, s) > 0 for s in ("publish", "deliver_get", "ack")) for q in queues)
    latest = taken_at if busy else max(parse_time(q["idle_since"]) for q in queues)
    return latest.isoformat(timespec="seconds")


def alarms(nodes: list[dict]) -> list[dict]:
    """The node alarms that stop the whole class: memory or disk (publishers blocked), or a node down."""
    found = []
    for node in nodes:
        if node.get("running") is False:
            found.append({"node": node["name"], "alarm": "down"})
            continue
        if node.get("mem_alarm"):
            found.append({"node": node["name"], "alarm": "memory"})
        if node.get("disk_free_alarm"):
            found.append({"node": node["name"], "alarm": "disk"})
    return found


def as_json(rows: list[StudentRow], reading: Reading) -> dict:
    """The --json document: {"students": [...], "alarms": [...]}."""
    return {"students": [{**asdict(row), "flags": list(row.flags), "notes": list(row.notes)} for row in rows],
            "alarms": alarms(reading.nodes)}


ALARM_TEXT = {"memory": "memory alarm: every publisher on the broker is blocked",
              "disk": "disk alarm: every publisher on the broker is blocked",
              "down": "the node is down"}
HEADINGS = ("student", "conn", "cons", "queues", "ready", "unacked", "pub/s", "deliv/s", "ack/s", "redeliv",
            "last activity", "flags")


def table(rows: list[StudentRow], reading: Reading) -> str:
    """The class as a text table, the alarms on top and each flag's sentence below."""
    taken = reading.taken_at
    lines = [f"RabbitMQ {reading.overview.get('rabbitmq_version', '?')} (cluster "
             f"{reading.overview.get('cluster_name', '?')}): {len(rows)} students, read at "
             f"{taken.astimezone().strftime('%H:%M:%S')}"]
    found = alarms(reading.nodes)
    lines += [f"ALARM on {a['node']}: {ALARM_TEXT[a['alarm']]}" for a in found] or ["no alarms"]
    cells = [HEADINGS] + [(row.name, row.connections, row.consumers, row.queues, row.ready, row.unacked,
                           f"{row.publish_rate:g}", f"{row.deliver_rate:g}", f"{row.ack_rate:g}", row.redelivered,
                           ago(row.last_activity, taken), ",".join(row.flags) or "-") for row in rows]
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(HEADINGS))]
    lines.append("")
    for line in cells:
        lines.append("  ".join(str(cell).ljust(width) if i in (0, 10, 11) else str(cell).rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths))).rstrip())
    notes = [f"{row.name}: {note}" for row in rows for note in row.notes]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def ago(when: Optional[str], now: datetime) -> str:
    if when is None:
        return "-"
    seconds = max(0, int((now - datetime.fromisoformat(when)).total_seconds()))
    if seconds < SAMPLE_SECONDS:
        return "now"
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago" if seconds < 7200 else \
        f"{seconds // 3600}h ago"
