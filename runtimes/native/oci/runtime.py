"""The low-level runtime under conmon, as CRI-O drives it: the container half's one entry point.

:class:`OCIRuntime` is a thin facade over the pieces, each of which runs its own
subprocesses through :func:`minikubelet.util.proc.run`:

* :mod:`runtimes.native.oci.runc`: the OCI runtime's command line by handler
  (binaries, state roots, start/state/list/kill/delete);
* :mod:`runtimes.native.oci.conmon`: creating a container under conmon, its exit
  files, its attach socket and ctl FIFO (resize, log reopening);
* :mod:`runtimes.native.oci.exec`: ``runc exec`` for ExecSync and streaming exec;
* :mod:`runtimes.native.oci.cgroups`: the container's cgroup, for stats and OOM kills;
* :mod:`runtimes.native.oci.handle`: the per-container :class:`ContainerHandle`.

What needs more than one of them lives here: the handler check for Status,
stop (signal, grace, SIGKILL, the exit file), delete (runc, then conmon's
end, then its files), exit status (conmon's file and the cgroup's OOM count)
and log reopening.

Nothing here keeps per-container state: the server layer keeps a
:class:`ContainerHandle` per container (persisted) and passes it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from minikubelet.errors import DeadlineExceeded, FailedPrecondition, Internal, NotFound
from minikubelet.util import proc
from runtimes.native.oci import cgroups
from runtimes.native.oci.conmon import ATTACH_STDERR, ATTACH_STDOUT, Conmon
from runtimes.native.oci.exec import ExecProcess, RuncExec
from runtimes.native.oci.handle import POLL_INTERVAL, ContainerHandle, ExitStatus
from runtimes.native.oci.runc import DEFAULT_HANDLERS, OCIState, Runc, runc_message

__all__ = [
    "ATTACH_STDERR",
    "ATTACH_STDOUT",
    "DEFAULT_HANDLERS",
    "ContainerHandle",
    "ExecProcess",
    "ExitStatus",
    "OCIRuntime",
    "OCIState",
    "RuntimeCheck",
    "runc_message",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeCheck:
    """Whether a handler can run containers here, for the runtime's Status conditions."""

    handler: str
    binary: str
    ok: bool
    version: str = ""
    conmon_version: str = ""
    message: str = ""


def _first_line(data: bytes) -> str:
    return data.decode(errors="replace").splitlines()[0] if data.strip() else ""


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
        self.command_timeout = command_timeout
        self.exit_dir = self.root / "exits"
        self.attach_dir = self.root / "attach"
        self.runc = Runc(
            root=self.root,
            handlers=handlers,
            default_handler=default_handler,
            command_timeout=command_timeout,
        )
        self.conmon = Conmon(
            self.runc,
            exit_dir=self.exit_dir,
            attach_dir=self.attach_dir,
            conmon=conmon,
            log_size_max=log_size_max,
            log_level=conmon_log_level,
            command_timeout=command_timeout,
        )
        self.execs = RuncExec(self.runc, command_timeout=command_timeout)
        self._layout: cgroups.CgroupLayout | None = None
        self._own_cgroup: dict[str, str] | None = None

        # What one part does alone is that part's method, under the facade's name.
        self.handler_name = self.runc.handler_name
        self.state_root = self.runc.state_root
        self.binary = self.runc.binary
        #: Write config.json and create the container under conmon (not started); its pid.
        #: On failure the OCI runtime's state is cleaned up, or the error says it could not
        #: be and a later :meth:`delete` retries (see :meth:`Conmon.create`).
        self.create = self.conmon.create
        self.start = self.runc.start
        self.state = self.runc.state  # None when the OCI runtime does not know it
        self.list_containers = self.runc.list_containers
        self.kill = self.runc.kill  # False when it is not running
        #: ExecSync: runc exec to completion; DeadlineExceeded (the command killed) past timeout.
        self.exec_sync = self.execs.run
        self.exec_argv = self.execs.argv
        self.spawn_exec = self.execs.spawn  # streaming exec: started, not awaited
        self.kill_exec = self.execs.kill
        self.attach_socket_path = self.conmon.attach_socket_path
        self.connect_attach = self.conmon.connect_attach
        self.resize_terminal = self.conmon.resize_terminal

    # -- handlers --------------------------------------------------------------------------

    @property
    def handlers(self) -> dict[str, str]:
        return self.runc.handlers

    @property
    def default_handler(self) -> str:
        return self.runc.default_handler

    # -- status ----------------------------------------------------------------------------

    async def check(self, handler: str = "") -> RuntimeCheck:
        """Can ``handler`` run containers here? Never raises: the answer says why not."""
        name = handler or self.runc.default_handler
        if name not in self.runc.handlers:
            return RuntimeCheck(name, "", False, message=f"unknown runtime handler {name!r}")
        path = self.runc.which(self.runc.handlers[name])
        if path is None:
            return RuntimeCheck(name, self.runc.handlers[name], False, message="not installed")
        conmon = self.runc.which(self.conmon.conmon)
        if conmon is None:
            return RuntimeCheck(name, path, False, message=f"{self.conmon.conmon} not installed")
        try:
            runtime_version = await proc.run(
                [path, "--version"], timeout=self.command_timeout, check=False
            )
            conmon_version = await proc.run(
                [conmon, "--version"], timeout=self.command_timeout, check=False
            )
        except (OSError, TimeoutError) as failure:
            return RuntimeCheck(name, path, False, message=f"cannot run: {failure!r}")
        version = _first_line(runtime_version.stdout)
        if runtime_version.returncode != 0:
            message = runc_message(runtime_version.stderr)
            return RuntimeCheck(name, path, False, version, message=message)
        conmon_line = _first_line(conmon_version.stdout)
        if Path(path).name.startswith("crun"):
            layout = await self._cgroup_layout()
            controllers = await asyncio.to_thread(cgroups.read_unified_controllers, layout)
            refusal = cgroups.crun_refusal(layout, controllers)
            if refusal:
                log.warning("handler %s unusable: %s", name, refusal)
                return RuntimeCheck(name, path, False, version, conmon_line, refusal)
        return RuntimeCheck(name, path, True, version, conmon_line)

    # -- lifecycle -------------------------------------------------------------------------

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
        await self.runc.delete(handle)
        await self.conmon.wait_gone(handle)
        await asyncio.to_thread(self.conmon.forget, handle)
        log.info("deleted container %s", handle.id)

    # -- exits -----------------------------------------------------------------------------

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
        return await asyncio.to_thread(self.conmon.read_exit, handle, self._cgroup_oom_kills)

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

    # -- logs ------------------------------------------------------------------------------

    async def reopen_log(self, handle: ContainerHandle) -> None:
        """Have conmon start a new, empty log file at the log path (after a rotation).

        Returns once the new file is there.
        """
        # An exited container's conmon may still hold the FIFO open for a moment,
        # without ever reading it again: ask the exit file, not the FIFO.
        if await self.exit_status(handle) is not None:
            raise FailedPrecondition(f"container {handle.id} is not running")
        before = await asyncio.to_thread(self.conmon.write_reopen, handle)
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
