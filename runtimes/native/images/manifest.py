"""Manifests, image indexes and image configs as the OCI image spec and Docker schema 2 write them.

Pure parsing and validation: the registry client hands bytes in, the store and
the service get typed descriptors out. Platform selection for an image index
(a Docker manifest list) lives here too.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minikubelet.errors import FailedPrecondition, InvalidArgument, NotFound

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: What a pull asks for, best first (the Accept header of ``GET /v2/<name>/manifests/<ref>``).
ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)

#: A manifest or config larger than this is refused before it is parsed.
MAX_DOCUMENT_BYTES = 4 << 20

_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str, what: str) -> str:
    """``digest`` if it is ``sha256:<64 hex>``; other algorithms are refused by name."""
    if not _SHA256.match(digest):
        algorithm = digest.partition(":")[0] if ":" in digest else digest[:20]
        raise InvalidArgument(f"{what}: unsupported or malformed digest {algorithm!r}")
    return digest


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out


_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


def host_platform(machine: str | None = None) -> Platform:
    """This host as an image index names it: ``linux/amd64``, ``linux/arm64/v8`` ..."""
    m = (machine or _platform.machine()).lower()
    arch, variant = _ARCH.get(m, (m, ""))
    return Platform("linux", arch, variant)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: object, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidArgument(f"{what}: descriptor is not an object")
        digest = obj.get("digest")
        size = obj.get("size")
        media_type = obj.get("mediaType", "")
        if not isinstance(digest, str):
            raise InvalidArgument(f"{what}: descriptor has no digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{what}: descriptor {digest} has no valid size")
        if not isinstance(media_type, str):
            raise InvalidArgument(f"{what}: descriptor {digest} has a malformed mediaType")
        plat = None
        p = obj.get("platform")
        if isinstance(p, dict):
            plat = Platform(
                str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", ""))
            )
        annotations = obj.get("annotations")
        return cls(
            media_type=media_type,
            digest=check_digest(digest, what),
            size=size,
            platform=plat,
            annotations=_str_map(annotations) if isinstance(annotations, dict) else {},
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2): one config, layers lowest first."""

    digest: str
    media_type: str
    raw: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (OCI) or manifest list (Docker): one manifest per platform."""

    digest: str
    media_type: str
    raw: bytes
    manifests: tuple[Descriptor, ...]


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"{what}: document of {len(raw)} bytes is too large")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{what}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: not a JSON object")
    return doc


def parse_manifest(raw: bytes, content_type: str, digest: str, what: str) -> Manifest | Index:
    """Parse a manifest or index; ``content_type`` is the registry's, used when the body has none.

    ``digest`` must already be verified against ``raw`` by the caller.
    """
    doc = _load_json(raw, what)
    media_type = doc.get("mediaType") or content_type.split(";")[0].strip()
    if not isinstance(media_type, str):
        raise InvalidArgument(f"{what}: malformed mediaType")
    if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise FailedPrecondition(
            f"{what}: Docker schema 1 manifests are not supported (push the image again "
            "with a current client)"
        )
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument(f"{what}: unsupported schemaVersion {doc.get('schemaVersion')!r}")
    if media_type in INDEX_TYPES or (media_type not in MANIFEST_TYPES and "manifests" in doc):
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidArgument(f"{what}: image index without a manifests list")
        return Index(
            digest=digest,
            media_type=media_type or OCI_INDEX,
            raw=raw,
            manifests=tuple(Descriptor.from_json(e, what) for e in entries),
        )
    if media_type in MANIFEST_TYPES or "config" in doc:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidArgument(f"{what}: image manifest without a layers list")
        return Manifest(
            digest=digest,
            media_type=media_type or OCI_MANIFEST,
            raw=raw,
            config=Descriptor.from_json(doc.get("config"), what),
            layers=tuple(Descriptor.from_json(e, what) for e in layers),
        )
    raise InvalidArgument(f"{what}: unsupported manifest type {media_type!r}")


def _variant_rank(candidate: str, wanted: str) -> int | None:
    """0 for an exact variant, 1 for an unspecified one, None for a different one."""
    if candidate == wanted:
        return 0
    if not candidate or not wanted:
        return 1
    # an arm64 host runs v8 images under any name; older arm variants run on newer cpus
    if wanted.startswith("v") and candidate.startswith("v"):
        try:
            return 2 if int(candidate[1:]) <= int(wanted[1:]) else None
        except ValueError:
            return None
    return None


def select_platform(index: Index, wanted: Platform, what: str) -> Descriptor:
    """The manifest of ``index`` for ``wanted``: os and architecture equal, best variant."""
    best: tuple[int, int, Descriptor] | None = None
    for position, desc in enumerate(index.manifests):
        p = desc.platform
        if p is None or p.os != wanted.os or p.architecture != wanted.architecture:
            continue
        rank = _variant_rank(p.variant, wanted.variant)
        if rank is None:
            continue
        if best is None or (rank, position) < best[:2]:
            best = (rank, position, desc)
    if best is None:
        offered = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
        raise NotFound(f"{what}: no manifest for platform {wanted} in the image index ({offered})")
    return best[2]


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the container half needs from an image config (``application/vnd.oci.image.config``)."""

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    diff_ids: tuple[str, ...] = ()
    os: str = ""
    architecture: str = ""
    variant: str = ""

    @classmethod
    def parse(cls, raw: bytes, what: str) -> ImageConfig:
        doc = _load_json(raw, what)
        c = doc.get("config") or {}
        if not isinstance(c, dict):
            raise InvalidArgument(f"{what}: image config 'config' is not an object")
        rootfs = doc.get("rootfs")
        if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
            raise InvalidArgument(f"{what}: image config has no rootfs.diff_ids")
        diff_ids = tuple(check_digest(str(d), f"{what}: diff_id") for d in rootfs["diff_ids"])
        return cls(
            user=_str(c.get("User")),
            env=_str_list(c.get("Env")),
            entrypoint=_str_list(c.get("Entrypoint")),
            cmd=_str_list(c.get("Cmd")),
            working_dir=_str(c.get("WorkingDir")),
            labels=_str_map(c.get("Labels")),
            stop_signal=_str(c.get("StopSignal")),
            exposed_ports=tuple(sorted(_str_map_keys(c.get("ExposedPorts")))),
            volumes=tuple(sorted(_str_map_keys(c.get("Volumes")))),
            diff_ids=diff_ids,
            os=_str(doc.get("os")),
            architecture=_str(doc.get("architecture")),
            variant=_str(doc.get("variant")),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "user": self.user,
            "env": list(self.env),
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "working_dir": self.working_dir,
            "labels": dict(self.labels),
            "stop_signal": self.stop_signal,
            "exposed_ports": list(self.exposed_ports),
            "volumes": list(self.volumes),
            "diff_ids": list(self.diff_ids),
            "os": self.os,
            "architecture": self.architecture,
            "variant": self.variant,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ImageConfig:
        return cls(
            user=_str(obj.get("user")),
            env=_str_list(obj.get("env")),
            entrypoint=_str_list(obj.get("entrypoint")),
            cmd=_str_list(obj.get("cmd")),
            working_dir=_str(obj.get("working_dir")),
            labels=_str_map(obj.get("labels")),
            stop_signal=_str(obj.get("stop_signal")),
            exposed_ports=_str_list(obj.get("exposed_ports")),
            volumes=_str_list(obj.get("volumes")),
            diff_ids=_str_list(obj.get("diff_ids")),
            os=_str(obj.get("os")),
            architecture=_str(obj.get("architecture")),
            variant=_str(obj.get("variant")),
        )


def image_user(user: str) -> tuple[int | None, str]:
    """The CRI's (uid, username) for an image's USER, as containerd reports them.

    ``"1000"`` and ``"1000:100"`` give uid 1000; ``"app"`` and ``"app:staff"`` give
    username ``app``; an empty USER gives neither.
    """
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _str_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _str_map_keys(value: object) -> list[str]:
    return [str(k) for k in value] if isinstance(value, Mapping) else []
