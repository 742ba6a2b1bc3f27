"""CRI semantics over dockerd: sandboxes as infra containers, containers beside them.

The server keeps no state of its own beyond the log copiers of running
containers: every answer is read from dockerd, and everything the CRI reports
was written into the Docker labels at creation (:mod:`runtimes.docker.labels`).
A restarted server therefore knows everything its predecessor knew, and resumes
copying the logs of the containers still running (or that ended meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from minikubelet.errors import (
    AlreadyExists,
    CRIError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from runtimes.base import core, netns
from runtimes.base import model as m
from runtimes.base.names import container_name_reserved, sandbox_name_reserved
from runtimes.docker import dockerconfig
from runtimes.docker import labels as lb
from runtimes.docker.client import ContainerInspect, ContainerSummary, DockerClient, docker_time_ns
from runtimes.docker.convert import RUNNING_STATES, Decoder, is_running, labels_of
from runtimes.docker.copiers import LogCopiers
from runtimes.docker.images import DockerImages
from runtimes.docker.pause import PauseImage
from runtimes.docker.streaming import DockerAttach, DockerExec
from runtimes.native.oci.devices import list_host_devices
from runtimes.native.oci.host import capabilities_from_mask, parse_status_mask

log = logging.getLogger(__name__)

RUNTIME_NAME: Final = "docker"
NOT_AVAILABLE: Final = "DockerDaemonNotAvailable"
SANDBOX_STOP_TIMEOUT: Final = 10  # seconds of SIGTERM for the infra container (pause exits at once)
_UNKNOWN_CAPABILITY: Final = re.compile(r'unknown capability:? "?(CAP_[A-Z_]+)')


def _in_cgroup_of(pid: int, container_id: str) -> bool:
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _host_privileges(pid: int | None, *, devices: bool) -> dockerconfig.HostPrivileges:
    """The bounding set runc gets (dockerd's, else ours) and, if asked, the host's devices."""
    capabilities: tuple[str, ...] = ()
    for who in (pid, None) if pid else (None,):
        try:
            status = Path(f"/proc/{who or 'self'}/status").read_text()
            capabilities = capabilities_from_mask(parse_status_mask(status))
            break
        except (OSError, ValueError):
            continue
    found = tuple(d.path for d in list_host_devices()) if devices else ()
    return dockerconfig.HostPrivileges(capabilities, found)


def _oom_score_adj_of(pid: int | None) -> int | None:
    try:
        return int(Path(f"/proc/{pid or 'self'}/oom_score_adj").read_text().strip())
    except (OSError, ValueError):
        return None


class DockerRuntime:
    """RuntimeService semantics on dockerd. Call :meth:`run` before starting containers."""

    def __init__(
        self,
        client: DockerClient,
        images: DockerImages,
        *,
        pause: PauseImage,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self.images = images
        self.pause = pause
        self._now = clock
        self._logs = LogCopiers(client)
        self._decode = Decoder()
        #: Capabilities of the bounding set that dockerd refused as unknown.
        self._unknown_caps: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the log copiers until cancelled; resume those a previous server left."""
        async with asyncio.TaskGroup() as tg:
            with self._logs.running_in(tg):
                tg.create_task(self._resume_logs(), name="docker-resume-logs")
                await asyncio.Future()

    async def _resume_logs(self) -> None:
        try:
            await self._resume_copiers()
        finally:
            self._logs.resumed()

    async def _resume_copiers(self) -> None:
        delay = 0.2
        while True:
            try:
                containers = await self._list_containers(m.ContainerFilter(), settle=False)
                break
            except Unavailable as exc:
                log.info("waiting for dockerd to resume log copying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for c in containers:
            if not c.log_path or c.state == m.ContainerState.CREATED:
                continue
            exists = await asyncio.to_thread(os.path.exists, c.log_path)
            if c.state == m.ContainerState.EXITED and not exists:
                continue  # its log is gone (removed by the kubelet): nothing to add to
            self._logs.start(c.id, c.log_path, tty=c.spec.tty)
        if containers:
            log.info("resumed log copying for %d containers", len(self._logs))

    # -- runtime ---------------------------------------------------------------------------

    async def version(self) -> m.VersionInfo:
        version = await self._client.version()
        return m.VersionInfo(RUNTIME_NAME, str(version.get("Version", "")), "v1")

    async def status(self) -> m.RuntimeStatus:
        try:
            info = await self._client.info()
        except Unavailable as exc:
            return m.RuntimeStatus(
                conditions=(
                    m.Condition("RuntimeReady", False, NOT_AVAILABLE, exc.message),
                    m.Condition("NetworkReady", False, NOT_AVAILABLE, exc.message),
                ),
                handlers=("",),
            )
        runtimes = sorted((info.get("Runtimes") or {}).keys())
        config = {
            "dockerHost": self._client.host,
            "serverVersion": info.get("ServerVersion", ""),
            "dockerRootDir": info.get("DockerRootDir", ""),
            "cgroupDriver": info.get("CgroupDriver", ""),
            "pauseImage": self.pause.tag,
            "registryMirrors": {h: mr.location for h, mr in self.images.mirrors.items()},
        }
        return m.RuntimeStatus(
            conditions=(m.Condition("RuntimeReady", True), m.Condition("NetworkReady", True)),
            handlers=("", *runtimes),
            info={"config": json.dumps(config, sort_keys=True)},
        )

    async def cgroup_driver(self) -> int:
        info = await self._client.info()
        return 0 if info.get("CgroupDriver") == "systemd" else 1

    async def update_runtime_config(self, pod_cidr: str) -> None:
        return None  # pods get their addresses from Docker's bridge network

    # -- reading objects back from dockerd -------------------------------------------------

    async def _inspect(self, object_id: str, kind: str) -> ContainerInspect:
        """A sandbox (kind ``sandbox``) or container of ours by ID or unique ID prefix."""
        missing = core.Missing(core.SANDBOX if kind == lb.SANDBOX else core.CONTAINER, object_id)
        if not core.could_be_id(object_id):
            raise missing
        try:
            raw = await self._client.inspect_container(object_id)
        except NotFound:
            raise missing from None
        full_id = str(raw.get("Id", ""))
        if not full_id.startswith(object_id) or not self._decode.ours(
            full_id, labels_of(raw), kind
        ):
            raise missing  # a name, or someone else's container
        return raw

    # -- sandboxes -------------------------------------------------------------------------

    async def run_pod_sandbox(self, spec: m.PodSandboxSpec) -> str:
        md = spec.metadata
        image_id = await self.pause.ensure()
        name = lb.sandbox_name(md)
        labels = lb.sandbox_labels(spec, self._now())

        def build(host: dockerconfig.HostPrivileges) -> dict[str, Any]:
            return dockerconfig.sandbox_body(spec, image=image_id, labels=labels, host=host)

        host = await self._host(privileged=spec.privileged, adds=False)
        try:
            sandbox_id = await self._create(name, build, host, explicit=())
        except AlreadyExists:
            raise sandbox_name_reserved(md, await self._holder(name)) from None
        try:
            await self._client.start_container(sandbox_id)
        except BaseException as exc:
            # nothing half-created: a sandbox that did not start is not a sandbox
            with contextlib.suppress(CRIError):
                await asyncio.shield(self._client.remove_container(sandbox_id))
            if isinstance(exc, CRIError):
                raise type(exc)(
                    f"pod sandbox {md.namespace}/{md.name}: starting its infra container "
                    f"failed: {exc.message}"
                ) from None
            raise
        log.info("sandbox %s for pod %s/%s is ready", sandbox_id[:13], md.namespace, md.name)
        return sandbox_id

    async def _holder(self, name: str) -> str:
        try:
            return str((await self._client.inspect_container(name)).get("Id", name))
        except CRIError:
            return name

    async def _sandbox_containers(self, sandbox_id: str) -> list[ContainerSummary]:
        return await self._client.list_containers(
            {"label": [f"{lb.TYPE}={lb.CONTAINER}", f"{lb.SANDBOX_ID}={sandbox_id}"]}
        )

    @core.idempotent
    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        raw = await self._inspect(sandbox_id, lb.SANDBOX)
        full_id = str(raw.get("Id"))
        containers = await self._sandbox_containers(full_id)
        await asyncio.gather(
            *(self._kill(str(c.get("Id"))) for c in containers if c.get("State") in RUNNING_STATES)
        )
        if is_running(raw):
            with contextlib.suppress(NotFound):
                await self._client.stop_container(full_id, SANDBOX_STOP_TIMEOUT)
            log.info("sandbox %s stopped", full_id[:13])

    @core.idempotent
    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        raw = await self._inspect(sandbox_id, lb.SANDBOX)
        full_id = str(raw.get("Id"))
        for c in await self._sandbox_containers(full_id):
            await self.remove_container(str(c.get("Id")))
        with contextlib.suppress(NotFound):
            await self._client.remove_container(full_id)
        self._decode.forget(full_id)
        log.info("sandbox %s removed", full_id[:13])

    async def pod_sandbox_status(self, sandbox_id: str) -> m.PodSandbox:
        return self._decode.sandbox(await self._inspect(sandbox_id, lb.SANDBOX))

    async def list_pod_sandbox(self, filter: m.SandboxFilter) -> Sequence[m.PodSandbox]:
        labels = [f"{lb.TYPE}={lb.SANDBOX}", *lb.selector(filter.label_selector)]
        summaries = await self._client.list_containers({"label": labels})
        table = {
            s.id: s
            for s in (
                self._decode.sandbox(raw)
                for raw in summaries
                if self._decode.ours(str(raw.get("Id", "")), labels_of(raw), lb.SANDBOX)
            )
        }
        return core.filter_sandboxes(table, filter)

    # -- containers ------------------------------------------------------------------------

    async def create_container(
        self, sandbox_id: str, spec: m.ContainerSpec, sandbox_spec: m.PodSandboxSpec | None
    ) -> str:
        sandbox = core.require_ready(
            self._decode.sandbox(await self._inspect(sandbox_id, lb.SANDBOX))
        )
        lb.check_user_labels(spec.labels, "ContainerConfig")
        dockerconfig.binds(spec.mounts)  # refuse a bad mount before anything is made
        resolved = await self.images.resolve(spec.image)
        if resolved is None:
            raise core.image_not_pulled(spec.image)
        log_path = m.container_log_path(sandbox.spec.log_directory, spec.log_path)
        name = lb.container_name(spec.metadata, sandbox.metadata)
        container_labels = lb.container_labels(
            spec,
            sandbox_id=sandbox.id,
            log_path=log_path,
            image_name=resolved.name,
            repo_digest=resolved.repo_digest,
            created_ns=self._now(),
        )
        oom_floor = await self._oom_floor()

        def build(host: dockerconfig.HostPrivileges) -> dict[str, Any]:
            return dockerconfig.container_body(
                spec,
                infra_id=sandbox.id,
                sandbox=sandbox.spec,
                image=resolved.id,
                labels=container_labels,
                oom_floor=oom_floor,
                host=host,
            )

        sec = spec.security
        host = await self._host(privileged=sec.privileged, adds=bool(sec.add_capabilities))
        build(host)  # refuse a bad config before the log file is made
        if log_path:
            try:
                await asyncio.to_thread(core.create_log_file, log_path)
            except OSError as exc:
                raise InvalidArgument(f"cannot create the log file {log_path}: {exc}") from None
        explicit = [dockerconfig.cap_name(c) for c in sec.add_capabilities]
        try:
            container_id = await self._create(name, build, host, explicit=explicit)
        except AlreadyExists:
            holder = await self._holder(name)
            raise container_name_reserved(spec.metadata, sandbox.id, holder) from None
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"container {spec.metadata.name!r}: dockerd refused it: {exc.message}"
            ) from None
        return container_id

    async def _host(self, *, privileged: bool, adds: bool) -> dockerconfig.HostPrivileges:
        """What privileged (devices too) or added capabilities are checked against."""
        if not privileged and not adds:
            return dockerconfig.HostPrivileges()
        pid = await self._client.daemon_pid()
        host = await asyncio.to_thread(_host_privileges, pid, devices=privileged)
        return dockerconfig.HostPrivileges(
            tuple(c for c in host.capabilities if c not in self._unknown_caps), host.devices
        )

    async def _create(
        self,
        name: str,
        build: Callable[[dockerconfig.HostPrivileges], dict[str, Any]],
        host: dockerconfig.HostPrivileges,
        *,
        explicit: Sequence[str],
    ) -> str:
        """Create the container; a capability of the bounding set dockerd does not know
        (a dockerd older than the kernel) is left out of privileged and ALL, and remembered.
        One the client named itself is dockerd's refusal to give."""
        while True:
            try:
                return await self._client.create_container(name, build(host))
            except InvalidArgument as exc:
                found = _UNKNOWN_CAPABILITY.search(exc.message)
                cap = found.group(1) if found else ""
                if cap not in host.capabilities or cap in explicit:
                    raise
                log.info("dockerd does not know %s: privileged and ALL go without it", cap)
                self._unknown_caps.add(cap)
                host = dockerconfig.HostPrivileges(
                    tuple(c for c in host.capabilities if c != cap), host.devices
                )

    async def _oom_floor(self) -> int | None:
        """The lowest oom_score_adj a container may get: the daemon's own (or ours)."""
        pid = await self._client.daemon_pid()
        return _oom_score_adj_of(pid) if pid else _oom_score_adj_of(None)

    async def start_container(self, container_id: str) -> None:
        raw = await self._inspect(container_id, lb.CONTAINER)
        container = core.require_created(self._decode.container_from_inspect(raw))
        core.require_serving(self._logs.serving, "docker")
        try:
            infra = await self._inspect(container.sandbox_id, lb.SANDBOX)
        except NotFound:
            raise FailedPrecondition(f"pod sandbox {container.sandbox_id} is gone") from None
        if not is_running(infra):
            raise core.sandbox_not_ready(container.sandbox_id)
        try:
            await self._client.start_container(container.id)
        except CRIError as exc:
            raise type(exc)(f"starting container {container.id}: {exc.message}") from None
        if container.log_path:
            self._logs.start(container.id, container.log_path, tty=container.spec.tty)

    async def _kill(self, container_id: str) -> None:
        with contextlib.suppress(NotFound, FailedPrecondition):
            await self._client.kill_container(container_id, "SIGKILL")
        with contextlib.suppress(NotFound):
            await self._client.wait_container(container_id, timeout=30)

    @core.idempotent
    async def stop_container(self, container_id: str, timeout: int) -> None:
        raw = await self._inspect(container_id, lb.CONTAINER)
        full_id = str(raw.get("Id"))
        if (raw.get("State") or {}).get("Status") not in RUNNING_STATES:
            return
        if timeout <= 0:
            await self._kill(full_id)
        else:
            with contextlib.suppress(NotFound):
                await self._client.stop_container(full_id, timeout)
        await self._logs.settle(full_id)

    @core.idempotent
    async def remove_container(self, container_id: str) -> None:
        raw = await self._inspect(container_id, lb.CONTAINER)
        full_id = str(raw.get("Id"))
        if (raw.get("State") or {}).get("Status") in RUNNING_STATES:
            await self._kill(full_id)
            await self._logs.settle(full_id)
        await self._logs.stop(full_id)
        with contextlib.suppress(NotFound):
            await self._client.remove_container(full_id)
        self._decode.forget(full_id)

    async def container_status(self, container_id: str) -> m.Container:
        raw = await self._inspect(container_id, lb.CONTAINER)
        container = self._decode.container_from_inspect(raw)
        if container.state == m.ContainerState.EXITED:
            await self._logs.settle(container.id)
        return container

    async def list_containers(self, filter: m.ContainerFilter) -> Sequence[m.Container]:
        return await self._list_containers(filter, settle=True)

    async def _list_containers(
        self, filter: m.ContainerFilter, *, settle: bool
    ) -> list[m.Container]:
        labels = [f"{lb.TYPE}={lb.CONTAINER}", *lb.selector(filter.label_selector)]
        if filter.pod_sandbox_id:
            sandbox_id = filter.pod_sandbox_id
            if len(sandbox_id) < 64:
                try:
                    sandbox_id = str((await self._inspect(sandbox_id, lb.SANDBOX)).get("Id"))
                except NotFound:
                    return []
            labels.append(f"{lb.SANDBOX_ID}={sandbox_id}")
        summaries = {
            str(raw.get("Id", "")): raw
            for raw in await self._client.list_containers({"label": labels})
            if self._decode.ours(str(raw.get("Id", "")), labels_of(raw), lb.CONTAINER)
        }
        if filter.id:
            found = m.find_by_id(summaries, filter.id)
            summaries = {} if found is None else {str(found.get("Id")): found}
        table: dict[str, m.Container] = {}
        for object_id, raw in summaries.items():
            if raw.get("State") == "created":
                # one that failed to start says so only when inspected
                try:
                    inspected = await self._client.inspect_container(object_id)
                except NotFound:
                    continue  # removed meanwhile
                table[object_id] = self._decode.container_from_inspect(inspected)
            else:
                table[object_id] = self._decode.container_from_summary(raw)
        # the id and the sandbox were matched above (dockerd knows sandboxes by full id)
        out = core.filter_containers(table, replace(filter, id="", pod_sandbox_id=""))
        if settle:
            # an exited container is listed once its output is all in its log file
            await asyncio.gather(
                *(self._logs.settle(c.id) for c in out if c.state == m.ContainerState.EXITED)
            )
        return out

    async def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: int) -> m.ExecResult:
        raw = await self._running_container(container_id)
        full_id = str(raw.get("Id"))
        exec_id = await self._client.create_exec(full_id, cmd)
        try:
            async with asyncio.timeout(timeout if timeout > 0 else None):
                stdout, stderr = await self._client.start_exec(exec_id)
                exit_code = await self._exec_exit_code(exec_id)
        except TimeoutError:
            await self._kill_exec(exec_id, full_id)
            raise core.exec_timed_out(cmd, timeout, full_id) from None
        return m.ExecResult(stdout, stderr, exit_code)

    async def _exec_exit_code(self, exec_id: str) -> int:
        delay = 0.005
        while True:
            info = await self._client.inspect_exec(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info.get("ExitCode") or 0)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _kill_exec(self, exec_id: str, container_id: str) -> None:
        """Docker has no API to kill an exec: signal its process, once sure it is the one.

        dockerd reports the PID in its own PID namespace; the process is killed only if
        this server sees that PID in the container's cgroup (same host, same namespace).
        """
        with contextlib.suppress(CRIError):
            pid = int((await self._client.inspect_exec(exec_id)).get("Pid") or 0)
            if pid > 0 and await asyncio.to_thread(_in_cgroup_of, pid, container_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    # -- streaming (Exec, Attach, PortForward) ----------------------------------------------

    async def _running_container(self, container_id: str) -> ContainerInspect:
        """The inspected container, if its process runs."""
        raw = await self._inspect(container_id, lb.CONTAINER)
        if not is_running(raw):
            raise core.container_not_running(str(raw.get("Id")))
        return raw

    async def _ready_sandbox(self, sandbox_id: str) -> ContainerInspect:
        """The inspected infra container, if it runs (the sandbox is ready)."""
        raw = await self._inspect(sandbox_id, lb.SANDBOX)
        if not is_running(raw):
            raise core.sandbox_not_ready(str(raw.get("Id")))
        return raw

    async def check_exec(self, container_id: str) -> None:
        await self._running_container(container_id)

    async def check_port_forward(self, sandbox_id: str) -> None:
        await self._ready_sandbox(sandbox_id)

    async def exec_stream(
        self, container_id: str, cmd: Sequence[str], *, tty: bool, stdin: bool
    ) -> m.StreamIO:
        """``docker exec``, attached; returns once the process runs (or failed to start)."""
        argv = core.require_command(cmd)
        raw = await self._running_container(container_id)
        return await DockerExec.start(self._client, str(raw.get("Id")), argv, tty=tty, stdin=stdin)

    async def attach_stream(self, container_id: str, *, tty: bool, stdin: bool) -> m.StreamIO:
        """The container's stdio as it was created: its own TTY decides the output framing.

        ``stdin`` joins the container's input only if it was created with one; what
        is written otherwise is dropped.
        """
        raw = await self._running_container(container_id)
        config = raw.get("Config") or {}
        container_tty = bool(config.get("Tty"))
        if tty != container_tty:
            log.debug(
                "attach to %s: tty=%s asked, the container has tty=%s",
                str(raw.get("Id"))[:13],
                tty,
                container_tty,
            )
        return await DockerAttach.open(
            self._client,
            str(raw.get("Id")),
            tty=container_tty,
            stdin=stdin and bool(config.get("OpenStdin")),
            stdin_once=bool(config.get("StdinOnce")),
        )

    async def port_forward_connect(
        self, sandbox_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``localhost:port`` in the network namespace of the infra container.

        A host-network sandbox's infra container is in the node's namespace, so the
        same path reaches the node's localhost.
        """
        raw = await self._ready_sandbox(sandbox_id)
        pid = int((raw.get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            raise FailedPrecondition(f"pod sandbox {raw.get('Id')} has no running process")
        return await netns.connect(f"/proc/{pid}/ns/net", port)

    async def reopen_container_log(self, container_id: str) -> None:
        full_id = str((await self._running_container(container_id)).get("Id"))
        if not await self._logs.reopen(full_id):
            raise FailedPrecondition(f"container {full_id} has no log file to reopen")

    async def _stats(self, container: m.Container) -> m.ContainerStats:
        raw, inspected = await asyncio.gather(
            self._client.container_stats(container.id),
            self._client.inspect_container(container.id, size=True),
        )
        cpu = int(((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)
        memory = raw.get("memory_stats") or {}
        details = memory.get("stats") or {}
        inactive = int(details.get("total_inactive_file", details.get("inactive_file", 0)) or 0)
        usage = int(memory.get("usage") or 0)
        return m.ContainerStats(
            container_id=container.id,
            metadata=container.metadata,
            labels=container.spec.labels,
            annotations=container.spec.annotations,
            timestamp=docker_time_ns(raw.get("read")) or self._now(),
            cpu_usage_core_nanoseconds=cpu,
            memory_working_set_bytes=max(0, usage - inactive),
            writable_layer_bytes=int(inspected.get("SizeRw") or 0),
        )

    async def container_stats(self, container_id: str) -> m.ContainerStats:
        raw = await self._inspect(container_id, lb.CONTAINER)
        return await self._stats(self._decode.container_from_inspect(raw))

    async def list_container_stats(
        self, container_id: str, sandbox_id: str, label_selector: Mapping[str, str]
    ) -> Sequence[m.ContainerStats]:
        found = await self._list_containers(
            m.ContainerFilter(container_id, m.ContainerState.RUNNING, sandbox_id, label_selector),
            settle=False,
        )
        results = await asyncio.gather(*(self._stats(c) for c in found), return_exceptions=True)
        out = []
        for result in results:
            if isinstance(result, NotFound):
                continue  # removed meanwhile
            if isinstance(result, BaseException):
                raise result
            out.append(result)
        return out

    # -- events ----------------------------------------------------------------------------

    async def container_events(self) -> AsyncIterator[m.ContainerEvent]:
        kinds = {
            "create": m.ContainerEventType.CREATED,
            "start": m.ContainerEventType.STARTED,
            "die": m.ContainerEventType.STOPPED,
            "destroy": m.ContainerEventType.DELETED,
        }
        filters = {"type": ["container"], "event": list(kinds), "label": [lb.TYPE]}
        async for event in self._client.events(filters):
            kind = kinds.get(str(event.get("Action", "")))
            attributes: dict[str, Any] = (event.get("Actor") or {}).get("Attributes") or {}
            object_id = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
            if kind is None or not self._decode.ours(
                object_id, attributes, attributes.get(lb.TYPE, "")
            ):
                continue
            created = int(event.get("timeNano") or self._now())
            if attributes.get(lb.TYPE) == lb.SANDBOX:
                sandbox = await self._event_sandbox(object_id, attributes)
                yield m.ContainerEvent(object_id, kind, created, sandbox, ())
                continue
            try:
                container = self._decode.container_from_inspect(
                    await self._client.inspect_container(object_id)
                )
            except NotFound:
                container = self._decode.container_from_summary(
                    {"Id": object_id, "Labels": attributes, "State": "exited"}
                )
            sandbox = await self._event_sandbox(attributes.get(lb.SANDBOX_ID, ""), None)
            yield m.ContainerEvent(object_id, kind, created, sandbox, (container,))

    async def _event_sandbox(
        self, sandbox_id: str, attributes: Mapping[str, str] | None
    ) -> m.PodSandbox | None:
        try:
            return await self.pod_sandbox_status(sandbox_id)
        except NotFound:
            if attributes is None:
                return None
            return self._decode.sandbox({"Id": sandbox_id, "Labels": dict(attributes)})
