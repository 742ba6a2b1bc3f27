#!/usr/bin/env python3
"""A local stand-in for docker.io: busybox:1.36, built from Debian's busybox-static.

    scripts/local-mirror.py     # prints the mirror's URL, serves until interrupted

The example manifests use ``busybox:1.36``. Where the internet is out of reach (or
should not be reached), a runtime started with
``--registry-mirror docker.io=<that URL>`` pulls it from here instead: a real
docker-registry on 127.0.0.1, holding an image built on this machine.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.images import build_busybox_image, push_image  # noqa: E402
from tests.harness.registry import LocalRegistry  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="minikubelet-mirror-"))
    registry = LocalRegistry(workdir=work)
    registry.start()
    try:
        image = build_busybox_image(work / "build", tag="1.36")
        push_image(image, registry.host, "library/busybox", "1.36")
        print(f"http://{registry.host}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        registry.close()


if __name__ == "__main__":
    main()
