"""The report of a run as one self-contained HTML page: each lab's claims, and for each of its runs a timeline drawn
from the workers' event logs (inline SVG and CSS; no script, nothing fetched).

One bar per delivery: from a worker's `received` to how that delivery ended (done, lost, crashed, requeued,
abandoned, dead-lettered), in a row per worker, in the order of the log. The depth chart is derived from the same logs
and the sender's runs, not sampled from the broker; the page says so under each chart.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from labs.drive.event_log import EventTally
from labs.drive.processes import Run
from labs.scenarios.runner import Claim

# How a delivery ended, from the event that ends it; "crashed" is a lost or failed delivery whose worker died with it.
ENDINGS = {"done": "done", "lost": "lost", "requeued": "requeued", "abandoned": "abandoned",
           "dead-lettered": "dead-lettered"}
SETTLED = ("done", "lost", "dead-lettered")  # a message that leaves the queue for good (the depth chart)
# The legend, in its order: what each mark means. Colours are the CSS classes below.
LEGEND = [("done", "done: received to done"), ("lost", "lost by the worker"), ("crashed", "worker crashed holding it"),
          ("requeued", "rejected back to the queue"), ("abandoned", "abandoned (stop, channel closed)"),
          ("dead-lettered", "dead-lettered"), ("unfinished", "no ending in the log"),
          ("redelivered", "a redelivery (triangle)"), ("disconnected", "connection lost (line)")]
PAGE_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:top}
.PASS{color:#17702c;font-weight:bold}.FAIL{color:#b00020;font-weight:bold}.SKIP{color:#8a6d00;font-weight:bold}
.detail{color:#555}.note{color:#555;font-size:.9em;margin:.2em 0 1em}svg{display:block;margin:.3em 0}
"""
SVG_CSS = """
text{font:11px system-ui,sans-serif;fill:#333}svg{background:#fff}
.done{fill:#3b7dd8}.lost{fill:#d0021b}.crashed{fill:#111}.requeued{fill:#f5a623}.abandoned{fill:#aaa}
.dead-lettered{fill:#8e44ad}rect[data-worker]{stroke:#fff;stroke-width:.6}text.label{fill:#fff;font-size:9px}
rect.unfinished{fill:#fff;stroke:#555;stroke-dasharray:2 2}.redelivered{fill:#1e8f4e}
.disconnected{stroke:#d0021b;stroke-width:1.5}.connected{stroke:#1e8f4e;stroke-width:1}
.axis{stroke:#999}.grid{stroke:#eee}.moment{stroke:#b00020;stroke-dasharray:4 3}
.span{stroke:#333;stroke-width:2}.ideal{stroke:#1e8f4e;stroke-width:2}
.outstanding{fill:none;stroke:#3b7dd8;stroke-width:2.5}
.ready{fill:none;stroke:#e67e00;stroke-width:1.5;stroke-dasharray:5 3}
"""
WIDTH, LEFT, RIGHT, ROW, BAR = 960, 110, 20, 18, 12


@dataclass(frozen=True)
class Delivery:
    """One message in one worker's hands: from its `received` event to the event that ended it."""

    worker: str
    body: str
    start: float
    end: float
    outcome: str  # done, lost, crashed, requeued, abandoned, dead-lettered, unfinished
    redelivered: bool


@dataclass
class Section:
    """What the page shows of one lab (or the demo): its claims and its runs."""

    title: str
    claims: list[Claim]
    runs: list[Run]
    anchor: str


def deliveries(events: Sequence[dict]) -> list[Delivery]:
    """The deliveries of a run, in the order their `received` events were logged.

    A `lost` without a `received` (auto-ack messages still in a worker's buffer when it exits) is a delivery of no
    length; a `received` with no ending (the worker was killed) is "unfinished", drawn to the log's last event."""
    last = max((e["time"] for e in events), default=0.0)
    found: list[dict] = []
    open_: dict[tuple[str, str], list[int]] = {}  # (worker, body) -> indexes into `found` of deliveries still held
    for e in events:
        key = (e.get("worker", ""), e.get("body", ""))
        kind = e["event"]
        if kind == "received":
            open_.setdefault(key, []).append(len(found))
            found.append({"worker": key[0], "body": key[1], "start": e["time"], "end": None, "outcome": "unfinished",
                          "redelivered": bool(e.get("redelivered"))})
        elif kind in ENDINGS or (kind == "failed" and e.get("mode") == "crash"):
            crashed = e.get("mode") == "crash"
            held = open_.get(key)
            if not held:  # lost before it was ever received: auto-ack messages dropped on exit
                found.append({"worker": key[0], "body": key[1], "start": e["time"], "end": e["time"],
                              "outcome": "crashed" if crashed else ENDINGS[kind],
                              "redelivered": bool(e.get("redelivered"))})
                continue
            delivery = found[held.pop(0)]
            delivery.update(end=e["time"], outcome="crashed" if crashed else ENDINGS.get(kind, "crashed"))
    return [Delivery(d["worker"], d["body"], d["start"], last if d["end"] is None else d["end"], d["outcome"],
                     d["redelivered"]) for d in found]


def depth(run: Run, events: Sequence[dict]) -> list[tuple[float, int, int]]:
    """(time, outstanding, ready) at each change: messages sent and not yet settled (done, lost for good or
    dead-lettered), and of those the ones in no worker's hands. Derived from the event log and the sender's runs: a
    message counts from when its sender.py returned, or from its first delivery if that came sooner; one the
    scenario put in the queue otherwise (not through send) counts from the start."""
    start = min([e["time"] for e in events] + [t for t in run.sent_at]) if events or run.sent_at else 0.0
    first_seen: dict[str, float] = {}
    for e in events:
        if e["event"] == "received":
            first_seen.setdefault(e["body"], e["time"])
    changes: list[tuple[float, int, int]] = []  # (time, outstanding change, in-hand change)
    for index, body in enumerate(run.sent):
        sent = run.sent_at[index] if index < len(run.sent_at) else start
        changes.append((min(sent, first_seen.get(body, sent)), 1, 0))
    for delivery in deliveries(events):
        changes.append((delivery.start, 0, 1))
        if delivery.outcome != "unfinished":  # one with no ending stays in its worker's hands to the log's end
            changes.append((delivery.end, -(delivery.outcome in SETTLED), -1))
    points: list[tuple[float, int, int]] = []
    outstanding = held = 0
    for moment, change, hands in sorted(changes, key=lambda c: (c[0], -c[1])):
        outstanding, held = outstanding + change, held + hands
        if points and points[-1][0] == moment:  # one point per moment: the counts once all its changes are in
            points.pop()
        points.append((moment, outstanding, max(outstanding - held, 0)))
    return points


class Scale:
    """Seconds since the run's start to x pixels."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.seconds = start, max(end - start, 1e-3)

    def x(self, moment: float) -> float:
        """Pixels from the left; a moment before the start is drawn at the left edge."""
        return LEFT + max(moment - self.start, 0.0) / self.seconds * (WIDTH - LEFT - RIGHT)

    def ticks(self) -> list[float]:
        steps = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1e9)
        step = next(s for s in steps if self.seconds / s <= 12)
        return [n * step for n in range(int(self.seconds / step) + 1)]


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def axis(scale: Scale, top: float, bottom: float) -> list[str]:
    parts = []
    for tick in scale.ticks():
        x = scale.x(scale.start + tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>'
                     f'<text x="{x:.1f}" y="{bottom + 12}" text-anchor="middle">{tick:g} s</text>')
    return parts


def marker(outcome: str, x: float, y: float) -> str:
    """The shape that marks how a delivery ended, at its end, so a lost one shows even when its bar is a sliver."""
    if outcome == "lost":
        return f'<circle class="lost" data-mark="lost" cx="{x:.1f}" cy="{y + BAR / 2}" r="3.5"/>'
    if outcome == "crashed":
        return (f'<path data-mark="crashed" d="M{x - 4:.1f},{y + 2} l8,8 m0,-8 l-8,8" '
                f'style="stroke:#111;stroke-width:2"/>')
    if outcome == "requeued":
        return (f'<polygon class="requeued" data-mark="requeued" '
                f'points="{x:.1f},{y} {x - 6:.1f},{y + BAR / 2} {x:.1f},{y + BAR}"/>')
    if outcome == "dead-lettered":
        return (f'<rect class="dead-lettered" data-mark="dead-lettered" x="{x - 3:.1f}" y="{y + 3}" width="6" '
                f'height="6"/>')
    if outcome == "abandoned":
        return (f'<polygon class="abandoned" data-mark="abandoned" '
                f'points="{x:.1f},{y} {x + 4:.1f},{y + BAR / 2} {x:.1f},{y + BAR} {x - 4:.1f},{y + BAR / 2}"/>')
    return ""


def extent(run: Run) -> tuple[float, float]:
    """The span a run's drawings show: from its first delivery to its last ending or the lab's last moment. What
    came before (workers connecting, sender.py's run) is drawn at the left edge: a poison message's 20 deliveries in
    a few milliseconds would otherwise be a sliver after a second of waiting for the worker to start."""
    events = run.log.read()
    found = deliveries(events)
    moments = [d.start for d in found] + [d.end for d in found] + [t for t, _ in run.moments]
    moments = moments or [e["time"] for e in events] or [0.0]
    return min(moments), max(moments)


def timeline(run: Run, seconds: Optional[float] = None) -> str:
    """The run's SVG image; `seconds`: the width of its time axis, to share one scale among a lab's runs."""
    parts, height = drawing(run, seconds, 6)
    return svg(height, parts, f"timeline of queue {run.queue}")


def figure(titled: Sequence[tuple[str, Run]]) -> str:
    """Several runs' timelines as one image that stands alone, on one time scale, under the legend: the docs' picture
    (docs/lab5-timeline.svg)."""
    seconds = max(end - start for start, end in (extent(run) for _, run in titled))
    found = [d for _, run in titled for d in deliveries(run.log.read())]
    shown = {d.outcome for d in found} | {"redelivered" for d in found if d.redelivered} | {
        "disconnected" for _, run in titled for e in run.log.read() if e["event"] == "disconnected"}
    parts = legend(8, shown)
    y = 8 + 16 * ((len(shown) + 3) // 4)
    for title, run in titled:
        parts.append(f'<text x="8" y="{y + 14}" style="font-weight:bold;font-size:12px">{esc(title)}</text>')
        drawn, y = drawing(run, seconds, y + 22)
        parts += drawn
    return svg(y, parts, "timelines: " + ", ".join(title for title, _ in titled))


def drawing(run: Run, seconds: Optional[float], top: float) -> tuple[list[str], float]:
    """A run's timeline from `top` down, and where it ends: a row per worker, a bar per delivery, marks for the
    endings and redeliveries, connection events, the lab's moments, and the makespan (with the ideal where the lab
    has one)."""
    events = run.log.read()
    workers = sorted({e["worker"] for e in events if e.get("worker")})
    start, end = extent(run)
    scale = Scale(start, start + max(seconds or 0.0, end - start))
    rows_end = top + ROW * len(workers)
    parts = axis(scale, top, rows_end)
    row_of = {worker: top + ROW * n for n, worker in enumerate(workers)}
    for worker, y in row_of.items():
        parts.append(f'<text x="{LEFT - 6}" y="{y + BAR - 1}" text-anchor="end">{esc(worker)}</text>')
    for d in deliveries(events):
        y = row_of[d.worker] + (ROW - BAR) / 2
        x, width = scale.x(d.start), max(scale.x(d.end) - scale.x(d.start), 1.0)
        tip = (f"{d.worker}: {d.body!r} {d.start - scale.start:.3f}-{d.end - scale.start:.3f} s, {d.outcome}"
               f"{' (redelivered)' if d.redelivered else ''}")
        parts.append(f'<rect class="{d.outcome}" data-worker="{esc(d.worker)}" data-body="{esc(d.body)}" '
                     f'data-outcome="{d.outcome}" data-redelivered="{str(d.redelivered).lower()}" x="{x:.2f}" '
                     f'y="{y}" width="{width:.2f}" height="{BAR}"><title>{esc(tip)}</title></rect>')
        if width > 14 and d.outcome != "unfinished":  # the body, or its two ends, as much as fits
            fits = int((width - 4) / 5.5)
            label = d.body if len(d.body) <= fits else d.body[:max(fits // 2 - 1, 1)] + "…" + d.body[-(fits // 2):]
            parts.append(f'<text class="label" x="{x + 2:.1f}" y="{y + BAR - 2.5}">{esc(label)}</text>')
        parts.append(marker(d.outcome, x + width, y))
        if d.redelivered:
            parts.append(f'<polygon class="redelivered" data-mark="redelivered" '
                         f'points="{x:.1f},{y - 3} {x + 7:.1f},{y - 3} {x:.1f},{y + 5}"/>')
    for e in events:
        if e["event"] in ("connected", "disconnected") and e.get("worker") in row_of:
            x, y = scale.x(e["time"]), row_of[e["worker"]]
            parts.append(f'<line class="{e["event"]}" data-mark="{e["event"]}" x1="{x:.1f}" y1="{y}" x2="{x:.1f}" '
                         f'y2="{y + ROW}"><title>{esc(e["event"])} {esc(e.get("node", ""))}</title></line>')
    parts += moments(run, scale, top - 4, rows_end, rows_end + 26)
    parts += makespan(run, events, scale, rows_end + 40)
    return parts, rows_end + (70 if run.ideal_makespan else 52)


def moments(run: Run, scale: Scale, top: float, bottom: float, label_y: float) -> list[str]:
    parts = []
    for moment, label in run.moments:
        x = scale.x(moment)
        parts.append(f'<line class="moment" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>'
                     f'<text x="{x + 3:.1f}" y="{label_y}" style="fill:#b00020">{esc(label)}</text>')
    return parts


def makespan(run: Run, events: Sequence[dict], scale: Scale, y: float) -> list[str]:
    """The makespan as a line under the rows, from the first delivery to the last message done; the lab's ideal
    under it."""
    tally = EventTally(list(run.sent), list(events))
    starts = [e["time"] for e in events if e["event"] == "received"]
    if not starts or not tally.makespan:
        return []
    first = min(starts)
    x0 = scale.x(first)
    parts = [f'<line class="span" x1="{x0:.1f}" y1="{y}" x2="{scale.x(first + tally.makespan):.1f}" y2="{y}"/>'
             f'<text x="{x0:.1f}" y="{y - 4}">makespan {tally.makespan:.2f} s</text>']
    if run.ideal_makespan:
        parts.append(f'<line class="ideal" x1="{x0:.1f}" y1="{y + 18}" x2="{scale.x(first + run.ideal_makespan):.1f}"'
                     f' y2="{y + 18}"/><text x="{x0:.1f}" y="{y + 14}" style="fill:#1e8f4e">ideal '
                     f'{run.ideal_makespan:.2f} s: the work split evenly</text>')
    return parts


def legend(y: float, shown: Optional[set] = None) -> list[str]:
    """The legend's marks and what each means: all of them, or those `shown`."""
    parts = []
    for n, (kind, label) in enumerate([entry for entry in LEGEND if shown is None or entry[0] in shown]):
        x, row = LEFT + (n % 4) * 212, y + 16 * (n // 4)
        if kind == "redelivered":
            shape = f'<polygon class="redelivered" points="{x},{row} {x + 9},{row} {x},{row + 10}"/>'
        elif kind == "disconnected":
            shape = f'<line class="disconnected" x1="{x + 5}" y1="{row}" x2="{x + 5}" y2="{row + 11}"/>'
        else:
            shape = f'<rect class="{kind}" x="{x}" y="{row}" width="14" height="10"/>'
        parts.append(f'{shape}<text x="{x + 18}" y="{row + 9}">{esc(label)}</text>')
    return parts


def depth_chart(run: Run, seconds: Optional[float] = None) -> str:
    """Messages outstanding and ready over time, as step lines on the timeline's time scale."""
    points = depth(run, run.log.read())
    if not points:
        return ""
    start, end = extent(run)
    scale = Scale(start, start + max(seconds or 0.0, end - start))
    top, height = 10, 110
    peak = max(max(p[1] for p in points), 1)

    def y(count: int) -> float:
        return top + height - count / peak * height

    parts = axis(scale, top, top + height)
    parts.append(f'<text x="{LEFT - 6}" y="{top + 4}" text-anchor="end">{peak}</text>'
                 f'<text x="{LEFT - 6}" y="{top + height}" text-anchor="end">0</text>')
    for index, name in ((1, "outstanding"), (2, "ready")):
        path, last = [], points[0][index]
        for point in points:
            path.append(f"{scale.x(point[0]):.1f},{y(last):.1f} {scale.x(point[0]):.1f},{y(point[index]):.1f}")
            last = point[index]
        path.append(f"{scale.x(end):.1f},{y(last):.1f}")
        parts.append(f'<polyline class="{name}" data-series="{name}" points="{" ".join(path)}"/>')
    parts += moments(run, scale, top, top + height, top + height + 24)
    base = top + height + 40
    parts.append(f'<line class="outstanding" x1="{LEFT}" y1="{base}" x2="{LEFT + 20}" y2="{base}"/>'
                 f'<text x="{LEFT + 24}" y="{base + 4}">sent, not yet settled (ready + in a worker\'s hands)</text>'
                 f'<line class="ready" x1="{LEFT + 330}" y1="{base}" x2="{LEFT + 350}" y2="{base}"/>'
                 f'<text x="{LEFT + 354}" y="{base + 4}">of those, in no worker\'s hands (ready)</text>')
    return svg(base + 12, parts, f"queue depth of {run.queue}")


def svg(height: float, parts: list[str], label: str) -> str:
    """An SVG image that carries its own style, so it also stands alone (the docs show one)."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
            f'viewBox="0 0 {WIDTH} {height:.0f}" role="img" aria-label="{esc(label)}">'
            f'<style>{SVG_CSS}</style>{"".join(parts)}</svg>')


DEPTH_NOTE = ("Queue depth derived from the event logs, not sampled from the broker: a message counts from when the "
              "sender.py that sent it returned (or its first delivery, if sooner) until a worker logs it done, lost "
              "or dead-lettered; \"ready\" subtracts the deliveries workers hold. Messages prefetched into a "
              "worker's buffer but not yet taken in hand count as ready; a crashed worker's message stays "
              "outstanding (with --acknowledge it comes back).")
PAGE_NOTE = ("Each timeline is drawn from the workers' event logs (qprocessor.py --events): a row per worker, a bar "
             "per delivery from received to how it ended; hover a bar for its message. Time runs from a run's first "
             "delivery (what came before is drawn at the left edge). The timelines of one lab share a time scale, so "
             "their lengths compare, but for a run under a quarter of the longest, drawn on its own.")


def run_section(run: Run, seconds: Optional[float]) -> str:
    tally = run.tally()
    counts = (f"sent {len(tally.sent)}, processed {len(tally.processed)}, lost {len(tally.bodies('lost'))}, "
              f"requeued {len(tally.bodies('requeued'))}, dead-lettered {len(tally.bodies('dead-lettered'))}, "
              f"redelivered {tally.redelivered}, makespan {tally.makespan:.2f} s")
    if run.ideal_makespan:
        counts += f" (ideal {run.ideal_makespan:.2f} s)"
    parts = [f'<h3>queue {esc(run.queue)}</h3><p class="note">{esc(counts)}</p>', timeline(run, seconds)]
    if run.depth_chart:
        parts += [depth_chart(run, seconds), f'<p class="note">{esc(DEPTH_NOTE)}</p>']
    return "\n".join(parts)


def section(item: Section) -> str:
    rows = "".join(f'<tr><td class="{c.status}">{c.status}</td><td>{esc(c.text)}'
                   f'{f"<br><span class=detail>{esc(c.detail)}</span>" if c.detail else ""}</td></tr>'
                   for c in item.claims)
    lengths = {id(run): extent(run)[1] - extent(run)[0] for run in item.runs if run.log.read()}
    longest = max(lengths.values(), default=0.0)
    runs = [run_section(run, longest if lengths[id(run)] * 4 >= longest else None)
            for run in item.runs if id(run) in lengths]
    return (f'<h2 id="{esc(item.anchor)}">{esc(item.title)}</h2><table>{rows}</table>\n'
            + ("\n".join(runs) or '<p class="note">No worker ran in this lab: nothing to draw.</p>'))


def sections(ran: Sequence) -> list[Section]:
    """The page's sections from what ran: (lab, context) pairs as run_labs keeps them, and sections as they are."""
    return [item if isinstance(item, Section) else
            Section(f"Lab {item[0].number}: {item[0].title}", item[1].claims, item[1].runs, f"lab-{item[0].number}")
            for item in ran]


def page(sections: Sequence[Section], heading: str = "Lab kit report") -> str:
    """The whole page: a summary table linking to each section, the legend, then the sections."""
    summary = "".join(
        f'<tr><td><a href="#{esc(s.anchor)}">{esc(s.title)}</a></td>'
        + "".join(f'<td class="{status}">{sum(c.status == status for c in s.claims)} {status}</td>'
                  for status in ("PASS", "FAIL", "SKIP")) + "</tr>" for s in sections)
    key = svg(8 + 16 * ((len(LEGEND) + 3) // 4), legend(4), "legend")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(heading)}</title>'
            f'<style>{PAGE_CSS}</style></head><body><h1>{esc(heading)}</h1><p class="note">'
            f'{time.strftime("%Y-%m-%d %H:%M")}. {esc(PAGE_NOTE)}</p><table>{summary}</table>\n{key}\n'
            + "\n".join(section(s) for s in sections) + "\n</body></html>\n")


def write_report(path: Path, sections: Sequence[Section], heading: str = "Lab kit report") -> None:
    """The page; or, for a path ending in .svg, only the timelines as one image (docs/lab5-timeline.svg is one)."""
    if path.suffix.lower() == ".svg":
        titled = [(f"{item.title}: queue {run.queue}", run) for item in sections for run in item.runs
                  if run.log.read()]
        path.write_text(figure(titled) + "\n", encoding="utf-8")
    else:
        path.write_text(page(sections, heading), encoding="utf-8")
