"""Copy a container's output from dockerd into its CRI-format log file.

dockerd keeps each container's output (json-file driver); a :class:`LogCopier`
follows ``GET /containers/{id}/logs?follow=1&timestamps=1`` and appends every
message to the file the kubelet reads, as ``<time> <stream> <P|F> <text>``.
Each message of the log driver arrives as one frame, stamped with the time
dockerd read it; a message without a trailing newline is a piece of a longer
line (tag ``P``) unless it is shorter than the driver's 16 KiB buffer, which
only happens for the last output of a process (tag ``F``, as containerd writes it).

The two streams are stamped by two goroutines of dockerd and written to its file in
the order they got its lock, so a stderr message may follow a stdout message stamped
a moment later: every message of the stream is written, in the order dockerd keeps
them, whatever its time.

Where to resume comes from the file itself: the newest time among its last lines, and
how many lines carry it. So a runtime server that restarts, or a dockerd that comes
back, continues where the file ends, without a duplicate and without a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from minikubelet.errors import CRIError, NotFound, Unavailable
from minikubelet.logs import crilog
from runtimes.docker.client import STDERR, DockerClient, docker_time_ns

log = logging.getLogger(__name__)

#: dockerd's log copier cuts lines at this size (daemon/logger/copier.go).
DRIVER_BUFFER: Final = 16 * 1024
_TAIL_BYTES: Final = 64 * 1024
_RETRY_MIN, _RETRY_MAX = 0.2, 5.0
_TTY_LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\S+) (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Position:
    """The newest time written, and how many of the lines written carry that time."""

    last_ns: int = 0
    count: int = 0

    @property
    def since(self) -> str:
        """dockerd's ``since`` (inclusive): ``seconds.nanoseconds``."""
        if not self.last_ns:
            return "0"
        seconds, nanos = divmod(self.last_ns, 1_000_000_000)
        return f"{seconds}.{nanos:09d}"

    def after(self, ns: int) -> Position:
        if ns == self.last_ns:
            return Position(ns, self.count + 1)
        # a line stamped before the newest one is behind ``since``: no resume repeats it
        return Position(ns, 1) if ns > self.last_ns else self


def position_in(text: str) -> Position:
    """Where a CRI log file's content ends (lines that do not parse are skipped)."""
    position = Position()
    for raw in text.splitlines():
        try:
            ns = docker_time_ns(crilog.parse_line(raw).timestamp)
        except ValueError:
            continue
        position = position.after(ns)
    return position


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        data = f.read()
    if size > _TAIL_BYTES:
        data = data.partition(b"\n")[2]  # the first line is probably cut
    return data.decode(errors="replace")


def read_position(path: Path) -> Position:
    """Where to resume: the log file, or when it was just rotated, the newest rotated one."""
    candidates = [path]
    with contextlib.suppress(OSError):
        rotated = [
            p for p in path.parent.glob(path.name + ".*") if not p.name.endswith((".gz", ".tmp"))
        ]
        candidates += sorted(rotated, key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in candidates:
        try:
            position = position_in(_tail(candidate))
        except OSError:
            continue
        if position.count:
            return position
    return Position()


def format_frames(
    frames: list[tuple[int, bytes]], position: Position, skip: int
) -> tuple[str, Position, int]:
    """CRI lines for dockerd's log frames (non-TTY) not yet written; the new position.

    ``skip`` lines stamped ``position.last_ns`` are already in the file (dockerd's
    ``since`` is inclusive, and sends nothing older). Every other frame is written, one
    stamped before the newest written too: dockerd's file is not in time order.
    """
    out: list[str] = []
    for stream, payload in frames:
        stamp, sep, body = payload.partition(b" ")
        if not sep:
            continue
        try:
            ns = docker_time_ns(stamp.decode())
        except ValueError:
            continue
        if ns == position.last_ns and skip > 0:
            skip -= 1
            continue
        full = body.endswith(b"\n")
        text = body[:-1] if full else body
        partial = not full and len(body) >= DRIVER_BUFFER
        name: crilog.Stream = "stderr" if stream == STDERR else "stdout"
        message = text.decode(errors="replace").replace("\n", " ")
        out.append(crilog.format_line(ns, name, message, partial=partial))
        position = position.after(ns)
    return "".join(out), position, skip


class _TtyLines:
    """Timestamped lines out of a raw (TTY) log stream, as frames for :func:`format_frames`."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, frames: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        data = self._rest + b"".join(payload for _, payload in frames)
        *lines, self._rest = data.split(b"\n")
        out = []
        for line in lines:
            match = _TTY_LINE.match(line.rstrip(b"\r"))
            if match:
                out.append((1, match.group(1) + b" " + match.group(2) + b"\n"))
        return out


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


def _write(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class LogCopier:
    """Follows one container's output into its CRI log file until the container is done."""

    def __init__(self, client: DockerClient, container_id: str, path: str, *, tty: bool) -> None:
        self._client = client
        self.container_id = container_id
        self.path = Path(path)
        self.tty = tty
        self.done = asyncio.Event()
        self._fd: int | None = None
        self._lock = asyncio.Lock()
        self._position = Position()

    async def run(self) -> None:
        try:
            await self._copy()
        except OSError as exc:
            log.warning(
                "container %s: cannot write its log %s: %s", self.container_id[:13], self.path, exc
            )
        finally:
            self.done.set()
            async with self._lock:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    async def reopen(self) -> None:
        """Write to a fresh file at the path from now on (the old one was rotated away)."""
        async with self._lock:
            old, self._fd = self._fd, await asyncio.to_thread(_open, self.path)
            if old is not None:
                os.close(old)

    async def _copy(self) -> None:
        self._position = await asyncio.to_thread(read_position, self.path)
        async with self._lock:
            if self._fd is None:
                self._fd = await asyncio.to_thread(_open, self.path)
        delay = _RETRY_MIN
        while True:
            try:
                await self._stream(follow=True)
                info = await self._client.inspect_container(self.container_id)
                if not (info.get("State") or {}).get("Running"):
                    await self._stream(follow=False)  # whatever came after the stream ended
                    return
            except NotFound:
                return  # removed: nothing more to copy
            except Unavailable as exc:
                log.debug(
                    "container %s: log copy waits for dockerd: %s", self.container_id[:13], exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            except CRIError as exc:
                log.warning("container %s: log copy: %s", self.container_id[:13], exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            delay = _RETRY_MIN

    async def _stream(self, *, follow: bool) -> None:
        skip = self._position.count
        tty = _TtyLines() if self.tty else None
        async for frames in self._client.logs(
            self.container_id, tty=self.tty, since=self._position.since, follow=follow
        ):
            batch = tty.feed(frames) if tty is not None else frames
            text, self._position, skip = format_frames(batch, self._position, skip)
            if text:
                async with self._lock:
                    if self._fd is not None:
                        await asyncio.to_thread(_write, self._fd, text.encode())
