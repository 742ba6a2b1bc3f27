"""``kubectl exec`` and ``kubectl logs`` through the API server against the node's own CLI.

    python -m bench.kubelet_api [--runtime native|fake] [--runs 20] [--trace FILE]

Starts a control plane on loopback (etcd, kube-apiserver, controller-manager,
scheduler: tests/harness/controlplane.py), a runtime (``minikubelet -vv runtime serve``,
its own process, so its log is the bench's to read) and a node on it (``minikubelet -v
run --kubeconfig`` as ``system:node:NAME``, its kubelet API on 127.0.0.1 trusting the
cluster CA's client certificates), and one busybox pod that logs 200 lines and sleeps.
Then, interleaved, ``--runs`` times each:

* ``kubectl exec POD -- true``: kubectl -> kube-apiserver -> kubelet API (CRI ``Exec``,
  then the stream proxied to the runtime's streaming URL) -> runtime, until kubectl exits;
* ``minikubelet exec POD -- true``: the node's local API -> CRI ``ExecSync``;
* ``minikubelet exec -i POD -- true`` (stdin at EOF): CRI ``Exec`` and the runtime's
  streaming server, without the API server and the kubelet API in between;
* ``kubectl logs POD`` and ``minikubelet logs POD``: time to the first byte on stdout.

Each figure is a whole command, process start included; the start of each CLI alone
(``kubectl version --client``, ``minikubelet --help``) is measured too, so it can be
taken away. Prints median, p90, min and max, and the ratios API-server path / direct.

``--trace FILE`` also runs one ``kubectl -v=7 exec POD -- echo hi`` and writes one
timeline of it: kubectl's requests and answers (its -v=7 lines), the node's CRI calls
for the pod (its trace ring, ``minikubelet trace``), the node's and the runtime's log
lines meanwhile. Needs root for the native runtime (runc, conmon) and the control
plane's binaries (scripts/install-deps, ../shared/bin).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from minikubelet.server.client import LocalClient
from minikubelet.util.mountinfo import read_mount_points
from tests.e2e.cluster import free_port
from tests.e2e.conftest import unmount_under
from tests.harness.controlplane import ControlPlane, find_binaries
from tests.harness.images import build_busybox_image, push_image
from tests.harness.native import BRIDGE
from tests.harness.process import stop_process
from tests.harness.registry import LocalRegistry

ROOT = Path(__file__).resolve().parents[1]
NODE = "bench-kapi"
POD = "bench-kapi"
CONTAINER = "app"
MINIKUBELET = [sys.executable, "-m", "minikubelet"]

POD_YAML = f"""apiVersion: v1
kind: Pod
metadata:
  name: {POD}
  namespace: default
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 0
  containers:
    - name: {CONTAINER}
      image: busybox:1.36
      command:
        - sh
        - -c
        - i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; exec sleep 36000
"""


@dataclass
class Cluster:
    cp: ControlPlane
    root_dir: Path  # the node's
    node_log: Path
    runtime_log: Path

    def kubectl(self, *args: str) -> list[str]:
        return [
            str(self.cp.binaries.kubectl),
            f"--kubeconfig={self.cp.admin_kubeconfig}",
            f"--cache-dir={self.cp.workdir / 'kubectl-cache'}",
            *args,
        ]

    def minikubelet(self, command: str, *args: str) -> list[str]:
        return [*MINIKUBELET, command, "--root-dir", str(self.root_dir), *args]


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            where = f"; see {log}" if log else ""
            raise SystemExit(f"timed out waiting for {what}{where}")
        time.sleep(0.3)


def _other_native_runtimes() -> bool:
    """Whether a native runtime other than ours runs on this host (sharing its bridge)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if b"runtime\0serve\0native" in (proc / "cmdline").read_bytes():
                return True
    return False


def native_cleanup(state: Path, run_root: Path) -> None:
    """What tests/harness/native.py ``cleanup`` does after a stopped native runtime
    (containers, their processes, mounts, directories), except that the CNI bridge it
    shares with any other native runtime on the host stays while one runs."""
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
    for proc in Path("/proc").iterdir():  # conmons and namespace holders of this runtime
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(run_root).encode() in cmdline or str(state).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
    mounts = read_mount_points()
    for point in sorted(
        (m for m in mounts if m.startswith((str(state), str(run_root)))), reverse=True
    ):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(run_root, ignore_errors=True)
    if not _other_native_runtimes():
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


@contextlib.contextmanager
def runtime_process(
    runtime: str, work: Path, registry: LocalRegistry | None
) -> Iterator[tuple[str, Path]]:
    """``minikubelet -vv runtime serve RUNTIME`` on a socket of its own; yields the
    endpoint and the log. Stopped, and for native cleaned up, at the end."""
    sock_dir = Path(tempfile.mkdtemp(prefix="mk-bench-sock-", dir="/tmp"))
    endpoint = f"unix://{sock_dir}/{runtime}.sock"
    state = work / "runtime"
    run_root = Path(tempfile.mkdtemp(prefix="mk-bench-", dir="/run"))
    extra: list[str] = []
    if runtime == "native":
        extra = ["--root", str(state), "--run-root", str(run_root)]
        if registry is not None:
            extra.append(f"--registry-mirror=docker.io=http://{registry.host}")
    log_path = work / "runtime.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*MINIKUBELET, "-vv", "runtime", "serve", runtime, "--listen", endpoint, *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
    try:
        assert proc.stdout is not None
        if b"serving" not in proc.stdout.readline():
            raise SystemExit(f"the {runtime} runtime did not start; see {log_path}")
        yield endpoint, log_path
    finally:
        stop_process(proc)
        if runtime == "native":
            native_cleanup(state, run_root)
        shutil.rmtree(run_root, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)


@contextlib.contextmanager
def node_process(
    cp: ControlPlane, work: Path, endpoint: str, verbosity: str = "-v"
) -> Iterator[Path]:
    """``minikubelet -v run`` on ``endpoint``, joined to ``cp``, until its Node is Ready
    (``-vv`` when tracing: the kubelet API's per-request and per-stream lines)."""
    (work / "manifests").mkdir(parents=True, exist_ok=True)
    log_path = work / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *MINIKUBELET,
                verbosity,
                "run",
                "--root-dir",
                str(work / "root"),
                "--manifests",
                str(work / "manifests"),
                "--runtime",
                endpoint,
                "--node-name",
                NODE,
                "--kubeconfig",
                str(cp.node_kubeconfig(NODE)),
                "--node-ip",
                "127.0.0.1",
                "--address",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--client-ca-file",
                str(cp.ca_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"the node exited ({proc.returncode}); see {log_path}")
            done = cp.kubectl(
                "get",
                "node",
                NODE,
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            )
            return done.returncode == 0 and done.stdout.strip() == "True"

        wait_for("the node to be Ready", ready, 60, log_path)
        yield log_path
    finally:
        cp.kubectl("delete", "pod", POD, "--grace-period=0", "--timeout=60s")
        stop_process(proc, grace=30)
        cp.kubectl("delete", "node", NODE, "--wait=false")


@contextlib.contextmanager
def cluster(runtime: str, node_verbosity: str = "-v") -> Iterator[Cluster]:
    binaries = find_binaries()
    if isinstance(binaries, str):
        raise SystemExit(binaries)
    work = Path(tempfile.mkdtemp(prefix="bench-kubelet-api-"))
    registry: LocalRegistry | None = None
    try:
        with ControlPlane(binaries, work / "cp") as cp:
            try:
                if runtime == "native":
                    registry = LocalRegistry(workdir=work / "registry")
                    registry.start()
                    image = build_busybox_image(work / "cache", tag="1.36")
                    push_image(image, registry.host, "library/busybox", "1.36")
                with (
                    runtime_process(runtime, work, registry) as (endpoint, runtime_log),
                    node_process(cp, work / "node", endpoint, node_verbosity) as node_log,
                ):
                    done = cp.kubectl("apply", "-f", "-", input=POD_YAML)
                    if done.returncode != 0:
                        raise SystemExit(done.stderr)

                    def running() -> bool:
                        done = cp.kubectl(
                            "get", "pod", POD, "-o", "jsonpath={.status.containerStatuses[0].ready}"
                        )
                        return done.stdout.strip() == "true"

                    wait_for(f"pod {POD} Running", running, 120, node_log)
                    yield Cluster(cp, work / "node" / "root", node_log, runtime_log)
            finally:
                if registry is not None:
                    registry.close()
    finally:
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


# --- measuring -----------------------------------------------------------------------------


def whole(cmd: list[str], *, stdin: int | None = subprocess.DEVNULL) -> float:
    """Seconds from starting ``cmd`` until it has exited (successfully)."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed


def first_byte(cmd: list[str]) -> float:
    """Seconds from starting ``cmd`` until the first byte on its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    got = os.read(proc.stdout.fileno(), 1)
    elapsed = time.perf_counter() - t0
    _, err = proc.communicate()
    if not got or proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode()}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def local_exec(c: Cluster) -> float:
    """The local API's ExecSync from this process: a new connection, no CLI start."""
    t0 = time.perf_counter()
    async with LocalClient(c.root_dir / "kubelet.sock") as client:
        result = await client.exec("default", POD, CONTAINER, ["true"])
    elapsed = time.perf_counter() - t0
    if result.exit_code != 0:
        raise SystemExit(f"ExecSync of true exited {result.exit_code}")
    return elapsed


async def local_logs(c: Cluster) -> float:
    """The local API's container log from this process: seconds to the first chunk."""
    t0 = time.perf_counter()
    async with LocalClient(c.root_dir / "kubelet.sock") as client:
        chunks = client.logs("default", POD, CONTAINER)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if chunk:
                    return time.perf_counter() - t0
    raise SystemExit("the local API's log of the pod was empty")


def measure(c: Cluster, runs: int) -> dict[str, list[float]]:
    pod = f"default/{POD}"
    loop = asyncio.new_event_loop()
    cases: dict[str, Callable[[], float]] = {
        "kubectl exec -- true": lambda: whole(
            c.kubectl("exec", POD, "-c", CONTAINER, "--", "true")
        ),
        "minikubelet exec -- true (ExecSync)": lambda: whole(
            c.minikubelet("exec", pod, "-c", CONTAINER, "--", "true")
        ),
        "minikubelet exec -i -- true (Exec)": lambda: whole(
            c.minikubelet("exec", "-i", pod, "-c", CONTAINER, "--", "true")
        ),
        "kubectl logs, first byte": lambda: first_byte(c.kubectl("logs", POD, "-c", CONTAINER)),
        "minikubelet logs, first byte": lambda: first_byte(
            c.minikubelet("logs", pod, "-c", CONTAINER)
        ),
        "kubectl version --client": lambda: whole(c.kubectl("version", "--client", "-o", "json")),
        "minikubelet --help": lambda: whole([*MINIKUBELET, "--help"]),
        "local API ExecSync, in process": lambda: loop.run_until_complete(local_exec(c)),
        "local API logs, first chunk, in process": lambda: loop.run_until_complete(local_logs(c)),
    }
    for case in cases.values():  # warm up: page cache, connections, the runtime's exec path
        case()
    figures: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(runs):
            for name, case in cases.items():
                figures[name].append(case())
    finally:
        loop.close()
    return figures


def report(runtime: str, runs: int, figures: dict[str, list[float]]) -> None:
    print(f"kubelet API bench, {runtime} runtime, {runs} runs each (ms, whole commands)")
    print(f"{'':40} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}")
    for name, values in figures.items():
        ms = [v * 1000 for v in values]
        print(
            f"{name:40} {statistics.median(ms):8.1f} {percentile(ms, 0.9):8.1f} "
            f"{min(ms):8.1f} {max(ms):8.1f}"
        )
    med = {name: statistics.median(values) for name, values in figures.items()}
    print("ratios of medians, API-server path / direct path:")
    for api, direct in (
        ("kubectl exec -- true", "minikubelet exec -- true (ExecSync)"),
        ("kubectl exec -- true", "minikubelet exec -i -- true (Exec)"),
        ("kubectl logs, first byte", "minikubelet logs, first byte"),
    ):
        print(f"  {api} / {direct}: {med[api] / med[direct]:.2f}")
    start = med["kubectl version --client"], med["minikubelet --help"]
    print(
        "the same with each CLI's start (kubectl version --client, minikubelet --help) taken away:"
    )
    for api, direct in (
        ("kubectl exec -- true", "minikubelet exec -- true (ExecSync)"),
        ("kubectl exec -- true", "minikubelet exec -i -- true (Exec)"),
        ("kubectl logs, first byte", "minikubelet logs, first byte"),
    ):
        a, d = med[api] - start[0], med[direct] - start[1]
        ratio = f"{a / d:.2f}" if a > 0 and d > 0 else "n/a (within the start's spread)"
        print(f"  {api} / {direct}: {a * 1000:.1f} / {d * 1000:.1f} ms = {ratio}")
    print("kubectl with its start taken away / the local API from this process:")
    for api, direct in (
        ("kubectl exec -- true", "local API ExecSync, in process"),
        ("kubectl logs, first byte", "local API logs, first chunk, in process"),
    ):
        a, d = med[api] - start[0], med[direct]
        print(f"  {api} / {direct}: {a * 1000:.1f} / {d * 1000:.1f} ms = {a / d:.2f}")


# --- one traced kubectl exec ---------------------------------------------------------------

_KLOG = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}:\d{2}:\d{2}\.\d{6})\s+\d+ (.*)$")
#: Lines that say nothing about the exec: kubectl's feature gates, grpc's loop lookups.
_NOISE = ("Feature gate default state", "[_cygrpc] Loaded running loop")
_PYLOG = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) (.*)$")


def _klog_time(month: str, day: str, clock: str) -> float:
    year = datetime.now().year
    return datetime.strptime(f"{year}-{month}-{day} {clock}", "%Y-%m-%d %H:%M:%S.%f").timestamp()


def _log_lines(path: Path, offset: int, source: str) -> list[tuple[float, str, str]]:
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    lines: list[tuple[float, str, str]] = []
    for line in text.splitlines():
        m = _PYLOG.match(line)
        if m:
            when = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(m[2]) / 1000
            lines.append((when, source, m[3]))
    return lines


def _cri_line(rec: dict[str, object]) -> str:
    details = rec.get("details") or {}
    assert isinstance(details, dict)
    parts = [f"{rec['service']}/{rec['method']} {rec['code']} in {rec['duration_ms']} ms"]
    if rec.get("container"):
        parts.append(f"container={rec['container']}")
    parts.extend(f"{key}={value}" for key, value in sorted(details.items()))
    return " ".join(parts)


def trace_exec(c: Cluster) -> str:
    """One ``kubectl -v=7 exec POD -- echo hi``, as a timeline of what each hop said."""
    node_offset = c.node_log.stat().st_size
    runtime_offset = c.runtime_log.stat().st_size
    started = time.time()
    cmd = c.kubectl("-v=7", "exec", POD, "-c", CONTAINER, "--", "echo", "hi")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    time.sleep(1)  # the last log lines of the node and the runtime
    events: list[tuple[float, str, str]] = []
    for line in done.stderr.splitlines():
        m = _KLOG.match(line)
        if m:
            events.append((_klog_time(m[1], m[2], m[3]), "kubectl", m[4]))
        elif events:  # a continuation (a header of a request or answer)
            events.append((events[-1][0], "kubectl", "    " + line.strip()))
    trace = subprocess.run(
        c.minikubelet("trace", "--format", "jsonl"),
        capture_output=True,
        text=True,
        check=True,
    )
    for line in trace.stdout.splitlines():
        rec = json.loads(line)
        about = rec["pod"] == f"default/{POD}" or "review" in rec["method"].lower()
        if rec["time"] >= started - 0.05 and about:
            hop = "kubelet API" if rec["service"] == "KubeAPI" else "kubelet CRI"
            events.append((rec["time"], hop, _cri_line(rec)))
    events += _log_lines(c.node_log, node_offset, "kubelet log")
    events += _log_lines(c.runtime_log, runtime_offset, "runtime log")
    events = [e for e in events if not any(n in e[2] for n in _NOISE)]
    events.sort(key=lambda e: e[0])
    out = [
        f"$ kubectl -v=7 exec {POD} -c {CONTAINER} -- echo hi",
        f"exit code {done.returncode}, stdout {done.stdout!r}",
        "",
        "hops: kubectl = its -v=7 lines; kubelet CRI / kubelet API = the node's recorded",
        "CRI calls about the pod and its API server access reviews (minikubelet trace);",
        "kubelet log / runtime log = their lines meanwhile (the runtime runs with -vv).",
        "Left out: kubectl's feature-gate lines, grpc's loop lookups.",
        "",
        "time (UTC)       +ms      hop          line",
    ]
    for when, source, text in events:
        clock = datetime.fromtimestamp(when, tz=UTC).strftime("%H:%M:%S.%f")
        out.append(f"{clock}  {(when - started) * 1000:7.1f}  {source:<11}  {text}")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["native", "fake"], default="native")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--trace", metavar="FILE", help="also write one traced kubectl exec to FILE ('-': stdout)"
    )
    args = parser.parse_args()
    with cluster(args.runtime, "-vv" if args.trace else "-v") as c:
        if args.runs > 0:
            report(args.runtime, args.runs, measure(c, args.runs))
        if args.trace:
            text = trace_exec(c)
            if args.trace == "-":
                print(text, end="")
            else:
                Path(args.trace).parent.mkdir(parents=True, exist_ok=True)
                Path(args.trace).write_text(text)
                print(f"trace of one kubectl exec written to {args.trace}")


if __name__ == "__main__":
    main()
