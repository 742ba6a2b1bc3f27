"""The CRI container log format: ``<RFC3339Nano> <stream> <P|F> <message>``.

Runtimes write it at the kubelet's ``log_path``; the kubelet reads it back for
``logs``. A line that was cut (long output, or output without a trailing newline
yet) is tagged ``P`` (partial); the last piece of a line is tagged ``F`` (full).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

Stream = Literal["stdout", "stderr"]
PARTIAL: Final = "P"
FULL: Final = "F"

_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) "
    r"(?P<stream>stdout|stderr) (?P<tag>[A-Z](?::[A-Z])*) (?P<msg>.*)$",
    re.DOTALL,
)


def rfc3339nano(ns: int) -> str:
    """Format nanoseconds since the epoch as Go's RFC3339Nano (trailing zeros dropped)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def format_line(ns: int, stream: Stream, message: str, *, partial: bool = False) -> str:
    """One log line, newline-terminated; ``message`` must not contain a newline."""
    return f"{rfc3339nano(ns)} {stream} {PARTIAL if partial else FULL} {message}\n"


@dataclass(frozen=True, slots=True)
class LogLine:
    timestamp: str
    stream: Stream
    partial: bool
    message: str


def parse_line(line: str) -> LogLine:
    """Parse one CRI log line (without its trailing newline); ValueError if malformed."""
    match = _LINE.match(line.rstrip("\n"))
    if match is None:
        raise ValueError(f"not a CRI log line: {line[:80]!r}")
    stream: Stream = "stdout" if match.group("stream") == "stdout" else "stderr"
    return LogLine(
        timestamp=match.group("ts"),
        stream=stream,
        partial=match.group("tag").split(":")[0] == PARTIAL,
        message=match.group("msg"),
    )
