"""Where the time goes between a static pod's manifest and its running container.

    python -m bench.start_latency [--runtime containerd|native|unix:///PATH] [--runs 20]
    python -m bench.start_latency --batch 30 [--batch-rounds 3]

Starts a node (``minikubelet -vv run`` as its own process, with ``--trace-file``) on each
runtime asked for (default: a containerd started as the test harness starts it, then the
native runtime; ``unix:///PATH`` is a runtime already serving there), with busybox pulled
beforehand. Then, ``--runs`` times: writes one manifest (a static pod with one busybox
container) to a dot-name in the manifest directory and renames it into place, polls every
50 ms both the runtime (CRI ListContainers, the ``crictl ps`` view) and the kubelet's
``/pods`` (its local API socket), removes the manifest and waits for the pod to be gone
from both before the next run.

For each run it prints, relative to the rename: when the watch saw the change, when the
config merged the pod (``config ADD``), when its pod worker started syncing, each CRI
call of the pod (start, duration, and the gap before it), when the kubelet set the pod's
status Running, when the runtime showed the container running and when ``/pods`` reported
it Running. Those times come from the node's debug log (millisecond timestamps) and its
CRI trace (JSON lines: start time and duration of each call). Then the medians (p90, min,
max) over the runs of each point, and of the two totals.

``--batch N`` instead writes N manifests at once, ``--batch-rounds`` times, and prints the
time to all N running in the runtime and to all N Running in ``/pods``.
Needs root, runc, conmon, containerd, docker-registry, skopeo (scripts/install-deps).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import minikubelet
from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import CallRecord
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.server.client import KubeletUnreachable, LocalClient

NODE = "bench"
POLL = 0.05
POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: {image}
      imagePullPolicy: IfNotPresent
      command: ["sleep", "3600"]
"""

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([\w.]+): (.*)$")


# -- the node ------------------------------------------------------------------------------


class BenchNode:
    """``minikubelet -vv run`` on ``endpoint`` with its own root, manifests, log and trace."""

    def __init__(self, workdir: Path, endpoint: str) -> None:
        self.workdir = workdir
        self.endpoint = endpoint
        self.manifests = workdir / "manifests"
        self.log_path = workdir / "kubelet.log"
        self.trace_path = workdir / "trace.jsonl"
        self.socket = workdir / "root" / "kubelet.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.manifests.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "minikubelet",
                    "-vv",
                    "run",
                    "--root-dir",
                    str(self.workdir / "root"),
                    "--manifests",
                    str(self.manifests),
                    "--runtime",
                    self.endpoint,
                    "--node-name",
                    NODE,
                    "--port",
                    "0",
                    "--trace-file",
                    str(self.trace_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def client(self) -> LocalClient:
        return LocalClient(self.socket, timeout=30)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"the kubelet exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(KubeletUnreachable):
                async with self.client() as c:
                    if await c.healthz() == "ok":
                        return
            await asyncio.sleep(0.1)
        raise SystemExit("the kubelet's local API did not come up")

    def write(self, name: str, image: str) -> float:
        """Write the manifest of pod ``name`` and rename it into place; the rename's time."""
        tmp = self.manifests / f".{name}.yaml.tmp"
        tmp.write_text(POD.format(name=name, image=image))
        os.replace(tmp, self.manifests / f"{name}.yaml")
        return time.time()

    def remove(self, name: str) -> None:
        (self.manifests / f"{name}.yaml").unlink()


def _running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (cs.get("state") or {}) for cs in statuses)


async def _poll_runtime(cri: CRIClient, names: set[str], seen: dict[str, float]) -> None:
    """Every 50 ms: which of the pods ``names`` have a running container (``crictl ps``)."""
    running = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
    while len(seen) < len(names):
        for c in await cri.list_containers(running):
            pod = c.labels.get("io.kubernetes.pod.name", "")
            if pod in names and pod not in seen:
                seen[pod] = time.time()
        await asyncio.sleep(POLL)


async def _poll_api(
    client: LocalClient, names: set[str], seen: dict[str, float], uids: dict[str, str]
) -> None:
    """Every 50 ms: which of the pods ``names`` the kubelet's ``/pods`` reports Running."""
    while len(seen) < len(names):
        for pod in await client.pods():
            name = pod["metadata"]["name"]
            if name in names:
                uids[name] = pod["metadata"].get("uid", "")
                if name not in seen and _running(pod):
                    seen[name] = time.time()
        await asyncio.sleep(POLL)


async def _wait_gone(cri: CRIClient, client: LocalClient, names: set[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        api = {p["metadata"]["name"] for p in await client.pods()} & names
        sandboxes = {
            s.labels.get("io.kubernetes.pod.name", "") for s in await cri.list_pod_sandbox()
        } & names
        if not api and not sandboxes:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"pods still there 120 s after their manifests went: {sorted(names)}")


# -- one pod at a time ---------------------------------------------------------------------


@dataclass
class Run:
    name: str
    written: float
    in_runtime: float
    reported: float
    uid: str = ""
    points: list[tuple[str, float]] = field(default_factory=list)  # (what, epoch seconds)
    calls: list[tuple[str, float, float]] = field(default_factory=list)  # method, start, end

    @property
    def full_name(self) -> str:
        return f"{self.name}-{NODE}"


async def single_runs(
    node: BenchNode, cri: CRIClient, image: str, runs: int, tag: str
) -> list[Run]:
    results: list[Run] = []
    async with node.client() as client:
        for i in range(-1, runs):  # run -1 warms up (first sandbox, caches), not counted
            name = f"lat-{tag}-{i + 1}" if i >= 0 else f"lat-{tag}-warm"
            full = f"{name}-{NODE}"
            in_runtime: dict[str, float] = {}
            reported: dict[str, float] = {}
            uids: dict[str, str] = {}
            written = node.write(name, image)
            await asyncio.wait_for(
                asyncio.gather(
                    _poll_runtime(cri, {full}, in_runtime),
                    _poll_api(client, {full}, reported, uids),
                ),
                timeout=120,
            )
            if i >= 0:
                results.append(Run(name, written, in_runtime[full], reported[full], uids[full]))
            node.remove(name)
            await _wait_gone(cri, client, {full})
            await asyncio.sleep(0.2)  # let the teardown's last calls finish
    return results


# -- reading the node's log and trace -----------------------------------------------------


def _log_events(path: Path) -> list[tuple[float, str]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if m is None:
            continue
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        events.append((stamp + int(m.group(2)) / 1000, m.group(5)))
    return events


def _trace(path: Path) -> list[CallRecord]:
    if not path.exists():
        return []
    return [CallRecord.from_json(line) for line in path.read_text().splitlines() if line]


def _first(events: list[tuple[float, str]], after: float, needle: str) -> float | None:
    # log stamps are truncated to the millisecond
    return next((t for t, msg in events if t >= after - 0.001 and needle in msg), None)


def annotate(
    run: Run, events: list[tuple[float, str]], trace: list[CallRecord], *, image: str = ""
) -> None:
    """Fill in ``run.points`` and ``run.calls`` from the node's log and trace.

    Image calls carry no pod: with ``image`` (one pod at a time), those of that image between
    the pod worker's start and the Running status count as the pod's."""
    w = run.written
    seen = _first(events, w, "manifest change seen")
    merged = _first(events, w, f"config ADD pod=default/{run.full_name} ")
    if merged is not None:
        for t, msg in events:
            if t >= merged - 0.001 and f"config ADD pod=default/{run.full_name} uid=" in msg:
                run.uid = run.uid or msg.split(" uid=")[1].split()[0]
                break
    worker = next(
        (
            t
            for t, msg in events
            if t >= w - 0.001 and msg.startswith("pod worker sync") and f"uid={run.uid}" in msg
        ),
        None,
    )
    first_status = _first(events, w, f"pod status set pod=default/{run.full_name} ")
    running_status = next(
        (
            t
            for t, msg in events
            if t >= w - 0.001
            and msg.startswith(f"pod status set pod=default/{run.full_name} ")
            and msg.endswith("phase=Running")
        ),
        None,
    )
    end = max(run.reported, run.in_runtime) + 0.05
    for rec in trace:
        labels = rec.details.get("labels") or {}
        mine = rec.pod == f"default/{run.full_name}" or (
            run.uid and labels.get("io.kubernetes.pod.uid") == run.uid
        )
        if (
            not mine
            and image
            and rec.service == "ImageService"
            and rec.image == image
            and worker is not None
            and running_status is not None
        ):
            mine = worker - 0.001 <= rec.time <= running_status
        if mine and w - 0.01 <= rec.time <= end:
            run.calls.append((rec.method, rec.time, rec.time + rec.duration_ms / 1000))
    run.calls.sort(key=lambda c: c[1])
    marks: tuple[tuple[str, float | None], ...] = (
        ("watch saw the change", seen),
        ("config merged (ADD)", merged),
        ("pod worker sync", worker),
        ("first status set", first_status),
        ("status set Running", running_status),
    )
    for what, mark in marks:
        if mark is not None:
            run.points.append((what, mark))
    counts: dict[str, int] = {}
    for method, start, stop in run.calls:
        counts[method] = counts.get(method, 0) + 1
        label = method if counts[method] == 1 else f"{method}#{counts[method]}"
        run.points.append((f"{label} start", start))
        run.points.append((f"{label} end", stop))
    run.points.append(("running in runtime (ListContainers poll)", run.in_runtime))
    run.points.append(("Running in /pods (poll)", run.reported))
    run.points.sort(key=lambda p: p[1])


# -- printing -------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def print_run(run: Run) -> None:
    print(f"  {run.name}  (uid {run.uid or '?'})")
    print(f"    {'ms after rename':>16} {'step':>7}  what")
    prev = run.written
    for what, t in run.points:
        print(f"    {_ms(t - run.written):>16} {_ms(t - prev):>7}  {what}")
        prev = t
    if run.calls:
        print(f"    CRI calls: {len(run.calls)}; time in them (union): ", end="")
        busy, cursor = 0.0, 0.0
        for _, start, stop in run.calls:
            start = max(start, cursor)
            if stop > start:
                busy += stop - start
                cursor = stop
        span = run.calls[-1][2] - run.calls[0][1]
        print(f"{busy * 1000:.1f} ms of {span * 1000:.1f} ms from first to last")


def summarize(runs: list[Run], label: str, each: bool) -> None:
    print(f"\n== {label}: {len(runs)} runs, one static pod at a time ==")
    print(
        f"  {'run':>8} {'watch':>7} {'merged':>7} {'worker':>7} {'Start':>7} "
        f"{'status':>7} {'runtime':>7} {'/pods':>7}   (ms after the rename)"
    )

    def at(run: Run, prefix: str) -> str:
        t = next((t for what, t in run.points if what.startswith(prefix)), None)
        return f"{(t - run.written) * 1000:7.1f}" if t is not None else f"{'-':>7}"

    for run in runs:
        print(
            f"  {run.name.rsplit('-', 1)[1]:>8} {at(run, 'watch')} {at(run, 'config')} "
            f"{at(run, 'pod worker')} {at(run, 'StartContainer end')} "
            f"{at(run, 'status set Running')} {at(run, 'running in runtime')} "
            f"{at(run, 'Running in /pods')}"
        )
    if each:
        for run in runs:
            print_run(run)
    else:
        median_run = sorted(runs, key=lambda r: r.in_runtime - r.written)[len(runs) // 2]
        print("\n  the median run (by time to running in the runtime), step by step:")
        print_run(median_run)

    print_tables(runs, "runs")
    print_totals(runs)


def print_tables(runs: list[Run], unit: str) -> None:
    """Every point of the runs' timelines, and every CRI call, as medians over the runs."""
    # every point, over the runs that have it, in the order of its median time
    offsets: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    for run in runs:
        prev = run.written
        for what, t in run.points:
            offsets.setdefault(what, []).append(t - run.written)
            steps.setdefault(what, []).append(t - prev)
            prev = t
    print(f"\n  over the {unit} (ms after the rename; 'step': from the point before it in each)")
    print(f"    {'median':>7} {'p90':>7} {'min':>7} {'max':>7} {'step':>7} {unit:>5}  what")
    for what in sorted(offsets, key=lambda k: statistics.median(offsets[k])):
        v = offsets[what]
        print(
            f"    {_ms(statistics.median(v))} {_ms(_pct(v, 0.9))} {_ms(min(v))} {_ms(max(v))} "
            f"{_ms(statistics.median(steps[what]))} {len(v):>5}  {what}"
        )
    # each CRI call of the pod, in order: when, how long, and the gap before it (from the
    # previous call's end, or from the pod worker's start for the first)
    calls: dict[str, list[tuple[float, float, float]]] = {}
    order: dict[str, list[int]] = {}
    for run in runs:
        worker = next((t for what, t in run.points if what == "pod worker sync"), None)
        prev_end = worker if worker is not None else run.written
        counts: dict[str, int] = {}
        for i, (method, start, stop) in enumerate(run.calls):
            counts[method] = counts.get(method, 0) + 1
            key = method if counts[method] == 1 else f"{method}#{counts[method]}"
            calls.setdefault(key, []).append((start - run.written, stop - start, start - prev_end))
            order.setdefault(key, []).append(i)
            prev_end = max(prev_end, stop)
    print(f"\n  the pod's CRI calls (ms; medians over the {unit} that made the call; gap: from")
    print("  the previous call's end, or from the pod worker's start, to this call's start;")
    print("  negative: it overlaps the calls before it)")
    print(f"    {'start':>7} {'took':>7} {'p90':>7} {'gap':>7} {'p90':>7} {unit:>5}  call")
    for key in sorted(calls, key=lambda k: statistics.median(order[k])):
        made = calls[key]
        took = [x[1] for x in made]
        gap = [x[2] for x in made]
        print(
            f"    {_ms(statistics.median(x[0] for x in made))} {_ms(statistics.median(took))} "
            f"{_ms(_pct(took, 0.9))} {_ms(statistics.median(gap))} {_ms(_pct(gap, 0.9))} "
            f"{len(made):>5}  {key}"
        )


def print_totals(runs: list[Run]) -> None:
    to_runtime = [r.in_runtime - r.written for r in runs]
    to_reported = [r.reported - r.written for r in runs]
    started = [
        next(t for what, t in r.points if what == "StartContainer end") - r.written
        for r in runs
        if any(what == "StartContainer end" for what, _ in r.points)
    ]
    print(f"\n  totals over {len(runs)} runs (s)      median     p90     min     max")
    for what, v in (
        ("file -> running in the runtime", to_runtime),
        ("file -> StartContainer returned", started),
        ("file -> Running in /pods", to_reported),
    ):
        if v:
            print(
                f"  {what:32} {statistics.median(v):7.3f} {_pct(v, 0.9):7.3f} "
                f"{min(v):7.3f} {max(v):7.3f}"
            )


# -- batch mode ------------------------------------------------------------------------------


async def batch_rounds(
    node: BenchNode, cri: CRIClient, image: str, size: int, rounds: int, tag: str
) -> tuple[list[tuple[float, float, float, float]], list[Run]]:
    """Per round: time to all running in the runtime, to all Running in /pods, and the
    median per-pod times of both; and every pod's run."""
    out = []
    pods: list[Run] = []
    async with node.client() as client:
        for r in range(rounds):
            names = [f"b{tag}-{r}-{i}" for i in range(size)]
            full = {f"{n}-{NODE}" for n in names}
            in_runtime: dict[str, float] = {}
            reported: dict[str, float] = {}
            uids: dict[str, str] = {}
            start = time.time()
            written = {f"{n}-{NODE}": node.write(n, image) for n in names}
            await asyncio.wait_for(
                asyncio.gather(
                    _poll_runtime(cri, full, in_runtime), _poll_api(client, full, reported, uids)
                ),
                timeout=300,
            )
            pods += [
                Run(p.removesuffix(f"-{NODE}"), written[p], in_runtime[p], reported[p], uids[p])
                for p in sorted(full)
            ]
            out.append(
                (
                    max(in_runtime.values()) - start,
                    max(reported.values()) - start,
                    statistics.median(in_runtime[p] - written[p] for p in full),
                    statistics.median(reported[p] - written[p] for p in full),
                )
            )
            for n in names:
                node.remove(n)
            await _wait_gone(cri, client, full)
            await asyncio.sleep(0.5)
    return out, pods


def print_batch(label: str, size: int, rounds: list[tuple[float, float, float, float]]) -> None:
    print(f"\n== {label}: {size} manifests at once, {len(rounds)} rounds (s) ==")
    print(
        f"  {'round':>5} {'all running':>12} {'all Running':>12} "
        f"{'pod median':>11} {'pod median':>11}"
    )
    print(f"  {'':>5} {'(runtime)':>12} {'(/pods)':>12} {'(runtime)':>11} {'(/pods)':>11}")
    for i, (a, b, c, d) in enumerate(rounds):
        print(f"  {i:>5} {a:12.3f} {b:12.3f} {c:11.3f} {d:11.3f}")
    cols = list(zip(*rounds, strict=True))
    for what, f in (("median", statistics.median), ("min", min), ("max", max)):
        print(
            f"  {what:>5} "
            + " ".join(f"{f(c):{w}.3f}" for c, w in zip(cols, (12, 12, 11, 11), strict=True))
        )


# -- runtimes ------------------------------------------------------------------------------


@dataclass
class Runtimes:
    """The registry, images and runtimes this bench started (stopped by :meth:`close`)."""

    work: Path
    image: str = ""
    stops: list[Any] = field(default_factory=list)

    def registry_image(self) -> tuple[str, str]:
        from tests.harness.images import build_busybox_image, build_pause_image, push_image
        from tests.harness.registry import LocalRegistry

        registry = LocalRegistry(workdir=self.work / "registry")
        registry.start()
        self.stops.append(registry.close)
        self._registry_host = registry.host
        cache = self.work / "cache"
        busybox = push_image(build_busybox_image(cache, tag="1.35"), registry.host, "busybox")
        pause = push_image(build_pause_image(cache, tag="3.9"), registry.host, "pause")
        return busybox, pause

    def containerd(self, pause: str) -> str:
        from tests.harness.containerd import Containerd

        daemon = Containerd(
            self.work / "containerd", sandbox_image=pause, registry_host=self._registry_host
        )
        daemon.start()
        self.stops.append(daemon.stop)
        return daemon.endpoint

    def native(self) -> str:
        from tests.harness.native import cleanup

        run_root = Path(tempfile.mkdtemp(prefix="mk-bench-native-", dir="/run"))
        sock = f"unix://{self.work}/native.sock"
        log = open(self.work / "native.log", "w")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "minikubelet",
                "runtime",
                "serve",
                "native",
                "--listen",
                sock,
                "--root",
                str(self.work / "native"),
                "--run-root",
                str(run_root),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            cleanup(self.work / "native", run_root)

        self.stops.append(stop)
        assert proc.stdout is not None
        if "serving" not in proc.stdout.readline():
            raise SystemExit(
                "the native runtime did not start:\n"
                + (self.work / "native.log").read_text()[-3000:]
            )
        return sock

    def close(self) -> None:
        for stop in reversed(self.stops):
            try:
                stop()
            except Exception as exc:  # stop the others anyway
                print(f"cleanup: {exc}", file=sys.stderr)


async def _pull(endpoint: str, image: str) -> None:
    async with CRIClient(endpoint, timeout=120) as cri:
        if await cri.image_status(image) is None:
            await cri.pull_image(image)


async def measure(
    label: str, endpoint: str, image: str, work: Path, args: argparse.Namespace
) -> None:
    await _pull(endpoint, image)
    node = BenchNode(work, endpoint)
    node.start()
    tag = re.sub(r"[^a-z0-9]", "", label.lower())[:8]
    try:
        await node.wait_ready()
        async with CRIClient(endpoint, timeout=60) as cri:
            if args.batch:
                rounds, runs = await batch_rounds(
                    node, cri, image, args.batch, args.batch_rounds, tag
                )
            else:
                runs = await single_runs(node, cri, image, args.runs, tag)
    finally:
        node.stop()
    events = _log_events(node.log_path)
    trace = _trace(node.trace_path)
    for run in runs:
        annotate(run, events, trace, image="" if args.batch else image)
    if args.batch:
        print_batch(label, args.batch, rounds)
        print(f"\n  each pod of the {len(rounds)} rounds, from its own manifest's rename:")
        print_tables(runs, "pods")
    else:
        summarize(runs, label, args.each)
    sys.stdout.flush()


def _targets(runtime: str | None) -> Iterator[str]:
    yield from (["containerd", "native"] if runtime is None else [runtime])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runtime",
        help="containerd, native or unix:///PATH (default: containerd, then native)",
    )
    parser.add_argument("--runs", type=int, default=20, help="pods, one at a time (20)")
    parser.add_argument("--batch", type=int, default=0, metavar="N", help="N manifests at once")
    parser.add_argument("--batch-rounds", type=int, default=3, metavar="R")
    parser.add_argument(
        "--image", help="for unix:///PATH: the busybox image to run (pulled first if missing)"
    )
    parser.add_argument("--each", action="store_true", help="print every run step by step")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    # a SIGTERM (a timeout) still stops the runtimes and registry this bench started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="mk-bench-lat-"))
    runtimes = Runtimes(work)
    try:
        code = Path(minikubelet.__file__).parent.parent
        commit = subprocess.run(
            ["git", "-C", str(code), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        commit = f"{commit or '?'} ({code})"
        print(
            f"commit {commit}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
            f"{os.cpu_count()} CPUs, polls every {POLL * 1000:.0f} ms"
        )
        needs_registry = any(t in ("containerd", "native") for t in _targets(args.runtime))
        image, pause = runtimes.registry_image() if needs_registry or not args.image else ("", "")
        if args.image:
            image = args.image
        for target in _targets(args.runtime):
            if target == "containerd":
                print("starting containerd (waits while a test session holds the host's)")
                sys.stdout.flush()
                endpoint = runtimes.containerd(pause)
            elif target == "native":
                endpoint = runtimes.native()
            else:
                endpoint = target
            asyncio.run(
                measure(target, endpoint, image, work / f"node-{target.replace('/', '_')}", args)
            )
    finally:
        runtimes.close()
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
