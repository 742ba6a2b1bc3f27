"""Reading a container's log file back, as ``kubectl logs`` sees it.

The kubelet's ``pkg/kubelet/kuberuntime/logs`` in Python: runtimes write the CRI
format (``<RFC3339Nano> <stdout|stderr> <P|F> <message>``, see
:mod:`minikubelet.logs.crilog`), Docker's json-file driver writes
``{"log": "...\\n", "stream": "stdout", "time": "..."}``; the format is detected
per line, so a file that holds both still reads.

Where this differs from the kubelet, on purpose:

* Pieces of a line (CRI ``P`` tags, Docker records without a trailing newline)
  are joined per stream into one line, stamped with the time of its first
  piece, so ``--timestamps`` prefixes whole lines and ``--tail`` counts whole
  lines. A line still unfinished when the log ends is written as it is.
* Following survives rotation: when the file at ``path`` is renamed and a new
  one created, the rest of the old file is read and the new one followed from
  its start; a file truncated in place (copytruncate) is read again from 0.
* ``--tail`` and ``--stream`` compose: the tail is the last N lines of the
  selected streams.

Following ends when ``still_running()`` says the container is gone; the log is
then read to its end once more, so the container's last words are not lost.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import json
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

from minikubelet import errors
from minikubelet.logs.crilog import Stream, parse_line

log = logging.getLogger(__name__)

ALL_STREAMS: Final[frozenset[Stream]] = frozenset({"stdout", "stderr"})
#: How much is read from the file at a time.
BLOCK_SIZE: Final = 64 * 1024
#: How often a followed log is checked for new data, rotation and the container's exit.
DEFAULT_POLL_INTERVAL: Final = 0.25

_TIME = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)$"
)


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with up to 9 fractional digits."""
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    seconds = calendar.timegm(
        (int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0)
    )
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    nanos = int((frac or "").ljust(9, "0"))
    return seconds * 1_000_000_000 + nanos


def format_time_fixed(ns: int) -> str:
    """Go's RFC3339NanoFixed in UTC (always nine fractional digits): the ``--timestamps`` prefix."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


@dataclass(frozen=True, slots=True)
class LogOptions:
    """``v1.PodLogOptions`` as the reader needs them; ``None`` means "not set"."""

    follow: bool = False
    tail_lines: int | None = None
    timestamps: bool = False
    since_seconds: int | None = None
    since_time: datetime | None = None
    limit_bytes: int | None = None
    streams: frozenset[Stream] = ALL_STREAMS

    def __post_init__(self) -> None:
        if self.tail_lines is not None and self.tail_lines < 0:
            raise errors.InvalidArgument(f"tailLines must be 0 or more, not {self.tail_lines}")
        if self.limit_bytes is not None and self.limit_bytes < 1:
            raise errors.InvalidArgument(f"limitBytes must be 1 or more, not {self.limit_bytes}")
        if self.since_seconds is not None and self.since_seconds < 1:
            raise errors.InvalidArgument(
                f"sinceSeconds must be 1 or more, not {self.since_seconds}"
            )
        if self.since_time is not None and self.since_time.tzinfo is None:
            raise errors.InvalidArgument("sinceTime must carry a time zone")
        if not self.streams or not self.streams <= ALL_STREAMS:
            raise errors.InvalidArgument(f"streams must be stdout and/or stderr: {self.streams}")

    def since_ns(self, now: float) -> int | None:
        """The earliest time shown: the later of ``now - since_seconds`` and ``since_time``."""
        since: int | None = None
        if self.since_seconds is not None:
            since = int((now - self.since_seconds) * 1_000_000_000)
        if self.since_time is not None:
            utc = self.since_time.astimezone(UTC)
            at = calendar.timegm(utc.timetuple()) * 1_000_000_000 + utc.microsecond * 1000
            since = at if since is None else max(since, at)
        return since


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line of the file, or one whole (joined) line."""

    timestamp_ns: int
    stream: Stream
    message: bytes
    """The text, with its trailing newline when ``complete``."""
    complete: bool


def parse_record(line: bytes) -> LogRecord:
    """Parse one line of a log file (without its newline), CRI or Docker JSON; ValueError if
    it is neither."""
    if line.startswith(b"{"):
        return _parse_docker_json(line)
    text = line.decode("utf-8", "surrogateescape")
    parsed = parse_line(text)
    message = parsed.message.encode("utf-8", "surrogateescape")
    if not parsed.partial:
        message += b"\n"
    return LogRecord(parse_time(parsed.timestamp), parsed.stream, message, not parsed.partial)


def _parse_docker_json(line: bytes) -> LogRecord:
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a Docker JSON log line: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a Docker JSON log line: not an object")
    text, stream, at = data.get("log", ""), data.get("stream"), data.get("time")
    if not isinstance(text, str) or not isinstance(at, str):
        raise ValueError("not a Docker JSON log line: log and time must be strings")
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"not a Docker JSON log line: unexpected stream {stream!r}")
    stream_: Stream = "stdout" if stream == "stdout" else "stderr"
    message = text.encode("utf-8", "surrogateescape")
    return LogRecord(parse_time(at), stream_, message, message.endswith(b"\n"))


@dataclass(slots=True)
class _Joiner:
    """Joins the pieces of a line, one line under way per stream."""

    pending: dict[Stream, tuple[int, list[bytes]]] = field(default_factory=dict)

    def feed(self, record: LogRecord) -> LogRecord | None:
        started = self.pending.pop(record.stream, None)
        if started is None:
            if record.complete:
                return record
            self.pending[record.stream] = (record.timestamp_ns, [record.message])
            return None
        first_ns, pieces = started
        pieces.append(record.message)
        if not record.complete:
            self.pending[record.stream] = (first_ns, pieces)
            return None
        return LogRecord(first_ns, record.stream, b"".join(pieces), True)

    def flush(self) -> list[LogRecord]:
        """The lines still under way, as they are (the log ended before their end)."""
        lines = [
            LogRecord(first_ns, stream, b"".join(pieces), False)
            for stream, (first_ns, pieces) in self.pending.items()
        ]
        self.pending.clear()
        return sorted(lines, key=lambda line: line.timestamp_ns)


class _LogFilter:
    """Lines in, output bytes out: stream selection, since, tail, timestamps, byte limit."""

    def __init__(self, options: LogOptions, since_ns: int | None, path: Path) -> None:
        self._options = options
        self._since_ns = since_ns
        self._path = path
        self._joiner = _Joiner()
        self._remaining = options.limit_bytes
        self._tail: collections.deque[LogRecord] | None = (
            None if options.tail_lines is None else collections.deque(maxlen=options.tail_lines)
        )
        self.done = False

    def lines(self, raw_lines: Iterable[bytes]) -> bytes:
        out: list[bytes] = []
        for raw in raw_lines:
            if self.done:
                break
            if not raw:
                continue
            try:
                record = parse_record(raw)
            except ValueError as exc:
                log.debug("skipping a line of %s: %s", self._path, exc)
                continue
            if record.stream not in self._options.streams:
                continue
            whole = self._joiner.feed(record)
            if whole is not None:
                self._emit(whole, out)
        return b"".join(out)

    def flush(self) -> bytes:
        """Write the lines the log ended in the middle of."""
        out: list[bytes] = []
        for line in self._joiner.flush():
            self._emit(line, out)
        return b"".join(out)

    def end_tail(self) -> bytes:
        """The tail has been collected: write it; later lines are written as they come."""
        tail, self._tail = self._tail, None
        out: list[bytes] = []
        for line in tail or ():
            self._write(line, out)
        return b"".join(out)

    def _emit(self, line: LogRecord, out: list[bytes]) -> None:
        if self._since_ns is not None and line.timestamp_ns < self._since_ns:
            return
        if self._tail is not None:
            self._tail.append(line)
        else:
            self._write(line, out)

    def _write(self, line: LogRecord, out: list[bytes]) -> None:
        if self.done:
            return
        data = line.message
        if self._options.timestamps:
            data = format_time_fixed(line.timestamp_ns).encode() + b" " + data
        if self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
            if self._remaining <= 0:
                self.done = True
        out.append(data)


def _is_line_end(raw: bytes, streams: frozenset[Stream]) -> bool:
    try:
        record = parse_record(raw)
    except ValueError:
        return False
    return record.complete and record.stream in streams


def tail_start(f: BinaryIO, lines: int, streams: frozenset[Stream] = ALL_STREAMS) -> int:
    """The offset in ``f`` from which the last ``lines`` whole lines of ``streams`` follow
    (0 if the file holds fewer), found by reading backwards from the end."""
    end = f.seek(0, os.SEEK_END)
    if lines == 0:
        return end
    pos, carry, found = end, b"", 0
    while pos > 0:
        size = min(BLOCK_SIZE, pos)
        pos -= size
        f.seek(pos)
        data = f.read(size) + carry
        parts = data.split(b"\n")
        carry = parts[0]  # may begin in an earlier block
        offset = pos + len(data)
        for part in reversed(parts[1:]):
            start = offset - len(part)
            offset = start - 1
            if part and _is_line_end(part, streams):
                found += 1
                if found > lines:
                    return start + len(part) + 1
    return 0


def _open(path: Path) -> tuple[Path, BinaryIO]:
    resolved = path.resolve()
    try:
        return resolved, resolved.open("rb")
    except FileNotFoundError:
        raise errors.NotFound(f"log file {path} does not exist") from None


def _replaced(path: Path, f: BinaryIO) -> bool:
    """Whether ``path`` now names another file than the open ``f`` (rotated and recreated)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False  # renamed, not recreated yet: keep reading the old file
    mine = os.fstat(f.fileno())
    return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)


def _truncated(f: BinaryIO) -> bool:
    return os.fstat(f.fileno()).st_size < f.tell()


def _split(buf: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """Whole lines of ``buf + chunk``, and the unfinished rest."""
    lines = (buf + chunk).split(b"\n")
    rest = lines.pop()
    return lines, rest


async def read_logs(
    path: Path,
    options: LogOptions,
    still_running: Callable[[], Awaitable[bool]] | None,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    now: Callable[[], float] = time.time,
) -> AsyncGenerator[bytes, None]:
    """The container log at ``path`` as ``kubectl logs`` prints it, in chunks of whole lines.

    With ``options.follow``, keeps reading as the file grows (and rotates) until
    ``still_running()`` answers False, then reads what is left and ends; with
    ``still_running=None`` it follows until cancelled. Raises
    :class:`~minikubelet.errors.NotFound` if the file does not exist.
    """
    resolved, f = await asyncio.to_thread(_open, path)
    try:
        log_filter = _LogFilter(options, options.since_ns(now()), resolved)
        if options.tail_lines is not None:
            start = await asyncio.to_thread(tail_start, f, options.tail_lines, options.streams)
            await asyncio.to_thread(f.seek, start)
        buf = b""
        collecting_tail = options.tail_lines is not None
        exited = False
        while not log_filter.done:
            chunk = await asyncio.to_thread(f.read, BLOCK_SIZE)
            if chunk:
                whole, buf = _split(buf, chunk)
                if out := log_filter.lines(whole):
                    yield out
                continue
            # at the end of the file
            if not options.follow:
                out = log_filter.lines([buf]) + log_filter.flush() + log_filter.end_tail()
                if out:
                    yield out
                return
            if collecting_tail:
                collecting_tail = False
                if out := log_filter.end_tail():
                    yield out
                continue
            if await asyncio.to_thread(_replaced, resolved, f):
                rest = await asyncio.to_thread(f.read)
                whole, tail_bytes = _split(buf, rest)
                if out := log_filter.lines([*whole, tail_bytes]):
                    yield out
                buf = b""
                try:
                    _, new = await asyncio.to_thread(_open, resolved)
                except errors.NotFound:
                    continue  # gone again already: look once more
                log.debug("log %s was rotated: following the new file", resolved)
                f.close()
                f = new
                continue
            if await asyncio.to_thread(_truncated, f):
                log.debug("log %s was truncated: reading it from the start", resolved)
                buf = b""
                await asyncio.to_thread(f.seek, 0)
                continue
            if exited:
                if out := log_filter.lines([buf]) + log_filter.flush():
                    yield out
                return
            if still_running is not None and not await still_running():
                exited = True  # read to the end once more: the last words
                continue
            await asyncio.sleep(poll_interval)
    finally:
        f.close()
