"""Protos to the runtimes' model and back: every conversion the gRPC adapter makes.

Pure functions, no gRPC: :mod:`runtimes.base.service` calls them on the way in
(a request's configs and filters, checked for what the CRI requires of them) and
on the way out (statuses, listings, stats, events). A missing required field is
``InvalidArgument`` with the field's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import InvalidArgument
from runtimes.base import model as m

#: The version of the CRI the adapter reports in VersionResponse.version.
KUBELET_API_VERSION = "0.1.0"


def require(cond: bool, message: str) -> None:
    """InvalidArgument with ``message`` unless ``cond``: a request lacks what the CRI requires."""
    if not cond:
        raise InvalidArgument(message)


# -- proto -> domain ----------------------------------------------------------


def sandbox_spec_from_pb(config: pb.PodSandboxConfig) -> m.PodSandboxSpec:
    require(config.HasField("metadata"), "PodSandboxConfig.metadata is required")
    md = config.metadata
    require(bool(md.name), "PodSandboxConfig.metadata.name is required")
    require(bool(md.uid), "PodSandboxConfig.metadata.uid is required")
    require(bool(md.namespace), "PodSandboxConfig.metadata.namespace is required")
    require(md.attempt >= 0, "PodSandboxConfig.metadata.attempt must not be negative")
    linux = config.linux
    sec = linux.security_context
    ns = sec.namespace_options
    return m.PodSandboxSpec(
        metadata=m.SandboxMetadata(md.name, md.uid, md.namespace, md.attempt),
        hostname=config.hostname,
        log_directory=config.log_directory,
        dns=m.DNSConfig(
            tuple(config.dns_config.servers),
            tuple(config.dns_config.searches),
            tuple(config.dns_config.options),
        ),
        port_mappings=tuple(
            m.PortMapping(p.protocol, p.container_port, p.host_port, p.host_ip)
            for p in config.port_mappings
        ),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        cgroup_parent=linux.cgroup_parent,
        namespaces=m.NamespaceOptions(ns.network, ns.pid, ns.ipc, ns.target_id),
        sysctls=dict(linux.sysctls),
        privileged=sec.privileged,
    )


def _seccomp(sec: pb.LinuxContainerSecurityContext) -> str:
    if sec.HasField("seccomp"):
        kind = sec.seccomp.profile_type
        if kind == pb.SecurityProfile.ProfileType.Unconfined:
            return "unconfined"
        if kind == pb.SecurityProfile.ProfileType.Localhost:
            return "localhost/" + sec.seccomp.localhost_ref
        return "runtime/default"
    return sec.seccomp_profile_path


def container_spec_from_pb(config: pb.ContainerConfig) -> m.ContainerSpec:
    require(config.HasField("metadata"), "ContainerConfig.metadata is required")
    require(bool(config.metadata.name), "ContainerConfig.metadata.name is required")
    require(bool(config.image.image), "ContainerConfig.image.image is required")
    linux = config.linux
    res = linux.resources
    sec = linux.security_context
    return m.ContainerSpec(
        metadata=m.ContainerMetadata(config.metadata.name, config.metadata.attempt),
        image=config.image.image,
        command=tuple(config.command),
        args=tuple(config.args),
        working_dir=config.working_dir,
        # Values are bytes on the wire (any bytes, as an environment allows); the model keeps
        # them as text with the non-UTF-8 bytes surrogate-escaped, as os.fsdecode does.
        envs=tuple((kv.key, kv.value.decode("utf-8", "surrogateescape")) for kv in config.envs),
        mounts=tuple(
            m.Mount(
                mt.container_path,
                mt.host_path,
                mt.readonly,
                mt.propagation,
                mt.selinux_relabel,
                image=mt.image.image if mt.HasField("image") else "",
                image_sub_path=mt.image_sub_path,
            )
            for mt in config.mounts
        ),
        devices=tuple(
            m.Device(d.container_path, d.host_path, d.permissions) for d in config.devices
        ),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        log_path=config.log_path,
        stdin=config.stdin,
        stdin_once=config.stdin_once,
        tty=config.tty,
        resources=m.Resources(
            res.cpu_period,
            res.cpu_quota,
            res.cpu_shares,
            res.memory_limit_in_bytes,
            res.oom_score_adj,
            res.cpuset_cpus,
            res.cpuset_mems,
        ),
        security=m.SecurityOptions(
            privileged=sec.privileged,
            run_as_user=sec.run_as_user.value if sec.HasField("run_as_user") else None,
            run_as_username=sec.run_as_username,
            run_as_group=sec.run_as_group.value if sec.HasField("run_as_group") else None,
            supplemental_groups=tuple(sec.supplemental_groups),
            readonly_rootfs=sec.readonly_rootfs,
            no_new_privs=sec.no_new_privs,
            add_capabilities=tuple(sec.capabilities.add_capabilities),
            drop_capabilities=tuple(sec.capabilities.drop_capabilities),
            seccomp=_seccomp(sec),
            masked_paths=tuple(sec.masked_paths),
            readonly_paths=tuple(sec.readonly_paths),
        ),
        image_annotations=dict(config.image.annotations),
        user_specified_image=config.image.user_specified_image,
    )


def sandbox_filter_from_pb(f: pb.PodSandboxFilter) -> m.SandboxFilter:
    state = m.SandboxState(f.state.state) if f.HasField("state") else None
    return m.SandboxFilter(f.id, state, dict(f.label_selector))


def container_filter_from_pb(f: pb.ContainerFilter) -> m.ContainerFilter:
    state = m.ContainerState(f.state.state) if f.HasField("state") else None
    return m.ContainerFilter(f.id, state, f.pod_sandbox_id, dict(f.label_selector))


# -- domain -> proto ----------------------------------------------------------


def sandbox_metadata_to_pb(md: m.SandboxMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(
        name=md.name, uid=md.uid, namespace=md.namespace, attempt=md.attempt
    )


def sandbox_to_pb(s: m.PodSandbox) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=s.id,
        metadata=sandbox_metadata_to_pb(s.metadata),
        state=int(s.state),  # type: ignore[arg-type]
        created_at=s.created_at,
        labels=s.spec.labels,
        annotations=s.spec.annotations,
        runtime_handler=s.spec.runtime_handler,
    )


def sandbox_status_to_pb(s: m.PodSandbox) -> pb.PodSandboxStatus:
    ns = s.spec.namespaces
    return pb.PodSandboxStatus(
        id=s.id,
        metadata=sandbox_metadata_to_pb(s.metadata),
        state=int(s.state),  # type: ignore[arg-type]
        created_at=s.created_at,
        network=pb.PodSandboxNetworkStatus(
            ip=s.ip, additional_ips=[pb.PodIP(ip=ip) for ip in s.additional_ips]
        ),
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(
                options=pb.NamespaceOption(
                    network=ns.network,  # type: ignore[arg-type]
                    pid=ns.pid,  # type: ignore[arg-type]
                    ipc=ns.ipc,  # type: ignore[arg-type]
                    target_id=ns.target_id,
                )
            )
        ),
        labels=s.spec.labels,
        annotations=s.spec.annotations,
        runtime_handler=s.spec.runtime_handler,
    )


def _image_spec(c: m.Container) -> pb.ImageSpec:
    return pb.ImageSpec(
        image=c.image_name or c.spec.image,
        annotations=c.spec.image_annotations,
        user_specified_image=c.spec.user_specified_image or c.spec.image,
    )


def container_to_pb(c: m.Container) -> pb.Container:
    return pb.Container(
        id=c.id,
        pod_sandbox_id=c.sandbox_id,
        metadata=pb.ContainerMetadata(name=c.metadata.name, attempt=c.metadata.attempt),
        image=_image_spec(c),
        image_ref=c.image_ref,
        state=int(c.state),  # type: ignore[arg-type]
        created_at=c.created_at,
        labels=c.spec.labels,
        annotations=c.spec.annotations,
        image_id=c.image_ref,
    )


def container_status_to_pb(c: m.Container) -> pb.ContainerStatus:
    return pb.ContainerStatus(
        id=c.id,
        metadata=pb.ContainerMetadata(name=c.metadata.name, attempt=c.metadata.attempt),
        state=int(c.state),  # type: ignore[arg-type]
        created_at=c.created_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        exit_code=c.exit_code,
        image=_image_spec(c),
        image_ref=c.repo_digest or c.image_ref,
        reason=c.reason,
        message=c.message,
        labels=c.spec.labels,
        annotations=c.spec.annotations,
        mounts=[
            pb.Mount(
                container_path=mt.container_path,
                host_path=mt.host_path,
                readonly=mt.readonly,
                selinux_relabel=mt.selinux_relabel,
                propagation=mt.propagation,  # type: ignore[arg-type]
                image=pb.ImageSpec(image=mt.image, image_ref=mt.image_ref) if mt.image else None,
                image_sub_path=mt.image_sub_path,
            )
            for mt in c.spec.mounts
        ],
        log_path=c.log_path,
        image_id=c.image_ref,
    )


def image_to_pb(img: m.Image) -> pb.Image:
    out = pb.Image(
        id=img.id,
        repo_tags=img.repo_tags,
        repo_digests=img.repo_digests,
        size=img.size,
        username=img.username,
        pinned=img.pinned,
        spec=pb.ImageSpec(image=img.id, annotations=img.annotations),
    )
    if img.uid is not None:
        out.uid.value = img.uid
    return out


def fs_usage_to_pb(u: m.FilesystemUsage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(
        timestamp=u.timestamp,
        fs_id=pb.FilesystemIdentifier(mountpoint=u.mountpoint),
        used_bytes=pb.UInt64Value(value=u.used_bytes),
        inodes_used=pb.UInt64Value(value=u.inodes_used),
    )


def stats_to_pb(s: m.ContainerStats) -> pb.ContainerStats:
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(
            id=s.container_id,
            metadata=pb.ContainerMetadata(name=s.metadata.name, attempt=s.metadata.attempt),
            labels=s.labels,
            annotations=s.annotations,
        ),
        cpu=pb.CpuUsage(
            timestamp=s.timestamp,
            usage_core_nano_seconds=pb.UInt64Value(value=s.cpu_usage_core_nanoseconds),
        ),
        memory=pb.MemoryUsage(
            timestamp=s.timestamp,
            working_set_bytes=pb.UInt64Value(value=s.memory_working_set_bytes),
        ),
        writable_layer=fs_usage_to_pb(
            m.FilesystemUsage(s.timestamp, "", s.writable_layer_bytes, s.writable_layer_inodes)
        ),
    )


def with_handler(spec: m.PodSandboxSpec, handler: str) -> m.PodSandboxSpec:
    """The sandbox spec with the RunPodSandboxRequest's runtime handler."""
    return replace(spec, runtime_handler=handler)


def auth_from_pb(a: pb.AuthConfig) -> dict[str, str]:
    """PullImage's credentials, only those given."""
    return {
        k: v
        for k, v in (
            ("username", a.username),
            ("password", a.password),
            ("auth", a.auth),
            ("server_address", a.server_address),
            ("identity_token", a.identity_token),
            ("registry_token", a.registry_token),
        )
        if v
    }


def version_to_pb(info: m.VersionInfo) -> pb.VersionResponse:
    return pb.VersionResponse(
        version=KUBELET_API_VERSION,
        runtime_name=info.runtime_name,
        runtime_version=info.runtime_version,
        runtime_api_version=info.runtime_api_version,
    )


def status_to_pb(st: m.RuntimeStatus, *, verbose: bool) -> pb.StatusResponse:
    """The runtime's conditions and handlers; its info map only when ``verbose``."""
    return pb.StatusResponse(
        status=pb.RuntimeStatus(
            conditions=[
                pb.RuntimeCondition(
                    type=c.type, status=c.status, reason=c.reason, message=c.message
                )
                for c in st.conditions
            ]
        ),
        info=st.info if verbose else {},
        runtime_handlers=[pb.RuntimeHandler(name=h) for h in st.handlers],
    )


def sandbox_stats_to_pb(
    sandbox: m.PodSandbox, containers: Sequence[m.ContainerStats], now: int
) -> pb.PodSandboxStats:
    """A pod's usage as the sum of its running containers' (the runtimes keep no pod
    cgroup of their own), with each container's stats beside it."""
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(
            id=sandbox.id,
            metadata=sandbox_metadata_to_pb(sandbox.metadata),
            labels=sandbox.spec.labels,
            annotations=sandbox.spec.annotations,
        ),
        linux=pb.LinuxPodSandboxStats(
            cpu=pb.CpuUsage(
                timestamp=now,
                usage_core_nano_seconds=pb.UInt64Value(
                    value=sum(c.cpu_usage_core_nanoseconds for c in containers)
                ),
            ),
            memory=pb.MemoryUsage(
                timestamp=now,
                working_set_bytes=pb.UInt64Value(
                    value=sum(c.memory_working_set_bytes for c in containers)
                ),
            ),
            containers=[stats_to_pb(c) for c in containers],
        ),
    )


def event_to_pb(event: m.ContainerEvent) -> pb.ContainerEventResponse:
    return pb.ContainerEventResponse(
        container_id=event.container_id,
        container_event_type=int(event.type),  # type: ignore[arg-type]
        created_at=event.created_at,
        pod_sandbox_status=(sandbox_status_to_pb(event.sandbox) if event.sandbox else None),
        containers_statuses=[container_status_to_pb(c) for c in event.containers],
    )
