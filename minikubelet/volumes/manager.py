"""Pod volumes on the host, the kubelet's way (``pkg/volume/{emptydir,hostpath,downwardapi,
configmap,secret,projected}``).

Layout under the kubelet root directory, as the kubelet lays it out::

    <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>      emptyDir
    <root>/pods/<uid>/volumes/kubernetes.io~downward-api/<name>   downwardAPI
    <root>/pods/<uid>/volumes/kubernetes.io~configmap/<name>      configMap
    <root>/pods/<uid>/volumes/kubernetes.io~secret/<name>         secret
    <root>/pods/<uid>/volumes/kubernetes.io~projected/<name>      projected
    <root>/pods/<uid>/containers/<container>/<8 hex digits>       termination message files
    <root>/pods/<uid>/etc-hosts                                   the pod's /etc/hosts

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
  so a reader sees the old set of files or the new one, never a mix (:mod:`.atomic`).
* ``configMap``, ``secret`` and ``projected`` (configMap, secret, downwardAPI and
  serviceAccountToken sources, as in the ``kube-api-access-*`` volume every API pod
  has): files made by :mod:`.projection` from the manager's ``objects`` and written the
  same way; secret and projected volumes sit on a tmpfs when the manager may mount. A
  failure is worded as the kubelet's FailedMount event words it:
  ``MountVolume.SetUp failed for volume "cfg" : configmap "missing" not found``.
  Without ``objects`` (static pods only) they are refused.
* ``fsGroup`` (:mod:`.ownership`): an emptyDir when it is made, and the other volumes
  above each time their files are written, get the pod's ``fsGroup`` as their group,
  group read and write (read only for those mounted read-only) and setgid directories.
* Every volume whose files the node writes is mounted read-only, and kept current by
  :meth:`VolumeManager.run`: about every minute each is recomputed and rewritten only
  when its content changed.
* A volume with no source is an ``emptyDir`` (the API server's default).
  ``persistentVolumeClaim``, ``csi`` and ``ephemeral`` volumes need a driver and are
  refused with a :class:`VolumeError`, as is any other type.

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
import logging
import os
import posixpath
import random
import secrets
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from minikubelet import resources
from minikubelet.api.pod import Container, Pod
from minikubelet.api.validation import HOST_PATH_TYPES
from minikubelet.clock import Clock, RealClock
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import MinikubeletError
from minikubelet.kubeapi.objects import ObjectSource
from minikubelet.kuberuntime.envvars import (
    ConfigError,
    container_resource_value,
    expand_sub_path_expr,
    metadata_field_value,
)
from minikubelet.util import mountinfo, proc
from minikubelet.util.mountinfo import mount_points as mount_points  # the volumes tests use it
from minikubelet.volumes.atomic import (
    Payload,
    PayloadPathError,
    atomic_write,
    validate_payload_path,
)
from minikubelet.volumes.etchosts import ETC_HOSTS, ETC_HOSTS_FILE, HostsFile, write_hosts_file
from minikubelet.volumes.ownership import (
    RO_MASK,
    pod_fs_group,
    pod_fs_user,
    set_volume_ownership,
)
from minikubelet.volumes.projection import (
    ProjectionError,
    config_map_payload,
    projected_payload,
    secret_payload,
    token_paths,
)

log = logging.getLogger(__name__)

EMPTY_DIR_PLUGIN: Final = "kubernetes.io~empty-dir"
DOWNWARD_API_PLUGIN: Final = "kubernetes.io~downward-api"
CONFIG_MAP_PLUGIN: Final = "kubernetes.io~configmap"
SECRET_PLUGIN: Final = "kubernetes.io~secret"
PROJECTED_PLUGIN: Final = "kubernetes.io~projected"
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
#: Those this node makes from API objects (with an object source), by their plugin directory.
API_VOLUMES: Final = {
    "configMap": CONFIG_MAP_PLUGIN,
    "secret": SECRET_PLUGIN,
    "projected": PROJECTED_PLUGIN,
}
#: The volumes whose files are written by the node, kept up to date, and mounted read-only.
WRITTEN_VOLUMES: Final = frozenset({"downwardAPI", *API_VOLUMES})
#: Kept in memory (a tmpfs when the manager may mount), as the kubelet keeps them.
MEMORY_VOLUMES: Final = frozenset({"secret", "projected"})
RESYNC_PERIOD: Final = 60.0


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
        try:
            validate_payload_path(path)
        except PayloadPathError as err:
            raise VolumeError(f"downwardAPI: {err.message}") from None
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
    image_volumes: Mapping[str, pb.ImageSpec] | None = None,
) -> list[pb.Mount]:
    """``makeMounts``: the container's CRI mounts (it writes nothing; it reads the
    filesystem only to resolve subPaths, so call it off the event loop).

    ``volume_paths`` is what :meth:`VolumeManager.setup` returned; ``env`` expands
    ``subPathExpr``; ``termination_message_path`` (a file made by
    :meth:`VolumeManager.termination_message_file`) is mounted at the container's
    ``terminationMessagePath``. ``image_volumes`` are the pulled images of the pod's
    ``image`` volumes by volume name: the runtime mounts them read-only (CRI
    ``Mount.image``, a subPath as ``image_sub_path``), as the kubelet's ``makeMounts``.
    """
    read_only_volumes = {
        str(v.get("name")) for v in pod.spec.volumes if _volume_type(v) in WRITTEN_VOLUMES
    }
    env_pairs = env if isinstance(env, Mapping) else list(env)
    out: list[pb.Mount] = []
    for mount in container.volume_mounts:
        name = str(mount.get("name", ""))
        image = (image_volumes or {}).get(name)
        if image is not None:
            sub_path = _sub_path(mount, env_pairs)
            if posixpath.isabs(sub_path) or _has_backsteps(sub_path):
                raise VolumeError(
                    f"subPath {sub_path!r} of image volume {name!r} must be a relative path "
                    "without '..'",
                    reason=CREATE_CONTAINER_CONFIG_ERROR,
                )
            out.append(
                pb.Mount(
                    container_path=_absolute(str(mount.get("mountPath", ""))),
                    image=image,
                    image_sub_path=sub_path,
                    readonly=True,
                )
            )
            continue
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

    ``mount_tmpfs`` says whether ``medium: Memory`` (and secret and projected volumes)
    may mount a tmpfs; by default it may when running as root. ``objects`` gives the
    ConfigMaps, Secrets and tokens of ``configMap``, ``secret`` and ``projected``
    volumes (API server mode); without it those volumes are refused.

    Mounted volumes whose files the node writes (those and ``downwardAPI``) are kept
    current by :meth:`run`: every ``resync_period`` (with 10 % jitter) each is
    recomputed and rewritten by the atomic writer when its content changed, so an
    updated ConfigMap or Secret, a token near its refresh, or new labels reach the
    files within about a minute. Constructing the manager touches nothing.
    """

    def __init__(
        self,
        root_dir: Path,
        *,
        mount_tmpfs: bool | None = None,
        objects: ObjectSource | None = None,
        resync_period: float = RESYNC_PERIOD,
        clock: Clock | None = None,
    ) -> None:
        self.root_dir = Path(root_dir)
        self.mount_tmpfs = (os.geteuid() == 0) if mount_tmpfs is None else mount_tmpfs
        self.objects = objects
        self.resync_period = resync_period
        self.clock: Clock = clock or RealClock()
        #: Pods with volumes to keep current, by uid (their latest spec and node facts).
        self._written: dict[str, tuple[Pod, Mapping[str, resources.QuantityText] | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.resyncs = 0  # completed resync rounds (tests wait on it)

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

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
        uid = str(pod.uid)
        pod_dir = self.pod_dir(uid)
        await asyncio.to_thread(self._make_pod_dirs, pod_dir)
        paths: dict[str, Path] = {}
        async with self._lock(uid):
            for volume in pod.spec.volumes:
                name = _component("volume name", str(volume.get("name", "")))
                kind = _volume_type(volume)
                if kind in NEEDS_API_SERVER and (kind not in API_VOLUMES or self.objects is None):
                    raise VolumeError(f"volume {name}: type {kind} needs an API server")
                source = volume.get(kind) or {}
                if not isinstance(source, Mapping):
                    raise VolumeError(f"volume {name}: {kind} must be a mapping")
                if kind == "emptyDir":
                    paths[name] = await self._setup_empty_dir(pod, name, source)
                elif kind == "hostPath":
                    paths[name] = await self._setup_host_path(name, source)
                elif kind == "image":
                    continue  # pulled by the runtime manager, mounted by the runtime
                elif kind in WRITTEN_VOLUMES:
                    # a new pod reads its objects afresh, as the kubelet does on registration
                    paths[name] = await self._write_volume(
                        pod, name, kind, source, node_allocatable=node_allocatable, max_age=0
                    )
                else:
                    raise VolumeError(f"volume {name}: type {kind} is not supported")
            if any(_volume_type(v) in WRITTEN_VOLUMES for v in pod.spec.volumes):
                self._written[uid] = (pod, node_allocatable)
        log.debug(
            "volumes ready %s ip=%s host_ip=%s node=%s: %s",
            who,
            pod_ip,
            host_ip,
            node_name,
            ", ".join(paths),
        )
        return paths

    def written_volume_dir(self, uid: str, name: str, kind: str) -> Path:
        plugin = DOWNWARD_API_PLUGIN if kind == "downwardAPI" else API_VOLUMES[kind]
        return self.volumes_dir(uid) / plugin / _component("volume name", name)

    async def _payload(
        self,
        pod: Pod,
        name: str,
        kind: str,
        source: Mapping[str, Any],
        *,
        node_allocatable: Mapping[str, resources.QuantityText] | None,
        max_age: float | None,
    ) -> Payload:
        if kind == "downwardAPI":
            return downward_api_payload(pod, source, node_allocatable=node_allocatable)
        objects = self.objects
        if objects is None:
            raise VolumeError(f"volume {name}: type {kind} needs an API server")
        try:
            if kind == "configMap":
                return await config_map_payload(pod, source, objects, max_age=max_age)
            if kind == "secret":
                return await secret_payload(pod, source, objects, max_age=max_age)
            return await projected_payload(
                pod,
                source,
                objects,
                downward=lambda items: downward_api_payload(
                    pod, items, node_allocatable=node_allocatable
                ),
                max_age=max_age,
            )
        except ProjectionError as err:
            # the kubelet's operation executor words it so, and the FailedMount event says it
            raise VolumeError(
                f'MountVolume.SetUp failed for volume "{name}" : {err.message}'
            ) from None

    async def _write_volume(
        self,
        pod: Pod,
        name: str,
        kind: str,
        source: Mapping[str, Any],
        *,
        node_allocatable: Mapping[str, resources.QuantityText] | None,
        max_age: float | None,
    ) -> Path:
        """Compute the volume's files and write them if they changed (caller holds the lock)."""
        target = self.written_volume_dir(str(pod.uid), name, kind)
        payload = await self._payload(
            pod, name, kind, source, node_allocatable=node_allocatable, max_age=max_age
        )
        if kind in MEMORY_VOLUMES:
            await self._memory_dir(pod, name, target)
        fs_group = pod_fs_group(pod.spec.security_context)

        def set_perms() -> None:
            # the whole volume, not only the new files: the first write makes its root
            set_volume_ownership(target, fs_group, readonly=True)

        fs_user = pod_fs_user(pod) if kind == "projected" else None
        owners = {path: fs_user for path in token_paths(source)} if fs_user is not None else None
        try:
            wrote = await asyncio.to_thread(
                atomic_write,
                target,
                payload,
                set_perms if fs_group is not None else None,
                owners,
                RO_MASK if fs_group is not None else 0,
            )
        except PayloadPathError as err:
            raise VolumeError(f"volume {name}: {err.message}") from None
        except OSError as err:
            raise VolumeError(f"volume {name}: writing {kind} files: {err}") from None
        if wrote:
            log.info(
                "volume %s: wrote %d %s file(s) pod=%s uid=%s",
                name,
                len(payload),
                kind,
                pod,
                pod.uid,
            )
        return target

    async def _memory_dir(self, pod: Pod, name: str, path: Path) -> None:
        """A tmpfs for a secret or projected volume (root only), so secrets stay off disk."""
        await asyncio.to_thread(path.mkdir, mode=0o755, parents=True, exist_ok=True)
        if not self.mount_tmpfs or await asyncio.to_thread(_is_mount_point, path):
            return
        await self._run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(path))
        log.info("volume %s: mounted tmpfs at %s pod=%s uid=%s", name, path, pod, pod.uid)

    def note_pod(self, pod: Pod) -> None:
        """The pod's latest version (new labels, say) for the next resync of its volumes."""
        uid = str(pod.uid)
        if uid in self._written:
            self._written[uid] = (pod, self._written[uid][1])

    async def run(self) -> None:
        """Keep the written volumes of mounted pods current (see the class documentation).

        A round that fails unexpectedly is logged and the next one comes as usual: the
        pods' files stay as they were, and the kubelet keeps running."""
        while True:
            await self.clock.sleep(self.resync_period * random.uniform(0.9, 1.1))
            try:
                await self.resync()
            except Exception:
                log.exception("resync of pods' volumes failed")

    async def resync(self) -> None:
        """One round: rewrite each mounted written volume whose content changed."""
        for uid in list(self._written):
            async with self._lock(uid):
                entry = self._written.get(uid)
                if entry is None:
                    continue  # torn down meanwhile
                pod, allocatable = entry
                for volume in pod.spec.volumes:
                    kind = _volume_type(volume)
                    source = volume.get(kind)
                    if kind not in WRITTEN_VOLUMES or not isinstance(source, Mapping):
                        continue
                    name = str(volume.get("name", ""))
                    try:
                        await self._write_volume(
                            pod,
                            name,
                            kind,
                            source,
                            node_allocatable=allocatable,
                            max_age=self.resync_period / 2,
                        )
                    except VolumeError as err:
                        # the files stay as they were; the next round tries again
                        log.warning("resync pod=%s uid=%s: %s", pod, uid, err.message)
        self.resyncs += 1

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
        created = await asyncio.to_thread(self._make_empty_dir, path)
        fs_group = pod_fs_group(pod.spec.security_context)
        if medium != "Memory" or not self.mount_tmpfs:
            if medium == "Memory":
                log.warning(
                    "volume %s: medium Memory needs root to mount a tmpfs; using a plain "
                    "directory pod=%s uid=%s",
                    name,
                    pod,
                    pod.uid,
                )
            if created:  # as the kubelet: once, when the volume is made
                await asyncio.to_thread(set_volume_ownership, path, fs_group)
            return path
        if await asyncio.to_thread(_is_mount_point, path):
            return path  # mounted by an earlier setup
        options = ["-o", f"size={size_bytes}"] if size_bytes > 0 else []
        await self._run("mount", "-t", "tmpfs", *options, "tmpfs", str(path))
        await asyncio.to_thread(os.chmod, path, EMPTY_DIR_MODE)
        await asyncio.to_thread(set_volume_ownership, path, fs_group)
        log.info("volume %s: mounted tmpfs at %s pod=%s uid=%s", name, path, pod, pod.uid)
        return path

    @staticmethod
    def _make_empty_dir(path: Path) -> bool:
        """Make the directory (mode 0777); whether it was made now."""
        try:
            path.mkdir(mode=EMPTY_DIR_MODE, parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise
            return False
        if path.stat().st_mode & 0o777 != EMPTY_DIR_MODE:
            os.chmod(path, EMPTY_DIR_MODE)  # mkdir's mode is cut by the umask
        return True

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
        hosts: HostsFile | None = None,
        image_volumes: Mapping[str, pb.ImageSpec] | None = None,
    ) -> ContainerMounts:
        """Everything a container's mounts need: missing subPath directories made
        inside their volumes, a termination message file, then :func:`mounts_for`;
        with ``hosts``, the pod's ``etc-hosts`` written and mounted at ``/etc/hosts``
        unless the container mounts a volume there (:mod:`.etchosts`)."""
        await asyncio.to_thread(_make_sub_paths, container, volume_paths, env)
        term: Path | None = None
        if container.termination_message_path:
            term = await self.termination_message_file(pod, container)
        mounts = await asyncio.to_thread(
            mounts_for,
            pod,
            container,
            volume_paths,
            env=env,
            termination_message_path=term,
            image_volumes=image_volumes,
        )
        if hosts is not None and all(
            m.get("mountPath") != ETC_HOSTS for m in container.volume_mounts
        ):
            path = self.etc_hosts_path(str(pod.uid))
            try:
                await asyncio.to_thread(self._write_etc_hosts, path, hosts)
            except OSError as err:
                raise VolumeError(
                    f"failed to write {path}: {err.strerror}",
                    reason=CREATE_CONTAINER_CONFIG_ERROR,
                ) from None
            # makeHostsMount: read-write, relabelled for SELinux
            mounts.append(
                pb.Mount(container_path=ETC_HOSTS, host_path=str(path), selinux_relabel=True)
            )
        return ContainerMounts(mounts=mounts, termination_message_path=term)

    @staticmethod
    def _write_etc_hosts(path: Path, hosts: HostsFile) -> None:
        path.parent.mkdir(mode=POD_DIR_MODE, parents=True, exist_ok=True)
        write_hosts_file(path, hosts)

    def etc_hosts_path(self, uid: str) -> Path:
        """``<root>/pods/<uid>/etc-hosts``, the pod's hosts file."""
        return self.pod_dir(uid) / ETC_HOSTS_FILE

    # teardown
    async def teardown(self, uid: str) -> None:
        """Unmount and remove everything under the pod's directory.

        Mounts below it (tmpfs emptyDirs) are unmounted deepest first; if any stays
        mounted nothing is removed (:class:`VolumeError`), so a bind mount can never
        make the removal reach outside. The removal does not follow symlinks.
        """
        pod_dir = self.pod_dir(uid)
        async with self._lock(uid):
            self._written.pop(uid, None)
            if self.objects is not None:
                self.objects.release_pod(uid)
            await self._teardown(uid, pod_dir)
        self._locks.pop(uid, None)

    async def _teardown(self, uid: str, pod_dir: Path) -> None:
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
