"""Where a registry host is reached: mirrors, plain HTTP or TLS, timeouts.

The configuration comes from flags (``--insecure-registry HOST``,
``--registry-mirror HOST=URL``) and/or a TOML file in the spirit of containerd's
``hosts.toml`` and CRI-O's ``registries.conf``::

    max_concurrent_downloads = 3      # optional, per pull
    request_timeout = 30              # seconds, manifests and tokens (whole request)
    connect_timeout = 10
    read_timeout = 60                 # seconds without a byte while a blob streams

    [registry."docker.io"]
    mirrors = ["http://127.0.0.1:5000", "https://mirror.example.com"]

    [registry."registry.internal:5000"]
    insecure = true                   # plain HTTP, or TLS without verification

A host's endpoints are tried in order, mirrors first and the origin last. As
Docker does, a registry on loopback (``localhost``, ``127.0.0.0/8``, ``::1``) is
spoken to in plain HTTP; every other origin over verified TLS unless it is listed
as insecure, in which case TLS is tried unverified and then plain HTTP.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from minikubelet.errors import InvalidArgument

#: Docker Hub's API host: ``docker.io/library/busybox`` is fetched from here.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True, slots=True)
class HostConfig:
    mirrors: tuple[str, ...] = ()
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One base URL to try for a registry host."""

    url: str  # scheme://host[:port][/prefix], no trailing slash; the API is under <url>/v2/
    verify_tls: bool
    mirror: bool

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0]

    def __str__(self) -> str:
        return self.url


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x.y.z`` or ``[::1]``, with or without a port."""
    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    hosts: Mapping[str, HostConfig] = field(default_factory=dict)
    request_timeout: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_concurrent_downloads: int = 3

    def host(self, host: str) -> HostConfig:
        return self.hosts.get(host, HostConfig())

    def endpoints(self, domain: str) -> list[Endpoint]:
        """The endpoints for a reference's domain, in the order they are tried."""
        out = [self._mirror_endpoint(m) for m in self.host(domain).mirrors]
        origin = DOCKER_HUB_API if domain == DOCKER_HUB else domain
        if is_loopback(origin):
            out.append(Endpoint(f"http://{origin}", verify_tls=False, mirror=False))
        elif self.host(domain).insecure or self.host(origin).insecure:
            out.append(Endpoint(f"https://{origin}", verify_tls=False, mirror=False))
            out.append(Endpoint(f"http://{origin}", verify_tls=False, mirror=False))
        else:
            out.append(Endpoint(f"https://{origin}", verify_tls=True, mirror=False))
        return out

    def _mirror_endpoint(self, url: str) -> Endpoint:
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        host, _, path = rest.partition("/")
        path = path.strip("/").removesuffix("v2").strip("/")  # the API is under <url>/v2/
        if not scheme:
            scheme = "http" if is_loopback(host) or self.host(host).insecure else "https"
        base = f"{scheme}://{host}" + (f"/{path}" if path else "")
        verify = scheme == "https" and not self.host(host).insecure
        return Endpoint(base, verify_tls=verify, mirror=True)

    def merged(self, other: RegistryConfig) -> RegistryConfig:
        """``self`` with ``other``'s hosts added (``other``'s mirrors come first)."""
        hosts = dict(self.hosts)
        for name, hc in other.hosts.items():
            mine = hosts.get(name, HostConfig())
            mirrors = tuple(dict.fromkeys((*hc.mirrors, *mine.mirrors)))
            hosts[name] = HostConfig(mirrors=mirrors, insecure=hc.insecure or mine.insecure)
        return replace(self, hosts=hosts)

    @classmethod
    def from_flags(
        cls,
        *,
        insecure_registries: Iterable[str] = (),
        registry_mirrors: Iterable[str] = (),
        config_file: Path | None = None,
    ) -> RegistryConfig:
        """Flags over an optional file: ``--insecure-registry H``, ``--registry-mirror H=URL``."""
        base = cls.load(config_file) if config_file is not None else cls()
        hosts: dict[str, HostConfig] = {}
        for host in insecure_registries:
            _check_host(host, "--insecure-registry")
            hosts[host] = replace(hosts.get(host, HostConfig()), insecure=True)
        for spec in registry_mirrors:
            host, sep, url = spec.partition("=")
            if not sep or not url:
                raise InvalidArgument(f"--registry-mirror {spec!r}: expected HOST=URL")
            _check_host(host, "--registry-mirror")
            _check_url(url, "--registry-mirror")
            hc = hosts.get(host, HostConfig())
            hosts[host] = replace(hc, mirrors=(*hc.mirrors, url))
        return base.merged(cls(hosts=hosts))

    @classmethod
    def load(cls, path: Path) -> RegistryConfig:
        """Read the TOML file described in this module's docstring."""
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            raise InvalidArgument(f"registry config {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"registry config {path}: {exc}") from None
        return cls.from_mapping(doc, str(path))

    @classmethod
    def from_mapping(
        cls, doc: Mapping[str, Any], source: str = "registry config"
    ) -> RegistryConfig:
        known = {
            "registry",
            "max_concurrent_downloads",
            "request_timeout",
            "connect_timeout",
            "read_timeout",
        }
        unknown = set(doc) - known
        if unknown:
            raise InvalidArgument(f"{source}: unknown keys {sorted(unknown)}")
        hosts: dict[str, HostConfig] = {}
        registries = doc.get("registry", {})
        if not isinstance(registries, Mapping):
            raise InvalidArgument(f"{source}: [registry] must be a table of hosts")
        for host, table in registries.items():
            where = f'{source}: [registry."{host}"]'
            _check_host(host, where)
            if not isinstance(table, Mapping):
                raise InvalidArgument(f"{where} must be a table")
            extra = set(table) - {"mirrors", "insecure"}
            if extra:
                raise InvalidArgument(f"{where}: unknown keys {sorted(extra)}")
            mirrors = table.get("mirrors", [])
            if not isinstance(mirrors, list) or not all(isinstance(u, str) for u in mirrors):
                raise InvalidArgument(f"{where}: mirrors must be a list of URLs")
            for url in mirrors:
                _check_url(url, where)
            insecure = table.get("insecure", False)
            if not isinstance(insecure, bool):
                raise InvalidArgument(f"{where}: insecure must be true or false")
            hosts[host] = HostConfig(mirrors=tuple(mirrors), insecure=insecure)
        defaults = cls()
        downloads = doc.get("max_concurrent_downloads", defaults.max_concurrent_downloads)
        if not isinstance(downloads, int) or isinstance(downloads, bool) or downloads < 1:
            raise InvalidArgument(f"{source}: max_concurrent_downloads must be a positive integer")
        return cls(
            hosts=hosts,
            request_timeout=_seconds(doc, "request_timeout", defaults.request_timeout, source),
            connect_timeout=_seconds(doc, "connect_timeout", defaults.connect_timeout, source),
            read_timeout=_seconds(doc, "read_timeout", defaults.read_timeout, source),
            max_concurrent_downloads=downloads,
        )


def _seconds(doc: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = doc.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise InvalidArgument(f"{source}: {key} must be a positive number of seconds")
    return float(value)


def _check_host(host: str, where: str) -> None:
    if not host or "/" in host or "://" in host or host != host.strip():
        raise InvalidArgument(f"{where}: {host!r} is not a registry host (HOST or HOST:PORT)")


def _check_url(url: str, where: str) -> None:
    scheme, sep, rest = url.partition("://")
    if sep and scheme not in ("http", "https"):
        raise InvalidArgument(f"{where}: mirror {url!r} must be http:// or https://")
    if not (rest if sep else url).split("/", 1)[0]:
        raise InvalidArgument(f"{where}: mirror {url!r} has no host")
