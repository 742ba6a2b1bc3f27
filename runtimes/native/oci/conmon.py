"""conmon, the monitor of each container, as CRI-O runs it: create, exit files, attach, ctl FIFO.

A container is created by starting ``conmon``, which double-forks into a
daemon of its own session, runs ``runc create`` (or another OCI runtime, by
handler), reports the container's pid on a sync pipe, then supervises it:
it copies stdout/stderr into the CRI log file (``k8s-file`` driver), reopens
that file on request (``2 0 0\\n`` written to the bundle's ``ctl`` FIFO), and
when the container exits writes the exit code to ``<exit-dir>/<id>`` and to
``<bundle>/persist/exit``, and an ``oom`` file next to it if the container's
memory cgroup saw an OOM kill. The container therefore outlives this process:
nothing here holds it. Verified on conmon 2.1.6 + runc 1.1.5 (see
``tests/component/test_oci_runtime.py``):

* ``--persist-dir`` must exist, or conmon fails before writing the exit file;
* conmon writes ``oom`` into its working directory too, so it runs in the bundle;
* the exit code of a signalled container is 128 + signal (137 for SIGKILL/OOM);
* conmon's ``oom`` file is best effort: it stops watching the memory cgroup's
  OOM eventfd once the container has exited, so it misses some kills (seen
  here); :meth:`Conmon.read_exit` also asks the cgroup's ``oom_kill`` counter,
  which lives until ``runc delete``, and records what it finds;
* reopening the log truncates: conmon opens ``<log>.tmp`` with O_TRUNC and
  renames it over the log path, so call it only after moving the old file away;
* conmon cannot lower its oom_score_adj without CAP_SYS_RESOURCE; it carries on.

A create that fails half-way is undone as CRI-O's server does it: conmon is
killed and the container deleted from the OCI runtime. When that delete fails
too, it is logged and its reason joins the create's error: the container stays
in the OCI runtime's state, and a later delete of the same handle retries it.

Attach goes through conmon's attach socket, a SOCK_SEQPACKET socket that conmon
binds in the bundle as ``attach`` and reaches through the symlink
``<attach dir>/<id>`` to the bundle (so its path fits a socket address). Each
message from conmon is one byte naming the stream, 2 for stdout and 3 for
stderr (a terminal's output is 2), then the data; what a client sends goes to
the container's stdin when conmon runs with ``--stdin`` (conmon reads at most
32 KiB of a message: the rest would be lost). When a client leaves (or shuts its
writing half) conmon closes the container's stdin, unless it runs with
``--leave-stdin-open``, which it does for a container with stdin but not
stdin_once, as CRI-O runs it. A terminal's size is set by ``1 <height> <width>``
on the ctl FIFO. Verified on conmon 2.1.6
(``tests/component/test_native_streaming.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from minikubelet.errors import (
    CRIError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    NotFound,
    Unavailable,
)
from minikubelet.util import proc
from runtimes.native.oci.handle import (
    EXIT_SIGKILL,
    POLL_INTERVAL,
    ContainerHandle,
    ExitStatus,
    pid_alive,
    read_int,
)
from runtimes.native.oci.runc import Runc, runc_message

log = logging.getLogger(__name__)

REOPEN_LOG_MESSAGE: Final = b"2 0 0\n"  # conmon ctl: REOPEN_LOGS_EVENT, height, width
RESIZE_MESSAGE: Final = "1 {height} {width}\n"  # conmon ctl: WIN_RESIZE_EVENT, height, width
ATTACH_STDOUT: Final = 2  # the first byte of a message from conmon's attach socket
ATTACH_STDERR: Final = 3
_DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Conmon:
    """Containers under conmon: ``exit_dir`` gets its exit files, ``attach_dir`` its sockets."""

    def __init__(
        self,
        runc: Runc,
        *,
        exit_dir: Path,
        attach_dir: Path,
        conmon: str = "conmon",
        log_size_max: int = 0,
        log_level: str = "info",
        command_timeout: float = 30.0,
    ) -> None:
        self.runc = runc
        self.exit_dir = exit_dir
        self.attach_dir = attach_dir
        self.conmon = conmon
        self.log_size_max = log_size_max
        self.log_level = log_level
        self.command_timeout = command_timeout

    def binary(self) -> str:
        path = self.runc.which(self.conmon)
        if path is None:
            raise Unavailable(f"{self.conmon!r} not found: install the conmon package")
        return path

    # -- create ----------------------------------------------------------------------------

    def _prepare(self, handle: ContainerHandle, spec: Mapping[str, Any]) -> None:
        bundle = Path(handle.bundle)
        for d in (bundle, handle.persist_dir, self.exit_dir, self.attach_dir):
            d.mkdir(parents=True, exist_ok=True)
        Path(handle.log_path).parent.mkdir(parents=True, exist_ok=True)
        for stale in (self.exit_dir / handle.id, handle.persist_dir / "exit"):
            stale.unlink(missing_ok=True)
        for stale in (handle.persist_dir / "oom", bundle / "oom"):
            stale.unlink(missing_ok=True)
        tmp = bundle / "config.json.tmp"
        tmp.write_text(json.dumps(spec, indent=1))
        tmp.replace(bundle / "config.json")

    def argv(self, handle: ContainerHandle, conmon: str, runtime: str) -> list[str]:
        argv = [
            conmon,
            "--api-version", "1",
            "--cid", handle.id,
            "--cuuid", handle.id,
            "--name", handle.name or handle.id,
            "--runtime", runtime,
            "--bundle", handle.bundle,
            "--container-pidfile", str(handle.pidfile),
            "--conmon-pidfile", str(handle.conmon_pidfile),
            "--persist-dir", str(handle.persist_dir),
            "--exit-dir", str(self.exit_dir),
            "--socket-dir-path", str(self.attach_dir),
            "--log-path", f"k8s-file:{handle.log_path}",
            "--log-level", self.log_level,
            "--runtime-arg", f"--root={self.runc.state_root(handle.handler)}",
        ]  # fmt: skip
        if self.log_size_max > 0:
            argv += ["--log-size-max", str(self.log_size_max)]
        if handle.terminal:
            argv.append("--terminal")
        if handle.stdin:
            argv.append("--stdin")
            if not handle.stdin_once:
                argv.append("--leave-stdin-open")
        return argv

    async def create(self, handle: ContainerHandle, spec: Mapping[str, Any]) -> int:
        """Write the bundle's config.json and create the container under conmon; its pid.

        The container is created, not started. On failure the OCI runtime's state
        is cleaned up (see :meth:`_abandon`) and the runtime's own message is
        raised as Internal (DeadlineExceeded past the command timeout).
        """
        runtime = self.runc.binary(handle.handler)
        conmon = self.binary()
        await asyncio.to_thread(self._prepare, handle, spec)
        argv = self.argv(handle, conmon, runtime)
        env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH)}
        read_fd, write_fd = os.pipe()
        env["_OCI_SYNCPIPE"] = str(write_fd)
        log.info("create container %s (handler %s) in %s", handle.id, handle.handler, handle.bundle)
        try:
            try:
                # The first conmon exits once it has forked the daemon; stdio closes with it.
                done = await proc.run(
                    argv,
                    env=env,
                    cwd=handle.bundle,  # conmon writes its "oom" file into its working directory
                    pass_fds=(write_fd,),
                    timeout=self.command_timeout,
                    check=False,
                )
            finally:
                os.close(write_fd)
            if done.returncode != 0:
                raise Internal(f"conmon failed ({done.returncode}): {done.output}")
            fd, read_fd = read_fd, -1
            report = await self._read_sync_pipe(fd)
        except BaseException as failure:
            leftover = await self._abandon(handle)
            if isinstance(failure, TimeoutError):
                raise DeadlineExceeded(
                    f"creating container {handle.id} timed out{leftover}"
                ) from None
            if leftover and isinstance(failure, Exception):
                reason = failure.message if isinstance(failure, CRIError) else str(failure)
                raise Internal(f"creating container {handle.id}: {reason}{leftover}") from failure
            raise
        finally:
            if read_fd >= 0:
                os.close(read_fd)
        pid = int(report.get("data", -1))
        if pid <= 0:
            leftover = await self._abandon(handle)
            message = runc_message(str(report.get("message", "")).encode())
            raise Internal(
                f"creating container {handle.id}: {message or 'conmon gave no pid'}{leftover}"
            )
        return pid

    async def _read_sync_pipe(self, fd: int) -> dict[str, Any]:
        """conmon's ``{"data": pid}`` (or ``{"data": -1, "message": ...}``) from the sync pipe."""
        pipe = os.fdopen(fd, "rb", buffering=0)  # owns fd from here on
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
        except BaseException:
            pipe.close()
            raise
        try:
            line = await asyncio.wait_for(reader.readline(), self.command_timeout)
        finally:
            transport.close()
        if not line:
            raise Internal("conmon exited without reporting the container's pid")
        data = json.loads(line)
        if not isinstance(data, dict):
            raise Internal(f"conmon sent {line!r}")
        return data

    async def _abandon(self, handle: ContainerHandle) -> str:
        """Undo a create that failed half-way: kill its conmon, delete the container.

        Returns "" once the OCI runtime no longer has the container; otherwise
        what to add to the create's error. A failed delete is logged, and the
        container stays in the OCI runtime's state, where deleting the same
        handle later retries it (the delete is idempotent).
        """
        with contextlib.suppress(OSError):
            conmon_pid = await asyncio.to_thread(read_int, handle.conmon_pidfile)
            if conmon_pid and await asyncio.to_thread(pid_alive, conmon_pid, handle.id):
                os.kill(conmon_pid, signal.SIGKILL)
        try:
            await self.runc.delete(handle)
        except (CRIError, OSError) as failure:
            reason = failure.message if isinstance(failure, CRIError) else str(failure)
            log.error(
                "container %s: deleting it after its create failed failed too, so the OCI "
                "runtime keeps it until a delete succeeds: %s",
                handle.id,
                reason,
            )
            return f"; deleting the half-created container failed too (it is kept): {reason}"
        return ""

    async def wait_gone(self, handle: ContainerHandle) -> None:
        """Wait for the container's conmon to exit; kill it after the command timeout."""
        pid = await asyncio.to_thread(read_int, handle.conmon_pidfile)
        if not pid:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while await asyncio.to_thread(pid_alive, pid, handle.id):
            if loop.time() > deadline:
                log.warning("conmon %d of container %s outlived it: killing it", pid, handle.id)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return
            await asyncio.sleep(POLL_INTERVAL)

    def forget(self, handle: ContainerHandle) -> None:
        """Remove the exit file and attach link of a deleted container. Blocks."""
        (self.exit_dir / handle.id).unlink(missing_ok=True)
        (self.attach_dir / handle.id).unlink(missing_ok=True)

    # -- exits -----------------------------------------------------------------------------

    def read_exit(
        self, handle: ContainerHandle, oom_kills: Callable[[ContainerHandle], int]
    ) -> ExitStatus | None:
        """How the container ended, from conmon's exit files; None while it runs. Blocks.

        ``oom_kills`` counts the OOM kills of the container's cgroup, for the kills
        conmon misses.
        """
        # conmon writes the bundle's copy first; it also outlives delete, so it is the
        # one whose time we report (the exit dir's copy is for watchers of that dir).
        for path in (handle.persist_dir / "exit", self.exit_dir / handle.id):
            try:
                text = path.read_text().strip()
                finished = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if not text.lstrip("-").isdigit():
                continue  # being written
            code = int(text)
            marker = handle.persist_dir / "oom"
            oom = marker.exists()
            if not oom and oom_kills(handle) > 0:
                # conmon missed it: it quits on the container's exit, and the OOM event
                # may still be unread then. Record it where conmon would have, so the
                # answer survives the cgroup (runc delete removes it).
                marker.touch()
                oom = True
            return ExitStatus(EXIT_SIGKILL if oom else code, finished, oom)
        return None

    # -- attach ----------------------------------------------------------------------------

    def attach_socket_path(self, handle: ContainerHandle) -> Path:
        """conmon's attach socket, by the symlink it makes to the bundle (too long to bind)."""
        return self.attach_dir / handle.id / "attach"

    async def connect_attach(self, handle: ContainerHandle) -> socket.socket:
        """A non-blocking connection to the container's conmon attach socket.

        The path may be longer than a socket address holds: the directory is opened
        with O_PATH and the socket reached as ``/proc/self/fd/<fd>/attach``, as CRI-O
        does. NotFound without the socket, FailedPrecondition once conmon is gone.
        """
        path = self.attach_socket_path(handle)
        try:
            directory = await asyncio.to_thread(
                os.open, path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            )
        except FileNotFoundError:
            raise NotFound(f"container {handle.id} has no attach socket") from None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                sock.setblocking(False)
                await self._connect_unix(sock, f"/proc/self/fd/{directory}/{path.name}")
            except BaseException:
                sock.close()
                raise
        finally:
            os.close(directory)
        return sock

    async def _connect_unix(self, sock: socket.socket, address: str) -> None:
        """A non-blocking connect to a unix socket: EAGAIN there means a full backlog, retry."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while True:
            try:
                sock.connect(address)
                return
            except BlockingIOError:
                if loop.time() > deadline:
                    raise DeadlineExceeded(f"conmon did not accept on {address}") from None
                await asyncio.sleep(POLL_INTERVAL)
            except FileNotFoundError:
                raise NotFound("the container has no attach socket") from None
            except ConnectionRefusedError:
                raise FailedPrecondition("the container is not running (conmon is gone)") from None

    # -- the ctl FIFO ----------------------------------------------------------------------

    def write_ctl(self, handle: ContainerHandle, message: bytes) -> None:
        """One message on conmon's ctl FIFO; NotFound or FailedPrecondition when none can go."""
        try:
            fd = os.open(handle.ctl_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"container {handle.id} has no conmon control FIFO") from None
        except OSError as err:
            if err.errno == errno.ENXIO:  # no reader: conmon is gone with the container
                raise FailedPrecondition(f"container {handle.id} is not running") from None
            raise
        try:
            os.write(fd, message)
        finally:
            os.close(fd)

    async def resize_terminal(self, handle: ContainerHandle, width: int, height: int) -> None:
        """Set the size of the container's terminal (conmon's pty), if conmon still runs it."""
        if not handle.terminal or width <= 0 or height <= 0:
            return
        message = RESIZE_MESSAGE.format(height=height, width=width).encode()
        with contextlib.suppress(NotFound, FailedPrecondition):
            await asyncio.to_thread(self.write_ctl, handle, message)

    def write_reopen(self, handle: ContainerHandle) -> int | None:
        """Ask conmon to reopen the log; the inode of the log file before (None: none). Blocks."""
        try:
            before: int | None = os.stat(handle.log_path).st_ino
        except FileNotFoundError:
            before = None
        self.write_ctl(handle, REOPEN_LOG_MESSAGE)
        return before
