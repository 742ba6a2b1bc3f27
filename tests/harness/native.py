"""The native runtime (``minikubelet runtime serve native``) as a session fixture.

It runs as its own process with its own root, run root and socket, on its own CNI
bridge and subnet, and is stopped and cleaned up at the end of the session: no
container, mount, namespace, network link or directory of it is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minikubelet.util.mountinfo import read_mount_points
from tests.harness.process import stop_process
from tests.harness.registry import LocalRegistry

READY_TIMEOUT = 60.0
BRIDGE = "mkbr0"  # the native runtime's default CNI bridge


@dataclass(frozen=True)
class NativeRuntime:
    endpoint: str
    root: Path
    run_root: Path
    log_path: Path
    pid: int = 0  # the runtime server's process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _mounts_under(*dirs: Path) -> list[str]:
    points = read_mount_points()
    return sorted((p for p in points if any(p.startswith(str(d)) for d in dirs)), reverse=True)


def cleanup(root: Path, run_root: Path) -> None:
    """What a stopped native runtime may leave: running containers, mounts, pinned namespaces."""
    runc_root = run_root / "runc"
    if runc_root.is_dir():
        listing = subprocess.run(
            ["runc", "--root", str(runc_root), "list", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        for cid in listing.stdout.split():
            subprocess.run(
                ["runc", "--root", str(runc_root), "delete", "--force", cid],
                capture_output=True,
                check=False,
            )
    for proc in Path("/proc").iterdir():  # pid-namespace holders and conmons of this runtime
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(run_root).encode() in cmdline or str(root).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
    for point in _mounts_under(root, run_root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(run_root, ignore_errors=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


@pytest.fixture(scope="session")
def native_runtime(
    tmp_path_factory: pytest.TempPathFactory, local_registry: LocalRegistry
) -> Iterator[NativeRuntime]:
    """The native runtime, pulling docker.io images from the local registry (a mirror)."""
    if os.geteuid() != 0:
        pytest.fail("the native runtime must run as root", pytrace=False)
    for binary, package in (("runc", "runc"), ("conmon", "conmon")):
        if shutil.which(binary) is None:
            pytest.fail(
                f"{binary} not found: run scripts/install-deps (Debian package {package})",
                pytrace=False,
            )
    root = tmp_path_factory.mktemp("native")
    run_root = Path(tempfile.mkdtemp(prefix="mk-native-", dir="/run"))
    sock_dir = Path(tempfile.mkdtemp(prefix="mk-nsock-", dir="/tmp"))
    endpoint = f"unix://{sock_dir}/native.sock"
    log_path = root.parent / f"{root.name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "minikubelet",
                "-v",
                "runtime",
                "serve",
                "native",
                "--listen",
                endpoint,
                "--root",
                str(root / "state"),
                "--run-root",
                str(run_root),
                "--registry-mirror",
                f"docker.io=http://{local_registry.host}",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    runtime = NativeRuntime(endpoint, root / "state", run_root, log_path, proc.pid)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "serving" not in line:
            pytest.fail(
                f"the native runtime did not start:\n{runtime.log()[-3000:]}", pytrace=False
            )
        yield runtime
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        cleanup(root / "state", run_root)
        shutil.rmtree(sock_dir, ignore_errors=True)
