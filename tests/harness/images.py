"""Build small OCI image layouts from local files (no Docker) and push them with skopeo."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX_PATH = Path("/bin/busybox")
#: The same pause program the Docker-backed runtime builds its infra image from.
PAUSE_SOURCE = Path(__file__).resolve().parents[2] / "runtimes" / "docker" / "pause.c"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# Cache keys include this module's own source, so changing the builder invalidates them.
_BUILDER_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
_FIXED_MTIME = 0
_CREATED = "1970-01-01T00:00:00Z"

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n"


class ImageBuildError(RuntimeError):
    """An image could not be built or pushed."""


@dataclass(frozen=True)
class OciImage:
    """An OCI image layout on disk holding one tagged image."""

    layout: Path
    tag: str
    manifest_digest: str


@dataclass(frozen=True)
class _Entry:
    """One member of a layer tar."""

    path: str  # relative, no leading slash
    kind: str  # "dir", "file" or "symlink"
    mode: int
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0


def oci_arch(machine: str | None = None) -> str:
    """Return the OCI architecture name for this host (or for ``machine``)."""
    m = (machine or platform.machine()).lower()
    table = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    if m not in table:
        raise ImageBuildError(f"unsupported host architecture {m!r}")
    return table[m]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_tar(entries: Iterable[_Entry]) -> bytes:
    """Return a deterministic, uncompressed tar of ``entries`` (parents added, sorted)."""
    by_path: dict[str, _Entry] = {}
    for entry in entries:
        by_path[entry.path] = entry
        parent = Path(entry.path).parent
        while str(parent) != ".":
            by_path.setdefault(str(parent), _Entry(str(parent), "dir", 0o755))
            parent = parent.parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(by_path):
            entry = by_path[path]
            info = tarfile.TarInfo(path)
            info.mtime = _FIXED_MTIME
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = "root" if entry.uid == 0 else ""
            info.gname = "root" if entry.gid == 0 else ""
            info.mode = entry.mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tar.addfile(info)
            else:
                info.type = tarfile.REGTYPE
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_layout(
    dest: Path,
    tag: str,
    entries: list[_Entry],
    config: dict[str, object],
    arch: str | None = None,
) -> OciImage:
    """Write a one-layer OCI image layout to ``dest`` (which must not exist yet)."""
    arch = arch or oci_arch()
    tar_bytes = _layer_tar(entries)
    layer = _gzip(tar_bytes)
    image_config = {
        "created": _CREATED,
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [_sha256(tar_bytes)]},
        "history": [{"created": _CREATED, "created_by": "minikubelet test harness"}],
    }
    config_bytes = _canonical_json(image_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": _sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": _sha256(layer), "size": len(layer)}],
    }
    manifest_bytes = _canonical_json(manifest)
    manifest_digest = _sha256(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {REF_NAME_ANNOTATION: tag},
            }
        ],
    }
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (layer, config_bytes, manifest_bytes):
        (blobs / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    (dest / "oci-layout").write_bytes(_canonical_json({"imageLayoutVersion": "1.0.0"}))
    (dest / "index.json").write_bytes(_canonical_json(index))
    return OciImage(layout=dest, tag=tag, manifest_digest=manifest_digest)


def _load_layout(dest: Path, tag: str) -> OciImage | None:
    """Return the cached image at ``dest`` if it is complete, else None."""
    try:
        index = json.loads((dest / "index.json").read_text())
        for desc in index["manifests"]:
            if desc.get("annotations", {}).get(REF_NAME_ANNOTATION) == tag:
                digest = str(desc["digest"])
                if (dest / "blobs" / "sha256" / digest.removeprefix("sha256:")).is_file():
                    return OciImage(layout=dest, tag=tag, manifest_digest=digest)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _prune(cache_dir: Path, prefix: str, keep: Path) -> None:
    """Delete stale ``PREFIX-<16 hex>`` cache entries other than ``keep``."""
    pattern = re.compile(re.escape(prefix) + r"-[0-9a-f]{16}")
    for entry in cache_dir.iterdir():
        if entry != keep and pattern.fullmatch(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _cached_build(
    cache_dir: Path, name: str, tag: str, key_parts: list[bytes], build: Callable[[Path], OciImage]
) -> OciImage:
    """Build into ``cache_dir/name-KEY`` unless an image with that key is already there."""
    key = hashlib.sha256(b"\0".join([_BUILDER_DIGEST.encode(), *key_parts])).hexdigest()[:16]
    dest = cache_dir / f"{name}-{key}"
    cached = _load_layout(dest, tag)
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    try:
        image = build(tmp / "layout")
        shutil.rmtree(dest, ignore_errors=True)
        (tmp / "layout").rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(cache_dir, name, dest)
    return OciImage(layout=dest, tag=tag, manifest_digest=image.manifest_digest)


def _busybox_applets(busybox: Path) -> list[str]:
    """Return the applet paths (e.g. ``bin/sh``) that ``busybox`` provides."""
    try:
        out = subprocess.run(
            [str(busybox), "--list-full"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageBuildError(f"cannot list applets of {busybox}: {exc}") from exc
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


def _write_busybox(dest: Path, tag: str, busybox: Path, arch: str) -> OciImage:
    entries = [
        _Entry("bin/busybox", "file", 0o755, data=busybox.read_bytes()),
        _Entry("etc/passwd", "file", 0o644, data=_PASSWD.encode()),
        _Entry("etc/group", "file", 0o644, data=_GROUP.encode()),
        _Entry("tmp", "dir", 0o1777),
        _Entry("root", "dir", 0o700),
        _Entry("var/tmp", "dir", 0o1777),
    ]
    for applet in _busybox_applets(busybox):
        if applet not in ("bin/busybox", "linuxrc"):
            entries.append(_Entry(applet, "symlink", 0o777, target="/bin/busybox"))
    config: dict[str, object] = {"Env": [DEFAULT_PATH_ENV], "Cmd": ["sh"]}
    return write_layout(dest, tag, entries, config, arch=arch)


def build_busybox_image(
    cache_dir: Path, tag: str = "1.35", busybox: Path = BUSYBOX_PATH
) -> OciImage:
    """Build (or reuse from ``cache_dir``) a busybox image layout."""
    if not busybox.is_file():
        raise ImageBuildError(f"{busybox} not found (Debian package busybox-static)")
    arch = oci_arch()
    digest = hashlib.sha256(busybox.read_bytes()).hexdigest()
    key = [b"busybox", tag.encode(), arch.encode(), digest.encode()]
    build = functools.partial(_write_busybox, tag=tag, busybox=busybox, arch=arch)
    return _cached_build(cache_dir, "busybox", tag, key, build)


def compile_pause(cache_dir: Path, source: Path = PAUSE_SOURCE) -> Path:
    """Compile the static pause binary (cached by source and compiler version)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageBuildError("gcc not found (Debian packages gcc and libc6-dev)")
    version = subprocess.run([gcc, "--version"], check=True, capture_output=True).stdout
    key = hashlib.sha256(source.read_bytes() + b"\0" + version).hexdigest()[:16]
    out = cache_dir / f"pause-bin-{key}"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    proc = subprocess.run(
        [gcc, "-static", "-O2", "-Wall", "-o", str(tmp), str(source)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ImageBuildError(f"compiling {source} failed:\n{proc.stderr}")
    tmp.rename(out)
    _prune(cache_dir, "pause-bin", out)
    return out


def _write_pause(dest: Path, tag: str, binary: Path, arch: str) -> OciImage:
    entries = [_Entry("pause", "file", 0o755, data=binary.read_bytes())]
    config: dict[str, object] = {"Env": [DEFAULT_PATH_ENV], "Entrypoint": ["/pause"]}
    return write_layout(dest, tag, entries, config, arch=arch)


def build_pause_image(cache_dir: Path, tag: str = "3.9") -> OciImage:
    """Build (or reuse from ``cache_dir``) the pause image layout."""
    binary = compile_pause(cache_dir)
    arch = oci_arch()
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    key = [b"pause", tag.encode(), arch.encode(), digest.encode()]
    build = functools.partial(_write_pause, tag=tag, binary=binary, arch=arch)
    return _cached_build(cache_dir, "pause", tag, key, build)


def push_image(
    image: OciImage,
    registry_host: str,
    name: str,
    tag: str | None = None,
    *,
    all_images: bool = False,
) -> str:
    """Push ``image`` to a plain-HTTP registry with skopeo; return the full reference.

    ``all_images`` pushes every manifest of an image index (``skopeo copy --all``).
    """
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise ImageBuildError("skopeo not found (Debian package skopeo)")
    ref = f"{registry_host}/{name}:{tag or image.tag}"
    cmd = [
        skopeo,
        "--insecure-policy",
        "copy",
        "--quiet",
        *(["--all"] if all_images else []),
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        f"oci:{image.layout}:{image.tag}",
        f"docker://{ref}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ImageBuildError(f"skopeo copy to {ref} failed:\n{proc.stderr.strip()}")
    return ref


# -- images for the native runtime's image tests: layers, whiteouts, users, indexes ----

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
#: An architecture no test host has: the other half of the multi-platform index.
OTHER_ARCH = "s390x"


def whiteout(path: str) -> _Entry:
    """An OCI whiteout entry deleting ``path`` (``dir/.wh.name``)."""
    parent, _, name = path.rpartition("/")
    return _Entry(f"{parent}/.wh.{name}" if parent else f".wh.{name}", "file", 0o644)


def opaque(directory: str) -> _Entry:
    """The OCI opaque marker: ``directory`` hides everything the layers below put in it."""
    return _Entry(f"{directory.rstrip('/')}/.wh..wh..opq", "file", 0o644)


def _compress(tar_bytes: bytes, compression: str) -> tuple[bytes, str]:
    if compression == "gzip":
        return _gzip(tar_bytes), MEDIA_LAYER_GZIP
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(tar_bytes), MEDIA_LAYER_ZSTD
    if compression == "none":
        return tar_bytes, MEDIA_LAYER_TAR
    raise ImageBuildError(f"unknown compression {compression!r}")


def _layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _read_image(image: OciImage) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and the config of a one-image layout."""
    manifest = json.loads(_layout_blob(image.layout, image.manifest_digest))
    config = json.loads(_layout_blob(image.layout, manifest["config"]["digest"]))
    return manifest, config


def _write_blobs(dest: Path, blobs: Iterable[bytes]) -> None:
    root = dest / "blobs" / "sha256"
    root.mkdir(parents=True, exist_ok=True)
    for blob in blobs:
        (root / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    (dest / "oci-layout").write_bytes(_canonical_json({"imageLayoutVersion": "1.0.0"}))


def _write_index_json(dest: Path, tag: str, media_type: str, blob: bytes) -> str:
    digest = _sha256(blob)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": media_type,
                "digest": digest,
                "size": len(blob),
                "annotations": {REF_NAME_ANNOTATION: tag},
            }
        ],
    }
    (dest / "index.json").write_bytes(_canonical_json(index))
    return digest


def _write_stacked(
    dest: Path,
    tag: str,
    base: OciImage,
    layers: list[tuple[list[_Entry], str]],
    config_changes: dict[str, object],
) -> OciImage:
    """``base``'s layers (same blobs, so shared) plus ``layers`` (entries, compression)."""
    base_manifest, base_config = _read_image(base)
    manifest_layers = list(base_manifest["layers"])
    rootfs = dict(base_config["rootfs"])
    diff_ids = list(rootfs["diff_ids"])
    blobs = [_layout_blob(base.layout, str(d["digest"])) for d in manifest_layers]
    for entries, compression in layers:
        tar_bytes = _layer_tar(entries)
        blob, media_type = _compress(tar_bytes, compression)
        blobs.append(blob)
        diff_ids.append(_sha256(tar_bytes))
        manifest_layers.append(
            {"mediaType": media_type, "digest": _sha256(blob), "size": len(blob)}
        )
    config = dict(base_config)
    config["config"] = {**base_config["config"], **config_changes}
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config_bytes = _canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": _sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": manifest_layers,
    }
    manifest_bytes = _canonical_json(manifest)
    _write_blobs(dest, [*blobs, config_bytes, manifest_bytes])
    digest = _write_index_json(dest, tag, MEDIA_MANIFEST, manifest_bytes)
    return OciImage(layout=dest, tag=tag, manifest_digest=digest)


def build_whiteout_image(cache_dir: Path, base: OciImage, tag: str = "1") -> OciImage:
    """``base`` plus two layers that only stack right with whiteouts and an opaque dir.

    Layer 1 (zstd) adds ``/etc/a`` and ``/data/x``; layer 2 (an uncompressed tar)
    deletes ``/etc/a`` and makes ``/data`` opaque with ``/data/y`` in it. Merged,
    ``/etc/a`` is gone and ``/data`` holds only ``y``. The base layers are
    ``base``'s own blobs, so the two images share them.
    """
    layers = [
        ([_Entry("etc/a", "file", 0o644, b"a\n"), _Entry("data/x", "file", 0o644, b"x\n")], "zstd"),
        ([whiteout("etc/a"), opaque("data"), _Entry("data/y", "file", 0o644, b"y\n")], "none"),
    ]
    key = [b"whiteout", tag.encode(), base.manifest_digest.encode()]
    build = functools.partial(_write_stacked, tag=tag, base=base, layers=layers, config_changes={})
    return _cached_build(cache_dir, "whiteout", tag, key, build)


USER_PASSWD = _PASSWD + "app:x:1000:1000:app:/home/app:/bin/sh\n"
USER_GROUP = _GROUP + "app:x:1000:\naudio:x:29:app\nstaff:x:50:root,app\n"


def build_user_image(cache_dir: Path, base: OciImage, tag: str = "1") -> OciImage:
    """``base`` plus a layer with user ``app`` (1000:1000, also in groups audio and staff).

    The config says ``USER app`` and ``WORKDIR /home/app``.
    """
    layers = [
        (
            [
                _Entry("etc/passwd", "file", 0o644, USER_PASSWD.encode()),
                _Entry("etc/group", "file", 0o644, USER_GROUP.encode()),
                _Entry("home/app", "dir", 0o750, uid=1000, gid=1000),
            ],
            "gzip",
        )
    ]
    changes: dict[str, object] = {"User": "app", "WorkingDir": "/home/app"}
    key = [b"user", tag.encode(), base.manifest_digest.encode()]
    build = functools.partial(
        _write_stacked, tag=tag, base=base, layers=layers, config_changes=changes
    )
    return _cached_build(cache_dir, "user", tag, key, build)


def _write_index(dest: Path, tag: str, base: OciImage, other_arch: str) -> OciImage:
    base_manifest, _ = _read_image(base)
    base_bytes = _layout_blob(base.layout, base.manifest_digest)
    blobs = [base_bytes, _layout_blob(base.layout, str(base_manifest["config"]["digest"]))]
    blobs += [_layout_blob(base.layout, str(d["digest"])) for d in base_manifest["layers"]]
    # the other platform: a one-file image that no host here could run
    tar_bytes = _layer_tar([_Entry("other-arch", "file", 0o644, other_arch.encode())])
    layer = _gzip(tar_bytes)
    other_config = _canonical_json(
        {
            "created": _CREATED,
            "architecture": other_arch,
            "os": "linux",
            "config": {"Cmd": ["/other-arch"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha256(tar_bytes)]},
        }
    )
    other_manifest = _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {
                "mediaType": MEDIA_CONFIG,
                "digest": _sha256(other_config),
                "size": len(other_config),
            },
            "layers": [
                {"mediaType": MEDIA_LAYER_GZIP, "digest": _sha256(layer), "size": len(layer)}
            ],
        }
    )
    index = _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": _sha256(other_manifest),
                    "size": len(other_manifest),
                    "platform": {"architecture": other_arch, "os": "linux"},
                },
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": base.manifest_digest,
                    "size": len(base_bytes),
                    "platform": {"architecture": oci_arch(), "os": "linux"},
                },
            ],
        }
    )
    _write_blobs(dest, [*blobs, layer, other_config, other_manifest, index])
    digest = _write_index_json(dest, tag, MEDIA_INDEX, index)
    return OciImage(layout=dest, tag=tag, manifest_digest=digest)


def build_index_image(cache_dir: Path, base: OciImage, tag: str = "multi") -> OciImage:
    """A multi-platform image index: ``base`` for this host's architecture and a fake
    image for :data:`OTHER_ARCH` (listed first, so picking the first entry is wrong).

    ``manifest_digest`` of the result is the index's digest; push it with ``all_images``.
    """
    other = OTHER_ARCH if oci_arch() != OTHER_ARCH else "ppc64le"
    key = [b"index", tag.encode(), base.manifest_digest.encode(), other.encode()]
    build = functools.partial(_write_index, tag=tag, base=base, other_arch=other)
    return _cached_build(cache_dir, "index", tag, key, build)
