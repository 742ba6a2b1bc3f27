"""TLS bootstrap (minikubelet/bootstrap/tlsbootstrap.py) against a small stand-in for the
API server's CSR, Node and Lease endpoints, spoken to by the real generated client: what
the CSR asks for, waiting for approval and the certificate, a denial, a certificate for
another key, and when a node name belongs to another live node; and the identity join
writes, whole or not at all."""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes_asyncio import client as k8s

from minikubelet.bootstrap.discovery import ClusterInfo, public_key_hash
from minikubelet.bootstrap.identity import Identity
from minikubelet.bootstrap.tlsbootstrap import (
    CLIENT_USAGES,
    KUBELET_CLIENT_SIGNER,
    BootstrapError,
    CSRDenied,
    IssuedCertificate,
    certificate_node_name,
    digested_name,
    new_private_key,
    node_name_in_use,
    node_subject,
    private_key_pem,
    request_node_client_certificate,
)
from minikubelet.cli.join import write_identity
from minikubelet.kubeapi.client import KubeClient

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@dataclass
class FakeAPI:
    """CSRs (approved and signed after ``sign_after`` reads, or denied), Nodes, Leases."""

    mode: str = "approve"  # approve | deny | other-key | never
    sign_after: int = 2
    csrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reads: int = 0
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    leases: dict[str, dict[str, Any]] = field(default_factory=dict)
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] = field(default_factory=_ca)

    def sign(self, csr: x509.CertificateSigningRequest) -> bytes:
        key, ca = self.ca
        public = csr.public_key()
        if self.mode == "other-key":
            public = ec.generate_private_key(ec.SECP256R1()).public_key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    async def create_csr(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body["metadata"]["name"]
        if name in self.csrs:
            return web.json_response({"kind": "Status", "reason": "AlreadyExists"}, status=409)
        body["status"] = {}
        self.csrs[name] = body
        return web.json_response(body, status=201)

    async def read_csr(self, request: web.Request) -> web.Response:
        csr = self.csrs.get(request.match_info["name"])
        if csr is None:
            return web.json_response({"kind": "Status"}, status=404)
        self.reads += 1
        if self.reads >= self.sign_after and not csr["status"] and self.mode != "never":
            if self.mode == "deny":
                csr["status"] = {
                    "conditions": [
                        {
                            "type": "Denied",
                            "status": "True",
                            "reason": "NotOurs",
                            "message": "nobody expects this node",
                        }
                    ]
                }
            else:
                request_pem = base64.b64decode(csr["spec"]["request"])
                cert = self.sign(x509.load_pem_x509_csr(request_pem))
                csr["status"] = {
                    "conditions": [
                        {"type": "Approved", "status": "True", "reason": "AutoApproved"}
                    ],
                    "certificate": base64.b64encode(cert).decode(),
                }
        return web.json_response(csr)

    async def read_node(self, request: web.Request) -> web.Response:
        node = self.nodes.get(request.match_info["name"])
        if node is None:
            return web.json_response({"kind": "Status", "reason": "NotFound"}, status=404)
        return web.json_response(node)

    async def read_lease(self, request: web.Request) -> web.Response:
        lease = self.leases.get(request.match_info["name"])
        if lease is None:
            return web.json_response({"kind": "Status", "reason": "Forbidden"}, status=403)
        return web.json_response(lease)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeAPI, KubeClient]]:
    fake = FakeAPI()
    app = web.Application()
    app.router.add_post(CSR_PATH, fake.create_csr)
    app.router.add_get(CSR_PATH + "/{name}", fake.read_csr)
    app.router.add_get("/api/v1/nodes/{name}", fake.read_node)
    app.router.add_get(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}", fake.read_lease
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    kube = KubeClient(k8s.ApiClient(configuration))
    try:
        yield fake, kube
    finally:
        await kube.close()
        await runner.cleanup()


async def test_the_node_client_csr_and_its_certificate(api: tuple[FakeAPI, KubeClient]) -> None:
    fake, kube = api
    said: list[str] = []
    issued = await request_node_client_certificate(kube, "worker-1", progress=said.append)
    [(name, csr)] = fake.csrs.items()
    assert name == issued.csr_name and name.startswith("node-csr-")
    spec = csr["spec"]
    assert spec["signerName"] == KUBELET_CLIENT_SIGNER
    assert spec["usages"] == list(CLIENT_USAGES)
    request = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
    assert request.is_signature_valid
    assert request.subject.rfc4514_string() == "CN=system:node:worker-1,O=system:nodes"
    assert isinstance(request.public_key(), ec.EllipticCurvePublicKey)
    assert request.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    # the key on our side is the one the request and the certificate are for
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == request.public_key().public_bytes(*spki)
    assert issued.certificate.public_key().public_bytes(*spki) == request.public_key().public_bytes(
        *spki
    )
    assert certificate_node_name(issued.cert_pem) == "worker-1"
    assert b"PRIVATE KEY" not in base64.b64decode(spec["request"])  # only the request travels
    assert any("sent" in line for line in said)


async def test_the_csr_name_is_the_kubelets_digest() -> None:
    key = new_private_key()
    subject = node_subject("n")
    name = digested_name(key, subject, CLIENT_USAGES)
    assert name == digested_name(key, subject, CLIENT_USAGES)
    assert name != digested_name(key, node_subject("m"), CLIENT_USAGES)
    assert name != digested_name(new_private_key(), subject, CLIENT_USAGES)
    assert len(name) == len("node-csr-") + 43  # base64url of 32 bytes, unpadded


async def test_a_denied_csr_says_why(api: tuple[FakeAPI, KubeClient]) -> None:
    fake, kube = api
    fake.mode = "deny"
    with pytest.raises(CSRDenied, match=r"was denied \(NotOurs: nobody expects this node\)"):
        await request_node_client_certificate(kube, "worker-1")


async def test_a_certificate_for_another_key_is_refused(api: tuple[FakeAPI, KubeClient]) -> None:
    fake, kube = api
    fake.mode = "other-key"
    with pytest.raises(BootstrapError, match="not for the key"):
        await request_node_client_certificate(kube, "worker-1")


async def test_an_unanswered_csr_times_out_saying_what_to_do(
    api: tuple[FakeAPI, KubeClient],
) -> None:
    fake, kube = api
    fake.mode = "never"
    with pytest.raises(BootstrapError, match="kubectl certificate approve node-csr-"):
        await request_node_client_certificate(kube, "worker-1", timeout=0.5)


async def test_rsa_keys_too(api: tuple[FakeAPI, KubeClient]) -> None:
    _, kube = api
    issued = await request_node_client_certificate(kube, "worker-1", key_type="rsa-2048")
    assert b"RSA PRIVATE KEY" in issued.key_pem
    with pytest.raises(ValueError, match="key type"):
        new_private_key("dsa-1024")


def _node(ready: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "worker-1"},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def _lease(age: float, duration: int = 40) -> dict[str, Any]:
    renew = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=age)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "worker-1", "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": "worker-1",
            "leaseDurationSeconds": duration,
            "renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


async def test_a_name_is_taken_by_a_ready_node_with_a_fresh_lease(
    api: tuple[FakeAPI, KubeClient],
) -> None:
    fake, kube = api
    assert await node_name_in_use(kube, "worker-1") is None  # no such Node
    fake.nodes["worker-1"] = _node("Unknown")
    assert await node_name_in_use(kube, "worker-1") is None  # a node that has gone
    fake.nodes["worker-1"] = _node("True")
    why = await node_name_in_use(kube, "worker-1")  # Lease not readable: Ready decides
    assert why is not None and "another live node" in why and "--node-name" in why
    fake.leases["worker-1"] = _lease(age=3)
    why = await node_name_in_use(kube, "worker-1")
    assert why is not None and "Lease renewed 3s ago" in why
    fake.leases["worker-1"] = _lease(age=120)
    assert await node_name_in_use(kube, "worker-1") is None  # Ready but its Lease is stale


# -- the identity join writes --------------------------------------------------------------------


def _issued_and_cluster() -> tuple[IssuedCertificate, ClusterInfo]:
    fake = FakeAPI()
    key = new_private_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(node_subject("n1"))
        .sign(key, hashes.SHA256())
    )
    ca_pem = fake.ca[1].public_bytes(serialization.Encoding.PEM)
    cluster = ClusterInfo(
        server="https://10.0.0.1:6443",
        ca_pem=ca_pem,
        ca_hash=public_key_hash(fake.ca[1]),
        kubeconfig="",
        verified=True,
    )
    return IssuedCertificate(fake.sign(csr), private_key_pem(key), "node-csr-x"), cluster


def test_the_identity_is_written_whole(tmp_path: Path) -> None:
    issued, cluster = _issued_and_cluster()
    identity = Identity(tmp_path / "root")
    write_identity(identity, cluster, "abcdef.0123456789abcdef", issued)
    assert identity.joined()
    assert identity.current().read_bytes().startswith(issued.cert_pem.rstrip(b"\n"))
    assert issued.key_pem in identity.current().read_bytes()
    assert b"abcdef.0123456789abcdef" in identity.bootstrap_kubeconfig.read_bytes()
    assert identity.cluster_ca.read_bytes() == cluster.ca_pem


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    issued, cluster = _issued_and_cluster()

    def full(self: Identity, server: str, ca_pem: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Identity, "write_kubeconfig", full)
    identity = Identity(tmp_path / "root")
    with pytest.raises(OSError, match="No space left"):
        write_identity(identity, cluster, "abcdef.0123456789abcdef", issued)
    assert not identity.root.exists()
    # a root dir that was there stays, empty of what join wrote
    identity.root.mkdir()
    (identity.root / "other").write_text("kept")
    with pytest.raises(OSError):
        write_identity(identity, cluster, "abcdef.0123456789abcdef", issued)
    assert sorted(p.name for p in identity.root.rglob("*")) == ["other"]
