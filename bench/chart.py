"""The benchmark's ratios as an SVG bar chart, written by hand (no plotting library to pin).

One bar per throughput row and broker version: the ratio of the medians (ours / the plain-pika peer), a whisker
from the lowest to the highest round-by-round ratio, and a line at parity (1.0x). Higher is better.
"""
from __future__ import annotations

from html import escape

WIDTH, LABEL_WIDTH, ROW_HEIGHT, TOP, BOTTOM = 900, 470, 26, 78, 46
PLOT_LEFT, PLOT_RIGHT = LABEL_WIDTH + 10, WIDTH - 60
HEADLINE = ("publish persistent vs pipelined pika", "consume + ack, prefetch 100")  # the two targets


def rate_rows(results: dict) -> list[dict]:
    return [row for row in results["rows"]
            if row.get("ratio") is not None
            and (row.get("sender.py msg/s") or row.get("qprocessor.py msg/s") or row.get("ours jobs/s"))]


def svg(results: dict) -> str:
    rows = rate_rows(results)
    highest = max([2.0] + [row["ratio"] for row in rows] + [row["spread"][1] for row in rows if "spread" in row])
    scale = (PLOT_RIGHT - PLOT_LEFT) / (highest * 1.05)
    height = TOP + ROW_HEIGHT * len(rows) + BOTTOM

    def x(ratio: float) -> float:
        return PLOT_LEFT + ratio * scale

    m = results["machine"]
    if "jobs" in results:  # python -m bench --jobs
        title = "The Jobs API against python-rq, end to end (ours / peer jobs/s, higher is better)"
        detail = (f'{results["jobs"]:,} jobs from {results["clients"]} clients to {results["workers"]} workers, zero '
                  f'work, {results["rounds"]} rounds; Redis {m["redis"]}, rq {m["rq"]}; whisker: round ratios')
    else:
        title = "sender.py and qprocessor.py against plain pika (ours / peer, higher is better)"
        detail = (f'whole processes, {results["messages"]:,} messages, {results["rounds"]} rounds each; bar: ratio '
                  'of the medians, whisker: lowest to highest round ratio')
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="10" y="42" fill="#444">{escape(results.get("date", ""))}: {m["cores"]} cores, '
           f'{escape(m["cpu"])}; Python {m["python"]}, pika {m["pika"]}; RabbitMQ {escape(m["rabbitmq"])}</text>',
           f'<text x="10" y="60" fill="#444">{escape(detail)}</text>']
    for tick in range(0, int(highest * 1.05) + 1):
        style = 'stroke="#222" stroke-width="1.5" stroke-dasharray="4 3"' if tick == 1 else 'stroke="#ddd"'
        out.append(f'<line x1="{x(tick):.1f}" y1="{TOP - 6}" x2="{x(tick):.1f}" y2="{height - BOTTOM + 4}" {style}/>')
        out.append(f'<text x="{x(tick):.1f}" y="{height - BOTTOM + 18}" text-anchor="middle">{tick}x</text>')
    out.append(f'<text x="{x(1) + 4:.1f}" y="{TOP - 10}" fill="#222">parity</text>')
    for index, row in enumerate(rows):
        top = TOP + index * ROW_HEIGHT
        middle = top + ROW_HEIGHT / 2
        headline = row["what"].startswith(HEADLINE)
        colour = "#2a9d5c" if row["ratio"] >= 1 else "#e07b39"
        label = f'RabbitMQ {row.get("rabbitmq", "?")}: {row["what"]}'
        weight = ' font-weight="bold"' if headline else ""
        out.append(f'<text x="{LABEL_WIDTH}" y="{middle + 4:.1f}" text-anchor="end"{weight}>{escape(label)}</text>')
        out.append(f'<rect x="{PLOT_LEFT}" y="{top + 5}" width="{max(row["ratio"] * scale, 1):.1f}" '
                   f'height="{ROW_HEIGHT - 10}" fill="{colour}" opacity="{1 if headline else 0.6}"/>')
        if "spread" in row:
            low, high = row["spread"]
            out.append(f'<line x1="{x(low):.1f}" y1="{middle:.1f}" x2="{x(high):.1f}" y2="{middle:.1f}" '
                       'stroke="#222" stroke-width="1.2"/>')
            for end in (low, high):
                out.append(f'<line x1="{x(end):.1f}" y1="{middle - 5:.1f}" x2="{x(end):.1f}" y2="{middle + 5:.1f}" '
                           'stroke="#222" stroke-width="1.2"/>')
        out.append(f'<text x="{x(max(row["ratio"], row.get("spread", [0, 0])[1])) + 6:.1f}" y="{middle + 4:.1f}"'
                   f'>{row["ratio"]:.2f}x</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
