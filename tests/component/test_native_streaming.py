"""The native runtime's streaming backend: exec, attach and port-forward, without HTTP.

A NativeRuntime runs in this process (its own root, run root, CNI bridge and
subnet), on the busybox image of the harness's local registry; the tests drive
its StreamingBackend methods directly, as the streaming server would, against
real runc exec processes, conmon attach sockets and pod network namespaces.
One pod sandbox and its containers serve the whole module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from minikubelet.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from minikubelet.util.mountinfo import read_mount_points
from runtimes.base import model as m
from runtimes.native.main import build
from runtimes.native.server import NativeRuntime
from tests.harness.fixtures import HarnessImages
from tests.harness.registry import LocalRegistry
from tests.harness.wait import wait_until

BRIDGE = "mkbrstrm0"  # not the session runtime's mkbr0, nor the network tests' bridge
SUBNET = "10.92.0.0/24"
TIMEOUT = 10.0


class Streams:
    """Opens exec and attach streams, and closes them after the test whatever happened."""

    def __init__(self, backend: m.StreamingBackend) -> None:
        self.backend = backend
        self.opened: list[m.StreamIO] = []

    async def exec(self, cid: str, cmd: list[str], *, tty: bool, stdin: bool) -> m.StreamIO:
        stream = await self.backend.exec_stream(cid, cmd, tty=tty, stdin=stdin)
        self.opened.append(stream)
        return stream

    async def attach(self, cid: str, *, tty: bool, stdin: bool) -> m.StreamIO:
        stream = await self.backend.attach_stream(cid, tty=tty, stdin=stdin)
        self.opened.append(stream)
        return stream


@pytest.fixture
async def streams(pod: Pod) -> AsyncIterator[Streams]:
    kept = Streams(pod.runtime)
    yield kept
    for stream in kept.opened:
        await stream.close()


@dataclass
class Pod:
    runtime: NativeRuntime
    image: str
    logs: Path
    sandbox: str  # on the pod network
    sandbox_spec: m.PodSandboxSpec
    main: str = ""  # sleeps, for execs
    host_sandboxes: list[str] = field(default_factory=list)

    async def run(
        self,
        name: str,
        *command: str,
        stdin: bool = False,
        stdin_once: bool = False,
        tty: bool = False,
    ) -> str:
        spec = m.ContainerSpec(
            metadata=m.ContainerMetadata(name=name),
            image=self.image,
            command=command,
            log_path=f"{name}.log",
            stdin=stdin,
            stdin_once=stdin_once,
            tty=tty,
        )
        cid = await self.runtime.create_container(self.sandbox, spec, self.sandbox_spec)
        await self.runtime.start_container(cid)
        return cid

    async def host_sandbox(self, name: str) -> str:
        spec = sandbox_spec(name, self.logs, host_network=True)
        sandbox_id = await self.runtime.run_pod_sandbox(spec)
        self.host_sandboxes.append(sandbox_id)
        return sandbox_id


def sandbox_spec(name: str, logs: Path, *, host_network: bool = False) -> m.PodSandboxSpec:
    return m.PodSandboxSpec(
        metadata=m.SandboxMetadata(name=name, uid=f"uid-{secrets.token_hex(4)}", namespace="st"),
        hostname="" if host_network else name,
        log_directory=str(logs),
        namespaces=m.NamespaceOptions(network=2 if host_network else 0),
    )


def _mounts_under(*dirs: Path) -> list[str]:
    points = read_mount_points()
    return sorted((p for p in points if any(p.startswith(str(d)) for d in dirs)), reverse=True)


@pytest.fixture(scope="module")
async def pod(
    local_registry: LocalRegistry,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Pod]:
    if os.geteuid() != 0:
        pytest.fail("the native runtime must run as root", pytrace=False)
    base = tmp_path_factory.mktemp("native-streaming")
    run_root = Path(tempfile.mkdtemp(prefix="mk-nstream-", dir="/run"))
    runtime, images = build(base / "state", run_root, subnet=SUBNET, bridge=BRIDGE)
    sandboxes: list[str] = []
    try:
        async with images:
            await runtime.start()
            await images.pull_image(test_images.busybox, {})
            spec = sandbox_spec("streaming", base / "logs")
            sandboxes.append(await runtime.run_pod_sandbox(spec))
            pod = Pod(runtime, test_images.busybox, base / "logs", sandboxes[0], spec)
            pod.main = await pod.run("main", "sleep", "3600")
            yield pod
            sandboxes += pod.host_sandboxes
            for sandbox_id in sandboxes:
                await runtime.stop_pod_sandbox(sandbox_id)
                await runtime.remove_pod_sandbox(sandbox_id)
            sandboxes.clear()
            await runtime.namespaces.uninstall()
    finally:
        for sandbox_id in sandboxes:  # a failed setup: best effort
            with contextlib.suppress(Exception):
                await runtime.remove_pod_sandbox(sandbox_id)
        await asyncio.to_thread(_clean_host, base, run_root)
    conmons = [p for p in _pids() if str(run_root).encode() in _cmdline(p)]
    assert not conmons, f"processes of this runtime left behind: {conmons}"


def _clean_host(base: Path, run_root: Path) -> None:
    """What a failed test may leave: mounts, the bridge, the run root."""
    for point in _mounts_under(base, run_root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
    shutil.rmtree(run_root, ignore_errors=True)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def drain(stream: m.StreamIO, timeout: float = TIMEOUT) -> dict[int, bytes]:
    """All output until it ends, by channel."""
    out: dict[int, bytes] = {}
    while (chunk := await asyncio.wait_for(stream.read(), timeout)) is not None:
        out[chunk[0]] = out.get(chunk[0], b"") + chunk[1]
    return out


async def read_until(
    stream: m.StreamIO, needle: bytes, channel: int = m.STDOUT, timeout: float = TIMEOUT
) -> bytes:
    """Output of ``channel`` until it contains ``needle``."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        chunk = await asyncio.wait_for(stream.read(), max(left, 0.01))
        assert chunk is not None, f"output ended before {needle!r}: {seen!r}"
        if chunk[0] == channel:
            seen += chunk[1]
    return seen


# -- checks ----------------------------------------------------------------------------------


async def test_checks_name_missing_and_stopped_objects(pod: Pod) -> None:
    backend: m.StreamingBackend = pod.runtime  # the protocol, checked by mypy
    await backend.check_exec(pod.main)
    await backend.check_exec(pod.main[:12])  # an id prefix, as crictl users give it
    await backend.check_port_forward(pod.sandbox)
    with pytest.raises(NotFound):
        await backend.check_exec("f" * 64)
    with pytest.raises(NotFound):
        await backend.check_port_forward("f" * 64)
    with pytest.raises(NotFound):
        await backend.exec_stream("f" * 64, ["true"], tty=False, stdin=False)
    with pytest.raises(InvalidArgument):
        await backend.exec_stream(pod.main, [], tty=False, stdin=False)

    done = await pod.run("done", "true")

    async def exited() -> bool:
        return (await pod.runtime.container_status(done)).state is m.ContainerState.EXITED

    await wait_until(exited, timeout=TIMEOUT, message="the container to exit")
    for call in (
        backend.check_exec(done),
        backend.exec_stream(done, ["true"], tty=False, stdin=False),
        backend.attach_stream(done, tty=False, stdin=False),
    ):
        with pytest.raises(FailedPrecondition):
            await call

    stopped = await pod.host_sandbox("stopped")
    await pod.runtime.stop_pod_sandbox(stopped)
    with pytest.raises(FailedPrecondition):
        await backend.check_port_forward(stopped)
    with pytest.raises(FailedPrecondition):
        await backend.port_forward_connect(stopped, 80)


# -- exec ------------------------------------------------------------------------------------


async def test_exec_stdout_stderr_and_exit_codes(pod: Pod, streams: Streams) -> None:
    stream = await streams.exec(
        pod.main, ["sh", "-c", "echo out; echo err >&2"], tty=False, stdin=False
    )
    assert await drain(stream) == {m.STDOUT: b"out\n", m.STDERR: b"err\n"}
    assert await stream.wait() == 0
    await stream.close()
    await stream.close()  # idempotent

    for cmd, code in (
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "kill -9 $$"], 137),  # runc: 128 + signal, what kubectl exec shows
        (["sh", "-c", "kill -15 $$"], 143),
    ):
        stream = await streams.exec(pod.main, cmd, tty=False, stdin=False)
        assert await drain(stream) == {}
        assert await stream.wait() == code, cmd
        await stream.close()

    stream = await streams.exec(pod.main, ["no-such-command"], tty=False, stdin=False)
    output = await drain(stream)
    assert await stream.wait() == 255  # runc could not start it, and said why on stderr
    assert b"executable file not found" in output[m.STDERR]
    await stream.close()


async def test_exec_output_streams_as_it_comes_and_close_kills(pod: Pod, streams: Streams) -> None:
    stream = await streams.exec(
        pod.main, ["sh", "-c", "echo first; sleep 30; echo never"], tty=False, stdin=False
    )
    started = time.monotonic()
    assert await asyncio.wait_for(stream.read(), TIMEOUT) == (m.STDOUT, b"first\n")
    await stream.close()
    assert time.monotonic() - started < 5
    assert await stream.wait() == 137
    assert await stream.read() is None
    await stream.write_stdin(b"ignored")  # after close: nothing, no error
    await stream.resize(80, 24)


async def test_exec_stdin_round_trip(pod: Pod, streams: Streams) -> None:
    stream = await streams.exec(pod.main, ["cat"], tty=False, stdin=True)
    await stream.write_stdin(b"hello\n")
    assert await asyncio.wait_for(stream.read(), TIMEOUT) == (m.STDOUT, b"hello\n")

    # a megabyte through cat, written while read: the pipes' flow control holds
    payload = bytes(range(256)) * 4096
    reader = asyncio.create_task(drain(stream))
    for start in range(0, len(payload), 65536):
        await stream.write_stdin(payload[start : start + 65536])
    await stream.close_stdin()
    assert await reader == {m.STDOUT: payload}
    assert await stream.wait() == 0
    await stream.close()


async def test_exec_tty_sees_resizes(pod: Pod, streams: Streams) -> None:
    # runc passes a size on when it handles the SIGWINCH, a moment after resize():
    # the container reports its size until it shows the one set
    sizes = await streams.exec(
        pod.main,
        ["sh", "-c", "while true; do stty size; echo err >&2; sleep 0.05; done"],
        tty=True,
        stdin=False,
    )
    await sizes.resize(100, 40)
    await read_until(sizes, b"40 100\r\n")
    await read_until(sizes, b"err\r\n")  # stderr too: the terminal is one stream
    await sizes.resize(132, 50)
    await read_until(sizes, b"50 132\r\n")
    await sizes.close()
    assert await sizes.wait() == 137

    once = await streams.exec(pod.main, ["sh", "-c", "sleep 0.5; stty size"], tty=True, stdin=False)
    await once.resize(90, 30)
    assert b"30 90\r\n" in (await drain(once)).get(m.STDOUT, b"")
    assert await once.wait() == 0


async def test_exec_tty_input_and_eof(pod: Pod, streams: Streams) -> None:
    cat = await streams.exec(pod.main, ["cat"], tty=True, stdin=True)
    await cat.write_stdin(b"hello\n")  # maybe before runc has set up the terminal
    seen = await read_until(cat, b"hello\r\nhello\r\n")  # the echo, then cat
    assert seen == b"hello\r\nhello\r\n"  # echoed once: by the container's terminal
    await cat.close_stdin()  # ^D at the start of a line: cat reads EOF and exits
    assert await drain(cat) == {}
    assert await cat.wait() == 0


async def _execs_of(pod: Pod, cid: str) -> tuple[list[str], list[int]]:
    """The container's processes but its init, and the runc execs running in it."""
    handle = pod.runtime._handles[cid]
    dirs = await pod.runtime.oci.cgroup_dirs(handle)
    procs = (dirs["pids"] if "pids" in dirs else dirs[""]) / "cgroup.procs"
    init = str(pod.runtime._containers[cid].pid)
    others = [p for p in procs.read_text().split() if p != init]
    runcs = [p for p in _pids() if b"exec" in _cmdline(p) and cid.encode() in _cmdline(p)]
    return others, runcs


async def test_exec_leftovers_and_cancelled_starts_leave_nothing(
    pod: Pod, streams: Streams
) -> None:
    stream = await streams.exec(
        pod.main, ["sh", "-c", "sleep 100 & echo started"], tty=False, stdin=False
    )
    await read_until(stream, b"started\n")
    # sh is done, but its sleep holds the output open: runc waits for it, and so
    # does the exec (as with containerd or Docker) ...
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stream.wait(), 0.5)
    assert (await _execs_of(pod, pod.main))[0]
    await stream.close()  # ... until it is closed, which kills the sleep too
    assert await stream.wait() == 0  # sh's status
    assert await _execs_of(pod, pod.main) == ([], [])

    for delay in (0, 0.001, 0.01, 0.03, 0.1):  # the client leaves while runc starts
        task = asyncio.create_task(
            pod.runtime.exec_stream(pod.main, ["sleep", "60"], tty=delay > 0.01, stdin=True)
        )
        await asyncio.sleep(delay)
        if not task.cancel():
            await (await task).close()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def none_left() -> bool:
        return await _execs_of(pod, pod.main) == ([], [])

    await wait_until(none_left, timeout=TIMEOUT, message="the cancelled execs to be gone")


async def test_a_hundred_abandoned_execs_leave_nothing(pod: Pod) -> None:
    rt = pod.runtime
    # The loop's default executor (asyncio.to_thread) keeps its workers: grow it to
    # its limit first, so the thread count measures what the streams leave.
    await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.02) for _ in range(64)))
    fds_before = len(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()
    assert await _execs_of(pod, pod.main) == ([], [])

    commands = (["sleep", "60"], ["cat"], ["sh"])
    streams = await asyncio.gather(
        *(
            rt.exec_stream(pod.main, commands[i % 3], tty=i % 4 == 0, stdin=i % 3 != 0)
            for i in range(100)
        )
    )
    await asyncio.gather(*(s.close() for s in streams))
    assert [await s.read() for s in streams] == [None] * 100
    codes = {await s.wait() for s in streams}
    assert codes == {137}, codes  # SIGKILL, as runc reports it

    assert await _execs_of(pod, pod.main) == ([], [])
    bundle = Path(rt._handles[pod.main].bundle)
    assert not list(bundle.glob("exec-*.pid"))

    # nothing more than before (less is fine: the test process may close something of an
    # earlier test's meanwhile)
    async def released() -> bool:
        return (
            len(os.listdir("/proc/self/fd")) <= fds_before
            and threading.active_count() <= threads_before
        )

    with contextlib.suppress(BaseException):
        await wait_until(released, timeout=5, message="descriptors and threads to be released")
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert threading.active_count() <= threads_before


# -- attach ----------------------------------------------------------------------------------


async def test_attach_follows_the_output_and_leaves_the_container_running(
    pod: Pod, streams: Streams
) -> None:
    rt = pod.runtime
    ticker = await pod.run(
        "ticker", "sh", "-c", "while true; do echo tick; echo tock >&2; sleep 0.1; done"
    )
    stream = await streams.attach(ticker, tty=False, stdin=False)
    await read_until(stream, b"tick\n", m.STDOUT)
    await read_until(stream, b"tock\n", m.STDERR)
    await stream.close()
    await stream.close()
    assert await stream.wait() == 0
    await rt.check_exec(ticker)  # still running
    again = await streams.attach(ticker[:16], tty=False, stdin=False)
    await read_until(again, b"tick\n")
    await rt.stop_container(ticker, 0)
    await drain(again)  # the output ends with the container ...
    assert await again.wait() == 0
    await again.close()


async def test_attach_stdin_reaches_the_container(pod: Pod, streams: Streams) -> None:
    rt = pod.runtime
    cat = await pod.run("cat", "cat", stdin=True)
    for line in (b"ping 1\n", b"ping 2\n"):  # stdin stays open for the next client
        stream = await streams.attach(cat, tty=False, stdin=True)
        await stream.write_stdin(line)
        await read_until(stream, line)
        await stream.close()
    log = pod.logs / "cat.log"

    async def logged() -> bool:
        text = log.read_text() if log.exists() else ""
        return "stdout F ping 1" in text and "stdout F ping 2" in text

    await wait_until(logged, timeout=TIMEOUT, message="the input in the container's log")

    once = await pod.run("once", "cat", stdin=True, stdin_once=True)
    stream = await streams.attach(once, tty=False, stdin=True)
    await stream.write_stdin(b"x" * 20000 + b"\n")  # more than one message to conmon
    await read_until(stream, b"x" * 20000 + b"\n")
    await stream.close_stdin()  # cat reads EOF and exits: so does the output
    await drain(stream)
    assert await stream.wait() == 0
    await stream.close()

    async def exited() -> m.Container | None:
        c = await rt.container_status(once)
        return c if c.state is m.ContainerState.EXITED else None

    assert (
        await wait_until(exited, timeout=TIMEOUT, message="the stdin_once container to exit")
    ).exit_code == 0


async def test_attach_to_a_terminal_resizes_it(pod: Pod, streams: Streams) -> None:
    rt = pod.runtime
    shell = await pod.run("tty", "sh", stdin=True, tty=True)
    stream = await streams.attach(shell, tty=True, stdin=True)
    await stream.resize(90, 30)

    async def resized() -> bool:  # conmon handles the resize (ctl FIFO) and the input apart
        await stream.write_stdin(b"stty size\n")
        with contextlib.suppress(TimeoutError):
            await read_until(stream, b"30 90\r\n", timeout=0.5)
            return True
        return False

    await wait_until(
        resized, timeout=10, interval=0, message="the container's terminal to show the size set"
    )
    await stream.close()
    await rt.check_exec(shell)


# -- port forward ----------------------------------------------------------------------------


async def test_port_forward_into_the_pod_network(pod: Pod) -> None:
    rt = pod.runtime
    await pod.run(
        "web",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-the-pod > /www/index.html"
        " && exec httpd -f -p 127.0.0.1:8080 -h /www",
    )

    async def fetch() -> bytes | None:
        try:
            reader, writer = await rt.port_forward_connect(pod.sandbox, 8080)
        except Unavailable:
            return None  # httpd is not listening yet
        writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        await writer.wait_closed()
        return answer

    answer = await wait_until(fetch, timeout=TIMEOUT, message="httpd in the pod")
    assert answer.startswith(b"HTTP/1.") and answer.endswith(b"hello-from-the-pod\n")
    with pytest.raises(Unavailable):
        await rt.port_forward_connect(pod.sandbox, 8081)


async def test_port_forward_in_a_host_network_pod(pod: Pod) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the host: " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sandbox = await pod.host_sandbox("host")
        reader, writer = await pod.runtime.port_forward_connect(sandbox, port)
        writer.write(b"hi\n")
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"hello from the host: hi\n"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
