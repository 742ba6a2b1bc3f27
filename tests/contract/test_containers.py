"""Containers: create, start, status, logs, exec, stop, remove, filters and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import AlreadyExists, CRIError, InvalidArgument, NotFound
from minikubelet.logs import crilog
from tests.contract.conftest import RuntimeUnderTest
from tests.contract.pods import container_config, pod, sandbox_config, wait_exited


async def test_container_runs_prints_and_exits_with_its_code(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with pod(cri, sb_config) as sandbox_id:
        config = container_config(
            rt.busybox,
            "worker",
            ["sh", "-c", "echo hello; echo oops >&2; sleep 0.2; echo bye; exit 3"],
        )
        cid = await cri.create_container(sandbox_id, config, sb_config)
        created = (await cri.container_status(cid)).status
        assert created.state == pb.CONTAINER_CREATED
        assert created.metadata == config.metadata
        assert created.labels["suite"] == "contract"
        assert created.annotations["example.com/container-note"] == "worker"
        assert "sha256:" in created.image_ref  # an image ID or a repo digest
        assert created.created_at > 0

        await cri.start_container(cid)
        status = await wait_exited(cri, cid)
        assert status.exit_code == 3
        assert status.reason == "Error"
        assert status.started_at >= status.created_at
        assert status.finished_at >= status.started_at
        assert status.log_path == str(log_dir / "worker" / "0.log")

        lines = [
            crilog.parse_line(raw)
            for raw in (log_dir / "worker" / "0.log").read_text().splitlines()
        ]
        assert [(line.stream, line.message) for line in lines if line.stream == "stdout"] == [
            ("stdout", "hello"),
            ("stdout", "bye"),
        ]
        assert [line.message for line in lines if line.stream == "stderr"] == ["oops"]
        assert all(not line.partial for line in lines)

        await cri.remove_container(cid)
        with pytest.raises(NotFound):
            await cri.container_status(cid)
        await cri.remove_container(cid)  # already gone: fine


async def test_successful_exit_is_completed(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with pod(cri, sb_config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(rt.busybox, "ok", ["true"]), sb_config
        )
        await cri.start_container(cid)
        status = await wait_exited(cri, cid)
        assert (status.exit_code, status.reason) == (0, "Completed")


async def test_stop_running_container_and_exec(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with pod(cri, sb_config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(rt.busybox, "sleeper", ["sleep", "3600"]), sb_config
        )
        await cri.start_container(cid)
        running = (await cri.container_status(cid)).status
        assert running.state == pb.CONTAINER_RUNNING
        assert running.started_at > 0

        echo = await cri.exec_sync(cid, ["echo", "from", "exec"], timeout=10)
        assert (echo.exit_code, echo.stdout) == (0, b"from exec\n")
        assert (await cri.exec_sync(cid, ["sh", "-c", "exit 7"], timeout=10)).exit_code == 7
        assert (await cri.exec_sync(cid, ["false"], timeout=10)).exit_code == 1
        env = await cri.exec_sync(cid, ["sh", "-c", 'echo "$GREETING"'], timeout=10)
        assert env.stdout == b"hello\n"
        missing = await cri.exec_sync(cid, ["cat", "/no/such/file"], timeout=10)
        assert missing.exit_code == 1 and b"No such file" in missing.stderr

        await cri.stop_container(cid, 0)
        stopped = (await cri.container_status(cid)).status
        assert stopped.state == pb.CONTAINER_EXITED
        assert stopped.exit_code == 137  # SIGKILL after a zero grace period
        await cri.stop_container(cid, 0)  # stopping twice is fine

        with pytest.raises(CRIError):
            await cri.exec_sync(cid, ["true"], timeout=5)
        with pytest.raises(CRIError):
            await cri.start_container(cid)  # an exited container does not start again


async def test_stopping_the_sandbox_stops_its_containers(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    sandbox_id = await cri.run_pod_sandbox(sb_config)
    cid = await cri.create_container(
        sandbox_id, container_config(rt.busybox, "long", ["sleep", "3600"]), sb_config
    )
    await cri.start_container(cid)
    await cri.stop_pod_sandbox(sandbox_id)
    assert (await cri.container_status(cid)).status.state == pb.CONTAINER_EXITED
    await cri.remove_pod_sandbox(sandbox_id)
    with pytest.raises(NotFound):
        await cri.container_status(cid)  # removing a sandbox removes its containers


async def test_list_containers_filters(cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path) -> None:
    sb_a, sb_b = sandbox_config(log_dir), sandbox_config(log_dir)
    async with pod(cri, sb_a) as a, pod(cri, sb_b) as b:
        c1 = await cri.create_container(
            a, container_config(rt.busybox, "one", ["sleep", "3600"], labels={"k": "1"}), sb_a
        )
        c2 = await cri.create_container(
            a, container_config(rt.busybox, "two", ["sleep", "3600"], labels={"k": "2"}), sb_a
        )
        c3 = await cri.create_container(
            b, container_config(rt.busybox, "three", ["sleep", "3600"], labels={"k": "1"}), sb_b
        )
        await cri.start_container(c1)

        def ids(items: object) -> set[str]:
            return {c.id for c in items}  # type: ignore[attr-defined]

        assert ids(await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=a))) == {c1, c2}
        assert ids(
            await cri.list_containers(
                pb.ContainerFilter(
                    pod_sandbox_id=a, state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)
                )
            )
        ) == {c1}
        both = ids(await cri.list_containers(pb.ContainerFilter(label_selector={"k": "1"})))
        assert {c1, c3} <= both and c2 not in both
        [one] = await cri.list_containers(pb.ContainerFilter(id=c3))
        assert one.pod_sandbox_id == b
        assert one.metadata.name == "three"
        assert one.labels["k"] == "1"
        assert one.state == pb.CONTAINER_CREATED
        assert "sha256:" in one.image_ref


async def test_same_container_name_twice_is_a_conflict(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with pod(cri, sb_config) as sandbox_id:
        config = container_config(rt.busybox, "twin", ["true"])
        first = await cri.create_container(sandbox_id, config, sb_config)
        with pytest.raises(CRIError) as err:
            await cri.create_container(sandbox_id, config, sb_config)
        assert "reserved" in err.value.message
        if rt.ours:
            assert isinstance(err.value, AlreadyExists)
        # the next attempt of the same container is a different name
        retry = container_config(rt.busybox, "twin", ["true"], attempt=1)
        assert await cri.create_container(sandbox_id, retry, sb_config) != first


async def test_unknown_ids_are_not_found(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    with pytest.raises(NotFound):
        await cri.container_status("f" * 64)
    with pytest.raises(NotFound):
        await cri.start_container("f" * 64)
    with pytest.raises(NotFound):
        await cri.exec_sync("f" * 64, ["true"], timeout=5)


async def test_container_in_unknown_sandbox_or_of_unknown_image(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    with pytest.raises(NotFound):
        await cri.create_container(
            "e" * 64, container_config(rt.busybox, "orphan", ["true"]), sb_config
        )
    async with pod(cri, sb_config) as sandbox_id:
        with pytest.raises(CRIError) as err:
            await cri.create_container(
                sandbox_id, container_config(rt.missing_image, "noimage", ["true"]), sb_config
            )
        assert "not found" in err.value.message
        if rt.ours:
            assert isinstance(err.value, NotFound)
        # nothing half-created
        assert not await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id))


async def test_container_without_metadata_is_refused(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with pod(cri, sb_config) as sandbox_id:
        bad = pb.ContainerConfig(image=pb.ImageSpec(image=rt.busybox))
        with pytest.raises(CRIError) as err:
            await cri.create_container(sandbox_id, bad, sb_config)
        if rt.ours:
            assert isinstance(err.value, InvalidArgument)
            assert "metadata is required" in err.value.message


async def test_stats_of_a_running_container_and_its_pod(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with pod(cri, sb_config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(rt.busybox, "busy", ["sleep", "3600"]), sb_config
        )
        await cri.start_container(cid)
        stats = (await cri.container_stats(cid)).stats
        assert stats.attributes.id == cid
        assert stats.attributes.metadata.name == "busy"
        assert stats.cpu.timestamp > 0
        try:
            pod_stats = await cri.pod_sandbox_stats(sandbox_id)
        except CRIError:
            # containerd 1.6 wants a pod cgroup (cgroup_parent) for it; ours always answer
            assert not rt.ours
            return
        assert pod_stats.attributes.id == sandbox_id
        assert pod_stats.attributes.metadata == sb_config.metadata
        assert cid in [c.attributes.id for c in pod_stats.linux.containers]
