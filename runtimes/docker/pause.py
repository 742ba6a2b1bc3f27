"""The infra image: ``pause.c`` compiled here and loaded into dockerd, never pulled.

``gcc -static`` builds the program; a docker-archive (``manifest.json``, the image
config, one layer holding ``/pause``) written here goes to ``POST /images/load``.
The image is labelled with the digest of the source it was built from, so a
changed ``pause.c`` is rebuilt on next use and an unchanged one never is.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import platform
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Final

from minikubelet.errors import FailedPrecondition, NotFound
from minikubelet.util.proc import CommandError, CommandTimeout
from minikubelet.util.proc import run as run_command
from runtimes.docker.client import DockerClient

PAUSE_IMAGE: Final = "minikubelet/pause:3.9"
PAUSE_SOURCE: Final = Path(__file__).with_name("pause.c")
SOURCE_LABEL: Final = "io.minikubelet.pause.source"
_CREATED = "1970-01-01T00:00:00Z"
COMPILE_TIMEOUT: Final = 300.0  # seconds for gcc -static of the pause program
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def source_digest(source: bytes) -> str:
    return "sha256:" + hashlib.sha256(source).hexdigest()


def _tar(members: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_archive(binary: bytes, *, tag: str, source: str, arch: str) -> bytes:
    """A ``docker save``-format tar of a one-layer image whose entrypoint is ``/pause``."""
    layer = _tar([("pause", binary, 0o755)])
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": arch,
        "os": "linux",
        "created": _CREATED,
        "config": {"Entrypoint": ["/pause"], "Labels": {SOURCE_LABEL: source}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": _CREATED, "created_by": "minikubelet: gcc -static pause.c"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_digest}/layer.tar"]}]
    return _tar(
        [
            (f"{layer_digest}/layer.tar", layer, 0o644),
            (config_name, config_bytes, 0o644),
            ("manifest.json", json.dumps(manifest).encode(), 0o644),
        ]
    )


async def compile_static(source: Path) -> bytes:
    """``gcc -static -Os -s`` of ``source``; FailedPrecondition naming the packages if absent."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise FailedPrecondition(
            "building the pause image needs gcc (Debian packages gcc and libc6-dev)"
        )
    with tempfile.TemporaryDirectory(prefix="minikubelet-pause-") as tmp:
        out = Path(tmp) / "pause"
        try:
            await run_command(
                [gcc, "-static", "-Os", "-s", "-o", str(out), str(source)],
                timeout=COMPILE_TIMEOUT,
            )
        except CommandTimeout as failure:
            raise FailedPrecondition(f"building the pause image: {failure}") from None
        except CommandError as failure:
            raise FailedPrecondition(
                f"gcc -static {source} failed (is libc6-dev installed?): {failure.output}"
            ) from None
        return await asyncio.to_thread(out.read_bytes)


class PauseImage:
    """Makes sure dockerd has the infra image; :meth:`ensure` returns its image ID."""

    def __init__(
        self, client: DockerClient, *, tag: str = PAUSE_IMAGE, source: Path = PAUSE_SOURCE
    ) -> None:
        self._client = client
        self.tag = tag
        self.source = source
        self._lock = asyncio.Lock()

    async def ensure(self) -> str:
        async with self._lock:
            code = await asyncio.to_thread(self.source.read_bytes)
            wanted = source_digest(code)
            image_id = await self._current(wanted)
            if image_id:
                return image_id
            binary = await compile_static(self.source)
            arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
            await self._client.load_image(
                docker_archive(binary, tag=self.tag, source=wanted, arch=arch)
            )
            image_id = await self._current(wanted)
            if not image_id:
                raise FailedPrecondition(f"dockerd did not keep the loaded {self.tag} image")
            return image_id

    async def _current(self, wanted: str) -> str:
        try:
            image = await self._client.inspect_image(self.tag)
        except NotFound:
            return ""
        labels = (image.get("Config") or {}).get("Labels") or {}
        return str(image.get("Id", "")) if labels.get(SOURCE_LABEL) == wanted else ""
