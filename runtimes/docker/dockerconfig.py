"""CRI specs to the bodies of ``POST /containers/create``: pure functions, as dockershim built them.

A sandbox is an infra container (the pause image) that owns the pod's network,
IPC and UTS namespaces (and the PID namespace when the pod shares one); its
containers join them with ``container:<infra id>`` modes. Host namespaces
(hostNetwork, hostIPC, hostPID) become ``host`` modes on both. The CRI's
``command`` is Docker's Entrypoint and ``args`` its Cmd.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from minikubelet.errors import InvalidArgument
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


def binds(mounts: tuple[m.Mount, ...]) -> list[str]:
    """Docker ``Binds`` (``host:container:options``); a missing host directory is created."""
    out = []
    for mount in mounts:
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
        "Privileged": spec.privileged,
        "CgroupParent": spec.cgroup_parent,
        "RestartPolicy": {"Name": "no"},
        "SecurityOpt": ["no-new-privileges"],
    }
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
    user = str(sec.run_as_user) if sec.run_as_user is not None else sec.run_as_username
    if sec.run_as_group is not None:
        user = f"{user or '0'}:{sec.run_as_group}"
    return user


def container_body(
    spec: m.ContainerSpec,
    *,
    infra_id: str,
    sandbox: m.PodSandboxSpec,
    image: str,
    labels: Mapping[str, str],
    oom_floor: int | None,
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
        "CapAdd": list(sec.add_capabilities),
        "CapDrop": list(sec.drop_capabilities),
        "Privileged": sec.privileged,
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
