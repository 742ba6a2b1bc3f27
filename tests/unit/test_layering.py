"""The layering rules, checked module by module on the source.

* The kubelet core never knows its runtime: nothing in ``minikubelet/`` imports
  ``runtimes/`` or ``tui/`` but the composition root (the CLI that starts a
  bundled runtime's server or the dashboard).
* The runtimes share with the kubelet only the wire and the vocabulary: the CRI
  proto, the error taxonomy and shared types, and the protocol codecs and host
  helpers both sides use. Never the kubelet's own machinery.
* The core builds CRI requests but holds the runtime only through the
  :mod:`minikubelet.cri.services` protocols: the concrete gRPC client is made in
  the composition root.
* Nothing below the CLI imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The composition root: the commands that serve a bundled runtime, make a node (and check
#: the native runtime can run here) or open the dashboard.
COMPOSITION_ROOT = {
    "minikubelet/cli/serve.py",
    "minikubelet/cli/run.py",
    "minikubelet/cli/dashboard.py",
}
#: What of minikubelet a runtime may import: the wire, the vocabulary, shared helpers.
RUNTIME_MAY_IMPORT = (
    "minikubelet.cri.v1",
    "minikubelet.cri.endpoint",
    "minikubelet.errors",
    "minikubelet.types",
    "minikubelet.reference",
    "minikubelet.logs.crilog",
    "minikubelet.streaming",
    "minikubelet.util",
)
#: Modules that may hold the concrete CRI client (the CLI makes it).
CRI_CLIENT_USERS = {"minikubelet/cli/run.py", "minikubelet/cli/demo.py"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, with ``from pkg import name`` counted as ``pkg.name``
    (a name that is not a module only makes the rule stricter)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _offenders(
    package: str, forbidden: tuple[str, ...], allowed_modules: set[str], *, allow: tuple[str, ...]
) -> list[str]:
    bad = []
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed_modules:
            continue
        for name in sorted(_imports(path)):
            if _within(name, forbidden) and not _within(name, allow):
                bad.append(f"{rel} imports {name}")
    return bad


@pytest.mark.parametrize(
    ("package", "forbidden", "allowed_modules", "allow"),
    [
        ("minikubelet", ("runtimes", "tui"), COMPOSITION_ROOT, ()),
        ("runtimes", ("tui",), set(), ()),
        ("runtimes", ("minikubelet",), set(), RUNTIME_MAY_IMPORT),
        ("tui", ("runtimes",), set(), ()),
    ],
)
def test_layering(
    package: str, forbidden: tuple[str, ...], allowed_modules: set[str], allow: tuple[str, ...]
) -> None:
    assert _modules(package), f"no modules found under {package}/"
    assert _offenders(package, forbidden, allowed_modules, allow=allow) == []


def test_the_core_holds_the_runtime_through_the_cri_seam() -> None:
    users = {
        path.relative_to(ROOT).as_posix()
        for path in _modules("minikubelet")
        if any(_within(name, ("minikubelet.cri.client",)) for name in _imports(path))
    }
    users -= {"minikubelet/cri/client.py"}
    assert users <= CRI_CLIENT_USERS, sorted(users - CRI_CLIENT_USERS)


def test_nothing_below_the_cli_imports_it() -> None:
    bad = [
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for path in _modules("minikubelet")
        if "/cli/" not in path.as_posix() and path.name != "__main__.py"
        for name in _imports(path)
        if _within(name, ("minikubelet.cli",))
    ]
    assert bad == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text(
        "def f():\n    from runtimes.fake import server\n"
        "from minikubelet import kubelet\n"
        "from minikubelet.volumes.manager import VolumeManager\n"
    )
    found = _imports(module)
    assert "runtimes.fake.server" in found
    assert "minikubelet.kubelet" in found
    assert not _within("minikubelet.volumes.manager.VolumeManager", RUNTIME_MAY_IMPORT)
    assert _within("minikubelet.errors.NotFound", RUNTIME_MAY_IMPORT)


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
