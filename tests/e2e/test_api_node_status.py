"""``minikubelet run --kubeconfig`` keeps its Node and its Lease in a real cluster.

As a person would check it: ``kubectl get nodes -o wide`` shows the node Ready with
its OS image, kernel, container runtime and internal IP; the Lease in
``kube-node-lease`` is renewed every 10 s; a Node deleted with kubectl comes back;
the local API's ``/status`` (the TUI's header) gives the API server, the Ready
condition and the last renewal. The node is tainted NoSchedule so that no other
test's pods land on it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from minikubelet.nodestatus import KUBELET_VERSION
from tests.e2e.node import FAST, Node
from tests.harness.controlplane import ControlPlane
from tests.harness.wait import wait_until

NAME = "api-node-status"


async def get(cp: ControlPlane, *args: str) -> Any:
    done = await asyncio.to_thread(cp.kubectl, "get", *args, "-o", "json")
    return json.loads(done.stdout) if done.returncode == 0 else None


def ready_status(node: dict[str, Any] | None) -> str | None:
    for cond in ((node or {}).get("status") or {}).get("conditions") or ():
        if cond["type"] == "Ready":
            return str(cond["status"])
    return None


async def test_node_and_lease_kept_by_minikubelet_run(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    node = Node(
        tmp_path,
        runtime="fake",
        node_name=NAME,
        extra_args=(
            *FAST,
            "--kubeconfig",
            str(control_plane.node_kubeconfig(NAME)),
            "--node-ip",
            "127.0.0.1",
            "--register-with-taints",
            "minikubelet.test/node-status=true:NoSchedule",
        ),
    )
    node.start()
    try:
        await node.wait_ready()

        async def ready() -> dict[str, Any] | None:
            got = await get(control_plane, "node", NAME)
            return got if ready_status(got) == "True" else None

        got = await wait_until(ready, timeout=60, interval=0.2, message="the Node Ready")
        info = got["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"] == "minikubelet-fake://0.1.0"
        wide = await asyncio.to_thread(
            control_plane.kubectl, "get", "nodes", NAME, "-o", "wide", "--no-headers"
        )
        assert wide.returncode == 0, wide.stderr
        assert wide.stdout.split()[:2] == [NAME, "Ready"]
        for shown in (
            KUBELET_VERSION,
            "127.0.0.1",
            info["osImage"],
            info["kernelVersion"],
            "minikubelet-fake://0.1.0",
        ):
            assert shown in wide.stdout, (shown, wide.stdout)

        # The Lease: held by the node for 40 s, owned by its Node, renewed.
        uid = got["metadata"]["uid"]

        async def lease_owned() -> dict[str, Any] | None:
            lease = await get(control_plane, "lease", "-n", "kube-node-lease", NAME)
            owners = ((lease or {}).get("metadata") or {}).get("ownerReferences") or []
            return lease if [o["uid"] for o in owners] == [uid] else None

        lease = await wait_until(lease_owned, timeout=30, interval=0.5, message="the Lease")
        assert lease["spec"]["holderIdentity"] == NAME
        assert lease["spec"]["leaseDurationSeconds"] == 40
        first_renewal = lease["spec"]["renewTime"]

        async def renewed() -> str | None:
            lease = await get(control_plane, "lease", "-n", "kube-node-lease", NAME)
            renew = ((lease or {}).get("spec") or {}).get("renewTime")
            return renew if renew and renew > first_renewal else None

        await wait_until(renewed, timeout=25, interval=0.5, message="the Lease renewed")

        # The local API's /status, as the TUI reads it.
        async with node.client() as client:
            status = await client.status()
        api = status["apiServer"]
        assert api["server"] == control_plane.url
        assert api["nodeReady"] == "True" and isinstance(api["leaseRenewed"], float)

        # Deleted through the API, the Node is registered again within a tick (10 s).
        done = await asyncio.to_thread(control_plane.kubectl, "delete", "node", NAME)
        assert done.returncode == 0, done.stderr

        async def back() -> dict[str, Any] | None:
            got = await get(control_plane, "node", NAME)
            return got if got and got["metadata"]["uid"] != uid else None

        again = await wait_until(back, timeout=30, interval=0.5, message="the Node back")
        assert again["metadata"]["labels"]["kubernetes.io/hostname"] == NAME
        await wait_until(ready, timeout=30, interval=0.5, message="the Node Ready again")
    finally:
        assert node.stop() == 0
        await asyncio.to_thread(
            control_plane.kubectl, "delete", "node", NAME, "--ignore-not-found", "--wait=false"
        )
    assert "Traceback" not in node.log(), node.log()[-6000:]
