"""The layering rules, checked on the source: the kubelet core never knows its runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The composition root may start a bundled runtime; nothing else in the core may.
COMPOSITION_ROOT = {"minikubelet/cli/__init__.py", "minikubelet/cli/run.py", "minikubelet/cli/launch.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _offenders(package: str, forbidden: tuple[str, ...], allowed: set[str]) -> list[str]:
    bad = []
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed:
            continue
        for name in _imports(path):
            if name.split(".")[0] in forbidden:
                bad.append(f"{rel} imports {name}")
    return bad


@pytest.mark.parametrize(
    ("package", "forbidden", "allowed"),
    [
        ("minikubelet", ("runtimes", "tui"), COMPOSITION_ROOT),
        ("runtimes", ("tui",), set()),
        ("tui", ("runtimes",), set()),
    ],
)
def test_layering(package: str, forbidden: tuple[str, ...], allowed: set[str]) -> None:
    assert _modules(package), f"no modules found under {package}/"
    assert _offenders(package, forbidden, allowed) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from runtimes.fake import server\n")
    assert "runtimes.fake" in _imports(module)


def test_only_the_grpc_adapters_and_client_import_grpc() -> None:
    """grpc stays at the edges: the CRI client and trace, the listener and adapter, and the
    gRPC health probe (a network client of the pod, like the HTTP and TCP probes)."""
    edges = {
        "minikubelet/cri/client.py",
        "minikubelet/prober/probe.py",
        "minikubelet/cri/trace.py",
        "runtimes/base/service.py",
        "runtimes/base/listener.py",
    }
    users = {
        path.relative_to(ROOT).as_posix()
        for package in ("minikubelet", "runtimes")
        for path in _modules(package)
        if any(name == "grpc" or name.startswith("grpc.") for name in _imports(path))
        and "/cri/v1/" not in path.as_posix()
    }
    assert users <= edges, f"grpc imported outside the edges: {sorted(users - edges)}"
