"""The Docker runtime's streaming backend on a real dockerd: exec, attach and port-forward.

The backend methods are driven directly (no streaming HTTP server): one in-process
DockerRuntime on the session's dockerd, one pod for the whole module with a
container per purpose. Nothing may stay behind a closed stream: no exec process
in the container, no descriptor or thread in this process.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from minikubelet.errors import FailedPrecondition, NotFound, Unavailable
from runtimes.base import model as m
from runtimes.docker.client import DockerClient
from runtimes.docker.images import DockerImages, Mirror
from runtimes.docker.pause import PauseImage
from runtimes.docker.server import DockerRuntime
from tests.harness.dockerd import Dockerd
from tests.harness.fixtures import HUB_NAMESPACE, HarnessImages
from tests.harness.registry import LocalRegistry
from tests.harness.wait import wait_until

TICKER = 'i=0; while true; do echo "tick $i"; echo "tock $i" >&2; i=$((i+1)); sleep 0.1; done'
WEB = (
    "mkdir -p /www && echo 'hello from the pod' > /www/index.html"
    " && exec httpd -f -p 127.0.0.1:8080 -h /www"
)
READ_TIMEOUT = 15.0


@dataclass
class Pod:
    runtime: DockerRuntime
    client: DockerClient
    sandbox_id: str
    sleeper: str  # sleep 3600: the exec target
    ticker: str  # stdout and stderr lines, ten a second
    cat: str  # stdin open, no TTY: echoes what it reads
    shell: str  # TTY and stdin: an interactive sh
    web: str  # busybox httpd on 127.0.0.1:8080 of the pod's network namespace
    created: str  # never started

    @property
    def backend(self) -> m.StreamingBackend:
        return self.runtime


def _sandbox_spec(name: str, *, network: int = 0) -> m.PodSandboxSpec:
    uid = f"uid-{os.getpid()}-{name}-{time.monotonic_ns()}"
    return m.PodSandboxSpec(
        metadata=m.SandboxMetadata(name=name, uid=uid, namespace="streaming"),
        hostname="" if network == 2 else name,
        namespaces=m.NamespaceOptions(network=network),
    )


async def _container(
    runtime: DockerRuntime,
    sandbox_id: str,
    sandbox: m.PodSandboxSpec,
    image: str,
    name: str,
    command: tuple[str, ...],
    *,
    stdin: bool = False,
    tty: bool = False,
    start: bool = True,
) -> str:
    spec = m.ContainerSpec(
        metadata=m.ContainerMetadata(name=name),
        image=image,
        command=command,
        stdin=stdin,
        tty=tty,
    )
    container_id = await runtime.create_container(sandbox_id, spec, sandbox)
    if start:
        await runtime.start_container(container_id)
    return container_id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pod(
    dockerd: Dockerd, local_registry: LocalRegistry, test_images: HarnessImages
) -> AsyncIterator[Pod]:
    """An in-process Docker runtime and one pod with a container for each kind of test.

    No container has a log file, so no log copier (and none of its file-writing
    threads) runs while the descriptor and thread counts are compared.
    """
    client = DockerClient(dockerd.host)
    pause = PauseImage(client)
    images = DockerImages(
        client,
        mirrors=[Mirror.parse(f"{HUB_NAMESPACE}=http://{local_registry.host}")],
        pinned=(pause.tag,),
    )
    runtime = DockerRuntime(client, images, pause=pause)
    serving = asyncio.create_task(runtime.run(), name="docker-streaming-test-runtime")
    sandbox_id = ""
    try:
        await asyncio.sleep(0)  # let run() set up its task group
        image = test_images.busybox
        await images.pull_image(image, {})
        spec = _sandbox_spec("streaming")
        sandbox_id = await runtime.run_pod_sandbox(spec)

        async def make(name: str, command: tuple[str, ...], **kwargs: bool) -> str:
            return await _container(runtime, sandbox_id, spec, image, name, command, **kwargs)

        ticker = await make("ticker", ("sh", "-c", TICKER))
        sleeper, cat, shell, web, created = await asyncio.gather(
            make("sleeper", ("sleep", "3600")),
            make("cat", ("cat",), stdin=True),
            make("shell", ("sh",), stdin=True, tty=True),
            make("web", ("sh", "-c", WEB)),
            make("created", ("true",), start=False),
        )
        yield Pod(runtime, client, sandbox_id, sleeper, ticker, cat, shell, web, created)
    finally:
        try:
            if sandbox_id:
                await runtime.stop_pod_sandbox(sandbox_id)
                await runtime.remove_pod_sandbox(sandbox_id)
        finally:
            serving.cancel()
            await asyncio.wait([serving])
            await client.close()


async def read_all(stream: m.StreamIO, timeout: float = READ_TIMEOUT) -> dict[int, bytes]:
    """Everything the stream outputs until it ends, per channel."""
    out = {m.STDOUT: b"", m.STDERR: b""}
    async with asyncio.timeout(timeout):
        while (chunk := await stream.read()) is not None:
            channel, data = chunk
            out[channel] += data
    return out


async def read_until(
    stream: m.StreamIO, done: Callable[[dict[int, bytes]], bool], timeout: float = READ_TIMEOUT
) -> dict[int, bytes]:
    """Output, per channel, until ``done`` says it is enough (failing if the stream ends first)."""
    out = {m.STDOUT: b"", m.STDERR: b""}
    async with asyncio.timeout(timeout):
        while not done(out):
            chunk = await stream.read()
            assert chunk is not None, f"the stream ended early: {out}"
            channel, data = chunk
            out[channel] += data
    return out


def stdout_has(text: bytes) -> Callable[[dict[int, bytes]], bool]:
    return lambda out: text in out[m.STDOUT]


async def run(pod: Pod, cmd: list[str]) -> tuple[dict[int, bytes], int]:
    stream = await pod.backend.exec_stream(pod.sleeper, cmd, tty=False, stdin=False)
    try:
        output = await read_all(stream)
        return output, await stream.wait()
    finally:
        await stream.close()


async def exec_processes(pod: Pod, marker: str) -> list[str]:
    """Command lines of the sleeper container's processes that contain ``marker``."""
    top = await pod.client.top(pod.sleeper)
    return [p[-1] for p in top.get("Processes") or [] if marker in p[-1]]


async def wait_processes(pod: Pod, marker: str, count: int) -> list[str]:
    async def enough() -> list[str] | None:
        found = await exec_processes(pod, marker)
        return found if len(found) >= count else None

    return await wait_until(
        enough, timeout=READ_TIMEOUT, message=f"{count} processes with {marker!r}"
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


# -- the checks inside the CRI calls --------------------------------------------------------


async def test_checks_refuse_missing_and_stopped_objects(pod: Pod) -> None:
    backend = pod.backend
    await backend.check_exec(pod.sleeper)
    await backend.check_exec(pod.sleeper[:12])
    await backend.check_port_forward(pod.sandbox_id)
    with pytest.raises(NotFound):
        await backend.check_exec("0123456789ab")
    with pytest.raises(NotFound):
        await backend.check_exec(pod.sandbox_id)  # a sandbox is not a container
    with pytest.raises(FailedPrecondition):
        await backend.check_exec(pod.created)
    with pytest.raises(FailedPrecondition):
        await backend.exec_stream(pod.created, ["true"], tty=False, stdin=False)
    with pytest.raises(FailedPrecondition):
        await backend.attach_stream(pod.created, tty=False, stdin=False)
    with pytest.raises(NotFound):
        await backend.check_port_forward("0123456789ab")
    with pytest.raises(NotFound):  # an error answer instead of 101 UPGRADED
        await pod.client.start_exec_stream("no-such-exec", tty=False)
    with pytest.raises(NotFound):
        await backend.check_port_forward(pod.sleeper)  # a container is not a sandbox


# -- exec -----------------------------------------------------------------------------------


async def test_exec_keeps_stdout_and_stderr_apart_and_reports_exit_codes(pod: Pod) -> None:
    output, code = await run(pod, ["sh", "-c", "echo out; echo err >&2"])
    assert output == {m.STDOUT: b"out\n", m.STDERR: b"err\n"}
    assert code == 0

    output, code = await run(pod, ["sh", "-c", "exit 3"])
    assert output == {m.STDOUT: b"", m.STDERR: b""}
    assert code == 3

    output, code = await run(pod, ["/no/such/program"])
    assert code == 126  # dockerd: the runtime could not start it
    assert b"no such file or directory" in output[m.STDOUT] + output[m.STDERR]


async def test_exec_stdin_round_trip(pod: Pod) -> None:
    payload = b"".join(b"line %06d of the input\n" % i for i in range(20_000))  # ~480 KiB
    stream = await pod.backend.exec_stream(pod.sleeper, ["cat"], tty=False, stdin=True)
    try:

        async def feed() -> None:
            for start in range(0, len(payload), 50_000):
                await stream.write_stdin(payload[start : start + 50_000])
            await stream.close_stdin()

        feeding = asyncio.create_task(feed())
        output = await read_all(stream)
        await feeding
        assert output[m.STDOUT] == payload
        assert output[m.STDERR] == b""
        assert await stream.wait() == 0
    finally:
        await stream.close()
        await stream.close()  # idempotent


async def test_tty_exec_sees_the_resize(pod: Pod) -> None:
    stream = await pod.backend.exec_stream(pod.sleeper, ["sh"], tty=True, stdin=True)
    try:
        await stream.resize(77, 33)
        await stream.write_stdin(b"stty size\n")
        output = await read_until(stream, stdout_has(b"33 77"))
        assert output[m.STDERR] == b""  # one terminal: everything is on stdout

        await stream.resize(120, 40)
        await stream.write_stdin(b"stty size; exit 5\n")
        rest = await read_all(stream)
        assert b"40 120" in rest[m.STDOUT]
        assert await stream.wait() == 5
    finally:
        await stream.close()


async def test_tty_exec_ends_at_the_end_of_its_input(pod: Pod) -> None:
    stream = await pod.backend.exec_stream(pod.sleeper, ["sh"], tty=True, stdin=True)
    try:
        await stream.write_stdin(b"echo still-$((40 + 2))\n")
        await read_until(stream, stdout_has(b"still-42"))
        await stream.close_stdin()  # the shell reads end-of-file and exits
        await read_all(stream)
        assert await stream.wait() == 0
    finally:
        await stream.close()


async def test_closing_an_exec_kills_its_process_tree(pod: Pod) -> None:
    marker = "sleep 61"
    stream = await pod.backend.exec_stream(
        pod.sleeper, ["sh", "-c", f"{marker}; echo never"], tty=False, stdin=False
    )
    assert len(await wait_processes(pod, marker, 2)) == 2  # the shell and its sleep
    await stream.close()
    assert await exec_processes(pod, marker) == []
    assert await stream.read() is None
    assert await stream.wait() == 137  # SIGKILL


async def test_a_hundred_exec_streams_closed_unwaited_leave_nothing_behind(pod: Pod) -> None:
    marker = "sleep 60"
    await run(pod, ["true"])  # the client's session exists before the baseline
    fds, tasks = open_fds(), threads()

    commands = [
        ["sleep", "60"] if i % 2 else ["sh", "-c", "sleep 60; echo never"] for i in range(100)
    ]
    streams = await asyncio.gather(
        *(pod.backend.exec_stream(pod.sleeper, cmd, tty=False, stdin=False) for cmd in commands)
    )
    found = await wait_processes(pod, marker, 150)  # 50 of them are shells running a sleep
    assert found.count(marker) == 100
    await asyncio.gather(*(stream.close() for stream in streams))

    assert await exec_processes(pod, marker) == []
    assert await pod.runtime.container_status(pod.sleeper)  # the container itself runs on
    assert [await s.read() for s in streams[:3]] == [None, None, None]

    def released() -> bool:
        # nothing more than before (less is fine: the test process may close something of
        # an earlier test's meanwhile)
        assert open_fds() <= fds and threads() <= tasks, (
            f"fds {fds} -> {open_fds()}, threads {tasks} -> {threads()}"
        )
        return True

    await wait_until(
        released, timeout=5, message="fds and threads released", ignoring=(AssertionError,)
    )


async def test_an_exec_cancelled_while_it_starts_leaves_no_process(pod: Pod) -> None:
    marker = "sleep 62"

    async def start_then_close() -> None:
        stream = await pod.backend.exec_stream(pod.sleeper, ["sleep", "62"], tty=False, stdin=False)
        await stream.close()  # reached only if not cancelled first

    tasks = [asyncio.create_task(start_then_close()) for _ in range(30)]
    for i, task in enumerate(tasks):
        await asyncio.sleep(0.002 * (i % 10))  # cancelled at every stage of the start
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    # a close cancelled in its turn goes on in the background, and ends soon
    async def none_left() -> bool:
        left = await exec_processes(pod, marker)
        assert not left, f"left running: {left}"
        return True

    await wait_until(none_left, timeout=5, message="no process left", ignoring=(AssertionError,))


# -- attach ---------------------------------------------------------------------------------


async def test_attach_follows_the_output_from_now_on(pod: Pod) -> None:
    async def ticked() -> bool:  # the ticker has printed before the attach
        logs = pod.client.logs(pod.ticker, tty=False, follow=False)
        return any(b"tick 0\n" in data for data in [d async for batch in logs for _, d in batch])

    await wait_until(ticked, timeout=READ_TIMEOUT, message="the ticker's first tick")
    stream = await pod.backend.attach_stream(pod.ticker, tty=False, stdin=False)
    try:

        def ticks(out: dict[int, bytes]) -> list[int]:
            return [int(n) for n in re.findall(rb"tick (\d+)\n", out[m.STDOUT])]

        output = await read_until(stream, lambda out: len(ticks(out)) >= 3)
        seen = ticks(output)
        assert seen[0] > 0, "attach replayed output from before it"
        assert seen == list(range(seen[0], seen[0] + len(seen)))
        assert b"tock" not in output[m.STDOUT]
        assert re.search(rb"tock \d+\n", output[m.STDERR])
        await stream.resize(80, 24)  # no TTY: nothing to do
    finally:
        await stream.close()
    assert await stream.read() is None
    assert await stream.wait() == 0
    status = await pod.runtime.container_status(pod.ticker)
    assert status.state == m.ContainerState.RUNNING


async def test_attach_stdin_reaches_the_container(pod: Pod) -> None:
    for word in (b"first", b"second"):  # the container's stdin stays open between attaches
        stream = await pod.backend.attach_stream(pod.cat, tty=False, stdin=True)
        try:
            await stream.write_stdin(word + b"\n")
            output = await read_until(stream, stdout_has(word + b"\n"))
            assert output[m.STDOUT] == word + b"\n"
            await stream.close_stdin()  # not StdinOnce: the container keeps its stdin
        finally:
            await stream.close()
    status = await pod.runtime.container_status(pod.cat)
    assert status.state == m.ContainerState.RUNNING


async def test_tty_attach_resizes_the_containers_terminal(pod: Pod) -> None:
    stream = await pod.backend.attach_stream(pod.shell, tty=True, stdin=True)
    try:
        await stream.resize(99, 41)
        await stream.write_stdin(b"stty size\n")
        await read_until(stream, stdout_has(b"41 99"))
    finally:
        await stream.close()
    status = await pod.runtime.container_status(pod.shell)
    assert status.state == m.ContainerState.RUNNING


# -- port-forward ---------------------------------------------------------------------------


async def test_port_forward_reaches_localhost_inside_the_pod(pod: Pod) -> None:
    # httpd listens on the pod's 127.0.0.1 only: no address outside the pod reaches it
    reader, writer = await wait_until(
        lambda: pod.backend.port_forward_connect(pod.sandbox_id, 8080),
        timeout=15,
        interval=0.1,
        message="httpd in the pod to listen",
        ignoring=(Unavailable,),  # not yet
    )
    try:
        writer.write(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT):
            response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert response.startswith(b"HTTP/1.")
    assert b" 200 " in response.split(b"\r\n")[0]
    assert response.endswith(b"hello from the pod\n")

    with pytest.raises(Unavailable):
        await pod.backend.port_forward_connect(pod.sandbox_id, 8081)  # nothing listens


async def test_port_forward_to_a_host_network_sandbox_reaches_the_nodes_localhost(
    pod: Pod,
) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the node\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = _sandbox_spec("host-net", network=2)
    sandbox_id = await pod.runtime.run_pod_sandbox(spec)
    try:
        await pod.backend.check_port_forward(sandbox_id)
        reader, writer = await pod.backend.port_forward_connect(sandbox_id, port)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                assert await reader.read() == b"hello from the node\n"
        finally:
            writer.close()
            await writer.wait_closed()

        await pod.runtime.stop_pod_sandbox(sandbox_id)
        with pytest.raises(FailedPrecondition):
            await pod.backend.check_port_forward(sandbox_id)
        with pytest.raises(FailedPrecondition):
            await pod.backend.port_forward_connect(sandbox_id, port)
    finally:
        await pod.runtime.remove_pod_sandbox(sandbox_id)
        server.close()
        await server.wait_closed()
