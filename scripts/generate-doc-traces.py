#!/usr/bin/env python3
"""Record the CRI traces that docs/how-a-pod-starts.md shows, on real runtimes.

    sudo .venv/bin/python scripts/generate-doc-traces.py

It builds a busybox image from busybox-static, serves it from a local
docker-registry (as docker.io's mirror: nothing comes from the internet), starts
the native runtime and the Docker-backed runtime (on a private dockerd), plays
manifests/hello.yaml through each with ``minikubelet demo``, and writes
docs/traces/<runtime>.txt (the call table), .jsonl (the records) and .mmd (the
Mermaid sequence diagram); then runs one ``exec -i`` through each runtime's
streaming server over SPDY and writes its frames to docs/traces/<runtime>-exec.txt
(shown in docs/streaming.md). Needs root and scripts/install-deps.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minikubelet.cri.trace import read_jsonl, to_mermaid  # noqa: E402
from tests.harness.dockerd import Dockerd, RuntimeServer  # noqa: E402
from tests.harness.images import build_busybox_image, push_image  # noqa: E402
from tests.harness.native import cleanup  # noqa: E402
from tests.harness.registry import LocalRegistry  # noqa: E402

OUT = ROOT / "docs" / "traces"
MANIFEST = ROOT / "manifests" / "hello.yaml"


def play(runtime: str, endpoint: str, work: Path) -> None:
    jsonl = work / f"{runtime}.jsonl"
    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "minikubelet",
            "demo",
            str(MANIFEST),
            "--runtime",
            endpoint,
            "--trace-file",
            str(jsonl),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    records = read_jsonl(jsonl)
    (OUT / f"{runtime}.txt").write_text(table)
    shutil.copyfile(jsonl, OUT / f"{runtime}.jsonl")
    (OUT / f"{runtime}.mmd").write_text(
        to_mermaid(records, title=f"hello on the {runtime} runtime")
    )
    print(f"{runtime}: {len(records)} calls -> docs/traces/{runtime}.{{txt,jsonl,mmd}}")


DOC = ROOT / "docs" / "how-a-pod-starts.md"
STREAM_DOC = ROOT / "docs" / "streaming.md"
EXEC_SCRIPT = "echo hello from $(hostname); read name; echo nice to meet you, $name; exit 3"


async def _exec_trace(endpoint: str, work: Path) -> list[str]:
    """One ``exec -i`` over SPDY, CRI call and frames, as lines of text."""
    import asyncio
    import re

    from minikubelet.cri.client import CRIClient
    from minikubelet.streaming import spdy
    from minikubelet.streaming.client import SPDY, connect_remote_command
    from tests.contract.pods import container_config, pod, sandbox_config

    lines: list[str] = []
    image = "docker.io/library/busybox:1.36"
    async with CRIClient(endpoint) as cri:
        await cri.pull_image(image)
        config = sandbox_config(work / "logs", name="streaming")
        async with pod(cri, config) as sandbox_id:
            container = await cri.create_container(
                sandbox_id, container_config(image, "shell", ["sleep", "3600"]), config
            )
            await cri.start_container(container)
            cmd = ["sh", "-c", EXEC_SCRIPT]
            url = await cri.exec(container, cmd, stdin=True, stdout=True, stderr=True)
            shown = re.sub(r"/exec/[^/]+$", "/exec/<token>", url)
            shown = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", shown)
            lines += [
                f"kubelet -> runtime   Exec {{container_id: {container[:13]}..., "
                f"cmd: {cmd}, stdin: true, stdout: true, stderr: true}}",
                f"runtime -> kubelet   ExecResponse {{url: {shown}}}",
                "",
                f"client  -> streaming POST {shown.split('<port>', 1)[1]} HTTP/1.1",
                "                      Connection: Upgrade / Upgrade: SPDY/3.1",
                "                      X-Stream-Protocol-Version: v4.channel.k8s.io",
                "streaming -> client   HTTP/1.1 101 Switching Protocols (v4.channel.k8s.io)",
            ]

            def observe(direction: str, frame: spdy.Frame) -> None:
                arrow = "client  ->" if direction == "out" else "client  <-"
                lines.append(f"{arrow}           {spdy.describe(frame, limit=200)}")

            command = await connect_remote_command(
                url, stdin=True, transport=SPDY, observer=observe
            )
            await command.write_stdin(b"Ada\n")
            await command.close_stdin()
            async for _ in command.read_output():
                pass
            code = await command.wait()
            # The server ends the session once the status is out: show its GOAWAY too.
            await asyncio.wait_for(command._session.closed.wait(), 10)  # type: ignore[attr-defined]
            await command.close()
            lines += ["", f"exit code reported on the error stream: {code}"]
            await cri.stop_container(container, 0)
            await cri.remove_container(container)
    return lines


def play_exec(runtime: str, endpoint: str, work: Path) -> None:
    import asyncio

    lines = asyncio.run(_exec_trace(endpoint, work))
    (OUT / f"{runtime}-exec.txt").write_text("\n".join(lines) + "\n")
    print(f"{runtime}: exec trace -> docs/traces/{runtime}-exec.txt")


def _fill(text: str, marker: str, body: str) -> str:
    """``body`` between ``<!-- trace:MARKER -->`` and ``<!-- /trace:MARKER -->``."""
    import re

    def put(match: re.Match[str]) -> str:
        return f"{match.group(1)}{body}\n{match.group(2)}"

    pattern = rf"(<!-- trace:{marker} -->\n).*?(<!-- /trace:{marker} -->)"
    return re.sub(pattern, put, text, flags=re.DOTALL)


def fill_doc() -> None:
    """Put the recorded traces between the doc's markers."""

    text = STREAM_DOC.read_text()
    for runtime in ("native", "docker"):
        body = (OUT / f"{runtime}-exec.txt").read_text().rstrip()
        text = _fill(text, f"{runtime}:exec", f"```\n{body}\n```")
    STREAM_DOC.write_text(text)
    text = DOC.read_text()
    for runtime in ("native", "docker"):
        table = (OUT / f"{runtime}.txt").read_text().rstrip()
        mermaid = (OUT / f"{runtime}.mmd").read_text().rstrip()
        for marker, body in (
            (runtime, f"```\n{table}\n```"),
            (f"{runtime}:mermaid", f"```mermaid\n{mermaid}\n```"),
        ):
            text = _fill(text, marker, body)
    DOC.write_text(text)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mk-doc-traces-"))
    registry = LocalRegistry(workdir=work / "registry")
    registry.start()
    try:
        image = build_busybox_image(work / "cache", tag="1.36")
        push_image(image, registry.host, "library/busybox", "1.36")
        mirror = f"docker.io=http://{registry.host}"

        run_root = Path(tempfile.mkdtemp(prefix="mk-doc-native-", dir="/run"))
        sock = f"unix://{work}/native.sock"
        native = subprocess.Popen(
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
                str(work / "native"),
                "--run-root",
                str(run_root),
                "--registry-mirror",
                mirror,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        try:
            assert native.stdout is not None and "serving" in native.stdout.readline()
            play("native", sock, work)
            play_exec("native", sock, work)
        finally:
            native.terminate()
            native.wait(timeout=30)
            cleanup(work / "native", run_root)

        dockerd = Dockerd(work / "dockerd", insecure_registries=[registry.host])
        dockerd.start()
        try:
            server = RuntimeServer(work / "docker-runtime", dockerd.host, registry_mirrors=[mirror])
            server.start()
            try:
                play("docker", server.endpoint, work)
                play_exec("docker", server.endpoint, work)
            finally:
                server.stop()
        finally:
            dockerd.stop()
    finally:
        registry.close()
        shutil.rmtree(work, ignore_errors=True)
    fill_doc()
    print(f"updated {DOC.relative_to(ROOT)} and {STREAM_DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
