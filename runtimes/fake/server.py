"""The simulated runtime's CRI semantics: sandboxes, containers and their simulated processes.

State lives in memory. A started container plays its :class:`Program` in a
task owned by :meth:`FakeRuntime.run`: log lines appear in the CRI log file at
``log_path`` when the command would print them, and the container exits when
the command would exit. Time comes from an injectable :class:`Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import logging
import os
import posixpath
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from minikubelet.errors import FailedPrecondition, InvalidArgument, NotFound
from minikubelet.logs import crilog
from runtimes.base import core
from runtimes.base import model as m
from runtimes.base.events import ContainerEvents
from runtimes.base.names import NameReservations
from runtimes.fake import program as prog
from runtimes.fake.images import FakeImages

log = logging.getLogger(__name__)

RUNTIME_NAME = "minikubelet-fake"
RUNTIME_VERSION = "0.1.0"
POD_CIDR = ipaddress.ip_network("10.88.0.0/16")
EXIT_SIGKILL = core.signal_exit_code(9)
POD_UID_LABEL = "io.kubernetes.pod.uid"


class Clock(Protocol):
    def now_ns(self) -> int: ...
    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class _Process:
    """A simulated process: its files, its partial output, and how to signal it."""

    program: prog.Program
    files: dict[str, bytes] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)  # stream -> unterminated text
    term: asyncio.Event = field(default_factory=asyncio.Event)
    kill: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class FakeRuntime:
    """RuntimeService semantics with simulated processes. Call :meth:`run` before use."""

    def __init__(self, images: FakeImages, *, clock: Clock | None = None) -> None:
        self.images = images
        self.clock: Clock = clock or RealClock()
        self._sandboxes: dict[str, m.PodSandbox] = {}
        self._containers: dict[str, m.Container] = {}
        self._names = NameReservations()
        self._by_sandbox: dict[str, set[str]] = {}
        #: sandbox and container ids by their io.kubernetes.pod.uid label: the kubelet's
        #: per-pod listings stay cheap with thousands of pods
        self._uid_index: dict[str, set[str]] = {}
        self._processes: dict[str, _Process] = {}
        self._next_ip = 2
        self._free_ips: list[str] = []
        self._events = ContainerEvents()
        self._tasks: asyncio.TaskGroup | None = None
        self.pod_cidr = str(POD_CIDR)

    # -- lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        """Own the simulated processes until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tasks = tg
            try:
                await asyncio.Future()
            finally:
                self._tasks = None
                for proc in self._processes.values():
                    if proc.task is not None:
                        proc.task.cancel()

    # -- runtime -----------------------------------------------------------------

    async def version(self) -> m.VersionInfo:
        return m.VersionInfo(RUNTIME_NAME, RUNTIME_VERSION)

    async def status(self) -> m.RuntimeStatus:
        return m.RuntimeStatus(
            conditions=(m.Condition("RuntimeReady", True), m.Condition("NetworkReady", True)),
            handlers=("",),
            info={"config": '{"simulated": true}'},
        )

    async def cgroup_driver(self) -> int:
        return 1  # cgroupfs

    async def update_runtime_config(self, pod_cidr: str) -> None:
        if pod_cidr:
            try:
                ipaddress.ip_network(pod_cidr)
            except ValueError as exc:
                raise InvalidArgument(f"pod CIDR {pod_cidr!r}: {exc}") from None
            self.pod_cidr = pod_cidr

    # -- lookups -----------------------------------------------------------------

    def _index(self, labels: Mapping[str, str], object_id: str) -> None:
        uid = labels.get(POD_UID_LABEL)
        if uid is not None:
            self._uid_index.setdefault(uid, set()).add(object_id)

    def _unindex(self, labels: Mapping[str, str], object_id: str) -> None:
        uid = labels.get(POD_UID_LABEL)
        ids = self._uid_index.get(uid, set()) if uid is not None else set()
        ids.discard(object_id)
        if uid is not None and not ids:
            self._uid_index.pop(uid, None)

    def _sandbox(self, sandbox_id: str) -> m.PodSandbox:
        return core.get_sandbox(self._sandboxes, sandbox_id)

    def _container(self, container_id: str) -> m.Container:
        return core.get_container(self._containers, container_id)

    # -- sandboxes ---------------------------------------------------------------

    async def run_pod_sandbox(self, spec: m.PodSandboxSpec) -> str:
        md = spec.metadata
        sandbox_id = core.new_id()
        with self._names.sandbox(md, sandbox_id):
            if spec.runtime_handler:
                raise NotFound(
                    f"runtime handler {spec.runtime_handler!r} is not configured "
                    "(the simulated runtime has only the default handler)"
                )
            ip = "" if spec.namespaces.network == 2 else self._allocate_ip()
        self._sandboxes[sandbox_id] = m.PodSandbox(
            id=sandbox_id,
            spec=spec,
            state=m.SandboxState.READY,
            created_at=self.clock.now_ns(),
            ip=ip,
        )
        self._by_sandbox[sandbox_id] = set()
        self._index(spec.labels, sandbox_id)
        log.info(
            "sandbox %s for pod %s/%s is ready, ip %s",
            sandbox_id[:13],
            md.namespace,
            md.name,
            ip or "(host network)",
        )
        return sandbox_id

    def _allocate_ip(self) -> str:
        if self._free_ips:
            return self._free_ips.pop()
        net = ipaddress.ip_network(self.pod_cidr)
        if self._next_ip >= net.num_addresses - 1:
            raise FailedPrecondition(f"no free address left in pod CIDR {self.pod_cidr}")
        ip = str(net.network_address + self._next_ip)
        self._next_ip += 1
        return ip

    @core.idempotent
    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandbox(sandbox_id)
        for cid in list(self._by_sandbox.get(sandbox.id, ())):
            await self._stop(self._containers[cid], 0)
        if sandbox.state == m.SandboxState.READY:
            sandbox.state = m.SandboxState.NOTREADY
            sandbox.generation += 1
            if sandbox.ip:
                self._free_ips.append(sandbox.ip)
            log.info("sandbox %s stopped", sandbox.id[:13])

    @core.idempotent
    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandbox(sandbox_id)
        await self.stop_pod_sandbox(sandbox.id)
        for cid in list(self._by_sandbox.get(sandbox.id, ())):
            await self.remove_container(cid)
        self._names.release_sandbox(sandbox.metadata, sandbox.id)
        self._by_sandbox.pop(sandbox.id, None)
        self._unindex(sandbox.spec.labels, sandbox.id)
        del self._sandboxes[sandbox.id]
        log.info("sandbox %s removed", sandbox.id[:13])

    async def pod_sandbox_status(self, sandbox_id: str) -> m.PodSandbox:
        return self._sandbox(sandbox_id)

    async def list_pod_sandbox(self, filter: m.SandboxFilter) -> Sequence[m.PodSandbox]:
        uid = filter.label_selector.get(POD_UID_LABEL)
        candidates = None
        if uid is not None:
            ids = self._uid_index.get(uid, set())
            candidates = [self._sandboxes[i] for i in ids if i in self._sandboxes]
        return core.filter_sandboxes(self._sandboxes, filter, candidates)

    # -- containers --------------------------------------------------------------

    async def create_container(
        self, sandbox_id: str, spec: m.ContainerSpec, sandbox_spec: m.PodSandboxSpec | None
    ) -> str:
        sandbox = core.require_ready(self._sandbox(sandbox_id))
        container_id = core.new_id()
        with self._names.container(sandbox.id, spec.metadata, container_id):
            resolved = self.images.resolve(spec.image)
            if resolved is None:
                raise core.image_not_pulled(spec.image)
            image, image_name = resolved
            spec = dataclasses.replace(spec, mounts=self._image_volumes(spec.mounts))
            log_path = m.container_log_path(sandbox.spec.log_directory, spec.log_path)
            container = core.created_container(
                container_id,
                sandbox.id,
                spec,
                image,
                image_name,
                created_at=self.clock.now_ns(),
                log_path=log_path,
            )
            if log_path:
                await asyncio.to_thread(core.create_log_file, log_path)
        self._containers[container_id] = container
        self._index(spec.labels, container_id)
        self._by_sandbox[sandbox.id].add(container_id)
        self._emit(container, m.ContainerEventType.CREATED)
        return container_id

    def _image_volumes(self, mounts: tuple[m.Mount, ...]) -> tuple[m.Mount, ...]:
        """Image volumes (CRI ``Mount.image``) need their image pulled, as on a real
        runtime; the status reports the image mounted (its digest, else its ID)."""
        out = []
        for mount in mounts:
            if mount.image:
                found = self.images.resolve(mount.image)
                if found is None:
                    raise NotFound(
                        f"image {mount.image!r} of the volume at {mount.container_path} not "
                        "found: pull it first"
                    )
                image = found[0]
                ref = image.repo_digests[0] if image.repo_digests else image.id
                mount = dataclasses.replace(mount, host_path="", readonly=True, image_ref=ref)
            out.append(mount)
        return tuple(out)

    async def start_container(self, container_id: str) -> None:
        container = core.require_created(self._container(container_id))
        core.require_ready(self._sandboxes[container.sandbox_id])
        core.require_serving(self._tasks is not None, "simulated")
        assert self._tasks is not None
        program = prog.parse(container.spec.command, container.spec.args)
        proc = _Process(program)
        self._processes[container.id] = proc
        pid = 1000 + int(hashlib.sha256(container.id.encode()).hexdigest()[:5], 16)
        core.mark_started(container, self.clock.now_ns(), pid)
        self._emit(container, m.ContainerEventType.STARTED)
        proc.task = self._tasks.create_task(
            self._play(container, proc), name=f"fake-container-{container.id[:13]}"
        )

    async def _play(self, container: m.Container, proc: _Process) -> None:
        status = 0
        try:
            status = await self._steps(container, proc, proc.program.steps)
        except _Exited as exc:
            status = exc.code
        except asyncio.CancelledError:
            proc.done.set()
            raise
        self._finish(container, proc, status)

    async def _steps(
        self, container: m.Container, proc: _Process, steps: Sequence[prog.Step]
    ) -> int:
        status = 0
        for step in steps:
            if (step.connector == "&&" and status != 0) or (step.connector == "||" and status == 0):
                continue
            status = await self._step(container, proc, step)
        if proc.program.forever and not steps:
            await self._wait_signal(proc, None)
        return status

    async def _step(self, container: m.Container, proc: _Process, step: prog.Step) -> int:
        if step.kind == "sleep":
            await self._wait_signal(proc, step.seconds)
            return 0
        if step.kind == "forever":
            await self._wait_signal(proc, None)
            return 0
        if step.kind == "exit":
            raise _Exited(step.code)
        if step.kind == "status":
            return step.code
        if step.kind == "write":
            await self._output(container, proc, step, _raw(_expand(step.text, container)))
            return 0
        if step.kind == "touch":
            proc.files.setdefault(step.path, b"")
            return 0
        if step.kind == "rm":
            proc.files.pop(step.path, None)
            return 0
        if step.kind == "builtin":
            out, err, code = self._builtin(container, proc, step.argv)
            await self._output(container, proc, step, out)
            if err:
                await self._write_log(container, proc, "stderr", _text(err))
            return code
        return 0  # trap: handled when the program was read

    async def _output(
        self, container: m.Container, proc: _Process, step: prog.Step, data: bytes
    ) -> None:
        if step.path:
            before = proc.files.get(step.path, b"") if step.append else b""
            proc.files[step.path] = before + data
        else:
            await self._write_log(container, proc, step.stream, _text(data))

    async def _wait_signal(self, proc: _Process, seconds: float | None) -> None:
        """Sleep ``seconds`` (None: forever) unless SIGTERM or SIGKILL arrives first."""
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(proc.kill.wait())]
        if not proc.program.ignores_term:
            waits.append(asyncio.ensure_future(proc.term.wait()))
        if seconds is not None:
            waits.append(asyncio.ensure_future(self.clock.sleep(seconds)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if proc.kill.is_set():
            raise _Exited(EXIT_SIGKILL)
        if proc.term.is_set() and not proc.program.ignores_term:
            raise _Exited(proc.program.term_exit_code)

    def _builtin(
        self, container: m.Container, proc: _Process, argv: Sequence[str]
    ) -> tuple[bytes, bytes, int]:
        name, args = argv[0], list(argv[1:])
        env = dict(container.spec.envs)
        if name == "cat":
            out = b""
            for path in args:
                if path not in proc.files:
                    return out, f"cat: can't open '{path}': No such file or directory\n".encode(), 1
                out += proc.files[path]
            return out, b"", 0
        if name in ("test", "["):
            args = [a for a in args if a != "]"]
            if len(args) == 2 and args[0] in ("-f", "-e", "-s"):
                present = args[1] in proc.files
                if args[0] == "-s":
                    present = present and bool(proc.files[args[1]])
                return b"", b"", 0 if present else 1
            return b"", b"", 0
        if name == "ls":
            missing = [p for p in args if not p.startswith("-") and p not in proc.files]
            if missing:
                return b"", f"ls: {missing[0]}: No such file or directory\n".encode(), 1
            return "".join(f"{p}\n" for p in args if not p.startswith("-")).encode(), b"", 0
        if name == "hostname":
            sandbox = self._sandboxes.get(container.sandbox_id)
            host = sandbox.spec.hostname if sandbox else ""
            return f"{host or container.sandbox_id[:12]}\n".encode(), b"", 0
        if name in ("env", "printenv"):
            if name == "printenv" and args:
                values = [env[a] for a in args if a in env]
                return _raw("".join(v + "\n" for v in values)), b"", 0 if values else 1
            return _raw("".join(f"{k}={v}\n" for k, v in env.items())), b"", 0
        if name == "pwd":
            return f"{container.spec.working_dir or '/'}\n".encode(), b"", 0
        if name in ("id", "whoami"):
            uid = container.spec.security.run_as_user or 0
            user = "root" if uid == 0 else str(uid)
            if name == "whoami":
                return f"{user}\n".encode(), b"", 0
            return f"uid={uid}({user}) gid={uid}({user})\n".encode(), b"", 0
        return b"", b"", 0

    async def _write_log(
        self, container: m.Container, proc: _Process, stream: str, text: str
    ) -> None:
        if not text:
            return
        data = proc.pending.pop(stream, "") + text
        *lines, rest = data.split("\n")
        if rest:
            proc.pending[stream] = rest
        if not container.log_path or not lines:
            return
        now = self.clock.now_ns()
        out = "".join(
            crilog.format_line(now, "stderr" if stream == "stderr" else "stdout", line)
            for line in lines
        )
        await asyncio.to_thread(_append, container.log_path, out)

    def _finish(self, container: m.Container, proc: _Process, code: int) -> None:
        if container.log_path and proc.pending:
            now = self.clock.now_ns()
            tail = "".join(
                crilog.format_line(now, "stderr" if s == "stderr" else "stdout", text)
                for s, text in proc.pending.items()
            )
            proc.pending.clear()
            with contextlib.suppress(OSError):
                _append(container.log_path, tail)  # a line or two, at exit
        core.mark_exited(container, code, self.clock.now_ns())
        proc.done.set()
        self._emit(container, m.ContainerEventType.STOPPED)

    @core.idempotent
    async def stop_container(self, container_id: str, timeout: int) -> None:
        await self._stop(self._container(container_id), timeout)

    async def _stop(self, container: m.Container, timeout: int) -> None:
        if container.state == m.ContainerState.CREATED:
            # never started: it simply becomes exited, as runc does with a created container
            core.mark_exited(container, EXIT_SIGKILL if timeout <= 0 else 0, self.clock.now_ns())
            return
        proc = self._processes.get(container.id)
        if container.state != m.ContainerState.RUNNING or proc is None:
            return
        if timeout > 0:
            proc.term.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await proc.done.wait()
        if not proc.done.is_set():
            proc.kill.set()
            await proc.done.wait()

    @core.idempotent
    async def remove_container(self, container_id: str) -> None:
        container = self._container(container_id)
        if container.state == m.ContainerState.RUNNING:
            await self._stop(container, 0)
        self._processes.pop(container.id, None)
        self._names.release_container(container.sandbox_id, container.metadata, container.id)
        self._by_sandbox.get(container.sandbox_id, set()).discard(container.id)
        self._unindex(container.spec.labels, container.id)
        del self._containers[container.id]
        self._emit(container, m.ContainerEventType.DELETED)

    async def container_status(self, container_id: str) -> m.Container:
        return self._container(container_id)

    async def list_containers(self, filter: m.ContainerFilter) -> Sequence[m.Container]:
        filter = core.resolve_sandbox_prefix(filter, self._sandboxes)
        candidates = None
        if filter.pod_sandbox_id:
            ids = self._by_sandbox.get(filter.pod_sandbox_id, set())
            candidates = [self._containers[i] for i in ids]
        elif POD_UID_LABEL in filter.label_selector:
            ids = self._uid_index.get(filter.label_selector[POD_UID_LABEL], set())
            candidates = [self._containers[i] for i in ids if i in self._containers]
        return core.filter_containers(self._containers, filter, candidates)

    async def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: int) -> m.ExecResult:
        container = core.require_running(self._container(container_id))
        proc = self._processes.get(container.id)
        if proc is None:
            raise core.container_not_running(container.id)
        program = prog.parse(list(cmd), [])
        if program.forever and not program.steps and not _is_forever_command(cmd):
            return m.ExecResult(b"", b"", 0)  # a command the simulation does not model
        out = bytearray()
        err = bytearray()
        status = 0
        try:
            async with asyncio.timeout(timeout if timeout > 0 else None):
                status = await self._exec_steps(container, proc, program, out, err)
        except TimeoutError:
            raise core.exec_timed_out(cmd, timeout, container.id) from None
        return m.ExecResult(bytes(out), bytes(err), status)

    async def _exec_steps(
        self,
        container: m.Container,
        proc: _Process,
        program: prog.Program,
        out: bytearray,
        err: bytearray,
    ) -> int:
        status = 0
        for step in program.steps:
            if (step.connector == "&&" and status != 0) or (step.connector == "||" and status == 0):
                continue
            if step.kind == "exit":
                return step.code
            if step.kind in ("sleep", "forever"):
                await self.clock.sleep(step.seconds if step.kind == "sleep" else 1e9)
                status = 0
            elif step.kind == "status":
                status = step.code
            elif step.kind in ("write", "builtin"):
                if step.kind == "write":
                    data, e, status = _raw(_expand(step.text, container)), b"", 0
                else:
                    data, e, status = self._builtin(container, proc, step.argv)
                err += e
                if step.path:
                    before = proc.files.get(step.path, b"") if step.append else b""
                    proc.files[step.path] = before + data
                elif step.stream == "stderr":
                    err += data
                else:
                    out += data
            elif step.kind == "touch":
                proc.files.setdefault(step.path, b"")
                status = 0
            elif step.kind == "rm":
                proc.files.pop(step.path, None)
                status = 0
        return status

    async def reopen_container_log(self, container_id: str) -> None:
        container = core.require_running(self._container(container_id))
        if container.log_path:
            await asyncio.to_thread(core.create_log_file, container.log_path)

    def _stats(self, c: m.Container) -> m.ContainerStats:
        now = self.clock.now_ns()
        running = c.state == m.ContainerState.RUNNING
        cpu = (now - c.started_at) // 1000 if running and c.started_at else 0
        memory = (4 << 20) + int(c.id[:4], 16) * 64 if running else 0
        return m.ContainerStats(
            container_id=c.id,
            metadata=c.metadata,
            labels=c.spec.labels,
            annotations=c.spec.annotations,
            timestamp=now,
            cpu_usage_core_nanoseconds=cpu,
            memory_working_set_bytes=memory,
            writable_layer_bytes=4096,
            writable_layer_inodes=1,
        )

    async def container_stats(self, container_id: str) -> m.ContainerStats:
        return self._stats(self._container(container_id))

    async def list_container_stats(
        self, container_id: str, sandbox_id: str, label_selector: Mapping[str, str]
    ) -> Sequence[m.ContainerStats]:
        found = await self.list_containers(
            m.ContainerFilter(container_id, None, sandbox_id, label_selector)
        )
        return [self._stats(c) for c in found if c.state == m.ContainerState.RUNNING]

    # -- events ------------------------------------------------------------------

    def _emit(self, container: m.Container, kind: m.ContainerEventType) -> None:
        self._events.emit(container, kind, self.clock.now_ns(), self._sandboxes)

    def container_events(self) -> AsyncIterator[m.ContainerEvent]:
        return self._events.stream()


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expand(text: str, container: m.Container) -> str:
    """``$NAME`` and ``${NAME}`` from the container's environment, as the shell would."""
    if "$" not in text:
        return text
    env = {"HOME": "/root", "PATH": "/usr/local/bin:/usr/bin:/bin", **dict(container.spec.envs)}
    return _VAR.sub(lambda mt: env.get(mt.group(1) or mt.group(2), ""), text)


def _raw(text: str) -> bytes:
    """Text as the process writes it: an environment value's non-UTF-8 bytes come back whole."""
    return text.encode("utf-8", "surrogateescape")


def _text(data: bytes) -> str:
    """What the process wrote, as text that turns back into the same bytes (:func:`_raw`)."""
    return data.decode("utf-8", "surrogateescape")


def _is_forever_command(cmd: Sequence[str]) -> bool:
    return bool(cmd) and posixpath.basename(cmd[0]) == "sleep"


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, _raw(text))  # the bytes the process wrote, as a log file keeps them
    finally:
        os.close(fd)
