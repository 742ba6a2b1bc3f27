"""The certificate manager in virtual time: when it rotates (a jittered 70-90 % of the
lifetime, or early for tests), what it does with an expired or refused certificate
(bootstrap kubeconfig, or a clear word to join again), the CSRs it sends, and the
serving certificate taking over a live TLS context."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes_asyncio import client as k8s

from minikubelet.bootstrap import certmanager
from minikubelet.bootstrap.certmanager import (
    CLIENT_SIGNER,
    SERVING_SIGNER,
    CertificateRequestError,
    ClientCertificateManager,
    ConnectionSwitch,
    Next,
    ServingCertificateManager,
    decide,
    key_pem,
    new_key,
    node_csr,
    rotation_deadline,
    validity,
    wait_for_certificate,
)
from minikubelet.bootstrap.identity import SERVER_PREFIX, Identity, render_kubeconfig
from minikubelet.clock import ManualClock
from minikubelet.server.kubeletapi.tls import generate_self_signed

START = 1_700_000_000.0
DAY = 86400.0
NODE = "n1"


def _at(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


class CA:
    """A cluster CA that signs CSRs as the controller-manager's csrsigning does."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_at(START - DAY))
            .not_valid_after(_at(START + 3650 * DAY))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, csr_pem: bytes, not_before: float, lifetime: float, server: bool) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_at(not_before))
            .not_valid_after(_at(not_before + lifetime))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        with contextlib.suppress(x509.ExtensionNotFound):
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            builder = builder.add_extension(san.value, critical=False)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class FakeCSRApi:
    """certificates.k8s.io/v1 CSRs: created, then approved and signed (or denied) when
    the test says, or at once with ``auto``."""

    def __init__(self, ca: CA, clock: ManualClock, *, auto: bool = True, lifetime: float = DAY):
        self.ca = ca
        self.clock = clock
        self.auto = auto
        self.lifetime = lifetime
        self.created: list[k8s.V1CertificateSigningRequest] = []
        self.status: dict[str, k8s.V1CertificateSigningRequestStatus] = {}

    async def create_certificate_signing_request(self, body: Any) -> Any:
        name = f"csr-{len(self.created) + 1}"
        body.metadata.name = name
        self.created.append(body)
        self.status[name] = k8s.V1CertificateSigningRequestStatus()
        if self.auto:
            self.approve(name)
        return body

    async def read_certificate_signing_request(self, name: str) -> Any:
        body = next(b for b in self.created if b.metadata.name == name)
        return k8s.V1CertificateSigningRequest(
            metadata=k8s.V1ObjectMeta(name=name), spec=body.spec, status=self.status[name]
        )

    def request(self, name: str) -> bytes:
        body = next(b for b in self.created if b.metadata.name == name)
        return base64.b64decode(body.spec.request)

    def approve(self, name: str) -> None:
        body = next(b for b in self.created if b.metadata.name == name)
        cert = self.ca.sign(
            self.request(name),
            self.clock.now(),
            self.lifetime,
            server=body.spec.signer_name == SERVING_SIGNER,
        )
        self.status[name] = k8s.V1CertificateSigningRequestStatus(
            conditions=[k8s.V1CertificateSigningRequestCondition(type="Approved", status="True")],
            certificate=base64.b64encode(cert).decode(),
        )

    def deny(self, name: str) -> None:
        self.status[name] = k8s.V1CertificateSigningRequestStatus(
            conditions=[
                k8s.V1CertificateSigningRequestCondition(
                    type="Denied", status="True", message="not this one"
                )
            ]
        )


def joined(root: Path, ca: CA, not_before: float, lifetime: float) -> Identity:
    """An identity under ``root`` whose client certificate is valid from ``not_before``."""
    identity = Identity(root)
    key = new_key()
    cert = ca.sign(node_csr(key, NODE), not_before, lifetime, server=False)
    identity.store_pair(cert, key_pem(key), now=_at(not_before))
    identity.write_kubeconfig("https://127.0.0.1:6443", ca.pem)
    identity.write_cluster_ca(ca.pem)
    return identity


def api_for(identity: Identity, ca_file: Path) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.ssl_ca_cert = str(ca_file)
    configuration.cert_file = str(identity.current())
    configuration.key_file = str(identity.current())
    return k8s.ApiClient(configuration)


@pytest.fixture
def ca() -> CA:
    return CA()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def setup(
    tmp_path: Path, ca: CA, clock: ManualClock
) -> AsyncIterator[tuple[Identity, k8s.ApiClient, FakeCSRApi]]:
    identity = joined(tmp_path, ca, START, 10 * DAY)
    api = api_for(identity, identity.cluster_ca)
    fake = FakeCSRApi(ca, clock)
    yield identity, api, fake
    await api.close()


def manager(
    identity: Identity, api: k8s.ApiClient, fake: FakeCSRApi, clock: ManualClock, **kw: Any
) -> ClientCertificateManager:
    kw.setdefault("jitter", lambda: 0.5)
    kw.setdefault("still_refused", _refused_answer(True))
    return ClientCertificateManager(identity, api, NODE, clock=clock, csr=fake, **kw)


def _refused_answer(answer: bool) -> Any:
    async def check() -> bool:
        return answer

    return check


async def eventually(clock: ManualClock, check: Any, timeout: float = 5.0) -> None:
    """Until ``check()``: work done off the loop (keys, files) takes real time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "the condition did not come"
        await clock.advance(0)
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(task_coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.ensure_future(task_coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- when ----------------------------------------------------------------------------------


def test_deadline_is_70_to_90_percent_of_the_lifetime() -> None:
    assert rotation_deadline(1000, 2000, 0.0) == pytest.approx(1700)
    assert rotation_deadline(1000, 2000, 0.5) == pytest.approx(1800)
    assert rotation_deadline(1000, 2000, 1.0) == pytest.approx(1900)
    assert rotation_deadline(1000, 2000, -3) == pytest.approx(1700)  # clamped
    assert rotation_deadline(1000, 2000, 7) == pytest.approx(1900)


def test_jittered_deadlines_spread_over_the_whole_window() -> None:
    deadlines = [rotation_deadline(0, 100, certmanager._jitter()) for _ in range(2000)]
    assert all(70 <= d <= 90 for d in deadlines)
    assert min(deadlines) < 72 and max(deadlines) > 88  # not one fixed point


def test_decisions() -> None:
    assert decide(usable=True, has_bootstrap=True) is Next.ROTATE
    assert decide(usable=True, has_bootstrap=False) is Next.ROTATE
    assert decide(usable=False, has_bootstrap=True) is Next.BOOTSTRAP
    assert decide(usable=False, has_bootstrap=False) is Next.REJOIN


def test_csr_names_the_node_and_its_sans() -> None:
    key = new_key()
    csr = x509.load_pem_x509_csr(node_csr(key, "n1", ["n1", "host", "10.0.0.5", "n1"]))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:nodes"
    )
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1", "host"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert csr.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    client = x509.load_pem_x509_csr(node_csr(key, "n1"))
    with pytest.raises(x509.ExtensionNotFound):
        client.extensions.get_extension_for_class(x509.SubjectAlternativeName)


# --- the client certificate ---------------------------------------------------------------


async def test_rotates_at_the_jittered_deadline_with_the_current_identity(
    setup: tuple[Identity, k8s.ApiClient, FakeCSRApi], clock: ManualClock
) -> None:
    identity, api, fake = setup
    first = identity.current().resolve()
    old_rest = api.rest_client
    mgr = manager(identity, api, fake, clock)
    async with running(mgr.run()):
        await clock.advance(0)
        assert mgr.deadline == pytest.approx(START + 8 * DAY)  # 0.5 of the window: 80 %
        await clock.advance(8 * DAY - 60)
        assert fake.created == []  # not yet
        await clock.advance(120)
        await clock.advance(0)
        await eventually(clock, lambda: mgr.rotations)
        assert mgr.rotations == 1
        # new connections: a new REST client; the old one stays open for what is on it
        assert api.rest_client is not old_rest
        assert not old_rest.pool_manager.closed
    assert old_rest.pool_manager.closed  # closed when the manager stops
    csr = fake.created[0]
    assert csr.spec.signer_name == CLIENT_SIGNER
    assert csr.spec.usages == ["digital signature", "key encipherment", "client auth"]
    assert identity.current().resolve() != first
    assert first.exists()  # the earlier pair is kept
    new = x509.load_pem_x509_certificates(identity.current().read_bytes())[0]
    assert new.public_key() == x509.load_pem_x509_csr(fake.request("csr-1")).public_key()


async def test_an_early_rotation_for_tests(
    setup: tuple[Identity, k8s.ApiClient, FakeCSRApi], clock: ManualClock
) -> None:
    identity, api, fake = setup
    mgr = manager(identity, api, fake, clock, first_after=5)
    async with running(mgr.run()):
        await clock.advance(0)
        assert mgr.deadline == START + 5
        await clock.advance(6)
        await eventually(clock, lambda: mgr.rotations)
        assert mgr.rotations == 1
        await clock.advance(0)
        # the next one is at 70-90 % of the new certificate's lifetime again
        new = validity(identity.current().read_bytes())
        assert mgr.deadline == pytest.approx(rotation_deadline(new.not_before, new.not_after, 0.5))


async def test_expired_certificate_falls_back_to_the_bootstrap_kubeconfig(
    tmp_path: Path, ca: CA, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    identity = joined(tmp_path, ca, START - 10 * DAY, DAY)  # expired 9 days ago
    (tmp_path / "kubelet.kubeconfig").unlink()
    identity.bootstrap_kubeconfig.write_text(
        render_kubeconfig("https://127.0.0.1:6443", ca.pem, token="abcdef.0123456789abcdef")
    )
    api = api_for(identity, identity.cluster_ca)
    boot = FakeCSRApi(ca, clock)
    own = FakeCSRApi(ca, clock)
    used: list[Path] = []

    @contextlib.asynccontextmanager
    async def bootstrap(path: Path) -> AsyncIterator[FakeCSRApi]:
        used.append(path)
        yield boot

    mgr = manager(identity, api, own, clock, bootstrap_csr=bootstrap)
    caplog.set_level(logging.WARNING)
    try:
        async with running(mgr.run()):
            await eventually(clock, lambda: mgr.rotations)
    finally:
        await api.close()
    assert mgr.rotations == 1
    assert used == [identity.bootstrap_kubeconfig]
    assert own.created == [] and len(boot.created) == 1  # asked with the bootstrap token
    assert "expired" in caplog.text and "bootstrap-kubelet.kubeconfig" in caplog.text
    assert not validity(identity.current().read_bytes()).expired(clock.now())
    assert identity.kubeconfig.is_file()  # written from the bootstrap one's server and CA
    assert identity.joined()


async def test_expired_without_bootstrap_says_to_join_again(
    tmp_path: Path, ca: CA, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    identity = joined(tmp_path, ca, START - 10 * DAY, DAY)
    api = api_for(identity, identity.cluster_ca)
    fake = FakeCSRApi(ca, clock)
    mgr = manager(identity, api, fake, clock)
    caplog.set_level(logging.ERROR)
    try:
        async with running(mgr.run()):
            await clock.advance(0)
            await clock.advance(certmanager.REJOIN_CHECK * 3)
    finally:
        await api.close()
    assert fake.created == []
    assert "expired" in caplog.text
    assert "minikubelet join" in caplog.text and str(tmp_path) in caplog.text


async def test_a_refused_certificate_confirmed_falls_back(
    setup: tuple[Identity, k8s.ApiClient, FakeCSRApi], clock: ManualClock, ca: CA
) -> None:
    identity, api, fake = setup
    identity.bootstrap_kubeconfig.write_text(
        render_kubeconfig("https://127.0.0.1:6443", ca.pem, token="abcdef.0123456789abcdef")
    )
    boot = FakeCSRApi(ca, clock)

    @contextlib.asynccontextmanager
    async def bootstrap(path: Path) -> AsyncIterator[FakeCSRApi]:
        yield boot

    mgr = manager(identity, api, fake, clock, bootstrap_csr=bootstrap)
    async with running(mgr.run()):
        await clock.advance(DAY)
        assert boot.created == []
        mgr.refused()  # a 401 from the API server
        await eventually(clock, lambda: mgr.rotations)
    assert len(boot.created) == 1 and fake.created == []
    assert not mgr.unauthorized.is_set()


async def test_a_passing_401_changes_nothing(
    setup: tuple[Identity, k8s.ApiClient, FakeCSRApi], clock: ManualClock
) -> None:
    identity, api, fake = setup
    mgr = manager(identity, api, fake, clock, still_refused=_refused_answer(False))
    async with running(mgr.run()):
        await clock.advance(DAY)
        mgr.refused()
        await clock.advance(0)
        await clock.advance(60)
        assert not mgr.unauthorized.is_set()
        assert fake.created == [] and mgr.rotations == 0


async def test_denied_request_is_retried_with_back_off(
    setup: tuple[Identity, k8s.ApiClient, FakeCSRApi], clock: ManualClock
) -> None:
    identity, api, fake = setup
    fake.auto = False
    mgr = manager(identity, api, fake, clock, first_after=1)
    async with running(mgr.run()):
        await clock.advance(2)
        await eventually(clock, lambda: len(fake.created) == 1)
        fake.deny("csr-1")
        await clock.advance(certmanager.POLL_INTERVAL)
        await eventually(clock, lambda: mgr._attempts.failures == 1)
        assert len(fake.created) == 1
        await clock.advance(certmanager.RETRY_INITIAL + 0.1)
        await eventually(clock, lambda: len(fake.created) == 2)  # a new CSR after the back-off
        fake.approve("csr-2")
        await clock.advance(certmanager.POLL_INTERVAL)
        await eventually(clock, lambda: mgr.rotations)
        assert mgr.rotations == 1


async def test_wait_for_certificate_outcomes(ca: CA, clock: ManualClock) -> None:
    fake = FakeCSRApi(ca, clock, auto=False)
    name = await certmanager.create_csr(
        fake, node_csr(new_key(), NODE), signer=CLIENT_SIGNER, usages=["client auth"]
    )
    waiting = asyncio.ensure_future(wait_for_certificate(fake, name, clock=clock, timeout=10))
    await clock.advance(3)
    assert not waiting.done()
    fake.deny(name)
    await clock.advance(1)
    with pytest.raises(CertificateRequestError, match="denied: not this one"):
        await waiting
    other = await certmanager.create_csr(
        fake, node_csr(new_key(), NODE), signer=CLIENT_SIGNER, usages=["client auth"]
    )
    waiting = asyncio.ensure_future(wait_for_certificate(fake, other, clock=clock, timeout=10))
    await clock.advance(11)
    with pytest.raises(TimeoutError):
        await waiting


async def test_a_certificate_for_another_key_is_refused(ca: CA) -> None:
    cert = ca.sign(node_csr(new_key(), NODE), START, DAY, server=False)
    with pytest.raises(CertificateRequestError, match="not for the key"):
        certmanager.check_pair(cert, new_key(), NODE)
    key = new_key()
    cert = ca.sign(node_csr(key, "other"), START, DAY, server=False)
    with pytest.raises(CertificateRequestError, match="system:node:other"):
        certmanager.check_pair(cert, key, NODE)


async def test_connection_switch_retires_after_its_delay(
    setup: tuple[Identity, k8s.ApiClient, FakeCSRApi],
) -> None:
    _, api, _ = setup
    switch = ConnectionSwitch(api, retire_after=100)
    old = api.rest_client
    switch.switch(now=1000)
    await switch.close_retired(1050)
    assert not old.pool_manager.closed
    await switch.close_retired(1100)
    assert old.pool_manager.closed


# --- the serving certificate --------------------------------------------------------------


async def _served_certificate(context: ssl.SSLContext) -> x509.Certificate:
    """The certificate a TLS server on ``context`` presents to a new connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der)
    finally:
        server.close()
        await server.wait_closed()


async def test_serving_certificate_replaces_the_self_signed_one_once_approved(
    tmp_path: Path, ca: CA, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    chain, key = generate_self_signed("host", [NODE, "127.0.0.1"])
    (tmp_path / "s.crt").write_bytes(chain)
    (tmp_path / "s.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    fake = FakeCSRApi(ca, clock, auto=False, lifetime=10 * DAY)
    identity = Identity(tmp_path / "root")
    mgr = ServingCertificateManager(
        identity, fake, NODE, [NODE, socket.gethostname(), "10.0.0.5"], clock=clock
    )
    mgr.attach(context)
    async with running(mgr.run()):
        await clock.advance(0)
        await eventually(clock, lambda: fake.created)
        csr = fake.created[0]
        assert csr.spec.signer_name == SERVING_SIGNER
        assert csr.spec.usages == ["digital signature", "key encipherment", "server auth"]
        assert "kubectl certificate approve csr-1" in capsys.readouterr().out
        # until approved, the self-signed one is served
        served = await _served_certificate(context)
        assert served.issuer != ca.name
        fake.approve("csr-1")
        await clock.advance(certmanager.POLL_INTERVAL)
        await eventually(clock, lambda: mgr.issued.is_set())
        assert mgr.issued.is_set()
        served = await _served_certificate(context)  # the live context, a new connection
        assert served.issuer == ca.name
        san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert NODE in san.get_values_for_type(x509.DNSName)
        assert identity.current(SERVER_PREFIX).is_symlink()
        await clock.advance(0)
        assert mgr.deadline is not None
        assert START + 7 * DAY <= mgr.deadline <= START + 9 * DAY + 1


async def test_a_kept_serving_certificate_is_served_at_once(
    tmp_path: Path, ca: CA, clock: ManualClock
) -> None:
    identity = Identity(tmp_path)
    key = new_key()
    cert = ca.sign(node_csr(key, NODE, [NODE]), START, 10 * DAY, server=True)
    identity.store_pair(cert, key_pem(key), prefix=SERVER_PREFIX)
    chain, self_key = generate_self_signed("host", [NODE])
    (tmp_path / "s.crt").write_bytes(chain)
    (tmp_path / "s.key").write_bytes(self_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    fake = FakeCSRApi(ca, clock)
    mgr = ServingCertificateManager(identity, fake, NODE, [NODE], clock=clock)
    mgr.attach(context)
    assert (await _served_certificate(context)).issuer == ca.name
    # one that does not name the node's current names is asked for again
    other = ServingCertificateManager(identity, fake, NODE, [NODE, "10.9.9.9"], clock=clock)
    assert other._usable() is None


async def test_new_connections_present_the_new_certificate_while_old_streams_go_on(
    tmp_path: Path, ca: CA
) -> None:
    """Against a TLS server that requires client certificates: after a rotation a new
    request presents the new certificate, and a response already streaming on the old
    connection (a watch) goes on to its end."""
    from aiohttp import web

    now = time.time()
    clock = ManualClock(now)
    identity = joined(tmp_path / "node", ca, now - 60, DAY)
    server_key = new_key()
    server_cert = ca.sign(node_csr(server_key, "api", ["127.0.0.1"]), now - 60, DAY, server=True)
    (tmp_path / "srv.pem").write_bytes(server_cert + key_pem(server_key))
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.pem")
    server_ctx.load_cert_chain(tmp_path / "srv.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    def peer_serial(request: web.Request) -> str:
        tls = request.transport.get_extra_info("ssl_object") if request.transport else None
        assert tls is not None
        return str(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number)

    release = asyncio.Event()

    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=peer_serial(request))

    async def watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(f"{peer_serial(request)}\n".encode())
        await release.wait()
        await response.write(b"still here\n")
        return response

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/watch", watch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    configuration = k8s.Configuration()
    configuration.host = f"https://127.0.0.1:{port}"
    configuration.ssl_ca_cert = str(tmp_path / "ca.pem")
    configuration.cert_file = configuration.key_file = str(identity.current())
    api = k8s.ApiClient(configuration)
    fake = FakeCSRApi(ca, clock)
    mgr = manager(identity, api, fake, clock)
    url = f"https://127.0.0.1:{port}"
    try:
        first = x509.load_pem_x509_certificates(identity.current().read_bytes())[0]
        response = await api.rest_client.request("GET", f"{url}/whoami")
        assert response.data.decode() == str(first.serial_number)
        stream = await api.rest_client.request("GET", f"{url}/watch", _preload_content=False)
        assert (await stream.content.readline()).decode().strip() == str(first.serial_number)

        await mgr.renew(fake)
        second = x509.load_pem_x509_certificates(identity.current().read_bytes())[0]
        assert second.serial_number != first.serial_number
        response = await api.rest_client.request("GET", f"{url}/whoami")
        assert response.data.decode() == str(second.serial_number)  # a new connection

        release.set()  # the old stream was not cut by the switch
        assert await stream.content.readline() == b"still here\n"
        stream.release()
    finally:
        await mgr.connections.close()
        await api.close()
        await runner.cleanup()
