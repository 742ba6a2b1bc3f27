"""``minikubelet leave`` in parts: which pods are evicted, what a refused eviction says, the
retry until the budget allows it or time runs out, the running node found by its socket,
and the identity files removed."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from minikubelet.bootstrap.certmanager import key_pem, new_key, node_csr
from minikubelet.bootstrap.identity import SERVER_PREFIX, Identity
from minikubelet.cli import leave
from minikubelet.cli.leave import LeaveError, blocked_by, node_name_of, plan, remove_identity
from minikubelet.kubeapi.client import ApiException
from tests.unit.test_certmanager import CA, DAY, START


def pod(name: str, *, mirror: bool = False, owner: str | None = None) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace="default",
            uid=f"uid-{name}",
            annotations={"kubernetes.io/config.mirror": "abc"} if mirror else None,
            owner_references=(
                [k8s.V1OwnerReference(api_version="apps/v1", kind=owner, name="o", uid="u")]
                if owner
                else None
            ),
        )
    )


def test_plan_leaves_mirror_and_daemonset_pods() -> None:
    result = plan(
        [
            pod("web"),
            pod("static-n1", mirror=True),
            pod("ds", owner="DaemonSet"),
            pod("rs", owner="ReplicaSet"),
        ]
    )
    assert [p.metadata.name for p in result.evict] == ["web", "rs"]
    assert [p.metadata.name for p in result.mirror] == ["static-n1"]
    assert [p.metadata.name for p in result.daemonset] == ["ds"]


BUDGET = "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"


def too_many(message: str = BUDGET) -> ApiException:
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.body = json.dumps(
        {
            "kind": "Status",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget", "message": message}]},
        }
    ).encode()
    return exc


def test_a_refused_eviction_names_the_budget() -> None:
    assert "web-pdb" in blocked_by(too_many())
    plain = ApiException(status=500, reason="Internal")
    plain.body = json.dumps({"message": "This pod has more than one PodDisruptionBudget"}).encode()
    assert blocked_by(plain) == "This pod has more than one PodDisruptionBudget"
    assert blocked_by(ApiException(status=403, reason="Forbidden")) == "Forbidden"


class Core:
    """Evictions refused ``refusals`` times, then accepted."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    async def create_namespaced_pod_eviction(self, name: str, namespace: str, body: Any) -> None:
        self.calls += 1
        assert body.api_version == "policy/v1" and body.metadata.name == name
        if self.calls <= self.refusals:
            raise too_many()


async def test_eviction_retries_with_back_off_until_the_budget_allows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    core = Core(refusals=3)
    slept: list[float] = []
    t = [0.0]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        t[0] += seconds

    await leave.evict(core, pod("web"), deadline=100, sleep=sleep, now=lambda: t[0])  # type: ignore[arg-type]
    assert core.calls == 4
    assert slept == [1.0, 2.0, 4.0]
    out = capsys.readouterr().out
    assert out.count("cannot be evicted yet") == 1  # said once while it says the same
    assert "web-pdb" in out and "evicted pod default/web" in out


async def test_eviction_gives_up_at_the_deadline_naming_the_budget() -> None:
    core = Core(refusals=1000)
    t = [0.0]

    async def sleep(seconds: float) -> None:
        t[0] += seconds

    with pytest.raises(LeaveError, match=r"could not be evicted in time.*web-pdb"):
        await leave.evict(core, pod("web"), deadline=30, sleep=sleep, now=lambda: t[0])  # type: ignore[arg-type]
    assert t[0] <= 30


def test_the_running_node_is_found_by_its_socket(tmp_path: Path) -> None:
    assert leave.running_node(tmp_path) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "kubelet.sock"))
        server.listen(1)
        assert leave.running_node(tmp_path) == os.getpid()
    assert leave.running_node(tmp_path) is None  # a socket file nobody answers on
    assert leave._alive(os.getpid())


def test_identity_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    ca = CA()
    identity = Identity(tmp_path)
    key = new_key()
    identity.store_pair(ca.sign(node_csr(key, "n1"), START, DAY, server=False), key_pem(key))
    identity.store_pair(
        ca.sign(node_csr(key, "n1", ["n1"]), START, DAY, server=True),
        key_pem(key),
        prefix=SERVER_PREFIX,
    )
    identity.write_kubeconfig("https://127.0.0.1:6443", ca.pem)
    identity.write_bootstrap_kubeconfig("https://127.0.0.1:6443", ca.pem, "abcdef.0123456789abcdef")
    identity.write_cluster_ca(ca.pem)
    (tmp_path / "pki" / "kubelet.crt").write_text("self-signed serving")
    (tmp_path / "pods").mkdir()
    assert node_name_of(identity) == "n1"
    removed = remove_identity(identity)
    assert len(removed) == 7  # 2 kubeconfigs, the CA, 2 pairs and their 2 links
    assert not identity.joined()
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == ["kubelet.crt"]
    assert (tmp_path / "pods").is_dir()
    assert node_name_of(identity) is None
    assert remove_identity(identity) == []
