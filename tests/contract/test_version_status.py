"""Handshake and runtime status: what the kubelet asks first."""

from __future__ import annotations

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import Unimplemented
from tests.contract.conftest import RuntimeUnderTest


async def test_version_answers_runtime_v1(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    info = await cri.version()
    assert info.runtime_api_version == "v1"
    assert info.runtime_name
    assert info.runtime_version
    if rt.name == "fake":
        assert info.runtime_name == "minikubelet-fake"
    elif rt.name == "native":
        assert info.runtime_name == "minikubelet-native"
    elif rt.name == "docker":
        assert info.runtime_name == "docker"
        assert info.runtime_version[0].isdigit()  # the engine version, as dockershim said
    else:
        assert info.runtime_name == "containerd"


async def test_status_reports_runtime_and_network_ready(cri: CRIClient) -> None:
    status = await cri.status()
    conditions = {c.type: c.status for c in status.status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}


async def test_runtime_config_names_a_cgroup_driver(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    if rt.ours:
        resp = await cri.runtime_config()
        assert resp.linux.cgroup_driver == pb.CGROUPFS
    else:  # containerd 1.6 predates the RuntimeConfig RPC
        with pytest.raises(Unimplemented):
            await cri.runtime_config()


async def test_the_trace_recorded_the_handshake(cri: CRIClient) -> None:
    assert cri.recorder is not None
    versions = [r for r in cri.recorder.records() if r.method == "Version"]
    assert versions
    assert versions[0].service == "RuntimeService"
    assert versions[0].code == "OK"
    assert versions[0].details["runtime_api_version"] == "v1"
