"""TLS bootstrap: a certificate for the node through a CertificateSigningRequest, as
the kubelet gets its client certificate.

The node makes a new private key (it never leaves the node), sends a CSR
(``certificates.k8s.io/v1``) for ``CN=system:node:NAME, O=system:nodes`` to the signer
``kubernetes.io/kube-apiserver-client-kubelet``, and waits for the controller-manager
to approve it (its ``csrapproving`` controller approves a node client CSR whose
requester may create ``certificatesigningrequests/nodeclient``, or
``/selfnodeclient`` for a node renewing its own) and to sign it (``csrsigning``, with
the cluster CA); the certificate appears in ``status.certificate``.

:func:`request_certificate` does this for any subject, signer, usages and key type
with any :class:`~minikubelet.kubeapi.client.KubeClient`: the bootstrap token's at
join, the node's own identity when it renews.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from kubernetes_asyncio import client as k8s

from minikubelet.kubeapi.client import ApiException, KubeClient

log = logging.getLogger(__name__)

KUBELET_CLIENT_SIGNER: Final = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING_SIGNER: Final = "kubernetes.io/kubelet-serving"
#: What the kubelet asks for, in its order (key encipherment too, which RSA keys use).
CLIENT_USAGES: Final = ("digital signature", "key encipherment", "client auth")
SERVING_USAGES: Final = ("digital signature", "key encipherment", "server auth")
NODES_GROUP: Final = "system:nodes"
NODE_USER_PREFIX: Final = "system:node:"
KEY_TYPES: Final = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096")
#: How long ``kubeadm join`` waits for the node's certificate.
BOOTSTRAP_TIMEOUT: Final = 300.0
NODE_LEASE_NAMESPACE: Final = "kube-node-lease"

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
T = TypeVar("T")


class BootstrapError(Exception):
    """The certificate could not be had."""


class CSRDenied(BootstrapError):
    """The CertificateSigningRequest was denied (or failed)."""


# -- keys and requests ---------------------------------------------------------------------------


def new_private_key(key_type: str = "ecdsa-p256") -> PrivateKey:
    """A new private key: ``ecdsa-p256`` (the kubelet's), ``ecdsa-p384``, ``rsa-N``."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(f"key type {key_type!r}: one of {', '.join(KEY_TYPES)}")


def private_key_pem(key: PrivateKey) -> bytes:
    """The key as the kubelet writes it (``EC PRIVATE KEY`` / ``RSA PRIVATE KEY``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def node_subject(node_name: str) -> x509.Name:
    """``CN=system:node:NAME, O=system:nodes``, the Node authorizer's identity of a node."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node_name),
        ]
    )


def csr_pem(
    key: PrivateKey,
    subject: x509.Name,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> bytes:
    """A PKCS#10 request for ``subject`` (with those SANs), signed by ``key``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def digested_name(key: PrivateKey, subject: x509.Name, usages: Sequence[str]) -> str:
    """``node-csr-<digest>`` of key, subject and usages, as the kubelet names its
    bootstrap CSR (the same request gets the same name)."""
    try:
        digest = hashlib.new("sha512_256")
    except ValueError:  # an OpenSSL without it
        digest = hashlib.sha256()

    def write(data: bytes) -> None:
        digest.update(base64.urlsafe_b64encode(data).rstrip(b"="))
        digest.update(b"|")

    write(_public_der(key.public_key()))
    for attr in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        write(str(attr.value).encode())
    for attr in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME):
        write(str(attr.value).encode())
    for usage in usages:
        write(usage.encode())
    return "node-csr-" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate with the key it was requested for (PEM both)."""

    cert_pem: bytes
    key_pem: bytes
    csr_name: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.cert_pem)[0]

    @property
    def not_after(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc


# -- talking to the API server -------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """No answer (connection refused, reset, a timeout), or an answer that says later (429,
    5xx): worth another try."""
    if isinstance(exc, ApiException):
        return exc.status in (429, 500, 502, 503, 504) or exc.status == 0
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError)


def describe(exc: BaseException) -> str:
    """One line saying what went wrong with a request."""
    if isinstance(exc, ApiException):
        reason = str(exc.reason or "")
        body = exc.body if isinstance(exc.body, str) else ""
        if body:
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = ""
            if message:
                reason = f"{reason}: {message}" if reason else str(message)
        return f"{exc.status} {reason}".strip()
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


async def retrying(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    server: str,
    deadline: float,
    progress: Callable[[str], None] | None = None,
) -> T:
    """``attempt()``, tried again with back-off (0.25 s doubling to 5 s) while it fails
    transiently, until the loop time ``deadline``; then :class:`BootstrapError` naming
    the address tried."""
    loop = asyncio.get_running_loop()
    delay, tries = 0.25, 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = deadline - loop.time()
            if left <= 0:
                raise BootstrapError(
                    f"{what}: no answer from the API server at {server} after {tries} "
                    f"attempts: {describe(exc)}"
                ) from None
            wait = min(delay, left)
            if progress is not None:
                progress(f"[tls-bootstrap] {what}: {server}: {describe(exc)}; again in {wait:.2g}s")
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)


def _condition(csr: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (csr.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status", "True") == "True":
            return dict(condition)
    return None


async def wait_for_certificate(
    kube: KubeClient,
    name: str,
    *,
    deadline: float,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """The PEM certificate of the CSR ``name`` once approved and signed; polls with
    back-off (0.1 s doubling to 2 s). :class:`CSRDenied` if it is denied or fails."""
    certificates = k8s.CertificatesV1Api(kube.api)
    loop = asyncio.get_running_loop()
    delay = 0.1
    approved_said = False
    while True:
        try:
            obj = await retrying(
                f"reading CertificateSigningRequest {name}",
                lambda: certificates.read_certificate_signing_request(name),
                server=kube.server,
                deadline=deadline,
                progress=progress,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise BootstrapError(f"the CertificateSigningRequest {name} was deleted") from None
            raise BootstrapError(
                f"reading the CertificateSigningRequest {name}: {describe(exc)}"
            ) from None
        csr = kube.to_dict(obj)
        for kind in ("Denied", "Failed"):
            condition = _condition(csr, kind)
            if condition is not None:
                why = ": ".join(
                    str(part)
                    for part in (condition.get("reason"), condition.get("message"))
                    if part
                )
                raise CSRDenied(
                    f"the CertificateSigningRequest {name} was {kind.lower()}"
                    + (f" ({why})" if why else "")
                )
        approved = _condition(csr, "Approved")
        certificate = (csr.get("status") or {}).get("certificate")
        if approved is not None and certificate:
            return base64.b64decode(certificate)
        if approved is not None and not approved_said and progress is not None:
            progress(f"[tls-bootstrap] {name} approved ({approved.get('reason', '')}); signing")
            approved_said = True
        left = deadline - loop.time()
        if left <= 0:
            state = "approved but not signed" if approved else "neither approved nor denied"
            raise BootstrapError(
                f"the CertificateSigningRequest {name} is {state} after waiting: "
                f"approve it (kubectl certificate approve {name}), or check that the "
                "controller-manager runs its csrapproving and csrsigning controllers"
            )
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 2.0)


async def request_certificate(
    kube: KubeClient,
    subject: x509.Name,
    *,
    signer_name: str = KUBELET_CLIENT_SIGNER,
    usages: Sequence[str] = CLIENT_USAGES,
    key: PrivateKey | None = None,
    key_type: str = "ecdsa-p256",
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    expiration_seconds: int | None = None,
    name: str | None = None,
    timeout: float = BOOTSTRAP_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> IssuedCertificate:
    """Send a CSR for ``subject`` signed by ``key`` (a new ``key_type`` key when none is
    given) to ``signer_name``, wait up to ``timeout`` for the certificate, and check it
    is for that key and subject.

    The CSR is named as the kubelet names it (:func:`digested_name`) unless ``name``
    says otherwise; one of that name already there (the same request, sent again) is
    waited for instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    key = key or new_private_key(key_type)
    request = csr_pem(key, subject, dns_names=dns_names, ip_addresses=ip_addresses)
    name = name or digested_name(key, subject, usages)
    body = k8s.V1CertificateSigningRequest(
        api_version="certificates.k8s.io/v1",
        kind="CertificateSigningRequest",
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1CertificateSigningRequestSpec(
            request=base64.b64encode(request).decode(),
            signer_name=signer_name,
            usages=list(usages),
            expiration_seconds=expiration_seconds,
        ),
    )
    certificates = k8s.CertificatesV1Api(kube.api)
    try:
        await retrying(
            "creating a CertificateSigningRequest",
            lambda: certificates.create_certificate_signing_request(body),
            server=kube.server,
            deadline=deadline,
            progress=progress,
        )
    except ApiException as exc:
        if exc.status == 401:
            raise BootstrapError(
                f"the API server at {kube.server} refused our credentials (401): a bootstrap "
                "token that has expired or been deleted meanwhile?"
            ) from None
        if exc.status != 409:
            raise BootstrapError(
                f"creating the CertificateSigningRequest {name}: {describe(exc)}"
            ) from None
    if progress is not None:
        cn = ", ".join(str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME))
        progress(f"[tls-bootstrap] CertificateSigningRequest {name} sent ({cn}, {signer_name})")
    cert_pem = await wait_for_certificate(kube, name, deadline=deadline, progress=progress)
    issued = IssuedCertificate(cert_pem=cert_pem, key_pem=private_key_pem(key), csr_name=name)
    try:
        cert = issued.certificate
    except ValueError as exc:
        raise BootstrapError(f"the certificate of {name} is not PEM: {exc}") from None
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        raise BootstrapError(f"the certificate of {name} is not for the key it was asked for")
    if cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) != subject.get_attributes_for_oid(
        NameOID.COMMON_NAME
    ):
        raise BootstrapError(f"the certificate of {name} is for {cert.subject.rfc4514_string()}")
    return issued


async def request_node_client_certificate(
    kube: KubeClient,
    node_name: str,
    *,
    key_type: str = "ecdsa-p256",
    key: PrivateKey | None = None,
    timeout: float = BOOTSTRAP_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> IssuedCertificate:
    """The node's client certificate (``system:node:NAME`` in ``system:nodes``)."""
    return await request_certificate(
        kube,
        node_subject(node_name),
        signer_name=KUBELET_CLIENT_SIGNER,
        usages=CLIENT_USAGES,
        key=key,
        key_type=key_type,
        timeout=timeout,
        progress=progress,
    )


def certificate_node_name(pem: bytes) -> str | None:
    """NAME of the first certificate in ``pem`` when it is a node's
    (``CN=system:node:NAME``), else None."""
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        return None
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = str(attr.value)
        if value.startswith(NODE_USER_PREFIX):
            return value.removeprefix(NODE_USER_PREFIX)
    return None


# -- a name already taken ------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
    return None


async def node_name_in_use(
    kube: KubeClient,
    node_name: str,
    *,
    now: datetime.datetime | None = None,
) -> str | None:
    """Why ``node_name`` belongs to another live node (None if it is free): a Node of
    that name is Ready and its Lease (when we may read it) was renewed within its
    duration. kubeadm lets a joining node read Nodes (ClusterRole ``kubeadm:get-nodes``);
    where it may not, the name is taken for free."""
    try:
        node = kube.to_dict(await kube.core.read_node(node_name))
    except ApiException as exc:
        if exc.status in (403, 404):
            if exc.status == 403:
                log.info("cannot read Node %s (%s): its name is not checked", node_name, exc.reason)
            return None
        raise
    ready = next(
        (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"),
        None,
    )
    if ready is None or ready.get("status") != "True":
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        lease = kube.to_dict(
            await kube.coordination.read_namespaced_lease(node_name, NODE_LEASE_NAMESPACE)
        )
    except ApiException as exc:
        if exc.status not in (403, 404):
            raise
        lease = None
    renewed = ""
    if lease is not None:
        spec = lease.get("spec") or {}
        renew = _parse_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or 40)
        if renew is not None:
            age = (now - renew).total_seconds()
            if age > duration:
                return None  # a Node left Ready by a node that has gone
            renewed = f", its Lease renewed {max(age, 0):.0f}s ago"
    return (
        f"a Node named {node_name!r} is in the cluster and Ready{renewed}: another live "
        "node has this name. Join with another --node-name, or remove that node first "
        f"(kubectl delete node {node_name})"
    )


__all__ = (
    "BOOTSTRAP_TIMEOUT",
    "CLIENT_USAGES",
    "KEY_TYPES",
    "KUBELET_CLIENT_SIGNER",
    "KUBELET_SERVING_SIGNER",
    "SERVING_USAGES",
    "BootstrapError",
    "CSRDenied",
    "IssuedCertificate",
    "PrivateKey",
    "certificate_node_name",
    "csr_pem",
    "describe",
    "digested_name",
    "is_transient",
    "new_private_key",
    "node_name_in_use",
    "node_subject",
    "private_key_pem",
    "request_certificate",
    "request_node_client_certificate",
    "retrying",
    "wait_for_certificate",
)
