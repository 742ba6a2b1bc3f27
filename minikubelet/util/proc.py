"""Running a command to completion from asyncio: the one way minikubelet does it.

:func:`run` starts ``argv`` (no shell), feeds it ``input`` (or /dev/null),
captures its stdout and stderr, and waits for it, at most ``timeout`` seconds.
Whatever ends the wait early, the timeout or the cancellation of the awaiting
task, the process is killed (SIGKILL; its whole process group when it was
started in a session of its own) and reaped before the exception goes on: no
process and no zombie outlives the call. A non-zero exit is :class:`CommandError`
(unless ``check=False``), carrying the command, exit code and output; a timeout
is :class:`CommandTimeout`, which is also a :class:`TimeoutError`.

Long-lived processes (a daemon, an exec whose stdio is streamed) are not for this
helper: their owners start and stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

#: Seconds a command may take when the caller does not say (``None`` waits for ever).
DEFAULT_TIMEOUT: Final = 60.0
_MESSAGE_TAIL: Final = 2000  # characters of output an error message quotes at most

Process = asyncio.subprocess.Process
#: Ends a command early, given its process; :func:`run` kills and reaps it after anyway.
Terminator = Callable[[Process], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Completed:
    """A command that ran to its end."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def output(self) -> str:
        """What it said, for a message: stderr, else stdout, decoded and stripped."""
        return _text(self.stderr or self.stdout)


def _text(data: bytes) -> str:
    return data.decode(errors="replace").strip()[-_MESSAGE_TAIL:]


class CommandError(Exception):
    """A command failed: ``returncode`` (negative: killed by that signal) and its output."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: bytes = b"",
        stderr: bytes = b"",
        *,
        reason: str = "",
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        said = _text(stderr or stdout)
        what = reason or f"exit status {returncode}"
        super().__init__(f"{self.command} failed ({what})" + (f": {said}" if said else ""))

    @property
    def command(self) -> str:
        """The command line, shortened for a message."""
        line = " ".join(self.argv)
        return line if len(line) <= 200 else line[:197] + "..."

    @property
    def output(self) -> str:
        """stderr, else stdout, decoded and stripped."""
        return _text(self.stderr or self.stdout)


class CommandTimeout(CommandError, TimeoutError):
    """The command did not finish within ``timeout`` seconds and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, returncode: int | None) -> None:
        self.timeout = timeout
        super().__init__(argv, returncode, reason=f"timed out after {timeout:g}s")


async def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    check: bool = True,
    start_new_session: bool = False,
    pass_fds: Sequence[int] = (),
    terminate: Terminator | None = None,
) -> Completed:
    """Run ``argv`` to completion; its exit code and captured output.

    ``env`` replaces the environment (None inherits ours); ``timeout`` None waits
    for ever. ``terminate``, if given, is how to end the command early (say, its
    children first); the process is then killed and reaped in any case. Raises
    :class:`CommandTimeout`, :class:`CommandError` on a non-zero exit when
    ``check``, and OSError when the program cannot be started.
    """
    argv = tuple(str(a) for a in argv)
    if not argv:
        raise ValueError("run: empty command")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=start_new_session,
        pass_fds=tuple(pass_fds),
    )
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            out, err = await proc.communicate(input)
    except BaseException as exc:
        await _end(proc, group=start_new_session, terminate=terminate)
        if isinstance(exc, TimeoutError) and deadline.expired():
            assert timeout is not None
            raise CommandTimeout(argv, timeout, proc.returncode) from None
        raise
    assert proc.returncode is not None
    done = Completed(argv, proc.returncode, out, err)
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, out, err)
    return done


async def _end(proc: Process, *, group: bool, terminate: Terminator | None) -> None:
    """Kill ``proc`` (after ``terminate``) and wait until it is reaped, come what may.

    A second cancellation while this waits does not stop it: the kill is sure to
    end the process soon, and the cancellation is passed on once it is reaped.
    """
    waiter = asyncio.ensure_future(_kill_and_wait(proc, group, terminate))
    cancelled = False
    while not waiter.done():
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            pass  # the hook failed (waiter is done): handled below
    if waiter.cancelled() or waiter.exception() is not None:
        if not waiter.cancelled():
            log.warning("ending %s: %r; killing it", proc.pid, waiter.exception())
        _kill(proc, group)
        await proc.wait()
    if cancelled:
        raise asyncio.CancelledError


async def _kill_and_wait(proc: Process, group: bool, terminate: Terminator | None) -> None:
    if terminate is not None and proc.returncode is None:
        await terminate(proc)
    _kill(proc, group)
    await proc.wait()


def _kill(proc: Process, group: bool) -> None:
    if group:
        # the process leads its own group (start_new_session): its children go with it;
        # while it is unreaped the group id cannot name anything else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
