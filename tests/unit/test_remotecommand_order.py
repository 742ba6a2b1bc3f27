"""Stdin and resizes reach the process in the order the client sent them."""

from __future__ import annotations

import asyncio

from minikubelet.streaming import channels as ch
from runtimes.base.streaming.remotecommand import Channels, run_remote_command
from runtimes.base.streaming.tokens import StreamRequest


class Process:
    """A tty exec whose resize takes a while (a signal, a FIFO), as real backends' do."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.exited = asyncio.Event()

    async def read(self) -> tuple[int, bytes] | None:
        await self.exited.wait()
        return None

    async def write_stdin(self, data: bytes) -> None:
        self.seen.append(f"stdin {data.decode()}")
        if b"exit" in data:
            self.exited.set()

    async def close_stdin(self) -> None:
        self.seen.append("close")

    async def resize(self, width: int, height: int) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        self.seen.append(f"resize {width}x{height}")

    async def wait(self) -> int:
        return 0

    async def close(self) -> None:
        pass


class Backend:
    def __init__(self, process: Process) -> None:
        self.process = process

    async def exec_stream(self, target: str, cmd: object, *, tty: bool, stdin: bool) -> Process:
        return self.process


class Client(Channels):
    """A client that sends its terminal size, then a command, as kubectl exec -it does."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.sizes: asyncio.Queue[ch.TerminalSize | None] = asyncio.Queue()
        self.input: asyncio.Queue[bytes] = asyncio.Queue()
        self.statuses: list[bytes] = []

    def send(self) -> None:
        # both arrive before either pump runs: the size first
        self.sizes.put_nowait(ch.TerminalSize(91, 17))
        self.input.put_nowait(b"stty size; exit 0\n")

    async def stdin(self) -> bytes:
        return await self.input.get()

    async def resize(self) -> ch.TerminalSize | None:
        return await self.sizes.get()

    async def write(self, channel: int, data: bytes) -> None:
        pass

    async def status(self, payload: bytes) -> None:
        self.statuses.append(payload)

    async def end(self) -> None:
        self.input.put_nowait(b"")
        self.sizes.put_nowait(None)


async def test_the_first_size_is_set_before_the_first_input() -> None:
    process, client = Process(), Client()
    client.send()
    request = StreamRequest("exec", "c1", ("sh",), tty=True, stdin=True, stdout=True)
    await asyncio.wait_for(run_remote_command(Backend(process), client, request), 5)  # type: ignore[arg-type]
    assert process.seen[:2] == ["resize 91x17", "stdin stty size; exit 0\n"]
    assert client.statuses, "the exit status was sent"
