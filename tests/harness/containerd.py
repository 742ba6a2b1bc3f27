"""A private containerd (with its CRI plugin) for contract tests, and its thorough cleanup."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from minikubelet.util.mountinfo import read_mount_points
from tests.harness.process import GaveUp, stop_process, wait_ready
from tests.harness.registry import log_tail
from tests.harness.wait import WaitTimeout, wait_until_sync

CONTAINERD_BINARY = "containerd"
CTR_BINARY = "ctr"
RUNC_BINARY = "runc"
CNI_BIN_DIR = Path("/usr/lib/cni")
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
READY_TIMEOUT = 60.0
# containerd 1.6 puts shim sockets here whatever its own state dir is.
SHIM_SOCKET_DIR = Path("/run/containerd/s")
# libcni caches ADD results here; containerd 1.6 has no setting to move it.
CNI_CACHE_DIR = Path("/var/lib/cni")
CNI_NETWORK_NAME = "minikubelet-test"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Without a cgroup_parent, CRI puts containers under /<namespace>/<id> in each hierarchy.
CRI_NAMESPACE = "k8s.io"
# The bridge, libcni's cache and the k8s.io cgroups are the host's: one harness containerd
# at a time (test sessions run side by side on a developer's machine wait for each other).
HOST_LOCK = Path("/run/minikubelet-test-containerd.lock")
HOST_LOCK_TIMEOUT = 900.0


class ContainerdError(RuntimeError):
    """containerd could not be started or is unhealthy."""


def _toml_str(value: str) -> str:
    """Quote ``value`` as a TOML basic string."""
    return json.dumps(value)


def _run(cmd: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing output; never raises for a non-zero exit or a timeout."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, -1, "", f"timed out after {exc.timeout}s")
    except OSError as exc:
        return subprocess.CompletedProcess(cmd, -1, "", str(exc))


def _delete_task(tasks_cmd: list[str], task: str, deadline: float) -> bool:
    """Force-delete ``task`` once with ``tasks_cmd`` (``ctr ... tasks``): whether it is gone."""
    proc = _run(
        [*tasks_cmd, "delete", "--force", task], timeout=max(1.0, deadline - time.monotonic())
    )
    return proc.returncode == 0 or "not found" in proc.stderr


def parse_plugins(output: str) -> dict[str, str]:
    """Map ``TYPE.ID`` to STATUS from ``ctr plugins ls`` output."""
    result: dict[str, str] = {}
    for line in output.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            result[f"{fields[0]}.{fields[1]}"] = fields[-1]
    return result


def mounts_under(prefixes: list[Path]) -> list[str]:
    """Return mount points at or below any of ``prefixes``, deepest first."""
    roots = [str(p.resolve()) for p in prefixes]
    try:
        points = read_mount_points()
    except OSError:
        return []
    found = [p for p in points if any(p == r or p.startswith(r + "/") for r in roots)]
    # Deepest first; later (stacked) mounts before earlier ones at the same depth.
    ordered = list(reversed(found))
    ordered.sort(key=lambda p: p.count("/"), reverse=True)
    return ordered


def _shim_processes(address: str) -> list[tuple[int, dict[str, str]]]:
    """Return (pid, flags) of containerd shims whose command line names ``address``."""
    shims: list[tuple[int, dict[str, str]]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if not args or "containerd-shim" not in os.path.basename(args[0]):
            continue
        flags: dict[str, str] = {}
        for i, arg in enumerate(args[:-1]):
            if arg.startswith("-"):
                flags[arg.lstrip("-")] = args[i + 1]
        if flags.get("address") == address:
            shims.append((int(entry.name), flags))
    return shims


def shim_socket_path(address: str, namespace: str, shim_id: str) -> Path:
    """Where containerd 1.6 puts the socket of shim ``shim_id`` (see shim.SocketAddress)."""
    digest = hashlib.sha256(os.path.join(address, namespace, shim_id).encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def render_hosts_toml(url: str) -> str:
    """A ``certs.d/<namespace>/hosts.toml`` making ``url`` the one host serving a namespace.

    containerd 1.6 (remotes/docker/config/hosts.go) tries the ``[host]`` entries in
    order, then the root ``server``; a file without any ``[host]`` table fails to
    decode ("invalid `host` tree") and an empty ``server`` defaults to the upstream
    (``registry-1.docker.io`` for ``docker.io``). So both name ``url``, pull and
    resolve only, and the upstream is never tried.
    """
    return (
        f"server = {_toml_str(url)}\n"
        'capabilities = ["pull", "resolve"]\n\n'
        f"[host.{_toml_str(url)}]\n"
        '  capabilities = ["pull", "resolve"]\n'
    )


class Containerd:
    """A containerd process with private root/state/sockets and a CRI config for tests."""

    def __init__(
        self,
        workdir: Path,
        *,
        sandbox_image: str,
        registry_host: str | None = None,
        mirrors: Mapping[str, str] | None = None,
        proxy_env: Mapping[str, str] | None = None,
        bridge: str = "mkcni0",
        subnet: str = "10.88.0.0/16",
        run_base: Path = Path("/run"),
    ) -> None:
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.cni_conf_dir = self.workdir / "cni" / "net.d"
        self.cni_data_dir = self.workdir / "cni" / "ipam"
        self.certs_dir = self.workdir / "certs.d"
        self.config_path = self.workdir / "config.toml"
        self.log_path = self.workdir / "containerd.log"
        self.sandbox_image = sandbox_image
        self.registry_host = registry_host
        # Registry host namespace (``docker.io``) -> the only URL that serves it.
        self.mirrors = dict(mirrors or {})
        # HTTP(S)_PROXY for the daemon: where a request to a non-loopback host would go.
        self.proxy_env = dict(proxy_env or {})
        self.bridge = bridge
        self.subnet = subnet
        self.run_base = run_base
        # Unix socket paths must stay under 108 bytes: keep them in a short dir under /run.
        self.run_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._host_lock: int | None = None
        # Host paths that containerd, its shims or CNI may create outside our own dirs.
        self._host_paths_before: set[Path] = set()

    # -- paths ---------------------------------------------------------------------------------

    def _require_run_dir(self) -> Path:
        if self.run_dir is None:
            raise ContainerdError("containerd not started")
        return self.run_dir

    @property
    def state(self) -> Path:
        """containerd's state directory (runtime state, netns mounts, runc root)."""
        return self._require_run_dir() / "state"

    @property
    def address(self) -> str:
        """Path of containerd's gRPC unix socket."""
        return str(self._require_run_dir() / "containerd.sock")

    @property
    def endpoint(self) -> str:
        """The CRI endpoint, ``unix:///.../containerd.sock``."""
        return "unix://" + self.address

    @property
    def runc_root(self) -> Path:
        """The runc ``--root`` parent; one subdirectory per containerd namespace."""
        return self.state / "runc"

    # -- config --------------------------------------------------------------------------------

    def _write_cni_config(self) -> None:
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        self.cni_data_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK_NAME,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    # No routes: pods reach only their own subnet (and the host on it).
                    # No loopback entry: CRI adds its own "cni-loopback" network for lo.
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "dataDir": str(self.cni_data_dir),
                    },
                },
            ],
        }
        (self.cni_conf_dir / "10-minikubelet-test.conflist").write_text(
            json.dumps(conflist, indent=2) + "\n"
        )

    def _write_registry_hosts(self) -> None:
        self.certs_dir.mkdir(parents=True, exist_ok=True)
        hosts = dict(self.mirrors)
        if self.registry_host is not None:
            hosts[self.registry_host] = f"http://{self.registry_host}"
        for namespace, url in hosts.items():
            host_dir = self.certs_dir / namespace
            host_dir.mkdir(parents=True, exist_ok=True)
            (host_dir / "hosts.toml").write_text(render_hosts_toml(url))

    def render_config(self) -> str:
        """Return containerd's config.toml (version 2) for this instance."""
        run_dir = self._require_run_dir()
        cri = f'plugins."{CRI_PLUGIN}"'
        q = _toml_str
        return f"""version = 2
root = {q(str(self.root))}
state = {q(str(self.state))}
oom_score = 0

[grpc]
  address = {q(self.address)}

[ttrpc]
  address = {q(str(run_dir / "containerd-ttrpc.sock"))}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {q(str(self.root / "opt"))}

[{cri}]
  sandbox_image = {q(self.sandbox_image)}
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  # Refresh snapshot usage (ImageFsInfo) every second instead of every 10.
  stats_collect_period = 1

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = {q(shutil.which(RUNC_BINARY) or RUNC_BINARY)}
  Root = {q(str(self.runc_root))}

[{cri}.cni]
  bin_dir = {q(str(CNI_BIN_DIR))}
  conf_dir = {q(str(self.cni_conf_dir))}
  max_conf_num = 1

[{cri}.registry]
  config_path = {q(str(self.certs_dir))}
"""

    # -- lifecycle -----------------------------------------------------------------------------

    def ctr(self, *args: str, namespace: str | None = None, timeout: float = 10.0) -> str:
        """Run ``ctr --address SOCK [-n NS] ARGS``; return stdout or raise ContainerdError."""
        cmd = [CTR_BINARY, "--address", self.address]
        if namespace is not None:
            cmd += ["--namespace", namespace]
        proc = _run([*cmd, *args], timeout=timeout)
        if proc.returncode != 0:
            raise ContainerdError(f"{' '.join(cmd + list(args))} failed: {proc.stderr.strip()}")
        return proc.stdout

    def plugins(self) -> dict[str, str]:
        """Return ``TYPE.ID`` -> status for every containerd plugin."""
        return parse_plugins(self.ctr("plugins", "ls"))

    def _cri_version_ok(self) -> bool:
        """Whether the CRI RuntimeService answers Version (raw gRPC, no generated stubs)."""
        import grpc

        with grpc.insecure_channel(self.endpoint) as channel:
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/runtime.v1.RuntimeService/Version"
            )
            try:
                call(b"", timeout=2)
            except grpc.RpcError:
                return False
        return True

    def start(self, timeout: float = READY_TIMEOUT) -> Containerd:
        """Write the config, start containerd, and wait until its CRI plugin serves."""
        for binary, package in (
            (CONTAINERD_BINARY, "containerd"),
            (CTR_BINARY, "containerd"),
            (RUNC_BINARY, "runc"),
        ):
            if shutil.which(binary) is None:
                raise ContainerdError(f"{binary} not found (Debian package {package})")
        if not (CNI_BIN_DIR / "bridge").is_file():
            raise ContainerdError(
                f"{CNI_BIN_DIR}/bridge not found (Debian package containernetworking-plugins)"
            )
        self._lock_host()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.run_base.mkdir(parents=True, exist_ok=True)
            self.run_dir = Path(tempfile.mkdtemp(prefix="minikubelet-test-", dir=self.run_base))
            if len(str(self.run_dir / "containerd-ttrpc.sock").encode()) >= 108:
                raise ContainerdError(f"unix socket paths under {self.run_dir} would be too long")
            self._host_paths_before = {p for p in self._host_paths() if p.exists()}
            self.root.mkdir(parents=True, exist_ok=True)
            self._write_cni_config()
            self._write_registry_hosts()
            self.config_path.write_text(self.render_config())
            self._log = self.log_path.open("ab")
            env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
            self._proc = subprocess.Popen(
                [CONTAINERD_BINARY, "--config", str(self.config_path)],
                env={**env, **self.proxy_env},
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        last = wait_ready(
            self._proc, self._not_ready, name="containerd", timeout=timeout, interval=0.1
        )
        if last is None:
            return
        raise ContainerdError(
            f"containerd not ready ({last}); config {self.config_path}; "
            f"log tail:\n{log_tail(self.log_path)}"
        )

    def _not_ready(self) -> str | None:
        if not Path(self.address).exists():
            return "socket not there yet"
        proc = _run([CTR_BINARY, "--address", self.address, "plugins", "ls"], 5)
        if proc.returncode != 0:
            return proc.stderr.strip()
        status = parse_plugins(proc.stdout).get(CRI_PLUGIN)
        if status not in (None, "ok"):
            raise GaveUp(f"{CRI_PLUGIN} plugin status {status!r}")
        if status == "ok" and self._cri_version_ok():
            return None
        return f"{CRI_PLUGIN} plugin status {status!r}, CRI not serving yet"

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of containerd's log."""
        return log_tail(self.log_path, lines)

    def _kill_tasks(self, deadline: float) -> None:
        """Kill and delete every task in every namespace while containerd still runs."""
        try:
            namespaces = self.ctr("namespaces", "ls", "-q").split()
        except ContainerdError:
            return
        for ns in namespaces:
            try:
                tasks = [
                    line.split()[0]
                    for line in self.ctr("tasks", "ls", namespace=ns).splitlines()[1:]
                    if line.strip()
                ]
            except ContainerdError:
                continue
            base = [CTR_BINARY, "--address", self.address, "--namespace", ns, "tasks"]
            for task in tasks:
                remaining = max(1.0, deadline - time.monotonic())
                _run([*base, "kill", "--all", "--signal", "SIGKILL", task], timeout=remaining)
            for task in tasks:
                with contextlib.suppress(WaitTimeout):  # best effort: stop goes on regardless
                    wait_until_sync(
                        functools.partial(_delete_task, base, task, deadline),
                        timeout=max(0.0, deadline - time.monotonic()),
                        interval=0.1,
                        message=f"task {task} to be deleted",
                    )

    def _lock_host(self, timeout: float = HOST_LOCK_TIMEOUT) -> None:
        """Take :data:`HOST_LOCK`, waiting while another session's harness containerd runs."""
        if self._host_lock is not None:
            return
        fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

        def locked() -> bool:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True

        try:
            wait_until_sync(
                locked,
                timeout=timeout,
                interval=0.2,
                message=str(HOST_LOCK),
                ignoring=(BlockingIOError,),
            )
        except WaitTimeout:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ContainerdError(
                f"another harness containerd (pid {holder or '?'}) has held {HOST_LOCK}"
                f" for over {timeout:.0f}s"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._host_lock = fd

    def _unlock_host(self) -> None:
        fd, self._host_lock = self._host_lock, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def stop(self) -> None:
        """Stop containerd and leave nothing behind: tasks, shims, mounts, dirs, bridge."""
        try:
            self._stop()
        finally:
            self._unlock_host()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._kill_tasks(time.monotonic() + 20)
        stop_process(proc, grace=15)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.run_dir is None:
            return  # never started: nothing of ours on the host
        self._kill_shims()
        self._delete_runc_containers()
        self._unmount_all()
        sandbox_ids = self._sandbox_ids()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for path in (self.root, self.workdir / "cni", self.certs_dir):
            shutil.rmtree(path, ignore_errors=True)
        # The bridge name is the harness's own: delete it even if a crashed run left it.
        if Path("/sys/class/net", self.bridge).exists():
            _run(["ip", "link", "del", self.bridge])
        self._remove_host_leftovers(sandbox_ids)

    @staticmethod
    def _host_paths() -> list[Path]:
        """Directories outside our own that a run may create, parents before children."""
        paths = [SHIM_SOCKET_DIR.parent, SHIM_SOCKET_DIR, CNI_CACHE_DIR, CNI_CACHE_DIR / "results"]
        if CGROUP_ROOT.is_dir():
            paths.append(CGROUP_ROOT / CRI_NAMESPACE)  # cgroup v2 (unified) layout
            paths += sorted(p / CRI_NAMESPACE for p in CGROUP_ROOT.iterdir() if p.is_dir())
        return paths

    def _sandbox_ids(self) -> set[str]:
        """IDs of every pod sandbox this containerd's CRI plugin knows about."""
        sandboxes = self.root / CRI_PLUGIN / "sandboxes"
        with contextlib.suppress(OSError):
            return {p.name for p in sandboxes.iterdir()}
        return set()

    def _remove_host_leftovers(self, sandbox_ids: set[str]) -> None:
        """Remove our CNI cache entries and host dirs that did not exist before start."""
        results = CNI_CACHE_DIR / "results"
        if results.is_dir():
            for entry in results.iterdir():
                # libcni names them NETWORK-SANDBOXID-IFNAME.
                ours = entry.name.startswith(CNI_NETWORK_NAME + "-") or any(
                    f"-{sid}-" in entry.name for sid in sandbox_ids
                )
                if ours:
                    with contextlib.suppress(OSError):
                        entry.unlink()
        for path in reversed(self._host_paths()):
            if path in self._host_paths_before or not path.is_dir():
                continue
            # Empty dirs only (cgroup dirs count as empty once they have no child cgroups).
            for sub in sorted(path.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()

    def _kill_shims(self) -> None:
        shims = _shim_processes(self.address)
        for pid, _ in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(WaitTimeout):  # best effort: clean up the rest all the same
            wait_until_sync(
                lambda: not any(_pid_alive(pid) for pid, _ in shims),
                timeout=10,
                message="the shims to die",
            )
        for _, flags in shims:
            if "namespace" in flags and "id" in flags:
                sock = shim_socket_path(self.address, flags["namespace"], flags["id"])
                with contextlib.suppress(OSError):
                    sock.unlink()

    def _delete_runc_containers(self) -> None:
        if not self.runc_root.is_dir():
            return
        runc = shutil.which(RUNC_BINARY) or RUNC_BINARY
        for ns_root in sorted(self.runc_root.iterdir()):
            listing = _run([runc, "--root", str(ns_root), "list", "-q"])
            for cid in listing.stdout.split():
                _run([runc, "--root", str(ns_root), "delete", "--force", cid], timeout=20)

    def _unmount_all(self) -> None:
        for point in mounts_under([self.workdir, self._require_run_dir()]):
            if _run(["umount", point]).returncode != 0:
                _run(["umount", "-l", point])

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
