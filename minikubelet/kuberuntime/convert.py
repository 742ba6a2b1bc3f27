"""Pod -> CRI: the sandbox and container configs the kubelet sends to the runtime (pure).

These follow the kubelet's ``generatePodSandboxConfig`` (``kuberuntime_sandbox.go``),
``generateContainerConfig`` (``kuberuntime_container.go``) and the Linux parts
(``kuberuntime_container_linux.go``, ``security_context.go``,
``pkg/kubelet/network/dns/dns.go``). Nothing here reads a file, the clock or the
environment: DNS settings of the host, the container's environment and its mounts
are passed in, so every function is table-testable.

The sandbox:

* metadata (name, namespace, uid, attempt), labels and annotations from
  :mod:`.labels`; the log directory ``<log_root>/<namespace>_<name>_<uid>``;
* the hostname, unless the pod uses the host network: ``spec.hostname`` or the pod
  name cut to 63 characters, as ``<hostname>.<subdomain>.<ns>.svc.<domain>`` when
  ``setHostnameAsFQDN`` is set and there is a subdomain;
* DNS from the pod's ``dnsPolicy`` (``ClusterFirst`` without a cluster DNS server
  falls back to ``Default``, the host's resolv.conf; ``None`` starts empty) plus
  ``spec.dnsConfig``, trimmed to the resolver's limits;
* a port mapping for every declared container port (the runtime publishes those
  with a ``hostPort``), de-duplicated as ``MakePortMappings`` does;
* Linux: cgroup parent, sysctls, namespace modes (hostNetwork/hostPID/hostIPC ->
  NODE; shareProcessNamespace -> POD pid, else CONTAINER), run-as user/group,
  supplemental groups (fsGroup first), SELinux options, ``privileged`` when any
  container is privileged, seccomp RuntimeDefault, and the pod's aggregate
  resources (and ``spec.overhead``).

The container: metadata (name, restart count as attempt), image (the resolved
reference plus what the user wrote), command/args expanded from the env, working
dir, env, mounts, labels/annotations (spec hash, restart count...), the log path
``<name>/<restartCount>.log`` relative to the sandbox's log directory,
stdin/stdinOnce/tty, and Linux resources and security context:

* cpu shares from the request (``milliCPU * 1024 / 1000``, at least 2, at most
  262144; the limit stands in for a missing request), a CFS quota from the limit over
  a 100000us period (at least 1000us), the memory limit in bytes;
* the effective security context (container fields over the pod's): capabilities,
  privileged, run-as user/group, read-only rootfs, ``no_new_privs`` when
  ``allowPrivilegeEscalation: false``, masked/read-only /proc paths by ``procMount``,
  seccomp (container, then pod, then ``seccomp_default``: RuntimeDefault or
  Unconfined; Localhost profiles under ``seccomp_profile_root``, the kubelet's
  ``<root-dir>/seccomp``, passed to the runtime as an absolute path), AppArmor.

Errors come out as :class:`~.envvars.ConfigError` carrying the reason the kubelet
reports (``CreatePodSandboxError`` / ``CreateContainerConfigError``).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from minikubelet import resources
from minikubelet.api.pod import Container, Pod
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kuberuntime.envvars import CREATE_CONTAINER_CONFIG_ERROR, ConfigError
from minikubelet.kuberuntime.envvars import command_and_args as _command_and_args
from minikubelet.kuberuntime.labels import (
    new_container_annotations,
    new_container_labels,
    new_pod_annotations,
    new_pod_labels,
)

CREATE_POD_SANDBOX_ERROR: Final = "CreatePodSandboxError"
DEFAULT_LOG_ROOT: Final = "/var/log/pods"
DEFAULT_SECCOMP_PROFILE_ROOT: Final = "/var/lib/kubelet/seccomp"

# pkg/kubelet/cm: cgroup v1 cpu.shares and CFS quota arithmetic.
MIN_SHARES: Final = 2
MAX_SHARES: Final = 262144
SHARES_PER_CPU: Final = 1024
QUOTA_PERIOD: Final = 100000  # microseconds
MIN_QUOTA_PERIOD: Final = 1000

# pkg/apis/core/validation: resolver limits (ExpandedDNSConfig, GA since 1.28).
MAX_DNS_NAMESERVERS: Final = 3
MAX_DNS_SEARCH_PATHS: Final = 32
MAX_DNS_SEARCH_LIST_CHARS: Final = 2048
DNS1123_SUBDOMAIN_MAX_LENGTH: Final = 253
DEFAULT_DNS_OPTIONS: Final = ("ndots:5",)

HOSTNAME_MAX_LEN: Final = 63
FQDN_MAX_LEN: Final = 64

# pkg/securitycontext: what /proc and /sys hide unless procMount is Unmasked.
DEFAULT_MASKED_PATHS: Final = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: Final = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

APPARMOR_ANNOTATION_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"

_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PROTOCOLS: Final = {"TCP": pb.TCP, "UDP": pb.UDP, "SCTP": pb.SCTP}
_PROFILE_TYPES: Final = {
    "RuntimeDefault": pb.SecurityProfile.RuntimeDefault,
    "Unconfined": pb.SecurityProfile.Unconfined,
    "Localhost": pb.SecurityProfile.Localhost,
}
_SUPPLEMENTAL_GROUPS_POLICIES: Final = {"Merge": pb.Merge, "Strict": pb.Strict}


# --- DNS -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DNSSettings:
    """The node's DNS configuration: the kubelet's ``--cluster-dns``, ``--cluster-domain``
    and the parsed ``--resolv-conf`` file (see :func:`parse_resolv_conf`).

    ``resolv_conf=False`` stands for ``--resolv-conf=""``: host-DNS pods then get
    localhost (one entry per node IP family) and the search path ``.``.
    """

    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = ""
    host_servers: tuple[str, ...] = ()
    host_searches: tuple[str, ...] = ()
    host_options: tuple[str, ...] = ()
    resolv_conf: bool = True
    node_ips: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, searches, options) of a resolv.conf text, as the kubelet reads it.

    ``nameserver`` lines accumulate; the last ``search`` and the last ``options`` line
    win; a trailing dot on a search domain is dropped; ``#`` lines are comments.
    """
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.split("\n"):
        trimmed = line.strip()
        if trimmed.startswith("#"):
            continue
        fields = trimmed.split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            servers.append(fields[1])
        elif fields[0] == "search":
            searches = [s.removesuffix(".") for s in fields[1:]]
        elif fields[0] == "options":
            options = fields[1:]
    return servers, searches, options


def _omit_duplicates(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_dns_options(existing: Sequence[str], extra: Sequence[Mapping[str, Any]]) -> list[str]:
    """``mergeDNSOptions``: pod options replace host ones of the same name (order kept)."""
    merged: dict[str, str] = {}
    for text in existing:
        name, _, value = text.partition(":")
        merged[name] = value
    for option in extra:
        extra_value = option.get("value")
        merged[str(option.get("name", ""))] = "" if extra_value is None else str(extra_value)
    return [f"{name}:{value}" if value else name for name, value in merged.items()]


def _dns_type(pod: Pod) -> str:
    policy = pod.spec.dns_policy
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet":
        return "cluster"
    if policy == "ClusterFirst" and not pod.spec.host_network:
        return "cluster"
    if policy in ("ClusterFirst", "Default"):
        return "host"
    return "cluster"  # an unknown policy: the kubelet logs and uses ClusterFirst


def _fit_searches(searches: list[str]) -> list[str]:
    searches = searches[:MAX_DNS_SEARCH_PATHS]
    searches = [s for s in searches if len(s) <= DNS1123_SUBDOMAIN_MAX_LENGTH]
    while searches and len(" ".join(searches)) > MAX_DNS_SEARCH_LIST_CHARS:
        searches.pop()
    return searches


def pod_dns_config(pod: Pod, dns: DNSSettings | None = None) -> pb.DNSConfig:
    """``GetPodDNS``: the resolver configuration of the pod's sandbox."""
    dns = dns or DNSSettings()
    servers = list(dns.host_servers)
    searches = list(dns.host_searches)
    options = list(dns.host_options)
    kind = _dns_type(pod)
    if kind == "none":
        servers, searches, options = [], [], []
    elif kind == "cluster" and dns.cluster_dns:
        servers = list(dns.cluster_dns)
        if dns.cluster_domain:
            domain = dns.cluster_domain
            cluster = [f"{pod.namespace}.svc.{domain}", f"svc.{domain}", domain]
            searches = _omit_duplicates([*cluster, *searches])
        options = list(DEFAULT_DNS_OPTIONS)
    elif not dns.resolv_conf:  # host DNS (also ClusterFirst without a cluster DNS server)
        for ip in dns.node_ips:
            servers.append("::1" if ipaddress.ip_address(ip).version == 6 else "127.0.0.1")
        if not servers:
            servers.append("127.0.0.1")
        searches = ["."]
    extra = pod.spec.dns_config
    if extra:
        servers = _omit_duplicates([*servers, *(str(s) for s in extra.get("nameservers") or ())])
        searches = _omit_duplicates([*searches, *(str(s) for s in extra.get("searches") or ())])
        pod_options = [o for o in extra.get("options") or () if isinstance(o, Mapping)]
        options = _merge_dns_options(options, pod_options)
    return pb.DNSConfig(
        servers=servers[:MAX_DNS_NAMESERVERS],
        searches=_fit_searches(searches),
        options=options,
    )


# --- sandbox -------------------------------------------------------------------------------


def pod_log_dir(pod: Pod, log_root: str = DEFAULT_LOG_ROOT) -> str:
    """``BuildPodLogsDirectory``: ``<log_root>/<namespace>_<name>_<uid>``."""
    return posixpath.join(log_root, f"{pod.namespace}_{pod.name}_{pod.uid}")


def container_log_dir(pod: Pod, container: Container, log_root: str = DEFAULT_LOG_ROOT) -> str:
    """``BuildContainerLogsDirectory``: the directory to create before CreateContainer."""
    return posixpath.join(pod_log_dir(pod, log_root), container.name)


def container_log_path(container: Container, restart_count: int) -> str:
    """``BuildContainerLogsPath``: ``<name>/<restartCount>.log``, relative to the pod's log dir."""
    return posixpath.join(container.name, f"{restart_count}.log")


def _is_dns1123_label(text: str) -> bool:
    return len(text) <= HOSTNAME_MAX_LEN and _DNS1123_LABEL.fullmatch(text) is not None


def pod_hostname_and_domain(pod: Pod, cluster_domain: str = "") -> tuple[str, str]:
    """``GeneratePodHostNameAndDomain``: (hostname, domain); ValueError for a bad label."""
    hostname = pod.name
    if pod.spec.hostname:
        if not _is_dns1123_label(pod.spec.hostname):
            raise ValueError(f"pod Hostname {pod.spec.hostname!r} is not a valid DNS label")
        hostname = pod.spec.hostname
    if len(hostname) > HOSTNAME_MAX_LEN:
        hostname = hostname[:HOSTNAME_MAX_LEN].rstrip("-.")
        if not hostname:
            raise ValueError(f"hostname for pod {pod.name!r} was invalid")
    domain = ""
    if pod.spec.subdomain:
        if not _is_dns1123_label(pod.spec.subdomain):
            raise ValueError(f"pod Subdomain {pod.spec.subdomain!r} is not a valid DNS label")
        domain = f"{pod.spec.subdomain}.{pod.namespace}.svc.{cluster_domain}"
    return hostname, domain


def kernel_hostname(hostname: str, domain: str, set_hostname_as_fqdn: bool | None) -> str:
    """``GetNodenameForKernel``: the FQDN when asked for and there is a domain (<= 64 chars)."""
    if domain and set_hostname_as_fqdn:
        fqdn = f"{hostname}.{domain}"
        if len(fqdn) > FQDN_MAX_LEN:
            raise ValueError(
                f"failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} "
                f"is too long ({FQDN_MAX_LEN} characters is the max, {len(fqdn)} requested)"
            )
        return fqdn
    return hostname


def port_mappings(pod: Pod) -> list[pb.PortMapping]:
    """``MakePortMappings`` over the pod's containers, in order.

    Every declared port is passed (the runtime acts on those with a hostPort); within
    one container a port name (or, unnamed, family/protocol/hostIP/ports) counts once.
    """
    out: list[pb.PortMapping] = []
    for container in pod.spec.containers:
        seen: set[str] = set()
        for port in container.ports:
            family = "any"
            if port.host_ip:
                try:
                    family = "v6" if ipaddress.ip_address(port.host_ip).version == 6 else "v4"
                except ValueError:
                    family = "v4"
            name = port.name or (
                f"{family}-{port.protocol}-{port.host_ip}:{port.container_port}:{port.host_port}"
            )
            if name in seen:
                continue
            seen.add(name)
            out.append(
                pb.PortMapping(
                    protocol=_PROTOCOLS.get(port.protocol, pb.TCP),
                    container_port=port.container_port,
                    host_port=port.host_port,
                    host_ip=port.host_ip,
                )
            )
    return out


def _all_containers(pod: Pod) -> list[Container]:
    return [*pod.spec.init_containers, *pod.spec.containers]


def _is_privileged(container: Container) -> bool:
    return bool((container.security_context or {}).get("privileged"))


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _selinux(options: object) -> pb.SELinuxOption | None:
    if not isinstance(options, Mapping):
        return None
    return pb.SELinuxOption(
        user=str(options.get("user", "")),
        role=str(options.get("role", "")),
        type=str(options.get("type", "")),
        level=str(options.get("level", "")),
    )


def namespace_options(pod: Pod) -> pb.NamespaceOption:
    """``NamespacesForPod``: NODE for host namespaces; pid is per container unless shared."""
    if pod.spec.host_pid:
        pid = pb.NODE
    elif pod.spec.share_process_namespace:
        pid = pb.POD
    else:
        pid = pb.CONTAINER
    return pb.NamespaceOption(
        network=pb.NODE if pod.spec.host_network else pb.POD,
        pid=pid,
        ipc=pb.NODE if pod.spec.host_ipc else pb.POD,
    )


def _supplemental_groups(pod_sc: Mapping[str, Any]) -> list[int]:
    groups: list[int] = []
    fs_group = _int_or_none(pod_sc.get("fsGroup"))
    if fs_group is not None:
        groups.append(fs_group)
    for group in pod_sc.get("supplementalGroups") or ():
        value = _int_or_none(group)
        if value is not None:
            groups.append(value)
    return groups


def _supplemental_groups_policy(pod_sc: Mapping[str, Any]) -> pb.SupplementalGroupsPolicy.ValueType:
    policy = pod_sc.get("supplementalGroupsPolicy")
    if policy is None:
        return pb.Merge
    if policy not in _SUPPLEMENTAL_GROUPS_POLICIES:
        raise ValueError(f"unsupported supplementalGroupsPolicy: {policy}")
    return _SUPPLEMENTAL_GROUPS_POLICIES[policy]


def calculate_linux_resources(
    cpu_request: resources.Quantity | None,
    cpu_limit: resources.Quantity | None,
    memory_limit: resources.Quantity | None,
) -> pb.LinuxContainerResources:
    """``calculateLinuxResources``: cpu shares, CFS quota/period and the memory limit."""
    if cpu_request is None and cpu_limit is not None:
        shares = milli_cpu_to_shares(resources.milli_cpu(cpu_limit))
    else:
        shares = milli_cpu_to_shares(resources.milli_cpu(cpu_request or 0))
    memory = resources.bytes_(memory_limit or 0)
    return pb.LinuxContainerResources(
        cpu_shares=shares,
        memory_limit_in_bytes=memory,
        cpu_period=QUOTA_PERIOD,
        cpu_quota=milli_cpu_to_quota(resources.milli_cpu(cpu_limit or 0), QUOTA_PERIOD),
    )


def milli_cpu_to_shares(milli_cpu: int) -> int:
    """``MilliCPUToShares``: 1024 shares per CPU, clamped to [2, 262144]."""
    if milli_cpu == 0:
        return MIN_SHARES
    shares = milli_cpu * SHARES_PER_CPU // 1000
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def milli_cpu_to_quota(milli_cpu: int, period: int = QUOTA_PERIOD) -> int:
    """``milliCPUToQuota``: 0 (no quota) without a limit, else at least 1000us."""
    if milli_cpu == 0:
        return 0
    return max(MIN_QUOTA_PERIOD, milli_cpu * period // 1000)


def _aggregate(pod: Pod, which: int, name: str) -> resources.Quantity | None:
    """A pod's request (which=0) or limit (which=1) of one resource, as the scheduler sums it.

    Regular containers and sidecars add up; a plain init container runs alone with the
    sidecars started before it, so the pod needs the larger of the two.
    """

    def amount(c: Container) -> resources.Quantity | None:
        return resources.requests_and_limits(c.resources)[which].get(name)

    seen = False
    total = resources.Quantity(0)
    for c in pod.spec.containers:
        value = amount(c)
        if value is not None:
            seen = True
            total += value
    sidecars = resources.Quantity(0)
    init_peak = resources.Quantity(0)
    for c in pod.spec.init_containers:
        value = amount(c)
        if value is None:
            continue
        seen = True
        if c.is_restartable:
            sidecars += value
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + value)
    return max(total + sidecars, init_peak) if seen else None


def sandbox_resources(pod: Pod) -> pb.LinuxContainerResources:
    """``calculateSandboxResources``: the pod's aggregate cpu request/limit and memory limit."""
    return calculate_linux_resources(
        _aggregate(pod, 0, resources.CPU),
        _aggregate(pod, 1, resources.CPU),
        _aggregate(pod, 1, resources.MEMORY),
    )


def sandbox_linux_config(pod: Pod, cgroup_parent: str = "") -> pb.LinuxPodSandboxConfig:
    """``generatePodSandboxLinuxConfig`` plus ``applySandboxResources``."""
    sc = pod.spec.security_context
    security = pb.LinuxSandboxSecurityContext(
        privileged=any(_is_privileged(c) for c in _all_containers(pod)),
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
        namespace_options=namespace_options(pod),
        supplemental_groups=_supplemental_groups(sc),
        supplemental_groups_policy=_supplemental_groups_policy(sc),
    )
    run_as_user = _int_or_none(sc.get("runAsUser"))
    if run_as_user is not None:
        security.run_as_user.value = run_as_user
    run_as_group = _int_or_none(sc.get("runAsGroup"))
    if run_as_group is not None:
        security.run_as_group.value = run_as_group
    selinux = _selinux(sc.get("seLinuxOptions"))
    if selinux is not None:
        security.selinux_options.CopyFrom(selinux)
    sysctls = {
        str(s.get("name")): str(s.get("value", ""))
        for s in sc.get("sysctls") or ()
        if isinstance(s, Mapping)
    }
    config = pb.LinuxPodSandboxConfig(
        cgroup_parent=cgroup_parent,
        security_context=security,
        sysctls=sysctls,
        resources=sandbox_resources(pod),
    )
    overhead = pod.raw.get("spec", {}).get("overhead")
    if isinstance(overhead, Mapping) and overhead:
        ov = resources.resource_list(overhead, "spec.overhead")
        cpu = ov.get(resources.CPU)
        config.overhead.CopyFrom(calculate_linux_resources(cpu, cpu, ov.get(resources.MEMORY)))
    return config


def sandbox_config(
    pod: Pod,
    attempt: int,
    *,
    log_root: str = DEFAULT_LOG_ROOT,
    cgroup_parent: str = "",
    dns: DNSSettings | None = None,
) -> pb.PodSandboxConfig:
    """``generatePodSandboxConfig``: everything RunPodSandbox needs for ``pod``.

    Raises :class:`ConfigError` (reason ``CreatePodSandboxError``) for an invalid
    hostname/subdomain, a too long FQDN, or a malformed security context or quantity.
    """
    try:
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=pod.name, uid=str(pod.uid), namespace=pod.namespace, attempt=attempt
            ),
            log_directory=pod_log_dir(pod, log_root),
            dns_config=pod_dns_config(pod, dns),
            port_mappings=port_mappings(pod),
            labels=new_pod_labels(pod),
            annotations=new_pod_annotations(pod),
            linux=sandbox_linux_config(pod, cgroup_parent),
        )
        if not pod.spec.host_network:
            hostname, domain = pod_hostname_and_domain(pod, dns.cluster_domain if dns else "")
            config.hostname = kernel_hostname(hostname, domain, pod.spec.set_hostname_as_fqdn)
    except ValueError as err:
        raise ConfigError(f"pod {pod}: {err}", reason=CREATE_POD_SANDBOX_ERROR) from None
    return config


# --- container -----------------------------------------------------------------------------

_POD_SC_INHERITED: Final = (
    "seLinuxOptions",
    "windowsOptions",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "seccompProfile",
    "appArmorProfile",
)


def effective_security_context(pod: Pod, container: Container) -> dict[str, Any]:
    """``DetermineEffectiveSecurityContext``: the pod's inheritable fields, container's win."""
    pod_sc = pod.spec.security_context
    effective: dict[str, Any] = {k: pod_sc[k] for k in _POD_SC_INHERITED if k in pod_sc}
    for key, value in (container.security_context or {}).items():
        if value is not None:
            effective[key] = value
    return effective


def _seccomp_profile(
    profile: Mapping[str, Any], profile_root: str, fallback_to_runtime_default: bool
) -> pb.SecurityProfile:
    kind = profile.get("type")
    if kind == "RuntimeDefault":
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    if kind == "Localhost":
        local = profile.get("localhostProfile")
        if not isinstance(local, str) or not local:
            raise ValueError("localhostProfile must be set if seccompProfile type is Localhost.")
        if posixpath.isabs(local) or ".." in local.split("/"):
            raise ValueError(
                f"localhostProfile {local!r} must be a relative path below the seccomp "
                f"profile root {profile_root}, without '..'"
            )
        return pb.SecurityProfile(
            profile_type=pb.SecurityProfile.Localhost,
            localhost_ref=posixpath.join(profile_root, local),
        )
    if kind is None and fallback_to_runtime_default:
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    return pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)


def seccomp_profile(
    pod: Pod,
    container: Container,
    *,
    seccomp_default: bool = False,
    profile_root: str = DEFAULT_SECCOMP_PROFILE_ROOT,
) -> pb.SecurityProfile:
    """``getSeccompProfile``: the container's seccompProfile, else the pod's, else the default.

    The default is RuntimeDefault with the kubelet's ``--seccomp-default``, Unconfined
    without it.
    """
    for sc in (container.security_context or {}, pod.spec.security_context):
        profile = sc.get("seccompProfile")
        if isinstance(profile, Mapping):
            return _seccomp_profile(profile, profile_root, seccomp_default)
    if seccomp_default:
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    return pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)


def apparmor_profile(pod: Pod, container: Container) -> pb.SecurityProfile | None:
    """``getAppArmorProfile``: the field (container, then pod), else the beta annotation."""
    for sc in (container.security_context or {}, pod.spec.security_context):
        profile = sc.get("appArmorProfile")
        if isinstance(profile, Mapping):
            kind = profile.get("type")
            if kind not in _PROFILE_TYPES:
                raise ValueError(f"unknown appArmorProfile type {kind!r}")
            out = pb.SecurityProfile(profile_type=_PROFILE_TYPES[kind])
            if kind == "Localhost":
                local = profile.get("localhostProfile")
                if not isinstance(local, str) or not local:
                    raise ValueError("localhostProfile must be set if appArmorProfile is Localhost")
                out.localhost_ref = local
            return out
    annotation = pod.metadata.annotations.get(APPARMOR_ANNOTATION_PREFIX + container.name)
    if annotation is None:
        return None
    if annotation == "runtime/default":
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    if annotation == "unconfined":
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    if annotation.startswith("localhost/"):
        return pb.SecurityProfile(
            profile_type=pb.SecurityProfile.Localhost,
            localhost_ref=annotation.removeprefix("localhost/"),
        )
    raise ValueError(f"invalid AppArmor profile annotation {annotation!r}")


def container_security_context(
    pod: Pod,
    container: Container,
    *,
    seccomp_default: bool = False,
    seccomp_profile_root: str = DEFAULT_SECCOMP_PROFILE_ROOT,
) -> pb.LinuxContainerSecurityContext:
    """``determineEffectiveSecurityContext`` for Linux."""
    sc = effective_security_context(pod, container)
    if sc.get("runAsNonRoot") is True and _int_or_none(sc.get("runAsUser")) == 0:
        raise ValueError("container's runAsUser breaks non-root policy")
    out = pb.LinuxContainerSecurityContext(
        privileged=bool(sc.get("privileged")),
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        namespace_options=namespace_options(pod),
        seccomp=seccomp_profile(
            pod, container, seccomp_default=seccomp_default, profile_root=seccomp_profile_root
        ),
        supplemental_groups=_supplemental_groups(pod.spec.security_context),
        supplemental_groups_policy=_supplemental_groups_policy(pod.spec.security_context),
    )
    caps = sc.get("capabilities")
    if isinstance(caps, Mapping):
        out.capabilities.CopyFrom(
            pb.Capability(
                add_capabilities=[str(c) for c in caps.get("add") or ()],
                drop_capabilities=[str(c) for c in caps.get("drop") or ()],
            )
        )
    run_as_user = _int_or_none(sc.get("runAsUser"))
    if run_as_user is not None:
        out.run_as_user.value = run_as_user
    run_as_group = _int_or_none(sc.get("runAsGroup"))
    if run_as_group is not None:
        out.run_as_group.value = run_as_group
    selinux = _selinux(sc.get("seLinuxOptions"))
    if selinux is not None:
        out.selinux_options.CopyFrom(selinux)
    if sc.get("procMount") != "Unmasked":
        out.masked_paths.extend(DEFAULT_MASKED_PATHS)
        out.readonly_paths.extend(DEFAULT_READONLY_PATHS)
    apparmor = apparmor_profile(pod, container)
    if apparmor is not None:
        out.apparmor.CopyFrom(apparmor)
    return out


def container_resources(container: Container) -> pb.LinuxContainerResources:
    """``generateLinuxContainerResources`` (cpu shares and quota, memory limit)."""
    requests, limits = resources.requests_and_limits(container.resources)
    return calculate_linux_resources(
        requests.get(resources.CPU), limits.get(resources.CPU), limits.get(resources.MEMORY)
    )


def container_config(
    pod: Pod,
    container: Container,
    *,
    restart_count: int,
    image: str,
    env: Sequence[tuple[str, str]] = (),
    mounts: Sequence[pb.Mount] = (),
    seccomp_default: bool = False,
    seccomp_profile_root: str = DEFAULT_SECCOMP_PROFILE_ROOT,
) -> pb.ContainerConfig:
    """``generateContainerConfig``: everything CreateContainer needs for ``container``.

    ``image`` is the resolved image reference (the image ID or digest the pull
    returned); ``env`` comes from :func:`~.envvars.make_environment` and ``mounts``
    from the volume manager. The log path is relative to the sandbox's log directory
    (create :func:`container_log_dir` first). Raises :class:`ConfigError`.
    """
    try:
        command, args = _command_and_args(container, env)
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=container.name, attempt=restart_count),
            image=pb.ImageSpec(image=image, user_specified_image=container.image),
            command=command,
            args=args,
            working_dir=container.working_dir,
            envs=[pb.KeyValue(key=k, value=v.encode("utf-8", "surrogateescape")) for k, v in env],
            mounts=list(mounts),
            labels=new_container_labels(container, pod),
            annotations=new_container_annotations(container, pod, restart_count),
            log_path=container_log_path(container, restart_count),
            stdin=container.stdin,
            stdin_once=container.stdin_once,
            tty=container.tty,
            linux=pb.LinuxContainerConfig(
                resources=container_resources(container),
                security_context=container_security_context(
                    pod,
                    container,
                    seccomp_default=seccomp_default,
                    seccomp_profile_root=seccomp_profile_root,
                ),
            ),
        )
    except ValueError as err:
        raise ConfigError(
            f"container {container.name}: {err}", reason=CREATE_CONTAINER_CONFIG_ERROR
        ) from None
    return config
