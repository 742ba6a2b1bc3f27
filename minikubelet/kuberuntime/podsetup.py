"""Everything a pod needs before and around its CRI calls, for :class:`KubeRuntimeManager`.

It joins the pure converters (:mod:`minikubelet.kuberuntime.convert`,
:mod:`minikubelet.kuberuntime.envvars`) with the host-side work: volumes, log
directories, termination message files, lifecycle hooks and the prober's
results, so the manager sees one small interface for each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from minikubelet.api.pod import Container, Pod
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kubeapi.objects import ObjectSource
from minikubelet.kuberuntime import convert, envvars
from minikubelet.kuberuntime.manager import ContainerConfigError
from minikubelet.lifecycle.hooks import run_handler
from minikubelet.prober.manager import ProbeManager
from minikubelet.prober.probe import ExecRunner
from minikubelet.types import PodUID
from minikubelet.volumes.etchosts import HostsFile
from minikubelet.volumes.manager import VolumeError, VolumeManager

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")


def host_dns(node_ip: str) -> convert.DNSSettings:
    """The node's resolver settings, as pods with the Default DNS policy get them."""
    try:
        text = RESOLV_CONF.read_text()
    except OSError:
        return convert.DNSSettings(resolv_conf=False, node_ips=(node_ip,))
    servers, searches, options = convert.parse_resolv_conf(text)
    return convert.DNSSettings(
        host_servers=tuple(servers),
        host_searches=tuple(searches),
        host_options=tuple(options),
        node_ips=(node_ip,),
    )


class PodEvents(Protocol):
    """Where warnings about a pod go (the kubelet's event recorder)."""

    def pod_event(
        self, pod: Any, type_: str, reason: str, message: str, *, field_path: str = ""
    ) -> None: ...


class PodSetup:
    """``objects`` (API server mode) gives the ConfigMaps, Secrets and tokens that volumes
    and env read, see :meth:`use_objects`; ``events`` takes the warnings about skipped
    env names."""

    def __init__(
        self,
        *,
        root_dir: Path,
        log_root: Path,
        node_name: str,
        host_ip: str,
        exec_runner: ExecRunner,
        cgroup_parent: str = "",
        objects: ObjectSource | None = None,
        events: PodEvents | None = None,
    ) -> None:
        self.root_dir = root_dir
        self.log_root = log_root
        self.node_name = node_name
        self.host_ip = host_ip
        self.cgroup_parent = cgroup_parent
        self.volumes = VolumeManager(root_dir, objects=objects)
        self.objects = objects
        self.events = events
        self._exec_runner = exec_runner
        self._dns: convert.DNSSettings | None = None
        self._volume_paths: dict[PodUID, dict[str, Path]] = {}
        self._termination_files: dict[tuple[PodUID, str], Path] = {}

    def use_objects(self, objects: ObjectSource, events: PodEvents | None = None) -> None:
        """Read ConfigMaps, Secrets and tokens from ``objects`` from now on (API server
        mode); the volume manager's :meth:`~VolumeManager.run` keeps their files current."""
        self.objects = objects
        self.volumes.objects = objects
        if events is not None:
            self.events = events

    # -- ConfigSource ------------------------------------------------------------

    def sandbox_config(self, pod: Pod, attempt: int) -> pb.PodSandboxConfig:
        if self._dns is None:
            self._dns = host_dns(self.host_ip)
        try:
            return convert.sandbox_config(
                pod,
                attempt,
                log_root=str(self.log_root),
                cgroup_parent=self.cgroup_parent,
                dns=self._dns,
            )
        except envvars.ConfigError as exc:
            raise ContainerConfigError(exc.message, exc.reason) from None

    async def prepare_pod(self, pod: Pod, pod_ips: Sequence[str]) -> None:
        await asyncio.to_thread(
            Path(convert.pod_log_dir(pod, str(self.log_root))).mkdir,
            parents=True,
            exist_ok=True,
            mode=0o755,
        )
        if pod.uid in self._volume_paths:
            self.volumes.note_pod(pod)  # new labels reach its downward API files
            return
        try:
            self._volume_paths[pod.uid] = await self.volumes.setup(
                pod,
                pod_ip=pod_ips[0] if pod_ips else "",
                host_ip=self.host_ip,
                node_name=self.node_name,
            )
        except VolumeError as exc:
            raise ContainerConfigError(exc.message, exc.reason) from None

    async def container_config(
        self,
        pod: Pod,
        container: Container,
        *,
        restart_count: int,
        image: str,
        pod_ips: Sequence[str],
        image_volumes: Mapping[str, pb.ImageSpec] | None = None,
    ) -> pb.ContainerConfig:
        try:
            found = None
            if self.objects is not None:
                found = await envvars.fetch_env_objects(pod, container, self.objects)

            def warn(reason: str, message: str) -> None:
                if self.events is not None:
                    self.events.pod_event(pod, "Warning", reason, message)

            env = envvars.make_environment(
                pod,
                container,
                pod_ips=pod_ips,
                host_ips=(self.host_ip,),
                node_name=self.node_name,
                objects=found,
                warn=warn,
            )
            mounts = await self.volumes.make_mounts(
                pod,
                container,
                self._volume_paths.get(pod.uid, {}),
                env=env,
                hosts=self._hosts_file(pod, pod_ips),
                image_volumes=image_volumes or {},
            )
            if mounts.termination_message_path is not None:
                self._termination_files[(pod.uid, container.name)] = mounts.termination_message_path
            await asyncio.to_thread(
                Path(convert.container_log_dir(pod, container, str(self.log_root))).mkdir,
                parents=True,
                exist_ok=True,
                mode=0o755,
            )
            return convert.container_config(
                pod,
                container,
                restart_count=restart_count,
                image=image,
                env=env,
                mounts=mounts.mounts,
                seccomp_profile_root=str(self.root_dir / "seccomp"),
            )
        except (envvars.ConfigError, VolumeError) as exc:
            raise ContainerConfigError(exc.message, exc.reason) from None

    def _hosts_file(self, pod: Pod, pod_ips: Sequence[str]) -> HostsFile | None:
        """What the pod's ``/etc/hosts`` says; None before the pod has an IP (then the
        kubelet mounts none), except on the host network."""
        if not pod_ips and not pod.spec.host_network:
            return None
        if self._dns is None:
            self._dns = host_dns(self.host_ip)
        try:
            hostname, domain = convert.pod_hostname_and_domain(pod, self._dns.cluster_domain)
        except ValueError as err:
            raise envvars.ConfigError(
                f"pod {pod}: {err}", reason=envvars.CREATE_CONTAINER_CONFIG_ERROR
            ) from None
        return HostsFile(
            ips=tuple(pod_ips),
            hostname=hostname,
            domain=domain,
            host_aliases=pod.spec.host_aliases,
            host_network=pod.spec.host_network,
        )

    def termination_message_host_path(self, pod: Pod, container: Container) -> Path | None:
        return self._termination_files.get((pod.uid, container.name))

    async def cleanup_pod(self, uid: PodUID) -> None:
        self._volume_paths.pop(uid, None)
        for key in [k for k in self._termination_files if k[0] == uid]:
            del self._termination_files[key]
        try:
            await self.volumes.teardown(str(uid))
        except VolumeError as exc:
            log.warning("uid=%s: volumes not cleaned up: %s", uid, exc)

    def container_log_path(self, pod: Pod, container: str, restart_count: int) -> Path:
        return (
            Path(convert.pod_log_dir(pod, str(self.log_root)))
            / container
            / (f"{restart_count}.log")
        )

    # -- HookRunner --------------------------------------------------------------

    async def run(
        self,
        pod: Pod,
        container: Container,
        container_id: str,
        handler: Mapping[str, Any],
        pod_ips: Sequence[str],
        timeout: float,
    ) -> str | None:
        return await run_handler(
            handler,
            container_id=container_id,
            pod_ip=pod_ips[0] if pod_ips else self.host_ip,
            container_ports=container.ports,
            exec_runner=self._exec_runner,
            timeout=timeout,
            pod=pod,
            container_name=container.name,
        )

    # -- ProbeResults ------------------------------------------------------------

    def probe_results(self, prober: ProbeManager) -> ProberResults:
        return ProberResults(prober)


class ProberResults:
    """The prober's answers in the shape the manager asks for them."""

    def __init__(self, prober: ProbeManager) -> None:
        self._prober = prober

    def liveness_failed(self, uid: PodUID) -> set[str]:
        return self._prober.liveness_failed(uid)

    def startup_failed(self, uid: PodUID) -> set[str]:
        return self._prober.startup_failed(uid)

    def startup_succeeded(self, uid: PodUID) -> set[str] | None:
        return self._prober.startup_succeeded(uid)

    def container_started(self, pod: Pod, name: str, container_id: str) -> None:
        self._prober.update_container(pod, name, container_id)

    def container_stopped(self, pod: Pod, name: str) -> None:
        self._prober.update_container(pod, name, None)
