"""``minikubelet join``: the line ``kubeadm token create --print-join-command`` prints, with
``minikubelet`` for ``kubeadm``, against the session's control plane set up as kubeadm's
bootstrap-token phase sets a cluster up (tests/harness/controlplane.py).

Checked as an operator would: the Node is Ready in ``kubectl get nodes``, a pod bound to
it runs and ``kubectl logs`` reaches it through the API server; the certificate the
cluster issued is ``system:node:NAME`` in ``system:nodes`` for the key on disk; the node
starts again without the token; and each bad join line stops with its reason, leaving no
Node and no file behind.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.cluster import api_node, apply, free_port, kubectl_json
from tests.e2e.conftest import unmount_under
from tests.e2e.node import FAST, ROOT, Node
from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime
from tests.harness.wait import wait_until

LABEL = "minikubelet.test/node"
JOIN_TIMEOUT = 60.0

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: busybox:1.36
      command: ["sh", "-c", "echo hello from {name}; sleep 3600"]
"""


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector: {{"kubernetes.io/hostname": "{node}"}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: busybox:1.36
          command: ["sh", "-c", "echo hello from {name}; exec sleep 3600"]
"""


def join_args(cp: ControlPlane, token: str | None = None) -> list[str]:
    """``kubeadm join ...`` as the control plane prints it, with ``kubeadm`` taken off."""
    line = shlex.split(cp.join_command(token))
    assert line[:2] == ["kubeadm", "join"], line
    return line[1:]


def serving(port: int | None = None) -> tuple[str, ...]:
    """The node's kubelet API where its Node says it is (no --client-ca-file: the cluster
    CA from discovery is its default)."""
    return (
        "--node-ip",
        "127.0.0.1",
        "--address",
        "127.0.0.1",
        "--port",
        str(port or free_port()),
    )


class JoinNode(Node):
    """A node whose process is ``minikubelet join ...`` (then, restarted, ``run``)."""

    def __init__(
        self,
        workdir: Path,
        join: Sequence[str],
        *,
        runtime: str = "fake",
        node_name: str,
        extra_args: tuple[str, ...],
        name_flag: bool = True,
    ) -> None:
        super().__init__(workdir, runtime=runtime, node_name=node_name, extra_args=extra_args)
        self.join = list(join)
        self.name_flag = name_flag  # False: the node takes its name from its identity
        self.started_at = 0.0

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "minikubelet",
            "-v",
            *self.join,
            "--root-dir",
            str(self.root_dir),
            "--manifests",
            str(self.manifests),
            "--runtime",
            self.runtime,
            *(("--node-name", self.node_name) if self.name_flag else ()),
            *self.extra_args,
        ]

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process below
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()


def run_join(
    workdir: Path, args: Sequence[str], node_name: str, *extra: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """A join expected to stop by itself (a bad join line): its exit code and output."""
    node = JoinNode(workdir, args, node_name=node_name, extra_args=(*FAST, "--port", "0", *extra))
    return subprocess.run(
        node.argv(), capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def node_object(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    done = cp.kubectl("get", "node", name, "-o", "json")
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    node: dict[str, Any] = json.loads(done.stdout)
    return node


def is_ready(node: dict[str, Any] | None) -> bool:
    if node is None:
        return False
    ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
    return bool(ready and ready[0]["status"] == "True")


def left_in(root: Path) -> list[str]:
    """What is under a root dir a failed join was given (nothing, it must be)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def assert_refused(
    cp: ControlPlane,
    workdir: Path,
    done: subprocess.CompletedProcess[str],
    name: str,
    *messages: str,
) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    for message in messages:
        assert message in done.stderr, output
    assert "This node has joined" not in output
    assert node_object(cp, name) is None, f"a Node {name} was made"
    assert left_in(workdir / "root") == [], "files were left behind"


# -- one node joins on the simulated runtime -----------------------------------------------------


@pytest.fixture(scope="module")
async def joined(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JoinNode]:
    workdir = tmp_path_factory.mktemp("join-fake")
    args = join_args(control_plane)
    node = JoinNode(
        workdir,
        args,
        node_name="join-fake",
        extra_args=(*FAST, *serving(), "--node-labels", f"{LABEL}=join-fake"),
    )
    node.start()
    try:

        def ready() -> bool:
            if node.proc is not None and node.proc.poll() is not None:
                raise AssertionError(f"join exited ({node.proc.returncode}):\n{node.log()}")
            return is_ready(node_object(control_plane, "join-fake"))

        await wait_until(ready, timeout=JOIN_TIMEOUT, interval=0.05, message="the Node Ready")
        took = time.monotonic() - node.started_at
        (workdir / "join-seconds").write_text(f"{took:.2f}\n")
        print(f"\njoin: command to Node Ready in {took:.2f}s (simulated runtime)")
        yield node
    finally:
        node.stop()
        control_plane.kubectl("delete", "pod", "join-hello", "--grace-period=0", "--force")
        control_plane.kubectl("delete", "node", "join-fake", "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]


async def test_join_says_what_kubeadm_says_and_the_node_is_ready(
    control_plane: ControlPlane, joined: JoinNode
) -> None:
    log = joined.log()
    assert "This node has joined the cluster:" in log
    assert "kubectl get nodes" in log
    took = float((joined.workdir / "join-seconds").read_text())
    assert took < 30, f"join took {took}s"
    wide = control_plane.kubectl("get", "nodes", "join-fake", "-o", "wide")
    assert wide.returncode == 0 and " Ready " in wide.stdout, wide.stdout
    assert "127.0.0.1" in wide.stdout  # its InternalIP: where the API server reaches it


async def test_the_certificate_is_the_nodes_for_the_key_on_disk(
    control_plane: ControlPlane, joined: JoinNode
) -> None:
    root = joined.root_dir
    current = root / "pki" / "kubelet-client-current.pem"
    assert current.is_symlink()
    pem = current.read_bytes()
    cert = x509.load_pem_x509_certificates(pem)[0]
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert cert.subject.rfc4514_string() == "CN=system:node:join-fake,O=system:nodes"
    # signed by the cluster CA, which discovery wrote down as the CA it verified
    ca = x509.load_pem_x509_certificate(control_plane.ca_pem)
    cert.verify_directly_issued_by(ca)
    assert (root / "pki" / "ca.crt").read_bytes() == control_plane.ca_pem
    for path in (
        current.resolve(),
        root / "kubelet.kubeconfig",
        root / "bootstrap-kubelet.kubeconfig",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    kubeconfig = yaml.safe_load((root / "kubelet.kubeconfig").read_text())
    user = kubeconfig["users"][0]["user"]
    assert user == {"client-certificate": str(current), "client-key": str(current)}
    assert kubeconfig["clusters"][0]["cluster"]["server"] == control_plane.url
    # the CSR: sent with the bootstrap token, approved by the controller-manager
    token_id = joined.join[joined.join.index("--token") + 1].split(".")[0]
    csrs = [
        c
        for c in kubectl_json(control_plane, "get", "csr")["items"]
        if c["spec"]["username"] == f"system:bootstrap:{token_id}"
    ]
    assert len(csrs) == 1, csrs
    [csr] = csrs
    assert csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    assert set(csr["spec"]["usages"]) >= {"digital signature", "client auth"}
    assert "system:bootstrappers:kubeadm:default-node-token" in csr["spec"]["groups"]
    approved = [c for c in csr["status"]["conditions"] if c["type"] == "Approved"]
    assert approved and approved[0]["reason"] == "AutoApproved", csr["status"]
    assert csr["status"]["certificate"]


async def test_a_pod_bound_to_it_runs_and_kubectl_logs_reaches_it(
    control_plane: ControlPlane, joined: JoinNode
) -> None:
    apply(control_plane, POD.format(name="join-hello", node="join-fake"))

    def running() -> bool:
        pod = kubectl_json(control_plane, "get", "pod", "join-hello")
        return bool(pod["status"].get("phase") == "Running")

    await wait_until(running, timeout=60, message="pod join-hello Running")

    def logs() -> str | None:
        done = control_plane.kubectl("logs", "join-hello", timeout=20)
        return done.stdout if done.returncode == 0 and "hello" in done.stdout else None

    out = await wait_until(logs, timeout=30, message="kubectl logs join-hello")
    assert "hello from join-hello" in out


async def test_it_starts_again_without_the_token(
    control_plane: ControlPlane, joined: JoinNode, tmp_path: Path
) -> None:
    before = node_object(control_plane, "join-fake")
    assert before is not None
    assert joined.stop() == 0
    # the token is gone: only the node's own identity can bring it back
    token_id = joined.join[joined.join.index("--token") + 1].split(".")[0]
    done = control_plane.kubectl(
        "-n", "kube-system", "delete", "secret", f"bootstrap-token-{token_id}"
    )
    assert done.returncode == 0, done.stderr

    # joining again on a joined root dir is refused, and changes nothing there
    files = {p: p.read_bytes() for p in joined.root_dir.rglob("*.kubeconfig")}
    again = run_join(joined.workdir, join_args(control_plane), "join-fake")
    assert again.returncode != 0 and "has joined a cluster already" in again.stderr, again
    assert {p: p.read_bytes() for p in joined.root_dir.rglob("*.kubeconfig")} == files

    # a name other than the one its certificate is for is refused
    other = run_join(joined.workdir, ["run"], "join-other")
    assert other.returncode == 2, other
    assert "holds the identity of node join-fake" in other.stderr, other.stderr

    port = joined.extra_args[joined.extra_args.index("--port") + 1]
    rerun = JoinNode(
        joined.workdir,
        ["run"],  # no --kubeconfig, no token, no --node-name: all from the root dir
        node_name="join-fake",
        extra_args=(*FAST, *serving(int(port))),
        name_flag=False,
    )
    joined.proc = None
    rerun.start()
    try:
        await rerun.wait_ready()
        assert "node join-fake on" in rerun.log() and "API server https://127.0.0.1:" in rerun.log()

        def renewed() -> bool:
            lease = kubectl_json(
                control_plane, "-n", "kube-node-lease", "get", "lease", "join-fake"
            )
            renew = datetime.datetime.fromisoformat(
                lease["spec"]["renewTime"].replace("Z", "+00:00")
            )
            return bool((datetime.datetime.now(datetime.UTC) - renew).total_seconds() < 5)

        await wait_until(renewed, timeout=30, message="the Lease renewed by the restarted node")
        after = node_object(control_plane, "join-fake")
        assert after is not None and is_ready(after)
        assert after["metadata"]["uid"] == before["metadata"]["uid"], "the same Node"
        done = control_plane.kubectl("logs", "join-hello", timeout=20)
        assert done.returncode == 0 and "hello from join-hello" in done.stdout, done
    finally:
        # the module fixture stops whatever runs as the node at the end
        joined.proc, rerun.proc = rerun.proc, None


# -- bad join lines ------------------------------------------------------------------------------


async def test_a_wrong_token_secret(control_plane: ControlPlane, tmp_path: Path) -> None:
    args = join_args(control_plane)
    token = args[args.index("--token") + 1]
    args[args.index("--token") + 1] = token.split(".")[0] + ".0000000000000000"
    done = run_join(tmp_path, args, "join-bad-secret")
    assert_refused(control_plane, tmp_path, done, "join-bad-secret", "does not verify")


async def test_an_unknown_token(control_plane: ControlPlane, tmp_path: Path) -> None:
    args = join_args(control_plane)
    args[args.index("--token") + 1] = "zzzzzz.0000000000000000"
    done = run_join(tmp_path, args, "join-unknown")
    assert_refused(
        control_plane, tmp_path, done, "join-unknown", "unknown to this cluster or has expired"
    )


async def test_an_expired_token(control_plane: ControlPlane, tmp_path: Path) -> None:
    control_plane.setup_bootstrap_tokens()
    expired = control_plane.create_bootstrap_token(
        expiration=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    )
    done = run_join(tmp_path, join_args(control_plane, expired), "join-expired")
    assert_refused(
        control_plane, tmp_path, done, "join-expired", "no signature for token id", "expired"
    )


async def test_a_wrong_ca_hash_names_both(control_plane: ControlPlane, tmp_path: Path) -> None:
    args = join_args(control_plane)
    wrong = "sha256:" + "ab" * 32
    args[args.index("--discovery-token-ca-cert-hash") + 1] = wrong
    done = run_join(tmp_path, args, "join-bad-hash")
    assert_refused(
        control_plane, tmp_path, done, "join-bad-hash", control_plane.ca_cert_hash, wrong
    )


async def test_an_api_server_nobody_answers_at(control_plane: ControlPlane, tmp_path: Path) -> None:
    args = join_args(control_plane)
    port = free_port()  # nothing listens there
    args[1] = f"127.0.0.1:{port}"
    started = time.monotonic()
    done = run_join(tmp_path, args, "join-nowhere", "--discovery-timeout", "3")
    assert time.monotonic() - started < 20
    assert_refused(control_plane, tmp_path, done, "join-nowhere", f"https://127.0.0.1:{port}")
    assert "attempts" in done.stderr
    assert done.stdout.count("trying again in") >= 3, done.stdout  # with back-off


async def test_a_denied_csr(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A token of a group without auto-approval: the operator denies its CSR."""
    group = "system:bootstrappers:minikubelet-test:manual"
    control_plane.setup_bootstrap_tokens()
    done = control_plane.kubectl(
        "create",
        "clusterrolebinding",
        "minikubelet-test:manual-bootstrap",
        "--clusterrole=system:node-bootstrapper",
        f"--group={group}",
    )
    assert done.returncode == 0 or "AlreadyExists" in done.stderr, done.stderr
    token = control_plane.create_bootstrap_token(groups=[group])
    node = JoinNode(
        tmp_path,
        join_args(control_plane, token),
        node_name="join-denied",
        extra_args=(*FAST, "--port", "0"),
    )
    node.start()
    try:

        def pending() -> str | None:
            for csr in kubectl_json(control_plane, "get", "csr")["items"]:
                if csr["spec"]["username"] == f"system:bootstrap:{token.split('.')[0]}":
                    return str(csr["metadata"]["name"])
            return None

        name = await wait_until(pending, timeout=30, message="the node's CSR")
        done = control_plane.kubectl("certificate", "deny", name)
        assert done.returncode == 0, done.stderr
        assert node.proc is not None
        code = await asyncio.to_thread(node.proc.wait, 30)
    finally:
        node.stop()
    result = subprocess.CompletedProcess(node.argv(), code, node.log(), node.log())
    assert_refused(control_plane, tmp_path, result, "join-denied", f"{name} was denied")


async def test_a_name_another_live_node_has(control_plane: ControlPlane, tmp_path: Path) -> None:
    live = api_node(tmp_path / "live", control_plane, "fake", "join-taken")
    live.start()
    try:
        await live.wait_ready()
        await wait_until(
            lambda: is_ready(node_object(control_plane, "join-taken")),
            timeout=60,
            message="the live node Ready",
        )
        uid = node_object(control_plane, "join-taken")["metadata"]["uid"]  # type: ignore[index]
        done = run_join(tmp_path, join_args(control_plane), "join-taken")
        output = done.stdout + done.stderr
        assert done.returncode != 0, output
        assert "a Node named 'join-taken' is in the cluster and Ready" in done.stderr, output
        assert "--node-name" in done.stderr
        assert left_in(tmp_path / "root") == []
        still = node_object(control_plane, "join-taken")
        assert still is not None and still["metadata"]["uid"] == uid and is_ready(still)
    finally:
        live.stop()
        control_plane.kubectl("delete", "node", "join-taken", "--wait=false")
        unmount_under(tmp_path)


# -- once on the native runtime ------------------------------------------------------------------


async def test_join_on_the_native_runtime(
    control_plane: ControlPlane,
    native_runtime: NativeRuntime,
    test_images: HarnessImages,  # busybox:1.36 where the runtime pulls docker.io from
    tmp_path: Path,
) -> None:
    node = JoinNode(
        tmp_path,
        join_args(control_plane),
        runtime=native_runtime.endpoint,
        node_name="join-native",
        extra_args=(*FAST, *serving()),
    )
    node.start()
    try:
        await wait_until(
            lambda: is_ready(node_object(control_plane, "join-native")),
            timeout=JOIN_TIMEOUT,
            interval=0.05,
            message="the Node Ready",
        )
        took = time.monotonic() - node.started_at
        print(f"\njoin: command to Node Ready in {took:.2f}s (native runtime)")
        # the scheduler places a Deployment's pod on the joined node
        apply(control_plane, DEPLOYMENT.format(name="join-native-hello", node="join-native"))

        def available() -> bool:
            deployment = kubectl_json(control_plane, "get", "deployment", "join-native-hello")
            return bool(deployment.get("status", {}).get("availableReplicas") == 1)

        await wait_until(available, timeout=90, message="deployment join-native-hello Available")
        target = "deployment/join-native-hello"

        def logs() -> str | None:
            done = control_plane.kubectl("logs", target, timeout=20)
            return done.stdout if done.returncode == 0 and "hello" in done.stdout else None

        out = await wait_until(logs, timeout=30, message="kubectl logs join-native-hello")
        assert "hello from join-native-hello" in out
        # and kubectl exec reaches it through the API server and the node's HTTPS API
        done = control_plane.kubectl("exec", target, "--", "sh", "-c", "echo in $(hostname)")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("in join-native-hello-"), done.stdout
        done = control_plane.kubectl("delete", "deployment", "join-native-hello", "--wait=true")
        assert done.returncode == 0, done.stderr
    finally:
        assert node.stop() == 0
        control_plane.kubectl("delete", "node", "join-native", "--wait=false")
        unmount_under(tmp_path)
        assert "Traceback" not in node.log(), node.log()[-6000:]
