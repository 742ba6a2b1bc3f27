"""A StreamingBackend over host processes and host TCP ports, for the server's own tests.

It exercises the streaming server's protocol handling without a container
runtime; the real runtimes are proven against the same server elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Sequence

from minikubelet.errors import FailedPrecondition, NotFound
from runtimes.base import model as m
from runtimes.base.netns import connect


class LocalIO:
    def __init__(self, proc: asyncio.subprocess.Process, master: int | None) -> None:
        self.proc = proc
        self.master = master
        self.closed = False
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._open = 0
        self._pumps: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        if master is not None:
            os.set_blocking(master, False)
            self._open = 1
            loop.add_reader(master, self._on_master)
        else:
            for channel, stream in ((m.STDOUT, proc.stdout), (m.STDERR, proc.stderr)):
                assert stream is not None
                self._open += 1
                self._pumps.append(asyncio.create_task(self._pump(channel, stream)))

    def _on_master(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if data:
            self._queue.put_nowait((m.STDOUT, data))
        else:
            asyncio.get_running_loop().remove_reader(self.master)
            self._queue.put_nowait(None)

    async def _pump(self, channel: int, stream: asyncio.StreamReader) -> None:
        while data := await stream.read(65536):
            await self._queue.put((channel, data))
        await self._queue.put(None)

    async def read(self) -> tuple[int, bytes] | None:
        while self._open:
            item = await self._queue.get()
            if item is not None:
                return item
            self._open -= 1
        return None

    async def write_stdin(self, data: bytes) -> None:
        if self.master is not None:
            os.write(self.master, data)
        elif self.proc.stdin is not None:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self.master is not None:
            os.write(self.master, b"\x04")
        elif self.proc.stdin is not None:
            self.proc.stdin.close()

    async def resize(self, width: int, height: int) -> None:
        if self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGWINCH)

    async def wait(self) -> int:
        return await self.proc.wait()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self.master is not None:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
            self.master = None


class LocalBackend:
    """Containers are names: "running" execs on the host, "stopped" is not running."""

    def __init__(self) -> None:
        self.ios: list[LocalIO] = []

    async def check_exec(self, container_id: str) -> None:
        if container_id == "stopped":
            raise FailedPrecondition("container stopped is not running")
        if container_id != "running":
            raise NotFound(f"container {container_id} not found")

    async def check_port_forward(self, sandbox_id: str) -> None:
        if sandbox_id != "pod":
            raise NotFound(f"sandbox {sandbox_id} not found")

    async def exec_stream(
        self, container_id: str, cmd: Sequence[str], *, tty: bool, stdin: bool
    ) -> LocalIO:
        if tty:
            master, slave = os.openpty()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
                )
            finally:
                os.close(slave)
            io = LocalIO(proc, master)
        else:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            io = LocalIO(proc, None)
        self.ios.append(io)
        return io

    async def attach_stream(self, container_id: str, *, tty: bool, stdin: bool) -> LocalIO:
        return await self.exec_stream(container_id, ["cat"], tty=tty, stdin=stdin)

    async def port_forward_connect(
        self, sandbox_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await connect(None, port)
