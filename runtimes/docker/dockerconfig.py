"""CRI specs to the bodies of ``POST /containers/create``: pure functions, as dockershim built them.

A sandbox is an infra container (the pause image) that owns the pod's network,
IPC and UTS namespaces (and the PID namespace when the pod shares one); its
containers join them with ``container:<infra id>`` modes. Host namespaces
(hostNetwork, hostIPC, hostPID) become ``host`` modes on both. The CRI's
``command`` is Docker's Entrypoint and ``args`` its Cmd.

Privileged is not Docker's ``Privileged``: that asks runc for every capability Docker
knows, which fails ("unable to apply caps") on a host whose bounding set lacks one.
A privileged sandbox or container gets what containerd gives it: the capabilities of
the host's bounding set, the host's devices, no seccomp or AppArmor profile and no
masked or read-only paths (:class:`HostPrivileges`, :func:`privileged`). So does
``capabilities.add: [ALL]``: the bounding set's capabilities.

Docker's Engine API 1.41 (dockerd 20.10) has no image mounts (``Mount.image``, the
``image`` mount type came with API 1.48): such a mount is refused as Unimplemented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from minikubelet.errors import InvalidArgument, Unimplemented
from runtimes.base import model as m

POD: Final = 0
CONTAINER: Final = 1
NODE: Final = 2
TARGET: Final = 3
_PROTOCOLS: Final = {0: "tcp", 1: "udp", 2: "sctp"}
_PROPAGATION: Final = {0: "rprivate", 1: "rslave", 2: "rshared"}
#: A bind's fields are separated by ':' and its options by ',' (Docker's "Binds" syntax).
_BIND_SEPARATORS: Final = (":", ",")


def _expose(ports: tuple[m.PortMapping, ...]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """ExposedPorts and PortBindings; a mapping without a host port publishes nothing."""
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[Any]] = {}
    for port in ports:
        if port.host_port <= 0:
            continue
        protocol = _PROTOCOLS.get(port.protocol)
        if protocol is None:
            raise InvalidArgument(f"port mapping protocol {port.protocol} is not TCP, UDP or SCTP")
        if not 0 < port.container_port < 65536 or port.host_port >= 65536:
            raise InvalidArgument(
                f"port mapping {port.host_port}->{port.container_port} is out of range"
            )
        key = f"{port.container_port}/{protocol}"
        exposed[key] = {}
        bindings.setdefault(key, []).append(
            {"HostIp": port.host_ip, "HostPort": str(port.host_port)}
        )
    return exposed, bindings


@dataclass(frozen=True, slots=True)
class HostPrivileges:
    """What privileged means on this host: the capabilities of the bounding set that runc
    is started with (dockerd's), as ``CAP_*`` names, and the host's device nodes."""

    capabilities: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()


def cap_name(name: str) -> str:
    """``net_admin`` -> ``CAP_NET_ADMIN``."""
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def privileged(host: HostPrivileges) -> dict[str, Any]:
    """HostConfig fields that make a container privileged with what the host has.

    Docker's own ``Privileged`` asks for every capability Docker knows; these give the
    bounding set's instead, with everything else privileged implies: every host device
    and device access, no seccomp and no AppArmor profile, nothing masked or read-only.
    Without a known bounding set Docker's ``Privileged`` is all there is.
    """
    if not host.capabilities:
        return {"Privileged": True}
    return {
        "Privileged": False,
        "CapAdd": list(host.capabilities),
        "CapDrop": [],
        "Devices": [
            {"PathOnHost": d, "PathInContainer": d, "CgroupPermissions": "rwm"}
            for d in host.devices
        ],
        "DeviceCgroupRules": ["a *:* rwm"],
        "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
        "MaskedPaths": [],
        "ReadonlyPaths": [],
    }


def capabilities(sec: m.SecurityOptions, host: HostPrivileges) -> tuple[list[str], list[str]]:
    """CapAdd and CapDrop: ``ALL`` added is the bounding set's capabilities (Docker's
    ``ALL`` is every capability it knows); a capability the bounding set lacks is refused."""
    if not host.capabilities:
        return list(sec.add_capabilities), list(sec.drop_capabilities)
    adds = [cap_name(c) for c in sec.add_capabilities]
    drops = [cap_name(c) for c in sec.drop_capabilities]
    out: list[str] = []
    for cap in adds:
        if cap == "CAP_ALL":
            out.extend(c for c in host.capabilities if c not in out)
        elif cap not in host.capabilities:
            raise InvalidArgument(
                f"capability {cap} is not in this host's bounding set: it cannot be added"
            )
        elif cap not in out:
            out.append(cap)
    return out, drops


def binds(mounts: tuple[m.Mount, ...]) -> list[str]:
    """Docker ``Binds`` (``host:container:options``); a missing host directory is created."""
    out = []
    for mount in mounts:
        if mount.image:
            raise Unimplemented(
                f"image volume {mount.image!r} at {mount.container_path!r}: the Docker-backed "
                "runtime cannot mount images (dockerd's API 1.41 has no image mounts)"
            )
        for what, path in (
            ("container_path", mount.container_path),
            ("host_path", mount.host_path),
        ):
            if not os.path.isabs(path):
                raise InvalidArgument(f"mount {what} {path!r} must be an absolute path")
            if any(sep in path for sep in _BIND_SEPARATORS):
                raise InvalidArgument(f"mount {what} {path!r}: ':' and ',' are not supported")
        if os.path.normpath(mount.container_path) == "/":
            raise InvalidArgument(f"mount of {mount.host_path!r} over the root '/' is refused")
        propagation = _PROPAGATION.get(mount.propagation)
        if propagation is None:
            raise InvalidArgument(f"mount propagation {mount.propagation} is unknown")
        options = ["ro" if mount.readonly else "rw"]
        if mount.selinux_relabel:
            options.append("Z")
        if mount.propagation:
            options.append(propagation)
        out.append(f"{mount.host_path}:{mount.container_path}:{','.join(options)}")
    return out


def _seccomp(profile: str) -> list[str]:
    """dockershim's rule: unset or ``unconfined`` is unconfined; ``runtime/default`` Docker's."""
    if profile in ("", "unconfined"):
        return ["seccomp=unconfined"]
    if profile in ("runtime/default", "docker/default"):
        return []
    if profile.startswith("localhost/"):
        path = profile[len("localhost/") :]
        try:
            with open(path) as f:
                return ["seccomp=" + f.read()]
        except OSError as exc:
            raise InvalidArgument(f"seccomp profile {path!r}: {exc.strerror}") from None
    raise InvalidArgument(f"seccomp profile {profile!r} is unknown")


def _oom_score_adj(requested: int, floor: int | None) -> dict[str, Any]:
    """Only a score that does not lower the container below the daemon's own (no CAP_SYS_RESOURCE
    is assumed: the kernel would refuse, and the container would not start)."""
    if requested == 0 or floor is None or requested < floor:
        return {}
    return {"OomScoreAdj": requested}


def sandbox_body(
    spec: m.PodSandboxSpec,
    *,
    image: str,
    labels: Mapping[str, str],
    host: HostPrivileges = HostPrivileges(),
) -> dict[str, Any]:
    ns = spec.namespaces
    host_network = ns.network == NODE
    exposed, bindings = ({}, {}) if host_network else _expose(spec.port_mappings)
    host_config: dict[str, Any] = {
        "NetworkMode": "host" if host_network else "bridge",
        "IpcMode": "host" if ns.ipc == NODE else "shareable",
        "PidMode": "host" if ns.pid == NODE else "",
        "UTSMode": "host" if host_network else "",
        "PortBindings": bindings,
        "Dns": list(spec.dns.servers),
        "DnsSearch": list(spec.dns.searches),
        "DnsOptions": list(spec.dns.options),
        "Sysctls": dict(spec.sysctls),
        "CgroupParent": spec.cgroup_parent,
        "RestartPolicy": {"Name": "no"},
        "SecurityOpt": ["no-new-privileges"],
    }
    if spec.privileged:
        relaxed = privileged(host)
        relaxed["SecurityOpt"] = [*relaxed.get("SecurityOpt", ()), "no-new-privileges"]
        host_config.update(relaxed)
    if spec.runtime_handler:
        host_config["Runtime"] = spec.runtime_handler
    return {
        "Image": image,
        "Hostname": "" if host_network else spec.hostname,
        "Labels": dict(labels),
        "ExposedPorts": exposed,
        "HostConfig": host_config,
        "StopSignal": "SIGTERM",
    }


def _user(sec: m.SecurityOptions) -> str:
    """Docker's ``User``; RunAsGroup without RunAsUser or RunAsUsername is refused (CRI)."""
    user = str(sec.run_as_user) if sec.run_as_user is not None else sec.run_as_username
    if sec.run_as_group is not None:
        if not user:
            raise InvalidArgument(
                f"user group {sec.run_as_group} is specified without user or username"
            )
        user = f"{user}:{sec.run_as_group}"
    return user


def container_body(
    spec: m.ContainerSpec,
    *,
    infra_id: str,
    sandbox: m.PodSandboxSpec,
    image: str,
    labels: Mapping[str, str],
    oom_floor: int | None,
    host: HostPrivileges = HostPrivileges(),
) -> dict[str, Any]:
    ns = sandbox.namespaces
    sec = spec.security
    res = spec.resources
    if ns.pid == TARGET:
        if not ns.target_id:
            raise InvalidArgument("PID namespace mode TARGET needs a target_id")
        pid_mode = f"container:{ns.target_id}"
    else:
        pid_mode = {NODE: "host", POD: f"container:{infra_id}"}.get(ns.pid, "")
    security_opt = _seccomp(sec.seccomp) if not sec.privileged else []
    if sec.no_new_privs:
        security_opt.append("no-new-privileges")
    cap_add, cap_drop = capabilities(sec, host) if not sec.privileged else ([], [])
    host_config: dict[str, Any] = {
        "NetworkMode": "host" if ns.network == NODE else f"container:{infra_id}",
        "IpcMode": "host" if ns.ipc == NODE else f"container:{infra_id}",
        "PidMode": pid_mode,
        "UTSMode": "host" if ns.network == NODE else "",
        "Binds": binds(spec.mounts),
        "Devices": [
            {
                "PathOnHost": d.host_path,
                "PathInContainer": d.container_path,
                "CgroupPermissions": d.permissions or "rwm",
            }
            for d in spec.devices
        ],
        "CapAdd": cap_add,
        "CapDrop": cap_drop,
        "ReadonlyRootfs": sec.readonly_rootfs,
        "SecurityOpt": security_opt,
        "GroupAdd": [str(g) for g in sec.supplemental_groups],
        "CgroupParent": sandbox.cgroup_parent,
        "CpuShares": res.cpu_shares,
        "CpuQuota": res.cpu_quota,
        "CpuPeriod": res.cpu_period,
        "Memory": res.memory_limit_in_bytes,
        # no swap beyond the limit, as containerd sets it for Kubernetes
        "MemorySwap": res.memory_limit_in_bytes,
        "CpusetCpus": res.cpuset_cpus,
        "CpusetMems": res.cpuset_mems,
        "RestartPolicy": {"Name": "no"},
        **_oom_score_adj(res.oom_score_adj, oom_floor),
    }
    if sec.masked_paths:
        host_config["MaskedPaths"] = list(sec.masked_paths)
    if sec.readonly_paths:
        host_config["ReadonlyPaths"] = list(sec.readonly_paths)
    if sec.privileged:
        relaxed = privileged(host)
        # the container's own devices too, where they are not the host's own at that path
        mine = [d for d in host_config["Devices"] if d["PathInContainer"] not in host.devices]
        relaxed["Devices"] = [*mine, *relaxed.get("Devices", ())]
        relaxed["SecurityOpt"] = [*relaxed.get("SecurityOpt", ()), *security_opt]
        host_config.update(relaxed)
    if sandbox.runtime_handler:
        host_config["Runtime"] = sandbox.runtime_handler
    body: dict[str, Any] = {
        "Image": image,
        "Env": [f"{k}={v}" for k, v in spec.envs],
        "WorkingDir": spec.working_dir,
        "User": _user(sec),
        "Labels": dict(labels),
        "Tty": spec.tty,
        "OpenStdin": spec.stdin,
        "StdinOnce": spec.stdin_once,
        "AttachStdin": spec.stdin,
        "HostConfig": host_config,
    }
    if spec.command:
        body["Entrypoint"] = list(spec.command)
    if spec.args:
        body["Cmd"] = list(spec.args)
    return body
