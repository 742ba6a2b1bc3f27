"""Regenerate the Python modules for the CRI runtime.v1 contract from ``api.proto``.

Run ``python -m minikubelet.cri.v1.generate`` after editing ``api.proto``. It writes
``api_pb2.py``, ``api_pb2_grpc.py`` and their ``.pyi`` stubs next to the proto, or into the
directory given with ``--out DIR`` (the drift test uses that). Needs grpcio-tools and
mypy-protobuf; the stubs come from mypy-protobuf because they pass ``mypy --strict``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Directory that contains the top-level ``minikubelet`` package; used as protoc's include
# root so the generated gRPC module imports ``from minikubelet.cri.v1 import api_pb2``.
INCLUDE_ROOT = PACKAGE_DIR.parents[2]
PROTO = "minikubelet/cri/v1/api.proto"
GENERATED_FILES = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi")


def _grpc_tools_include() -> str:
    """Return grpc_tools' bundled directory of well-known ``.proto`` files."""
    return str(importlib.resources.files("grpc_tools") / "_proto")


def _plugin(name: str) -> str:
    """Locate a mypy-protobuf plugin (``protoc-gen-mypy``, ``protoc-gen-mypy_grpc``)."""
    local = Path(sysconfig.get_path("scripts")) / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install mypy-protobuf (dev extra)")
    return found


def generate(out_dir: Path | None = None) -> list[Path]:
    """Run protoc on ``api.proto`` and write the generated modules into ``out_dir``.

    ``out_dir`` defaults to this package's directory. Returns the written paths.
    """
    target = PACKAGE_DIR if out_dir is None else out_dir
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minikubelet-protoc-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{INCLUDE_ROOT}",
            f"-I{_grpc_tools_include()}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            PROTO,
        ]
        result = subprocess.run(cmd, cwd=INCLUDE_ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"protoc failed (exit {result.returncode}):\n{result.stderr.strip()}"
            )
        produced = Path(tmp) / Path(PROTO).parent
        written: list[Path] = []
        for name in GENERATED_FILES:
            dest = target / name
            shutil.copyfile(produced / name, dest)
            written.append(dest)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m minikubelet.cri.v1.generate",
        description="Regenerate api_pb2.py, api_pb2_grpc.py and their stubs from api.proto.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"write the generated files into DIR instead of {PACKAGE_DIR}",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
