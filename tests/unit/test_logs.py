"""The container log reader: CRI and Docker JSON lines, joining, tail, since, limits, follow."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from minikubelet import errors
from minikubelet.logs.crilog import Stream, format_line
from minikubelet.logs.reader import (
    BLOCK_SIZE,
    LogOptions,
    LogRecord,
    format_time_fixed,
    parse_record,
    parse_time,
    read_logs,
    tail_start,
)

T0 = 1_764_312_748_000_000_000  # 2025-11-28T06:52:28Z
SECOND = 1_000_000_000


def cri(ns: int, stream: Stream, message: str, *, partial: bool = False) -> str:
    return format_line(ns, stream, message, partial=partial)


def docker(ns: int, stream: Stream, log: str) -> str:
    seconds, frac = divmod(ns, SECOND)
    at = f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"
    return json.dumps({"log": log, "stream": stream, "time": at}) + "\n"


async def read_all(
    path: Path, options: LogOptions, *, now: Callable[[], float] | None = None
) -> bytes:
    chunks = read_logs(path, options, None, now=now or time.time)
    return b"".join([chunk async for chunk in chunks])


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "0.log"


# --- parsing ---------------------------------------------------------------------------


def test_parse_cri_full_and_partial() -> None:
    full = parse_record(cri(T0, "stderr", "boom").rstrip("\n").encode())
    assert full == LogRecord(T0, "stderr", b"boom\n", True)
    part = parse_record(cri(T0 + 5, "stdout", "half", partial=True).rstrip("\n").encode())
    assert part == LogRecord(T0 + 5, "stdout", b"half", False)


def test_parse_docker_json_full_and_partial() -> None:
    full = parse_record(docker(T0 + 7, "stdout", "hello\n").rstrip("\n").encode())
    assert full == LogRecord(T0 + 7, "stdout", b"hello\n", True)
    part = parse_record(docker(T0, "stderr", "no newline yet").rstrip("\n").encode())
    assert part == LogRecord(T0, "stderr", b"no newline yet", False)


def test_parse_keeps_bytes_that_are_not_utf8() -> None:
    raw = b"2025-11-28T06:52:28Z stdout F caf\xe9"
    assert parse_record(raw).message == b"caf\xe9\n"


@pytest.mark.parametrize(
    "bad",
    [
        b"hello",
        b"2025-11-28T06:52:28Z stdin F x",
        b'{"log": "x\\n", "stream": "stdin", "time": "2025-11-28T06:52:28Z"}',
        b'{"log": "x\\n", "stream": "stdout"}',
        b"{not json",
        b"[1, 2]",
    ],
)
def test_parse_rejects_what_is_neither_format(bad: bytes) -> None:
    with pytest.raises(ValueError):
        parse_record(bad)


def test_time_parsing_and_fixed_formatting() -> None:
    assert parse_time("2025-11-28T06:52:28Z") == T0
    assert parse_time("2025-11-28T06:52:28.5Z") == T0 + SECOND // 2
    assert parse_time("2025-11-28T07:52:28.000000001+01:00") == T0 + 1
    assert format_time_fixed(T0 + 1_500) == "2025-11-28T06:52:28.000001500Z"
    assert format_time_fixed(T0) == "2025-11-28T06:52:28.000000000Z"
    with pytest.raises(ValueError):
        parse_time("2025-11-28 06:52:28")


@pytest.mark.parametrize(
    "options",
    [
        {"tail_lines": -1},
        {"limit_bytes": 0},
        {"since_seconds": 0},
        {"since_time": datetime(2025, 1, 1)},  # naive on purpose
        {"streams": frozenset()},
    ],
)
def test_invalid_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidArgument):
        LogOptions(**options)  # type: ignore[arg-type]


# --- reading a finished log ------------------------------------------------------------


async def test_reads_both_formats_line_by_line_and_joins_partials(log_file: Path) -> None:
    log_file.write_text(
        cri(T0, "stdout", "one")
        + cri(T0 + 1, "stderr", "err ", partial=True)
        + cri(T0 + 2, "stdout", "two, ", partial=True)
        + cri(T0 + 3, "stdout", "joined")
        + "garbage that is no log line\n"
        + docker(T0 + 4, "stderr", "from docker\n")
        + docker(T0 + 5, "stdout", "docker ")
        + docker(T0 + 6, "stdout", "pieces\n")
        + cri(T0 + 7, "stderr", "line")
    )
    out = await read_all(log_file, LogOptions())
    assert out == b"one\ntwo, joined\nerr from docker\ndocker pieces\nline\n"


async def test_a_line_unfinished_at_the_end_is_written_as_it_is(log_file: Path) -> None:
    log_file.write_text(
        cri(T0, "stdout", "done") + cri(T0 + 1, "stdout", "progress 50%", partial=True)
    )
    assert await read_all(log_file, LogOptions()) == b"done\nprogress 50%"


async def test_a_last_line_without_newline_in_the_file_is_read(log_file: Path) -> None:
    log_file.write_text(cri(T0, "stdout", "a") + cri(T0 + 1, "stdout", "b").rstrip("\n"))
    assert await read_all(log_file, LogOptions()) == b"a\nb\n"


async def test_stream_selection(log_file: Path) -> None:
    log_file.write_text(
        cri(T0, "stdout", "out 1") + cri(T0 + 1, "stderr", "err 1") + cri(T0 + 2, "stdout", "out 2")
    )
    stderr = await read_all(log_file, LogOptions(streams=frozenset({"stderr"})))
    assert stderr == b"err 1\n"
    stdout = await read_all(log_file, LogOptions(streams=frozenset({"stdout"}), tail_lines=1))
    assert stdout == b"out 2\n"


async def test_tail_counts_whole_lines(log_file: Path) -> None:
    log_file.write_text(
        cri(T0, "stdout", "1")
        + cri(T0 + 1, "stdout", "2")
        + cri(T0 + 2, "stdout", "3a ", partial=True)
        + cri(T0 + 3, "stdout", "3b ", partial=True)
        + cri(T0 + 4, "stdout", "3c")
        + cri(T0 + 5, "stdout", "4")
    )
    assert await read_all(log_file, LogOptions(tail_lines=2)) == b"3a 3b 3c\n4\n"
    assert await read_all(log_file, LogOptions(tail_lines=0)) == b""
    assert await read_all(log_file, LogOptions(tail_lines=10)) == b"1\n2\n3a 3b 3c\n4\n"


async def test_tail_of_a_file_larger_than_a_block(log_file: Path) -> None:
    lines = [f"line {i:06d} " + "x" * 90 for i in range(3 * BLOCK_SIZE // 100)]
    log_file.write_text("".join(cri(T0 + i, "stdout", m) for i, m in enumerate(lines)))
    out = await read_all(log_file, LogOptions(tail_lines=700))
    assert out.decode().splitlines() == lines[-700:]
    with log_file.open("rb") as f:
        start = tail_start(f, 700)
        assert start > BLOCK_SIZE  # found from the end, not by reading the whole file
        f.seek(start)
        assert f.readline().decode().endswith(lines[-700] + "\n")


async def test_timestamps_prefix_each_whole_line_with_its_first_time(log_file: Path) -> None:
    log_file.write_text(
        cri(T0 + 1_500, "stdout", "a")
        + cri(T0 + 2 * SECOND, "stderr", "b", partial=True)
        + cri(T0 + 3 * SECOND, "stderr", "c")
    )
    out = await read_all(log_file, LogOptions(timestamps=True))
    assert out == (b"2025-11-28T06:52:28.000001500Z a\n2025-11-28T06:52:30.000000000Z bc\n")


async def test_since_seconds_and_since_time(log_file: Path) -> None:
    log_file.write_text(
        cri(T0, "stdout", "old")
        + cri(T0 + 10 * SECOND, "stdout", "new")
        + cri(T0 + 20 * SECOND, "stdout", "newest")
    )
    now = (T0 + 25 * SECOND) / SECOND
    recent = await read_all(log_file, LogOptions(since_seconds=15), now=lambda: now)
    assert recent == b"new\nnewest\n"
    since = datetime(2025, 11, 28, 6, 52, 48, tzinfo=UTC)
    assert await read_all(log_file, LogOptions(since_time=since)) == b"newest\n"
    # both set: the later one wins
    both = LogOptions(since_seconds=15, since_time=since)
    assert await read_all(log_file, both, now=lambda: now) == b"newest\n"
    assert (
        await read_all(log_file, LogOptions(since_seconds=15, tail_lines=1), now=lambda: now)
        == b"newest\n"
    )


async def test_limit_bytes_cuts_and_stops(log_file: Path) -> None:
    log_file.write_text(cri(T0, "stdout", "hello") + cri(T0 + 1, "stdout", "world"))
    assert await read_all(log_file, LogOptions(limit_bytes=8)) == b"hello\nwo"
    assert await read_all(log_file, LogOptions(limit_bytes=6)) == b"hello\n"
    stamped = await read_all(log_file, LogOptions(limit_bytes=10, timestamps=True))
    assert stamped == b"2025-11-28"


async def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound, match="does not exist"):
        await read_all(tmp_path / "nope.log", LogOptions())


# --- following -------------------------------------------------------------------------


class Collector:
    """Consumes a log stream in a task; tests await what it has seen."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.data = bytearray()
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._consume(chunks), name="log collector")

    async def _consume(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:
                self.data += chunk
                self._changed.set()
        finally:
            self._changed.set()

    async def until(self, expected: bytes, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not bytes(self.data).endswith(expected):
                self._changed.clear()
                if self.task.done():
                    raise AssertionError(f"stream ended with {bytes(self.data)!r}")
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    async def ended(self, timeout: float = 5.0) -> bytes:
        await asyncio.wait_for(self.task, timeout)
        return bytes(self.data)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def test_follow_reads_new_lines_survives_rotation_and_ends_when_told(
    log_file: Path,
) -> None:
    log_file.write_text(cri(T0, "stdout", "before 1") + cri(T0 + 1, "stdout", "before 2"))
    running = True

    async def still_running() -> bool:
        return running

    chunks = read_logs(
        log_file, LogOptions(follow=True, tail_lines=1), still_running, poll_interval=0.01
    )
    seen = Collector(chunks)
    await seen.until(b"before 2\n")
    assert bytes(seen.data) == b"before 2\n"

    append(log_file, cri(T0 + 2, "stdout", "live ", partial=True))
    append(log_file, cri(T0 + 3, "stdout", "line"))
    await seen.until(b"live line\n")

    # rotation: the runtime renames the file, writes the last bit to the old one, and starts anew
    log_file.rename(log_file.with_suffix(".log.1"))
    append(log_file.with_suffix(".log.1"), cri(T0 + 4, "stdout", "late in the old file"))
    log_file.write_text(cri(T0 + 5, "stderr", "in the new file"))
    await seen.until(b"late in the old file\nin the new file\n")

    append(log_file, cri(T0 + 6, "stdout", "last words"))
    running = False
    assert await seen.ended() == (
        b"before 2\nlive line\nlate in the old file\nin the new file\nlast words\n"
    )


async def test_follow_reads_a_truncated_file_from_its_start(log_file: Path) -> None:
    log_file.write_text(cri(T0, "stdout", "a long first line before the truncation"))
    chunks = read_logs(log_file, LogOptions(follow=True), None, poll_interval=0.01)
    seen = Collector(chunks)
    try:
        await seen.until(b"truncation\n")
        log_file.write_text(cri(T0 + 1, "stdout", "after"))
        await seen.until(b"after\n")
    finally:
        seen.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await seen.task


async def test_follow_of_an_exited_container_reads_to_the_end_and_stops(log_file: Path) -> None:
    log_file.write_text(
        cri(T0, "stdout", "only") + cri(T0 + 1, "stdout", "unfinished", partial=True)
    )

    async def exited() -> bool:
        return False

    chunks = read_logs(log_file, LogOptions(follow=True), exited, poll_interval=0.01)
    assert b"".join([c async for c in chunks]) == b"only\nunfinished"


async def test_follow_with_a_limit_stops_at_the_limit(log_file: Path) -> None:
    log_file.write_text(cri(T0, "stdout", "12345"))
    chunks = read_logs(log_file, LogOptions(follow=True, limit_bytes=8), None, poll_interval=0.01)
    seen = Collector(chunks)
    await seen.until(b"12345\n")
    append(log_file, cri(T0 + 1, "stdout", "67890"))
    assert await seen.ended() == b"12345\n67"
