"""The native runtime's CRI semantics: sandboxes and containers on runc, as CRI-O runs them.

A sandbox is a set of pinned namespaces (network through CNI, IPC, UTS, and a
shared PID namespace when the pod asks for one), a /dev/shm tmpfs, and its
resolv.conf, hostname and hosts files. A container is an overlay rootfs over the
image's layers, an OCI bundle generated from the CRI config, and a runc process
supervised by conmon, so it outlives this server. Every change is written to
the state store before the reply; on start the server reads it back and asks
runc and conmon what happened meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from minikubelet.errors import CRIError, FailedPrecondition, InvalidArgument, NotFound
from minikubelet.util import proc
from runtimes.base import core, netns
from runtimes.base import model as m
from runtimes.base.events import ContainerEvents
from runtimes.base.names import NameReservations
from runtimes.native.images.service import NativeImages
from runtimes.native.namespaces import NamespaceManager
from runtimes.native.network import files as sandbox_files
from runtimes.native.network.cni import CNIManager
from runtimes.native.oci import spec as oci_spec
from runtimes.native.oci.host import spec_defaults
from runtimes.native.oci.runtime import ContainerHandle, OCIRuntime
from runtimes.native.oci.user import container_user, resolve_user
from runtimes.native.state import StateStore, from_jsonable, to_jsonable
from runtimes.native.storage import RootfsManager, StorageError, is_mounted
from runtimes.native.streaming import AttachStream, ExecStream

log = logging.getLogger(__name__)

RUNTIME_NAME = "minikubelet-native"
RUNTIME_VERSION = "0.1.0"
NODE, POD, CONTAINER = 2, 0, 1  # the CRI's NamespaceMode
SHM_SIZE = "64m"
MONITOR_PERIOD = 0.5


async def _run(*argv: str) -> None:
    try:
        await proc.run(argv)
    except proc.CommandError as failure:
        raise FailedPrecondition(f"{argv[0]} failed: {failure.output or failure}") from None


class NativeRuntime:
    """RuntimeService semantics over namespaces, CNI, overlay storage and runc + conmon."""

    def __init__(
        self,
        root: Path,
        run_root: Path,
        *,
        images: NativeImages,
        oci: OCIRuntime,
        cni: CNIManager,
        namespaces: NamespaceManager,
    ) -> None:
        self.root = root
        self.run_root = run_root
        self.images = images
        self.oci = oci
        self.cni = cni
        self.namespaces = namespaces
        self.storage = RootfsManager(root)
        self.state = StateStore(root)
        self._sandboxes: dict[str, m.PodSandbox] = {}
        self._containers: dict[str, m.Container] = {}
        self._handles: dict[str, ContainerHandle] = {}
        self._layers: dict[str, list[Path]] = {}
        self._names = NameReservations()
        self._events = ContainerEvents()
        self._locks: dict[str, asyncio.Lock] = {}
        self._write_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._defaults: oci_spec.SpecDefaults | None = None
        self.handlers: dict[str, str] = {}  # handler -> why it is unavailable ("" = usable)

    # -- lifecycle ---------------------------------------------------------------

    def layers_in_use(self) -> list[Path]:
        """Image layers mounted under a container: image GC must keep them."""
        used: list[Path] = []
        for container in self._containers.values():
            used.extend(self._layers.get(container.id, ()))
        return used

    async def start(self) -> None:
        """Load the state, check the OCI runtimes, prepare networking: before serving."""
        for d in (self.root, self.run_root):
            await asyncio.to_thread(d.mkdir, parents=True, exist_ok=True, mode=0o700)
        await self.namespaces.start()
        await self.cni.start()
        self._defaults = await spec_defaults()
        for handler in ("runc", "crun"):
            check = await self.oci.check(handler)
            self.handlers[handler] = "" if check.ok else check.message or "unavailable"
        await self._recover()

    async def run(self) -> None:
        """Watch running containers for exits until cancelled (events and state)."""
        while True:
            await asyncio.sleep(MONITOR_PERIOD)
            for container in list(self._containers.values()):
                if container.state is not m.ContainerState.RUNNING:
                    continue
                try:
                    await self._refresh(container)
                except (CRIError, OSError) as exc:  # one container must not stop the watch
                    log.warning("checking container %s failed: %s", container.id[:13], exc)

    async def _recover(self) -> None:
        for record in await asyncio.to_thread(self.state.load_all, "sandboxes"):
            sandbox = from_jsonable(m.PodSandbox, record)
            self._sandboxes[sandbox.id] = sandbox
            self._names.reserve_sandbox(sandbox.metadata, sandbox.id)
        for record in await asyncio.to_thread(self.state.load_all, "containers"):
            container = from_jsonable(m.Container, record["container"])
            self._containers[container.id] = container
            self._handles[container.id] = ContainerHandle(**record["handle"])
            self._layers[container.id] = [Path(p) for p in record.get("layers", [])]
            self._names.reserve_container(container.sandbox_id, container.metadata, container.id)
        for container in list(self._containers.values()):
            if container.state is m.ContainerState.RUNNING:
                await self._refresh(container)
        log.info(
            "recovered %d sandboxes and %d containers", len(self._sandboxes), len(self._containers)
        )

    def _lock(self, object_id: str) -> asyncio.Lock:
        return self._locks.setdefault(object_id, asyncio.Lock())

    # -- persistence ---------------------------------------------------------------

    async def _save_sandbox(self, sandbox: m.PodSandbox) -> None:
        sandbox.generation += 1
        await self._write_record("sandboxes", sandbox.id, to_jsonable(sandbox))

    async def _write_record(self, kind: str, object_id: str, record: dict[str, Any]) -> None:
        """Writes of one record happen one at a time, in the order they were asked for."""
        async with self._write_locks.setdefault((kind, object_id), asyncio.Lock()):
            live = self._sandboxes if kind == "sandboxes" else self._containers
            if object_id not in live:
                return  # a late status update must not bring a removed record back
            await asyncio.to_thread(self.state.save, kind, object_id, record)

    async def _delete_record(self, kind: str, object_id: str) -> None:
        key = (kind, object_id)
        async with self._write_locks.setdefault(key, asyncio.Lock()):
            await asyncio.to_thread(self.state.delete, kind, object_id)
        self._write_locks.pop(key, None)

    async def _save_container(self, container: m.Container) -> None:
        if container.id not in self._handles:
            return  # removed while this update was on its way
        container.generation += 1
        record = {
            "container": to_jsonable(container),
            "handle": to_jsonable(self._handles[container.id]),
            "layers": [str(p) for p in self._layers.get(container.id, ())],
        }
        await self._write_record("containers", container.id, record)

    # -- runtime ---------------------------------------------------------------------

    async def version(self) -> m.VersionInfo:
        return m.VersionInfo(RUNTIME_NAME, RUNTIME_VERSION)

    async def status(self) -> m.RuntimeStatus:
        runc_problem = self.handlers.get("runc", "not checked")
        network = await self.cni.status()
        info = {
            "handlers": json.dumps({h: (problem or "ok") for h, problem in self.handlers.items()})
        }
        return m.RuntimeStatus(
            conditions=(
                m.Condition(
                    "RuntimeReady",
                    not runc_problem,
                    "" if not runc_problem else "OCIRuntimeUnavailable",
                    runc_problem,
                ),
                network,
            ),
            handlers=("", *(h for h, problem in self.handlers.items() if not problem)),
            info=info,
        )

    async def cgroup_driver(self) -> int:
        return 1  # cgroupfs

    async def update_runtime_config(self, pod_cidr: str) -> None:
        return None  # the CNI configuration owns the pod network

    def _handler_binary(self, handler: str) -> str:
        name = handler or "runc"
        if name not in self.handlers:
            raise NotFound(f"runtime handler {handler!r} is not configured (try runc)")
        problem = self.handlers[name]
        if problem:
            raise FailedPrecondition(f"runtime handler {name!r} cannot run here: {problem}")
        return name

    # -- sandboxes -------------------------------------------------------------------

    def _sandbox(self, sandbox_id: str) -> m.PodSandbox:
        return core.get_sandbox(self._sandboxes, sandbox_id)

    def _sandbox_dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / sandbox_id

    async def run_pod_sandbox(self, spec: m.PodSandboxSpec) -> str:
        md = spec.metadata
        sandbox_id = core.new_id()
        with self._names.sandbox(md, sandbox_id):
            self._handler_binary(spec.runtime_handler)
        host_network = spec.namespaces.network == NODE
        directory = self._sandbox_dir(sandbox_id)
        created: list[str] = []
        try:
            await asyncio.to_thread(directory.mkdir, parents=True, mode=0o711)
            created.append("dir")
            paths = await self.namespaces.create(
                sandbox_id,
                network=not host_network,
                ipc=spec.namespaces.ipc != NODE,
                uts=not host_network,
                hostname="" if host_network else spec.hostname,
                pid=spec.namespaces.pid == POD,
                sysctls=spec.sysctls,
            )
            created.append("namespaces")
            ips: tuple[str, ...] = ()
            if not host_network:
                assert paths.network is not None
                network = await self.cni.setup(sandbox_id, paths.network, md, spec.port_mappings)
                created.append("network")
                ips = (network.ip, *network.additional_ips)
            shm = directory / "shm"
            await asyncio.to_thread(shm.mkdir, mode=0o1777)
            if spec.namespaces.ipc != NODE:
                await _run(
                    "mount", "-t", "tmpfs", "-o", f"mode=1777,size={SHM_SIZE}", "shm", str(shm)
                )
                created.append("shm")
            await sandbox_files.write_sandbox_files(
                directory,
                hostname=spec.hostname,
                dns=spec.dns,
                pod_ips=ips,
                host_network=host_network,
            )
            sandbox = m.PodSandbox(
                id=sandbox_id,
                spec=spec,
                state=m.SandboxState.READY,
                created_at=time.time_ns(),
                ip=ips[0] if ips else "",
                additional_ips=ips[1:],
            )
            self._sandboxes[sandbox_id] = sandbox
            await self._save_sandbox(sandbox)
        except BaseException:
            await self._undo_sandbox(sandbox_id, created)
            self._names.release_sandbox(md, sandbox_id)
            self._sandboxes.pop(sandbox_id, None)
            raise
        log.info(
            "sandbox %s for pod %s/%s is ready, ip %s",
            sandbox_id[:13],
            md.namespace,
            md.name,
            sandbox.ip or "(host network)",
        )
        return sandbox_id

    async def _undo_sandbox(self, sandbox_id: str, created: Sequence[str]) -> None:
        """Release, in reverse, what creating a sandbox made; every step is idempotent."""
        directory = self._sandbox_dir(sandbox_id)
        with contextlib.suppress(CRIError):
            if "network" in created or not created:
                await self.cni.teardown(sandbox_id)
        shm = directory / "shm"
        if await asyncio.to_thread(is_mounted, shm):
            with contextlib.suppress(CRIError):
                await _run("umount", str(shm))
        with contextlib.suppress(CRIError):
            await self.namespaces.remove(sandbox_id)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    @core.idempotent
    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandbox(sandbox_id)
        async with self._lock(sandbox.id):
            for container in self._containers_of(sandbox.id):
                await self._stop(container, 0)
            if sandbox.state is m.SandboxState.READY:
                if sandbox.spec.namespaces.network != NODE:
                    await self.cni.teardown(sandbox.id, self.namespaces.paths(sandbox.id).network)
                sandbox.state = m.SandboxState.NOTREADY
                await self._save_sandbox(sandbox)
                log.info("sandbox %s stopped", sandbox.id[:13])

    @core.idempotent
    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandbox(sandbox_id)
        await self.stop_pod_sandbox(sandbox.id)
        for container in self._containers_of(sandbox.id):
            await self.remove_container(container.id)
        async with self._lock(sandbox.id):
            await self._undo_sandbox(sandbox.id, ("network",))
            self._names.release_sandbox(sandbox.metadata, sandbox.id)
            self._sandboxes.pop(sandbox.id, None)
            await self._delete_record("sandboxes", sandbox.id)
        log.info("sandbox %s removed", sandbox.id[:13])

    async def pod_sandbox_status(self, sandbox_id: str) -> m.PodSandbox:
        return self._sandbox(sandbox_id)

    async def list_pod_sandbox(self, filter: m.SandboxFilter) -> Sequence[m.PodSandbox]:
        return core.filter_sandboxes(self._sandboxes, filter)

    # -- containers ----------------------------------------------------------------

    def _containers_of(self, sandbox_id: str) -> list[m.Container]:
        return [c for c in self._containers.values() if c.sandbox_id == sandbox_id]

    def _container(self, container_id: str) -> m.Container:
        return core.get_container(self._containers, container_id)

    def _sandbox_info(
        self, sandbox: m.PodSandbox, container: m.ContainerSpec
    ) -> oci_spec.SandboxInfo:
        ns = sandbox.spec.namespaces
        paths = self.namespaces.paths(sandbox.id)
        host_network = ns.network == NODE

        def pinned(path: Path | None, host: bool) -> oci_spec.Namespace:
            if host:
                return oci_spec.Namespace.host()
            return oci_spec.Namespace.join(str(path)) if path else oci_spec.Namespace.new()

        if ns.pid == NODE:
            pid = oci_spec.Namespace.host()
        elif ns.pid == POD and paths.pid is not None:
            pid = oci_spec.Namespace.join(str(paths.pid))
        else:
            pid = oci_spec.Namespace.new()
        directory = self._sandbox_dir(sandbox.id)
        return oci_spec.SandboxInfo(
            id=sandbox.id,
            hostname=sandbox.spec.hostname,
            network=pinned(paths.network, host_network),
            ipc=pinned(paths.ipc, ns.ipc == NODE),
            uts=pinned(paths.uts, host_network),
            pid=pid,
            cgroup_parent=sandbox.spec.cgroup_parent,
            sysctls=sandbox.spec.sysctls,
            resolv_conf_path=str(directory / "resolv.conf"),
            hostname_path=str(directory / "hostname"),
            hosts_path=str(directory / "hosts"),
            shm_path=str(directory / "shm") if ns.ipc != NODE else "",
            privileged=sandbox.spec.privileged,
        )

    async def create_container(
        self, sandbox_id: str, spec: m.ContainerSpec, sandbox_spec: m.PodSandboxSpec | None
    ) -> str:
        sandbox = core.require_ready(self._sandbox(sandbox_id))
        container_id = core.new_id()
        with self._names.container(sandbox.id, spec.metadata, container_id):
            resolved = await self.images.resolve(spec.image)
            if resolved is None:
                raise core.image_not_pulled(spec.image)
            image, image_name = resolved
            volume_images: dict[int, m.Image] = {}
            for index, mount in enumerate(spec.mounts):
                if mount.image:
                    volume_images[index] = await self._volume_image(mount)
                else:
                    await _check_mount(mount)
            log_path = m.container_log_path(sandbox.spec.log_directory, spec.log_path)
        bundle = self.storage.container_dir(container_id)
        try:
            config = await self.images.image_config(image.id)
            layers = await self.images.layer_dirs(image.id)
            self._layers[container_id] = list(layers)
            rootfs = await self.storage.mount(container_id, layers)
            mounts, oci_mounts = await self._image_volumes(container_id, spec, volume_images)
            passwd = await asyncio.to_thread(_read_text, rootfs / "etc" / "passwd")
            group = await asyncio.to_thread(_read_text, rootfs / "etc" / "group")
            user = resolve_user(
                container_user(spec.security, config.user),
                passwd,
                group,
                spec.security.supplemental_groups,
            )
            devices = {
                d.host_path: await asyncio.to_thread(_host_device, d.host_path)
                for d in spec.devices
            }
            seccomp_profile = None
            if spec.security.seccomp.startswith("localhost/"):
                from runtimes.native.seccomp.profile import load_localhost_profile

                assert self._defaults is not None
                seccomp_profile = await asyncio.to_thread(
                    load_localhost_profile,
                    spec.security.seccomp,
                    self._defaults.seccomp_profile_root,
                )
            assert self._defaults is not None
            document = oci_spec.generate_spec(
                container_id=container_id,
                container=dataclasses.replace(spec, mounts=oci_mounts),
                image_config={
                    "User": config.user,
                    "Env": list(config.env),
                    "Entrypoint": list(config.entrypoint),
                    "Cmd": list(config.cmd),
                    "WorkingDir": config.working_dir,
                },
                sandbox=self._sandbox_info(sandbox, spec),
                rootfs=str(rootfs),
                user=user,
                defaults=self._defaults,
                devices=devices,
                seccomp_localhost=seccomp_profile,
            )
            await asyncio.to_thread(_write_json, bundle / "config.json", document)
            if log_path:
                await asyncio.to_thread(
                    Path(log_path).parent.mkdir, parents=True, exist_ok=True, mode=0o755
                )
            handle = ContainerHandle.from_spec(
                id=container_id,
                bundle=str(bundle),
                log_path=log_path or os.devnull,
                spec=document,
                handler=self._handler_binary(sandbox.spec.runtime_handler),
                name=spec.metadata.name,
                stdin=spec.stdin,
                stdin_once=spec.stdin_once,
            )
            self._handles[container_id] = handle
            await self.oci.create(handle, document)
            container = core.created_container(
                container_id,
                sandbox.id,
                dataclasses.replace(spec, mounts=mounts),
                image,
                image_name,
                created_at=time.time_ns(),
                log_path=log_path,
            )
            self._containers[container_id] = container
            await self._save_container(container)
        except BaseException:
            self._names.release_container(sandbox.id, spec.metadata, container_id)
            self._containers.pop(container_id, None)
            handle_ = self._handles.pop(container_id, None)
            if handle_ is not None:
                try:
                    await self.oci.delete(handle_)
                except (CRIError, OSError) as exc:  # never dropped silently
                    log.error(
                        "container %s: create failed and its delete too (left in the OCI "
                        "runtime's state): %s",
                        container_id[:13],
                        exc,
                    )
            try:
                await self.storage.remove(container_id)
            except (CRIError, OSError) as exc:
                log.error("container %s: create failed; its rootfs stays: %s", container_id, exc)
            raise
        self._emit(container, m.ContainerEventType.CREATED)
        return container_id

    async def _volume_image(self, mount: m.Mount) -> m.Image:
        """The pulled image an image volume names (the kubelet pulls it first, as for
        the container's own image)."""
        found = await self.images.resolve(mount.image)
        if found is None:
            raise NotFound(
                f"image {mount.image!r} of the volume at {mount.container_path} not found: "
                "pull it first"
            )
        return found[0]

    async def _image_volumes(
        self, container_id: str, spec: m.ContainerSpec, images: Mapping[int, m.Image]
    ) -> tuple[tuple[m.Mount, ...], tuple[m.Mount, ...]]:
        """The container's mounts as its status reports them (an image volume with the
        image it mounted) and as the OCI spec binds them (an image volume from the
        read-only tree of its image, or the ``image_sub_path`` directory of it)."""
        reported: list[m.Mount] = []
        bound: list[m.Mount] = []
        for index, mount in enumerate(spec.mounts):
            image = images.get(index)
            if image is None:
                reported.append(mount)
                bound.append(mount)
                continue
            layers = await self.images.layer_dirs(image.id)
            self._layers[container_id].extend(layers)  # image GC keeps them while in use
            tree = await self.storage.mount_image_volume(container_id, index, layers)
            source = await asyncio.to_thread(_image_sub_path, tree, mount)
            ref = image.repo_digests[0] if image.repo_digests else image.id
            reported.append(dataclasses.replace(mount, host_path="", readonly=True, image_ref=ref))
            bound.append(
                dataclasses.replace(mount, host_path=str(source), readonly=True, image_ref=ref)
            )
        return tuple(reported), tuple(bound)

    async def start_container(self, container_id: str) -> None:
        container = self._container(container_id)
        async with self._lock(container.id):
            core.require_created(container)
            await self.oci.start(self._handles[container.id])
            started_at = time.time_ns()
            state = await self.oci.state(self._handles[container.id])
            core.mark_started(container, started_at, state.pid if state is not None else 0)
            await self._save_container(container)
        self._emit(container, m.ContainerEventType.STARTED)

    async def _refresh(self, container: m.Container) -> None:
        """A running container whose conmon recorded an exit becomes EXITED."""
        handle = self._handles.get(container.id)
        if container.state is not m.ContainerState.RUNNING or handle is None:
            return
        status = await self.oci.exit_status(handle)
        if status is None or container.state is not m.ContainerState.RUNNING:
            return  # still running, or another caller recorded the exit meanwhile
        core.mark_exited(
            container, status.exit_code, status.finished_at, oom_killed=status.oom_killed
        )
        await self._save_container(container)
        self._emit(container, m.ContainerEventType.STOPPED)

    @core.idempotent
    async def stop_container(self, container_id: str, timeout: int) -> None:
        await self._stop(self._container(container_id), timeout)

    async def _stop(self, container: m.Container, timeout: int) -> None:
        async with self._lock(container.id):
            await self._refresh(container)
            if container.state is m.ContainerState.EXITED:
                return
            handle = self._handles[container.id]
            status = await self.oci.stop(handle, max(timeout, 0))
            if core.has_exited(container):
                return  # a concurrent status call recorded the exit while it stopped
            core.mark_exited(
                container,
                status.exit_code,
                status.finished_at or time.time_ns(),
                oom_killed=status.oom_killed,
            )
            await self._save_container(container)
        self._emit(container, m.ContainerEventType.STOPPED)

    @core.idempotent
    async def remove_container(self, container_id: str) -> None:
        container = self._container(container_id)
        await self._stop(container, 0)
        async with self._lock(container.id):
            handle = self._handles.get(container.id)
            if handle is not None:
                await self.oci.delete(handle)
            with contextlib.suppress(StorageError):
                await self.storage.remove(container.id)
            self._names.release_container(container.sandbox_id, container.metadata, container.id)
            self._containers.pop(container.id, None)
            self._handles.pop(container.id, None)
            self._layers.pop(container.id, None)
            await self._delete_record("containers", container.id)
        self._emit(container, m.ContainerEventType.DELETED)

    async def container_status(self, container_id: str) -> m.Container:
        container = self._container(container_id)
        await self._refresh(container)
        return container

    async def list_containers(self, filter: m.ContainerFilter) -> Sequence[m.Container]:
        filter = core.resolve_sandbox_prefix(filter, self._sandboxes)
        by_id = core.filter_containers(self._containers, m.ContainerFilter(id=filter.id))
        for c in by_id:
            await self._refresh(c)  # states are current before they are matched
        return core.filter_containers(self._containers, filter, by_id)

    async def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: int) -> m.ExecResult:
        container = await self._running(container_id)
        result = await self.oci.exec_sync(self._handles[container.id], list(cmd), timeout)
        return m.ExecResult(result.stdout, result.stderr, result.exit_code)

    # -- streaming (the StreamingBackend the streaming server drives) --------------------

    async def _running(self, container_id: str) -> m.Container:
        """The container, refreshed, if it still runs."""
        container = self._container(container_id)
        await self._refresh(container)
        return core.require_running(container)

    def _ready(self, sandbox_id: str) -> m.PodSandbox:
        return core.require_ready(self._sandbox(sandbox_id))

    async def check_exec(self, container_id: str) -> None:
        """NotFound / FailedPrecondition unless the container (or a unique id prefix) runs."""
        await self._running(container_id)

    async def check_port_forward(self, sandbox_id: str) -> None:
        self._ready(sandbox_id)

    async def exec_stream(
        self, container_id: str, cmd: Sequence[str], *, tty: bool, stdin: bool
    ) -> m.StreamIO:
        """``runc exec`` of ``cmd`` (see :mod:`runtimes.native.streaming`)."""
        argv = core.require_command(cmd)
        container = await self._running(container_id)
        return await ExecStream.start(
            self.oci, self._handles[container.id], argv, tty=tty, stdin=stdin
        )

    async def attach_stream(self, container_id: str, *, tty: bool, stdin: bool) -> m.StreamIO:
        """conmon's attach socket: the container's output from now on, its stdin if it has one.

        ``tty`` is the container's to choose (its spec): with a terminal the output
        is one stream, and a resize goes to conmon's pty.
        """
        container = await self._running(container_id)
        return await AttachStream.open(self.oci, self._handles[container.id], stdin=stdin)

    async def port_forward_connect(
        self, sandbox_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """localhost:``port`` in the sandbox's pinned network namespace (the host's for a
        hostNetwork sandbox)."""
        sandbox = self._ready(sandbox_id)
        path: str | None = None
        if sandbox.spec.namespaces.network != NODE:
            paths = await asyncio.to_thread(self.namespaces.paths, sandbox.id)
            if paths.network is None:
                raise FailedPrecondition(f"pod sandbox {sandbox.id} has no network namespace")
            path = str(paths.network)
        return await netns.connect(path, port)

    async def reopen_container_log(self, container_id: str) -> None:
        container = await self._running(container_id)
        await self.oci.reopen_log(self._handles[container.id])

    async def _stats(self, container: m.Container) -> m.ContainerStats:
        now = time.time_ns()
        cpu = memory = 0
        if container.state is m.ContainerState.RUNNING:
            stats = await self.oci.stats(self._handles[container.id])
            if stats is not None:
                cpu, memory = stats.cpu_usage_ns, stats.memory_working_set_bytes
        used, inodes = await self.storage.writable_usage(container.id)
        return m.ContainerStats(
            container_id=container.id,
            metadata=container.metadata,
            labels=container.spec.labels,
            annotations=container.spec.annotations,
            timestamp=now,
            cpu_usage_core_nanoseconds=cpu,
            memory_working_set_bytes=memory,
            writable_layer_bytes=used,
            writable_layer_inodes=inodes,
        )

    async def container_stats(self, container_id: str) -> m.ContainerStats:
        return await self._stats(self._container(container_id))

    async def list_container_stats(
        self, container_id: str, sandbox_id: str, label_selector: Mapping[str, str]
    ) -> Sequence[m.ContainerStats]:
        found = await self.list_containers(
            m.ContainerFilter(container_id, None, sandbox_id, label_selector)
        )
        return [await self._stats(c) for c in found if c.state is m.ContainerState.RUNNING]

    # -- events --------------------------------------------------------------------

    def _emit(self, container: m.Container, kind: m.ContainerEventType) -> None:
        self._events.emit(container, kind, time.time_ns(), self._sandboxes)

    def container_events(self) -> AsyncIterator[m.ContainerEvent]:
        return self._events.stream()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(document, indent=2))


def _host_device(path: str) -> Any:
    from runtimes.native.oci.devices import host_device

    try:
        return host_device(path)
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"device {path!r}: {exc}") from None


def _image_sub_path(tree: Path, mount: m.Mount) -> Path:
    """The directory ``mount.image_sub_path`` names in an image's tree; symlinks are
    followed as inside the image (an absolute one from the image's root, ``..`` stops
    at it), so nothing outside the image is ever reached."""
    where = f"image volume at {mount.container_path}"
    sub = mount.image_sub_path
    if not sub:
        return tree
    if "\x00" in sub:
        raise InvalidArgument(f"{where}: NUL in image sub path")
    if os.path.isabs(sub):
        raise InvalidArgument(f"{where}: image sub path {sub!r} must be relative")
    todo = [p for p in sub.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = tree.joinpath(*done, part)
        if candidate.is_symlink():
            links += 1
            if links > 40:
                raise InvalidArgument(f"{where}: image sub path {sub!r}: too many symlinks")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    found = tree.joinpath(*done)
    if not found.exists():
        raise InvalidArgument(
            f"{where}: image sub path {sub!r} does not exist in image {mount.image!r}"
        )
    return found


async def _check_mount(mount: m.Mount) -> None:
    """A bind mount's host path must be absolute and exist (CRI-O refuses it otherwise)."""
    if not mount.host_path or not os.path.isabs(mount.host_path):
        raise InvalidArgument(f"mount {mount.container_path!r}: host path must be absolute")
    if not await asyncio.to_thread(os.path.exists, mount.host_path):
        raise InvalidArgument(
            f"mount {mount.container_path!r}: host path {mount.host_path!r} does not exist"
        )
