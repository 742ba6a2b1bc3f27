"""Exec and attach streams on dockerd: the Docker runtime's :class:`~runtimes.base.model.StreamIO`.

Both ride a hijacked connection to dockerd (:meth:`DockerClient.hijack`): output
arrives as stdcopy frames (8-byte header: stream, 3 pad bytes, big-endian size)
without a TTY and as raw terminal bytes with one; what is written goes to the
process's stdin.

What dockerd does that shapes this module (dockerd 20.10, API 1.41):

* ``POST /exec/{id}/start`` answers ``101 UPGRADED`` *before* the process runs, so
  :meth:`DockerExec.start` waits until the exec inspects as running (or ended): only
  then is a resize valid (dockerd holds a resize for up to 10 s, then fails it) and
  a close sure to find the process to kill. A command that cannot start is reported
  inside the stream (``OCI runtime exec failed: ...``) with exit code 126.
* Half-closing the connection ends stdin: without a TTY dockerd closes the exec's
  stdin (the process reads EOF). With a TTY it would instead end the *output* and
  leave the process running on its terminal, so the end of input on a TTY is the
  terminal's end-of-file character, as a keyboard's Ctrl-D sends it.
* Closing the connection does not stop an exec, and Docker has no API to kill one:
  :meth:`DockerExec.close` SIGKILLs its process tree, found from the PID dockerd
  reports (a host PID: this server runs as root in the host's PID namespace) once
  ``/proc`` confirms it is in the container's cgroup.
* Attach replays nothing (no ``logs=1``). Half-closing an attach ends its output
  unless the container is ``StdinOnce`` (then the container's stdin closes), so
  :meth:`DockerAttach.close_stdin` half-closes only for such a container.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

from minikubelet.errors import CRIError, DeadlineExceeded, FailedPrecondition, NotFound
from runtimes.base import model as m
from runtimes.docker.client import SYSTEMERR, DockerClient, ExecInspect, FrameDecoder

log = logging.getLogger(__name__)

READ_SIZE: Final = 64 * 1024
START_TIMEOUT: Final = 30.0  # from 101 UPGRADED until the exec runs (or failed to start)
UNSTARTED_GRACE: Final = 2.0  # how long a close waits for an exec still being started
KILL_SETTLE_TIMEOUT: Final = 5.0  # how long a close waits for dockerd to see a killed exec end
TERMINAL_EOF: Final = b"\x04"  # VEOF, Ctrl-D
_POLL_FIRST: Final = 0.005
_POLL_MAX: Final = 0.2


def _in_cgroup_of(pid: int, container_id: str) -> bool:
    # procfs: answered from kernel memory, never waits on a disk
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents first (from ``/proc/*/task/*/children``)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop(0)
        if current in found:
            continue
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                todo.extend(int(child) for child in children.split())
    return found


def kill_process_tree(pid: int, container_id: str) -> bool:
    """SIGKILL ``pid``, its process group and its descendants, if it is in the container.

    An exec's process leads a session and process group of its own (runc makes it
    so, with a TTY or without), so its group holds what it started, bar processes
    that made groups of their own (a shell's jobs): those are found as descendants.
    Nothing is killed that is not in the container's cgroup. True if ``pid`` was.
    """
    if pid <= 0 or not _in_cgroup_of(pid, container_id):
        return False
    victims = [p for p in _process_tree(pid) if p == pid or _in_cgroup_of(p, container_id)]
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        leads_group = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if leads_group:
            os.killpg(pid, signal.SIGKILL)
    for victim in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)
    return True


def _settled(info: ExecInspect) -> bool:
    """Whether an exec runs with a known PID or has ended.

    While dockerd starts one it inspects first as not running without an exit
    code, then as running with PID 0.
    """
    if info.get("Running"):
        return bool(info.get("Pid"))
    return info.get("ExitCode") is not None


class _HijackedStream:
    """What exec and attach share: reading, writing and closing the hijacked connection."""

    def __init__(self, *, tty: bool, stdin: bool) -> None:
        self.tty = tty
        self.stdin = stdin
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder()
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self._output_ended = asyncio.Event()
        self._stdin_closed = not stdin
        self._closing: asyncio.Future[None] | None = None

    def _connected(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._reader, self._writer = connection

    @property
    def closed(self) -> bool:
        return self._closing is not None

    async def read(self) -> tuple[int, bytes] | None:
        if self._closing is not None:
            self._pending.clear()  # closed: what was not read is dropped
            return None
        while not self._pending:
            if self._output_ended.is_set() or self._reader is None:
                return None
            try:
                data = await self._reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                if self._decoder.pending:
                    log.debug("dropping %d bytes of a truncated frame", self._decoder.pending)
                self._output_ended.set()
                return None
            if self.tty:
                return m.STDOUT, data
            for stream, payload in self._decoder.feed(data):
                if not payload:
                    continue
                if stream == m.STDOUT:
                    self._pending.append((m.STDOUT, payload))
                elif stream in (m.STDERR, SYSTEMERR):
                    self._pending.append((m.STDERR, payload))
        return self._pending.popleft()

    async def write_stdin(self, data: bytes) -> None:
        writer = self._writer
        if self._stdin_closed or writer is None or not data:
            return
        if writer.is_closing():
            return
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            # the process ended (or dockerd dropped the stream): its input goes nowhere
            log.debug("stdin write dropped: %s", exc)
            self._stdin_closed = True

    def _half_close(self) -> None:
        writer = self._writer
        if writer is None or writer.is_closing() or not writer.can_write_eof():
            return
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write_eof()

    async def _drop_connection(self) -> None:
        writer, self._writer = self._writer, None
        self._output_ended.set()
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    def _ended(self) -> bool:
        """Whether the process is known to have ended (a resize may then fail)."""
        return False

    async def _resize(
        self, resize: Callable[[], Awaitable[None]], what: str, width: int, height: int
    ) -> None:
        """Call ``resize`` (an Engine API call) unless it cannot apply; a race with the
        process's end is not an error."""
        if not self.tty or self.closed or width <= 0 or height <= 0:
            return
        try:
            await resize()
        except (NotFound, FailedPrecondition) as exc:
            log.debug("%s ended before its resize: %s", what, exc.message)
        except CRIError as exc:
            if self._ended() or "not running" in exc.message:
                return
            log.warning("resizing %s: %s", what, exc.message)

    async def _release(self) -> None:
        await self._drop_connection()

    async def close(self) -> None:
        """Release everything; idempotent, and carried through even if the caller is cancelled."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._release())
        await asyncio.shield(self._closing)


class DockerExec(_HijackedStream):
    """A process started by ``docker exec``, attached."""

    def __init__(
        self, client: DockerClient, container_id: str, exec_id: str, *, tty: bool, stdin: bool
    ) -> None:
        super().__init__(tty=tty, stdin=stdin)
        self._client = client
        self.container_id = container_id
        self.exec_id = exec_id
        self.pid = 0
        self._exit_code: int | None = None

    @classmethod
    async def start(
        cls,
        client: DockerClient,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> DockerExec:
        """Create and start the exec; returns once its process runs (or failed to start)."""
        exec_id = await client.create_exec(container_id, cmd, tty=tty, stdin=stdin)
        stream = cls(client, container_id, exec_id, tty=tty, stdin=stdin)
        try:
            stream._connected(await client.start_exec_stream(exec_id, tty=tty))
            await stream._until_started()
        except BaseException:
            # the start request may have reached dockerd: nothing may run on unseen
            await stream.close()
            raise
        return stream

    async def _until_started(self) -> None:
        info = await self._client.inspect_exec(self.exec_id)
        info = await self._poll_started(START_TIMEOUT, info)
        if not _settled(info):
            raise DeadlineExceeded(
                f"exec {self.exec_id[:13]} in container {self.container_id[:13]} did not start"
                f" within {START_TIMEOUT:.0f}s"
            )
        if info.get("Running"):
            self.pid = int(info.get("Pid") or 0)
        else:
            self._exit_code = int(info.get("ExitCode") or 0)

    async def close_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self.tty:
            # a half-close would end the output and leave the process on its terminal
            writer = self._writer
            if writer is not None and not writer.is_closing():
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(TERMINAL_EOF)
                    await writer.drain()
        else:
            self._half_close()

    async def resize(self, width: int, height: int) -> None:
        await self._resize(
            lambda: self._client.resize_exec(self.exec_id, width, height),
            f"exec {self.exec_id[:13]}",
            width,
            height,
        )

    def _ended(self) -> bool:
        return self._exit_code is not None

    async def _poll_exit(self, timeout: float | None) -> int | None:
        """The exit code once dockerd reports the exec ended; None if ``timeout`` passes first."""
        if self._exit_code is not None:
            return self._exit_code
        delay = _POLL_FIRST
        try:
            async with asyncio.timeout(timeout):
                while True:
                    info = await self._client.inspect_exec(self.exec_id)
                    if not info.get("Running") and info.get("ExitCode") is not None:
                        self._exit_code = int(info.get("ExitCode") or 0)
                        return self._exit_code
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX)
        except TimeoutError:
            return None

    async def wait(self) -> int:
        code = await self._poll_exit(None)
        assert code is not None
        return code

    async def _release(self) -> None:
        try:
            if self._exit_code is None:
                await self._kill()
        finally:
            await self._drop_connection()

    async def _kill(self) -> None:
        try:
            info = await self._client.inspect_exec(self.exec_id)
            if not _settled(info):
                # still being started (a close racing the start): it may yet come up
                info = await self._poll_started(UNSTARTED_GRACE, info)
        except CRIError as exc:
            log.debug("exec %s: %s", self.exec_id[:13], exc.message)
            return
        if not info.get("Running"):
            if info.get("ExitCode") is not None:
                self._exit_code = int(info.get("ExitCode") or 0)
            return
        pid = int(info.get("Pid") or 0)
        if not kill_process_tree(pid, self.container_id):
            if not _exists(pid):
                return  # it ended meanwhile
            log.warning(
                "exec %s still runs as PID %d, not in container %s here: left running",
                self.exec_id[:13],
                pid,
                self.container_id[:13],
            )
            return
        with contextlib.suppress(CRIError):
            await self._poll_exit(KILL_SETTLE_TIMEOUT)

    async def _poll_started(self, timeout: float, info: ExecInspect) -> ExecInspect:
        """The exec's state once it runs with a PID or ended (or as it is after ``timeout``)."""
        delay = _POLL_FIRST
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not _settled(info):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX)
                    info = await self._client.inspect_exec(self.exec_id)
        return info


class DockerAttach(_HijackedStream):
    """The stdio of a container's own process (from now on)."""

    def __init__(
        self, client: DockerClient, container_id: str, *, tty: bool, stdin: bool, stdin_once: bool
    ) -> None:
        super().__init__(tty=tty, stdin=stdin)
        self._client = client
        self.container_id = container_id
        self.stdin_once = stdin_once

    @classmethod
    async def open(
        cls,
        client: DockerClient,
        container_id: str,
        *,
        tty: bool,
        stdin: bool,
        stdin_once: bool = False,
    ) -> DockerAttach:
        """``tty``/``stdin``: as the container was created (its output framing, its stdin)."""
        stream = cls(client, container_id, tty=tty, stdin=stdin, stdin_once=stdin_once)
        stream._connected(await client.attach_container(container_id, stdin=stdin))
        return stream

    async def close_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self.stdin_once and not self.tty:
            self._half_close()  # dockerd closes the container's stdin: it reads EOF
        # otherwise the stdin is the container's, kept open for the next attach: a
        # half-close would only make dockerd end this attach's output

    async def resize(self, width: int, height: int) -> None:
        await self._resize(
            lambda: self._client.resize_container(self.container_id, width, height),
            f"container {self.container_id[:13]}",
            width,
            height,
        )

    async def wait(self) -> int:
        await self._output_ended.wait()
        return 0
