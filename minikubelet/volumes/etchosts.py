"""The pod's ``/etc/hosts``, which the kubelet writes and mounts (``kubelet_pods.go``).

The file is ``<root>/pods/<uid>/etc-hosts``, rewritten each time a container's mounts
are made (``makeHostsMount``/``ensureHostsFile``) and bind-mounted read-write at
``/etc/hosts`` into every container that does not mount something there itself.
It is mounted once the pod has an IP; a host-network pod always gets it.

* A pod on its own network (``managedHostsFileContent``): the kubelet's header, the
  localhost entries, one line per pod IP with the hostname (``IP\\tFQDN\\thostname``
  when the pod has a subdomain), then the hostAliases.
* A host-network pod (``nodeHostsFileContent``): the host-network header, the node's
  own ``/etc/hosts``, then the hostAliases.
* hostAliases (``hostsEntriesFromHostAliases``): a blank line, ``# Entries added by
  HostAliases.``, and one line per alias: its IP, then its hostnames, tab-separated.

Because the runtime never writes it, every runtime shows the same file: containerd,
CRI-O, the bundled ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ETC_HOSTS: Final = "/etc/hosts"
ETC_HOSTS_FILE: Final = "etc-hosts"
NODE_HOSTS: Final = Path("/etc/hosts")
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
HOSTS_FILE_MODE: Final = 0o644


@dataclass(frozen=True, slots=True)
class HostsFile:
    """What the pod's hosts file says: its IPs, hostname and domain, aliases, network."""

    ips: tuple[str, ...]
    hostname: str
    domain: str = ""
    host_aliases: tuple[Mapping[str, Any], ...] = ()
    host_network: bool = False


def host_aliases_entries(host_aliases: Sequence[Mapping[str, Any]]) -> str:
    """``hostsEntriesFromHostAliases``: the aliases section, or nothing without aliases."""
    if not host_aliases:
        return ""
    lines = ["\n# Entries added by HostAliases.\n"]
    for alias in host_aliases:
        names = [str(n) for n in alias.get("hostnames") or ()]
        lines.append(f"{alias.get('ip', '')}\t" + "\t".join(names) + "\n")
    return "".join(lines)


def managed_hosts_content(
    ips: Sequence[str],
    hostname: str,
    domain: str = "",
    host_aliases: Sequence[Mapping[str, Any]] = (),
) -> str:
    """``managedHostsFileContent``: the hosts file of a pod on its own network."""
    names = f"{hostname}.{domain}\t{hostname}" if domain else hostname
    own = "".join(f"{ip}\t{names}\n" for ip in ips)
    return MANAGED_HEADER + LOCALHOST_ENTRIES + own + host_aliases_entries(host_aliases)


def node_hosts_content(node_hosts: str, host_aliases: Sequence[Mapping[str, Any]] = ()) -> str:
    """``nodeHostsFileContent``: the node's file under the host-network header."""
    return HOST_NETWORK_HEADER + node_hosts + host_aliases_entries(host_aliases)


def render(hosts: HostsFile, *, node_hosts: Path = NODE_HOSTS) -> str:
    """The file's content (reads the node's ``/etc/hosts`` for a host-network pod)."""
    if hosts.host_network:
        return node_hosts_content(node_hosts.read_text(), hosts.host_aliases)
    return managed_hosts_content(hosts.ips, hosts.hostname, hosts.domain, hosts.host_aliases)


def write_hosts_file(path: Path, hosts: HostsFile, *, node_hosts: Path = NODE_HOSTS) -> None:
    """Write the file whole (blocking): a file beside it, renamed over it, mode 0644.

    A container already running keeps the copy it has mounted; the content is the
    same unless the pod changed, and the next container gets the new one.
    """
    data = render(hosts, node_hosts=node_hosts).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, HOSTS_FILE_MODE)
    finally:
        os.close(fd)
    os.replace(tmp, path)
