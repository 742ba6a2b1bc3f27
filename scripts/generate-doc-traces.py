#!/usr/bin/env python3
"""Record the CRI traces that docs/how-a-pod-starts.md shows, on real runtimes.

    sudo .venv/bin/python scripts/generate-doc-traces.py

It builds a busybox image from busybox-static, serves it from a local
docker-registry (as docker.io's mirror: nothing comes from the internet), starts
the native runtime and the Docker-backed runtime (on a private dockerd), plays
manifests/hello.yaml through each with ``minikubelet demo``, and writes
docs/traces/<runtime>.txt (the call table), .jsonl (the records) and .mmd (the
Mermaid sequence diagram). Needs root and scripts/install-deps.
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
        [sys.executable, "-m", "minikubelet", "demo", str(MANIFEST), "--runtime", endpoint,
         "--trace-file", str(jsonl)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    records = read_jsonl(jsonl)
    (OUT / f"{runtime}.txt").write_text(table)
    shutil.copyfile(jsonl, OUT / f"{runtime}.jsonl")
    (OUT / f"{runtime}.mmd").write_text(
        to_mermaid(records, title=f"hello on the {runtime} runtime")
    )
    print(f"{runtime}: {len(records)} calls -> docs/traces/{runtime}.{{txt,jsonl,mmd}}")


DOC = ROOT / "docs" / "how-a-pod-starts.md"


def fill_doc() -> None:
    """Put the recorded traces between the doc's markers."""
    import re

    text = DOC.read_text()
    for runtime in ("native", "docker"):
        table = (OUT / f"{runtime}.txt").read_text().rstrip()
        mermaid = (OUT / f"{runtime}.mmd").read_text().rstrip()
        for marker, body in ((runtime, f"```\n{table}\n```"),
                             (f"{runtime}:mermaid", f"```mermaid\n{mermaid}\n```")):
            text = re.sub(
                rf"(<!-- trace:{marker} -->\n).*?(<!-- /trace:{marker} -->)",
                lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}",
                text,
                flags=re.DOTALL,
            )
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
            [sys.executable, "-m", "minikubelet", "runtime", "serve", "native", "--listen", sock,
             "--root", str(work / "native"), "--run-root", str(run_root),
             "--registry-mirror", mirror],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        )
        try:
            assert native.stdout is not None and "serving" in native.stdout.readline()
            play("native", sock, work)
        finally:
            native.terminate()
            native.wait(timeout=30)
            cleanup(work / "native", run_root)

        dockerd = Dockerd(work / "dockerd", insecure_registries=[registry.host])
        dockerd.start()
        try:
            server = RuntimeServer(work / "docker-runtime", dockerd.host,
                                   registry_mirrors=[mirror])
            server.start()
            try:
                play("docker", server.endpoint, work)
            finally:
                server.stop()
        finally:
            dockerd.stop()
    finally:
        registry.close()
        shutil.rmtree(work, ignore_errors=True)
    fill_doc()
    print(f"updated {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
