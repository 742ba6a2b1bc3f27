"""Where a node keeps the identity it joined a cluster with, laid out as the kubelet's.

Under the root dir:

- ``bootstrap-kubelet.kubeconfig``: the API server, its CA and the bootstrap token
  (``minikubelet join`` writes it; the node falls back to it when its client
  certificate has expired);
- ``kubelet.kubeconfig``: the API server, its CA, and as client certificate *and* key
  the file ``pki/kubelet-client-current.pem``;
- ``pki/kubelet-client-YYYY-MM-DD-HH-MM-SS.pem``: one certificate with its key per
  issue, PEM, 0600; ``pki/kubelet-client-current.pem`` is a symlink to the newest,
  switched by an atomic rename, so a reader sees the old pair or the new one, never
  half of each;
- ``pki/kubelet-server-*.pem`` / ``kubelet-server-current.pem``: the same for a serving
  certificate issued through a CSR (``--rotate-server-certificates``);
- ``pki/ca.crt``: the cluster CA as discovery verified it (the client CA of the node's
  HTTPS API unless ``--client-ca-file`` says otherwise).

Every file is written 0600 under a temporary name and renamed into place, in
directories made 0700, so nothing half-written is ever left under its real name.
"""

from __future__ import annotations

import base64
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

BOOTSTRAP_KUBECONFIG: Final = "bootstrap-kubelet.kubeconfig"
KUBECONFIG: Final = "kubelet.kubeconfig"
CLUSTER_CA: Final = "ca.crt"
CLIENT_PREFIX: Final = "kubelet-client"
SERVER_PREFIX: Final = "kubelet-server"
CURRENT: Final = "current"
CLUSTER_NAME: Final = "default-cluster"
USER_NAME: Final = "default-auth"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` 0600 from the start under a temporary name, then rename it over
    ``path`` (made in a 0700 directory when missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render_kubeconfig(
    server: str,
    ca_pem: bytes,
    *,
    token: str | None = None,
    client_pem: Path | None = None,
) -> str:
    """A kubeconfig for ``server`` (trusting ``ca_pem``) that authenticates with a
    bearer ``token`` or with the certificate and key in the file ``client_pem``."""
    user: dict[str, str] = {}
    if token is not None:
        user["token"] = token
    if client_pem is not None:
        user["client-certificate"] = str(client_pem)
        user["client-key"] = str(client_pem)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": USER_NAME, "user": user}],
        "contexts": [
            {"name": "default-context", "context": {"cluster": CLUSTER_NAME, "user": USER_NAME}}
        ],
        "current-context": "default-context",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True)
class Identity:
    """The identity files of the node whose root dir is ``root``."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / KUBECONFIG

    @property
    def bootstrap_kubeconfig(self) -> Path:
        return self.root / BOOTSTRAP_KUBECONFIG

    @property
    def cluster_ca(self) -> Path:
        return self.pki / CLUSTER_CA

    def current(self, prefix: str = CLIENT_PREFIX) -> Path:
        """``pki/<prefix>-current.pem``, the symlink to the newest pair."""
        return self.pki / f"{prefix}-{CURRENT}.pem"

    def joined(self) -> bool:
        """Whether this root dir holds a node identity (its kubeconfig and a current
        client certificate)."""
        return self.kubeconfig.is_file() and self.current().exists()

    def store_pair(
        self,
        cert_pem: bytes,
        key_pem: bytes,
        *,
        prefix: str = CLIENT_PREFIX,
        now: datetime.datetime | None = None,
    ) -> Path:
        """Keep a newly issued certificate with its key as a dated file and point
        ``<prefix>-current.pem`` at it (an atomic switch); returns the current link."""
        now = now or datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%d-%H-%M-%S")
        dated = self.pki / f"{prefix}-{stamp}.pem"
        write_private(dated, cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        link = self.current(prefix)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(dated.name)
        os.replace(tmp, link)
        return link

    def write_kubeconfig(self, server: str, ca_pem: bytes) -> None:
        """``kubelet.kubeconfig``: ``server`` with the current client certificate."""
        text = render_kubeconfig(server, ca_pem, client_pem=self.current())
        write_private(self.kubeconfig, text.encode())

    def write_bootstrap_kubeconfig(self, server: str, ca_pem: bytes, token: str) -> None:
        text = render_kubeconfig(server, ca_pem, token=token)
        write_private(self.bootstrap_kubeconfig, text.encode())

    def write_cluster_ca(self, ca_pem: bytes) -> None:
        write_private(self.cluster_ca, ca_pem)


__all__ = (
    "BOOTSTRAP_KUBECONFIG",
    "CLIENT_PREFIX",
    "KUBECONFIG",
    "SERVER_PREFIX",
    "Identity",
    "render_kubeconfig",
    "write_private",
)
