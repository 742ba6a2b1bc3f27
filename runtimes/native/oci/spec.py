"""The OCI bundle's ``config.json``, generated from a CRI container and its image: pure.

:func:`generate_spec` is the one decider of the container half of the native
runtime, as CRI-O's ``container_create_linux.go`` and containerd's
``container_create_linux.go`` are for theirs: everything it needs from the host
(the runtime's capabilities and oom_score_adj, device nodes, a Localhost
seccomp profile, the image's passwd/group for the user) is handed in, so it is
tested table-driven without a host. The rules and where they come from:

* process args: Kubernetes' rules for ``command``/``args`` against the image's
  ``Entrypoint``/``Cmd``; env: PATH default, ``HOSTNAME``, image env, CRI envs
  (a later layer replaces a name in place, new names append);
* capabilities: containerd's default set, then ``add`` (``ALL`` = every
  capability of the runtime), then ``drop`` (``ALL`` = none); privileged = all;
* mounts: containerd's standard mounts, the sandbox's ``/dev/shm``,
  ``/etc/{resolv.conf,hostname,hosts}``, then CRI mounts as binds (parents
  first), which replace a standard mount at the same destination;
* masked and read-only paths: containerd's defaults unless the CRI gives them;
* seccomp: ``unconfined``, ``runtime/default`` (our profile, see
  :mod:`runtimes.native.seccomp.default`) or ``localhost/<path>`` (an absolute
  path as given, a relative one under a root);
* sysctls: only namespaced ones, and none of a namespace shared with the host;
* namespaces: join the sandbox's by path, a new mount namespace always.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from minikubelet.errors import InvalidArgument
from runtimes.base.model import ContainerSpec, Mount, SecurityOptions
from runtimes.native.oci.devices import HostDevice
from runtimes.native.oci.user import ResolvedUser
from runtimes.native.seccomp import profile as seccomp

OCISpec = dict[str, Any]

#: Every capability by its bit number (capability.h; 40 is the last of Linux 6.x).
ALL_CAPABILITIES: Final[tuple[str, ...]] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

#: containerd's default capability set (``oci.defaultUnixCaps``).
DEFAULT_CAPABILITIES: Final[tuple[str, ...]] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

#: containerd's defaults (``oci.populateDefaultUnixSpec``).
DEFAULT_MASKED_PATHS: Final[tuple[str, ...]] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/sys/devices/virtual/powercap", "/proc/scsi",
)  # fmt: skip
DEFAULT_READONLY_PATHS: Final[tuple[str, ...]] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

DEFAULT_PATH_ENV: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: CRI MountPropagation -> the bind option (PRIVATE, HOST_TO_CONTAINER, BIDIRECTIONAL).
PROPAGATION: Final[Mapping[int, str]] = {0: "rprivate", 1: "rslave", 2: "rshared"}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class NsMode(enum.StrEnum):
    NEW = "new"  # a namespace of the container's own
    JOIN = "join"  # an existing namespace, by path (the sandbox's, or a target's)
    HOST = "host"  # the runtime's own: no entry in the spec


@dataclass(frozen=True, slots=True)
class Namespace:
    mode: NsMode = NsMode.NEW
    path: str = ""

    @classmethod
    def new(cls) -> Namespace:
        return cls(NsMode.NEW)

    @classmethod
    def join(cls, path: str) -> Namespace:
        return cls(NsMode.JOIN, path)

    @classmethod
    def host(cls) -> Namespace:
        return cls(NsMode.HOST)


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    """What a container takes from its pod sandbox.

    ``pid`` is the container's pid namespace as the pod decided it: JOIN the
    sandbox's (shareProcessNamespace, or a target container's), NEW (the CRI's
    CONTAINER mode) or HOST. The ``*_path`` files are bind-mounted when set.
    """

    id: str
    hostname: str = ""
    network: Namespace = Namespace()
    ipc: Namespace = Namespace()
    uts: Namespace = Namespace()
    pid: Namespace = Namespace()
    cgroup_parent: str = ""
    sysctls: Mapping[str, str] = field(default_factory=dict)
    resolv_conf_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    shm_path: str = ""
    privileged: bool = False

    @property
    def shared_pid(self) -> bool:
        return self.pid.mode is NsMode.JOIN


@dataclass(frozen=True, slots=True)
class SpecDefaults:
    """What the host and the runtime's configuration imply for every container.

    :func:`runtimes.native.oci.host.spec_defaults` reads them from this host.
    """

    arch: str = "amd64"  # GOARCH spelling, for seccomp
    #: The runtime's own oom_score_adj: without CAP_SYS_RESOURCE no child may go lower.
    min_oom_score_adj: int = -1000
    #: The capabilities the runtime holds (its bounding set): privileged and add ALL get these.
    all_capabilities: tuple[str, ...] = ALL_CAPABILITIES
    default_capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    masked_paths: tuple[str, ...] = DEFAULT_MASKED_PATHS
    readonly_paths: tuple[str, ...] = DEFAULT_READONLY_PATHS
    #: The host's device nodes, which a privileged container gets.
    host_devices: tuple[HostDevice, ...] = ()
    seccomp_profile_root: str = "/var/lib/minikubelet/seccomp"
    #: The profile of a container whose CRI seccomp is empty (containerd: unconfined).
    empty_seccomp: str = seccomp.UNCONFINED
    #: memory.memsw is available: set swap = limit, so a limited container cannot swap.
    swap_accounting: bool = False
    pids_limit: int = 0
    path_env: str = DEFAULT_PATH_ENV
    shm_size: str = "65536k"
    oci_version: str = "1.0.2"


# -- process ---------------------------------------------------------------------------------


def _image_config(image_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the image's whole config JSON or its ``config`` object."""
    inner = image_config.get("config")
    return inner if isinstance(inner, Mapping) else image_config


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def process_args(
    command: Sequence[str], args: Sequence[str], entrypoint: Sequence[str], cmd: Sequence[str]
) -> list[str]:
    """Kubernetes' rule: ``command`` replaces Entrypoint and drops Cmd; ``args`` replace Cmd."""
    if command:
        out = [*command, *args]
    elif args:
        out = [*entrypoint, *args]
    else:
        out = [*entrypoint, *cmd]
    if not out:
        raise InvalidArgument("no command specified: neither the container nor the image has one")
    return out


def merge_env(*layers: Iterable[tuple[str, str]]) -> list[str]:
    """``NAME=value`` strings; a later layer replaces a name in place, new names append.

    A CRI value's bytes that are not UTF-8 stay surrogate-escaped here and reach
    ``config.json`` as ``\\udcXX`` escapes, which runc (Go's JSON) reads as U+FFFD:
    the container sees what CRI-O and containerd give it.
    """
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer:
            if name:
                merged[name] = value
    return [f"{k}={v}" for k, v in merged.items()]


def _env_pairs(entries: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for entry in entries:
        name, _, value = entry.partition("=")
        out.append((name, value))
    return out


def normalize_capability(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def capabilities(security: SecurityOptions, defaults: SpecDefaults) -> list[str]:
    """The capability set (bounding = effective = permitted), as containerd computes it."""
    if security.privileged:
        return list(defaults.all_capabilities)
    adds = [normalize_capability(c) for c in security.add_capabilities]
    drops = [normalize_capability(c) for c in security.drop_capabilities]
    for cap in (*adds, *drops):
        if cap != "CAP_ALL" and cap not in ALL_CAPABILITIES:
            raise InvalidArgument(f"unknown capability {cap}")
    caps = list(defaults.default_capabilities)
    if "CAP_ALL" in adds:
        caps = list(defaults.all_capabilities)
    if "CAP_ALL" in drops:
        caps = []
    for cap in adds:
        if cap == "CAP_ALL" or cap in caps:
            continue
        if cap not in defaults.all_capabilities:
            raise InvalidArgument(f"capability {cap} is not available to this runtime")
        caps.append(cap)
    return [c for c in caps if c not in drops]


# -- sysctls ---------------------------------------------------------------------------------


def normalize_sysctl(name: str) -> str:
    """``net/ipv4/ip_forward`` -> ``net.ipv4.ip_forward`` (Kubernetes' NormalizeName)."""
    slash, dot = name.find("/"), name.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return name.translate(str.maketrans("./", "/."))
    return name


def sysctl_namespace(name: str) -> str | None:
    """The namespace a sysctl belongs to (``ipc`` or ``net``), None when it is node-wide."""
    if name == "kernel.sem" or name.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")):
        return "ipc"
    if name.startswith("net."):
        return "net"
    return None


def validate_sysctls(sandbox: SandboxInfo) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw, value in sandbox.sysctls.items():
        name = normalize_sysctl(raw)
        ns = sysctl_namespace(name)
        if ns is None:
            raise InvalidArgument(f"sysctl {name} is not namespaced: it would change the node")
        if ns == "net" and sandbox.network.mode is NsMode.HOST:
            raise InvalidArgument(f"sysctl {name} is not allowed with host networking")
        if ns == "ipc" and sandbox.ipc.mode is NsMode.HOST:
            raise InvalidArgument(f"sysctl {name} is not allowed with host IPC")
        out[name] = value
    return out


# -- mounts ----------------------------------------------------------------------------------


def _mount(dest: str, kind: str, source: str, options: Sequence[str]) -> dict[str, Any]:
    return {"destination": dest, "type": kind, "source": source, "options": list(options)}


def standard_mounts(
    sandbox: SandboxInfo, *, privileged: bool, defaults: SpecDefaults
) -> list[dict[str, Any]]:
    """containerd's mounts: /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, cgroup."""
    ro = [] if privileged else ["ro"]
    if sandbox.shm_path:
        shm = _mount(
            "/dev/shm",
            "bind",
            sandbox.shm_path,
            ["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"],
        )
    else:
        shm = _mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            ["nosuid", "noexec", "nodev", "mode=1777", f"size={defaults.shm_size}"],
        )
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        shm,
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", *ro]),
        _mount(
            "/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", *ro]
        ),
    ]


def _sandbox_file_mounts(sandbox: SandboxInfo, *, readonly: bool) -> list[dict[str, Any]]:
    mode = "ro" if readonly else "rw"
    files = (
        ("/etc/resolv.conf", sandbox.resolv_conf_path),
        ("/etc/hostname", sandbox.hostname_path),
        ("/etc/hosts", sandbox.hosts_path),
    )
    return [_mount(dest, "bind", src, ["rbind", "rprivate", mode]) for dest, src in files if src]


def _depth(path: str) -> int:
    return len([p for p in posixpath.normpath(path).split("/") if p])


def cri_mounts(mounts: Sequence[Mount]) -> list[dict[str, Any]]:
    """CRI mounts as binds, parents before children so none is shadowed."""
    out = []
    for m in sorted(mounts, key=lambda m: _depth(m.container_path)):
        if not m.container_path.startswith("/"):
            raise InvalidArgument(f"mount destination {m.container_path!r} is not absolute")
        if not m.host_path:
            raise InvalidArgument(f"mount at {m.container_path} has no host path")
        propagation = PROPAGATION.get(m.propagation)
        if propagation is None:
            raise InvalidArgument(f"mount at {m.container_path}: unknown propagation")
        options = ["rbind", propagation, "ro" if m.readonly else "rw"]
        if m.image:  # an image volume: read-only, as containerd and CRI-O mount it
            options += ["nosuid", "nodev"]
        out.append(_mount(posixpath.normpath(m.container_path), "bind", m.host_path, options))
    return out


def rootfs_propagation(mounts: Sequence[Mount]) -> str:
    """A shared or slave bind needs the rootfs mount to propagate as much ("" = default)."""
    kinds = {m.propagation for m in mounts}
    if 2 in kinds:
        return "rshared"
    if 1 in kinds:
        return "rslave"
    return ""


# -- devices and resources -------------------------------------------------------------------


def _devices(
    container: ContainerSpec,
    resolved: Mapping[str, HostDevice],
    *,
    privileged: bool,
    defaults: SpecDefaults,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``linux.devices`` and the cgroup device rules."""
    nodes: dict[str, dict[str, Any]] = {}
    rules: list[dict[str, Any]]
    if privileged:
        for host in defaults.host_devices:
            nodes[host.path] = host.oci(host.path)
        rules = [{"allow": True, "access": "rwm"}]
    else:
        rules = [{"allow": False, "access": "rwm"}]
    for d in container.devices:
        dev = resolved.get(d.host_path)
        if dev is None:
            raise InvalidArgument(f"device {d.host_path} was not resolved on the host")
        access = d.permissions or "rwm"
        if not set(access) <= set("rwm"):
            raise InvalidArgument(f"device {d.host_path}: bad permissions {access!r}")
        nodes[d.container_path] = dev.oci(d.container_path)
        if not privileged:
            rules.append(
                {
                    "allow": True,
                    "type": dev.type,
                    "major": dev.major,
                    "minor": dev.minor,
                    "access": access,
                }
            )
    return list(nodes.values()), rules


def oom_score_adj(requested: int, defaults: SpecDefaults) -> int:
    """Never below the runtime's own (no CAP_SYS_RESOURCE to lower it), never above 1000."""
    return min(1000, max(requested, defaults.min_oom_score_adj, -1000))


def _resources(
    container: ContainerSpec, device_rules: list[dict[str, Any]], defaults: SpecDefaults
) -> dict[str, Any]:
    r = container.resources
    out: dict[str, Any] = {"devices": device_rules}
    if r.memory_limit_in_bytes < 0:
        raise InvalidArgument("memory limit must not be negative")
    if r.memory_limit_in_bytes:
        memory: dict[str, Any] = {"limit": r.memory_limit_in_bytes}
        if defaults.swap_accounting:
            memory["swap"] = r.memory_limit_in_bytes
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if r.cpu_shares > 0:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota > 0:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period > 0:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if defaults.pids_limit > 0:
        out["pids"] = {"limit": defaults.pids_limit}
    return out


# -- namespaces, seccomp, cgroups ------------------------------------------------------------


def namespaces(sandbox: SandboxInfo) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for kind, ns in (
        ("pid", sandbox.pid),
        ("network", sandbox.network),
        ("ipc", sandbox.ipc),
        ("uts", sandbox.uts),
    ):
        if ns.mode is NsMode.NEW:
            out.append({"type": kind})
        elif ns.mode is NsMode.JOIN:
            if not ns.path.startswith("/"):
                raise InvalidArgument(f"{kind} namespace to join has no absolute path")
            out.append({"type": kind, "path": ns.path})
    out.append({"type": "mount"})
    return out


def seccomp_profile(
    security: SecurityOptions,
    caps: Sequence[str],
    defaults: SpecDefaults,
    localhost: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The ``linux.seccomp`` object, or None for unconfined (always so when privileged)."""
    if security.privileged:
        return None
    ref = security.seccomp or defaults.empty_seccomp
    if ref == seccomp.UNCONFINED:
        return None
    if ref in (seccomp.RUNTIME_DEFAULT, seccomp.DOCKER_DEFAULT):
        return seccomp.runtime_default(caps=caps, arch=defaults.arch)
    if ref.startswith(seccomp.LOCALHOST_PREFIX):
        path = seccomp.localhost_profile_path(ref, defaults.seccomp_profile_root)
        if localhost is None:
            raise InvalidArgument(f"localhost seccomp profile {path} was not loaded")
        try:
            return seccomp.to_oci(localhost, caps=caps, arch=defaults.arch)
        except InvalidArgument as err:
            raise InvalidArgument(f"localhost seccomp profile {path}: {err.message}") from None
    raise InvalidArgument(f"unknown seccomp profile {ref!r}")


def cgroups_path(sandbox: SandboxInfo, container_id: str) -> str:
    """``<parent>/<id>`` under the pod's cgroup, else ``minikubelet-<id>`` (runc: relative
    to its own cgroup in each hierarchy)."""
    if sandbox.cgroup_parent:
        return f"{sandbox.cgroup_parent.rstrip('/')}/{container_id}"
    return f"minikubelet-{container_id}"


# -- the spec --------------------------------------------------------------------------------


def generate_spec(
    *,
    container_id: str,
    container: ContainerSpec,
    image_config: Mapping[str, Any],
    sandbox: SandboxInfo,
    rootfs: str,
    user: ResolvedUser,
    defaults: SpecDefaults,
    devices: Mapping[str, HostDevice] | None = None,
    seccomp_localhost: Mapping[str, Any] | None = None,
) -> OCISpec:
    """The OCI runtime spec (``config.json``) of one container.

    ``devices`` maps each CRI device's host path to its node
    (:func:`runtimes.native.oci.devices.host_device`); ``seccomp_localhost`` is
    the loaded profile when the container asks for ``localhost/<path>``
    (:func:`runtimes.native.seccomp.profile.load_localhost_profile`). Raises
    InvalidArgument for anything the CRI or the host forbids.
    """
    if not _ID.match(container_id):
        raise InvalidArgument(f"bad container id {container_id!r}")
    if not rootfs.startswith("/"):
        raise InvalidArgument("rootfs must be an absolute path")
    sec = container.security
    if sec.privileged and not sandbox.privileged:
        raise InvalidArgument("privileged container in a non-privileged sandbox")
    image = _image_config(image_config)

    args = process_args(
        container.command,
        container.args,
        _strings(image.get("Entrypoint")),
        _strings(image.get("Cmd")),
    )
    env = merge_env(
        [("PATH", defaults.path_env)],
        [("HOSTNAME", sandbox.hostname)] if sandbox.hostname else [],
        _env_pairs(_strings(image.get("Env"))),
        container.envs,
    )
    if container.working_dir and not container.working_dir.startswith("/"):
        raise InvalidArgument(f"working dir {container.working_dir!r} is not absolute")
    cwd = container.working_dir or posixpath.join("/", str(image.get("WorkingDir") or "/"))

    caps = capabilities(sec, defaults)
    process_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        process_user["additionalGids"] = list(user.additional_gids)
    process: dict[str, Any] = {
        "terminal": container.tty,
        "user": process_user,
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": sec.no_new_privs,
        "oomScoreAdj": oom_score_adj(container.resources.oom_score_adj, defaults),
    }

    cri = cri_mounts(container.mounts)
    taken = {m["destination"] for m in cri}
    mounts = [
        m
        for m in (
            *standard_mounts(sandbox, privileged=sec.privileged, defaults=defaults),
            *_sandbox_file_mounts(sandbox, readonly=sec.readonly_rootfs),
        )
        if m["destination"] not in taken
    ]
    mounts += cri

    nodes, device_rules = _devices(
        container, devices or {}, privileged=sec.privileged, defaults=defaults
    )
    linux: dict[str, Any] = {
        "namespaces": namespaces(sandbox),
        "resources": _resources(container, device_rules, defaults),
        "cgroupsPath": cgroups_path(sandbox, container_id),
    }
    if nodes:
        linux["devices"] = nodes
    sysctls = validate_sysctls(sandbox)
    if sysctls:
        linux["sysctl"] = sysctls
    if not sec.privileged:
        linux["maskedPaths"] = list(sec.masked_paths or defaults.masked_paths)
        linux["readonlyPaths"] = list(sec.readonly_paths or defaults.readonly_paths)
    profile = seccomp_profile(sec, caps, defaults, seccomp_localhost)
    if profile is not None:
        linux["seccomp"] = profile
    propagation = rootfs_propagation(container.mounts)
    if propagation:
        linux["rootfsPropagation"] = propagation

    spec: OCISpec = {
        "ociVersion": defaults.oci_version,
        "process": process,
        "root": {"path": rootfs, "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
        "annotations": {
            **container.annotations,
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": container.metadata.name,
            "io.kubernetes.cri.sandbox-id": sandbox.id,
            "io.kubernetes.cri.image-name": container.image,
        },
    }
    if sandbox.hostname and sandbox.uts.mode is not NsMode.HOST:
        spec["hostname"] = sandbox.hostname
    return spec
