"""The kubelet's certificate manager: the node's client certificate, and optionally its
serving certificate, renewed through CertificateSigningRequests before they expire.

Client certificate (active when the node runs from a joined identity,
:class:`~minikubelet.bootstrap.identity.Identity`): at a jittered 70-90 % of the
certificate's lifetime (notBefore..notAfter) the node makes a new ECDSA P-256 key and
asks, with its *current* identity, for a ``kubernetes.io/kube-apiserver-client-kubelet``
certificate for ``system:node:NAME`` in ``system:nodes``. The controller-manager approves
that self-renewal on its own once ``system:nodes`` is bound to
``system:certificates.k8s.io:certificatesigningrequests:selfnodeclient`` (kubeadm makes
that binding). The issued pair is stored with :meth:`Identity.store_pair` (the
``kubelet-client-current.pem`` link switches atomically) and the API client makes its
new connections with it: its REST client (an aiohttp session whose TLS context holds the
client certificate) is replaced, and the old one is kept open a while so the watches and
requests already on it finish there.

A certificate that has expired, or that the API server refuses (401), sends the node
back to ``bootstrap-kubelet.kubeconfig`` when there is one: a certificate is requested
with the bootstrap token instead. Without it the node cannot get a new identity by
itself, and says so: ``minikubelet join`` again.

Serving certificate (``--rotate-server-certificates``): a ``kubernetes.io/kubelet-serving``
certificate for the node's name, hostname and IPs (usages digital signature, key
encipherment, server auth). Clusters approve these by hand, so the node logs the
``kubectl certificate approve NAME`` line and keeps serving its self-signed certificate
until the certificate is issued; then :meth:`ssl.SSLContext.load_cert_chain` on the live
context makes new connections get the new one. It is renewed the same way at 70-90 %.

For tests, ``first_after`` (``--rotate-certificates-after S``) makes the first rotation of
each certificate come S seconds after the start instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import enum
import logging
import random
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client import rest

from minikubelet.bootstrap.identity import CLIENT_PREFIX, SERVER_PREFIX, Identity
from minikubelet.clock import Clock, RealClock
from minikubelet.kubeapi.client import ApiException, KubeClient
from minikubelet.server.kubeletapi.tls import split_names

log = logging.getLogger(__name__)

CLIENT_SIGNER: Final = "kubernetes.io/kube-apiserver-client-kubelet"
SERVING_SIGNER: Final = "kubernetes.io/kubelet-serving"
CLIENT_USAGES: Final = ("digital signature", "key encipherment", "client auth")
SERVING_USAGES: Final = ("digital signature", "key encipherment", "server auth")
NODES_GROUP: Final = "system:nodes"
#: A certificate is renewed between these fractions of its lifetime.
ROTATE_FROM: Final = 0.7
ROTATE_TO: Final = 0.9
#: How often a pending CSR is looked at, and how long it may stay pending before a new
#: one is made (the kubelet's certificateWaitTimeout).
POLL_INTERVAL: Final = 1.0
APPROVAL_TIMEOUT: Final = 15 * 60.0
#: Back-off between failed attempts to get a certificate.
RETRY_INITIAL: Final = 2.0
RETRY_MAX: Final = 5 * 60.0
#: The REST client replaced by a rotation stays open this long for what is still on it.
RETIRE_AFTER: Final = 10 * 60.0
#: How often a node with no way to a new identity looks again (a new join, a new file).
REJOIN_CHECK: Final = 30.0


class CertificateRequestError(RuntimeError):
    """A CSR was denied or failed, or its certificate could not be used."""


# --- when to rotate ----------------------------------------------------------------------


def rotation_deadline(not_before: float, not_after: float, fraction: float) -> float:
    """The moment at ``ROTATE_FROM + fraction * (ROTATE_TO - ROTATE_FROM)`` of the lifetime
    ``not_before..not_after`` (``fraction`` in [0, 1): the jitter)."""
    fraction = min(max(fraction, 0.0), 1.0)
    share = ROTATE_FROM + fraction * (ROTATE_TO - ROTATE_FROM)
    return not_before + (not_after - not_before) * share


@dataclass(frozen=True)
class Validity:
    not_before: float
    not_after: float

    def expired(self, now: float) -> bool:
        return now >= self.not_after


def validity(pem: bytes) -> Validity:
    """notBefore and notAfter (epoch seconds) of the first certificate in ``pem``."""
    cert = x509.load_pem_x509_certificates(pem)[0]
    return Validity(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


class Next(enum.Enum):
    """What the client certificate manager does about the certificate it has."""

    ROTATE = "rotate"  # renew at the deadline with the current identity
    BOOTSTRAP = "bootstrap"  # get a new certificate with the bootstrap token now
    REJOIN = "rejoin"  # nothing the node can do by itself: join again


def decide(*, usable: bool, has_bootstrap: bool) -> Next:
    """With a usable certificate (present, not expired, not refused by the API server),
    rotate it in time; otherwise fall back to the bootstrap kubeconfig, or ask for a new
    join when there is none."""
    if usable:
        return Next.ROTATE
    return Next.BOOTSTRAP if has_bootstrap else Next.REJOIN


# --- keys and requests -------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as the kubelet keeps it (``EC PRIVATE KEY``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def node_csr(key: ec.EllipticCurvePrivateKey, node_name: str, names: Sequence[str] = ()) -> bytes:
    """A CSR (PEM) for ``system:node:NAME`` in ``system:nodes``, naming ``names`` (DNS
    names and IPs) as subject alternative names when given (a serving certificate)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}"),
        ]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    dns, ips = split_names(names)
    if dns or ips:
        alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        alt += [x509.IPAddress(ip) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class CSRApi(Protocol):
    """What is used of ``CertificatesV1Api``."""

    def create_certificate_signing_request(self, body: Any) -> Awaitable[Any]: ...

    def read_certificate_signing_request(self, name: str) -> Awaitable[Any]: ...


def csr_api(api: k8s.ApiClient) -> CSRApi:
    result: CSRApi = k8s.CertificatesV1Api(api)
    return result


def _certificate_bytes(value: Any) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    if data.lstrip().startswith(b"-----BEGIN"):
        return data
    return base64.b64decode(data)


async def create_csr(
    api: CSRApi,
    request_pem: bytes,
    *,
    signer: str,
    usages: Sequence[str],
    expiration_seconds: int | None = None,
) -> str:
    """Create a CertificateSigningRequest (``csr-XXXXX``) for ``request_pem``; its name."""
    body = k8s.V1CertificateSigningRequest(
        api_version="certificates.k8s.io/v1",
        kind="CertificateSigningRequest",
        metadata=k8s.V1ObjectMeta(generate_name="csr-"),
        spec=k8s.V1CertificateSigningRequestSpec(
            request=base64.b64encode(request_pem).decode(),
            signer_name=signer,
            usages=list(usages),
            expiration_seconds=expiration_seconds,
        ),
    )
    created = await api.create_certificate_signing_request(body)
    return str(created.metadata.name)


async def wait_for_certificate(
    api: CSRApi,
    name: str,
    *,
    clock: Clock,
    timeout: float = APPROVAL_TIMEOUT,
    interval: float = POLL_INTERVAL,
) -> bytes:
    """The certificate (PEM) issued for the CSR ``name`` once it is approved and signed.
    Raises :class:`CertificateRequestError` when it is denied or fails, and
    :class:`TimeoutError` when nothing came within ``timeout``."""
    deadline = clock.monotonic() + timeout
    while True:
        csr = await api.read_certificate_signing_request(name)
        status = csr.status
        for condition in (status.conditions if status is not None else None) or ():
            if condition.type in ("Denied", "Failed") and condition.status != "False":
                why = condition.message or condition.reason or ""
                raise CertificateRequestError(
                    f"CertificateSigningRequest {name} was {condition.type.lower()}"
                    + (f": {why}" if why else "")
                )
        if status is not None and status.certificate:
            return _certificate_bytes(status.certificate)
        if clock.monotonic() >= deadline:
            raise TimeoutError(f"CertificateSigningRequest {name} not issued within {timeout:g}s")
        await clock.sleep(interval)


def check_pair(cert_pem: bytes, key: ec.EllipticCurvePrivateKey, node_name: str) -> None:
    """Refuse a certificate that is not for this key and this node."""
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    if cert.public_key() != key.public_key():
        raise CertificateRequestError("the issued certificate is not for the key the node made")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != f"system:node:{node_name}":
        raise CertificateRequestError(
            f"the issued certificate is for {names[0].value if names else '?'!r}, "
            f"not system:node:{node_name}"
        )


# --- switching the API client's connections ----------------------------------------------


class ConnectionSwitch:
    """Replaces the REST client of a ``kubernetes_asyncio`` ``ApiClient`` so its new
    connections present the certificate now in its configuration's files, and closes the
    replaced one after ``retire_after`` (or at :meth:`close`)."""

    def __init__(self, api: k8s.ApiClient, *, retire_after: float = RETIRE_AFTER) -> None:
        self.api = api
        self.retire_after = retire_after
        self._retired: list[tuple[float, Any]] = []
        self.switches = 0

    def switch(self, now: float) -> None:
        old = self.api.rest_client
        self.api.rest_client = rest.RESTClientObject(self.api.configuration)
        self._retired.append((now + self.retire_after, old))
        self.switches += 1

    async def close_retired(self, now: float | None = None) -> None:
        """Close the replaced REST clients whose time is up (all of them without ``now``)."""
        keep = []
        for when, old in self._retired:
            if now is None or when <= now:
                try:
                    await old.close()
                except Exception as exc:  # a closed session is nothing to report
                    log.debug("closing a replaced API connection pool: %s", exc)
            else:
                keep.append((when, old))
        self._retired = keep

    async def close(self) -> None:
        await self.close_retired()


# --- the managers ------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationOptions:
    """``--rotate-server-certificates`` and the test-only ``--rotate-certificates-after``."""

    rotate_server: bool = False
    first_after: float | None = None


def _jitter() -> float:
    return random.random()


@dataclass
class _Attempts:
    """Exponential back-off between failed attempts."""

    delay: float = RETRY_INITIAL
    failures: int = 0

    def failed(self) -> float:
        wait = self.delay
        self.failures += 1
        self.delay = min(self.delay * 2, RETRY_MAX)
        return wait

    def succeeded(self) -> None:
        self.delay = RETRY_INITIAL
        self.failures = 0


@contextlib.asynccontextmanager
async def bootstrap_csr_api(path: Path) -> AsyncIterator[CSRApi]:
    """The CSR API as the bootstrap kubeconfig ``path`` authenticates."""
    async with await KubeClient.from_kubeconfig(path) as kube:
        yield csr_api(kube.api)


async def _still_refused(api: k8s.ApiClient, node_name: str) -> bool:
    """Whether the API server refuses the node's certificate (401) on reading its Node."""
    try:
        await k8s.CoreV1Api(api).read_node(node_name)
    except ApiException as exc:
        return exc.status == 401
    except Exception as exc:
        log.debug("checking the client certificate after a 401: %s", exc)
    return False


class ClientCertificateManager:
    """Keeps the node's client certificate valid (a server task of the node: :meth:`run`)."""

    def __init__(
        self,
        identity: Identity,
        api: k8s.ApiClient,
        node_name: str,
        *,
        clock: Clock | None = None,
        first_after: float | None = None,
        jitter: Callable[[], float] = _jitter,
        csr: CSRApi | None = None,
        bootstrap_csr: Callable[[Path], contextlib.AbstractAsyncContextManager[CSRApi]] = (
            bootstrap_csr_api
        ),
        still_refused: Callable[[], Awaitable[bool]] | None = None,
        approval_timeout: float = APPROVAL_TIMEOUT,
    ) -> None:
        self.identity = identity
        self.node_name = node_name
        self.clock = clock or RealClock()
        self.first_after = first_after
        self.jitter = jitter
        self.csr = csr or csr_api(api)
        self.connections = ConnectionSwitch(api)
        self.bootstrap_csr = bootstrap_csr
        self.still_refused = still_refused or partial(_still_refused, api, node_name)
        self.approval_timeout = approval_timeout
        self.unauthorized = asyncio.Event()
        """Set when the API server refused the node's certificate (401)."""
        self.rotations = 0
        self.last_request = ""
        self.deadline: float | None = None
        self._started = self.clock.now()
        self._attempts = _Attempts()

    def refused(self) -> None:
        """The API server answered 401 to the node: its certificate is looked at again."""
        self.unauthorized.set()

    def current_validity(self) -> Validity | None:
        try:
            return validity(self.identity.current(CLIENT_PREFIX).read_bytes())
        except (OSError, ValueError, IndexError):
            return None

    def next_deadline(self, current: Validity) -> float:
        if self.first_after is not None and self.rotations == 0:
            return self._started + self.first_after
        return rotation_deadline(current.not_before, current.not_after, self.jitter())

    async def run(self) -> None:
        try:
            while True:
                await self._step()
        finally:
            await asyncio.shield(self.connections.close())

    async def _step(self) -> None:
        now = self.clock.now()
        await self.connections.close_retired(now)
        if self.unauthorized.is_set():
            await self._confirm_refused()
        current = self.current_validity()
        usable = current is not None and not current.expired(now) and not self.unauthorized.is_set()
        has_bootstrap = self.identity.bootstrap_kubeconfig.is_file()
        action = decide(usable=usable, has_bootstrap=has_bootstrap)
        if action is Next.REJOIN:
            why = self._why_unusable(current, now)
            log.error(
                "the node's client certificate %s and there is no %s to get a new one "
                "with: the node cannot reach the API server as itself until it joins "
                "again (minikubelet join ... --root-dir %s)",
                why,
                self.identity.bootstrap_kubeconfig,
                self.identity.root,
            )
            await self.clock.sleep(REJOIN_CHECK)
            return
        if action is Next.BOOTSTRAP:
            log.warning(
                "the node's client certificate %s: requesting a new one with %s",
                self._why_unusable(current, now),
                self.identity.bootstrap_kubeconfig,
            )
            await self._attempt(bootstrap=True)
            return
        assert current is not None
        if self.deadline is None:
            self.deadline = self.next_deadline(current)
            log.info(
                "client certificate valid until %s; rotation at %s",
                _when(current.not_after),
                _when(self.deadline),
            )
        wait = self.deadline - now
        if wait > 0:
            await self._sleep_or_refused(min(wait, RETIRE_AFTER))
            return
        await self._attempt(bootstrap=False)

    def _why_unusable(self, current: Validity | None, now: float) -> str:
        if current is None:
            return f"is missing ({self.identity.current(CLIENT_PREFIX)})"
        if current.expired(now):
            return f"expired at {_when(current.not_after)}"
        return "was refused by the API server (401 Unauthorized)"

    async def _sleep_or_refused(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        refused = asyncio.ensure_future(self.unauthorized.wait())
        try:
            await asyncio.wait({sleeper, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, refused):
                task.cancel()

    async def _confirm_refused(self) -> None:
        """One 401 could be a passing thing (an API server starting): the certificate is
        tried once more before it is given up."""
        if not await self.still_refused():
            self.unauthorized.clear()  # else it stays set: the next step falls back

    async def _attempt(self, *, bootstrap: bool) -> None:
        try:
            if bootstrap:
                async with self.bootstrap_csr(self.identity.bootstrap_kubeconfig) as boot:
                    await self.renew(boot)
            else:
                await self.renew(self.csr)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            wait = self._attempts.failed()
            log.warning(
                "could not renew the node's client certificate (%s); trying again in %gs",
                exc,
                wait,
            )
            await self.clock.sleep(wait)
            return
        self._attempts.succeeded()
        self.unauthorized.clear()

    async def renew(self, api: CSRApi) -> Path:
        """Request, wait for and install a new client certificate; the current link."""
        key = new_key()
        request = await asyncio.to_thread(node_csr, key, self.node_name)
        name = await create_csr(api, request, signer=CLIENT_SIGNER, usages=CLIENT_USAGES)
        self.last_request = name
        log.info("requested a new client certificate: CertificateSigningRequest %s", name)
        cert = await wait_for_certificate(
            api, name, clock=self.clock, timeout=self.approval_timeout
        )
        check_pair(cert, key, self.node_name)
        now = self.clock.now()
        link = await asyncio.to_thread(
            self.identity.store_pair,
            cert,
            key_pem(key),
            prefix=CLIENT_PREFIX,
            now=datetime.datetime.fromtimestamp(now, datetime.UTC),
        )
        if not self.identity.kubeconfig.is_file():
            await asyncio.to_thread(self._write_kubeconfig)
        self.connections.switch(now)
        self.rotations += 1
        self.deadline = None
        issued = validity(cert)
        log.info(
            "new client certificate from CertificateSigningRequest %s, valid until %s; "
            "new API connections use it",
            name,
            _when(issued.not_after),
        )
        return link

    def _write_kubeconfig(self) -> None:
        """``kubelet.kubeconfig`` from the bootstrap one's server and CA."""
        import yaml

        config = yaml.safe_load(self.identity.bootstrap_kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        ca = base64.b64decode(cluster["certificate-authority-data"])
        self.identity.write_kubeconfig(cluster["server"], ca)

    def summary(self) -> dict[str, Any]:
        current = self.current_validity()
        return {
            "notAfter": _when(current.not_after) if current else None,
            "rotationDeadline": _when(self.deadline) if self.deadline else None,
            "rotations": self.rotations,
            "lastRequest": self.last_request,
        }


class ServingCertificateManager:
    """Requests the node's serving certificate from the cluster and serves it once issued
    (a server task of the node: :meth:`run`); contexts to update are given by :meth:`attach`."""

    def __init__(
        self,
        identity: Identity,
        api: CSRApi,
        node_name: str,
        names: Sequence[str],
        *,
        clock: Clock | None = None,
        first_after: float | None = None,
        jitter: Callable[[], float] = _jitter,
        approval_timeout: float = APPROVAL_TIMEOUT,
    ) -> None:
        self.identity = identity
        self.api = api
        self.node_name = node_name
        self.names = list(dict.fromkeys(n for n in names if n))
        self.clock = clock or RealClock()
        self.first_after = first_after
        self.jitter = jitter
        self.approval_timeout = approval_timeout
        self.rotations = 0
        self.pending = ""
        self.deadline: float | None = None
        self.issued = asyncio.Event()
        """Set once a certificate from the cluster is served."""
        self._contexts: list[ssl.SSLContext] = []
        self._lock = threading.Lock()
        self._started = self.clock.now()
        self._attempts = _Attempts()

    @property
    def current(self) -> Path:
        return self.identity.current(SERVER_PREFIX)

    def attach(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """Serve the issued certificate on ``context`` (now, if there is a good one, and
        after each renewal). Safe to call from another thread."""
        with self._lock:
            self._contexts.append(context)
        if self._usable() is not None:
            self._load(context)
        return context

    def _usable(self) -> Validity | None:
        """The issued certificate's validity if it is there, valid and names every name."""
        try:
            pem = self.current.read_bytes()
            cert = x509.load_pem_x509_certificates(pem)[0]
        except (OSError, ValueError, IndexError):
            return None
        got = validity(pem)
        if got.expired(self.clock.now()):
            return None
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None
        dns, ips = split_names(self.names)
        if not (
            set(dns) <= set(san.get_values_for_type(x509.DNSName))
            and set(ips) <= set(san.get_values_for_type(x509.IPAddress))
        ):
            return None
        return got

    def _load(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(str(self.current))

    def _load_all(self) -> None:
        with self._lock:
            contexts = list(self._contexts)
        for context in contexts:
            self._load(context)

    async def run(self) -> None:
        while True:
            await self._step()

    async def _step(self) -> None:
        current = self._usable()
        now = self.clock.now()
        if current is not None:
            if not self.issued.is_set():
                await asyncio.to_thread(self._load_all)
                self.issued.set()
            if self.deadline is None:
                if self.first_after is not None and self.rotations == 0:
                    self.deadline = self._started + self.first_after
                else:
                    self.deadline = rotation_deadline(
                        current.not_before, current.not_after, self.jitter()
                    )
                log.info(
                    "serving certificate valid until %s; rotation at %s",
                    _when(current.not_after),
                    _when(self.deadline),
                )
            if self.deadline > now:
                await self.clock.sleep(min(self.deadline - now, REJOIN_CHECK * 10))
                return
        try:
            await self.renew()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            wait = self._attempts.failed()
            log.warning(
                "could not get a serving certificate from the cluster (%s); trying again in %gs",
                exc,
                wait,
            )
            await self.clock.sleep(wait)
        else:
            self._attempts.succeeded()

    async def renew(self) -> Path:
        key = new_key()
        request = await asyncio.to_thread(node_csr, key, self.node_name, self.names)
        name = await create_csr(self.api, request, signer=SERVING_SIGNER, usages=SERVING_USAGES)
        self.pending = name
        line = f"kubectl certificate approve {name}"
        log.warning(
            "requested a serving certificate for %s: CertificateSigningRequest %s waits for "
            "approval (%s); the self-signed certificate is served until then",
            ", ".join(self.names),
            name,
            line,
        )
        print(f"minikubelet: serving certificate requested; approve it with: {line}", flush=True)
        cert = await wait_for_certificate(
            self.api, name, clock=self.clock, timeout=self.approval_timeout
        )
        check_pair(cert, key, self.node_name)
        now = self.clock.now()
        link = await asyncio.to_thread(
            self.identity.store_pair,
            cert,
            key_pem(key),
            prefix=SERVER_PREFIX,
            now=datetime.datetime.fromtimestamp(now, datetime.UTC),
        )
        await asyncio.to_thread(self._load_all)
        self.pending = ""
        self.rotations += 1
        self.deadline = None
        self.issued.set()
        log.info(
            "serving the certificate from CertificateSigningRequest %s (valid until %s)",
            name,
            _when(validity(cert).not_after),
        )
        return link


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = (
    "CLIENT_SIGNER",
    "SERVING_SIGNER",
    "CertificateRequestError",
    "ClientCertificateManager",
    "ConnectionSwitch",
    "Next",
    "RotationOptions",
    "ServingCertificateManager",
    "Validity",
    "check_pair",
    "create_csr",
    "decide",
    "key_pem",
    "new_key",
    "node_csr",
    "rotation_deadline",
    "validity",
    "wait_for_certificate",
)
