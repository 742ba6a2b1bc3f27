"""Pod volumes on the host, the kubelet's way (``pkg/volume/{emptydir,hostpath,downwardapi}``).

Layout under the kubelet root directory, as the kubelet lays it out::

    <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>      emptyDir
    <root>/pods/<uid>/volumes/kubernetes.io~downward-api/<name>   downwardAPI
    <root>/pods/<uid>/containers/<container>/<8 hex digits>       termination message files

* ``emptyDir``: a directory with mode 0777, kept across setups of the same pod.
  ``medium: Memory`` is a tmpfs (``size=`` the ``sizeLimit``) when the manager may
  mount, i.e. runs as root; otherwise a plain directory, with a warning.
* ``hostPath``: the host path itself, after the type check of ``spec.hostPath.type``
  (``DirectoryOrCreate`` makes the directory 0755, ``FileOrCreate`` an empty 0644 file
  in an existing directory; ``Directory``, ``File``, ``Socket``, ``CharDevice``,
  ``BlockDevice`` must already be one; ``""`` checks nothing).
* ``downwardAPI``: files written atomically as the kubelet's AtomicWriter does: the
  payload goes into a fresh ``..<timestamp>`` directory, the ``..data`` symlink is
  swapped to it with a rename, and each top-level name is a symlink into ``..data``;
  so a reader sees the old set of files or the new one, never a mix.
* A volume with no source is an ``emptyDir`` (the API server's default). ``configMap``,
  ``secret``, ``persistentVolumeClaim``, ``projected``, ``csi`` and ``ephemeral``
  volumes need an API server (or a driver) and are refused with a :class:`VolumeError`,
  as is any other type.

:func:`mounts_for` turns a container's ``volumeMounts`` into CRI mounts
(``makeMounts``): ``readOnly`` (downwardAPI volumes are always read-only),
``mountPropagation``, and ``subPath``/``subPathExpr`` resolved inside the volume:
an absolute subPath, a ``..`` component, or a symlink that leads out of the volume
is refused. The kubelet closes the remaining race (a container swapping a component
for a symlink between the check and the runtime's mount) by bind-mounting the
checked path under ``volume-subpaths/``; here the resolved real path is what the
runtime mounts, which narrows the window but does not close it.

All blocking filesystem work runs in :func:`asyncio.to_thread`; ``mount``/``umount``
run through :func:`minikubelet.util.proc.run`, in this module only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from minikubelet import resources
from minikubelet.api.pod import Container, Pod
from minikubelet.api.validation import HOST_PATH_TYPES
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import MinikubeletError
from minikubelet.kuberuntime.envvars import (
    ConfigError,
    container_resource_value,
    expand_sub_path_expr,
    metadata_field_value,
)
from minikubelet.util import mountinfo, proc
from minikubelet.util.mountinfo import mount_points as mount_points  # the volumes tests use it

log = logging.getLogger(__name__)

EMPTY_DIR_PLUGIN: Final = "kubernetes.io~empty-dir"
DOWNWARD_API_PLUGIN: Final = "kubernetes.io~downward-api"
FAILED_MOUNT: Final = "FailedMount"
CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"

EMPTY_DIR_MODE: Final = 0o777
POD_DIR_MODE: Final = 0o750
HOST_PATH_DIR_MODE: Final = 0o755
HOST_PATH_FILE_MODE: Final = 0o644
DOWNWARD_API_DEFAULT_MODE: Final = 0o644
TERMINATION_MESSAGE_MODE: Final = 0o666

#: Volume sources that only make sense with an API server (or a CSI driver) behind them.
NEEDS_API_SERVER: Final = frozenset(
    {"configMap", "secret", "persistentVolumeClaim", "projected", "csi", "ephemeral"}
)
_DATA_DIR: Final = "..data"
_DATA_DIR_TMP: Final = "..data_tmp"
_MAX_PATH: Final = 4096
_MAX_SEGMENT: Final = 255


class VolumeError(MinikubeletError):
    """A volume cannot be set up, torn down or mounted.

    ``reason`` is what the kubelet reports: ``FailedMount`` for setup and teardown,
    ``CreateContainerConfigError`` for a container's mounts (subPath and the like).
    """

    def __init__(self, message: str, *, reason: str = FAILED_MOUNT) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ContainerMounts:
    """A container's CRI mounts and the host file its termination message lands in."""

    mounts: list[pb.Mount]
    termination_message_path: Path | None


# --- helpers -------------------------------------------------------------------------------


def _component(kind: str, value: str) -> str:
    """``value`` if it can be one path component (a uid, a volume or container name)."""
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise VolumeError(f"{kind} {value!r} cannot name a directory")
    return value


def _volume_type(volume: Mapping[str, Any]) -> str:
    """The volume's source key; a volume with none is an emptyDir (the API default)."""
    kinds = [k for k, v in volume.items() if k != "name" and v is not None]
    if not kinds:
        return "emptyDir"
    if len(kinds) > 1:
        raise VolumeError(f"volume {volume.get('name')}: more than one source ({', '.join(kinds)})")
    return kinds[0]


def _has_backsteps(path: str) -> bool:
    return ".." in path.split("/")


def _within(path: str, base: str) -> bool:
    """``PathWithinBase``: ``path`` is ``base`` or below it (both already real paths)."""
    return path == base or path.startswith(base.rstrip("/") + "/")


def _read_mount_points() -> list[str]:
    try:
        return mountinfo.read_mount_points()
    except OSError:
        return []


def _is_mount_point(path: Path) -> bool:
    return os.path.realpath(path) in _read_mount_points()


def _mounts_under(base: Path) -> list[str]:
    real = os.path.realpath(base)
    return [p for p in _read_mount_points() if _within(p, real)]


# --- hostPath ------------------------------------------------------------------------------


def check_host_path(path: str, kind: str) -> None:
    """``checkTypeInternal``: the hostPath type check, creating what ``*OrCreate`` asks for."""
    if kind not in HOST_PATH_TYPES:
        raise VolumeError(f"{kind} is an invalid volume type")
    if kind == "":
        return
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    if kind == "DirectoryOrCreate" and st is None:
        os.makedirs(path, HOST_PATH_DIR_MODE, exist_ok=True)
        return
    if kind == "FileOrCreate" and st is None:
        try:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, HOST_PATH_FILE_MODE)
        except OSError as err:
            raise VolumeError(f"hostPath type check failed: cannot create {path}: {err}") from None
        os.close(fd)
        return
    checks = {
        "DirectoryOrCreate": (stat.S_ISDIR, "is not a directory"),
        "Directory": (stat.S_ISDIR, "is not a directory"),
        "FileOrCreate": (stat.S_ISREG, "is not a file"),
        "File": (stat.S_ISREG, "is not a file"),
        "Socket": (stat.S_ISSOCK, "is not a socket file"),
        "CharDevice": (stat.S_ISCHR, "is not a character device"),
        "BlockDevice": (stat.S_ISBLK, "is not a block device"),
    }
    test, what = checks[kind]
    if st is None or not test(st.st_mode):
        raise VolumeError(f"hostPath type check failed: {path} {what}")


# --- downward API --------------------------------------------------------------------------


def _validate_payload_path(path: str) -> None:
    """AtomicWriter's ``validatePath``: relative, no ``..`` anywhere, not hidden as ``..x``."""
    if not path:
        raise VolumeError("downwardAPI: an item has an empty path")
    if len(path) > _MAX_PATH:
        raise VolumeError(f"downwardAPI: path {path[:32]!r}... is longer than {_MAX_PATH}")
    if path.startswith("/"):
        raise VolumeError(f"downwardAPI: path {path!r} must be relative")
    if _has_backsteps(path) or path.startswith(".."):
        raise VolumeError(f"downwardAPI: path {path!r} must not contain or start with '..'")
    if any(len(seg) > _MAX_SEGMENT for seg in path.split("/")):
        raise VolumeError(f"downwardAPI: path {path!r} has a segment over {_MAX_SEGMENT} chars")


def _payload_matches(ts_dir: Path, payload: Mapping[str, tuple[bytes, int]]) -> bool:
    for rel, (data, mode) in payload.items():
        try:
            st = os.lstat(ts_dir / rel)
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
                return False
            if (ts_dir / rel).read_bytes() != data:
                return False
        except OSError:
            return False
    wanted = {Path(rel) for rel in payload}
    for dirpath, _dirs, files in os.walk(ts_dir):
        for name in files:
            if (Path(dirpath) / name).relative_to(ts_dir) not in wanted:
                return False
    return True


def atomic_write(target: Path, payload: Mapping[str, tuple[bytes, int]]) -> bool:
    """Write ``payload`` ({relative path: (content, mode)}) into ``target`` atomically.

    Returns False when the files on disk already match the payload (nothing written).
    """
    for rel in payload:
        _validate_payload_path(rel)
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / _DATA_DIR
    old = os.readlink(data_link) if data_link.is_symlink() else None
    if old is not None and "/" not in old and _payload_matches(target / old, payload):
        return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    ts_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    os.chmod(ts_dir, 0o755)
    for rel, (data, mode) in payload.items():
        path = ts_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
    tmp_link = target / _DATA_DIR_TMP
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(ts_dir.name, tmp_link)
    os.rename(tmp_link, data_link)  # the atomic switch
    tops = {rel.split("/", 1)[0] for rel in payload}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            os.symlink(posixpath.join(_DATA_DIR, top), link)
    for entry in os.listdir(target):
        if entry.startswith("..") or entry in tops:
            continue
        if (target / entry).is_symlink():
            (target / entry).unlink()
    if old is not None and "/" not in old and old.startswith("..") and old != ts_dir.name:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def downward_api_payload(
    pod: Pod,
    source: Mapping[str, Any],
    *,
    node_allocatable: Mapping[str, resources.QuantityText] | None = None,
) -> dict[str, tuple[bytes, int]]:
    """The files of a ``downwardAPI`` volume: {path: (content, mode)}.

    As in Kubernetes, items read ``metadata.*`` (``fieldRef``) or a container's
    resources (``resourceFieldRef`` with ``containerName``).
    """
    default_mode = source.get("defaultMode", DOWNWARD_API_DEFAULT_MODE)
    payload: dict[str, tuple[bytes, int]] = {}
    for item in source.get("items") or ():
        if not isinstance(item, Mapping):
            raise VolumeError("downwardAPI: an item is not a mapping")
        path = str(item.get("path", ""))
        _validate_payload_path(path)
        mode = item.get("mode", default_mode)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise VolumeError(f"downwardAPI {path}: mode must be between 0 and 0777")
        field_ref = item.get("fieldRef")
        resource_ref = item.get("resourceFieldRef")
        try:
            if isinstance(field_ref, Mapping):
                value = metadata_field_value(pod, str(field_ref.get("fieldPath", "")))
            elif isinstance(resource_ref, Mapping):
                name = resource_ref.get("containerName")
                container = next((c for c in pod.spec.containers if c.name == name), None)
                container = container or next(
                    (c for c in pod.spec.init_containers if c.name == name), None
                )
                if container is None:
                    raise VolumeError(
                        f"downwardAPI {path}: resourceFieldRef needs an existing containerName"
                    )
                value = container_resource_value(
                    pod, container, resource_ref, node_allocatable=node_allocatable
                )
            else:
                raise VolumeError(f"downwardAPI {path}: needs a fieldRef or a resourceFieldRef")
        except (ValueError, ConfigError) as err:
            raise VolumeError(f"downwardAPI {path}: {err}") from None
        payload[path] = (value.encode(), mode)
    return payload


# --- subPath -------------------------------------------------------------------------------


def resolve_sub_path(volume_path: Path | str, sub_path: str) -> Path:
    """The real path of ``sub_path`` inside the volume, or :class:`VolumeError`.

    Refuses an absolute subPath, a ``..`` component, a path that does not exist, and
    a path whose symlinks lead outside the volume (``doBindSubPath``'s checks).
    """
    if posixpath.isabs(sub_path):
        raise VolumeError(
            f"error SubPath `{sub_path}` must not be an absolute path",
            reason=CREATE_CONTAINER_CONFIG_ERROR,
        )
    if _has_backsteps(sub_path):
        raise VolumeError(
            f"unable to provision SubPath `{sub_path}`: must not contain '..'",
            reason=CREATE_CONTAINER_CONFIG_ERROR,
        )
    base = os.path.realpath(volume_path)
    joined = os.path.join(volume_path, sub_path)
    real = os.path.realpath(joined)
    if not _within(real, base):
        raise VolumeError(
            f"subpath {joined!r} not within volume path {str(volume_path)!r}",
            reason=CREATE_CONTAINER_CONFIG_ERROR,
        )
    if not os.path.lexists(real):
        raise VolumeError(
            f"subpath {joined!r} does not exist", reason=CREATE_CONTAINER_CONFIG_ERROR
        )
    return Path(real)


def safe_make_dir(volume_path: Path | str, sub_path: str, mode: int) -> None:
    """``SafeMakeDir``: create ``sub_path`` under the volume without leaving it.

    The existing part is resolved and must stay inside the volume; each missing
    component is then made and opened relative to its parent's descriptor with
    ``O_NOFOLLOW``, so a symlink planted meanwhile is not followed.
    """
    base = os.path.realpath(volume_path)
    parts = [p for p in sub_path.split("/") if p and p != "."]
    existing = base
    index = 0
    while index < len(parts) and os.path.lexists(os.path.join(existing, parts[index])):
        existing = os.path.realpath(os.path.join(existing, parts[index]))
        if not _within(existing, base):
            raise VolumeError(
                f"pathname {sub_path!r} is not within the volume",
                reason=CREATE_CONTAINER_CONFIG_ERROR,
            )
        index += 1
    if index == len(parts):
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(existing, flags)
    try:
        for part in parts[index:]:
            created = True
            try:
                os.mkdir(part, mode, dir_fd=fd)
            except FileExistsError:
                created = False  # made meanwhile; O_NOFOLLOW below still refuses a symlink
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
            if created:
                os.fchmod(fd, mode)  # mkdir's mode is cut by the umask
    except OSError as err:
        raise VolumeError(
            f"failed to create subPath directory {sub_path!r}: {err.strerror}",
            reason=CREATE_CONTAINER_CONFIG_ERROR,
        ) from None
    finally:
        os.close(fd)


# --- mounts --------------------------------------------------------------------------------

_PROPAGATION: Final = {
    None: pb.PROPAGATION_PRIVATE,
    "None": pb.PROPAGATION_PRIVATE,
    "HostToContainer": pb.PROPAGATION_HOST_TO_CONTAINER,
    "Bidirectional": pb.PROPAGATION_BIDIRECTIONAL,
}


def _absolute(path: str) -> str:
    return path if posixpath.isabs(path) else posixpath.normpath("/" + path)


def _sub_path(mount: Mapping[str, Any], env: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    expr = mount.get("subPathExpr")
    if isinstance(expr, str) and expr:
        try:
            return expand_sub_path_expr(expr, env)
        except ConfigError as err:
            raise VolumeError(err.message, reason=CREATE_CONTAINER_CONFIG_ERROR) from None
    sub = mount.get("subPath")
    return sub if isinstance(sub, str) else ""


def mounts_for(
    pod: Pod,
    container: Container,
    volume_paths: Mapping[str, Path],
    *,
    env: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    termination_message_path: Path | None = None,
) -> list[pb.Mount]:
    """``makeMounts``: the container's CRI mounts (it writes nothing; it reads the
    filesystem only to resolve subPaths, so call it off the event loop).

    ``volume_paths`` is what :meth:`VolumeManager.setup` returned; ``env`` expands
    ``subPathExpr``; ``termination_message_path`` (a file made by
    :meth:`VolumeManager.termination_message_file`) is mounted at the container's
    ``terminationMessagePath``.
    """
    read_only_volumes = {
        str(v.get("name")) for v in pod.spec.volumes if _volume_type(v) == "downwardAPI"
    }
    env_pairs = env if isinstance(env, Mapping) else list(env)
    out: list[pb.Mount] = []
    for mount in container.volume_mounts:
        name = str(mount.get("name", ""))
        host_path = volume_paths.get(name)
        if host_path is None:
            raise VolumeError(
                f"cannot find volume {name!r} to mount into container {container.name!r}",
                reason=CREATE_CONTAINER_CONFIG_ERROR,
            )
        sub_path = _sub_path(mount, env_pairs)
        resolved = resolve_sub_path(host_path, sub_path) if sub_path else host_path
        propagation_name = mount.get("mountPropagation")
        if propagation_name not in _PROPAGATION:
            raise VolumeError(
                f"invalid MountPropagation mode: {propagation_name}",
                reason=CREATE_CONTAINER_CONFIG_ERROR,
            )
        out.append(
            pb.Mount(
                container_path=_absolute(str(mount.get("mountPath", ""))),
                host_path=str(resolved),
                readonly=bool(mount.get("readOnly")) or name in read_only_volumes,
                propagation=_PROPAGATION[propagation_name],
            )
        )
    if termination_message_path is not None and container.termination_message_path:
        out.append(
            pb.Mount(
                container_path=_absolute(container.termination_message_path),
                host_path=str(termination_message_path),
            )
        )
    return out


# --- the manager ---------------------------------------------------------------------------


class VolumeManager:
    """Sets up and tears down pods' volumes under ``<root_dir>/pods/<uid>``.

    ``mount_tmpfs`` says whether ``medium: Memory`` may mount a tmpfs; by default it
    may when running as root. Constructing the manager touches nothing.
    """

    def __init__(self, root_dir: Path, *, mount_tmpfs: bool | None = None) -> None:
        self.root_dir = Path(root_dir)
        self.mount_tmpfs = (os.geteuid() == 0) if mount_tmpfs is None else mount_tmpfs

    # paths
    def pod_dir(self, uid: str) -> Path:
        return self.root_dir / "pods" / _component("pod uid", str(uid))

    def volumes_dir(self, uid: str) -> Path:
        return self.pod_dir(uid) / "volumes"

    def container_dir(self, uid: str, container_name: str) -> Path:
        return self.pod_dir(uid) / "containers" / _component("container name", container_name)

    # setup
    async def setup(
        self,
        pod: Pod,
        *,
        pod_ip: str = "",
        host_ip: str = "",
        node_name: str = "",
        node_allocatable: Mapping[str, resources.QuantityText] | None = None,
    ) -> dict[str, Path]:
        """Make every volume of ``pod``; returns {volume name: host path}.

        ``pod_ip``, ``host_ip`` and ``node_name`` are the pod's network identity; the
        volume types supported read only ``metadata.*`` and resources (as Kubernetes
        restricts downwardAPI volumes), so they are used for logging only today.
        Raises :class:`VolumeError` naming the volume that failed.
        """
        who = f"pod={pod} uid={pod.uid}"
        pod_dir = self.pod_dir(str(pod.uid))
        await asyncio.to_thread(self._make_pod_dirs, pod_dir)
        paths: dict[str, Path] = {}
        for volume in pod.spec.volumes:
            name = _component("volume name", str(volume.get("name", "")))
            kind = _volume_type(volume)
            if kind in NEEDS_API_SERVER:
                raise VolumeError(f"volume {name}: type {kind} needs an API server")
            source = volume.get(kind) or {}
            if not isinstance(source, Mapping):
                raise VolumeError(f"volume {name}: {kind} must be a mapping")
            if kind == "emptyDir":
                paths[name] = await self._setup_empty_dir(pod, name, source)
            elif kind == "hostPath":
                paths[name] = await self._setup_host_path(name, source)
            elif kind == "downwardAPI":
                target = self.volumes_dir(str(pod.uid)) / DOWNWARD_API_PLUGIN / name
                payload = downward_api_payload(pod, source, node_allocatable=node_allocatable)
                try:
                    wrote = await asyncio.to_thread(atomic_write, target, payload)
                except OSError as err:
                    raise VolumeError(f"volume {name}: writing downwardAPI files: {err}") from None
                if wrote:
                    log.info("volume %s: wrote %d downwardAPI file(s) %s", name, len(payload), who)
                paths[name] = target
            else:
                raise VolumeError(f"volume {name}: type {kind} is not supported")
        log.debug(
            "volumes ready %s ip=%s host_ip=%s node=%s: %s",
            who,
            pod_ip,
            host_ip,
            node_name,
            ", ".join(paths),
        )
        return paths

    @staticmethod
    def _make_pod_dirs(pod_dir: Path) -> None:
        for path in (pod_dir, pod_dir / "volumes", pod_dir / "containers"):
            path.mkdir(mode=POD_DIR_MODE, parents=True, exist_ok=True)

    async def _setup_empty_dir(self, pod: Pod, name: str, source: Mapping[str, Any]) -> Path:
        path = self.volumes_dir(str(pod.uid)) / EMPTY_DIR_PLUGIN / name
        medium = source.get("medium") or ""
        if medium not in ("", "Memory"):
            raise VolumeError(f"volume {name}: emptyDir medium {medium!r} is not supported")
        size = source.get("sizeLimit")
        try:
            size_bytes = resources.bytes_(resources.parse_quantity(size)) if size else 0
        except ValueError as err:
            raise VolumeError(f"volume {name}: sizeLimit: {err}") from None
        await asyncio.to_thread(self._make_empty_dir, path)
        if medium != "Memory":
            return path
        if not self.mount_tmpfs:
            log.warning(
                "volume %s: medium Memory needs root to mount a tmpfs; using a plain directory "
                "pod=%s uid=%s",
                name,
                pod,
                pod.uid,
            )
            return path
        if await asyncio.to_thread(_is_mount_point, path):
            return path  # mounted by an earlier setup
        options = ["-o", f"size={size_bytes}"] if size_bytes > 0 else []
        await self._run("mount", "-t", "tmpfs", *options, "tmpfs", str(path))
        await asyncio.to_thread(os.chmod, path, EMPTY_DIR_MODE)
        log.info("volume %s: mounted tmpfs at %s pod=%s uid=%s", name, path, pod, pod.uid)
        return path

    @staticmethod
    def _make_empty_dir(path: Path) -> None:
        path.mkdir(mode=EMPTY_DIR_MODE, parents=True, exist_ok=True)
        if stat.S_IMODE(path.stat().st_mode) != EMPTY_DIR_MODE:
            os.chmod(path, EMPTY_DIR_MODE)  # mkdir's mode is cut by the umask

    async def _setup_host_path(self, name: str, source: Mapping[str, Any]) -> Path:
        path = source.get("path")
        if not isinstance(path, str) or not path:
            raise VolumeError(f"volume {name}: hostPath.path is required")
        if not posixpath.isabs(path):
            raise VolumeError(f"volume {name}: hostPath.path {path!r} must be absolute")
        if _has_backsteps(path):
            raise VolumeError(f"volume {name}: hostPath.path {path!r} must not contain '..'")
        kind = source.get("type") or ""
        try:
            await asyncio.to_thread(check_host_path, path, str(kind))
        except VolumeError as err:
            raise VolumeError(f"volume {name}: {err.message}") from None
        except OSError as err:
            raise VolumeError(f"volume {name}: hostPath {path}: {err.strerror}") from None
        return Path(path)

    # containers
    async def termination_message_file(self, pod: Pod, container: Container) -> Path:
        """A fresh, empty, world-writable file for the container's termination message.

        One per container instance, named by 8 random hex digits as the kubelet names it.
        """
        directory = self.container_dir(str(pod.uid), container.name)
        path = directory / secrets.token_hex(4)
        await asyncio.to_thread(self._make_termination_file, directory, path)
        return path

    @staticmethod
    def _make_termination_file(directory: Path, path: Path) -> None:
        directory.mkdir(mode=POD_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, TERMINATION_MESSAGE_MODE)  # regardless of the umask
        finally:
            os.close(fd)

    async def make_mounts(
        self,
        pod: Pod,
        container: Container,
        volume_paths: Mapping[str, Path],
        *,
        env: Sequence[tuple[str, str]] = (),
    ) -> ContainerMounts:
        """Everything a container's mounts need: missing subPath directories made
        inside their volumes, a termination message file, then :func:`mounts_for`."""
        await asyncio.to_thread(_make_sub_paths, container, volume_paths, env)
        term: Path | None = None
        if container.termination_message_path:
            term = await self.termination_message_file(pod, container)
        mounts = await asyncio.to_thread(
            mounts_for, pod, container, volume_paths, env=env, termination_message_path=term
        )
        return ContainerMounts(mounts=mounts, termination_message_path=term)

    # teardown
    async def teardown(self, uid: str) -> None:
        """Unmount and remove everything under the pod's directory.

        Mounts below it (tmpfs emptyDirs) are unmounted deepest first; if any stays
        mounted nothing is removed (:class:`VolumeError`), so a bind mount can never
        make the removal reach outside. The removal does not follow symlinks.
        """
        pod_dir = self.pod_dir(uid)
        if not await asyncio.to_thread(os.path.lexists, pod_dir):
            return
        for point in sorted(await asyncio.to_thread(_mounts_under, pod_dir), reverse=True):
            await self._run("umount", point)
            log.info("unmounted %s uid=%s", point, uid)
        remaining = await asyncio.to_thread(_mounts_under, pod_dir)
        if remaining:
            raise VolumeError(f"pod {uid}: still mounted: {', '.join(remaining)}")
        await asyncio.to_thread(_remove_tree, pod_dir)
        log.info("removed pod directory %s uid=%s", pod_dir, uid)

    # subprocesses
    @staticmethod
    async def _run(*argv: str) -> None:
        try:
            await proc.run(argv)
        except proc.CommandError as failure:
            raise VolumeError(str(failure)) from None


def _make_sub_paths(
    container: Container, volume_paths: Mapping[str, Path], env: Sequence[tuple[str, str]]
) -> None:
    for mount in container.volume_mounts:
        volume = volume_paths.get(str(mount.get("name", "")))
        if volume is None:
            continue  # mounts_for reports it
        sub_path = _sub_path(mount, env)
        if not sub_path or posixpath.isabs(sub_path) or _has_backsteps(sub_path):
            continue  # nothing to make, or mounts_for refuses it
        if os.path.lexists(os.path.join(volume, sub_path)):
            continue
        safe_make_dir(volume, sub_path, stat.S_IMODE(os.stat(volume).st_mode))


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    shutil.rmtree(path)  # fd-based on Linux: never follows a symlink out
