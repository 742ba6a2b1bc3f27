"""A private dockerd for the Docker-backed runtime's tests, and its thorough cleanup.

Each instance has its own data root, exec root (a short directory under /run, so
unix socket paths stay under 108 bytes), API socket, pidfile, ``daemon.json`` (so
the host's /etc/docker/daemon.json never applies) and bridge.

Network decisions, so nothing leaves the machine and nothing is left on it:

* The bridge is the instance's own: named ``mkd<6 hex digits>``, on the first /24 of
  10.87.0.0/16 that no interface uses (apart from containerd's 10.88.0.0/16 and
  Docker's default 172.17.0.0/16; chosen under a lock, so concurrent test sessions
  never collide), created before dockerd starts and deleted after it stops.
  ``--bridge`` makes it the default ``bridge`` network, so pods get their IPs there.
* A session that dies without stopping its dockerd is cleaned up after by the next
  one: the exec root records its owner's PID, bridge and workdir.
* Outside its roots dockerd makes /run/docker/plugins and its containerd
  /run/containerd/s, and the trust key goes to the workdir (``daemon.json``), not
  /etc/docker/key.json; the last harness dockerd out removes those directories when
  empty.
* ``--iptables=false --ip-masq=false --ip-forward=false``: dockerd writes no
  iptables rules (nothing to clean up in the host's tables, and no masquerading
  that would let a container talk to the world). Published ports still work
  through ``docker-proxy`` (the userland proxy), which needs no rules.
* The daemon's HTTP(S) proxy can be an egress trap (see ``tests/harness/egress.py``):
  registries on 127.0.0.0/8 are reached directly, any other host is refused there.
* ``--oom-score-adjust`` is this process's own score: dockerd would lower itself
  to -500 by default, which this machine (no CAP_SYS_RESOURCE) must never try.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.harness.containerd import _shim_processes, mounts_under, shim_socket_path
from tests.harness.process import stop_process, wait_ready
from tests.harness.registry import log_tail
from tests.harness.wait import WaitTimeout, wait_until_sync

DOCKERD_BINARY = "dockerd"
DOCKERD_PACKAGE = "docker.io"
READY_TIMEOUT = 60.0
STOP_GRACE = 20.0
API_VERSION = "v1.41"
#: Each instance takes a free /24 of this pool (apart from containerd's 10.88.0.0/16 and
#: Docker's default 172.17.0.0/16) for a bridge of its own, named mkd<6 hex digits>.
SUBNET_POOL = "10.87.0.0/16"
EXEC_ROOT_PREFIX = "mkdock-"
OWNER_FILE = "harness-owner.json"
LOCK_NAME = "minikubelet-dockerd.lock"
#: What any dockerd creates outside its own roots: its plugin socket directory, and
#: containerd 1.6's shim socket directory. Removed (when empty) by the last one out.
HOST_DIRS = (
    Path("/run/docker"),
    Path("/run/docker/plugins"),
    Path("/run/containerd"),
    Path("/run/containerd/s"),
)


class DockerdError(RuntimeError):
    """dockerd could not be started or is unhealthy."""


def _run(cmd: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return subprocess.CompletedProcess(cmd, -1, "", str(exc))


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _own_oom_score_adj() -> int:
    try:
        return int(Path("/proc/self/oom_score_adj").read_text().strip())
    except (OSError, ValueError):
        return 0


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _descendants(roots: Iterable[Path]) -> list[int]:
    """Processes whose command line names one of ``roots`` (dockerd, its containerd, shims)."""
    names = [str(r) for r in roots]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(name in cmdline for name in names):
            found.append(int(entry.name))
    return found


def _dockerd_running() -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == DOCKERD_BINARY:
                    return True
    return False


def _clean_up(exec_root: Path, workdir: Path, bridge: str) -> None:
    """Remove whatever a dockerd with these directories and bridge left on the host."""
    data_root = workdir / "data"
    # shims of a container that outlived its daemon: their sockets live in /run/containerd/s
    shim_address = str(exec_root / "containerd" / "containerd.sock")
    shim_sockets = [
        shim_socket_path(shim_address, flags["namespace"], flags["id"])
        for _, flags in _shim_processes(shim_address)
        if "namespace" in flags and "id" in flags
    ]
    leftovers = _descendants([exec_root, data_root])
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(WaitTimeout):  # best effort: clean up the rest all the same
        wait_until_sync(
            lambda: not any(map(_pid_alive, leftovers)), timeout=10, message="leftovers to die"
        )
    for sock in shim_sockets:
        with contextlib.suppress(OSError):
            sock.unlink()
    for point in mounts_under([workdir, exec_root]):
        if _run(["umount", point]).returncode != 0:
            _run(["umount", "-l", point])
    shutil.rmtree(exec_root, ignore_errors=True)
    shutil.rmtree(data_root, ignore_errors=True)
    if bridge and Path("/sys/class/net", bridge).exists():
        _run(["ip", "link", "del", bridge])
    others = [p for p in exec_root.parent.glob(EXEC_ROOT_PREFIX + "*") if p != exec_root]
    if not others and not _dockerd_running():
        # shared by every dockerd: the last one out removes them (when empty), and a
        # dockerd or containerd started later makes them again
        for path in sorted(HOST_DIRS, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()


def sweep_stale(run_base: Path) -> None:
    """Clean up after harness dockerds whose test session died without stopping them."""
    for exec_root in run_base.glob(EXEC_ROOT_PREFIX + "*"):
        try:
            owner = json.loads((exec_root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # being set up right now, or not ours
        if _pid_alive(int(owner.get("pid", 0))):
            continue
        _clean_up(
            exec_root,
            Path(owner.get("workdir", exec_root)),
            str(owner.get("bridge", "")),
        )


class Dockerd:
    """A dockerd process with private directories, socket and bridge."""

    def __init__(
        self,
        workdir: Path,
        *,
        subnet_pool: str = SUBNET_POOL,
        insecure_registries: Iterable[str] = (),
        proxy_env: Mapping[str, str] | None = None,
        run_base: Path = Path("/run"),
    ) -> None:
        self.workdir = Path(workdir)
        self.data_root = self.workdir / "data"
        self.config_path = self.workdir / "daemon.json"
        self.log_path = self.workdir / "dockerd.log"
        self.subnet_pool = ipaddress.IPv4Network(subnet_pool)
        self.bridge = ""  # chosen at start: mkd<6 hex>
        self.subnet: ipaddress.IPv4Network | None = None  # a free /24 of the pool, at start
        self.insecure_registries = tuple(insecure_registries)
        self.proxy_env = dict(proxy_env or {})
        self.run_base = run_base
        self.exec_root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- paths ---------------------------------------------------------------------------------

    def _require_exec_root(self) -> Path:
        if self.exec_root is None:
            raise DockerdError("dockerd not started")
        return self.exec_root

    @property
    def socket_path(self) -> str:
        return str(self._require_exec_root() / "docker.sock")

    @property
    def host(self) -> str:
        """``unix:///run/.../docker.sock``, what ``--docker-host`` takes."""
        return "unix://" + self.socket_path

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- the API, for the harness and for tests that check what dockerd holds ------------------

    def api(
        self, method: str, path: str, body: Any = None, *, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """One Engine API call; returns (status, decoded JSON body or None)."""
        conn = _UnixHTTPConnection(self.socket_path, timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, f"/{API_VERSION}{path}", body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if not data:
            return resp.status, None
        try:
            return resp.status, json.loads(data)
        except json.JSONDecodeError:
            return resp.status, data.decode(errors="replace")

    def ping(self) -> bool:
        try:
            status, _ = self.api("GET", "/_ping", timeout=2)
        except OSError:
            return False
        return status == 200

    def containers(self, label: str = "") -> list[dict[str, Any]]:
        """Every container (running or not), optionally those carrying ``label``."""
        query = "?all=1"
        if label:
            query += "&filters=" + json.dumps({"label": [label]}).replace(" ", "")
        status, body = self.api("GET", "/containers/json" + query)
        if status != 200:
            raise DockerdError(f"listing containers: {status} {body}")
        return list(body)

    # -- lifecycle -----------------------------------------------------------------------------

    def _used_networks(self) -> list[ipaddress.IPv4Network]:
        out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
        return [
            ipaddress.IPv4Interface(match.group(1)).network
            for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", out)
        ]

    def _create_bridge(self) -> None:
        """A bridge of this instance's own, on a /24 of the pool no interface uses yet.

        Concurrent test sessions each start their own dockerd: an exclusive lock keeps
        two of them from choosing the same subnet at the same time.
        """
        with open(self.run_base / LOCK_NAME, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = self._used_networks()
            free = (
                candidate
                for candidate in self.subnet_pool.subnets(new_prefix=24)
                if not any(candidate.overlaps(net) for net in used)
            )
            subnet = next(free, None)
            if subnet is None:
                raise DockerdError(f"no free /24 left in {self.subnet_pool}")
            self.subnet = subnet
            self.bridge = "mkd" + secrets.token_hex(3)
            cidr = f"{subnet.network_address + 1}/{subnet.prefixlen}"
            for cmd in (
                ["ip", "link", "add", self.bridge, "type", "bridge"],
                ["ip", "addr", "add", cidr, "dev", self.bridge],
                ["ip", "link", "set", self.bridge, "up"],
            ):
                proc = _run(cmd)
                if proc.returncode != 0:
                    raise DockerdError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")

    def _write_owner(self) -> None:
        """What a later session needs to clean up after this one, should this one crash."""
        owner = {
            "pid": os.getpid(),
            "bridge": self.bridge,
            "workdir": str(self.workdir),
        }
        (self._require_exec_root() / OWNER_FILE).write_text(json.dumps(owner))

    def _write_config(self) -> None:
        # Our own config file: the host's /etc/docker/daemon.json never applies, and the
        # daemon's trust key goes to the workdir instead of /etc/docker/key.json.
        config = {"deprecated-key-path": str(self.workdir / "key.json")}
        self.config_path.write_text(json.dumps(config) + "\n")

    def start(self, timeout: float = READY_TIMEOUT) -> Dockerd:
        """Start dockerd (creating the bridge on first start) and wait for ``/_ping``."""
        binary = shutil.which(DOCKERD_BINARY)
        if binary is None:
            raise DockerdError(f"{DOCKERD_BINARY} not found (Debian package {DOCKERD_PACKAGE})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        if self.exec_root is None:
            self.run_base.mkdir(parents=True, exist_ok=True)
            sweep_stale(self.run_base)
            self.exec_root = Path(tempfile.mkdtemp(prefix=EXEC_ROOT_PREFIX, dir=self.run_base))
            self._create_bridge()
            self._write_owner()
        self._write_config()
        cmd = [
            binary,
            "--config-file",
            str(self.config_path),
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--host",
            self.host,
            "--pidfile",
            str(self.exec_root / "docker.pid"),
            "--bridge",
            self.bridge,
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--userland-proxy=true",
            "--oom-score-adjust",
            str(_own_oom_score_adj()),
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--log-level",
            "info",
        ]
        for registry in self.insecure_registries:
            cmd += ["--insecure-registry", registry]
        self._log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self._proc = subprocess.Popen(
            cmd,
            env={**env, **self.proxy_env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        last = wait_ready(
            self._proc,
            lambda: (
                None
                if Path(self.socket_path).exists() and self.ping()
                else "socket not answering yet"
            ),
            name="dockerd",
            timeout=timeout,
        )
        if last is None:
            return self
        tail = log_tail(self.log_path)
        self.stop()
        raise DockerdError(f"dockerd not ready ({last}); log tail:\n{tail}")

    def _remove_containers(self) -> None:
        with contextlib.suppress(OSError, DockerdError):
            for c in self.containers():
                with contextlib.suppress(OSError):
                    self.api("DELETE", f"/containers/{c['Id']}?force=1&v=1", timeout=30)

    def halt(self) -> None:
        """Stop the daemon (its containers stop with it) but keep its data for a restart."""
        proc, self._proc = self._proc, None
        stop_process(proc, grace=STOP_GRACE)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop dockerd and leave nothing behind: containers, mounts, dirs, the bridge."""
        if self.pid is not None:
            self._remove_containers()
        self.halt()
        if self.exec_root is None:
            return
        _clean_up(self.exec_root, self.workdir, self.bridge)
        self.exec_root = None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RuntimeServer:
    """``minikubelet runtime serve docker`` as its own process, on a private unix socket."""

    def __init__(
        self,
        socket_dir: Path,
        docker_host: str,
        *,
        registry_mirrors: Iterable[str] = (),
        name: str = "docker.sock",
    ) -> None:
        self.socket_dir = Path(socket_dir)
        self.endpoint = f"unix://{self.socket_dir / name}"
        self.docker_host = docker_host
        self.registry_mirrors = tuple(registry_mirrors)
        self.log_path = self.socket_dir / "runtime.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> RuntimeServer:
        import sys

        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd = [
            sys.executable,
            "-m",
            "minikubelet",
            "-v",
            "runtime",
            "serve",
            "docker",
            "--listen",
            self.endpoint,
            "--docker-host",
            self.docker_host,
        ]
        for mirror in self.registry_mirrors:
            cmd += ["--registry-mirror", mirror]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
            )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and b"serving" not in line:
            line = self._proc.stdout.readline()
            if not line and self._proc.poll() is not None:
                break
        if b"serving" not in line:
            self.stop()
            raise DockerdError(
                f"the docker runtime did not start: {line!r}; log tail:\n{log_tail(self.log_path)}"
            )
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, grace=15)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        """The runtime server's process (0 when it is not running)."""
        return self._proc.pid if self._proc is not None else 0

    def __enter__(self) -> RuntimeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
