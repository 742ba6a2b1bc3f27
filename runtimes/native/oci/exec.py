"""Commands in a running container: ``runc exec``, for ExecSync and for streaming exec.

ExecSync does not go through conmon: ``runc exec`` runs the command with the
container's process settings and our pipes, which is all ExecSync needs (CRI-O
uses ``conmon --exec`` for the same). On a timeout the exec'd process is killed
with its process group (runc makes it a session leader) before we answer
DeadlineExceeded, so nothing is left behind in the container. Streaming exec
(:meth:`RuncExec.spawn`) starts the same ``runc exec`` with stdio of the
caller's choosing and kills it the same way. Verified on runc 1.1.5: ``runc exec``
exits with the command's exit code, 128 + N when a signal N killed it (137 for
SIGKILL, as ``kubectl exec`` reports it), and 255 when it could not start it
(its message on its stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from minikubelet.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from minikubelet.util import proc
from runtimes.base.model import ExecResult
from runtimes.native.oci.handle import POLL_INTERVAL, ContainerHandle, read_int
from runtimes.native.oci.runc import Runc

log = logging.getLogger(__name__)


class ExecProcess(Protocol):
    """A running ``runc exec`` as :meth:`RuncExec.kill` needs it (a Process fits)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


_P = TypeVar("_P", bound=asyncio.SubprocessProtocol)


class RuncExec:
    """``runc exec`` of commands in the containers of one :class:`Runc`."""

    def __init__(self, runc: Runc, *, command_timeout: float = 30.0) -> None:
        self.runc = runc
        self.command_timeout = command_timeout

    def argv(
        self, handle: ContainerHandle, cmd: Sequence[str], pidfile: Path, *, tty: bool = False
    ) -> list[str]:
        """``runc exec`` of ``cmd`` in the container, writing the command's pid to ``pidfile``."""
        if not cmd:
            raise InvalidArgument("exec: empty command")
        return self.runc.argv(
            handle.handler,
            "exec",
            *(["--tty"] if tty else []),
            "--pid-file",
            str(pidfile),
            handle.id,
            *cmd,
        )

    async def run(self, handle: ContainerHandle, cmd: Sequence[str], timeout: float) -> ExecResult:
        """Run ``cmd`` in the running container; its output and exit code.

        ``timeout`` <= 0 waits for ever. On a timeout (or a cancellation) the command
        and its process group are killed; a timeout raises DeadlineExceeded.
        """
        if not cmd:
            raise InvalidArgument("exec: empty command")
        current = await self.runc.state(handle)
        if current is None:
            raise NotFound(f"container {handle.id} not found")
        if current.status != "running":
            raise FailedPrecondition(f"container {handle.id} is {current.status}, not running")
        pidfile = handle.exec_pidfile()
        argv = self.argv(handle, cmd, pidfile)

        async def terminate(process: proc.Process) -> None:
            await self.kill(process, pidfile)

        try:
            done = await proc.run(
                argv,
                timeout=timeout if timeout > 0 else None,
                check=False,
                start_new_session=True,
                terminate=terminate,
            )
        except proc.CommandTimeout:
            raise DeadlineExceeded(f"exec in {handle.id} timed out after {timeout}s") from None
        finally:
            await asyncio.to_thread(pidfile.unlink, missing_ok=True)
        return ExecResult(stdout=done.stdout, stderr=done.stderr, exit_code=done.returncode)

    async def spawn(
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
        transport, its protocol and the pid file: :meth:`kill` ends it, the
        caller closes the transport once runc has exited and removes the pid file.
        The server layer checks that the container runs (a stopped one makes runc
        fail with exit code 255 and its message on stderr). Its stdio streams for
        as long as the command runs, so this is no run-to-completion command.
        """
        pidfile = handle.exec_pidfile()
        argv = self.argv(handle, cmd, pidfile, tty=tty)
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

    async def kill(self, process: ExecProcess, pidfile: Path) -> None:
        """Kill an exec'd command, its process group, and the runc exec that waits on it.

        Returns once runc has been reaped. runc exits only once the command's
        output is closed, so a background process of the command that holds it
        keeps runc waiting: killing the group while runc runs gets it too (and the
        group's id, still in use, cannot name anything else).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while process.returncode is None:
            pid = await asyncio.to_thread(read_int, pidfile)
            if pid:
                for kill, target in ((os.killpg, pid), (os.kill, pid)):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(target, signal.SIGKILL)
            elif loop.time() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), POLL_INTERVAL * 5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # runc's own group, if anything is left in it
