"""The client commands against a running node, each run as its own process as a person does:
``logs`` (``-f``, ``--previous``, ``--tail``), ``exec`` and its exit codes, ``describe``."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from tests.e2e.node import ROOT, Node, phase, running
from tests.e2e.support import acli, logs, pod_manifest, restarts, waiting_reason
from tests.harness.wait import wait_until

TICKER = pod_manifest(
    "ticker",
    """  restartPolicy: Never
  containers:
    - name: tick
      image: busybox:1.36
      command: ["sh", "-c", "echo one; sleep 1; echo two; sleep 1; echo three"]
""",
)


async def test_logs_follow_previous_and_tail(node: Node) -> None:
    node.add_manifest("ticker.yaml", TICKER)
    node.add_manifest("crash-loop.yaml")
    node.add_manifest("multi-container.yaml")
    await node.wait_pod("ticker", lambda p: running(p, "tick"), what="ticker running")

    async def first_line() -> bool | None:
        return True if (await logs(node, "ticker", "tick")).startswith("one\n") else None

    await wait_until(first_line, message="the first line")
    follow = await asyncio.to_thread(_follow, node, "ticker-e2e")
    out, err = await asyncio.to_thread(follow.communicate, timeout=20)
    # -f ends by itself when the container exits, having shown every line
    assert (follow.returncode, out, err) == (0, "one\ntwo\nthree\n", "")
    done = await node.pod("ticker")
    assert done is not None and phase(done) in ("Running", "Succeeded")

    await node.wait_pod("crash-loop", lambda p: restarts(p, "crasher") >= 1, what="a restart")
    tail, defaulted, previous, none_before = await asyncio.gather(
        acli(node, "logs", "ticker-e2e", "--tail", "2"),
        acli(node, "logs", "multi-e2e"),
        acli(node, "logs", "crash-loop-e2e", "--previous"),
        acli(node, "logs", "multi-e2e", "-c", "app", "-p"),
    )
    assert (tail.returncode, tail.stdout) == (0, "two\nthree\n")
    assert (defaulted.returncode, defaulted.stdout) == (0, "app started\n")
    assert defaulted.stderr == 'Defaulted container "app" out of: app, helper\n'
    assert (previous.returncode, previous.stdout) == (0, "starting\ngiving up\n")
    assert none_before.returncode == 1
    assert 'previous terminated container "app" in pod "multi-e2e" not found' in (
        none_before.stderr
    )


async def test_exec_passes_the_exit_code_through(node: Node) -> None:
    node.add_manifest("multi-container.yaml")
    node.add_manifest("hello.yaml")
    await node.wait_pod("multi", lambda p: running(p, "app", "helper"), what="multi running")

    await node.wait_pod("hello", lambda p: phase(p) == "Succeeded", what="hello done")
    ok, failed, finished, unknown = await asyncio.gather(
        acli(node, "exec", "multi-e2e", "-c", "helper", "--", "echo", "hi"),
        acli(node, "exec", "multi-e2e", "-c", "app", "--", "sh", "-c", "exit 3"),
        acli(node, "exec", "hello-e2e", "--", "true"),
        acli(node, "exec", "multi-e2e", "-c", "nope", "--", "true"),
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "hi\n", "")
    assert failed.returncode == 3
    assert failed.stderr == "command terminated with exit code 3\n"
    assert finished.returncode == 1
    assert "is not running" in finished.stderr
    assert unknown.returncode == 1
    assert "container nope is not valid for pod multi-e2e" in unknown.stderr


async def test_describe_shows_state_and_events(node: Node) -> None:
    node.add_manifest("crash-loop.yaml")
    await node.wait_pod(
        "crash-loop",
        lambda p: (
            restarts(p, "crasher") >= 1 and waiting_reason(p, "crasher") == "CrashLoopBackOff"
        ),
        what="a crash loop",
    )
    described = await acli(node, "describe", "pod", "crash-loop-e2e")
    assert described.returncode == 0, described.stderr
    text = described.stdout
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0].split() == ["Name:", "crash-loop-e2e"]
    assert "Status:       Running" in text
    assert "Last State:     Terminated" in text
    assert "Exit Code:    3" in text
    events = text[text.index("Events:") :].splitlines()
    assert events[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    rows = [row.split() for row in events[3:]]
    assert ["Warning", "BackOff"] in [row[:2] for row in rows]
    assert any(row[:2] == ["Normal", "Started"] for row in rows)
    assert all("kubelet" in row for row in rows)

    missing = await acli(node, "describe", "pod", "nope")
    assert missing.returncode == 1
    assert missing.stderr == 'Error from server (NotFound): pods "nope" not found\n'


def _follow(node: Node, pod: str) -> subprocess.Popen[str]:
    """``minikubelet logs -f POD`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "minikubelet", "logs", "--root-dir", str(node.root_dir), "-f", pod],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
