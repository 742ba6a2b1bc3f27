"""bench.start_latency reads a run's timeline from the node's debug log and CRI trace."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bench.start_latency import Run, _log_events, annotate
from minikubelet.cri.trace import CallRecord

UID = "0123abcd"


def _stamp(ms: int) -> str:
    base = datetime(2026, 12, 8, 0, 0, 0).timestamp() + ms / 1000
    whole = datetime.fromtimestamp(base)
    return f"{whole:%Y-%m-%d %H:%M:%S},{whole.microsecond // 1000:03d}"


def test_a_run_is_read_from_the_log_and_the_trace(tmp_path: Path) -> None:
    t0 = datetime(2026, 12, 8, 0, 0, 0).timestamp()
    log = tmp_path / "kubelet.log"
    log.write_text(
        "\n".join(
            [
                f"{_stamp(-500)} DEBUG minikubelet.config.file: manifest change seen path=/m "
                "changes=1",
                f"{_stamp(10)} DEBUG minikubelet.config.file: manifest change seen path=/m "
                "changes=1",
                f"{_stamp(14)} INFO minikubelet.config.podconfig: config ADD "
                f"pod=default/p-bench uid={UID} source=file",
                f"{_stamp(15)} DEBUG minikubelet.podworkers: pod worker sync pod=p-bench uid={UID}",
                "a line of a traceback",
                f"{_stamp(200)} DEBUG minikubelet.kubelet: pod status set pod=default/p-bench "
                f"uid={UID} phase=Running",
            ]
        )
        + "\n"
    )
    trace = [
        CallRecord(1, t0 + 0.016, "RuntimeService", "ListPodSandbox", "OK", 1.0,
                   details={"labels": {"io.kubernetes.pod.uid": UID}}),
        CallRecord(2, t0 + 0.017, "RuntimeService", "ListPodSandbox", "OK", 1.0),  # the PLEG's
        CallRecord(6, t0 + 0.018, "ImageService", "ImageStatus", "OK", 1.0, image="busybox"),
        CallRecord(3, t0 + 0.020, "RuntimeService", "RunPodSandbox", "OK", 80.0,
                   pod="default/p-bench"),
        CallRecord(4, t0 + 0.101, "RuntimeService", "StartContainer", "OK", 20.0,
                   pod="default/p-bench", container="app"),
        CallRecord(5, t0 + 0.110, "RuntimeService", "RunPodSandbox", "OK", 80.0,
                   pod="default/other-bench"),
    ]  # fmt: skip
    run = Run("p", written=t0, in_runtime=t0 + 0.15, reported=t0 + 0.25)
    annotate(run, _log_events(log), trace, image="busybox")

    assert run.uid == UID
    points = {what: round((t - t0) * 1000) for what, t in run.points}
    assert points == {
        "watch saw the change": 10,
        "config merged (ADD)": 14,
        "pod worker sync": 15,
        "ListPodSandbox start": 16,
        "ListPodSandbox end": 17,
        "ImageStatus start": 18,
        "ImageStatus end": 19,
        "RunPodSandbox start": 20,
        "RunPodSandbox end": 100,
        "StartContainer start": 101,
        "StartContainer end": 121,
        "running in runtime (ListContainers poll)": 150,
        "first status set": 200,
        "status set Running": 200,
        "Running in /pods (poll)": 250,
    }
    assert [what for what, _ in run.points] == sorted(points, key=lambda k: points[k])
