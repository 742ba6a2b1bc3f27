"""Pod sandboxes: run, status, list filters, conflicts, stop and remove."""

from __future__ import annotations

from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import AlreadyExists, CRIError, InvalidArgument, NotFound
from tests.contract.conftest import RuntimeUnderTest
from tests.contract.pods import pod, sandbox_config


async def test_sandbox_lifecycle(cri: CRIClient, log_dir: Path) -> None:
    config = sandbox_config(log_dir, labels={"tier": "web"})
    sandbox_id = await cri.run_pod_sandbox(config)
    status = (await cri.pod_sandbox_status(sandbox_id)).status
    assert status.id == sandbox_id
    assert status.state == pb.SANDBOX_READY
    assert status.metadata == config.metadata
    assert status.created_at > 0
    assert status.labels["tier"] == "web"
    assert status.annotations["example.com/note"] == config.annotations["example.com/note"]
    assert status.network.ip, "a pod-network sandbox has an IP"

    await cri.stop_pod_sandbox(sandbox_id)
    assert (await cri.pod_sandbox_status(sandbox_id)).status.state == pb.SANDBOX_NOTREADY
    await cri.stop_pod_sandbox(sandbox_id)  # stopping twice is fine

    await cri.remove_pod_sandbox(sandbox_id)
    with pytest.raises(NotFound):
        await cri.pod_sandbox_status(sandbox_id)
    await cri.remove_pod_sandbox(sandbox_id)  # removing twice is fine
    assert sandbox_id not in {s.id for s in await cri.list_pod_sandbox()}


async def test_list_filters(cri: CRIClient, log_dir: Path) -> None:
    mark = f"filters-{id(log_dir)}"
    a_config = sandbox_config(log_dir, labels={"mark": mark, "role": "a"})
    b_config = sandbox_config(log_dir, labels={"mark": mark, "role": "b"})
    async with pod(cri, a_config) as a, pod(cri, b_config) as b:
        await cri.stop_pod_sandbox(b)

        def ids(items: object) -> set[str]:
            return {s.id for s in items}  # type: ignore[attr-defined]

        assert ids(
            await cri.list_pod_sandbox(pb.PodSandboxFilter(label_selector={"mark": mark}))
        ) == {a, b}
        assert ids(
            await cri.list_pod_sandbox(
                pb.PodSandboxFilter(label_selector={"mark": mark, "role": "b"})
            )
        ) == {b}
        assert ids(
            await cri.list_pod_sandbox(
                pb.PodSandboxFilter(
                    label_selector={"mark": mark},
                    state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY),
                )
            )
        ) == {a}
        only = await cri.list_pod_sandbox(pb.PodSandboxFilter(id=a))
        assert [s.id for s in only] == [a]
        assert only[0].metadata == a_config.metadata
        assert only[0].labels["role"] == "a"


async def test_same_metadata_twice_is_a_conflict(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    config = sandbox_config(log_dir)
    async with pod(cri, config):
        with pytest.raises(CRIError) as err:
            await cri.run_pod_sandbox(config)
        assert "reserved" in err.value.message
        if rt.ours:
            assert isinstance(err.value, AlreadyExists)
    # once removed, the name is free again
    async with pod(cri, config) as again:
        assert again


async def test_host_network_sandbox(cri: CRIClient, log_dir: Path) -> None:
    async with pod(cri, sandbox_config(log_dir, host_network=True)) as sandbox_id:
        status = (await cri.pod_sandbox_status(sandbox_id)).status
        assert status.state == pb.SANDBOX_READY
        assert status.linux.namespaces.options.network == pb.NODE


async def test_unknown_sandbox_is_not_found(cri: CRIClient) -> None:
    with pytest.raises(NotFound):
        await cri.pod_sandbox_status("0" * 64)


async def test_sandbox_without_metadata_is_refused(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    with pytest.raises(CRIError) as err:
        await cri.run_pod_sandbox(pb.PodSandboxConfig(log_directory=str(log_dir)))
    if rt.ours:
        assert isinstance(err.value, InvalidArgument)
        assert "metadata is required" in err.value.message


async def test_empty_ids_are_refused(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    with pytest.raises(CRIError) as err:
        await cri.pod_sandbox_status("")
    if rt.ours:
        assert isinstance(err.value, InvalidArgument)
        assert "pod_sandbox_id is required" in err.value.message
