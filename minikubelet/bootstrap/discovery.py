"""Token discovery, as ``kubeadm join`` does it: learn the API server's CA from a
bootstrap token and a pin of the CA's public key.

The cluster publishes ``cluster-info`` in ``kube-public``, the one object anyone may
read: a kubeconfig naming the API server and its CA (no user). The controller-manager's
``bootstrapsigner`` adds, for every bootstrap token allowed to sign, a detached JWS
(RFC 7515 appendix F: ``header..signature``) of that kubeconfig under
``jws-kubeconfig-<token-id>``, HS256 keyed by the token's secret. So:

1. the ConfigMap is read anonymously over TLS that verifies nothing yet;
2. its signature for our token id proves it came from someone who knows the token's
   secret (the cluster, or whoever we got the token from);
3. the sha256 of the CA certificate's DER SubjectPublicKeyInfo must be one of the
   ``--discovery-token-ca-cert-hash`` pins (unless the operator skipped that check),
   so a man in the middle who has the token still cannot slip in his own CA;
4. the ConfigMap is read again, now verifying the server against that CA, and must
   carry the same kubeconfig.

What a node may do with the result: talk to ``ClusterInfo.server``, trusting
``ClusterInfo.ca_pem``, with the bootstrap token (see :mod:`.tlsbootstrap`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from minikubelet.cri.trace import TraceRecorder

CLUSTER_INFO_PATH: Final = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
KUBECONFIG_KEY: Final = "kubeconfig"
JWS_PREFIX: Final = "jws-kubeconfig-"
#: How long a fresh token's signature may take to appear (the bootstrapsigner adds it
#: within a second of the token's Secret); past that the token is unknown or expired.
SIGNATURE_WAIT: Final = 10.0
DISCOVERY_TIMEOUT: Final = 300.0  # kubeadm's

_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")


class DiscoveryError(Exception):
    """Discovery failed in a way trying again will not mend."""


class Unreachable(DiscoveryError):
    """No answer worth having from the API server before the deadline."""


class NoSignature(DiscoveryError):
    """``cluster-info`` carries no signature for our token id."""


# -- the token and the pins ----------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapToken:
    """A bootstrap token ``ID.SECRET`` (6 and 16 characters of ``[a-z0-9]``)."""

    id: str
    secret: str

    @classmethod
    def parse(cls, text: str) -> BootstrapToken:
        match = _TOKEN.match(text.strip())
        if match is None:
            raise DiscoveryError(
                "the token is not a bootstrap token: expected ID.SECRET, 6 and 16 characters "
                "of [a-z0-9] (as `kubeadm token create` prints it)"
            )
        return cls(match[1], match[2])

    def __str__(self) -> str:
        return f"{self.id}.{self.secret}"

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"BootstrapToken(id={self.id!r})"


def parse_ca_hash(text: str) -> str:
    """A ``--discovery-token-ca-cert-hash``, normalized to ``sha256:<64 lowercase hex>``."""
    value = text.strip().lower()
    if _HASH.match(value) is None:
        raise DiscoveryError(
            f"--discovery-token-ca-cert-hash {text!r} is not sha256:<64 hex digits> "
            "(as `kubeadm token create --print-join-command` prints it)"
        )
    return value


def public_key_hash(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's DER SubjectPublicKeyInfo (kubeadm's pin)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def ca_public_key_hashes(ca_pem: bytes) -> list[str]:
    """The pins of every certificate in a CA bundle, in order."""
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise DiscoveryError(
            f"the CA data in cluster-info is not PEM certificates: {exc}"
        ) from None
    return [public_key_hash(cert) for cert in certs]


# -- detached JWS --------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def detached_signature(payload: bytes, token: BootstrapToken) -> str:
    """The detached JWS the bootstrapsigner writes for ``payload``: compact
    ``header..signature``, HS256 keyed by the token's secret, ``kid`` the token id."""
    header = _b64url(json.dumps({"alg": "HS256", "kid": token.id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{_b64url(payload)}".encode()
    mac = hmac.new(token.secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}..{_b64url(mac)}"


def verify_detached_signature(detached: str, payload: bytes, token: BootstrapToken) -> None:
    """Raise :class:`DiscoveryError` unless ``detached`` is an HS256 JWS of ``payload``
    made with the token's secret."""
    parts = detached.strip().split(".")
    if len(parts) != 3 or parts[1] != "":
        raise DiscoveryError("the cluster-info signature is not a detached JWS (header..signature)")
    header_b64, _, signature_b64 = parts
    try:
        header = json.loads(_unb64url(header_b64))
        signature = _unb64url(signature_b64)
    except (ValueError, binascii.Error):
        raise DiscoveryError("the cluster-info signature cannot be decoded") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        alg = header.get("alg") if isinstance(header, dict) else None
        raise DiscoveryError(f"the cluster-info signature is not HS256 (alg {alg!r})")
    if header.get("kid", token.id) != token.id:
        raise DiscoveryError(
            f"the cluster-info signature is for token id {header.get('kid')!r}, not {token.id!r}"
        )
    signing_input = f"{header_b64}.{_b64url(payload)}".encode()
    expected = hmac.new(token.secret.encode(), signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise DiscoveryError(
            f"the cluster-info signature for token id {token.id!r} does not verify: the "
            "token's secret is wrong, so this API server cannot be trusted with it"
        )


# -- cluster-info --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    """What discovery verified: where the API server is and the CA it is trusted with."""

    server: str
    ca_pem: bytes
    ca_hash: str  # the pin of the first CA certificate
    kubeconfig: str  # the signed text, as published
    #: the CA pin was checked (False: --discovery-token-unsafe-skip-ca-verification)
    verified: bool


def parse_cluster_kubeconfig(text: str) -> tuple[str, bytes]:
    """``(server, CA PEM)`` of the kubeconfig in cluster-info (its current context's
    cluster, else its first)."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DiscoveryError(f"the kubeconfig in cluster-info is not YAML: {exc}") from None
    clusters = config.get("clusters") if isinstance(config, dict) else None
    if not isinstance(clusters, list) or not clusters:
        raise DiscoveryError("the kubeconfig in cluster-info names no cluster")
    wanted = None
    current = config.get("current-context")
    for context in config.get("contexts") or []:
        if isinstance(context, dict) and context.get("name") == current:
            wanted = (context.get("context") or {}).get("cluster")
    chosen = next(
        (c for c in clusters if isinstance(c, dict) and c.get("name") == wanted), clusters[0]
    )
    cluster = chosen.get("cluster") if isinstance(chosen, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("server"):
        raise DiscoveryError("the kubeconfig in cluster-info has no server")
    data = cluster.get("certificate-authority-data")
    if not data:
        raise DiscoveryError("the kubeconfig in cluster-info carries no CA data")
    try:
        ca_pem = base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        raise DiscoveryError("the CA data in cluster-info is not base64") from None
    return str(cluster["server"]), ca_pem


def validate_cluster_info(
    data: Mapping[str, Any],
    token: BootstrapToken,
    pins: Sequence[str],
    *,
    unsafe_skip_ca_verification: bool = False,
) -> ClusterInfo:
    """Check the ``data`` of the cluster-info ConfigMap as kubeadm does: the token's
    signature (always), then the CA pin (unless skipped). :class:`NoSignature` when the
    token id has no signature in it (yet)."""
    kubeconfig = data.get(KUBECONFIG_KEY)
    if not isinstance(kubeconfig, str):
        raise DiscoveryError("the cluster-info ConfigMap has no kubeconfig")
    detached = data.get(JWS_PREFIX + token.id)
    if not isinstance(detached, str):
        raise NoSignature(
            f"the cluster-info ConfigMap carries no signature for token id {token.id!r}: "
            "the token is unknown to this cluster or has expired (on a control-plane "
            "node, `kubeadm token create --print-join-command` makes a new one)"
        )
    verify_detached_signature(detached, kubeconfig.encode(), token)
    server, ca_pem = parse_cluster_kubeconfig(kubeconfig)
    hashes = ca_public_key_hashes(ca_pem)
    if not hashes:
        raise DiscoveryError("the CA data in cluster-info holds no certificate")
    if not unsafe_skip_ca_verification:
        if not pins:
            raise DiscoveryError(
                "no --discovery-token-ca-cert-hash given: pin the cluster CA (kubeadm token "
                "create --print-join-command prints it), or accept any CA with "
                "--discovery-token-unsafe-skip-ca-verification"
            )
        if not set(hashes) & set(pins):
            raise DiscoveryError(
                f"the cluster CA's public key hash is {', '.join(hashes)}, but "
                f"--discovery-token-ca-cert-hash pins {', '.join(pins)}: this is not the "
                "cluster the hash belongs to (or someone is in between)"
            )
    return ClusterInfo(
        server=server,
        ca_pem=ca_pem,
        ca_hash=hashes[0],
        kubeconfig=kubeconfig,
        verified=not unsafe_skip_ca_verification,
    )


# -- fetching ------------------------------------------------------------------------------------


def endpoint_url(endpoint: str) -> str:
    """``https://HOST:PORT`` of a join line's ``HOST:PORT`` (or a URL)."""
    text = endpoint.strip().rstrip("/")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme != "https":
            raise DiscoveryError(f"the API server endpoint {endpoint!r} is not https")
        text = rest
    if not text or "/" in text:
        raise DiscoveryError(f"the API server endpoint {endpoint!r} is not HOST:PORT")
    if text.startswith("["):  # [IPv6]:PORT or [IPv6]
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
        text = f"[{host}]:{port or 6443}"
    elif text.count(":") > 1:  # a bare IPv6 address
        text = f"[{text}]:6443"
    elif ":" not in text:
        text = f"{text}:6443"  # the API server's usual port
    port = text.rpartition(":")[2]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise DiscoveryError(f"the API server endpoint {endpoint!r} has no valid port")
    return f"https://{text}"


class _Retry(Exception):
    """A failed attempt worth another one (why is its message)."""


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


async def _get_cluster_info(
    session: aiohttp.ClientSession,
    url: str,
    tls: ssl.SSLContext | bool,
    trace: TraceRecorder | None,
) -> dict[str, Any]:
    started, t0 = time.time(), time.perf_counter()
    code, error = "", ""
    try:
        async with session.get(url + CLUSTER_INFO_PATH, ssl=tls) as response:
            code = str(response.status)
            body = await response.text()
            if response.status != 200:
                error = _status_message(body) or response.reason or ""
                raise _Retry(f"GET cluster-info answered {response.status} {error}".rstrip())
            try:
                cm = json.loads(body)
            except ValueError:
                raise DiscoveryError("the cluster-info ConfigMap is not JSON") from None
    except (aiohttp.ClientConnectorCertificateError, ssl.CertificateError) as exc:
        code, error = "error", _describe(exc)
        cause = getattr(exc, "certificate_error", exc)
        why = getattr(cause, "verify_message", "") or _describe(cause)
        raise DiscoveryError(
            f"{url} does not present a certificate of the cluster CA for its address: {why}"
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        code, error = "error", _describe(exc)
        raise _Retry(error) from None
    finally:
        if trace is not None:
            trace.record_api(
                method="GET configmaps",
                code=code,
                started=started,
                duration_s=time.perf_counter() - t0,
                error=error,
                details={
                    "name": "kube-public/cluster-info",
                    "tls": "verified" if isinstance(tls, ssl.SSLContext) else "unverified",
                    "user": "system:anonymous",
                },
            )
    data = cm.get("data") if isinstance(cm, dict) else None
    if not isinstance(data, dict):
        raise DiscoveryError("the cluster-info ConfigMap has no data")
    return data


def _status_message(body: str) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    return str(status.get("message", "")) if isinstance(status, dict) else ""


def ca_context(ca_pem: bytes) -> ssl.SSLContext:
    """TLS that trusts ``ca_pem`` alone and checks the server's name."""
    return ssl.create_default_context(cadata=ca_pem.decode())


async def discover(
    endpoint: str,
    token: BootstrapToken,
    pins: Sequence[str],
    *,
    unsafe_skip_ca_verification: bool = False,
    timeout: float = DISCOVERY_TIMEOUT,
    signature_wait: float = SIGNATURE_WAIT,
    request_timeout: float = 10.0,
    trace: TraceRecorder | None = None,
    progress: Callable[[str], None] | None = None,
) -> ClusterInfo:
    """Token discovery against ``endpoint`` (``HOST:PORT``).

    Unanswered requests (no connection, a timeout, an error status) are tried again
    with back-off until ``timeout``; a missing signature for a while longer than the
    bootstrapsigner needs (``signature_wait``); a wrong signature or CA pin at once.
    """
    url = endpoint_url(endpoint)
    say = progress or (lambda _: None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    delay, attempts = 0.25, 0
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, trust_env=False) as session:
        while True:
            attempts += 1
            try:
                data = await _get_cluster_info(session, url, False, trace)
                info = validate_cluster_info(
                    data, token, pins, unsafe_skip_ca_verification=unsafe_skip_ca_verification
                )
                break
            except NoSignature:
                if loop.time() - started >= min(timeout, signature_wait):
                    raise
                why = f"no signature for token id {token.id!r} in cluster-info yet"
            except _Retry as exc:
                why = str(exc)
            left = deadline - loop.time()
            if left <= 0:
                raise Unreachable(
                    f"cannot get cluster-info from the API server at {url} "
                    f"({attempts} attempts in {timeout:g}s): {why}"
                )
            wait = min(delay, left)
            say(f"[discovery] {url}: {why}; trying again in {wait:.2g}s")
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)
        if not info.verified:
            say(
                "[discovery] WARNING: the cluster CA is not verified "
                "(--discovery-token-unsafe-skip-ca-verification): "
                f"whoever answers at {url} is trusted"
            )
        # Again, now over TLS that trusts the CA we verified: the same kubeconfig.
        while True:
            try:
                secure = await _get_cluster_info(session, url, ca_context(info.ca_pem), trace)
                break
            except _Retry as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise Unreachable(
                        f"cannot get cluster-info from the API server at {url} over "
                        f"verified TLS: {exc}"
                    ) from None
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)
    if secure.get(KUBECONFIG_KEY) != info.kubeconfig:
        raise DiscoveryError(
            "the cluster-info ConfigMap read over verified TLS differs from the one read "
            "before: refusing to trust either"
        )
    return info


__all__ = (
    "DISCOVERY_TIMEOUT",
    "BootstrapToken",
    "ClusterInfo",
    "DiscoveryError",
    "NoSignature",
    "Unreachable",
    "ca_context",
    "ca_public_key_hashes",
    "detached_signature",
    "discover",
    "endpoint_url",
    "parse_ca_hash",
    "parse_cluster_kubeconfig",
    "public_key_hash",
    "validate_cluster_info",
    "verify_detached_signature",
)
