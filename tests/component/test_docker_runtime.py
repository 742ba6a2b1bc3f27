"""The Docker-backed runtime on a real dockerd: what the contract suite does not reach.

A restart of the runtime server loses nothing (all state comes back from Docker
labels, logs go on without a gap or a duplicate); a dockerd that goes away is
reported and, once back, used again without help; bad input is refused with a
clear error and leaves nothing behind; the CRI log file has every line with its
stream and tags, and survives rotation through ReopenContainerLog; the
container's configuration reaches the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import (
    CRIError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    Unimplemented,
)
from minikubelet.logs import crilog
from runtimes.docker.client import DockerClient
from tests.contract.pods import container_config, pod, sandbox_config, wait_exited
from tests.harness.dockerd import Dockerd, RuntimeServer
from tests.harness.fixtures import BUSYBOX_TAG, HUB_NAMESPACE, HarnessImages
from tests.harness.images import build_busybox_image, build_user_image, push_image
from tests.harness.registry import LocalRegistry, free_port
from tests.harness.wait import wait_until

COUNTER = 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.05; done'
SANDBOX_LABEL = "io.minikubelet.cri.sandbox"


@pytest.fixture
def server(
    dockerd: Dockerd, local_registry: LocalRegistry, test_images: HarnessImages
) -> Iterator[RuntimeServer]:
    """A runtime server of this test's own (so it can be restarted), on the session dockerd."""
    socket_dir = Path(tempfile.mkdtemp(prefix="mk-dk-", dir="/tmp"))
    runtime = RuntimeServer(
        socket_dir,
        dockerd.host,
        registry_mirrors=[f"{HUB_NAMESPACE}=http://{local_registry.host}"],
    )
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        log = runtime.log()
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
async def busybox(docker_runtime: RuntimeServer, test_images: HarnessImages) -> str:
    """The busybox reference, pulled into the session's dockerd."""
    async with connected(docker_runtime) as cri:
        await cri.pull_image(test_images.busybox)
    return test_images.busybox


@pytest.fixture
def log_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mk-dklogs-") as tmp:
        yield Path(tmp)


@contextlib.asynccontextmanager
async def connected(runtime: RuntimeServer) -> AsyncIterator[CRIClient]:
    async with CRIClient(runtime.endpoint, timeout=60) as cri:
        yield cri


@contextlib.asynccontextmanager
async def docker_api(dockerd: Dockerd) -> AsyncIterator[DockerClient]:
    client = DockerClient(dockerd.host)
    try:
        yield client
    finally:
        await client.close()


def log_lines(path: Path) -> list[crilog.LogLine]:
    if not path.exists():
        return []
    return [crilog.parse_line(raw) for raw in path.read_text().splitlines()]


def counted(lines: list[crilog.LogLine]) -> list[int]:
    return [int(line.message.split()[1]) for line in lines if line.message.startswith("line ")]


async def wait_lines(path: Path, at_least: int) -> list[crilog.LogLine]:
    async def enough() -> list[crilog.LogLine] | None:
        lines = log_lines(path)
        return lines if len(lines) >= at_least else None

    return await wait_until(enough, timeout=30, message=f"{at_least} lines in {path}")


# -- a restart of the runtime server --------------------------------------------------------


async def test_a_restarted_runtime_server_rebuilds_everything_from_docker(
    server: RuntimeServer, dockerd: Dockerd, test_images: HarnessImages, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir, labels={"tier": "restart"})
    async with connected(server) as cri:
        await cri.pull_image(test_images.busybox)
        sandbox_id = await cri.run_pod_sandbox(sb_config)
        talker = await cri.create_container(
            sandbox_id, container_config(test_images.busybox, "talker", ["sh", "-c", COUNTER]),
            sb_config,
        )  # fmt: skip
        quitter = await cri.create_container(
            sandbox_id,
            container_config(test_images.busybox, "quitter", ["sh", "-c", "echo bye; exit 4"]),
            sb_config,
        )
        idle = await cri.create_container(
            sandbox_id, container_config(test_images.busybox, "idle", ["true"]), sb_config
        )
        await cri.start_container(talker)
        await cri.start_container(quitter)
        await wait_exited(cri, quitter)
        talker_log = log_dir / "talker" / "0.log"
        await wait_lines(talker_log, 3)
        before_sandbox = (await cri.pod_sandbox_status(sandbox_id)).status
        before = {cid: (await cri.container_status(cid)).status for cid in (talker, quitter, idle)}
        before_list = sorted(
            (c.SerializeToString(deterministic=True) for c in await cri.list_containers()),
        )

    server.stop()
    # the container goes on printing while no runtime server runs
    written = len(log_lines(talker_log))
    async with docker_api(dockerd) as docker:

        async def docker_has_more() -> bool | None:
            frames = [
                f async for batch in docker.logs(talker, tty=False, follow=False) for f in batch
            ]
            return True if len(frames) > written + 5 else None

        await wait_until(docker_has_more, timeout=30, message="output while the server is down")

    server.start()
    async with connected(server) as cri:
        assert (await cri.pod_sandbox_status(sandbox_id)).status == before_sandbox
        for cid, status in before.items():
            assert (await cri.container_status(cid)).status == status
        after_list = sorted(
            (c.SerializeToString(deterministic=True) for c in await cri.list_containers()),
        )
        assert after_list == before_list
        quit_status = before[quitter]
        assert (quit_status.state, quit_status.exit_code, quit_status.reason) == (
            pb.CONTAINER_EXITED,
            4,
            "Error",
        )
        assert before_sandbox.labels["tier"] == "restart"
        assert before_sandbox.metadata == sb_config.metadata

        # the log file catches up with what was printed meanwhile, then keeps flowing
        lines = await wait_lines(talker_log, written + 10)
        numbers = counted(lines)
        assert numbers == list(range(len(numbers))), "a gap or a duplicate in the log"
        assert all(line.stream == "stdout" and not line.partial for line in lines)

        await cri.stop_pod_sandbox(sandbox_id)
        await cri.remove_pod_sandbox(sandbox_id)
    assert dockerd.containers(label=f"{SANDBOX_LABEL}={sandbox_id}") == []


# -- dockerd going away and coming back -----------------------------------------------------


@pytest.fixture
def own_dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """A dockerd of this test's own, which it stops and starts."""
    daemon = Dockerd(tmp_path_factory.mktemp("own-dockerd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


async def test_status_follows_dockerd_going_away_and_coming_back(
    own_dockerd: Dockerd, test_images: HarnessImages, log_dir: Path
) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="mk-dk-", dir="/tmp"))
    # a container that ends on SIGTERM, as dockerd sends when it shuts down
    counter = f"trap 'exit 0' TERM; {COUNTER}"
    try:
        with RuntimeServer(socket_dir, own_dockerd.host) as runtime:
            async with connected(runtime) as cri:

                async def conditions() -> dict[str, pb.RuntimeCondition]:
                    status = await cri.status()
                    return {c.type: c for c in status.status.conditions}

                assert all(c.status for c in (await conditions()).values())
                await cri.pull_image(test_images.busybox)
                sb_config = sandbox_config(log_dir)
                # its own PID namespace: the end of pause would SIGKILL it otherwise
                sb_config.linux.security_context.namespace_options.pid = pb.CONTAINER
                sandbox_id = await cri.run_pod_sandbox(sb_config)
                talker = await cri.create_container(
                    sandbox_id,
                    container_config(test_images.busybox, "talker", ["sh", "-c", counter]),
                    sb_config,
                )
                await cri.start_container(talker)
                talker_log = log_dir / "talker" / "0.log"
                await wait_lines(talker_log, 3)

                own_dockerd.halt()

                async def not_ready() -> dict[str, pb.RuntimeCondition] | None:
                    found = await conditions()
                    return None if found["RuntimeReady"].status else found

                down = await wait_until(not_ready, timeout=30, message="RuntimeReady false")
                assert down["RuntimeReady"].reason == "DockerDaemonNotAvailable"
                assert own_dockerd.socket_path in down["RuntimeReady"].message
                assert not down["NetworkReady"].status
                with pytest.raises(Unavailable):
                    await cri.run_pod_sandbox(sandbox_config(log_dir))
                with pytest.raises(Unavailable):
                    await cri.version()

                own_dockerd.start()

                async def ready() -> bool | None:
                    return True if all(c.status for c in (await conditions()).values()) else None

                await wait_until(ready, timeout=30, message="RuntimeReady true again")
                version = await cri.version()
                engine = own_dockerd.api("GET", "/version")[1]["Version"]
                assert (version.runtime_name, version.runtime_version) == ("docker", engine)

                # dockerd stopped the pod when it went: the status says so, and the log
                # holds everything the container printed, up to its end
                sandbox = (await cri.pod_sandbox_status(sandbox_id)).status
                assert sandbox.state == pb.SANDBOX_NOTREADY
                ended = (await cri.container_status(talker)).status
                assert (ended.state, ended.exit_code) == (pb.CONTAINER_EXITED, 0)
                numbers = counted(log_lines(talker_log))
                assert len(numbers) >= 3 and numbers == list(range(len(numbers)))
                async with docker_api(own_dockerd) as docker:
                    frames = [
                        f
                        async for batch in docker.logs(talker, tty=False, follow=False)
                        for f in batch
                    ]
                assert len(frames) == len(numbers), "the log file missed output"
                await cri.remove_pod_sandbox(sandbox_id)

                async with pod(cri, sandbox_config(log_dir)) as sandbox_id:
                    status = (await cri.pod_sandbox_status(sandbox_id)).status
                    assert status.state == pb.SANDBOX_READY
                    ip = ipaddress.ip_address(status.network.ip)
                    assert own_dockerd.subnet is not None and ip in own_dockerd.subnet
            assert "Traceback" not in runtime.log()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container_paths", "says"),
    [
        (["relative/path"], "must be an absolute path"),
        (["/data", "/data"], "Duplicate mount point"),  # dockerd's own check
    ],
    ids=["relative", "duplicate"],
)
async def test_a_bad_mount_is_refused_and_leaves_no_container(
    server: RuntimeServer,
    dockerd: Dockerd,
    busybox: str,
    log_dir: Path,
    tmp_path: Path,
    container_paths: list[str],
    says: str,
) -> None:
    sb_config = sandbox_config(log_dir)
    async with connected(server) as cri, pod(cri, sb_config) as sandbox_id:
        config = container_config(busybox, "mounts", ["true"])
        for i, path in enumerate(container_paths):
            host = tmp_path / f"vol{i}"
            host.mkdir()
            config.mounts.append(pb.Mount(container_path=path, host_path=str(host)))
        with pytest.raises(InvalidArgument) as err:
            await cri.create_container(sandbox_id, config, sb_config)
        assert says in err.value.message
        assert not await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id))
        assert dockerd.containers(label=f"{SANDBOX_LABEL}={sandbox_id}") == []


async def test_a_container_that_cannot_start_is_reported_exited_with_the_reason(
    server: RuntimeServer, busybox: str, log_dir: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    sb_config = sandbox_config(log_dir)
    async with connected(server) as cri, pod(cri, sb_config) as sandbox_id:
        config = container_config(busybox, "misfit", ["true"])
        config.mounts.append(pb.Mount(container_path="/bin", host_path=str(a_file)))
        cid = await cri.create_container(sandbox_id, config, sb_config)
        with pytest.raises(CRIError) as err:
            await cri.start_container(cid)
        assert "not a directory" in err.value.message
        status = (await cri.container_status(cid)).status
        assert (status.state, status.reason) == (pb.CONTAINER_EXITED, "StartError")
        assert status.exit_code != 0 and "not a directory" in status.message
        [listed] = await cri.list_containers(pb.ContainerFilter(id=cid))
        assert listed.state == pb.CONTAINER_EXITED
        await cri.remove_container(cid)
        assert not await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id))


async def test_a_sandbox_whose_infra_cannot_start_leaves_nothing_behind(
    server: RuntimeServer, dockerd: Dockerd, log_dir: Path
) -> None:
    port = free_port()
    sb_config = sandbox_config(log_dir, name="busy-port")
    sb_config.port_mappings.append(
        pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=port, host_ip="127.0.0.1")
    )
    async with connected(server) as cri:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            with pytest.raises(CRIError) as err:
                await cri.run_pod_sandbox(sb_config)
            assert "address already in use" in err.value.message
            assert not await cri.list_pod_sandbox(
                pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.name": "busy-port"})
            )
            assert [c for c in dockerd.containers() if "_busy-port_" in c["Names"][0]] == []
        # the name is free: once the port is, the same sandbox runs
        async with pod(cri, sb_config) as sandbox_id:
            status = (await cri.pod_sandbox_status(sandbox_id)).status
            assert status.state == pb.SANDBOX_READY


async def test_exec_past_its_timeout_is_a_deadline_and_the_command_is_killed(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(busybox, "sh", ["sleep", "3600"]), sb_config
        )
        await cri.start_container(cid)
        with pytest.raises(DeadlineExceeded):
            await cri.exec_sync(cid, ["sleep", "77"], timeout=1)

        async def gone() -> bool | None:
            ps = await cri.exec_sync(cid, ["ps", "-o", "args"], timeout=10)
            return None if b"sleep 77" in ps.stdout else True

        await wait_until(gone, timeout=10, message="the timed-out command to be killed")


# -- logs ---------------------------------------------------------------------------------------


async def test_the_cri_log_has_every_line_with_its_stream_and_tags(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    script = (
        "echo out1; echo err1 >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; "
        "echo 'ünïcode  spaced'; printf 'no newline'"
    )
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(busybox, "printer", ["sh", "-c", script]),
            sb_config,
        )  # fmt: skip
        await cri.start_container(cid)
        await wait_exited(cri, cid)
        lines = log_lines(log_dir / "printer" / "0.log")
    stdout = [(line.partial, line.message) for line in lines if line.stream == "stdout"]
    assert stdout == [
        (False, "out1"),
        (True, "x" * 16384),  # dockerd cuts lines at 16 KiB: a partial piece, then the rest
        (False, "x" * (20000 - 16384)),
        (False, "ünïcode  spaced"),
        (False, "no newline"),
    ]
    assert [(line.partial, line.message) for line in lines if line.stream == "stderr"] == [
        (False, "err1")
    ]
    stamps = [line.timestamp for line in lines]
    assert all(s.endswith("Z") for s in stamps)


async def test_the_log_has_both_streams_whole_once_the_container_is_reported_exited(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    count = 1000
    script = f'i=0; while [ $i -lt {count} ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done'
    names = [
        "both-1",
        "both-2",
        "both-3",
    ]  # dockerd files the streams out of order often, not always
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:

        async def run(name: str) -> list[crilog.LogLine]:
            config = container_config(busybox, name, ["sh", "-c", script])
            cid = await cri.create_container(sandbox_id, config, sb_config)
            await cri.start_container(cid)
            await wait_exited(cri, cid)
            return log_lines(log_dir / name / "0.log")  # read at once: EXITED means complete

        logs = await asyncio.gather(*(run(name) for name in names))
    for name, lines in zip(names, logs, strict=True):
        for stream, word in (("stdout", "out"), ("stderr", "err")):
            got = [line.message for line in lines if line.stream == stream]
            assert got == [f"{word} {i}" for i in range(count)], f"{name}: {stream} lost lines"


async def test_reopen_container_log_moves_output_to_a_fresh_file(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(busybox, "rotated", ["sh", "-c", COUNTER]),
            sb_config,
        )  # fmt: skip
        await cri.start_container(cid)
        path = log_dir / "rotated" / "0.log"
        await wait_lines(path, 3)
        rotated = path.with_name("0.log.20260101-000000")
        os.rename(path, rotated)
        await cri.reopen_container_log(cid)
        assert path.exists()
        await wait_lines(path, 3)
        numbers = counted(log_lines(rotated)) + counted(log_lines(path))
        assert numbers == list(range(len(numbers))), "a gap or a duplicate across the rotation"

        await cri.stop_container(cid, 0)
        with pytest.raises(FailedPrecondition):
            await cri.reopen_container_log(cid)  # only a running container has a log to reopen


# -- configuration reaches the container ---------------------------------------------------------


async def test_sandbox_and_container_config_reach_the_container(
    docker_runtime: RuntimeServer, dockerd: Dockerd, busybox: str, log_dir: Path, tmp_path: Path
) -> None:
    assert dockerd.subnet is not None
    dns = str(dockerd.subnet.network_address + 53)  # never asked: nothing here resolves names
    port = free_port()
    sb_config = sandbox_config(log_dir, name="configured")
    sb_config.dns_config.CopyFrom(
        pb.DNSConfig(servers=[dns], searches=["svc.example"], options=["ndots:3"])
    )
    sb_config.port_mappings.append(
        pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=port, host_ip="127.0.0.1")
    )
    sb_config.linux.security_context.namespace_options.pid = pb.POD
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from the host\n")
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        sandbox = (await cri.pod_sandbox_status(sandbox_id)).status
        assert ipaddress.ip_address(sandbox.network.ip) in dockerd.subnet

        config = container_config(busybox, "app", ["sh", "-c"])
        config.args.append("echo served > /srv/index.html; exec httpd -f -p 8080 -h /srv")
        config.working_dir = "/srv"
        config.mounts.append(pb.Mount(container_path="/srv", host_path=str(tmp_path / "www")))
        config.mounts.append(
            pb.Mount(container_path="/shared", host_path=str(shared), readonly=True)
        )
        config.linux.security_context.readonly_rootfs = True
        config.linux.security_context.capabilities.drop_capabilities.append("CHOWN")
        config.linux.resources.memory_limit_in_bytes = 64 << 20
        config.linux.resources.oom_score_adj = 1000
        cid = await cri.create_container(sandbox_id, config, sb_config)
        await cri.start_container(cid)

        async def run(*cmd: str) -> pb.ExecSyncResponse:
            return await cri.exec_sync(cid, list(cmd), timeout=10)

        assert (await run("hostname")).stdout == b"configured\n"
        resolv = (await run("cat", "/etc/resolv.conf")).stdout.decode()
        assert f"nameserver {dns}" in resolv
        assert "search svc.example" in resolv
        assert "options ndots:3" in resolv
        assert (await run("pwd")).stdout == b"/srv\n"
        assert (await run("sh", "-c", 'echo "$GREETING"')).stdout == b"hello\n"
        assert (await run("cat", "/proc/1/cmdline")).stdout == b"/pause\x00"  # a shared PID ns
        assert (await run("cat", "/shared/hello.txt")).stdout == b"from the host\n"
        assert (await run("touch", "/shared/x")).exit_code != 0  # a read-only mount
        assert (await run("touch", "/etc/x")).exit_code != 0  # a read-only root filesystem
        assert (await run("chown", "65534", "/srv/index.html")).exit_code != 0  # CAP_CHOWN dropped
        limit = await run("cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert limit.stdout == str(64 << 20).encode() + b"\n"
        assert (await run("cat", "/proc/self/oom_score_adj")).stdout == b"1000\n"

        def fetch() -> bytes:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/index.html")
                return conn.getresponse().read()
            finally:
                conn.close()

        async def served() -> bytes | None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                return await asyncio.to_thread(fetch)
            return None

        assert await wait_until(served, timeout=10, message="the published port") == b"served\n"


def _mask(status: str, field: str) -> int:
    return next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith(field))


async def test_privileged_and_all_capabilities_run_with_what_the_host_has(
    docker_runtime: RuntimeServer, dockerd: Dockerd, busybox: str, log_dir: Path
) -> None:
    """Docker's Privileged asks for every capability Docker knows; a host whose bounding set
    lacks one (CAP_SYS_RESOURCE here) makes runc fail with "unable to apply caps". In the
    same pod: RunAsGroup without a user and an image volume are refused, naming why."""
    bounding = _mask(Path(f"/proc/{dockerd.pid}/status").read_text(), "CapBnd")
    known = (1 << 38) - 1  # CAP_CHOWN .. CAP_AUDIT_READ: what every dockerd knows
    device = next(  # a host device no container gets unless privileged
        name for name in ("kmsg", "loop-control", "fuse", "kvm") if Path("/dev", name).exists()
    )
    script = (
        f"grep -E '^(CapEff|Seccomp):' /proc/self/status; ls /dev/{device}; "
        "echo masked $(grep -c ' /proc/kcore ' /proc/self/mountinfo)"
    )
    sb_config = sandbox_config(log_dir, name="privileged")
    sb_config.linux.security_context.privileged = True
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        privileged = container_config(busybox, "privileged", ["sh", "-c", script])
        privileged.linux.security_context.privileged = True
        privileged.linux.security_context.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
        every = container_config(busybox, "all-caps", ["grep", "^CapEff:", "/proc/self/status"])
        every.linux.security_context.capabilities.add_capabilities.append("ALL")
        for config in (privileged, every):
            cid = await cri.create_container(sandbox_id, config, sb_config)
            await cri.start_container(cid)
            status = await wait_exited(cri, cid)
            assert (status.exit_code, status.message) == (0, "")

        # RunAsGroup without RunAsUser is refused, as the CRI asks, and nothing is made
        grouped = container_config(busybox, "grouped", ["id"])
        grouped.linux.security_context.run_as_group.value = 3000
        with pytest.raises(InvalidArgument, match="without user"):
            await cri.create_container(sandbox_id, grouped, sb_config)
        # so is an image volume: dockerd's API 1.41 has no image mounts
        imaged = container_config(busybox, "imaged", ["true"])
        imaged.mounts.append(pb.Mount(container_path="/data", image=pb.ImageSpec(image=busybox)))
        with pytest.raises(Unimplemented, match=f"image volume '{re.escape(busybox)}'"):
            await cri.create_container(sandbox_id, imaged, sb_config)
        names = [c.metadata.name for c in await cri.list_containers()]
        assert "grouped" not in names and "imaged" not in names

    out = "\n".join(line.message for line in log_lines(log_dir / "privileged" / "0.log"))
    status_text = out.replace("\t", " ")
    cap_eff = _mask(status_text, "CapEff:")
    assert cap_eff & ~bounding == 0 and cap_eff & known == bounding & known
    assert "Seccomp: 0" in status_text  # no profile, RuntimeDefault asked or not
    assert f"/dev/{device}" in out
    assert out.endswith("\nmasked 0")  # /proc/kcore not masked
    all_line = "\n".join(line.message for line in log_lines(log_dir / "all-caps" / "0.log"))
    assert _mask(all_line.replace("\t", " "), "CapEff:") == cap_eff


async def test_an_oom_score_below_the_daemons_is_not_applied_and_the_container_runs(
    docker_runtime: RuntimeServer, dockerd: Dockerd, busybox: str, log_dir: Path
) -> None:
    daemon_score = Path(f"/proc/{dockerd.pid}/oom_score_adj").read_text().strip()
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        config = container_config(busybox, "guaranteed", ["cat", "/proc/self/oom_score_adj"])
        config.linux.resources.oom_score_adj = -997  # what the kubelet gives Guaranteed pods
        cid = await cri.create_container(sandbox_id, config, sb_config)
        await cri.start_container(cid)
        status = await wait_exited(cri, cid)
        assert status.exit_code == 0
        [line] = log_lines(log_dir / "guaranteed" / "0.log")
        assert int(line.message) >= int(daemon_score)


async def test_a_tty_container_logs_its_lines(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        config = container_config(busybox, "tty", ["sh", "-c", "echo one; echo two"])
        config.tty = True
        cid = await cri.create_container(sandbox_id, config, sb_config)
        await cri.start_container(cid)
        await wait_exited(cri, cid)
        lines = log_lines(log_dir / "tty" / "0.log")
    assert [(line.stream, line.message) for line in lines] == [("stdout", "one"), ("stdout", "two")]


# -- images -------------------------------------------------------------------------------------


async def test_a_mirrored_registry_serves_pulls_under_the_asked_name(
    docker_runtime: RuntimeServer,
    local_registry: LocalRegistry,
    busybox: str,
    test_images: HarnessImages,
    log_dir: Path,
) -> None:
    digest = test_images.busybox_digest
    async with connected(docker_runtime) as cri:
        image_ref = await cri.pull_image(test_images.hub_busybox)  # docker.io/library/busybox:1.36
        image = await cri.image_status("busybox:1.36")
        assert image is not None and image.id == image_ref
        assert "docker.io/library/busybox:1.36" in image.repo_tags
        assert f"docker.io/library/busybox@{digest}" in image.repo_digests
        assert image.size > 0
        assert await cri.pull_image(f"docker.io/library/busybox@{digest}") == image_ref
        by_digest = await cri.image_status(f"docker.io/library/busybox@{digest}")
        assert by_digest is not None and by_digest.id == image_ref
        pulled = [
            r
            for r in local_registry.requests()
            if r.path.startswith("/v2/library/busybox/") and "docker/" in r.user_agent
        ]
        assert pulled, "dockerd did not pull from the mirror"

        # the infra image is the runtime's own, built here, and pinned against image GC
        async with pod(cri, sandbox_config(log_dir)):
            pause = [
                i
                for i in await cri.list_images()
                if "docker.io/minikubelet/pause:3.9" in i.repo_tags
            ]
        assert len(pause) == 1 and pause[0].pinned
        assert not pause[0].repo_digests  # never pulled from anywhere


@pytest.fixture(scope="module")
def mirrored_image(
    local_registry: LocalRegistry,
    test_images: HarnessImages,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, str]:
    """An image of its own (busybox plus a user) on the mirror of docker.io, under three
    names: ``library/mirrored:1.0``, ``library/mirrored:alias`` and ``library/bydigest:1.0``;
    the manifest digest."""
    cache = getattr(request.config, "cache", None)
    cache_dir = (
        cache.mkdir("minikubelet-test-images")
        if cache is not None
        else tmp_path_factory.mktemp("images")
    )
    image = build_user_image(cache_dir, build_busybox_image(cache_dir, tag=BUSYBOX_TAG))
    for name, tag in (("mirrored", "1.0"), ("mirrored", "alias"), ("bydigest", "1.0")):
        push_image(image, local_registry.host, f"library/{name}", tag)
    return "docker.io/library/mirrored", image.manifest_digest


async def test_images_pulled_through_a_mirror_show_only_the_names_asked_for(
    docker_runtime: RuntimeServer,
    dockerd: Dockerd,
    local_registry: LocalRegistry,
    mirrored_image: tuple[str, str],
) -> None:
    repository, digest = mirrored_image
    by_digest = f"docker.io/library/bydigest@{digest}"
    async with connected(docker_runtime) as cri, docker_api(dockerd) as docker:
        image_id = await cri.pull_image(f"{repository}:1.0")
        assert await cri.pull_image(by_digest) == image_id
        tags = [f"{repository}:1.0"]
        digests = [by_digest, f"{repository}@{digest}"]
        status = await cri.image_status(f"{repository}:1.0")
        assert status is not None
        assert (list(status.repo_tags), list(status.repo_digests)) == (tags, digests)
        assert await cri.image_status(by_digest) == status
        listed = await cri.list_images()
        assert [(list(i.repo_tags), list(i.repo_digests)) for i in listed if i.id == image_id] == [
            (tags, digests)
        ]
        mirror_names = [
            name
            for image in listed
            for name in (*image.repo_tags, *image.repo_digests)
            if name.startswith(f"{local_registry.host}/library/")
        ]
        assert mirror_names == []

        await cri.pull_image(f"{repository}:alias")  # a second tag of the same image
        status = await cri.image_status(image_id)
        assert status is not None and list(status.repo_tags) == [
            f"{repository}:1.0",
            f"{repository}:alias",
        ]

        # removed by one tag, the image goes with every name it had, the mirror's too
        await cri.remove_image(f"{repository}:alias")
        for name in (f"{repository}:1.0", f"{repository}:alias", by_digest, image_id):
            assert await cri.image_status(name) is None, name
        assert image_id not in {i.id for i in await cri.list_images()}
        with pytest.raises(CRIError):
            await docker.inspect_image(f"{local_registry.host}/library/mirrored:1.0")

        # removals of one image at once all succeed, by whatever name they give
        for _ in range(4):  # dockerd's failures of a racing removal come often, not always
            image_id = await cri.pull_image(f"{repository}:1.0")
            names = [f"{repository}:1.0", image_id, image_id[len("sha256:") :]] * 4
            await asyncio.gather(*(cri.remove_image(name) for name in names))
            assert await cri.image_status(image_id) is None


# -- stats and events ---------------------------------------------------------------------------


async def test_container_stats_of_a_running_container(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    script = "dd if=/dev/zero of=/tmp/f bs=1024 count=512 2>/dev/null; echo ready; sleep 3600"
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(busybox, "busy", ["sh", "-c", script]),
            sb_config,
        )  # fmt: skip
        await cri.start_container(cid)
        await wait_lines(log_dir / "busy" / "0.log", 1)
        stats = (await cri.container_stats(cid)).stats
        assert stats.attributes.id == cid
        assert stats.attributes.metadata.name == "busy"
        assert stats.cpu.usage_core_nano_seconds.value > 0
        assert stats.memory.working_set_bytes.value > 0
        assert stats.writable_layer.used_bytes.value >= 512 * 1024
        listed = await cri.list_container_stats(pb.ContainerStatsFilter(pod_sandbox_id=sandbox_id))
        assert [s.attributes.id for s in listed] == [cid]
        await cri.stop_container(cid, 0)
        assert not await cri.list_container_stats(
            pb.ContainerStatsFilter(pod_sandbox_id=sandbox_id)
        )


async def test_container_events_follow_a_container_through_its_life(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        seen: list[pb.ContainerEventResponse] = []

        async def collect() -> None:
            async for event in cri.container_events():
                seen.append(event)

        collector = asyncio.create_task(collect())
        try:
            # the stream starts listening at some point after the call: live through
            # container lives until one was seen from its beginning to its end
            for attempt in range(5):
                config = container_config(busybox, "ev", ["true"], attempt=attempt)
                cid = await cri.create_container(sandbox_id, config, sb_config)
                await cri.start_container(cid)
                await wait_exited(cri, cid)
                await cri.remove_container(cid)

                async def whole_life(cid: str = cid) -> list[int] | None:
                    kinds = [int(e.container_event_type) for e in seen if e.container_id == cid]
                    return kinds if pb.CONTAINER_DELETED_EVENT in kinds else None

                kinds = await wait_until(whole_life, timeout=10, message="the DELETED event")
                if pb.CONTAINER_CREATED_EVENT in kinds:
                    break
            assert kinds == [
                pb.CONTAINER_CREATED_EVENT,
                pb.CONTAINER_STARTED_EVENT,
                pb.CONTAINER_STOPPED_EVENT,
                pb.CONTAINER_DELETED_EVENT,
            ]
            started = next(e for e in seen if e.container_id == cid and e.container_event_type == 1)
            assert started.pod_sandbox_status.id == sandbox_id
            assert started.containers_statuses[0].metadata.name == "ev"
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--docker-host", "tcp://127.0.0.1:2375"], "expected unix:///PATH"),
        (["--registry-mirror", "docker.io"], "expected HOST=URL"),
    ],
)
def test_serve_docker_refuses_bad_flags(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from minikubelet.cli import main

    code = main(["runtime", "serve", "docker", "--listen", "unix:///tmp/mk-unused.sock", *flags])
    assert code == 1
    assert says in capsys.readouterr().err


async def test_the_hello_manifest_runs_through_the_docker_runtime(
    docker_runtime: RuntimeServer,
) -> None:
    """``minikubelet demo`` (the kubelet's calls for one pod) on manifests/hello.yaml."""
    manifest = Path(__file__).resolve().parents[2] / "manifests" / "hello.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "minikubelet", "demo", str(manifest),
        "--runtime", docker_runtime.endpoint,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode()[-3000:]
    text = out.decode()
    assert "hello: hello from minikubelet" in text and "hello: goodbye" in text
    for method in ("ImageStatus", "RunPodSandbox", "StartContainer", "RemovePodSandbox"):
        assert method in text


async def test_a_container_over_its_memory_limit_is_oom_killed(
    docker_runtime: RuntimeServer, busybox: str, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with connected(docker_runtime) as cri, pod(cri, sb_config) as sandbox_id:
        config = container_config(busybox, "hog", ["tail", "/dev/zero"])  # one endless line
        config.linux.resources.memory_limit_in_bytes = 16 << 20
        cid = await cri.create_container(sandbox_id, config, sb_config)
        await cri.start_container(cid)
        status = await wait_exited(cri, cid, timeout=60)
        assert (status.exit_code, status.reason) == (137, "OOMKilled")
