"""A static pod on the native runtime with an image volume and a Localhost seccomp
profile, as Kubernetes 1.31+ runs it on containerd 2.1 or CRI-O.

The kubelet pulls the volume's image (its ``pullPolicy``), the runtime mounts it
read-only at ``/img`` (and a ``subPath`` of it at ``/tools``); the pod's
``localhostProfile`` is found under the node's ``<root-dir>/seccomp`` and denies
``mkdir``. Checked through ``minikubelet get pods -o json`` and what the container
prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from tests.e2e.node import ROOT, Node, container_status, phase, runtime_node
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime

NODE_NAME = "fidelity-iv"

#: Everything allowed but mkdir and mkdirat, which fail with EPERM.
DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}

POD = """apiVersion: v1
kind: Pod
metadata:
  name: imgvol
spec:
  restartPolicy: Never
  securityContext:
    seccompProfile:
      type: Localhost
      localhostProfile: profiles/deny-mkdir.json
  volumes:
    - name: busybox-image
      image:
        reference: busybox:1.36
        pullPolicy: IfNotPresent
  containers:
    - name: main
      image: busybox:1.36
      command:
        - sh
        - -c
        - |
          ls /img/bin/busybox
          ls /tools/busybox
          touch /img/written 2>&1 || echo read-only
          mkdir /tmp/made 2>&1 || echo mkdir-denied
          touch /tmp/file && echo tmp-writable
      volumeMounts:
        - {name: busybox-image, mountPath: /img}
        - {name: busybox-image, mountPath: /tools, subPath: bin}
"""


@pytest.fixture(scope="module")
async def node(
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    async with runtime_node(
        tmp_path_factory.mktemp("fidelity-iv"), native_runtime.endpoint, NODE_NAME
    ) as node:
        yield node
    assert "Traceback" not in native_runtime.log(), native_runtime.log()[-4000:]


def get_pods_json(node: Node) -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "minikubelet", "get", "pods", "-o", "json"),
            *("--root-dir", str(node.root_dir)),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return {p["metadata"]["name"]: p for p in json.loads(done.stdout)["items"]}


async def test_image_volume_and_localhost_seccomp_profile(node: Node) -> None:
    profile = node.root_dir / "seccomp" / "profiles" / "deny-mkdir.json"
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps(DENY_MKDIR))
    node.add_manifest("imgvol.yaml", POD)
    await node.wait_pod("imgvol", lambda p: phase(p) in ("Succeeded", "Failed"), timeout=90)

    pod = get_pods_json(node)[node.pod_name("imgvol")]
    assert phase(pod) == "Succeeded", pod
    terminated = container_status(pod, "main")["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    spec = pod["spec"]
    assert isinstance(spec, dict)
    assert spec["volumes"] == [
        {
            "name": "busybox-image",
            "image": {"reference": "busybox:1.36", "pullPolicy": "IfNotPresent"},
        }
    ]

    async with node.client() as c:
        text = b"".join([x async for x in c.logs("default", node.pod_name("imgvol"), "main")])
    lines = text.decode().splitlines()
    assert lines == [
        "/img/bin/busybox",
        "/tools/busybox",
        "touch: /img/written: Read-only file system",
        "read-only",
        "mkdir: can't create directory '/tmp/made': Operation not permitted",
        "mkdir-denied",
        "tmp-writable",
    ], lines


async def test_missing_localhost_profile_is_reported(node: Node) -> None:
    """A profile the node does not have: the container waits with the runtime's reason."""
    node.add_manifest(
        "noprofile.yaml",
        POD.replace("name: imgvol", "name: noprofile").replace(
            "profiles/deny-mkdir.json", "profiles/absent.json"
        ),
    )
    expected = str(node.root_dir / "seccomp" / "profiles" / "absent.json")

    def waiting_for_profile(p: dict[str, object]) -> bool:
        waiting = container_status(p, "main").get("state", {}).get("waiting", {})
        return waiting.get("reason") == "CreateContainerError" and expected in waiting.get(
            "message", ""
        )

    await node.wait_pod("noprofile", waiting_for_profile, timeout=60)
    node.remove_manifest("noprofile.yaml")
