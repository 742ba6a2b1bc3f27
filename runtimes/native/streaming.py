"""The native runtime's streams: exec through ``runc exec``, attach through conmon.

Each is a :class:`~runtimes.base.model.StreamIO` the streaming server pumps.
Everything runs on the event loop: descriptors are non-blocking and read by
loop callbacks, and output waits in a bounded buffer (its source is paused
while the reader lags), so a slow client slows the command down instead of
filling memory.

Exec without a tty gives ``runc exec`` pipes (stdin a pipe or /dev/null):
stdout and stderr chunks are reported as they arrive, and the output ends
once both pipes reach EOF. With a tty, ``runc exec --tty`` in the foreground
wants its own stdio to be a terminal: it gets the slave of a pty pair made
here, puts it in raw mode and copies between it and the container's own pty,
whose line discipline does the echo, ^C and ^D (the slave is raw from the
start, so input sent early is not echoed twice). The master stays here: all
output is STDOUT, :meth:`~ExecStream.resize` sets the master's size and sends
SIGWINCH to runc, which passes its terminal's size on to the container's pty.
Reading the master fails with EIO once no one holds the slave: that is EOF.

runc copies the output through pipes (or the container's pty) of its own and
exits only once they close, not when the command does: a background process
that keeps them open keeps the exec running, and :meth:`ExecStream.wait`
waiting, until it ends or the exec is closed (which kills the command's process
group, where such a process normally is). So when runc has exited, nothing of the
command holds its output.

Stdin's end: without a tty the pipe is closed; with a tty the terminal's EOF
character (^D, ``b"\\x04"``) is sent, which a program reading the terminal in
canonical mode sees as end of input at the start of a line (after a partial
line it only hands that line over; a raw-mode program sees just the byte).

Closing an exec that still runs kills the command and its process group by
the pid runc wrote to its pid file, then reaps runc; nothing is left of it:
no process, descriptor or pid file (the child watcher's thread, if the loop
uses one, ends with runc).

Attach joins conmon's attach socket (see :mod:`runtimes.native.oci.runtime`
for its protocol): output from now on, and the container's stdin when it was
created with stdin. Its output ends when the container exits (conmon closes
the socket); closing it leaves the container running.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import struct
import termios
import tty as tty_module
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from runtimes.base.model import STDERR, STDOUT
from runtimes.native.oci.runtime import (
    ATTACH_STDERR,
    ATTACH_STDOUT,
    ContainerHandle,
    OCIRuntime,
)

log = logging.getLogger(__name__)

#: How long a resize waits for runc to start the command, polling its pid file.
PID_FILE_WAIT = 5.0
PID_FILE_POLL = 0.01

HIGH_WATER: Final = 256 * 1024  # output bytes buffered before the source is paused
LOW_WATER: Final = 64 * 1024  # ... and resumed
READ_SIZE: Final = 64 * 1024
ATTACH_CHUNK: Final = 8192  # bytes per message to conmon (it reads 32 KiB at most)
TERMINAL_EOF: Final = b"\x04"  # VEOF, ^D
CLOSE_TIMEOUT: Final = 30.0

_ATTACH_CHANNELS: Final = {ATTACH_STDOUT: STDOUT, ATTACH_STDERR: STDERR}


class _Output:
    """Output chunks waiting for :meth:`get`, in arrival order, with flow control.

    ``pause`` is called once more than HIGH_WATER bytes wait, ``resume`` once the
    reader brought them under LOW_WATER again. :attr:`eof` is set when the source
    ended (:meth:`end`); :meth:`discard` ends it for the reader only, and from then
    on the source is read and dropped.
    """

    def __init__(self) -> None:
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        self._size = 0
        self._ended = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.eof = asyncio.Event()  # the source reached its end
        self.finished = asyncio.Event()  # ... or the reader will get nothing more
        self.pause: Callable[[], None] = lambda: None
        self.resume: Callable[[], None] = lambda: None

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, channel: int, data: bytes) -> None:
        if not data or self._ended:
            return
        self._chunks.append((channel, data))
        self._size += len(data)
        self._wake()
        if self._size > HIGH_WATER and not self._paused:
            self._paused = True
            self.pause()

    def end(self) -> None:
        """The source ended (what is buffered is still read)."""
        self.eof.set()
        self._finish()

    def discard(self) -> None:
        """Drop what is buffered and whatever comes; the reader gets None."""
        self._chunks.clear()
        self._size = 0
        self._finish()
        if self._paused:
            self._paused = False
            self.resume()

    def _finish(self) -> None:
        self._ended = True
        self.finished.set()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> tuple[int, bytes] | None:
        while not self._chunks:
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        channel, data = self._chunks.popleft()
        self._size -= len(data)
        if self._paused and self._size < LOW_WATER:
            self._paused = False
            self.resume()
        return channel, data


class _Writable:
    """Waits until a descriptor is writable; :meth:`cancel` (on close) releases the waiter."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()

        def ready() -> None:
            if not future.done():
                future.set_result(None)

        loop.add_writer(self._fd, ready)
        try:
            await future
        finally:
            if self._future is future:  # not cancelled by close, which removed the writer
                loop.remove_writer(self._fd)
                self._future = None

    def cancel(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            asyncio.get_running_loop().remove_writer(self._fd)
            if not future.done():
                future.set_result(None)


# -- exec ------------------------------------------------------------------------------------


class _RuncProtocol(asyncio.SubprocessProtocol):
    """``runc exec``: its output pipes into an :class:`_Output`, its stdin pipe, its exit."""

    def __init__(self, output: _Output, pipes: Sequence[int]) -> None:
        loop = asyncio.get_running_loop()
        self.output = output
        self.open_pipes = set(pipes)  # output descriptors (1, 2) not at EOF yet
        self.exited: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.stdin_open = True
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.output.put(STDOUT if fd == 1 else STDERR, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 0:
            self.stdin_open = False
            self._wake_drain()
            return
        self.open_pipes.discard(fd)
        if not self.open_pipes:
            self.output.end()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        self.stdin_open = False
        self._wake_drain()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        while self._write_paused and self.stdin_open:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def stop_writing(self) -> None:
        """Close releases a writer waiting for the pipe to drain."""
        self.stdin_open = False
        self._wake_drain()


class _Runc:
    """The runc process as :meth:`OCIRuntime.kill_exec` wants it."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _RuncProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @property
    def pid(self) -> int:
        return self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    def kill(self) -> None:
        self._transport.kill()

    async def wait(self) -> int:
        await asyncio.shield(self._protocol.exited)
        code = self._transport.get_returncode()
        assert code is not None
        return code


_abandoned: set[asyncio.Task[None]] = set()  # closes of streams whose starter gave up


def _close_abandoned(starting: asyncio.Future[ExecStream]) -> None:
    if starting.cancelled() or starting.exception() is not None:
        return
    task = asyncio.get_running_loop().create_task(starting.result().close())
    _abandoned.add(task)
    task.add_done_callback(_abandoned.discard)


class ExecStream:
    """A ``runc exec`` in a running container; build it with :meth:`start`."""

    def __init__(
        self,
        oci: OCIRuntime,
        handle: ContainerHandle,
        *,
        tty: bool,
        stdin: bool,
        output: _Output,
        transport: asyncio.SubprocessTransport,
        protocol: _RuncProtocol,
        pidfile: Path,
        master: int = -1,
    ) -> None:
        self.oci = oci
        self.handle = handle
        self.tty = tty
        self.stdin = stdin
        self._output = output
        self._transport = transport
        self._protocol = protocol
        self._runc = _Runc(transport, protocol)
        self._pidfile = pidfile
        self._master = master  # the pty's master (tty), -1 without or once closed
        self._reading = False
        self._writable = _Writable(master) if master >= 0 else None
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        oci: OCIRuntime,
        handle: ContainerHandle,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ExecStream:
        """Start ``cmd``; cancelling this leaves nothing running (runc's start completes,
        then the stream is closed), where a killed runc could leave its command behind."""
        starting = asyncio.ensure_future(cls._start(oci, handle, cmd, tty=tty, stdin=stdin))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(_close_abandoned)
            raise

    @classmethod
    async def _start(
        cls,
        oci: OCIRuntime,
        handle: ContainerHandle,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ExecStream:
        output = _Output()
        if not tty:
            transport, protocol, pidfile = await oci.spawn_exec(
                handle,
                cmd,
                lambda: _RuncProtocol(output, (1, 2)),
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            )
            stream = cls(
                oci,
                handle,
                tty=False,
                stdin=stdin,
                output=output,
                transport=transport,
                protocol=protocol,
                pidfile=pidfile,
            )
        else:
            master, slave = os.openpty()
            try:
                os.set_blocking(master, False)
                # runc sets its terminal raw too, but only once the command runs: input
                # sent before would be echoed, and a ^D taken as EOF, by this terminal.
                tty_module.setraw(slave)
                transport, protocol, pidfile = await oci.spawn_exec(
                    handle,
                    cmd,
                    lambda: _RuncProtocol(output, ()),
                    tty=True,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)  # runc holds it now: EIO on the master once runc lets go
            stream = cls(
                oci,
                handle,
                tty=True,
                stdin=stdin,
                output=output,
                transport=transport,
                protocol=protocol,
                pidfile=pidfile,
                master=master,
            )
        stream._start_reading()
        return stream

    # -- output ----------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if self._master >= 0:
            self._output.pause = self._pause_master
            self._output.resume = self._resume_master
            self._resume_master()
        else:
            self._output.pause = lambda: self._pipes_reading(False)
            self._output.resume = lambda: self._pipes_reading(True)

    def _pipes_reading(self, on: bool) -> None:
        for fd in (1, 2):
            pipe = self._transport.get_pipe_transport(fd)
            if isinstance(pipe, asyncio.ReadTransport) and not pipe.is_closing():
                if on:
                    pipe.resume_reading()
                else:
                    pipe.pause_reading()

    def _pause_master(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._master)
            self._reading = False

    def _resume_master(self) -> None:
        if not self._reading and self._master >= 0 and not self._output.eof.is_set():
            asyncio.get_running_loop().add_reader(self._master, self._read_master)
            self._reading = True

    def _read_master(self) -> None:
        try:
            data = os.read(self._master, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: every slave descriptor is closed
                log.warning("reading the terminal of an exec in %s: %s", self.handle.id[:13], exc)
            data = b""
        if data:
            self._output.put(STDOUT, data)
        else:
            self._pause_master()
            self._output.end()

    async def read(self) -> tuple[int, bytes] | None:
        return await self._output.get()

    # -- input -----------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Input for the command; dropped without stdin, or once its stdin is gone."""
        if not self.stdin or not data or self._closing is not None:
            return
        if self._master >= 0:
            await self._write_master(data)
            return
        pipe = self._transport.get_pipe_transport(0)
        if not isinstance(pipe, asyncio.WriteTransport) or pipe.is_closing():
            return
        if not self._protocol.stdin_open:
            return
        pipe.write(data)
        await self._protocol.drain()

    async def _write_master(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._master >= 0 and self._closing is None:
            try:
                written = os.write(self._master, view)
            except (BlockingIOError, InterruptedError):
                assert self._writable is not None
                await self._writable.wait()
                continue
            except OSError as exc:
                if exc.errno not in (errno.EIO, errno.EBADF):
                    log.warning("writing to an exec in %s: %s", self.handle.id[:13], exc)
                return  # the terminal is gone: so is whoever would read this
            view = view[written:]

    async def close_stdin(self) -> None:
        """End of input: the stdin pipe is closed; with a tty, ^D is sent (see the module)."""
        if not self.stdin or self._closing is not None:
            return
        if self._master >= 0:
            await self._write_master(TERMINAL_EOF)
            return
        pipe = self._transport.get_pipe_transport(0)
        if pipe is not None and not pipe.is_closing():
            pipe.close()  # after what is still buffered

    async def resize(self, width: int, height: int) -> None:
        """The pty's size (TIOCSWINSZ on the master), then SIGWINCH to runc to pass it on."""
        if self._master < 0 or width <= 0 or height <= 0 or self._closing is not None:
            return
        size = struct.pack("HHHH", height, width, 0, 0)  # struct winsize: rows, cols, x, y px
        try:
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, size)
        except OSError as exc:
            log.debug("resizing the terminal of an exec in %s: %s", self.handle.id[:13], exc)
            return
        if self._transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._transport.get_pid(), signal.SIGWINCH)
        # runc passes the size on in a goroutine of its own, some time after the signal (and
        # at its start, only after it began copying input): input sent right after a resize
        # could reach the command first, and ``stty size`` would see none. So the command's
        # terminal gets the size here, once the command runs; the server holds the input
        # back meanwhile.
        pid = await self._command_pid()
        if pid is not None:
            await asyncio.to_thread(self._resize_command_terminal, pid, size)

    async def _command_pid(self) -> int | None:
        """The command's pid, from runc's pid file, once runc has started it (None if it
        never does: runc failed or was too slow)."""
        deadline = asyncio.get_running_loop().time() + PID_FILE_WAIT
        while True:
            try:
                return int(await asyncio.to_thread(self._pidfile.read_text))
            except (OSError, ValueError):
                pass
            if (
                self._transport.get_returncode() is not None
                or asyncio.get_running_loop().time() > deadline
            ):
                return None
            await asyncio.sleep(PID_FILE_POLL)  # runc gives no other sign that it started

    def _resize_command_terminal(self, pid: int, size: bytes) -> None:
        try:
            fd = os.open(f"/proc/{pid}/fd/0", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return  # gone, or its stdin is no longer a file we may open
        try:
            if os.isatty(fd):
                fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
        except OSError as exc:
            log.debug("resizing the terminal of exec pid %d: %s", pid, exc)
        finally:
            os.close(fd)

    # -- end -------------------------------------------------------------------------------

    async def wait(self) -> int:
        """runc exec's exit code: the command's, 128 + N for signal N, 255 if it never ran."""
        return await self._runc.wait()

    async def close(self) -> None:
        """Kill the command if it still runs, reap runc, release every descriptor. Idempotent."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self._close(), name=f"close-exec-{self.handle.id[:13]}"
            )
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._protocol.stop_writing()
        if self._writable is not None:
            self._writable.cancel()
        self._output.discard()  # reading goes on, into nothing, until the descriptors close
        try:
            if self._runc.returncode is None:
                await self.oci.kill_exec(self._runc, self._pidfile)
        finally:
            if self._master >= 0:
                self._pause_master()
                os.close(self._master)
                self._master = -1
            self._transport.close()  # runc was reaped: this only closes our pipe ends
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._protocol.finished), CLOSE_TIMEOUT)
            await asyncio.to_thread(self._pidfile.unlink, missing_ok=True)


# -- attach ----------------------------------------------------------------------------------


class AttachStream:
    """A connection to a container's conmon attach socket; build it with :meth:`open`."""

    def __init__(
        self, oci: OCIRuntime, handle: ContainerHandle, sock: socket.socket, *, stdin: bool
    ) -> None:
        self.oci = oci
        self.handle = handle
        self.stdin = stdin and handle.stdin  # conmon passes input on only with --stdin
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._output = _Output()
        self._output.pause = self._pause
        self._output.resume = self._resume
        self._reading = False
        self._writable = _Writable(self._fd)
        self._stdin_closed = False

    @classmethod
    async def open(cls, oci: OCIRuntime, handle: ContainerHandle, *, stdin: bool) -> AttachStream:
        sock = await oci.connect_attach(handle)
        stream = cls(oci, handle, sock, stdin=stdin)
        stream._resume()
        return stream

    def _pause(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._reading = False

    def _resume(self) -> None:
        if not self._reading and self._sock is not None and not self._output.eof.is_set():
            asyncio.get_running_loop().add_reader(self._fd, self._receive)
            self._reading = True

    def _receive(self) -> None:
        assert self._sock is not None
        try:
            message = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("attach to %s: %s", self.handle.id[:13], exc)
            message = b""
        if not message:  # conmon closed it: the container exited
            self._pause()
            self._output.end()
            return
        channel = _ATTACH_CHANNELS.get(message[0])
        if channel is None:
            log.warning("attach to %s: message for stream %d", self.handle.id[:13], message[0])
            return
        self._output.put(channel, message[1:])

    async def read(self) -> tuple[int, bytes] | None:
        return await self._output.get()

    async def write_stdin(self, data: bytes) -> None:
        """Input for the container; dropped unless it has stdin and this attach asked for it."""
        if not self.stdin or self._stdin_closed:
            return
        for start in range(0, len(data), ATTACH_CHUNK):
            if not await self._send(data[start : start + ATTACH_CHUNK]):
                return

    async def _send(self, message: bytes) -> bool:
        while self._sock is not None and not self._stdin_closed:
            try:
                self._sock.send(message)
                return True
            except (BlockingIOError, InterruptedError):
                await self._writable.wait()
            except OSError as exc:  # conmon went away with the container
                log.debug("attach to %s: %s", self.handle.id[:13], exc)
                self._stdin_closed = True
        return False

    async def close_stdin(self) -> None:
        """Shut the socket's writing half: conmon closes the container's stdin, unless the
        container has stdin without stdin_once (then conmon keeps it open for the next)."""
        if not self.stdin or self._stdin_closed or self._sock is None:
            return
        self._stdin_closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    async def resize(self, width: int, height: int) -> None:
        """The container's terminal size, through conmon (a no-op without a terminal)."""
        if self._sock is not None:
            await self.oci.resize_terminal(self.handle, width, height)

    async def wait(self) -> int:
        """0, once the output ended (the container exited, or this attach was closed)."""
        await self._output.finished.wait()
        return 0

    async def close(self) -> None:
        """Leave the container (it runs on); idempotent."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._stdin_closed = True
        self._writable.cancel()
        self._pause()
        self._output.discard()
        sock.close()
