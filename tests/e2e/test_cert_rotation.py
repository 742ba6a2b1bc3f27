"""A node run from an identity made by CSR renews its client certificate against the real
controller-manager while its pods and its pod watch go on; then ``minikubelet leave``
drains it (evictions honour a PodDisruptionBudget), deletes its Node and removes its
identity.

The identity is made as ``minikubelet join`` leaves it: a ``kube-apiserver-client-kubelet``
CSR for ``system:node:NAME``, here sent with the node credentials the harness issues
(so the controller-manager approves it as a self-renewal once ``system:nodes`` is bound
to ``...:selfnodeclient``, as kubeadm binds it), stored with ``Identity.store_pair``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from minikubelet.bootstrap.certmanager import (
    CLIENT_SIGNER,
    CLIENT_USAGES,
    create_csr,
    csr_api,
    key_pem,
    new_key,
    node_csr,
    wait_for_certificate,
)
from minikubelet.bootstrap.identity import Identity
from minikubelet.clock import RealClock
from minikubelet.cri.client import CRIClient
from minikubelet.kubeapi.client import KubeClient
from tests.e2e.cluster import api_node, apply, free_port, kubectl_json
from tests.e2e.conftest import unmount_under
from tests.e2e.node import FAST, ROOT, Node
from tests.harness.controlplane import ControlPlane
from tests.harness.wait import wait_until

NAME = "rotate-fake"
LABEL = "minikubelet.test/rotate"
ROTATE_AFTER = 6

SELF_RENEWAL = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeadm:node-autoapprove-certificate-rotation
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:certificates.k8s.io:certificatesigningrequests:selfnodeclient
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: system:nodes
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector: {{"{label}": "{node}"}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: busybox:1.36
          command: ["sh", "-c", "exec sleep 3600"]
"""

PDB = """apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
  namespace: default
spec:
  minAvailable: {min}
  selector:
    matchLabels: {{app: {app}}}
"""


async def make_identity(cp: ControlPlane, root: Path, name: str) -> Identity:
    """A joined identity under ``root``: its client certificate from a real CSR."""
    identity = Identity(root)
    key = new_key()
    async with await KubeClient.from_kubeconfig(cp.node_kubeconfig(name)) as kube:
        api = csr_api(kube.api)
        csr = await create_csr(api, node_csr(key, name), signer=CLIENT_SIGNER, usages=CLIENT_USAGES)
        cert = await wait_for_certificate(api, csr, clock=RealClock(), timeout=60)
    identity.store_pair(cert, key_pem(key))
    identity.write_kubeconfig(cp.url, cp.ca_pem)
    identity.write_cluster_ca(cp.ca_pem)
    return identity


def certificate(identity: Identity) -> x509.Certificate:
    return x509.load_pem_x509_certificates(identity.current().read_bytes())[0]


def pods_of(cp: ControlPlane, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(cp, "get", "pods", "-l", f"app={app}")["items"]
    return items


def running_on(cp: ControlPlane, app: str, node: str) -> list[dict[str, Any]]:
    return [
        p
        for p in pods_of(cp, app)
        if p["spec"].get("nodeName") == node
        and p["status"].get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]


def leave(root: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minikubelet", "leave", "--root-dir", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="module")
async def joined_node(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Node]:
    apply(control_plane, SELF_RENEWAL)
    workdir = tmp_path_factory.mktemp("rotate")
    node = Node(
        workdir,
        runtime="fake",
        node_name=NAME,
        extra_args=(
            *FAST,
            "--node-labels",
            f"{LABEL}={NAME}",
            "--node-ip",
            "127.0.0.1",
            "--address",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--rotate-certificates-after",
            str(ROTATE_AFTER),
        ),
    )
    await make_identity(control_plane, node.root_dir, NAME)
    node.start()  # no --kubeconfig: the root dir's joined identity is used
    try:
        await node.wait_ready()
        yield node
    finally:
        node.stop()
        control_plane.kubectl("delete", "node", NAME, "--wait=false")
        for app in ("rot-web", "leave-web"):
            control_plane.kubectl("delete", "deployment", app, "--wait=false")
        control_plane.kubectl("delete", "pdb", "leave-pdb", "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]


async def test_client_certificate_rotates_without_disturbing_pods(
    control_plane: ControlPlane, joined_node: Node
) -> None:
    cp = control_plane
    identity = Identity(joined_node.root_dir)
    first = certificate(identity)
    first_file = identity.current().resolve()
    apply(cp, DEPLOYMENT.format(name="rot-web", replicas=1, label=LABEL, node=NAME))
    before = await wait_until(
        lambda: asyncio.to_thread(running_on, cp, "rot-web", NAME),
        timeout=60,
        interval=0.5,
        message="the Deployment's pod Running on the node",
    )
    pod_before = before[0]

    # the early rotation (--rotate-certificates-after): a new pair behind the link
    await wait_until(
        lambda: identity.current().resolve() != first_file,
        timeout=ROTATE_AFTER + 60,
        message="the client certificate rotated",
    )
    second = certificate(identity)
    assert second.serial_number != first.serial_number
    assert second.subject == first.subject  # CN system:node:NAME, O system:nodes
    assert second.public_key() != first.public_key()  # a new key, made on the node
    assert (
        second.issuer.rfc4514_string()
        == x509.load_pem_x509_certificate(cp.ca_pem).subject.rfc4514_string()
    )
    assert identity.current().stat().st_mode & 0o777 == 0o600
    assert first_file.exists()  # the earlier pair is kept, dated
    log = joined_node.log()
    assert "new client certificate from CertificateSigningRequest" in log, log[-4000:]
    requested = log.split("new client certificate from CertificateSigningRequest ", 1)[1].split()[0]
    requested = requested.rstrip(",")
    csr = kubectl_json(cp, "get", "csr", requested)
    assert csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    assert csr["spec"]["username"] == f"system:node:{NAME}"  # asked with its current identity
    approved = [c for c in csr["status"]["conditions"] if c["type"] == "Approved"]
    assert approved and approved[0]["reason"] == "AutoApproved", csr["status"]

    # the pod went on as it was: same uid, never restarted, still Running
    after = await asyncio.to_thread(running_on, cp, "rot-web", NAME)
    assert [p["metadata"]["uid"] for p in after] == [pod_before["metadata"]["uid"]]
    assert after[0]["status"]["containerStatuses"][0]["restartCount"] == 0
    # and the node still hears about new pods and writes their status (over the new
    # connections, or the watch that was open before the rotation)
    cp.kubectl("scale", "deployment", "rot-web", "--replicas=2")
    await wait_until(
        lambda: asyncio.to_thread(lambda: len(running_on(cp, "rot-web", NAME)) == 2),
        timeout=60,
        interval=0.5,
        message="a pod created after the rotation Running",
    )
    # the Lease is still renewed by the node
    lease = kubectl_json(cp, "get", "lease", "-n", "kube-node-lease", NAME)
    renewed = lease["spec"]["renewTime"]
    await wait_until(
        lambda: asyncio.to_thread(
            lambda: (
                kubectl_json(cp, "get", "lease", "-n", "kube-node-lease", NAME)["spec"]["renewTime"]
                != renewed
            )
        ),
        timeout=30,
        interval=0.5,
        message="the Lease renewed after the rotation",
    )
    assert "Unauthorized" not in joined_node.log()


async def test_leave_drains_honouring_budgets_and_deletes_the_node(
    control_plane: ControlPlane, joined_node: Node
) -> None:
    cp = control_plane
    cp.kubectl("delete", "deployment", "rot-web", "--wait=false")
    apply(cp, DEPLOYMENT.format(name="leave-web", replicas=2, label=LABEL, node=NAME))
    await wait_until(
        lambda: asyncio.to_thread(lambda: len(running_on(cp, "leave-web", NAME)) == 2),
        timeout=60,
        interval=0.5,
        message="the Deployment's 2 pods Running",
    )
    # a budget that allows no disruption: leave stops at it, says which, and gives up
    apply(cp, PDB.format(name="leave-pdb", min=2, app="leave-web"))
    await wait_until(
        lambda: asyncio.to_thread(
            lambda: (
                kubectl_json(cp, "get", "pdb", "leave-pdb").get("status", {}).get("currentHealthy")
                == 2
            )
        ),
        timeout=30,
        interval=0.5,
        message="the budget sees 2 healthy pods",
    )
    blocked = await asyncio.to_thread(leave, joined_node.root_dir, "--timeout", "4")
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "leave-pdb" in blocked.stdout + blocked.stderr, blocked.stdout + blocked.stderr
    node = kubectl_json(cp, "get", "node", NAME)
    assert node["spec"].get("unschedulable") is True  # cordoned on the way
    assert len(running_on(cp, "leave-web", NAME)) == 2  # nothing evicted past the budget
    assert Identity(joined_node.root_dir).joined()  # nothing removed

    # one at a time: the first eviction goes through, the second waits for the budget
    # (its replacement cannot be placed: the node is cordoned); leave keeps trying, and
    # goes on once the budget is relaxed
    apply(cp, PDB.format(name="leave-pdb", min=1, app="leave-web"))
    out_path = joined_node.workdir / "leave.out"
    with open(out_path, "w") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "minikubelet",
            "leave",
            "--root-dir",
            str(joined_node.root_dir),
            "--timeout",
            "120",
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        await wait_until(
            lambda: (
                "cannot be evicted yet" in out_path.read_text()
                and "evicted pod" in out_path.read_text()
            ),
            timeout=60,
            interval=0.2,
            message="leave evicting one pod and waiting for the budget for the other",
        )
        assert proc.returncode is None
        apply(cp, PDB.format(name="leave-pdb", min=0, app="leave-web"))
        code = await asyncio.wait_for(proc.wait(), 150)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = out_path.read_text()
    assert output.count("evicted pod default/leave-web-") == 2, output
    assert "leave-pdb" in output, output
    # the node's own credentials may drain it but not delete its Node (system:node has no
    # delete on nodes): leave says who can, and does the rest
    assert code == 1, output
    assert f"kubectl delete node {NAME}" in output, output
    assert joined_node.proc is not None
    assert joined_node.proc.wait(timeout=30) == 0  # the node was stopped
    identity = Identity(joined_node.root_dir)
    assert not identity.joined()
    assert not identity.kubeconfig.exists()
    assert not list(identity.pki.glob("kubelet-client-*"))
    assert cp.kubectl("get", "node", NAME).returncode == 0

    # an administrator's credentials finish it
    admin = await asyncio.to_thread(
        leave,
        joined_node.root_dir,
        "--kubeconfig",
        str(cp.admin_kubeconfig),
        "--node-name",
        NAME,
    )
    assert admin.returncode == 0, admin.stdout + admin.stderr
    assert f"node {NAME} deleted" in admin.stdout

    assert cp.kubectl("get", "node", NAME).returncode != 0  # the Node is gone
    # the replacements have nowhere to go (the node selector names only this node)
    pods = await asyncio.to_thread(pods_of, cp, "leave-web")
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert live and all(not p["spec"].get("nodeName") for p in live), json.dumps(
        [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods]
    )
    assert all(p["status"]["phase"] == "Pending" for p in live)


def served_certificate(port: int) -> x509.Certificate:
    """What the node's kubelet API presents to a new TLS connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_serving_certificate_from_the_cluster_once_approved(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    name = "serving-fake"
    node = api_node(tmp_path, cp, "fake", name, "--rotate-server-certificates")
    port = int(node.extra_args[node.extra_args.index("--port") + 1])
    cluster_ca = x509.load_pem_x509_certificate(cp.ca_pem).subject
    node.start()
    try:
        await node.wait_ready()
        line = await wait_until(
            lambda: next(
                (
                    text.split("approve it with: ", 1)[1].strip()
                    for text in node.log().splitlines()
                    if "approve it with: kubectl certificate approve" in text
                ),
                None,
            ),
            timeout=60,
            interval=0.2,
            message="the approve line",
        )
        csr_name = line.split()[-1]
        csr = kubectl_json(cp, "get", "csr", csr_name)
        assert csr["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
        assert csr["spec"]["username"] == f"system:node:{name}"
        assert sorted(csr["spec"]["usages"]) == [
            "digital signature",
            "key encipherment",
            "server auth",
        ]
        assert not csr.get("status", {}).get("conditions")  # nobody approves these but people
        # until then the self-signed certificate is served
        await wait_until(lambda: node.log().count("kubelet API listening") > 0, timeout=30)
        assert (await asyncio.to_thread(served_certificate, port)).issuer != cluster_ca

        done = cp.kubectl("certificate", "approve", csr_name)
        assert done.returncode == 0, done.stderr
        served = await wait_until(
            lambda: asyncio.to_thread(
                lambda: c if (c := served_certificate(port)).issuer == cluster_ca else None
            ),
            timeout=60,
            interval=0.5,
            message="the node serving the certificate the cluster issued",
        )
        cn = served.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == f"system:node:{name}"
        san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert name in san.get_values_for_type(x509.DNSName)
        assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        assert Identity(node.root_dir).current("kubelet-server").is_symlink()
    finally:
        assert node.stop() == 0
        cp.kubectl("delete", "node", name, "--wait=false")
        unmount_under(tmp_path)
    assert "Traceback" not in node.log(), node.log()[-6000:]


def expired_pair(cp: ControlPlane, name: str) -> tuple[bytes, bytes]:
    """A client certificate for ``system:node:NAME`` from the cluster CA, expired an hour ago."""
    ca_key = serialization.load_pem_private_key((cp.pki / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(cp.ca_pem)
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(x509.NameOID.COMMON_NAME, f"system:node:{name}"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now - datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


async def test_expired_certificate_falls_back_to_the_bootstrap_token(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    name = "expired-fake"
    cp.setup_bootstrap_tokens()
    token = cp.create_bootstrap_token()
    node = Node(
        tmp_path,
        runtime="fake",
        node_name=name,
        extra_args=(*FAST, "--node-ip", "127.0.0.1", "--port", "0"),
    )
    identity = Identity(node.root_dir)
    cert, key = expired_pair(cp, name)
    identity.store_pair(cert, key)
    identity.write_kubeconfig(cp.url, cp.ca_pem)
    identity.write_cluster_ca(cp.ca_pem)
    identity.write_bootstrap_kubeconfig(cp.url, cp.ca_pem, token)
    expired_file = identity.current().resolve()
    node.start()  # the root dir's identity, whose certificate has expired
    try:
        await node.wait_ready()
        await wait_until(
            lambda: identity.current().resolve() != expired_file,
            timeout=60,
            interval=0.2,
            message="a new client certificate",
        )
        log = node.log()
        assert "client certificate expired at" in log, log[-4000:]
        assert "bootstrap-kubelet.kubeconfig" in log
        new = x509.load_pem_x509_certificates(identity.current().read_bytes())[0]
        assert new.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
        csr_name = log.split("new client certificate from CertificateSigningRequest ", 1)[1]
        csr = kubectl_json(cp, "get", "csr", csr_name.split()[0].rstrip(","))
        assert csr["spec"]["username"] == f"system:bootstrap:{token.split('.')[0]}"
        # and with it the node registers and is Ready
        await wait_until(
            lambda: asyncio.to_thread(
                lambda: any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (
                        json.loads(cp.kubectl("get", "node", name, "-o", "json").stdout or "{}")
                        .get("status", {})
                        .get("conditions", [])
                    )
                )
            ),
            timeout=90,
            interval=0.5,
            message="the Node Ready with the new certificate",
        )
    finally:
        assert node.stop() == 0
        cp.kubectl("delete", "node", name, "--wait=false")
        unmount_under(tmp_path)
    assert "Traceback" not in node.log(), node.log()[-6000:]


def _serve_runtime(endpoint: str, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "minikubelet", "runtime", "serve", "fake", "--listen", endpoint],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


async def test_leave_stops_the_static_pods_of_a_runtime_that_stays(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """On a runtime of its own (as containerd on a real node), pods outlive a kubelet
    restart; a node that leaves stops them all, static pods included."""
    cp = control_plane
    name = "leave-static"
    apply(cp, SELF_RENEWAL)
    endpoint = f"unix://{tmp_path / 'fake.sock'}"
    runtime = _serve_runtime(endpoint, tmp_path / "runtime.log")
    node = Node(
        tmp_path,
        runtime=endpoint,
        node_name=name,
        extra_args=(*FAST, "--node-labels", f"{LABEL}={name}", "--node-ip", "127.0.0.1"),
    )
    try:
        await wait_until(
            lambda: "serving" in (tmp_path / "runtime.log").read_text(),
            message="the fake runtime",
        )
        await make_identity(cp, node.root_dir, name)
        node.add_manifest("multi-container.yaml")
        node.start()
        await node.wait_ready()
        apply(cp, DEPLOYMENT.format(name="static-web", replicas=1, label=LABEL, node=name))
        await wait_until(
            lambda: asyncio.to_thread(lambda: len(running_on(cp, "static-web", name)) == 1),
            timeout=60,
            interval=0.5,
            message="the API pod Running",
        )
        await wait_until(
            lambda: asyncio.to_thread(
                lambda: any(
                    p["metadata"]["name"] == f"multi-{name}"
                    for p in kubectl_json(cp, "get", "pods", "-A")["items"]
                )
            ),
            timeout=60,
            interval=0.5,
            message="the static pod's mirror pod",
        )
        async with CRIClient(endpoint) as cri:
            ready = [s for s in await cri.list_pod_sandbox() if s.state == 0]
            assert len(ready) == 2  # the static pod and the API pod

        done = await asyncio.to_thread(
            leave, node.root_dir, "--kubeconfig", str(cp.admin_kubeconfig)
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"static pod default/multi-{name} is not evicted" in done.stdout
        assert f"node {name} deleted" in done.stdout
        assert node.proc is not None and node.proc.wait(timeout=30) == 0
        assert "leaving" not in {p.name for p in node.root_dir.iterdir()}
        async with CRIClient(endpoint) as cri:
            assert list(await cri.list_pod_sandbox()) == []  # stopped and removed
            assert list(await cri.list_containers()) == []
        assert not Identity(node.root_dir).joined()
    finally:
        node.stop()
        cp.kubectl("delete", "node", name, "--wait=false")
        cp.kubectl("delete", "deployment", "static-web", "--wait=false")
        runtime.terminate()
        runtime.wait(timeout=10)
        unmount_under(tmp_path)
    assert "Traceback" not in node.log(), node.log()[-6000:]
