"""kubectl as a person runs it for the long-lived node commands (``logs -f``, ``attach``,
``port-forward``, ``exec -it``): a process in the background whose output is read as it
comes, on pipes or on a real terminal (a pty)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import struct
import termios
from collections.abc import Sequence
from typing import IO

from tests.harness.controlplane import ControlPlane
from tests.harness.wait import wait_until


def kubectl_argv(cp: ControlPlane, *args: str) -> list[str]:
    """The command line ``cp.kubectl`` runs: the real kubectl, as the admin."""
    return [
        str(cp.binaries.kubectl),
        f"--kubeconfig={cp.admin_kubeconfig}",
        f"--cache-dir={cp.workdir / 'kubectl-cache'}",
        *args,
    ]


def kubectl_env() -> dict[str, str]:
    """No proxies and no ambient kubeconfig, as for the harness's kubectl."""
    return {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and k not in ("KUBECONFIG", "ETCDCTL_API")
    }


class Kubectl:
    """A kubectl in the background with stdout and stderr gathered as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = b""
        self.err = b""
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._gather(proc.stdout, "out")),
            asyncio.create_task(self._gather(proc.stderr, "err")),
        ]

    @classmethod
    async def start(cls, cp: ControlPlane, *args: str, stdin: bool = False) -> Kubectl:
        proc = await asyncio.create_subprocess_exec(
            *kubectl_argv(cp, *args),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=kubectl_env(),
        )
        return cls(proc)

    async def _gather(self, stream: asyncio.StreamReader, which: str) -> None:
        while chunk := await stream.read(65536):
            setattr(self, which, getattr(self, which) + chunk)

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def _shown(self) -> str:
        return f"stdout={self.out[-2000:]!r} stderr={self.err[-2000:]!r}"

    async def wait_for(self, pattern: str, *, timeout: float = 20.0) -> re.Match[str]:
        """The first match of ``pattern`` (a multiline regex) in stdout, once it shows."""
        regex = re.compile(pattern, re.MULTILINE)

        def seen() -> re.Match[str] | None:
            if self.proc.returncode is not None and not regex.search(self.text):
                raise AssertionError(
                    f"kubectl exited ({self.proc.returncode}) before {pattern!r}: {self._shown()}"
                )
            return regex.search(self.text)

        try:
            return await wait_until(seen, timeout=timeout, message=f"{pattern!r} from kubectl")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self._shown()}") from None

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.wait_closed()

    async def finish(self, *, timeout: float = 20.0) -> int:
        """Wait for kubectl to exit by itself (failing the test after ``timeout``)."""
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"kubectl still running after {timeout}s: {self._shown()}"
            ) from None
        await asyncio.gather(*self._readers)
        return rc

    async def stop(self) -> None:
        """End kubectl (as Ctrl-C does) if it still runs, and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """kubectl on a real terminal: stdin, stdout and stderr are the slave side of a pty
    of ``rows`` x ``cols``; the test types on and reads from the master."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self.screen = b""

    @classmethod
    async def start(
        cls, cp: ControlPlane, args: Sequence[str], *, rows: int, cols: int
    ) -> Terminal:
        master, slave = os.openpty()
        set_size(slave, rows, cols)
        os.set_blocking(master, False)
        tty: IO[bytes] = os.fdopen(slave, "rb", buffering=0)
        try:
            proc = await asyncio.create_subprocess_exec(
                *kubectl_argv(cp, *args),
                stdin=tty,
                stdout=tty,
                stderr=tty,
                env={**kubectl_env(), "TERM": "xterm"},
                start_new_session=True,
            )
        finally:
            tty.close()
        return cls(proc, master)

    def read(self) -> str:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.master, 65536):
                self.screen += chunk
        return self.screen.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def wait_for(self, pattern: str, *, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return await wait_until(
                lambda: regex.search(self.read()), timeout=timeout, message=repr(pattern)
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; screen: {self.screen[-2000:]!r}") from None

    def resize(self, rows: int, cols: int) -> None:
        """What a terminal emulator does when its window changes: the new size, SIGWINCH."""
        set_size(self.master, rows, cols)
        self.proc.send_signal(signal.SIGWINCH)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        os.close(self.master)
