"""The commands a person types, run as a person runs them: as processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import read_jsonl
from minikubelet.errors import RuntimeVersionMismatch

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def tcp_fake() -> Iterator[str]:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "minikubelet", "runtime", "serve", "fake", "--listen", endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert "serving CRI runtime.v1 on " + endpoint in proc.stdout.readline()
    try:
        yield endpoint
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM is a clean stop
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


async def test_serve_fake_on_tcp(tcp_fake: str) -> None:
    async with CRIClient(tcp_fake) as cri:
        assert cri.version_info is not None
        assert cri.version_info.runtime_name == "minikubelet-fake"


async def test_handshake_refuses_a_runtime_that_is_not_v1(
    tcp_fake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minikubelet.cri import client as client_module

    monkeypatch.setattr(client_module, "RUNTIME_API_VERSION", "v2")
    with pytest.raises(RuntimeVersionMismatch, match="'v1'; this kubelet speaks 'v2'"):
        await CRIClient(tcp_fake).connect()


def test_serve_refuses_a_bad_endpoint() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minikubelet", "runtime", "serve", "fake", "--listen", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "expected unix:///PATH or tcp://HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_plays_the_hello_manifest(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "minikubelet",
            "demo",
            str(ROOT / "manifests" / "hello.yaml"),
            "--trace-file",
            str(trace),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "hello: hello from minikubelet" in result.stdout
    assert "hello: goodbye" in result.stdout
    methods = [r.method for r in read_jsonl(trace)]
    expected = [
        "Version",
        "Status",
        "ImageStatus",
        "PullImage",
        "RunPodSandbox",
        "PodSandboxStatus",
        "CreateContainer",
        "StartContainer",
    ]
    assert methods[: len(expected)] == expected
    assert methods[-4:] == [
        "StopContainer",
        "StopPodSandbox",
        "RemoveContainer",
        "RemovePodSandbox",
    ]
    records = read_jsonl(trace)
    assert all(r.code == "OK" for r in records)
    start = next(r for r in records if r.method == "StartContainer")
    assert (start.pod, start.container) == ("default/hello", "hello")  # learnt from the id
    assert trace.stat().st_mode & 0o777 == 0o600


def test_demo_jsonl_output_is_one_record_per_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minikubelet", "demo", "manifests/hello.yaml", "-o", "jsonl"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["method"] == "Version"
    assert {"seq", "time", "service", "method", "code", "duration_ms"} <= set(records[0])
