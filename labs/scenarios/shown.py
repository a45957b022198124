"""The output a handout shows, checked against what the lab's processes really printed (`labs run --as-student`).

A handout's output block is a fenced block without a language. Each of its lines must be printed, in that order, by
one process of the lab (a script, a snippet, a request's answer), other lines between them allowed: a worker prints
more than a handout has room for. What varies from run to run is written as a student would read it and matched
loosely; everything else is matched word for word:

- `...` stands for any text (a whole line of it: any lines), and a word just before it is a prefix the run may not
  share (`'xxxx...'`, `"5c1f..."`);
- `alice` is the student's own name (user and vhost), `localhost:5672` the broker the student connects to;
- `worker-4242` is a worker's default name, `1.05s` a duration, `(639 msg/s)` a rate, a long hexadecimal word a
  message id;
- columns apart by two or more spaces (a table) may be apart by any number.

A block that holds on some RabbitMQ versions only says so in a comment on the line above its fence:
`<!-- shown on RabbitMQ >= 4.3 -->` or `<!-- shown on RabbitMQ < 4.3 -->`.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

FENCED = re.compile(r"(?:^<!-- shown on RabbitMQ (?P<op>>=|<) (?P<version>\d+)\.(?P<minor>\d+) -->\n)?"
                    r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)
# What varies between runs, in the order tried at each place of a shown line: (what the handout writes, its pattern).
LOOSE = [
    (r"[0-9A-Za-z]*\.\.\.", r".*"),
    (r"\blocalhost:5672\b", r"[\w.-]+:\d+"),
    (r"\bworker-\d+\b", r"worker-\d+"),
    (r"\b\d+\.\d+s\b", r"\d+(?:\.\d+)?s"),
    (r"\([\d,]+ msg/s\)", r"\([\d,]+ msg/s\)"),  # the sender groups thousands: (1,210 msg/s)
    (r"\b[0-9a-f]{12,}\b", r"[0-9a-f]+"),
    (r" {2,}", r" +"),
]
TOKENS = re.compile("|".join(f"(?P<t{n}>{written})" for n, (written, _) in enumerate(LOOSE)))


@dataclass(frozen=True)
class ShownBlock:
    lines: tuple[str, ...]
    since: Optional[tuple[int, int]] = None  # shown on this version and later only
    before: Optional[tuple[int, int]] = None  # shown on versions before this one only

    def applies_to(self, version: tuple[int, ...]) -> bool:
        return ((self.since is None or tuple(version[:2]) >= self.since)
                and (self.before is None or tuple(version[:2]) < self.before))

    @property
    def title(self) -> str:
        first = self.lines[0]
        return first if len(first) <= 70 else first[:67] + "..."


def shown_blocks(handout: Path) -> list[ShownBlock]:
    """The handout's output blocks (fenced, without a language), with the versions each holds on."""
    blocks = []
    for found in FENCED.finditer(handout.read_text()):
        if found["lang"]:
            continue
        version = (int(found["version"]), int(found["minor"])) if found["version"] else None
        lines = tuple(line for line in found["body"].splitlines() if line.strip())
        blocks.append(ShownBlock(lines, since=version if found["op"] == ">=" else None,
                                 before=version if found["op"] == "<" else None))
    return blocks


def line_pattern(shown: str, student: str) -> Optional[re.Pattern]:
    """The printed lines a shown line stands for; None for a line of `...` alone (any lines)."""
    if shown.strip() == "...":
        return None
    parts, at = [], 0
    for token in TOKENS.finditer(shown):
        parts.append(literal(shown[at:token.start()], student))
        parts.append(LOOSE[int(token.lastgroup[1:])][1])
        at = token.end()
    parts.append(literal(shown[at:], student))
    # A traceback's last line: python names the exception with its module (pika.exceptions.StreamLostError), ipython
    # without it, as the handouts show it.
    return re.compile(r"(?:[\w.]+\.)?" + "".join(parts))


def literal(text: str, student: str) -> str:
    return re.escape(student).join(re.escape(part) for part in re.split(r"\balice\b", text))


def printed_by(block: ShownBlock, lines: Sequence[str], student: str) -> bool:
    """The block's lines, in order, among one process's printed lines."""
    patterns = [pattern for pattern in (line_pattern(line, student) for line in block.lines) if pattern]
    at = 0
    for line in lines:
        if at < len(patterns) and patterns[at].fullmatch(line.rstrip()):
            at += 1
    return at == len(patterns)


def unmatched(block: ShownBlock, printed: Sequence[Sequence[str]], student: str) -> Optional[str]:
    """None when one process printed the block; else the first shown line that no process printed, with the printed
    line most like it."""
    if any(printed_by(block, lines, student) for lines in printed):
        return None
    every = [each.rstrip() for lines in printed for each in lines]
    for line in block.lines:
        pattern = line_pattern(line, student)
        if pattern and not any(pattern.fullmatch(each) for each in every):
            closest = difflib.get_close_matches(line, every, n=1, cutoff=0.3)
            return line + (f"; the closest printed: {closest[0]!r}" if closest else "")
    return "each line, but not in this order by one process"


def shown_output_claims(handout: Path, printed: Sequence[Sequence[str]], student: str,
                        version: tuple[int, ...]) -> list[tuple[str, bool, str]]:
    """A claim (text, holds, detail) for each output block the handout shows on this version."""
    claims = []
    for block in shown_blocks(handout):
        if block.applies_to(version):
            missing = unmatched(block, printed, student)
            claims.append((f"the handout shows what the student saw: {block.title!r}", missing is None,
                           f"not printed: {missing}" if missing else ""))
    return claims
