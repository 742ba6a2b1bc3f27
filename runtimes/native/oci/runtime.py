"""The low-level runtime under conmon, as CRI-O drives it: every subprocess of the container half.

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
  here); :meth:`OCIRuntime.exit_status` also reads the cgroup's ``oom_kill``
  counter, which lives until ``runc delete``, and records what it finds;
* reopening the log truncates: conmon opens ``<log>.tmp`` with O_TRUNC and
  renames it over the log path, so call it only after moving the old file away;
* conmon cannot lower its oom_score_adj without CAP_SYS_RESOURCE; it carries on.

ExecSync does not go through conmon: ``runc exec`` runs the command with the
container's process settings and our pipes, which is all ExecSync needs (CRI-O
uses ``conmon --exec`` for the same). On a timeout the exec'd process is killed
with its process group (runc makes it a session leader) before we answer
DeadlineExceeded, so nothing is left behind in the container. Streaming exec
(:meth:`OCIRuntime.spawn_exec`) starts the same ``runc exec`` with stdio of the
caller's choosing and kills it the same way. Verified on runc 1.1.5: ``runc exec``
exits with the command's exit code, 128 + N when a signal N killed it (137 for
SIGKILL, as ``kubectl exec`` reports it), and 255 when it could not start it
(its message on its stderr).

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

Nothing here keeps per-container state: the server layer keeps a
:class:`ContainerHandle` per container (persisted) and passes it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from minikubelet.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from runtimes.base.core import exit_reason
from runtimes.base.model import ExecResult
from runtimes.native.oci import cgroups

log = logging.getLogger(__name__)

DEFAULT_HANDLERS: Final[Mapping[str, str]] = {"runc": "runc", "crun": "crun"}
REOPEN_LOG_MESSAGE: Final = b"2 0 0\n"  # conmon ctl: REOPEN_LOGS_EVENT, height, width
RESIZE_MESSAGE: Final = "1 {height} {width}\n"  # conmon ctl: WIN_RESIZE_EVENT, height, width
ATTACH_STDOUT: Final = 2  # the first byte of a message from conmon's attach socket
ATTACH_STDERR: Final = 3
EXIT_SIGKILL: Final = 137
POLL_INTERVAL: Final = 0.02
_RUNC_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
_DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class ContainerHandle:
    """What the server keeps per container to drive it; plain strings, so it persists as JSON."""

    id: str
    bundle: str  # holds config.json, conmon's ctl FIFO and pid files, persist/
    log_path: str  # the CRI log file conmon writes
    handler: str = ""  # "" = the runtime's default handler
    cgroups_path: str = ""  # linux.cgroupsPath of the spec
    name: str = ""
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False  # conmon closes stdin when the first attached client leaves

    @classmethod
    def from_spec(
        cls,
        *,
        id: str,
        bundle: str,
        log_path: str,
        spec: Mapping[str, Any],
        handler: str = "",
        name: str = "",
        stdin: bool = False,
        stdin_once: bool = False,
    ) -> ContainerHandle:
        return cls(
            id=id,
            bundle=bundle,
            log_path=log_path,
            handler=handler,
            cgroups_path=str(spec.get("linux", {}).get("cgroupsPath", "")),
            name=name,
            terminal=bool(spec.get("process", {}).get("terminal", False)),
            stdin=stdin,
            stdin_once=stdin_once,
        )

    @property
    def pidfile(self) -> Path:
        return Path(self.bundle, "pidfile")

    @property
    def conmon_pidfile(self) -> Path:
        return Path(self.bundle, "conmon.pid")

    @property
    def persist_dir(self) -> Path:
        return Path(self.bundle, "persist")

    @property
    def ctl_fifo(self) -> Path:
        return Path(self.bundle, "ctl")

    def exec_pidfile(self) -> Path:
        """A new pid file for one ``runc exec`` (the caller removes it)."""
        return Path(self.bundle, f"exec-{secrets.token_hex(6)}.pid")


@dataclass(frozen=True, slots=True)
class RuntimeCheck:
    """Whether a handler can run containers here, for the runtime's Status conditions."""

    handler: str
    binary: str
    ok: bool
    version: str = ""
    conmon_version: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class OCIState:
    """``runc state``: status is created, running, paused or stopped."""

    id: str
    status: str
    pid: int
    bundle: str
    created: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OCIState:
        return cls(
            id=str(data.get("id", "")),
            status=str(data.get("status", "")),
            pid=int(data.get("pid") or 0),
            bundle=str(data.get("bundle", "")),
            created=str(data.get("created", "")),
        )


@dataclass(frozen=True, slots=True)
class ExitStatus:
    exit_code: int
    finished_at: int  # ns since the epoch: when conmon wrote the exit file
    oom_killed: bool = False

    @property
    def reason(self) -> str:
        """The CRI container status reason, as CRI-O gives it."""
        return exit_reason(self.exit_code, oom_killed=self.oom_killed)


class ExecProcess(Protocol):
    """A running ``runc exec`` as :meth:`OCIRuntime.kill_exec` needs it (a Process fits)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


_P = TypeVar("_P", bound=asyncio.SubprocessProtocol)


def runc_message(stderr: bytes) -> str:
    """The error an OCI runtime printed: runc's logrus ``msg="..."``, else the text."""
    text = stderr.decode(errors="replace")
    found: list[str] = _RUNC_MSG.findall(text)
    if found:
        return found[-1].replace('\\"', '"').replace("\\\\", "\\")
    return text.strip()


def _gone(message: str) -> bool:
    """Whether an OCI runtime's error says it does not know the container (runc, crun)."""
    return "does not exist" in message or "No such file or directory" in message


def _pid_alive(pid: int, needle: str) -> bool:
    """Whether ``pid`` runs (not a zombie) with ``needle`` in its command line."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rpartition(")")[2].split()[:1]
    if state == ["Z"]:
        return False
    return needle.encode() in cmdline


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


class OCIRuntime:
    """runc (or another OCI runtime, by handler) under conmon.

    ``root`` holds the runtime's own state: ``state/<handler>`` (the OCI
    runtime's ``--root``), ``exits`` (conmon's exit files) and ``attach``
    (conmon's attach sockets). No side effects until a method is called.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str],
        handlers: Mapping[str, str] = DEFAULT_HANDLERS,
        default_handler: str = "runc",
        conmon: str = "conmon",
        log_size_max: int = 0,
        command_timeout: float = 30.0,
        conmon_log_level: str = "info",
    ) -> None:
        self.root = Path(root)
        self.handlers = dict(handlers)
        self.default_handler = default_handler
        self.conmon = conmon
        self.log_size_max = log_size_max
        self.command_timeout = command_timeout
        self.conmon_log_level = conmon_log_level
        self.exit_dir = self.root / "exits"
        self.attach_dir = self.root / "attach"
        self._layout: cgroups.CgroupLayout | None = None
        self._own_cgroup: dict[str, str] | None = None
        self._resolved: dict[str, str] = {}

    # -- handlers and binaries -------------------------------------------------------------

    def handler_name(self, handler: str) -> str:
        name = handler or self.default_handler
        if name not in self.handlers:
            raise InvalidArgument(f"unknown runtime handler {name!r}")
        return name

    def state_root(self, handler: str = "") -> Path:
        return self.root / "state" / self.handler_name(handler)

    def _which(self, program: str) -> str | None:
        """An absolute path (conmon execs the runtime without a PATH search); cached once found."""
        found = self._resolved.get(program)
        if found is None:
            path = shutil.which(program)
            if path is None:
                return None
            found = self._resolved[program] = os.path.abspath(path)
        return found

    def binary(self, handler: str = "") -> str:
        name = self.handler_name(handler)
        path = self._which(self.handlers[name])
        if path is None:
            raise Unavailable(f"OCI runtime {self.handlers[name]!r} (handler {name}) not found")
        return path

    def _conmon_binary(self) -> str:
        path = self._which(self.conmon)
        if path is None:
            raise Unavailable(f"{self.conmon!r} not found: install the conmon package")
        return path

    # -- subprocesses ----------------------------------------------------------------------

    async def _run(
        self, argv: Sequence[str], *, timeout: float | None = None
    ) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout or self.command_timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out, err

    async def _runc(self, handler: str, *args: str) -> tuple[int, str, bytes]:
        argv = [self.binary(handler), "--root", str(self.state_root(handler)), *args]
        try:
            rc, out, err = await self._run(argv)
        except TimeoutError:
            raise DeadlineExceeded(f"{argv[0]} {args[0]} timed out") from None
        return rc, runc_message(err) if rc else "", out

    # -- status ----------------------------------------------------------------------------

    async def check(self, handler: str = "") -> RuntimeCheck:
        """Can ``handler`` run containers here? Never raises: the answer says why not."""
        name = handler or self.default_handler
        if name not in self.handlers:
            return RuntimeCheck(name, "", False, message=f"unknown runtime handler {name!r}")
        path = self._which(self.handlers[name])
        if path is None:
            return RuntimeCheck(name, self.handlers[name], False, message="not installed")
        conmon = self._which(self.conmon)
        if conmon is None:
            return RuntimeCheck(name, path, False, message=f"{self.conmon} not installed")
        try:
            rc, out, err = await self._run([path, "--version"])
            _, cout, _ = await self._run([conmon, "--version"])
        except (OSError, TimeoutError) as failure:
            return RuntimeCheck(name, path, False, message=f"cannot run: {failure!r}")
        version = out.decode(errors="replace").splitlines()[0] if out.strip() else ""
        if rc != 0:
            return RuntimeCheck(name, path, False, version, message=runc_message(err))
        conmon_version = cout.decode(errors="replace").splitlines()[0] if cout.strip() else ""
        if Path(path).name.startswith("crun"):
            layout = await self._cgroup_layout()
            controllers = await asyncio.to_thread(cgroups.read_unified_controllers, layout)
            refusal = cgroups.crun_refusal(layout, controllers)
            if refusal:
                log.warning("handler %s unusable: %s", name, refusal)
                return RuntimeCheck(name, path, False, version, conmon_version, refusal)
        return RuntimeCheck(name, path, True, version, conmon_version)

    # -- lifecycle -------------------------------------------------------------------------

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

    def _conmon_argv(self, handle: ContainerHandle, conmon: str, runtime: str) -> list[str]:
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
            "--log-level", self.conmon_log_level,
            "--runtime-arg", f"--root={self.state_root(handle.handler)}",
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

        The container is created, not started. On failure nothing is left in the
        OCI runtime's state, and the runtime's own message is raised as Internal.
        """
        runtime = self.binary(handle.handler)
        conmon = self._conmon_binary()
        await asyncio.to_thread(self._prepare, handle, spec)
        argv = self._conmon_argv(handle, conmon, runtime)
        env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH)}
        read_fd, write_fd = os.pipe()
        env["_OCI_SYNCPIPE"] = str(write_fd)
        log.info("create container %s (handler %s) in %s", handle.id, handle.handler, handle.bundle)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                env=env,
                cwd=handle.bundle,  # conmon writes its "oom" file into its working directory
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            # The first conmon exits once it has forked the daemon; stdio closes with it.
            _, err = await asyncio.wait_for(proc.communicate(), self.command_timeout)
            if proc.returncode != 0:
                raise Internal(f"conmon failed ({proc.returncode}): {err.decode().strip()}")
            fd, read_fd = read_fd, -1
            report = await self._read_sync_pipe(fd)
        except BaseException as failure:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            await self._abandon(handle)
            if isinstance(failure, TimeoutError):
                raise DeadlineExceeded(f"creating container {handle.id} timed out") from None
            raise
        finally:
            if read_fd >= 0:
                os.close(read_fd)
        pid = int(report.get("data", -1))
        if pid <= 0:
            await self._abandon(handle)
            message = runc_message(str(report.get("message", "")).encode())
            raise Internal(f"creating container {handle.id}: {message or 'conmon gave no pid'}")
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

    async def _abandon(self, handle: ContainerHandle) -> None:
        """Best-effort cleanup of a create that failed half-way."""
        with contextlib.suppress(Exception):
            conmon_pid = await asyncio.to_thread(_read_int, handle.conmon_pidfile)
            if conmon_pid and await asyncio.to_thread(_pid_alive, conmon_pid, handle.id):
                os.kill(conmon_pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await self._runc(handle.handler, "delete", "--force", handle.id)

    async def start(self, handle: ContainerHandle) -> None:
        rc, message, _ = await self._runc(handle.handler, "start", handle.id)
        if rc == 0:
            log.info("started container %s", handle.id)
            return
        if _gone(message):
            raise NotFound(f"container {handle.id}: {message}")
        if "cannot start" in message:
            raise FailedPrecondition(f"container {handle.id}: {message}")
        raise Internal(f"starting container {handle.id}: {message}")

    async def state(self, handle: ContainerHandle) -> OCIState | None:
        """The OCI runtime's view of the container; None when it does not know it."""
        rc, message, out = await self._runc(handle.handler, "state", handle.id)
        if rc == 0:
            return OCIState.from_json(json.loads(out))
        if _gone(message):
            return None
        raise Internal(f"state of container {handle.id}: {message}")

    async def list_containers(self, handler: str = "") -> list[OCIState]:
        """Every container the handler's state root knows (for recovery after a restart)."""
        rc, message, out = await self._runc(handler, "list", "--format", "json")
        if rc != 0:
            raise Internal(f"listing containers: {message}")
        return [OCIState.from_json(c) for c in json.loads(out or b"null") or []]

    async def kill(
        self,
        handle: ContainerHandle,
        sig: int = signal.SIGTERM,
        *,
        all_processes: bool = False,
    ) -> bool:
        """Signal the container (every process of its cgroup with ``all_processes``).

        False when it is not running (already stopped, or unknown).
        """
        args = ["kill", *(["--all"] if all_processes else []), handle.id, str(int(sig))]
        rc, message, _ = await self._runc(handle.handler, *args)
        if rc == 0:
            log.info("signalled container %s with %s", handle.id, signal.Signals(sig).name)
            return True
        if "not running" in message or _gone(message):
            return False
        raise Internal(f"killing container {handle.id}: {message}")

    async def stop(
        self, handle: ContainerHandle, timeout: float, *, sig: int = signal.SIGTERM
    ) -> ExitStatus:
        """``sig`` (the image's StopSignal), ``timeout`` seconds of grace, then SIGKILL."""
        done = await self.exit_status(handle)
        if done is not None:
            return done
        if timeout > 0 and await self.kill(handle, sig):
            with contextlib.suppress(DeadlineExceeded):
                return await self.wait_exit(handle, timeout)
        await self.kill(handle, signal.SIGKILL, all_processes=True)
        return await self.wait_exit(handle, self.command_timeout)

    async def delete(self, handle: ContainerHandle) -> None:
        """Remove the container from the OCI runtime (killing it if it runs), wait for its
        conmon to finish, and drop the exit file. Idempotent. The bundle stays: it is
        the caller's directory."""
        rc, message, _ = await self._runc(handle.handler, "delete", "--force", handle.id)
        if rc != 0 and not _gone(message):
            raise Internal(f"deleting container {handle.id}: {message}")
        await self._wait_conmon_gone(handle)
        await asyncio.to_thread((self.exit_dir / handle.id).unlink, missing_ok=True)
        await asyncio.to_thread((self.attach_dir / handle.id).unlink, missing_ok=True)
        log.info("deleted container %s", handle.id)

    async def _wait_conmon_gone(self, handle: ContainerHandle) -> None:
        pid = await asyncio.to_thread(_read_int, handle.conmon_pidfile)
        if not pid:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while await asyncio.to_thread(_pid_alive, pid, handle.id):
            if loop.time() > deadline:
                log.warning("conmon %d of container %s outlived it: killing it", pid, handle.id)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return
            await asyncio.sleep(POLL_INTERVAL)

    # -- exits -----------------------------------------------------------------------------

    def _read_exit(self, handle: ContainerHandle) -> ExitStatus | None:
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
            if not oom and self._cgroup_oom_kills(handle) > 0:
                # conmon missed it: it quits on the container's exit, and the OOM event
                # may still be unread then. Record it where conmon would have, so the
                # answer survives the cgroup (runc delete removes it).
                marker.touch()
                oom = True
            return ExitStatus(EXIT_SIGKILL if oom else code, finished, oom)
        return None

    def _cgroup_oom_kills(self, handle: ContainerHandle) -> int:
        """OOM kills the container's memory cgroup counted (it lives until delete)."""
        if not handle.cgroups_path or self._layout is None or self._own_cgroup is None:
            return 0
        dirs = cgroups.cgroup_dirs(self._layout, handle.cgroups_path, self._own_cgroup)
        stats = cgroups.read_stats(dirs, 0)
        return stats.oom_kills if stats is not None else 0

    async def exit_status(self, handle: ContainerHandle) -> ExitStatus | None:
        """How the container ended (None while it has not): exit code, time, OOM kill."""
        await self._cgroup_layout()
        return await asyncio.to_thread(self._read_exit, handle)

    async def wait_exit(self, handle: ContainerHandle, timeout: float) -> ExitStatus:
        """Poll for the exit file until ``timeout`` seconds pass (DeadlineExceeded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.exit_status(handle)
            if status is not None:
                return status
            if loop.time() >= deadline:
                raise DeadlineExceeded(f"container {handle.id} did not exit within {timeout}s")
            await asyncio.sleep(POLL_INTERVAL)

    # -- exec ------------------------------------------------------------------------------

    async def exec_sync(
        self, handle: ContainerHandle, cmd: Sequence[str], timeout: float
    ) -> ExecResult:
        """Run ``cmd`` in the running container; its output and exit code.

        ``timeout`` <= 0 waits for ever. On a timeout the command and its process
        group are killed and DeadlineExceeded is raised.
        """
        if not cmd:
            raise InvalidArgument("exec: empty command")
        current = await self.state(handle)
        if current is None:
            raise NotFound(f"container {handle.id} not found")
        if current.status != "running":
            raise FailedPrecondition(f"container {handle.id} is {current.status}, not running")
        pidfile = handle.exec_pidfile()
        argv = self.exec_argv(handle, cmd, pidfile)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout if timeout > 0 else None)
        except TimeoutError:
            await self.kill_exec(proc, pidfile)
            raise DeadlineExceeded(f"exec in {handle.id} timed out after {timeout}s") from None
        except BaseException:
            await self.kill_exec(proc, pidfile)
            raise
        finally:
            await asyncio.to_thread(pidfile.unlink, missing_ok=True)
        assert proc.returncode is not None
        return ExecResult(stdout=out, stderr=err, exit_code=proc.returncode)

    def exec_argv(
        self, handle: ContainerHandle, cmd: Sequence[str], pidfile: Path, *, tty: bool = False
    ) -> list[str]:
        """``runc exec`` of ``cmd`` in the container, writing the command's pid to ``pidfile``."""
        if not cmd:
            raise InvalidArgument("exec: empty command")
        return [
            self.binary(handle.handler),
            "--root",
            str(self.state_root(handle.handler)),
            "exec",
            *(["--tty"] if tty else []),
            "--pid-file",
            str(pidfile),
            handle.id,
            *cmd,
        ]

    async def spawn_exec(
        self,
        handle: ContainerHandle,
        cmd: Sequence[str],
        protocol_factory: Callable[[], _P],
        *,
        tty: bool = False,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = asyncio.subprocess.PIPE,
        stderr: int | None = asyncio.subprocess.PIPE,
    ) -> tuple[asyncio.SubprocessTransport, _P, Path]:
        """Start ``runc exec`` of ``cmd`` in a new session, with the given stdio; nothing waits.

        The stdio arguments are what :meth:`asyncio.loop.subprocess_exec` takes
        (PIPE, DEVNULL or a descriptor); with ``tty`` runc wants a terminal as its
        stdin and copies between it and the container's own pty. Returns the
        transport, its protocol and the pid file: :meth:`kill_exec` ends it, the
        caller closes the transport once runc has exited and removes the pid file.
        The server layer checks that the container runs (a stopped one makes runc
        fail with exit code 255 and its message on stderr).
        """
        pidfile = handle.exec_pidfile()
        argv = self.exec_argv(handle, cmd, pidfile, tty=tty)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            protocol_factory,
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        log.debug("exec %s in %s: runc pid %d", cmd[0], handle.id[:13], transport.get_pid())
        return transport, protocol, pidfile

    async def kill_exec(self, proc: ExecProcess, pidfile: Path) -> None:
        """Kill an exec'd command, its process group, and the runc exec that waits on it.

        Returns once runc has been reaped. runc exits only once the command's
        output is closed, so a background process of the command that holds it
        keeps runc waiting: killing the group while runc runs gets it too (and the
        group's id, still in use, cannot name anything else).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while proc.returncode is None:
            pid = await asyncio.to_thread(_read_int, pidfile)
            if pid:
                for kill, target in ((os.killpg, pid), (os.kill, pid)):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(target, signal.SIGKILL)
            elif loop.time() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), POLL_INTERVAL * 5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # runc's own group, if anything is left in it

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

    def _write_ctl(self, handle: ContainerHandle, message: bytes) -> None:
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
            await asyncio.to_thread(self._write_ctl, handle, message)

    # -- logs ------------------------------------------------------------------------------

    def _write_reopen(self, handle: ContainerHandle) -> int | None:
        try:
            before: int | None = os.stat(handle.log_path).st_ino
        except FileNotFoundError:
            before = None
        self._write_ctl(handle, REOPEN_LOG_MESSAGE)
        return before

    async def reopen_log(self, handle: ContainerHandle) -> None:
        """Have conmon start a new, empty log file at the log path (after a rotation).

        Returns once the new file is there.
        """
        # An exited container's conmon may still hold the FIFO open for a moment,
        # without ever reading it again: ask the exit file, not the FIFO.
        if await self.exit_status(handle) is not None:
            raise FailedPrecondition(f"container {handle.id} is not running")
        before = await asyncio.to_thread(self._write_reopen, handle)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while True:
            try:
                inode: int | None = (await asyncio.to_thread(os.stat, handle.log_path)).st_ino
            except FileNotFoundError:
                inode = None
            if inode is not None and inode != before:
                return
            if await self.exit_status(handle) is not None:
                raise FailedPrecondition(f"container {handle.id} exited before reopening its log")
            if loop.time() > deadline:
                raise Internal(f"conmon of {handle.id} did not reopen {handle.log_path}")
            await asyncio.sleep(POLL_INTERVAL)

    # -- cgroups ---------------------------------------------------------------------------

    async def _cgroup_layout(self) -> cgroups.CgroupLayout:
        if self._layout is None or self._own_cgroup is None:
            self._own_cgroup = await asyncio.to_thread(cgroups.read_own_cgroup)
            self._layout = await asyncio.to_thread(cgroups.read_layout)
        return self._layout

    async def cgroup_dirs(self, handle: ContainerHandle) -> dict[str, Path]:
        """The container's cgroup directories (by v1 controller, or ``""`` on v2)."""
        layout = await self._cgroup_layout()
        assert self._own_cgroup is not None
        return cgroups.cgroup_dirs(layout, handle.cgroups_path, self._own_cgroup)

    async def stats(self, handle: ContainerHandle) -> cgroups.CgroupStats:
        """CPU and memory use from the container's cgroup; NotFound once it is deleted."""
        dirs = await self.cgroup_dirs(handle)
        stats = await asyncio.to_thread(cgroups.read_stats, dirs, time.time_ns())
        if stats is None:
            raise NotFound(f"container {handle.id} has no cgroup")
        return stats
