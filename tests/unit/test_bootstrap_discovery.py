"""Token discovery (minikubelet/bootstrap/discovery.py): the detached JWS of cluster-info,
the CA public-key pin, what is refused and how it is said, and ``discover`` against a
local HTTPS server standing in for the API server."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from minikubelet.bootstrap.discovery import (
    CLUSTER_INFO_PATH,
    BootstrapToken,
    DiscoveryError,
    NoSignature,
    Unreachable,
    ca_public_key_hashes,
    detached_signature,
    discover,
    endpoint_url,
    parse_ca_hash,
    parse_cluster_kubeconfig,
    public_key_hash,
    validate_cluster_info,
    verify_detached_signature,
)
from minikubelet.cri.trace import TraceRecorder

# k8s.io/cluster-bootstrap/token/jws's own test vectors (ComputeDetachedSignature)
UPSTREAM_CONTENT = b"Hello from the other side. I must have called a thousand times."
UPSTREAM_TOKEN = BootstrapToken("joshua", "my voice is my passcode")
UPSTREAM_SIG = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
)
UPSTREAM_EMPTY_SIG = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
)

TOKEN = BootstrapToken.parse("abcdef.0123456789abcdef")


# -- a CA and the kubeconfig cluster-info publishes ------------------------------------------------


@dataclass
class Pki:
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    server_cert_pem: bytes = b""
    server_key_pem: bytes = b""

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)


def make_pki(server_ip: str = "127.0.0.1") -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(server_ip))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pki(
        ca_key,
        ca,
        server.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def cluster_kubeconfig(server: str, ca_pem: bytes) -> str:
    """As kubeadm writes it: one unnamed cluster, no user, no context."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "clusters": [
                {
                    "cluster": {
                        "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                        "server": server,
                    },
                    "name": "",
                }
            ],
            "contexts": None,
            "current-context": "",
            "kind": "Config",
            "preferences": {},
            "users": None,
        }
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def signed_data(kubeconfig: str, *tokens: BootstrapToken) -> dict[str, str]:
    data = {"kubeconfig": kubeconfig}
    for token in tokens:
        data[f"jws-kubeconfig-{token.id}"] = detached_signature(kubeconfig.encode(), token)
    return data


# -- the token and the hash ----------------------------------------------------------------------


def test_token_is_parsed_and_its_secret_kept_out_of_repr() -> None:
    token = BootstrapToken.parse(" abcdef.0123456789abcdef\n")
    assert (token.id, token.secret, str(token)) == ("abcdef", "0123456789abcdef", str(TOKEN))
    assert "0123456789abcdef" not in repr(token)


@pytest.mark.parametrize(
    "text",
    ["abcdef", "abcde.0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef:0123456789abcdef", ""],
)
def test_malformed_tokens_are_refused(text: str) -> None:
    with pytest.raises(DiscoveryError, match=r"ID\.SECRET"):
        BootstrapToken.parse(text)


def test_ca_hash_is_normalized_and_checked() -> None:
    hexa = "AB" * 32
    assert parse_ca_hash(f"sha256:{hexa}") == f"sha256:{hexa.lower()}"
    for bad in (hexa, f"sha256:{hexa[:-2]}", f"sha1:{hexa}", f"sha256:{'zz' * 32}"):
        with pytest.raises(DiscoveryError, match="sha256:<64 hex digits>"):
            parse_ca_hash(bad)


def test_pin_is_the_sha256_of_the_spki_as_kubeadm_documents_it(pki: Pki, tmp_path: Path) -> None:
    """kubeadm's recipe: openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256."""
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.ca_pem)
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(ca)], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hex"], input=der, capture_output=True, check=True
    ).stdout.decode()
    expected = "sha256:" + digest.split("=")[-1].strip()
    assert public_key_hash(pki.ca_cert) == expected
    assert ca_public_key_hashes(pki.ca_pem + make_pki().ca_pem)[0] == expected


# -- the detached JWS ----------------------------------------------------------------------------


def test_signature_matches_the_upstream_vectors() -> None:
    assert detached_signature(UPSTREAM_CONTENT, UPSTREAM_TOKEN) == UPSTREAM_SIG
    assert detached_signature(b"", UPSTREAM_TOKEN) == UPSTREAM_EMPTY_SIG
    verify_detached_signature(UPSTREAM_SIG, UPSTREAM_CONTENT, UPSTREAM_TOKEN)
    verify_detached_signature(UPSTREAM_EMPTY_SIG, b"", UPSTREAM_TOKEN)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda sig, payload: (sig, payload + b" "), "does not verify"),
        (lambda sig, payload: (sig[:-4] + "AAAA", payload), "does not verify"),
        (lambda sig, payload: (sig.replace("..", f".{_b64(payload)}."), payload), "detached"),
        (lambda sig, payload: (sig.replace("..", "."), payload), "detached"),
        (lambda sig, payload: ("%%%.." + sig.split("..")[1], payload), "cannot be decoded"),
        (
            lambda sig, payload: (
                _b64(b'{"alg":"none","kid":"joshua"}') + ".." + sig.split("..")[1],
                payload,
            ),
            "not HS256",
        ),
        (
            lambda sig, payload: (
                _b64(b'{"alg":"HS256","kid":"mallory"}') + ".." + sig.split("..")[1],
                payload,
            ),
            "token id 'mallory'",
        ),
    ],
)
def test_bad_signatures_are_refused(
    mangle: Callable[[str, bytes], tuple[str, bytes]], message: str
) -> None:
    sig, payload = mangle(UPSTREAM_SIG, UPSTREAM_CONTENT)
    with pytest.raises(DiscoveryError, match=message):
        verify_detached_signature(sig, payload, UPSTREAM_TOKEN)


def test_a_wrong_secret_does_not_verify() -> None:
    wrong = BootstrapToken("joshua", "my voice is not my passcode")
    with pytest.raises(DiscoveryError, match="secret is wrong"):
        verify_detached_signature(UPSTREAM_SIG, UPSTREAM_CONTENT, wrong)


# -- cluster-info as a whole ---------------------------------------------------------------------


def test_valid_cluster_info_gives_server_and_ca(pki: Pki) -> None:
    kubeconfig = cluster_kubeconfig("https://10.1.2.3:6443", pki.ca_pem)
    other = BootstrapToken.parse("zzzzzz.zzzzzzzzzzzzzzzz")
    pin = public_key_hash(pki.ca_cert)
    info = validate_cluster_info(
        signed_data(kubeconfig, other, TOKEN), TOKEN, ["sha256:" + "0" * 64, pin]
    )
    assert (info.server, info.ca_pem, info.ca_hash, info.verified) == (
        "https://10.1.2.3:6443",
        pki.ca_pem,
        pin,
        True,
    )


def test_no_signature_for_the_token_says_unknown_or_expired(pki: Pki) -> None:
    kubeconfig = cluster_kubeconfig("https://10.1.2.3:6443", pki.ca_pem)
    other = BootstrapToken.parse("zzzzzz.zzzzzzzzzzzzzzzz")
    with pytest.raises(NoSignature, match="unknown to this cluster or has expired"):
        validate_cluster_info(signed_data(kubeconfig, other), TOKEN, [public_key_hash(pki.ca_cert)])
    # skipping the CA check does not skip the token's signature
    with pytest.raises(NoSignature):
        validate_cluster_info(signed_data(kubeconfig), TOKEN, [], unsafe_skip_ca_verification=True)


def test_a_signature_of_other_content_is_refused(pki: Pki) -> None:
    data = signed_data(cluster_kubeconfig("https://10.1.2.3:6443", pki.ca_pem), TOKEN)
    data["kubeconfig"] = cluster_kubeconfig("https://6.6.6.6:6443", pki.ca_pem)
    with pytest.raises(DiscoveryError, match="does not verify"):
        validate_cluster_info(data, TOKEN, [public_key_hash(pki.ca_cert)])


def test_a_wrong_pin_names_both_hashes(pki: Pki) -> None:
    data = signed_data(cluster_kubeconfig("https://10.1.2.3:6443", pki.ca_pem), TOKEN)
    wrong = "sha256:" + "1" * 64
    with pytest.raises(DiscoveryError) as caught:
        validate_cluster_info(data, TOKEN, [wrong])
    assert public_key_hash(pki.ca_cert) in str(caught.value)
    assert wrong in str(caught.value)


def test_no_pin_is_refused_unless_skipping_is_asked_for(pki: Pki) -> None:
    data = signed_data(cluster_kubeconfig("https://10.1.2.3:6443", pki.ca_pem), TOKEN)
    with pytest.raises(DiscoveryError, match="unsafe-skip-ca-verification"):
        validate_cluster_info(data, TOKEN, [])
    info = validate_cluster_info(data, TOKEN, [], unsafe_skip_ca_verification=True)
    assert info.verified is False
    assert info.ca_hash == public_key_hash(pki.ca_cert)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: []", "names no cluster"),
        ("{{{", "not YAML"),
        ("clusters: [{name: a, cluster: {certificate-authority-data: eA==}}]", "no server"),
        ("clusters: [{name: a, cluster: {server: 'https://h'}}]", "no CA data"),
        (
            "clusters: [{name: a, cluster: {server: 'https://h', "
            "certificate-authority-data: '***'}}]",
            "not base64",
        ),
    ],
)
def test_broken_kubeconfigs_are_refused(text: str, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        parse_cluster_kubeconfig(text)


def test_the_current_contexts_cluster_is_taken(pki: Pki) -> None:
    ca = base64.b64encode(pki.ca_pem).decode()
    text = yaml.safe_dump(
        {
            "clusters": [
                {"name": "a", "cluster": {"server": "https://a", "certificate-authority-data": ca}},
                {"name": "b", "cluster": {"server": "https://b", "certificate-authority-data": ca}},
            ],
            "contexts": [{"name": "ctx", "context": {"cluster": "b"}}],
            "current-context": "ctx",
        }
    )
    assert parse_cluster_kubeconfig(text)[0] == "https://b"


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("10.0.0.1:6443", "https://10.0.0.1:6443"),
        ("kind-control-plane", "https://kind-control-plane:6443"),
        ("https://h:443/", "https://h:443"),
        ("[fd00::1]:6443", "https://[fd00::1]:6443"),
        ("fd00::1", "https://[fd00::1]:6443"),
    ],
)
def test_endpoints(endpoint: str, url: str) -> None:
    assert endpoint_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["http://h:6443", "h:port", "h:70000", "h/x", ""])
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(DiscoveryError):
        endpoint_url(endpoint)


# -- discover() against a local HTTPS server -----------------------------------------------------


@dataclass
class FakeAPIServer:
    """Serves cluster-info over TLS with a certificate of ``pki``'s CA."""

    pki: Pki
    data: dict[str, str] = field(default_factory=dict)
    unsigned_reads: int = 0  # answer this many reads without the signatures first
    second_data: dict[str, str] | None = None  # what the second (verified) read gets
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"auth": request.headers.get("Authorization")})
        if self.status != 200:
            return web.json_response(
                {"message": "forbidden: User system:anonymous"}, status=self.status
            )
        data = dict(self.data)
        if len(self.requests) <= self.unsigned_reads:
            data = {k: v for k, v in data.items() if not k.startswith("jws-")}
        elif len(self.requests) > 1 and self.second_data is not None:
            data = self.second_data
        return web.json_response({"kind": "ConfigMap", "data": data})


@pytest.fixture
async def api_server(pki: Pki, tmp_path: Path) -> AsyncIterator[FakeAPIServer]:
    server = FakeAPIServer(pki)
    app = web.Application()
    app.router.add_get(CLUSTER_INFO_PATH, server.handle)
    (tmp_path / "tls.crt").write_bytes(pki.server_cert_pem)
    (tmp_path / "tls.key").write_bytes(pki.server_key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.data = signed_data(
        cluster_kubeconfig(f"https://127.0.0.1:{server.port}", pki.ca_pem), TOKEN
    )
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_discover_reads_twice_and_anonymously(api_server: FakeAPIServer, pki: Pki) -> None:
    trace = TraceRecorder()
    info = await discover(
        f"127.0.0.1:{api_server.port}", TOKEN, [public_key_hash(pki.ca_cert)], trace=trace
    )
    assert info.server == f"https://127.0.0.1:{api_server.port}"
    assert [r["auth"] for r in api_server.requests] == [None, None]
    assert [(r.method, r.code, r.details["tls"]) for r in trace.records()] == [
        ("GET configmaps", "200", "unverified"),
        ("GET configmaps", "200", "verified"),
    ]


async def test_a_signature_that_comes_late_is_waited_for(
    api_server: FakeAPIServer, pki: Pki
) -> None:
    api_server.unsigned_reads = 2
    said: list[str] = []
    await discover(
        f"127.0.0.1:{api_server.port}", TOKEN, [public_key_hash(pki.ca_cert)], progress=said.append
    )
    assert len(api_server.requests) == 4
    assert sum("no signature" in line for line in said) == 2


async def test_a_signature_that_never_comes_stops_discovery(
    api_server: FakeAPIServer, pki: Pki
) -> None:
    api_server.unsigned_reads = 1000
    with pytest.raises(NoSignature, match="unknown to this cluster or has expired"):
        await discover(
            f"127.0.0.1:{api_server.port}",
            TOKEN,
            [public_key_hash(pki.ca_cert)],
            signature_wait=0.5,
        )


async def test_a_different_second_answer_is_refused(api_server: FakeAPIServer, pki: Pki) -> None:
    api_server.second_data = signed_data(
        cluster_kubeconfig("https://6.6.6.6:6443", pki.ca_pem), TOKEN
    )
    with pytest.raises(DiscoveryError, match="differs"):
        await discover(f"127.0.0.1:{api_server.port}", TOKEN, [public_key_hash(pki.ca_cert)])


async def test_a_server_of_another_ca_fails_the_verified_read(
    api_server: FakeAPIServer,
) -> None:
    impostor = make_pki()  # cluster-info names a CA that did not sign the server's certificate
    data = signed_data(
        cluster_kubeconfig(f"https://127.0.0.1:{api_server.port}", impostor.ca_pem), TOKEN
    )
    api_server.data = data
    with pytest.raises(DiscoveryError, match="certificate of the cluster CA") as caught:
        await discover(f"127.0.0.1:{api_server.port}", TOKEN, [public_key_hash(impostor.ca_cert)])
    # the same CA name, another key: OpenSSL says why it refused
    assert "certificate signature failure" in str(caught.value), caught.value


async def test_an_error_status_is_retried_until_the_deadline(
    api_server: FakeAPIServer, pki: Pki
) -> None:
    api_server.status = 403
    with pytest.raises(Unreachable, match="403 forbidden: User system:anonymous"):
        await discover(
            f"127.0.0.1:{api_server.port}", TOKEN, [public_key_hash(pki.ca_cert)], timeout=1.0
        )
    assert len(api_server.requests) >= 3


async def test_nobody_listening_names_the_address_and_the_attempts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    said: list[str] = []
    with pytest.raises(Unreachable) as caught:
        await discover(
            f"127.0.0.1:{port}", TOKEN, ["sha256:" + "0" * 64], timeout=1.0, progress=said.append
        )
    message = str(caught.value)
    assert f"https://127.0.0.1:{port}" in message and "attempts" in message
    waits = [float(line.rsplit(" ", 1)[1].rstrip("s")) for line in said]
    assert waits[:2] == [0.25, 0.5], said  # the back-off doubles


def test_json_of_a_configmap_round_trips() -> None:
    # the data a real API server returns is a JSON object of strings
    assert json.loads(json.dumps(signed_data("x", TOKEN)))["jws-kubeconfig-abcdef"].count(".") == 2
