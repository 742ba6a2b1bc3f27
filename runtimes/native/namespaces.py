"""A pod sandbox's namespaces, pinned to files so they outlive the runtime server (CRI-O's pinns).

Every subprocess call of the sandbox's namespaces lives here. The pod has no
infra ("pause") container: its network, IPC and UTS namespaces exist because a
bind mount of ``/proc/<pid>/ns/<type>`` keeps each of them alive after the
process that created it is gone, at ``<run_root>/ns/<type>/<sandbox id>``.

How, verified on this host (util-linux 2.38.1, Linux 6.x):

* ``unshare --net=FILE --ipc=FILE --uts=FILE -- PROGRAM`` does exactly what
  pinns does: a helper child bind-mounts ``/proc/<unshare pid>/ns/<type>`` onto
  each FILE (which must exist: ``mount(2)`` needs a target), then unshare execs
  PROGRAM inside the new namespaces. Our PROGRAM is a few lines of Python that
  set the pod's hostname in the new UTS namespace and write the pod's
  namespaced sysctls (``/proc/sys/net`` and the IPC ones show the writer's own
  namespaces), then exits: nothing keeps running.
* A PID namespace dies with its init: a pinned PID namespace without one can
  be joined, but nothing can fork in it. A shared PID namespace
  (``shareProcessNamespace``) therefore needs a live holder, as the pause
  container is for the kubelet: ``unshare --pid=FILE --fork --kill-child`` with
  a tiny init that reaps orphans. The holder runs in its own session, so it
  survives a restart of the runtime server; its host pid is kept in
  ``<run_root>/ns/pid-holders/<sandbox id>.pid`` and its command line names the
  sandbox, so a recycled pid is never killed by mistake.
* A pinned file is recognised without parsing mountinfo: it lives on nsfs
  (the device of ``/proc/self/ns/*``) and the ``NS_GET_NSTYPE`` ioctl names its type.
* ``<run_root>/ns`` is made a shared mount of its own (as iproute2 does for
  ``/run/netns``): a mount namespace created later as a slave of the host (a
  systemd unit's PrivateTmp, ``unshare -m``) copies our pins, and without
  propagation its copies would keep every pod's namespaces alive after we
  unmount them.

Removal is ``umount --lazy`` (CRI-O's ``MNT_DETACH``: an open descriptor, say a
CNI plugin's, cannot make it fail) and unlink. Everything here is idempotent and
serialised per sandbox; :meth:`NamespaceManager.start` finds what a previous
server pinned, so a restart recovers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import signal
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from minikubelet.errors import FailedPrecondition, Internal, InvalidArgument
from minikubelet.util import mountinfo
from minikubelet.util.proc import CommandError, CommandTimeout
from minikubelet.util.proc import run as run_command
from runtimes.native.network.files import write_atomic
from runtimes.native.oci.spec import normalize_sysctl, sysctl_namespace

log = logging.getLogger(__name__)

NS_GET_NSTYPE: Final = 0xB703  # linux/nsfs.h
#: CLONE_NEW* (what NS_GET_NSTYPE answers) -> our name for the namespace type.
CLONE_FLAGS: Final[Mapping[int, str]] = {
    0x40000000: "net",
    0x08000000: "ipc",
    0x04000000: "uts",
    0x20000000: "pid",
}
#: Our namespace type -> util-linux's option for it.
UNSHARE_OPTIONS: Final[Mapping[str, str]] = {
    "net": "--net",
    "ipc": "--ipc",
    "uts": "--uts",
    "pid": "--pid",
}
NS_TYPES: Final = tuple(UNSHARE_OPTIONS)
HOLDER_MARKER: Final = "minikubelet-pid-holder"
HOSTNAME_MAX: Final = 64  # HOST_NAME_MAX
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")

#: Runs inside the new namespaces: hostname, then sysctls ([name, path under /proc/sys, value]).
_PIN_HELPER: Final = """
import json, socket, sys
hostname, sysctls = sys.argv[1], json.loads(sys.argv[2])
try:
    if hostname:
        socket.sethostname(hostname)
except OSError as e:
    sys.exit("hostname %s: %s" % (hostname, e.strerror))
for name, path, value in sysctls:
    try:
        with open("/proc/sys/" + path, "w") as f:
            f.write(value)
    except OSError as e:
        sys.exit("sysctl %s=%s: %s" % (name, value, e.strerror))
"""

#: PID 1 of a shared PID namespace: report its host pid, then reap orphans until killed.
_PID_INIT: Final = """
import os, signal
def reap(*_):
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
signal.signal(signal.SIGCHLD, reap)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
os.write(2, ("ready %s\\n" % os.readlink("/proc/self")).encode())
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
os.close(null)
while True:
    signal.pause()
"""


class NamespaceError(Internal):
    """Pinning or unpinning a namespace failed on the host."""


@dataclass(frozen=True, slots=True)
class NamespacePaths:
    """The pinned namespaces of one sandbox; None where the pod uses the host's (or none)."""

    network: Path | None = None
    ipc: Path | None = None
    uts: Path | None = None
    pid: Path | None = None
    pid_holder: int | None = None  # host pid of the shared PID namespace's init

    def by_type(self) -> dict[str, Path]:
        """``{"net": path, ...}`` for the pinned ones, by their names under ``/proc/<pid>/ns``."""
        pairs = (("net", self.network), ("ipc", self.ipc), ("uts", self.uts), ("pid", self.pid))
        return {kind: path for kind, path in pairs if path is not None}


def pinned_type(path: Path) -> str | None:
    """The namespace type pinned at ``path`` (``"net"`` ...), None when it holds none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_dev != _nsfs_device():
            return None
        return CLONE_FLAGS.get(fcntl.ioctl(fd, NS_GET_NSTYPE))
    except OSError:
        return None
    finally:
        os.close(fd)


def is_pinned(path: Path, kind: str) -> bool:
    return pinned_type(path) == kind


@functools.cache
def _nsfs_device() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def validate_sandbox_id(sandbox_id: str) -> None:
    """Sandbox ids name files: no separators, no dot-dot, bounded."""
    if not _SANDBOX_ID.match(sandbox_id):
        raise InvalidArgument(f"invalid sandbox id {sandbox_id!r}")


def validate_hostname(hostname: str) -> None:
    if hostname and (len(hostname) > HOSTNAME_MAX or not _HOSTNAME.match(hostname)):
        raise InvalidArgument(f"invalid pod hostname {hostname!r}")


def sysctl_writes(
    sysctls: Mapping[str, str], *, network: bool, ipc: bool
) -> dict[str, list[tuple[str, str, str]]]:
    """The pod's sysctls as writes (name, path under ``/proc/sys``, value), by namespace type.

    Only namespaced sysctls are allowed, and only for a namespace of the pod's
    own: anything else would change the node. Pure.
    """
    out: dict[str, list[tuple[str, str, str]]] = {"net": [], "ipc": []}
    for raw, value in sysctls.items():
        name = normalize_sysctl(raw)
        kind = sysctl_namespace(name)
        if kind is None:
            raise InvalidArgument(f"sysctl {name} is not namespaced: it would change the node")
        if (kind == "net" and not network) or (kind == "ipc" and not ipc):
            label = "network" if kind == "net" else "IPC"
            raise InvalidArgument(f"sysctl {name} needs a {label} namespace of the pod's own")
        path = name.translate(str.maketrans("./", "/."))
        if any(part in ("", ".", "..") for part in path.split("/")) or "\n" in value:
            raise InvalidArgument(f"invalid sysctl {raw}={value!r}")
        out[kind].append((name, path, value))
    return out


class NamespaceManager:
    """Creates, finds and removes the pinned namespaces of pod sandboxes under ``run_root``.

    The constructor touches nothing; :meth:`start` prepares the directories and
    reports what is already pinned.
    """

    def __init__(
        self,
        run_root: Path,
        *,
        unshare: str = "unshare",
        mount: str = "mount",
        umount: str = "umount",
        python: str = sys.executable,
        timeout: float = 30.0,
    ) -> None:
        self.run_root = Path(run_root)
        self.ns_dir = self.run_root / "ns"
        self.holder_dir = self.ns_dir / "pid-holders"
        self._unshare = unshare
        self._mount = mount
        self._umount = umount
        self._python = python
        self._timeout = timeout
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        #: Holders this process started, so it can reap them; others are only signalled.
        self._holders: dict[str, asyncio.subprocess.Process] = {}

    # -- paths ---------------------------------------------------------------------------------

    def pin_path(self, kind: str, sandbox_id: str) -> Path:
        return self.ns_dir / kind / sandbox_id

    def holder_pid_path(self, sandbox_id: str) -> Path:
        return self.holder_dir / f"{sandbox_id}.pid"

    def paths(self, sandbox_id: str) -> NamespacePaths:
        """The namespaces pinned for ``sandbox_id`` now (each checked, so none is stale)."""
        validate_sandbox_id(sandbox_id)
        found = {
            kind: path
            for kind in NS_TYPES
            if is_pinned(path := self.pin_path(kind, sandbox_id), kind)
        }
        holder = self._live_holder(sandbox_id) if "pid" in found else None
        return NamespacePaths(
            network=found.get("net"),
            ipc=found.get("ipc"),
            uts=found.get("uts"),
            pid=found.get("pid") if holder is not None else None,
            pid_holder=holder,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> dict[str, NamespacePaths]:
        """Prepare ``<run_root>/ns`` and recover: what each sandbox still has pinned.

        Files that pin nothing (a crash between creating one and mounting on it)
        are removed, and so is a PID namespace whose holder died (nothing can
        run in it any more). Deciding which sandboxes are orphans is the server's.
        """
        await asyncio.to_thread(self._make_dirs)
        real = str(self.ns_dir.resolve())
        if real not in await asyncio.to_thread(mountinfo.read_mount_points):
            await self._run(self._mount, "--bind", real, real)
            await self._run(self._mount, "--make-shared", real)
        return await self.recover()

    async def recover(self) -> dict[str, NamespacePaths]:
        """What each sandbox has pinned, after removing what pins nothing any more."""
        ids = {
            entry.removesuffix(".pid")
            for directory in (*(self.ns_dir / kind for kind in NS_TYPES), self.holder_dir)
            for entry in await asyncio.to_thread(_list_dir, directory)
        }
        found: dict[str, NamespacePaths] = {}
        for sandbox_id in sorted(i for i in ids if _SANDBOX_ID.match(i)):
            async with self._lock(sandbox_id):  # not while a create is half-way
                await self._drop_dead_pid_namespace(sandbox_id)
                for kind in NS_TYPES:
                    path = self.pin_path(kind, sandbox_id)
                    if path.exists() and not is_pinned(path, kind):
                        log.info("removing stale namespace file %s", path)
                        path.unlink(missing_ok=True)
                paths = self.paths(sandbox_id)
            if paths.by_type():
                found[sandbox_id] = paths
        return found

    async def uninstall(self) -> None:
        """Undo :meth:`start`'s mount of ``<run_root>/ns`` once nothing is pinned under it."""
        pinned = await self.recover()
        if pinned:
            raise FailedPrecondition(f"namespaces still pinned for {sorted(pinned)}")
        real = str(self.ns_dir.resolve())
        while real in await asyncio.to_thread(mountinfo.read_mount_points):
            await self._run(self._umount, real)

    async def create(
        self,
        sandbox_id: str,
        *,
        network: bool,
        ipc: bool,
        uts: bool,
        hostname: str,
        pid: bool = False,
        sysctls: Mapping[str, str] | None = None,
    ) -> NamespacePaths:
        """Pin the sandbox's namespaces; what is pinned already is kept as it is.

        ``hostname`` is set in a new UTS namespace ("" keeps the node's name);
        ``sysctls`` (namespaced ones only) are written into the new network and
        IPC namespaces. ``pid`` asks for a shared PID namespace with a live init.
        On failure nothing this call created is left behind.
        """
        validate_sandbox_id(sandbox_id)
        validate_hostname(hostname)
        writes = sysctl_writes(sysctls or {}, network=network, ipc=ipc)
        wanted = [k for k, on in (("net", network), ("ipc", ipc), ("uts", uts)) if on]
        async with self._lock(sandbox_id):
            await self._drop_dead_pid_namespace(sandbox_id)
            missing = [k for k in wanted if not is_pinned(self.pin_path(k, sandbox_id), k)]
            created: list[str] = []
            try:
                if missing:
                    created += missing  # unshare may pin some before it fails
                    await self._pin(sandbox_id, missing, hostname, writes)
                if pid and self.paths(sandbox_id).pid is None:
                    created.append("pid")
                    await self._start_holder(sandbox_id)
            except BaseException:
                await self._unpin(sandbox_id, created)
                raise
            return self.paths(sandbox_id)

    async def remove(self, sandbox_id: str) -> None:
        """Kill the PID holder, unpin every namespace and remove the files. Idempotent."""
        validate_sandbox_id(sandbox_id)
        async with self._lock(sandbox_id):
            await self._unpin(sandbox_id, NS_TYPES)

    # -- the work ------------------------------------------------------------------------------

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        return lock

    def _make_dirs(self) -> None:
        for kind in NS_TYPES:
            (self.ns_dir / kind).mkdir(parents=True, exist_ok=True, mode=0o711)
        self.holder_dir.mkdir(parents=True, exist_ok=True, mode=0o711)

    async def _pin(
        self,
        sandbox_id: str,
        kinds: Sequence[str],
        hostname: str,
        writes: Mapping[str, Sequence[tuple[str, str, str]]],
    ) -> None:
        await asyncio.to_thread(self._make_dirs)
        argv = [self._unshare]
        for kind in kinds:
            path = self.pin_path(kind, sandbox_id)
            path.touch(mode=0o444)  # mount(2) needs a target; an empty file is one
            argv.append(f"{UNSHARE_OPTIONS[kind]}={path}")
        sysctls = [w for kind in kinds if kind in writes for w in writes[kind]]
        argv += [
            "--",
            self._python,
            "-I",
            "-S",
            "-c",
            _PIN_HELPER,
            hostname if "uts" in kinds else "",
            json.dumps(sysctls),
        ]
        await self._run(*argv)
        log.info("sandbox %s: pinned %s namespaces", sandbox_id, ",".join(kinds))

    async def _start_holder(self, sandbox_id: str) -> None:
        path = self.pin_path("pid", sandbox_id)
        await asyncio.to_thread(self._make_dirs)
        path.touch(mode=0o444)
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                self._unshare,
                f"--pid={path}",
                "--fork",
                "--kill-child",
                "--",
                self._python,
                "-I",
                "-S",
                "-c",
                _PID_INIT,
                HOLDER_MARKER,
                sandbox_id,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=write_fd,
                start_new_session=True,  # outlives us, and no signal to our group reaches it
                cwd="/",
            )
        finally:
            os.close(write_fd)
        self._holders[sandbox_id] = proc
        report = await self._read_ready(read_fd)
        if not report.startswith("ready "):  # the caller unpins, and kills what is left
            raise NamespaceError(f"sandbox {sandbox_id}: PID namespace holder failed: {report}")
        holder = int(report.split()[1])
        await asyncio.to_thread(
            write_atomic, self.holder_pid_path(sandbox_id), f"{holder}\n".encode()
        )
        log.info("sandbox %s: shared PID namespace held by pid %d", sandbox_id, holder)

    async def _read_ready(self, read_fd: int) -> str:
        """The holder's first line (``ready <pid>``), or everything it said before exiting."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        lines: list[str] = []
        try:
            async with asyncio.timeout(self._timeout):
                while line := (await reader.readline()).decode(errors="replace"):
                    if line.startswith("ready "):
                        return line.strip()
                    lines.append(line.strip())
        except TimeoutError:
            lines.append(f"no report within {self._timeout}s")
        finally:
            transport.close()
        return "; ".join(lines) or "exited without a word"

    def _live_holder(self, sandbox_id: str) -> int | None:
        """The holder's pid when it is alive and still ours (its command line names the sandbox)."""
        try:
            pid = int(self.holder_pid_path(sandbox_id).read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        ours = HOLDER_MARKER.encode() in cmdline and sandbox_id.encode() in cmdline
        return pid if ours and _alive(pid) else None

    async def _drop_dead_pid_namespace(self, sandbox_id: str) -> None:
        if self._live_holder(sandbox_id) is None and (
            self.pin_path("pid", sandbox_id).exists() or self.holder_pid_path(sandbox_id).exists()
        ):
            log.warning("sandbox %s: PID namespace holder is gone; unpinning", sandbox_id)
            await self._unpin(sandbox_id, ("pid",))

    async def _stop_holder(self, sandbox_id: str) -> None:
        pid = self._live_holder(sandbox_id)
        proc = self._holders.pop(sandbox_id, None)
        if pid is not None:
            await self._kill_and_wait(pid)
        if proc is not None:
            if pid is None:  # it never reported: unshare --kill-child takes its child along
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await asyncio.wait_for(proc.wait(), self._timeout)  # reap unshare: no zombie of ours

    async def _kill_and_wait(self, pid: int) -> None:
        """SIGKILL the init through a pidfd (no recycled pid is hit) and await its exit.

        The PID namespace dies with its init; the pidfd turns readable once it has exited.
        """
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        try:
            loop.add_reader(pidfd, readable)
            try:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                await asyncio.wait_for(exited, self._timeout)
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    async def _unpin(self, sandbox_id: str, kinds: Sequence[str]) -> None:
        if "pid" in kinds:
            await self._stop_holder(sandbox_id)
        for kind in kinds:
            path = self.pin_path(kind, sandbox_id)
            for _ in range(8):  # stacked pins (never ours, but a crash could leave two)
                if pinned_type(path) is None:
                    break
                await self._run(self._umount, "--lazy", str(path))
            else:
                raise NamespaceError(f"{path} is still pinned after unmounting it")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if "pid" in kinds:
            with contextlib.suppress(FileNotFoundError):
                self.holder_pid_path(sandbox_id).unlink()

    async def _run(self, *argv: str) -> str:
        try:
            done = await run_command(argv, cwd="/", timeout=self._timeout)
        except CommandTimeout:
            raise NamespaceError(f"{argv[0]} timed out after {self._timeout}s") from None
        except CommandError as failure:
            message = f"{' '.join(argv[:3])}: exit {failure.returncode}: {failure.output}"
            raise NamespaceError(message) from None
        return done.stdout.decode(errors="replace")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: its namespaces are gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _list_dir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
