"""The local end of an interactive stream: raw terminal mode, its size, and stdin as a stream.

What ``kubectl exec -it`` does on the user's side: put the terminal in raw mode
(every key goes to the remote shell, which echoes and edits itself), send the
terminal size and every change of it (SIGWINCH), and restore the terminal
however the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import stat
import struct
import termios
import tty
from collections.abc import AsyncIterator, Callable, Iterator

READ_SIZE = 32 * 1024


def is_terminal(fd: int) -> bool:
    return os.isatty(fd)


def size(fd: int) -> tuple[int, int] | None:
    """(width, height) of the terminal on ``fd``, or None when it is not one."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (cols, rows) if cols and rows else None


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Raw mode for the block; the previous settings come back however it ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def on_resize(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` on the event loop at every SIGWINCH while the block runs."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGWINCH, callback)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """What arrives on ``fd`` until EOF, without blocking the event loop.

    A terminal or pipe is watched with the loop's reader (no thread, nothing
    left behind); a regular file never blocks, so it is read directly.
    """
    if stat.S_ISREG(os.fstat(fd).st_mode):
        while chunk := os.read(fd, READ_SIZE):
            yield chunk
            await asyncio.sleep(0)
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(fd)
        queue.put_nowait(chunk)

    loop.add_reader(fd, readable)
    try:
        while chunk := await queue.get():
            yield chunk
    finally:
        loop.remove_reader(fd)
