"""A sandbox's ``resolv.conf``, ``hostname`` and ``hosts``, which its containers bind-mount.

Rendering is pure; :func:`write_sandbox_files` puts the three files into the
sandbox's own directory. The rules:

* ``resolv.conf`` (CRI-O's ``parseDNSOptions``): the CRI's DNSConfig as
  ``search``/``nameserver``/``options`` lines; a DNSConfig with nothing in it
  means the node's own file, copied (the kubelet already rewrote the node's
  file into DNSConfig for ``ClusterFirst`` and ``Default`` policies; an empty one
  comes from clients that leave DNS to the runtime).
* ``hosts`` (the kubelet's ``managedHostsFileContent``): localhost entries and
  one line per pod IP for the pod's hostname; a host-network pod gets the
  node's ``/etc/hosts`` under the kubelet's header. It is for clients that leave
  the file to the runtime (crictl): a container whose CRI request mounts
  ``/etc/hosts``, as the kubelet's always do (with the hostAliases), gets that one.
* ``hostname``: the pod's hostname and a newline.

The files are written whole and renamed into place, so a reader never sees half
of one: write them before any container bind-mounts them (a bind mount holds
the inode it found).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runtimes.base.model import DNSConfig

HOST_RESOLV_CONF: Final = Path("/etc/resolv.conf")
HOST_HOSTS: Final = Path("/etc/hosts")
MANAGED_HEADER: Final = "# Kubernetes-managed hosts file.\n"
HOST_NETWORK_HEADER: Final = "# Kubernetes-managed hosts file (host network).\n"
LOCALHOST_ENTRIES: Final = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)
FILE_MODE: Final = 0o644


@dataclass(frozen=True, slots=True)
class SandboxFiles:
    """Where a sandbox's files are, for the containers' bind mounts."""

    resolv_conf: Path
    hostname: Path
    hosts: Path


def uses_host_resolv_conf(dns: DNSConfig) -> bool:
    return not (dns.servers or dns.searches or dns.options)


def render_resolv_conf(dns: DNSConfig, host_resolv_conf: str) -> str:
    if uses_host_resolv_conf(dns):
        return host_resolv_conf
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {server}" for server in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def render_hosts(
    hostname: str,
    pod_ips: Sequence[str],
    *,
    domain: str = "",
    host_network: bool = False,
    host_hosts: str = "",
) -> str:
    if host_network:
        return HOST_NETWORK_HEADER + host_hosts
    names = f"{hostname}.{domain}\t{hostname}" if domain else hostname
    own = "".join(f"{ip}\t{names}\n" for ip in pod_ips) if hostname else ""
    return MANAGED_HEADER + LOCALHOST_ENTRIES + own


def render_hostname(hostname: str) -> str:
    return f"{hostname}\n"


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``path`` whole: a temporary file beside it, synced, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)  # umask may have narrowed it
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


async def write_sandbox_files(
    directory: Path,
    *,
    hostname: str,
    dns: DNSConfig,
    pod_ips: Sequence[str] = (),
    domain: str = "",
    host_network: bool = False,
    host_resolv_conf: Path = HOST_RESOLV_CONF,
    host_hosts: Path = HOST_HOSTS,
) -> SandboxFiles:
    """Write the three files into ``directory`` (created if missing); idempotent."""
    return await asyncio.to_thread(
        _write_files,
        Path(directory),
        hostname,
        dns,
        tuple(pod_ips),
        domain,
        host_network,
        host_resolv_conf,
        host_hosts,
    )


async def remove_sandbox_files(directory: Path) -> None:
    """Remove the sandbox's directory and everything in it; idempotent."""
    await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)


def _write_files(
    directory: Path,
    hostname: str,
    dns: DNSConfig,
    pod_ips: tuple[str, ...],
    domain: str,
    host_network: bool,
    host_resolv_conf: Path,
    host_hosts: Path,
) -> SandboxFiles:
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    files = SandboxFiles(
        resolv_conf=directory / "resolv.conf",
        hostname=directory / "hostname",
        hosts=directory / "hosts",
    )
    host_resolv = _read_or_empty(host_resolv_conf) if uses_host_resolv_conf(dns) else ""
    node_hosts = _read_or_empty(host_hosts) if host_network else ""
    write_atomic(files.resolv_conf, render_resolv_conf(dns, host_resolv).encode())
    write_atomic(files.hostname, render_hostname(hostname).encode())
    hosts = render_hosts(
        hostname, pod_ips, domain=domain, host_network=host_network, host_hosts=node_hosts
    )
    write_atomic(files.hosts, hosts.encode())
    return files


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
